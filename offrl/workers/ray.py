"""Ray backend: the rollout workers of ``offrl/workers/`` as Ray actors, for clusters.

Import this module only when ``framework: ray`` (or ``--ray-address``) is used: it needs
``pip install offrl[ray]``. :class:`RayWorkerSet` has the surface of
:class:`~offrl.workers.WorkerSet` (``set_weights``, ``next() -> (batch, live)``,
``pop_episodes``, ``metrics``, ``close``) and the same scheduling: synchronous rounds
(PG), first-ready fragments (DQN), round-robin read-ahead for offline input. On a
cluster, ``output`` should be a URI (``s3://...``): each actor writes where it runs.
"""

from __future__ import annotations

from collections import deque
from pathlib import Path
from typing import Any

from offrl.batch import SampleBatch
from offrl.config import CommonConfig
from offrl.errors import ConfigError
from offrl.signals import STOP_GRACE_S, stopping_at_once
from offrl.workers import (
    SAMPLER,
    Fragment,
    RolloutWorker,
    WorkerFailure,
    WorkerSpec,
    worker_specs,
)
from offrl.workers.queue import QueuedWorkers


def import_ray() -> Any:
    """The ``ray`` module, or a ConfigError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "framework 'ray' / --ray-address needs Ray: pip install 'offrl[ray]'"
        ) from None
    return ray


class _ActorBody:
    """What each Ray actor runs: a RolloutWorker (ray.remote is applied at runtime)."""

    def __init__(self, spec: WorkerSpec) -> None:
        import torch

        torch.set_num_threads(1)
        self.worker = RolloutWorker(spec)

    def ready(self) -> int:
        return self.worker.index

    def pid(self) -> int:
        import os

        return os.getpid()

    def sample(self, weights: dict[str, Any] | None) -> Fragment:
        return self.worker.sample(weights)

    def close(self) -> None:
        self.worker.close()


def _failure(ray: Any, e: BaseException) -> WorkerFailure:
    """A WorkerFailure from what ``ray.get`` raised."""
    if isinstance(e, ray.exceptions.RayTaskError):
        cause = getattr(e, "cause", None)
        if isinstance(cause, BaseException):
            base = WorkerFailure.from_exception(cause)
            return WorkerFailure(base.kind, base.message, str(e), base.path, base.line)
        return WorkerFailure("crash", str(e).splitlines()[0] if str(e) else repr(e), str(e))
    if isinstance(e, ray.exceptions.GetTimeoutError):
        return WorkerFailure("crash", "no reply within the sample timeout")
    return WorkerFailure("crash", f"the actor died: {type(e).__name__}: {e}")


class RayWorkerSet(QueuedWorkers):
    """N rollout workers as Ray actors; see :class:`offrl.workers.WorkerSet`."""

    def __init__(
        self,
        algo_name: str,
        config: CommonConfig,
        env_id: str,
        seed: int,
        logdir: str | Path,
        num_workers: int,
        *,
        address: str | None = None,
        input_spec: Any = None,
        synchronous: bool | None = None,
        sample_timeout: float = 600.0,
        max_restarts: int = 3,
        init_kwargs: dict[str, Any] | None = None,
    ) -> None:
        if num_workers < 1:
            raise ConfigError(f"config key 'num_workers': Ray needs >= 1 worker, got {num_workers}")
        spec_in = config.input if input_spec is None else input_spec
        if isinstance(spec_in, dict):
            raise ConfigError("RayWorkerSet takes one input source; pass input_spec= per entry")
        self.ray = ray = import_ray()
        self._owns_ray = not ray.is_initialized()
        if self._owns_ray:
            ray.init(address=address, **(init_kwargs or {}))
        self.live = spec_in == SAMPLER
        self.synchronous = algo_name.upper() == "PG" if synchronous is None else synchronous
        self.recreate = config.recreate_failed_workers
        self.sample_timeout, self.max_restarts = sample_timeout, max_restarts
        self.warnings: list[str] = []
        self.num_restarts = 0
        self.last_worker_index = 0
        self._weights_ref: Any = None
        self._version = 0
        self._versions = [-1] * num_workers
        self._queue: deque[tuple[SampleBatch, bool]] = deque()
        self._episodes: list[tuple[float, int]] = []
        self._metrics: dict[int, dict[str, Any]] = {}
        self._pending: list[deque[Any]] = [deque() for _ in range(num_workers)]
        self._turn = 0
        self._started = False
        self._closed = False
        self._remote = ray.remote(num_cpus=1)(_ActorBody)
        spaces = None
        if self.live:
            from offrl.envs import env_spaces

            spaces = env_spaces(env_id)
        self._specs = worker_specs(
            algo_name, config, env_id, seed, logdir, num_workers, spec_in, spaces, self.synchronous
        )
        self._actors: list[Any] = []
        try:
            self._actors = [self._remote.remote(spec) for spec in self._specs]
            for i, actor in enumerate(self._actors):
                self._get_or_raise(i, actor.ready.remote(), " (while starting)")
        except BaseException:
            self.close()
            raise

    # -- public surface -------------------------------------------------------------------
    @property
    def num_workers(self) -> int:
        return len(self._actors)

    def pids(self) -> list[int]:
        """Process ids of the actors, in worker order (for tests and diagnostics)."""
        return [int(pid) for pid in self.ray.get([a.pid.remote() for a in self._actors])]

    def set_weights(self, weights: dict[str, Any]) -> None:
        """Latest acting weights, put in the object store once for all actors."""
        self._weights_ref = self.ray.put(weights)
        self._version += 1

    # -- scheduling (``QueuedWorkers._fill``) ---------------------------------------------
    def _first_ready(self) -> int:
        owner = {ref: i for i, refs in enumerate(self._pending) for ref in refs}
        ready, _ = self.ray.wait(list(owner), num_returns=1, timeout=self.sample_timeout)
        # Nothing ready in time: collecting worker 0 times it out and reports it.
        return min(owner[r] for r in ready) if ready else 0

    def _request(self, i: int) -> None:
        weights = self._weights_ref if self._versions[i] < self._version else None
        self._versions[i] = self._version
        self._pending[i].append(self._actors[i].sample.remote(weights))

    def _collect(self, i: int) -> Fragment:
        """The oldest reply of actor ``i``; restarts it or raises when it failed."""
        while True:
            ref = self._pending[i].popleft()
            try:
                frag: Fragment = self.ray.get(ref, timeout=self.sample_timeout)
            except (self.ray.exceptions.RayError, self.ray.exceptions.GetTimeoutError) as e:
                self._on_failure(i, _failure(self.ray, e))
                continue
            self._episodes.extend(frag.episodes)
            if frag.metrics:
                self._metrics[i + 1] = frag.metrics
            return frag

    def _get_or_raise(self, i: int, ref: Any, hint: str) -> Any:
        try:
            return self.ray.get(ref, timeout=self.sample_timeout)
        except (self.ray.exceptions.RayError, self.ray.exceptions.GetTimeoutError) as e:
            raise _failure(self.ray, e).to_error(i + 1, hint) from None

    def _on_failure(self, i: int, failure: WorkerFailure) -> None:
        spec = self._specs[i]
        if not (self.recreate and failure.restartable and spec.restart < self.max_restarts):
            hint = ""
            if failure.restartable and not self.recreate:
                hint = "; set recreate_failed_workers: true to restart failed workers"
            self.close()
            raise failure.to_error(i + 1, hint)
        self.warnings.append(f"rollout worker {i + 1} failed ({failure.message}); restarting it")
        owed = len(self._pending[i]) + 1
        self.ray.kill(self._actors[i], no_restart=True)
        spec = WorkerSpec(**{**spec.__dict__, "restart": spec.restart + 1})
        self._specs[i] = spec
        self._actors[i] = self._remote.remote(spec)
        self.num_restarts += 1
        self._get_or_raise(i, self._actors[i].ready.remote(), " (while restarting)")
        self._pending[i].clear()
        self._versions[i] = -1
        for _ in range(owed):
            self._request(i)

    def close(self, timeout: float | None = None) -> None:
        """Close every actor (its writer closes its files), then kill it; idempotent.

        By default actors get 10 s to close, or ``STOP_GRACE_S`` while a second signal or
        Ctrl-C unwinds the run (an actor stuck in its env's step() only closes after it)."""
        if self._closed:
            return
        self._closed = True
        if timeout is None:
            timeout = STOP_GRACE_S if stopping_at_once() else 10.0
        ray = self.ray
        try:
            refs = [actor.close.remote() for actor in self._actors]
            if refs:
                # A dead actor's close fails; the others still finish within the timeout.
                ray.wait(refs, num_returns=len(refs), timeout=timeout)
        finally:  # also when a second Ctrl-C cuts the wait short
            for actor in self._actors:
                ray.kill(actor, no_restart=True)
            if self._owns_ray:
                ray.shutdown()
