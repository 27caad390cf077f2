"""SampleBatchBuilder: collect steps one row at a time, then emit a SampleBatch (RLlib's API).

Used to convert external logs: call ``add_values(obs=..., actions=..., ...)``
once per step, then ``build_and_reset()`` per episode or fragment and hand the
batch to a writer.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from offrl.batch import INFOS, SampleBatch


def _stack(name: str, values: list[Any]) -> np.ndarray:
    """One column from its per-row values: arrays stacked, scalars as a 1-D array."""
    if name == INFOS:
        arr = np.empty(len(values), dtype=object)
        arr[:] = values  # keep the dicts themselves, never turn them into arrays
        return arr
    try:
        return np.stack([np.asarray(v) for v in values])
    except ValueError as e:
        shapes = sorted({np.shape(v) for v in values})
        raise ValueError(f"column {name!r}: rows have different shapes {shapes}: {e}") from None


class SampleBatchBuilder:
    """Accumulate rows with :meth:`add_values`; :meth:`build_and_reset` returns the batch."""

    def __init__(self) -> None:
        self._buffers: dict[str, list[Any]] = {}
        self.count = 0

    def add_values(self, **row: Any) -> None:
        """Append one step; every row must give the same columns as the first."""
        if self.count and row.keys() != self._buffers.keys():
            missing = sorted(self._buffers.keys() - row.keys())
            extra = sorted(row.keys() - self._buffers.keys())
            raise ValueError(
                f"row {self.count} of this batch has different columns than row 0: "
                f"missing {missing}, extra {extra}; give every row the same columns"
            )
        for name, value in row.items():
            self._buffers.setdefault(name, []).append(value)
        self.count += 1

    def build_and_reset(self) -> SampleBatch:
        """The rows added since the last call as a SampleBatch; the builder starts empty."""
        batch = SampleBatch({name: _stack(name, vals) for name, vals in self._buffers.items()})
        self._buffers = {}
        self.count = 0
        return batch
