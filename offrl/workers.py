"""Parallel rollout workers on one machine: N processes sample (or read) for one learner.

Each worker process builds, from a picklable :class:`WorkerSpec`, its own acting
algorithm, :class:`~offrl.rollout.Sampler` and output writer (files ``worker-<i>``),
or its own shard reader for offline input. The learner talks to it over a Pipe::

    learner -> worker   ("sample", weights or None) | ("close", None)
    worker  -> learner  ("ready", None) | ("ok", Fragment) | ("error", WorkerFailure)

Messages are pickled with protocol 5 between our own processes only, never from a file.
:class:`RolloutWorker` is the backend-neutral core; ``offrl/ray_backend.py`` runs it as
Ray actors behind the same ``next()/metrics()/pop_episodes()/close()`` surface.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing as mp
import pickle
import signal
import sys
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

import numpy as np

from offrl.batch import SampleBatch
from offrl.config import CommonConfig
from offrl.errors import ConfigError, DataFormatError, OffrlRuntimeError

SAMPLER = "sampler"
# torch._dynamo: building any torch optimizer imports it lazily (~800 modules, seconds).
_PRELOAD = [
    "torch._dynamo",
    "offrl.workers",
    "offrl.algos.pg",
    "offrl.algos.dqn",
    "offrl.rollout",
    "offrl.io.output",
    "offrl.io.input",
]
# Readers send records in bundles: one pipe message per small record costs more than
# decoding it. Records keep their boundaries (their columns may differ).
_BUNDLE_ROWS = 1024
_BUNDLE_RECORDS = 64
_POLL_S = 1.0  # how often a blocked learner re-checks worker liveness
_ACTING_NETS = ("model", "online")  # PG acts with .model, DQN with .online (see get_state)


# -- what travels between learner and workers ---------------------------------------------


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker needs to build itself in a fresh process (all picklable)."""

    algo_name: str
    config: dict[str, Any]  # CommonConfig.to_dict() of the run
    env_id: str
    run_seed: int
    logdir: str
    worker_index: int  # 1-based: files worker-1, worker-2, ... (worker-0 is the learner)
    num_workers: int
    input_spec: Any  # "sampler" or an offline spec (path, glob, list, "module:Class")
    spaces: tuple[Any, Any] | None  # (observation_space, action_space) when sampling
    synchronous: bool
    restart: int = 0  # incarnation of this worker; a restart gets fresh seeds


@dataclass
class Fragment:
    """One reply of a worker: its batches, whether sampled live, finished episodes."""

    worker_index: int
    batches: list[SampleBatch]  # one fragment when live; a bundle of records when reading
    live: bool
    episodes: list[tuple[float, int]] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class WorkerFailure:
    """What went wrong in a worker, as plain data (exceptions do not always pickle)."""

    kind: str  # "config" | "data" | "crash"
    message: str
    traceback: str = ""
    path: str | None = None
    line: int | None = None

    @staticmethod
    def from_exception(e: BaseException) -> WorkerFailure:
        tb = "".join(traceback.format_exception(type(e), e, e.__traceback__))
        if isinstance(e, DataFormatError):
            return WorkerFailure("data", e.reason, tb, e.path, e.line)
        kind = "config" if isinstance(e, ConfigError) else "crash"
        return WorkerFailure(kind, f"{type(e).__name__}: {e}", tb)

    @property
    def restartable(self) -> bool:
        """Bad config or bad data fails again in a new worker; only crashes are retried."""
        return self.kind == "crash"

    def to_error(self, worker_index: int, hint: str = "") -> Exception:
        """The learner-side exception: same kind, naming the worker and its traceback."""
        if self.kind == "data":
            return DataFormatError(
                self.path or "?", self.line, f"{self.message} (worker {worker_index})"
            )
        if self.kind == "config":
            return ConfigError(f"rollout worker {worker_index}: {self.message}")
        tb = (
            f"\n--- traceback in worker {worker_index} ---\n{self.traceback}"
            if self.traceback
            else ""
        )
        return OffrlRuntimeError(f"rollout worker {worker_index} failed: {self.message}{hint}{tb}")


def worker_seed(run_seed: int, worker_index: int, restart: int = 0) -> int:
    """Seed of worker ``worker_index`` (its ``restart``-th incarnation), from the run seed."""
    # SeedSequence spreads (seed, i) so workers' env seeds and RNG streams do not overlap.
    return int(np.random.SeedSequence([run_seed, worker_index, restart]).generate_state(1)[0])


def sync_fragment_length(algo_length: int, num_workers: int) -> int:
    """Per-worker vector steps so one synchronous round of N fragments is one train batch."""
    return max(1, math.ceil(algo_length / num_workers))


def describe_exit(exitcode: int | None) -> str:
    """``"exit code 3"`` / ``"killed by signal SIGKILL"`` / ``"no reply"``."""
    if exitcode is None:
        return "still running but not replying"
    if exitcode < 0:
        with contextlib.suppress(ValueError):
            return f"killed by signal {signal.Signals(-exitcode).name}"
    return f"exit code {exitcode}"


# -- weights: the acting network only ------------------------------------------------------


def acting_weights(algo: Any) -> dict[str, Any]:
    """The acting network's parameters as numpy arrays (+ DQN's step count for epsilon)."""
    get = getattr(algo, "get_weights", None)
    if callable(get):
        return dict(get())
    import torch

    out: dict[str, Any] = {}
    for name in _ACTING_NETS:
        net = getattr(algo, name, None)
        if isinstance(net, torch.nn.Module):
            out[name] = {k: v.detach().cpu().numpy().copy() for k, v in net.state_dict().items()}
    counters = getattr(algo, "counters", None)
    if isinstance(counters, dict) and "num_steps_sampled" in counters:
        out["num_steps_sampled"] = int(counters["num_steps_sampled"])
    if not out:
        raise TypeError(f"{type(algo).__name__} has no get_weights() and no acting network")
    return out


def load_acting_weights(algo: Any, weights: dict[str, Any]) -> None:
    """Inverse of :func:`acting_weights` on a worker's algorithm instance."""
    set_ = getattr(algo, "set_weights", None)
    if callable(set_):
        set_(weights)
        return
    import torch

    for name in _ACTING_NETS:
        if name in weights:
            params = {k: torch.as_tensor(v) for k, v in weights[name].items()}
            getattr(algo, name).load_state_dict(params)
    if "num_steps_sampled" in weights:
        algo.counters["num_steps_sampled"] = int(weights["num_steps_sampled"])


def merge_metrics(per_worker: list[dict[str, Any]]) -> dict[str, Any]:
    """Reader metrics of all workers: counts summed, ``epoch`` the slowest worker's."""
    out: dict[str, Any] = {}
    for metrics in per_worker:
        for key, value in metrics.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if key == "epoch":
                out[key] = min(out.get(key, value), value)
            else:
                out[key] = out.get(key, 0) + value
    return out


# -- the worker itself (backend-neutral) -----------------------------------------------------


class RolloutWorker:
    """Samples with its own algorithm copy and Sampler (and writer), or reads its own shard."""

    def __init__(self, spec: WorkerSpec) -> None:
        from offrl.algos import get_algorithm
        from offrl.config import from_dict

        self.index = spec.worker_index
        config_cls, algo_cls = get_algorithm(spec.algo_name)
        seed = worker_seed(spec.run_seed, spec.worker_index, spec.restart)
        # num_threads=1: N workers share the machine's cores with the learner.
        data = dict(spec.config, seed=seed, num_threads=1)
        self.config: CommonConfig = from_dict(config_cls, data, algo=spec.algo_name)
        self.algo: Any = None
        self.sampler: Any = None
        self.reader: Any = None
        self.writer: Any = None
        try:
            if spec.input_spec == SAMPLER:
                self._build_sampling(spec, algo_cls, seed)
            else:
                from offrl.io.input import make_input_reader

                self.reader = make_input_reader(
                    spec.input_spec,
                    config=self.config,
                    seed=spec.run_seed,
                    worker_index=spec.worker_index - 1,
                    num_workers=spec.num_workers,
                )
        except BaseException:
            self.close()
            raise

    def _build_sampling(self, spec: WorkerSpec, algo_cls: Any, seed: int) -> None:
        from offrl.rollout import Sampler

        if spec.spaces is None:
            raise ValueError("a sampling worker needs the env's spaces")
        cfg = self.config
        self.algo = algo_cls(cfg, *spec.spaces)
        length = self.algo.rollout_fragment_length()
        if spec.synchronous:
            length = sync_fragment_length(length, spec.num_workers)
        self.sampler = Sampler(
            spec.env_id, cfg.num_envs_per_worker, self.algo, length, seed, cfg.horizon
        )
        if cfg.output is not None:
            from offrl.io.output import make_output_writer

            self.writer = make_output_writer(
                cfg.output, logdir=Path(spec.logdir), worker_index=spec.worker_index, config=cfg
            )

    def sample(self, weights: dict[str, Any] | None = None) -> Fragment:
        """Load ``weights`` (if given), then one fragment (written first) or one record."""
        if self.sampler is not None:
            if weights is not None:
                load_acting_weights(self.algo, weights)
            batch = self.sampler.next()
            if self.writer is not None:
                self.writer.write(batch)
            return Fragment(self.index, [batch], True, self.sampler.pop_episodes())
        batches = [self.reader.next()]
        rows = batches[0].count
        while rows < _BUNDLE_ROWS and len(batches) < _BUNDLE_RECORDS:
            batches.append(self.reader.next())
            rows += batches[-1].count
        metrics = getattr(self.reader, "metrics", None)
        return Fragment(
            self.index, batches, False, [], dict(metrics()) if callable(metrics) else {}
        )

    def close(self) -> None:
        """Close the writer first (so its files are complete), then envs and reader."""
        try:
            if self.writer is not None:
                from offrl.io.output import close_output

                close_output(self.writer)
                self.writer = None
        finally:
            for part in (self.sampler, self.reader):
                close = getattr(part, "close", None)
                if callable(close):
                    close()
            self.sampler = self.reader = None


# -- the worker process ----------------------------------------------------------------------


def _send(conn: Connection, msg: tuple[str, Any]) -> None:
    conn.send_bytes(pickle.dumps(msg, protocol=5))


def _recv(conn: Connection) -> tuple[str, Any]:
    # Only ever bytes our own worker/learner process pickled (see module docstring).
    return pickle.loads(conn.recv_bytes())  # type: ignore[no-any-return]


def _exit_on_term(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)  # run the finally blocks: files get closed


def worker_main(conn: Connection, spec: WorkerSpec) -> None:
    """Body of one worker process: build, then serve sample requests until told to close."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the learner's to handle
    signal.signal(signal.SIGTERM, _exit_on_term)
    import torch

    torch.set_num_threads(1)
    worker: RolloutWorker | None = None
    code = 0
    try:
        worker = RolloutWorker(spec)
        _send(conn, ("ready", None))
        while True:
            cmd, arg = _recv(conn)
            if cmd == "close":
                break
            _send(conn, ("ok", worker.sample(arg)))
    except EOFError:
        code = 1  # the learner is gone; there is no one left to report to
    except Exception as e:  # reported to the learner, which restarts us or stops the run
        code = 1
        with contextlib.suppress(OSError):
            _send(conn, ("error", WorkerFailure.from_exception(e)))
    finally:
        if worker is not None:
            worker.close()
        conn.close()
    sys.exit(code)


def worker_context() -> Any:
    """A forkserver context that preloads torch and offrl (spawn where there is none).

    Plain fork copies the learner's torch thread pools (a known deadlock); spawn is safe
    but every worker re-imports torch (~3 s CPU each). A forkserver imports it once and
    forks clean copies of that single-threaded server.
    """
    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    # Global to this process's forkserver, and only honoured before it first starts.
    ctx.set_forkserver_preload(_PRELOAD)
    return ctx


# -- the learner's side ------------------------------------------------------------------------


@dataclass
class _Handle:
    """The learner's view of one worker process."""

    spec: WorkerSpec
    process: Any
    conn: Connection
    pending: int = 0  # requests sent and not yet answered
    version: int = -1  # weights version this worker has


class WorkerSet:
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
            from offrl.rollout import env_spaces

            spaces = env_spaces(env_id)
        else:
            self._check_shards(spec_in, config, num_workers)
        self._handles: list[_Handle] = []
        try:
            for i in range(1, num_workers + 1):
                spec = WorkerSpec(
                    algo_name,
                    config.to_dict(),
                    env_id,
                    seed,
                    str(logdir),
                    i,
                    num_workers,
                    spec_in,
                    spaces,
                    self.synchronous,
                )
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

    def next(self) -> tuple[SampleBatch, bool]:
        """The next batch from the workers and whether it was sampled live."""
        if self._closed:
            raise OffrlRuntimeError("WorkerSet.next() called after close()")
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

    def __enter__(self) -> WorkerSet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- scheduling ---------------------------------------------------------------------
    def _fill(self) -> None:
        if self.live and self.synchronous:
            for h in self._handles:
                self._request(h)
            frags = [self._collect(h) for h in self._handles]
            batches = (b for f in frags for b in f.batches)
            self._queue.append((SampleBatch.concat_samples(batches), True))
            self.last_worker_index = 0  # a round: every worker
            return
        depth = 1 if self.live else 2  # offline: read ahead, no weights to go stale
        if not self._started:
            for h in self._handles:
                for _ in range(depth):
                    self._request(h)
            self._started = True
        h = self._handles[self._turn] if not self.live else self._first_ready()
        if not self.live:
            self._turn = (self._turn + 1) % len(self._handles)
        frag = self._collect(h)
        self._request(h)
        self.last_worker_index = frag.worker_index
        self._queue.extend((b, frag.live) for b in frag.batches)

    def _first_ready(self) -> _Handle:
        """The lowest-index worker with a reply (or a death) waiting."""
        owners: dict[Any, _Handle] = {}
        for h in self._handles:
            owners[h.conn] = owners[h.process.sentinel] = h
        deadline = time.monotonic() + self.sample_timeout
        while time.monotonic() < deadline:
            ready = wait(list(owners), timeout=_POLL_S)
            if ready:
                return min((owners[r] for r in ready), key=lambda h: h.spec.worker_index)
        return self._handles[0]  # all silent: _collect times this one out and reports it

    def _request(self, h: _Handle) -> None:
        weights = self._weights if h.version < self._version else None
        h.version = self._version
        with contextlib.suppress(OSError):  # a dead worker: _collect sees its sentinel
            _send(h.conn, ("sample", weights))
        h.pending += 1

    def _collect(self, h: _Handle) -> Fragment:
        """The next reply of worker ``h``; restarts it or raises when it failed."""
        while True:
            msg = self._receive(h, self.sample_timeout)
            h.pending -= 1
            if msg[0] == "ok":
                frag: Fragment = msg[1]
                self._episodes.extend(frag.episodes)
                if frag.metrics:
                    self._metrics[h.spec.worker_index] = frag.metrics
                return frag
            h = self._on_failure(h, msg[1])

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

    def _on_failure(self, h: _Handle, failure: WorkerFailure) -> _Handle:
        """Restart worker ``h`` (returning its successor) or close everything and raise."""
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
            self._request(new)
        return new

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
        from offrl.io.input import is_class_spec
        from offrl.io.sources import resolve_sources

        if isinstance(spec, str) and is_class_spec(spec):
            return
        files = resolve_sources(spec, config.input_config.get("storage_options") or {})
        if num_workers > len(files):
            self.warnings.append(
                f"{num_workers} workers but {len(files)} input file(s): workers share files "
                "record by record; every row is still read once per epoch"
            )

    def _stop_all(self, handles: list[_Handle], timeout: float) -> None:
        """Ask workers to finish (draining replies), then terminate/kill the ones that linger."""
        deadline = time.monotonic() + timeout
        for h in handles:
            if not h.process.is_alive():
                continue
            with contextlib.suppress(OSError, EOFError):
                while h.pending > 0 and h.conn.poll(max(0.0, deadline - time.monotonic())):
                    h.conn.recv_bytes()  # discarded: the batch is already in the worker's file
                    h.pending -= 1
                _send(h.conn, ("close", None))
        for h in handles:
            h.process.join(max(0.0, deadline - time.monotonic()))
        for stop in ("terminate", "kill"):  # SIGTERM still runs the worker's finally blocks
            lingering = [h for h in handles if h.process.exitcode is None]
            for h in lingering:
                getattr(h.process, stop)()
            for h in lingering:
                h.process.join(2.0)
        for h in handles:
            h.conn.close()

    def close(self, timeout: float = 10.0) -> None:
        """Stop every worker (their writers close their files); idempotent."""
        if self._closed:
            return
        self._closed = True
        self._stop_all(self._handles, timeout)


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
