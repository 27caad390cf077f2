"""Mix several experience sources so that each supplies its share of the *experiences*.

``input: {"/data/a": 0.4, "s3://b/c": 0.3, "sampler": 0.3}`` means, as in RLlib's
documentation, "read 40 % of our experiences from /data/a": a share of rows, not
of batches. Sources hand out batches of very different sizes (a sampled fragment
is a few rows, a recorded line ~50), so each batch's source is drawn with
probability proportional to ``p_i / mean rows per batch of source i`` (the mean
measured so far): the expected share of rows of source i is then ``p_i``. The
draws are seeded by the caller's generator.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from offrl.batch import SampleBatch
from offrl.errors import ConfigError
from offrl.io.specs import InputReader, normalize_mix


class MixedInput:
    """An InputReader that draws a source per batch so that rows follow the probabilities.

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
        self._probs = np.array([normalized[n] for n in self._names])
        self._rng = rng
        self._batches = dict.fromkeys(self._names, 0)
        self._rows = dict.fromkeys(self._names, 0)
        self.last_source: str | None = None

    def _batch_weights(self) -> np.ndarray:
        """Per-batch draw probabilities: ``p_i / mean_rows_i``, normalised.

        A source not read yet is assumed to have the mean batch size of those read.
        """
        batches = np.array([self._batches[n] for n in self._names], dtype=np.float64)
        rows = np.array([self._rows[n] for n in self._names], dtype=np.float64)
        seen = batches > 0
        mean_rows = np.ones(len(self._names))
        if seen.any():
            mean_rows[seen] = np.maximum(rows[seen], 1.0) / batches[seen]
            mean_rows[~seen] = mean_rows[seen].mean()
        weights = self._probs / mean_rows
        return weights / weights.sum()

    def next(self) -> SampleBatch:
        """The next batch, from a source drawn so that rows follow the probabilities."""
        cdf = np.cumsum(self._batch_weights())
        cdf[-1] = 1.0  # rounding must never leave a draw past the last source
        name = self._names[int(np.searchsorted(cdf, self._rng.random(), side="right"))]
        batch = self._readers[name].next()
        self.last_source = name
        self._batches[name] += 1
        self._rows[name] += batch.count
        return batch

    def metrics(self) -> dict[str, float]:
        """Achieved mix per source, since the start: ``input/<source>/fraction`` and
        ``.../row_fraction`` (the same value: its share of rows, comparable with the
        configured probability), ``.../rows``, ``.../batches`` and ``.../batch_fraction``."""
        total_batches = sum(self._batches.values())
        total_rows = sum(self._rows.values())
        out: dict[str, float] = {}
        for name in self._names:
            row_fraction = self._rows[name] / max(total_rows, 1)
            out[f"input/{name}/fraction"] = row_fraction
            out[f"input/{name}/row_fraction"] = row_fraction
            out[f"input/{name}/rows"] = float(self._rows[name])
            out[f"input/{name}/batches"] = float(self._batches[name])
            out[f"input/{name}/batch_fraction"] = self._batches[name] / max(total_batches, 1)
        return out
