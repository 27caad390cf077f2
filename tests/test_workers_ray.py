"""The Ray backend on a local Ray instance started here (skipped without Ray)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_workers import (
    BUNDLE_RECORDS,
    ENV,
    KILL_DETECT_S,
    config,
    output_files,
    read_all,
    step_keys,
    write_dataset,
)

from offrl import batch as sb
from offrl.errors import OffrlRuntimeError
from offrl.workers.ray import RayWorkerSet  # imports ray only when a RayWorkerSet starts

ray = pytest.importorskip("ray")
# Each actor imports torch afresh (~5 s of CPU on the 2-core VM): not a quick test.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def local_ray() -> Iterator[Any]:
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}},
    )
    yield ray
    ray.shutdown()


def test_ray_actors_write_own_files_and_every_step_once(tmp_path: Path) -> None:
    cfg = config("PG", train_batch_size=40, output=str(tmp_path))
    with RayWorkerSet("PG", cfg, ENV, 3, tmp_path, 2) as ws:
        batches = [ws.next()[0] for _ in range(2)]
        assert ws.pop_episodes()
    assert [b.count for b in batches] == [40, 40]
    names = [p.name for p in output_files(tmp_path)]
    assert len(names) == 2 and "_worker-1_" in names[0] and "_worker-2_" in names[1]
    written = [k for b in read_all(output_files(tmp_path)) for k in step_keys(b)]
    sampled = [k for b in batches for k in step_keys(b)]
    assert len(written) == len(set(written)) == 80
    assert sorted(written) == sorted(sampled)
    # Same seed and N as the process backend: the very same batches.
    from offrl.workers import WorkerSet

    with WorkerSet("PG", config("PG", train_batch_size=40), ENV, 3, tmp_path / "p", 2) as local:
        np.testing.assert_array_equal(local.next()[0][sb.ACTIONS], batches[0][sb.ACTIONS])


def test_ray_input_shards_cover_every_record_once(tmp_path: Path) -> None:
    ids = write_dataset(tmp_path, files=3, records=4)
    seen: dict[int, set[int]] = {}
    with RayWorkerSet("DQN", config("DQN", input=str(tmp_path)), ENV, 5, tmp_path, 2) as ws:
        for _ in range(4 * BUNDLE_RECORDS):  # two bundles from each of 2 workers
            batch, live = ws.next()
            assert not live
            seen.setdefault(ws.last_worker_index, set()).update(batch[sb.EPS_ID].tolist())
    assert sorted(seen) == [1, 2]
    assert seen[1] | seen[2] == ids and not seen[1] & seen[2]


def test_ray_killed_actor_is_reported(tmp_path: Path) -> None:
    cfg = config("PG", train_batch_size=20)
    with RayWorkerSet("PG", cfg, ENV, 0, tmp_path, 2) as ws:
        ws.next()
        os.kill(ws.pids()[1], signal.SIGKILL)
        start = time.monotonic()
        with pytest.raises(OffrlRuntimeError, match="rollout worker 2 failed"):
            ws.next()
        assert time.monotonic() - start < KILL_DETECT_S
