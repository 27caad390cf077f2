"""Shuffle experiences through a buffer, without the duplicates RLlib's version produces.

Granularity (``unit``):

* ``"batch"`` (default, what ``shuffle_buffer_size`` means): read N batches, emit
  them in a random order, repeat. Rows inside a batch keep their order, so episodes
  (or fragments) stay contiguous and the learner's post-processing (PG returns,
  DQN n-step targets) may run after the shuffle, as the trainer does.
* ``"row"``: read N batches, concatenate them, permute the rows and emit batches of
  the same sizes as were read. This decorrelates rows much better but breaks episode
  contiguity: wrap a reader that has *already* post-processed its batches (see
  :class:`MappedInput`), and never feed row-shuffled batches to off-policy
  estimators, which need whole episodes.

Either way the output is a permutation of the input block by block: output
positions ``[kN, (k+1)N)`` hold exactly the rows of input batches ``[kN, (k+1)N)``,
each once, so every row appears exactly once per epoch whenever the buffer size
divides the epoch (or is at least the epoch). A finite inner reader that raises
``StopIteration`` has its last, partial buffer shuffled and drained before the
``StopIteration`` is passed on.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from offrl.batch import SampleBatch
from offrl.errors import ConfigError
from offrl.io.specs import InputReader

UNITS = ("batch", "row")


def shuffle_rows(batches: list[SampleBatch], rng: np.random.Generator) -> list[SampleBatch]:
    """Permute the rows of ``batches`` together; return batches of the same sizes."""
    sizes = [b.count for b in batches]
    joined = SampleBatch.concat_samples(batches)
    shuffled = joined.take(rng.permutation(joined.count))
    bounds = np.cumsum([0, *sizes]).tolist()
    return [shuffled.slice(s, e) for s, e in zip(bounds[:-1], bounds[1:], strict=True)]


class ShuffledInput:
    """An InputReader that emits the inner reader's batches (or rows) in a seeded random order."""

    def __init__(
        self,
        reader: InputReader,
        buffer_size: int,
        rng: np.random.Generator,
        unit: str = "batch",
    ) -> None:
        if isinstance(buffer_size, bool) or not isinstance(buffer_size, int) or buffer_size < 1:
            raise ConfigError(f"shuffle_buffer_size is {buffer_size!r}; it must be an integer >= 1")
        if unit not in UNITS:
            raise ConfigError(f"shuffle unit is {unit!r}; it must be one of {', '.join(UNITS)}")
        self._reader = reader
        self._size = buffer_size
        self._rng = rng
        self._unit = unit
        self._out: list[SampleBatch] = []  # shuffled, emitted from the end
        self._exhausted = False

    def next(self) -> SampleBatch:
        """The next shuffled batch; refills and reshuffles the buffer when it runs empty."""
        if not self._out:
            self._refill()
        if not self._out:
            raise StopIteration
        return self._out.pop()

    def _refill(self) -> None:
        block: list[SampleBatch] = []
        while len(block) < self._size and not self._exhausted:
            try:
                block.append(self._reader.next())
            except StopIteration:
                self._exhausted = True
        if self._unit == "row" and block:
            block = shuffle_rows(block, self._rng)
        order = self._rng.permutation(len(block))
        self._out = [block[i] for i in order]

    def metrics(self) -> dict[str, float]:
        """The inner reader's metrics (dataset progress etc.), unchanged."""
        inner = getattr(self._reader, "metrics", None)
        return dict(inner()) if callable(inner) else {}


class MappedInput:
    """An InputReader applying ``fn`` to every batch, e.g. post-processing before a row shuffle."""

    def __init__(self, reader: InputReader, fn: Callable[[SampleBatch], SampleBatch]) -> None:
        self._reader = reader
        self._fn = fn

    def next(self) -> SampleBatch:
        """The inner reader's next batch, mapped."""
        return self._fn(self._reader.next())

    def metrics(self) -> dict[str, float]:
        """The inner reader's metrics, unchanged."""
        inner = getattr(self._reader, "metrics", None)
        return dict(inner()) if callable(inner) else {}
