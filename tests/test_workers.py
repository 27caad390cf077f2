"""Rollout worker processes: per-worker files, shards, failures, reproducibility."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch

from offrl import batch as sb
from offrl.algos import get_algorithm
from offrl.batch import SampleBatch
from offrl.config import CommonConfig, from_dict
from offrl.envs import env_spaces
from offrl.errors import ConfigError, DataFormatError, OffrlRuntimeError
from offrl.io.json_reader import JsonReader
from offrl.io.json_writer import JsonWriter
from offrl.workers import _BUNDLE_RECORDS as BUNDLE_RECORDS
from offrl.workers import (
    WorkerFailure,
    WorkerSet,
    WorkerSource,
    acting_weights,
    describe_exit,
    merge_metrics,
    sync_fragment_length,
    worker_seed,
)

torch.set_num_threads(1)
ENV = "CartPole-v1"
KILL_DETECT_S = 20.0  # generous for a loaded 2-core VM; detection itself is ~1 poll (1 s)


def config(algo: str, **keys: Any) -> CommonConfig:
    cls, _ = get_algorithm(algo)
    return from_dict(cls, {"model": {"fcnet_hiddens": [8]}, **keys})


class BoomEnv(gym.Env):
    """Raises on its third step: a worker whose env fails."""

    def __init__(self) -> None:
        self.observation_space = gym.spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self.t = 0

    def reset(self, *, seed: int | None = None, options: Any = None) -> tuple[Any, dict]:
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(2, dtype=np.float32), {}

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        self.t += 1
        if self.t == 3:
            raise RuntimeError("boom at step 3")
        return np.zeros(2, dtype=np.float32), 1.0, False, False, {}


def step_keys(batch: SampleBatch) -> list[tuple[int, int]]:
    return list(zip(batch[sb.EPS_ID].tolist(), batch[sb.T].tolist(), strict=True))


def output_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.json"))


def read_all(paths: list[Path]) -> list[SampleBatch]:
    with JsonReader([str(p) for p in paths], shuffle_files=False) as reader:
        return list(reader.iter_epoch())


# -- pure helpers ---------------------------------------------------------------------------


def test_worker_seeds_are_deterministic_and_distinct() -> None:
    seeds = [worker_seed(7, i) for i in range(1, 5)]
    assert seeds == [worker_seed(7, i) for i in range(1, 5)]
    assert len(set(seeds)) == 4
    assert worker_seed(7, 1, restart=1) != worker_seed(7, 1)
    assert worker_seed(8, 1) != worker_seed(7, 1)


@pytest.mark.parametrize(
    ("length", "n", "expected"), [(200, 1, 200), (200, 2, 100), (7, 2, 4), (1, 4, 1)]
)
def test_sync_fragment_length_splits_one_train_batch(length: int, n: int, expected: int) -> None:
    assert sync_fragment_length(length, n) == expected


def test_merge_metrics_sums_counts_and_keeps_slowest_epoch() -> None:
    merged = merge_metrics(
        [
            {"epoch": 2, "rows_read": 10, "files": 1, "note": "x"},
            {"epoch": 1, "rows_read": 5, "files": 2},
        ]
    )
    assert merged == {"epoch": 1, "rows_read": 15, "files": 3}


def test_describe_exit() -> None:
    assert describe_exit(-signal.SIGKILL) == "killed by signal SIGKILL"
    assert describe_exit(3) == "exit code 3"


def test_failure_becomes_the_right_error() -> None:
    data = WorkerFailure("data", "bad column", "tb", "/x.json", 4).to_error(2)
    assert isinstance(data, DataFormatError) and data.line == 4 and "worker 2" in str(data)
    assert isinstance(WorkerFailure("config", "k").to_error(1), ConfigError)
    crash = WorkerFailure("crash", "RuntimeError: boom", "Traceback ...").to_error(3, "; hint")
    assert isinstance(crash, OffrlRuntimeError)
    assert "rollout worker 3 failed: RuntimeError: boom; hint" in str(crash)
    # the worker's traceback is shown with -v only (cli prints ``detail``), not in the message
    assert "Traceback ..." not in str(crash) and "Traceback ..." in crash.detail
    assert not WorkerFailure("data", "x").restartable and WorkerFailure("crash", "x").restartable
    env = WorkerFailure.from_exception(OffrlRuntimeError("env E failed at step 3: ValueError"))
    assert env.kind == "runtime" and env.restartable
    assert str(env.to_error(1)) == "rollout worker 1 failed: env E failed at step 3: ValueError"


# -- live sampling ---------------------------------------------------------------------------


def test_sync_workers_write_own_files_once_each_step_and_close(tmp_path: Path) -> None:
    cfg = config("PG", train_batch_size=40, output=str(tmp_path))
    batches: list[SampleBatch] = []
    with WorkerSet("PG", cfg, ENV, 3, tmp_path, 2) as ws:
        for pid in ws.pids():  # a terminal's Ctrl-C reaches workers too: they leave it to us
            os.kill(pid, signal.SIGINT)
        for _ in range(3):
            batch, live = ws.next()
            assert live
            batches.append(batch)
        episodes = ws.pop_episodes()
        procs = [h.process for h in ws._handles]
    assert [p.exitcode for p in procs] == [0, 0]  # close() stopped them cleanly, not killed
    # One round = 20 vector steps from each of 2 workers = one train batch of 40 rows.
    assert [b.count for b in batches] == [40, 40, 40]
    names = [p.name for p in output_files(tmp_path)]
    assert len(names) == 2
    assert [re.search(r"_worker-(\d+)_", n).group(1) for n in names] == ["1", "2"]  # type: ignore[union-attr]
    written = read_all(output_files(tmp_path))
    written_keys = [k for b in written for k in step_keys(b)]
    sampled_keys = [k for b in batches for k in step_keys(b)]
    assert len(written_keys) == len(set(written_keys)) == 120  # every step once, no duplicates
    assert sorted(written_keys) == sorted(sampled_keys)
    assert sum(length for _, length in episodes) <= 120 and episodes
    # Same seed and N, no weights pushed: the same batches again (no output this time).
    cfg2 = config("PG", train_batch_size=40)
    with WorkerSet("PG", cfg2, ENV, 3, tmp_path / "none", 2) as ws2:
        again = [ws2.next()[0] for _ in range(3)]
    for a, b in zip(batches, again, strict=True):
        np.testing.assert_array_equal(a[sb.OBS], b[sb.OBS])
        np.testing.assert_array_equal(a[sb.ACTIONS], b[sb.ACTIONS])
    # The two workers' halves of a round differ (different derived seeds).
    first = batches[0]
    assert not np.array_equal(first[sb.OBS][:20], first[sb.OBS][20:])


def test_async_dqn_workers_use_the_pushed_weights(tmp_path: Path) -> None:
    cfg = config(
        "DQN",
        rollout_fragment_length=5,
        exploration_final_eps=0.0,
        exploration_fraction=0.01,
        learning_starts=1,
    )
    _, algo_cls = get_algorithm("DQN")
    algo = algo_cls(cfg, *env_spaces(ENV))
    with torch.no_grad():  # a Q net that always prefers action 1
        for p in algo.online.parameters():
            p.zero_()
        algo.online.advantage[-1].bias[1] = 100.0
    algo.counters["num_steps_sampled"] = 10**9  # past the schedule: epsilon = final = 0
    with WorkerSet("DQN", cfg, ENV, 1, tmp_path, 2) as ws:
        assert not ws.synchronous
        source = WorkerSource(ws, algo)
        batches = [source.next() for _ in range(6)]
    assert all(b.count == 5 for b in batches)
    actions = np.concatenate([b[sb.ACTIONS] for b in batches])
    assert (actions == 1).all()


# -- offline input --------------------------------------------------------------------------


def write_dataset(directory: Path, files: int, records: int) -> set[int]:
    """``files`` files of ``records`` one-row records, each with a unique eps_id."""
    ids: set[int] = set()
    for f in range(files):
        with JsonWriter(directory, worker_index=f, compress_columns=[]) as writer:
            for r in range(records):
                eps = 1000 * f + r
                ids.add(eps)
                writer.write(
                    SampleBatch(
                        {
                            sb.OBS: np.zeros((1, 4), np.float32),
                            sb.NEW_OBS: np.zeros((1, 4), np.float32),
                            sb.ACTIONS: np.array([0]),
                            sb.REWARDS: np.array([1.0], np.float32),
                            sb.DONES: np.array([True]),
                            sb.EPS_ID: np.array([eps]),
                            sb.T: np.array([0]),
                        }
                    )
                )
    return ids


@pytest.mark.parametrize("num_workers", [2, 4])
def test_input_shards_cover_every_record_exactly_once(tmp_path: Path, num_workers: int) -> None:
    ids = write_dataset(tmp_path, files=3, records=4)
    cfg = config("DQN", input=str(tmp_path))
    seen: dict[int, list[int]] = {}
    with WorkerSet("DQN", cfg, ENV, 5, tmp_path, num_workers) as ws:
        assert bool(ws.warnings) == (num_workers > 3)  # more workers than files: said so
        for _ in range(2 * num_workers * BUNDLE_RECORDS):  # two bundles from every worker
            batch, live = ws.next()
            assert not live
            seen.setdefault(ws.last_worker_index, []).extend(batch[sb.EPS_ID].tolist())
        metrics = ws.metrics()
    assert sorted(seen) == list(range(1, num_workers + 1))  # round-robin over all workers
    per_worker = [set(v) for v in seen.values()]
    assert set().union(*per_worker) == ids
    assert sum(len(s) for s in per_worker) == len(ids)  # disjoint shards
    assert metrics["rows_read"] >= 2 * len(ids) and metrics["epoch"] >= 1


# -- failures --------------------------------------------------------------------------------


def test_killed_worker_is_reported_quickly(tmp_path: Path) -> None:
    cfg = config("PG", train_batch_size=20, output=str(tmp_path))
    with WorkerSet("PG", cfg, ENV, 0, tmp_path, 2) as ws:
        ws.next()
        os.kill(ws.pids()[1], signal.SIGKILL)
        start = time.monotonic()
        with pytest.raises(OffrlRuntimeError, match=r"worker 2 .*SIGKILL.*recreate_failed_workers"):
            ws.next()
        assert time.monotonic() - start < KILL_DETECT_S
    for batch in read_all(output_files(tmp_path)):  # every line still a complete record
        assert batch.count > 0


def test_killed_worker_is_restarted_when_asked(tmp_path: Path) -> None:
    cfg = config("PG", train_batch_size=20, output=str(tmp_path), recreate_failed_workers=True)
    with WorkerSet("PG", cfg, ENV, 0, tmp_path, 2) as ws:
        ws.next()
        os.kill(ws.pids()[1], signal.SIGKILL)
        batch, _ = ws.next()
        assert batch.count == 20
        assert ws.metrics()["num_worker_restarts"] == 1
        assert "worker 2" in ws.warnings[0]
    worker2 = [p for p in output_files(tmp_path) if "_worker-2_" in p.name]
    assert len(worker2) == 2  # the restarted worker opened its own new file


def test_restarted_asynchronous_worker_keeps_a_request_out(tmp_path: Path) -> None:
    # DQN samples asynchronously: each worker always has one request out. After a restart
    # the refill request must go to the new worker, or it idles until sample_timeout and
    # is taken for dead again.
    cfg = config("DQN", recreate_failed_workers=True)
    with WorkerSet("DQN", cfg, ENV, 0, tmp_path, 1, sample_timeout=KILL_DETECT_S) as ws:
        ws.next()
        os.kill(ws.pids()[0], signal.SIGKILL)
        for _ in range(4):
            ws.next()
        assert ws.metrics()["num_worker_restarts"] == 1
        assert ws.warnings == [ws.warnings[0]] and "worker 1" in ws.warnings[0]


def test_env_error_in_worker_is_reported_with_its_traceback(tmp_path: Path) -> None:
    cfg = config("PG", train_batch_size=10)
    with (
        WorkerSet("PG", cfg, f"{__name__}:BoomEnv", 0, tmp_path, 1) as ws,
        pytest.raises(OffrlRuntimeError) as info,
    ):
        ws.next()
    text = str(info.value)
    assert f"rollout worker 1 failed: env {__name__}:BoomEnv failed at step " in text
    assert "RuntimeError: boom at step 3" in text
    assert "in step" in info.value.detail  # the worker's traceback came along, for -v


def test_weights_are_numpy_copies_of_the_acting_net() -> None:
    cfg = config("PG")
    _, algo_cls = get_algorithm("PG")
    algo = algo_cls(cfg, *env_spaces(ENV))
    weights = acting_weights(algo)
    assert set(weights) == {"model"}
    first = next(iter(algo.model.parameters()))
    key = next(iter(weights["model"]))
    before = weights["model"][key].copy()
    with torch.no_grad():
        first.add_(1.0)
    np.testing.assert_array_equal(weights["model"][key], before)  # a copy, not a view


def test_bad_input_in_a_worker_is_a_data_error_naming_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("not json at all\n")
    cfg = config("DQN", input=str(bad))
    with pytest.raises(DataFormatError) as info, WorkerSet("DQN", cfg, ENV, 0, tmp_path, 1) as ws:
        ws.next()
    assert info.value.path.endswith("bad.json") and "worker 1" in str(info.value)
