"""The surface the local and Ray worker sets share: a queue of finished batches."""

from __future__ import annotations

from typing import Any

from offrl.batch import SampleBatch
from offrl.errors import OffrlRuntimeError
from offrl.workers.core import Fragment, merge_metrics


class QueuedWorkers:
    """What the local and Ray worker sets share: finished batches, episodes and metrics.

    Subclasses address workers by position ``i`` (0-based): ``_request(i)`` sends one
    request, ``_collect(i)`` returns its oldest reply (restarting the worker in place when
    it failed), ``_first_ready()`` is the lowest position with a reply waiting; and they
    keep ``_episodes``, ``_metrics`` (per worker) and ``num_restarts`` up to date.
    """

    _closed: bool
    _queue: Any  # deque[tuple[SampleBatch, bool]]
    _episodes: list[tuple[float, int]]
    _metrics: dict[int, dict[str, Any]]
    _started: bool
    _turn: int
    live: bool
    synchronous: bool
    last_worker_index: int
    num_restarts: int

    @property
    def num_workers(self) -> int:
        raise NotImplementedError

    def _request(self, i: int) -> None:
        raise NotImplementedError

    def _collect(self, i: int) -> Fragment:
        raise NotImplementedError

    def _first_ready(self) -> int:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def _fill(self) -> None:
        """Queue the next batches: a round of every worker (live, synchronous), else one
        worker's fragment (live: the first ready; offline: round-robin) and a new request
        to the worker at that position, restarted or not."""
        n = self.num_workers
        if self.live and self.synchronous:
            for i in range(n):
                self._request(i)
            frags = [self._collect(i) for i in range(n)]
            batches = (b for f in frags for b in f.batches)
            self._queue.append((SampleBatch.concat_samples(batches), True))
            self.last_worker_index = 0  # a round: every worker
            return
        if not self._started:
            depth = 1 if self.live else 2  # offline: read ahead, no weights to go stale
            for i in range(n):
                for _ in range(depth):
                    self._request(i)
            self._started = True
        if self.live:
            i = self._first_ready()
        else:
            i, self._turn = self._turn, (self._turn + 1) % n
        frag = self._collect(i)
        self._request(i)
        self.last_worker_index = frag.worker_index
        self._queue.extend((b, frag.live) for b in frag.batches)

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
