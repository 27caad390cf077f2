"""Experience writer throughput: encode_record and JsonWriter vs the stdlib json baseline.

CartPole-like rows (obs/new_obs 4 float32, 15 columns like examples/saving_experiences.py),
written with obs/new_obs compressed (offrl codec) and as plain lists. The baseline is
what a straightforward writer does: ``json.dumps`` of the columns' ``tolist()``, with the
same compressed strings. Prints one JSON line per case, then a table.

    python benchmarks/bench_writer.py [--rows-per-batch 200] [--total-rows 100000]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from offrl.batch import SampleBatch
from offrl.io.codecs import encode_column
from offrl.io.encode import encode_record
from offrl.io.json_writer import JsonWriter

COMPRESSED = ("obs", "new_obs")


def cartpole_batch(n: int, rng: np.random.Generator) -> SampleBatch:
    """``n`` rows shaped like a recorded CartPole episode."""
    obs = rng.normal(size=(n + 1, 4)).astype(np.float32)
    actions = rng.integers(0, 2, n)
    return SampleBatch(
        t=np.arange(n),
        eps_id=np.full(n, int(rng.integers(0, 2**63 - 1))),
        agent_index=np.zeros(n, dtype=np.int64),
        obs=obs[:-1],
        actions=actions,
        action_prob=np.full(n, 0.5, dtype=np.float32),
        action_logp=np.full(n, np.log(0.5), dtype=np.float32),
        rewards=np.ones(n, dtype=np.float32),
        prev_actions=np.concatenate([[0], actions[:-1]]),
        prev_rewards=np.concatenate([[0.0], np.ones(n - 1)]).astype(np.float32),
        dones=np.arange(n) == n - 1,
        terminateds=np.arange(n) == n - 1,
        truncateds=np.zeros(n, dtype=bool),
        infos=[{}] * n,
        new_obs=obs[1:],
    )


def stdlib_record(batch: SampleBatch, compress: Sequence[str]) -> bytes:
    """The baseline: stdlib json of tolist() columns (compressed ones as the same strings)."""
    record: dict[str, object] = {"type": "SampleBatch"}
    for name, arr in batch.items():
        record[name] = encode_column(arr) if name in compress else arr.tolist()
    return (json.dumps(record) + "\n").encode()


def best_rate(run: Callable[[], int], rows: int, repeats: int) -> tuple[float, float, int]:
    """(rows per CPU second, rows per wall second, bytes produced), fastest of ``repeats``.

    CPU time (process_time, user + system) is the headline: the machine is shared, and
    wall time measures the other processes' load as much as this code.
    """
    best_cpu = best_wall = float("inf")
    size = 0
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        size = run()
        best_cpu = min(best_cpu, time.process_time() - cpu)
        best_wall = min(best_wall, time.perf_counter() - wall)
    return rows / best_cpu, rows / best_wall, size


def run_cases(rows_per_batch: int, total_rows: int, repeats: int) -> list[dict[str, object]]:
    rng = np.random.default_rng(0)
    batches = [cartpole_batch(rows_per_batch, rng) for _ in range(total_rows // rows_per_batch)]
    rows = sum(b.count for b in batches)
    results = []
    for label, compress in (("compressed obs/new_obs", COMPRESSED), ("plain lists", ())):

        def encoder(compress: Sequence[str] = compress) -> int:
            return sum(len(encode_record(b, compress_columns=compress)) for b in batches)

        def baseline(compress: Sequence[str] = compress) -> int:
            return sum(len(stdlib_record(b, compress)) for b in batches)

        def writer(compress: Sequence[str] = compress) -> int:
            with tempfile.TemporaryDirectory() as tmp:
                with JsonWriter(tmp, compress_columns=compress) as w:
                    for b in batches:
                        w.write(b)
                return sum(p.stat().st_size for p in Path(tmp).iterdir())

        base = best_rate(baseline, rows, repeats)
        for case, fn in (
            ("stdlib json.dumps", baseline),
            ("encode_record", encoder),
            ("JsonWriter", writer),
        ):
            cpu_rate, wall_rate, size = base if fn is baseline else best_rate(fn, rows, repeats)
            results.append(
                {
                    "case": case,
                    "columns": label,
                    "rows_per_batch": rows_per_batch,
                    "rows": rows,
                    "rows_per_cpu_s": round(cpu_rate),
                    "rows_per_wall_s": round(wall_rate),
                    "bytes_per_row": round(size / rows, 1),
                    "vs_stdlib": round(cpu_rate / base[0], 2),
                }
            )
    return results


def main(argv: Sequence[str] | None = None) -> None:
    """Run every case and print JSON lines plus a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows-per-batch", type=int, nargs="+", default=[100, 200, 1000])
    parser.add_argument("--total-rows", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    results = [r for n in args.rows_per_batch for r in run_cases(n, args.total_rows, args.repeats)]
    for r in results:
        print(json.dumps(r))
    print(
        f"\n{'case':<18} {'columns':<23} {'rows/batch':>10} {'rows/cpu-s':>11} "
        f"{'rows/wall-s':>11} {'bytes/row':>9} {'x stdlib':>8}"
    )
    for r in results:
        print(
            f"{r['case']:<18} {r['columns']:<23} {r['rows_per_batch']:>10} "
            f"{r['rows_per_cpu_s']:>11,} {r['rows_per_wall_s']:>11,} {r['bytes_per_row']:>9} "
            f"{r['vs_stdlib']:>8}"
        )


if __name__ == "__main__":
    main()
