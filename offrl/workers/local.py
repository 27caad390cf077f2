"""WorkerSet: N local worker processes behind one next()/metrics()/close() surface.

The worker side and the message protocol are in ``offrl/workers/core.py``; this is
the learner's side: starting, feeding, watching and stopping the processes.
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from offrl.batch import SampleBatch
from offrl.config import CommonConfig
from offrl.errors import ConfigError
from offrl.signals import stopping_at_once, terminate_processes
from offrl.workers.core import (
    _POLL_S,
    SAMPLER,
    Fragment,
    WorkerFailure,
    WorkerSpec,
    _recv,
    _send,
    acting_weights,
    describe_exit,
    worker_context,
    worker_main,
    worker_specs,
)
from offrl.workers.queue import QueuedWorkers


@dataclass
class _Handle:
    """The learner's view of one worker process."""

    spec: WorkerSpec
    process: Any
    conn: Connection
    pending: int = 0  # requests sent and not yet answered
    version: int = -1  # weights version this worker has


class WorkerSet(QueuedWorkers):
    """N rollout worker processes; ``next() -> (batch, live)`` like the trainer's source.

    * Live sampling, synchronous (PG): each ``next()`` broadcasts the latest weights,
      takes one fragment from every worker and returns them concatenated (one train batch).
    * Live sampling, asynchronous (DQN): every worker always has a request out; ``next()``
      returns whichever fragment is ready first (lowest worker index on ties).
    * Offline input: workers read their shards ahead (two bundles of records out each) and
      ``next()`` returns records bundle by bundle, round-robin by worker, so a fixed N gives
      a fixed order.
    """

    def __init__(
        self,
        algo_name: str,
        config: CommonConfig,
        env_id: str,
        seed: int,
        logdir: str | Path,
        num_workers: int,
        *,
        input_spec: Any = None,
        synchronous: bool | None = None,
        start_timeout: float = 120.0,
        sample_timeout: float = 600.0,
        max_restarts: int = 3,
    ) -> None:
        if num_workers < 1:
            raise ConfigError(f"config key 'num_workers': WorkerSet needs >= 1, got {num_workers}")
        spec_in = config.input if input_spec is None else input_spec
        if isinstance(spec_in, dict):
            raise ConfigError("WorkerSet takes one input source; pass input_spec= per mix entry")
        self.live = spec_in == SAMPLER
        self.synchronous = algo_name.upper() == "PG" if synchronous is None else synchronous
        self.recreate = config.recreate_failed_workers
        self.sample_timeout, self.max_restarts = sample_timeout, max_restarts
        self.warnings: list[str] = []
        self.num_restarts = 0
        self.last_worker_index = 0  # worker of the last batch (0: a whole synchronous round)
        self._weights: dict[str, Any] | None = None
        self._version = 0
        self._queue: deque[tuple[SampleBatch, bool]] = deque()
        self._episodes: list[tuple[float, int]] = []
        self._metrics: dict[int, dict[str, Any]] = {}
        self._turn = 0
        self._started = False
        self._closed = False
        self._ctx = worker_context()
        spaces = None
        if self.live:
            from offrl.envs import env_spaces

            spaces = env_spaces(env_id)
        else:
            self._check_shards(spec_in, config, num_workers)
        self._handles: list[_Handle] = []
        try:
            for spec in worker_specs(
                algo_name,
                config,
                env_id,
                seed,
                logdir,
                num_workers,
                spec_in,
                spaces,
                self.synchronous,
            ):
                self._handles.append(self._spawn(spec))
            self._await_ready(self._handles, start_timeout)
        except BaseException:
            self.close()
            raise

    # -- public surface ---------------------------------------------------------------
    @property
    def num_workers(self) -> int:
        return len(self._handles)

    def pids(self) -> list[int]:
        """Process ids of the workers, in worker order (for tests and diagnostics)."""
        return [h.process.pid for h in self._handles]

    def set_weights(self, weights: dict[str, Any]) -> None:
        """Latest acting weights; each worker gets them with its next request."""
        self._weights = weights
        self._version += 1

    # -- scheduling (``QueuedWorkers._fill``) -------------------------------------------
    def _first_ready(self) -> int:
        """The lowest position with a reply (or a death) waiting."""
        owners: dict[Any, int] = {}
        for i, h in enumerate(self._handles):
            owners[h.conn] = owners[h.process.sentinel] = i
        deadline = time.monotonic() + self.sample_timeout
        while time.monotonic() < deadline:
            ready = wait(list(owners), timeout=_POLL_S)
            if ready:
                return min(owners[r] for r in ready)
        return 0  # all silent: _collect times this one out and reports it

    def _request(self, i: int) -> None:
        h = self._handles[i]
        weights = self._weights if h.version < self._version else None
        h.version = self._version
        with contextlib.suppress(OSError):  # a dead worker: _collect sees its sentinel
            _send(h.conn, ("sample", weights))
        h.pending += 1

    def _collect(self, i: int) -> Fragment:
        """The next reply of the worker at position ``i``; restarts it (in place) or
        raises when it failed."""
        while True:
            h = self._handles[i]
            msg = self._receive(h, self.sample_timeout)
            h.pending -= 1
            if msg[0] == "ok":
                frag: Fragment = msg[1]
                self._episodes.extend(frag.episodes)
                if frag.metrics:
                    self._metrics[h.spec.worker_index] = frag.metrics
                return frag
            self._on_failure(h, msg[1])

    def _receive(self, h: _Handle, timeout: float) -> tuple[str, Any]:
        """One message from ``h``, or ("error", WorkerFailure) when it died or went silent."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                h.process.kill()
                return "error", WorkerFailure("crash", f"no reply within {timeout:g} s")
            ready = wait([h.conn, h.process.sentinel], timeout=min(left, _POLL_S))
            if h.conn in ready or (ready and h.conn.poll()):
                try:
                    return _recv(h.conn)
                except (EOFError, OSError):
                    pass
            if ready:
                h.process.join(timeout=5.0)
                return "error", WorkerFailure(
                    "crash",
                    f"the worker process (pid "
                    f"{h.process.pid}) died: "
                    f"{describe_exit(h.process.exitcode)}",
                )

    def _on_failure(self, h: _Handle, failure: WorkerFailure) -> None:
        """Restart worker ``h`` in its position, or close everything and raise."""
        index = h.spec.worker_index
        can = self.recreate and failure.restartable and h.spec.restart < self.max_restarts
        if not can:
            hint = ""
            if failure.restartable and not self.recreate:
                hint = "; set recreate_failed_workers: true to restart failed workers"
            elif failure.restartable:
                hint = f"; gave up after {self.max_restarts} restarts"
            self.close()
            raise failure.to_error(index, hint)
        self.warnings.append(f"rollout worker {index} failed ({failure.message}); restarting it")
        owed = h.pending + 1  # the request being collected, plus any read-ahead ones
        self._stop_all([h], timeout=2.0)
        spec = WorkerSpec(**{**h.spec.__dict__, "restart": h.spec.restart + 1})
        new = self._spawn(spec)
        self._handles[index - 1] = new
        self.num_restarts += 1
        try:
            self._await_ready([new], 120.0)
        except BaseException:
            self.close()
            raise
        for _ in range(owed):
            self._request(index - 1)

    # -- process management --------------------------------------------------------------
    def _spawn(self, spec: WorkerSpec) -> _Handle:
        parent, child = self._ctx.Pipe(duplex=True)
        proc = self._ctx.Process(
            target=worker_main,
            args=(child, spec),
            daemon=True,
            name=f"offrl-worker-{spec.worker_index}",
        )
        proc.start()
        child.close()
        return _Handle(spec, proc, parent)

    def _await_ready(self, handles: list[_Handle], timeout: float) -> None:
        for h in handles:
            msg = self._receive(h, timeout)
            if msg[0] != "ready":
                failure: WorkerFailure = msg[1]
                raise failure.to_error(h.spec.worker_index, " (while starting)")

    def _check_shards(self, spec: Any, config: CommonConfig, num_workers: int) -> None:
        from offrl.io.sources import resolve_sources
        from offrl.io.specs import is_class_spec

        if isinstance(spec, str) and is_class_spec(spec):
            return
        files = resolve_sources(spec, config.input_config.get("storage_options") or {})
        if num_workers > len(files):
            self.warnings.append(
                f"{num_workers} workers but {len(files)} input file(s): workers share files "
                "record by record; every row is still read once per epoch"
            )

    def _stop_all(self, handles: list[_Handle], timeout: float) -> None:
        """Ask workers to finish within ``timeout`` (draining replies), then terminate/kill
        the ones that linger; ``timeout`` 0 terminates them at once."""
        deadline = time.monotonic() + timeout
        for h in handles:
            if timeout <= 0 or not h.process.is_alive():
                continue
            with contextlib.suppress(OSError, EOFError):
                while h.pending > 0 and h.conn.poll(max(0.0, deadline - time.monotonic())):
                    h.conn.recv_bytes()  # discarded: the batch is already in the worker's file
                    h.pending -= 1
                _send(h.conn, ("close", None))
        for h in handles:
            h.process.join(max(0.0, deadline - time.monotonic()))
        terminate_processes([h.process for h in handles])
        for h in handles:
            h.conn.close()

    def close(self, timeout: float | None = None) -> None:
        """Stop every worker (their writers close their files); idempotent.

        By default workers get 10 s to finish what they are doing, or none while a second
        signal or Ctrl-C unwinds the run (:func:`~offrl.signals.stopping_at_once`): SIGTERM
        at once, SIGKILL ``STOP_GRACE_S`` later for one stuck in native code."""
        if self._closed:
            return
        self._closed = True
        if timeout is None:
            timeout = 0.0 if stopping_at_once() else 10.0
        try:
            self._stop_all(self._handles, timeout)
        except BaseException:  # a second Ctrl-C while waiting: stop them at once
            self._stop_all(self._handles, 0.0)
            raise


class WorkerSource:
    """The trainer's input view of a WorkerSet: ``next() -> SampleBatch``, weights pushed.

    Synchronous sets get the learner's weights before every round; asynchronous ones
    after every ``sync_every_rows`` rows (RLlib's ``max_weight_sync_delay`` idea).
    """

    def __init__(self, workers: Any, algo: Any, sync_every_rows: int = 400) -> None:
        self.workers = workers
        self.algo = algo
        self.sync_every_rows = sync_every_rows
        self._rows = 0
        if workers.live:
            workers.set_weights(acting_weights(algo))

    def next(self) -> SampleBatch:
        live = self.workers.live
        if live and (self.workers.synchronous or self._rows >= self.sync_every_rows):
            self.workers.set_weights(acting_weights(self.algo))
            self._rows = 0
        batch, _ = self.workers.next()
        self._rows += batch.count
        return batch

    def metrics(self) -> dict[str, Any]:
        return self.workers.metrics()

    def pop_episodes(self) -> list[tuple[float, int]]:
        return self.workers.pop_episodes()
