"""The surface the local and Ray worker sets share: a queue of finished batches."""

from __future__ import annotations

from typing import Any

from offrl.batch import SampleBatch
from offrl.errors import OffrlRuntimeError
from offrl.workers.core import merge_metrics


class QueuedWorkers:
    """What the local and Ray worker sets share: finished batches, episodes and metrics.

    Subclasses fill ``_queue`` in ``_fill()`` and keep ``_episodes``, ``_metrics``
    (per worker) and ``num_restarts`` up to date.
    """

    _closed: bool
    _queue: Any  # deque[tuple[SampleBatch, bool]]
    _episodes: list[tuple[float, int]]
    _metrics: dict[int, dict[str, Any]]
    num_restarts: int

    def _fill(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def next(self) -> tuple[SampleBatch, bool]:
        """The next batch from the workers and whether it was sampled live."""
        if self._closed:
            raise OffrlRuntimeError(f"{type(self).__name__}.next() called after close()")
        if not self._queue:
            self._fill()
        return self._queue.popleft()

    def pop_episodes(self) -> list[tuple[float, int]]:
        """(return, length) of every episode the workers finished since the last call."""
        out, self._episodes = self._episodes, []
        return out

    def metrics(self) -> dict[str, Any]:
        """Merged reader metrics of all workers, plus how many workers were restarted."""
        out = merge_metrics(list(self._metrics.values()))
        out["num_worker_restarts"] = self.num_restarts
        return out

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
