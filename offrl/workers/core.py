"""Rollout worker core: what runs inside a worker process, and what travels to it.

Each worker process builds, from a picklable :class:`WorkerSpec`, its own acting
algorithm, :class:`~offrl.rollout.Sampler` and output writer (files ``worker-<i>``),
or its own shard reader for offline input. The learner talks to it over a Pipe::

    learner -> worker   ("sample", weights or None) | ("close", None)
    worker  -> learner  ("ready", None) | ("ok", Fragment) | ("error", WorkerFailure)

Messages are pickled with protocol 5 between our own processes only, never from a file.
:class:`RolloutWorker` is the backend-neutral core; ``offrl/workers/ray.py`` runs it as
Ray actors behind the same ``next()/metrics()/pop_episodes()/close()`` surface.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing as mp
import pickle
import signal
import sys
import traceback
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from offrl.batch import SampleBatch
from offrl.config import CommonConfig
from offrl.errors import ConfigError, DataFormatError, OffrlRuntimeError
from offrl.io.specs import SAMPLER
from offrl.seeding import Stream, int_seed

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
        if isinstance(e, ConfigError):
            return WorkerFailure("config", str(e), tb)
        if isinstance(e, OffrlRuntimeError):  # e.g. "env X failed at step N: ..."
            return WorkerFailure("runtime", str(e), tb)
        return WorkerFailure("crash", f"{type(e).__name__}: {e}", tb)

    @property
    def restartable(self) -> bool:
        """Bad config or bad data fails again in a new worker; crashes and env failures
        are retried."""
        return self.kind in ("crash", "runtime")

    def to_error(self, worker_index: int, hint: str = "") -> Exception:
        """The learner-side exception: same kind, naming the worker; the worker's traceback
        rides along as ``detail`` (shown with -v)."""
        if self.kind == "data":
            return DataFormatError(
                self.path or "?", self.line, f"{self.message} (worker {worker_index})"
            )
        if self.kind == "config":
            return ConfigError(f"rollout worker {worker_index}: {self.message}")
        err = OffrlRuntimeError(f"rollout worker {worker_index} failed: {self.message}{hint}")
        if self.traceback:
            err.detail = f"--- traceback in worker {worker_index} ---\n{self.traceback}"
        return err


def worker_seed(run_seed: int, worker_index: int, restart: int = 0) -> int:
    """Seed of worker ``worker_index`` (its ``restart``-th incarnation), from the run seed."""
    return int_seed(run_seed, Stream.WORKER, worker_index, restart)


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
    """The acting network's parameters as numpy arrays (+ DQN's step count for epsilon, and
    the observation filter's statistics)."""
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
    obs_filter = getattr(algo, "obs_filter", None)
    if obs_filter is not None:  # the policy's input statistics act with the networks
        out["obs_filter"] = obs_filter.state()
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
    if "obs_filter" in weights:
        algo.obs_filter.load_state(weights["obs_filter"])


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
                    seed=int_seed(spec.run_seed, Stream.READER),
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


def worker_specs(
    algo_name: str,
    config: CommonConfig,
    env_id: str,
    seed: int,
    logdir: str | Path,
    num_workers: int,
    input_spec: Any,
    spaces: Any,
    synchronous: bool,
) -> list[WorkerSpec]:
    """The specs of workers 1..N (worker 0 is the learner)."""
    return [
        WorkerSpec(
            algo_name,
            config.to_dict(),
            env_id,
            seed,
            str(logdir),
            i,
            num_workers,
            input_spec,
            spaces,
            synchronous,
        )
        for i in range(1, num_workers + 1)
    ]
