"""Mix several experience sources: each batch comes from a source drawn with its probability.

``input: {"/data/a": 0.4, "s3://b/c": 0.3, "sampler": 0.3}`` becomes a
:class:`MixedInput` over one reader per source (the live sampler is just
another reader). The draw is per batch, seeded by the caller's generator.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from numbers import Real
from typing import Protocol

import numpy as np

from offrl.batch import SampleBatch
from offrl.errors import ConfigError

# |sum - 1| up to this is rounding in a hand-written config, not a mistake.
SUM_TOLERANCE = 1e-6


class InputReader(Protocol):
    """Anything that returns the next batch of experiences (offline readers, the sampler)."""

    def next(self) -> SampleBatch:
        """The next batch."""
        ...


def normalize_mix(spec: Mapping[str, float]) -> dict[str, float]:
    """Check ``{source: probability}`` and return it scaled to sum exactly to 1.

    Every probability must be a finite number > 0; the sum must be within
    ``SUM_TOLERANCE`` of 1. Anything else is a ConfigError naming the source or the sum.
    """
    if not spec:
        raise ConfigError("input: the mix {source: probability} is empty; name at least one source")
    for source, prob in spec.items():
        if isinstance(prob, bool) or not isinstance(prob, Real) or not math.isfinite(prob):
            raise ConfigError(
                f"input: the probability of source {source!r} is {prob!r}; it must be a number > 0"
            )
        if prob <= 0:
            raise ConfigError(
                f"input: the probability of source {source!r} is {prob!r}; it must be > 0 "
                "(remove the source instead of giving it probability 0)"
            )
    total = math.fsum(float(p) for p in spec.values())
    if abs(total - 1.0) > SUM_TOLERANCE:
        listing = ", ".join(f"{s!r}: {p!r}" for s, p in spec.items())
        raise ConfigError(
            f"input: the probabilities {{{listing}}} sum to {total:.6g}; they must sum to 1"
        )
    return {source: float(prob) / total for source, prob in spec.items()}


class MixedInput:
    """An InputReader that draws a source per batch with the given probabilities.

    ``last_source`` names the source of the batch ``next()`` returned last, so the
    trainer can write only live ("sampler") batches to ``output`` and never re-write
    copies of its input. ``metrics()`` reports the achieved mix.
    """

    def __init__(
        self,
        readers: Mapping[str, InputReader],
        probs: Mapping[str, float],
        rng: np.random.Generator,
    ) -> None:
        if set(readers) != set(probs):
            raise ConfigError(
                f"input: readers {sorted(readers)} and probabilities {sorted(probs)} "
                "name different sources"
            )
        normalized = normalize_mix(probs)
        self._names = list(normalized)
        self._readers = dict(readers)
        self._cdf = np.cumsum([normalized[n] for n in self._names])
        self._cdf[-1] = 1.0  # rounding must never leave a draw past the last source
        self._rng = rng
        self._batches = dict.fromkeys(self._names, 0)
        self._rows = dict.fromkeys(self._names, 0)
        self.last_source: str | None = None

    def next(self) -> SampleBatch:
        """The next batch of a source drawn by probability."""
        name = self._names[int(np.searchsorted(self._cdf, self._rng.random(), side="right"))]
        batch = self._readers[name].next()
        self.last_source = name
        self._batches[name] += 1
        self._rows[name] += batch.count
        return batch

    def metrics(self) -> dict[str, float]:
        """Achieved mix per source: ``input/<source>/fraction`` (share of batches drawn,
        comparable with the configured probability), ``.../rows`` and ``.../row_fraction``."""
        total_batches = sum(self._batches.values())
        total_rows = sum(self._rows.values())
        out: dict[str, float] = {}
        for name in self._names:
            out[f"input/{name}/fraction"] = self._batches[name] / max(total_batches, 1)
            out[f"input/{name}/rows"] = float(self._rows[name])
            out[f"input/{name}/row_fraction"] = self._rows[name] / max(total_rows, 1)
        return out
