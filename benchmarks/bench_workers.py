"""Throughput of rollout worker processes (offrl/workers.py) against sampling in the learner.

Measures, on this machine, with PG's acting network on CartPole:

* env steps/s and rows written/s with N = 0 (Sampler + JsonWriter in the learner
  process, the baseline), N = 1 and N = 2 worker processes (synchronous rounds, each
  worker writing its own files), and the ratio to N = 0;
* reading rows/s of a multi-file input with N = 0 (JsonReader in the learner), 1 and 2
  workers (each reading its own shard);
* the learner's PG update rate (rows/s through postprocess + learn), and from it and
  the per-worker rate a paper estimate for 64 workers on a cluster.

Startup (process start, torch import) is excluded: each set is warmed up first.
Prints one JSON object per measurement, then a table.

    python benchmarks/bench_workers.py [--seconds 8] [--num-envs 4] [--files 4]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from offrl.algos import get_algorithm
from offrl.config import from_dict
from offrl.envs import env_spaces
from offrl.io.json_reader import JsonReader
from offrl.io.json_writer import JsonWriter
from offrl.rollout import Sampler
from offrl.workers import WorkerSet

ENV = "CartPole-v1"
BATCH = 1000  # rows per synchronous round (train_batch_size)


def pg(num_envs: int, **keys: Any) -> tuple[Any, Any]:
    """(config, algorithm) of PG with small rounds."""
    cfg_cls, algo_cls = get_algorithm("PG")
    cfg = from_dict(cfg_cls, {"train_batch_size": BATCH, "num_envs_per_worker": num_envs, **keys})
    return cfg, algo_cls(cfg, *env_spaces(ENV))


def timed(next_rows: Any, seconds: float) -> tuple[int, float]:
    """Call ``next_rows()`` (returns rows) for about ``seconds``: (rows, elapsed)."""
    next_rows()  # warm-up
    rows, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        rows += next_rows()
    return rows, time.perf_counter() - start


def rows_in(directory: Path) -> int:
    with JsonReader(str(directory), shuffle_files=False) as reader:
        return sum(b.count for b in reader.iter_epoch())


def sample_rate(n: int, num_envs: int, seconds: float, out: Path) -> dict[str, Any]:
    """Env steps/s and rows written/s with ``n`` workers (0: in the learner)."""
    out.mkdir()
    cfg, algo = pg(num_envs, output=str(out))
    if n == 0:
        sampler = Sampler(ENV, num_envs, algo, algo.rollout_fragment_length(), 0)
        with JsonWriter(out, worker_index=0) as writer:

            def step() -> int:
                batch = sampler.next()
                writer.write(batch)
                return batch.count

            rows, elapsed = timed(step, seconds)
        sampler.close()
    else:
        with WorkerSet("PG", cfg, ENV, 0, out, n) as ws:
            rows, elapsed = timed(lambda: ws.next()[0].count, seconds)
    written = rows_in(out)  # includes the warm-up round
    return {
        "bench": "sample",
        "workers": n,
        "num_envs": num_envs,
        "env_steps": rows,
        "seconds": round(elapsed, 2),
        "env_steps_per_s": rows / elapsed,
        "rows_written_per_s": rows / elapsed,
        "rows_in_files": written,
    }


def make_dataset(directory: Path, files: int, rows_per_file: int) -> None:
    """``files`` JSON files of CartPole fragments (default compressed obs columns)."""
    _, algo = pg(4)
    sampler = Sampler(ENV, 4, algo, 50, 0)
    for f in range(files):
        with JsonWriter(directory, worker_index=f) as writer:
            written = 0
            while written < rows_per_file:
                batch = sampler.next()
                writer.write(batch)
                written += batch.count
    sampler.close()


def read_rate(n: int, data: Path, seconds: float) -> dict[str, Any]:
    """Rows/s reading ``data`` with ``n`` workers (0: JsonReader in the learner)."""
    if n == 0:
        reader = JsonReader(str(data), seed=0)
        rows, elapsed = timed(lambda: reader.next().count, seconds)
        reader.close()
    else:
        cfg, _ = pg(1, input=str(data))
        with WorkerSet("PG", cfg, ENV, 0, data, n) as ws:
            rows, elapsed = timed(lambda: ws.next()[0].count, seconds)
    return {
        "bench": "read",
        "workers": n,
        "rows": rows,
        "seconds": round(elapsed, 2),
        "rows_per_s": rows / elapsed,
    }


def learner_rate(seconds: float) -> dict[str, Any]:
    """Rows/s PG's learner consumes (postprocess + learn) on sampled batches."""
    _, algo = pg(4)
    sampler = Sampler(ENV, 4, algo, algo.rollout_fragment_length(), 0)
    batches = [algo.postprocess(sampler.next()) for _ in range(3)]
    sampler.close()
    k = [0]

    def learn() -> int:
        batch = batches[k[0] % len(batches)]
        k[0] += 1
        algo.learn(batch, 0)
        return batch.count

    rows, elapsed = timed(learn, seconds)
    return {
        "bench": "learner",
        "rows": rows,
        "seconds": round(elapsed, 2),
        "learn_rows_per_s": rows / elapsed,
    }


def estimate_64(per_worker: float, learner: float) -> dict[str, Any]:
    """Paper estimate for 64 workers from the per-worker and learner rates (no network cost)."""
    sampling = 64 * per_worker
    return {
        "bench": "estimate_64_workers",
        "per_worker_steps_per_s": per_worker,
        "learner_rows_per_s": learner,
        "sampling_only_steps_per_s": sampling,
        # Asynchronous (sampling overlaps learning): the slower side sets the pace.
        "async_steps_per_s": min(sampling, learner),
        # Synchronous PG: a round samples in parallel, then learns serially.
        "sync_pg_steps_per_s": 1.0 / (1.0 / sampling + 1.0 / learner),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--num-envs", type=int, default=4)
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--rows-per-file", type=int, default=20_000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    results: list[dict[str, Any]] = []

    def emit(res: dict[str, Any]) -> None:
        print(json.dumps(res), flush=True)
        results.append(res)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for n in (0, 1, 2):
            emit(sample_rate(n, args.num_envs, args.seconds, root / f"out{n}"))
        data = root / "data"
        data.mkdir()
        make_dataset(data, args.files, args.rows_per_file)
        for n in (0, 1, 2):
            emit(read_rate(n, data, args.seconds))
    learner = learner_rate(args.seconds)
    emit(learner)
    one_worker = next(r for r in results if r["bench"] == "sample" and r["workers"] == 1)
    emit(estimate_64(one_worker["env_steps_per_s"], learner["learn_rows_per_s"]))
    print_table(results)


def print_table(results: list[dict[str, Any]]) -> None:
    base = {r["bench"]: r for r in results if r.get("workers") == 0}
    print(f"\n{'bench':<8} {'N':>2} {'rows/s':>10} {'ratio to N=0':>13}")
    for r in results:
        if r["bench"] not in ("sample", "read"):
            continue
        key = "env_steps_per_s" if r["bench"] == "sample" else "rows_per_s"
        ratio = r[key] / base[r["bench"]][key]
        print(f"{r['bench']:<8} {r['workers']:>2} {r[key]:>10.0f} {ratio:>13.2f}")


if __name__ == "__main__":
    main()
