"""What the ``input`` and ``output`` config values mean, decided without opening anything.

The reader and writer interfaces, the ``"module:Class"`` rule, which ``input`` values
name files, the checks of ``input_config`` and of an input mix. Config validation
imports this module: it must stay light (no orjson, lz4, pyarrow or readers).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from numbers import Real
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from offrl.errors import ConfigError
from offrl.io.sources import is_uri

if TYPE_CHECKING:
    from offrl.batch import MultiAgentBatch, SampleBatch

# The ``input`` value that means "sample the env now" (alone or as a source of a mix).
SAMPLER = "sampler"
# The most one compressed column may decode to, unless input_config.max_column_bytes says.
DEFAULT_MAX_COLUMN_BYTES = 256 * 2**20
# |sum - 1| up to this is rounding in a hand-written config, not a mistake.
SUM_TOLERANCE = 1e-6
# "pkg.module:Class" -- dotted identifiers, one colon, no path separators.
_CLASS_SPEC_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


@runtime_checkable
class InputReader(Protocol):
    """Anything that hands out batches of experience, one per call (readers, the sampler)."""

    def next(self) -> SampleBatch:
        """Return the next batch of experiences."""
        ...


@runtime_checkable
class OutputWriter(Protocol):
    """Anything that saves batches of experiences: one method, ``write(batch)``."""

    def write(self, batch: SampleBatch | MultiAgentBatch) -> None:
        """Save one SampleBatch or MultiAgentBatch."""


def is_class_spec(spec: str) -> bool:
    """True for ``"package.module:ClassName"`` that is not an existing path or a URI."""
    return bool(_CLASS_SPEC_RE.match(spec)) and not is_uri(spec) and not os.path.exists(spec)


def reads_files(spec: Any) -> bool:
    """True if the ``input`` value names at least one offline file source."""
    if isinstance(spec, dict):
        return any(reads_files(source) for source in spec)
    if isinstance(spec, list):
        return True
    return isinstance(spec, str) and spec != SAMPLER and not is_class_spec(spec)


def file_sources(spec: Any) -> list[str | list[str]]:
    """The file sources an ``input`` value names (not ``sampler``, not ``module:Class``)."""
    if isinstance(spec, dict):
        return [source for source in spec if reads_files(source)]
    return [spec] if reads_files(spec) else []


def check_file_input_config(input_config: dict[str, Any]) -> None:
    """``input_config`` for file inputs: ``storage_options`` an object, ``columns`` names."""
    storage_options = input_config.get("storage_options")
    if storage_options is not None and not isinstance(storage_options, dict):
        raise ConfigError(
            f"input_config.storage_options must be an object, got {storage_options!r}"
        )
    columns = input_config.get("columns")
    if columns is not None and (
        not isinstance(columns, list) or not all(isinstance(c, str) for c in columns)
    ):
        raise ConfigError(f"input_config.columns must be a list of column names, got {columns!r}")
    limit = input_config.get("max_column_bytes", DEFAULT_MAX_COLUMN_BYTES)
    if type(limit) is not int or limit < 1:
        raise ConfigError(
            f"input_config.max_column_bytes must be a positive integer (bytes), got {limit!r}"
        )


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
