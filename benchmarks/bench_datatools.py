"""Throughput of ``offrl data inspect`` and ``offrl data convert`` (rows/s, MB/s).

Writes a synthetic CartPole-shaped dataset (records of 200 steps, 4-float obs,
action_prob/logp, infos) in two encodings -- plain lists and offrl's compressed
obs/new_obs -- then times inspect, validate and each conversion. The baseline,
measured in the same run, is parsing every line with orjson and nothing else:
the ratio says how close a tool comes to the cost of reading the JSON at all.
Peak RSS shows whether memory stays bounded (it should not grow with --rows).

    python benchmarks/bench_datatools.py [--rows 200000]
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import orjson
import torch

from offrl.batch import SampleBatch
from offrl.datatools.convert import ConvertOptions, convert
from offrl.datatools.inspect import inspect_paths
from offrl.datatools.validate import validate_paths
from offrl.io.json_writer import JsonWriter
from offrl.io.parquet import require_pyarrow

RECORD_ROWS = 200


def make_batch(rng: np.random.Generator, eps_id: int) -> SampleBatch:
    """One 200-step episode with CartPole's columns."""
    n = RECORD_ROWS
    obs = rng.standard_normal((n + 1, 4)).astype(np.float32)
    prob = rng.uniform(0.1, 0.9, n).astype(np.float32)
    return SampleBatch(
        obs=obs[:-1],
        new_obs=obs[1:],
        actions=rng.integers(0, 2, n),
        rewards=np.ones(n, np.float32),
        dones=np.arange(n) == n - 1,
        eps_id=np.full(n, eps_id),
        t=np.arange(n),
        agent_index=np.zeros(n, np.int64),
        action_prob=prob,
        action_logp=np.log(prob),
        infos=[{}] * n,
    )


def write_dataset(path: Path, rows: int, compress: tuple[str, ...]) -> Path:
    rng = np.random.default_rng(0)
    with JsonWriter(path, compress_columns=compress, max_file_size=32 * 2**20) as w:
        for i in range(rows // RECORD_ROWS):
            w.write(make_batch(rng, i))
    return path


def size_mb(path: Path) -> float:
    files = [path] if path.is_file() else list(path.iterdir())
    return sum(f.stat().st_size for f in files) / 2**20


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def parse_only(path: Path) -> None:
    for f in sorted(path.iterdir()):
        with open(f, "rb") as fh:
            for line in fh:
                orjson.loads(line)


def operations(
    src: Path, out: Path, compress: tuple[str, ...]
) -> list[tuple[str, Callable[[], object]]]:
    """(name, thunk) of every timed operation on the dataset ``src``."""
    other = () if compress else ("obs", "new_obs")  # re-encode: plain <-> compressed
    pq_file = out.with_suffix(".parquet")
    return [
        ("orjson parse only (baseline)", lambda: None),
        ("inspect", lambda: inspect_paths([str(src)])),
        ("validate", lambda: list(validate_paths([str(src)]))),
        ("convert JSON -> Parquet", lambda: convert([str(src)], str(pq_file))),
        (
            "convert JSON -> JSON (re-encode)",
            lambda: convert([str(src)], f"{out}-re", ConvertOptions(compress_columns=other)),
        ),
        (
            "convert Parquet -> JSON",
            lambda: convert(
                [str(pq_file)], f"{out}-back", ConvertOptions(compress_columns=compress)
            ),
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    require_pyarrow()  # import pyarrow (~0.8 s) before timing, not inside the first case
    rows = args.rows
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        print(f"offrl data tools, {rows:,} rows in records of {RECORD_ROWS}; {os.cpu_count()} CPUs")
        print(f"{'operation':44s} {'seconds':>8s} {'rows/s':>11s} {'MB/s':>7s} {'x parse':>8s}")
        for label, compress in (("plain", ()), ("compressed", ("obs", "new_obs"))):
            src = write_dataset(root / label, rows, compress)
            mb = size_mb(src)
            base = timed(lambda s=src: parse_only(s))
            cases = operations(src, root / label, compress)
            print(f"-- {label} JSON input: {mb:.1f} MB ({mb * 2**20 / rows:.0f} bytes/row)")
            for name, fn in cases:
                secs = base if name.startswith("orjson") else timed(fn)
                print(
                    f"{name:44s} {secs:8.2f} {rows / secs:11,.0f} {mb / secs:7.1f} "
                    f"{secs / base:8.2f}"
                )
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"peak RSS of the whole benchmark: {peak:.0f} MB")


if __name__ == "__main__":
    main()
