"""Read throughput of JsonReader on CartPole experience files, against a naive baseline.

Writes files of ~100-row records shaped like RLlib 2.x CartPole output (obs/new_obs
compressed as whole-column ``BCJNG`` strings with RLlib's pickle codec or offrl's
npy codec, or everything as plain lists), then times one epoch of
:class:`offrl.io.json_reader.JsonReader` and of a naive reader that does what
RLlib's JsonReader does (stdlib ``json.loads``, decode each column, ``np.asarray``).
Optionally streams a large file and reports peak RSS.

    python benchmarks/bench_reader.py [--rows 300000] [--big-mb 200]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from offrl.batch import SampleBatch
from offrl.io.codecs import decode_column, encode_column
from offrl.io.json_reader import JsonReader

ROWS_PER_LINE = 100


def cartpole_record(rng: np.random.Generator, n: int, codec: str | None) -> dict:
    """One record with RLlib 2.x CartPole columns; obs/new_obs compressed unless codec is None."""
    obs = rng.normal(0, 0.05, size=(n + 1, 4)).astype(np.float32)
    logits = rng.normal(0, 1, size=(n, 2)).astype(np.float32)
    prob = rng.uniform(0.3, 0.7, size=n).astype(np.float32)
    terminated = np.zeros(n, dtype=bool)
    terminated[-1] = True

    def col(arr: np.ndarray) -> object:
        if codec is None:
            return arr.tolist()
        return encode_column(arr, codec)  # type: ignore[arg-type]

    return {
        "type": "SampleBatch",
        "obs": col(obs[:-1]),
        "new_obs": col(obs[1:]),
        "actions": rng.integers(0, 2, n).tolist(),
        "rewards": [1.0] * n,
        "terminateds": terminated.tolist(),
        "truncateds": [False] * n,
        "infos": [{} for _ in range(n)],
        "eps_id": [int(rng.integers(0, 2**62))] * n,
        "unroll_id": [int(rng.integers(0, 10**6))] * n,
        "agent_index": [0] * n,
        "t": list(range(n)),
        "action_prob": prob.tolist(),
        "action_logp": np.log(prob).tolist(),
        "action_dist_inputs": logits.tolist(),
    }


def write_file(path: Path, rows: int, codec: str | None, seed: int = 0) -> None:
    """Write ``rows`` rows as ~100-row records."""
    rng = np.random.default_rng(seed)
    with path.open("w") as f:
        for _ in range(rows // ROWS_PER_LINE):
            f.write(json.dumps(cartpole_record(rng, ROWS_PER_LINE, codec)) + "\n")


def naive_read(path: Path) -> int:
    """What RLlib's JsonReader does per line: json.loads, decode columns, np.asarray."""
    rows = 0
    with path.open() as f:
        for line in f:
            rec = json.loads(line)
            rec.pop("type")
            batch = SampleBatch({k: np.asarray(decode_column(v)) for k, v in rec.items()})
            rows += batch.count
    return rows


def offrl_read(path: Path) -> int:
    """One epoch with JsonReader."""
    return sum(b.count for b in JsonReader(str(path)).iter_epoch())


def timed(fn: object, path: Path, repeat: int = 3) -> tuple[float, int]:
    """Best-of-``repeat`` wall time of ``fn(path)`` and its row count."""
    best, rows = float("inf"), 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        rows = fn(path)  # type: ignore[operator]
        best = min(best, time.perf_counter() - t0)
    return best, rows


def peak_rss_streaming(path: Path) -> str:
    """Stream ``path`` in a fresh process and return its report (peak RSS is per process)."""
    code = (
        "import resource,sys\n"
        "from offrl.io.json_reader import JsonReader\n"
        "r0=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        f"n=sum(b.count for b in JsonReader({str(path)!r}).iter_epoch())\n"
        "r1=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "print(f'rows={n} peak_rss_before={r0/1024:.0f}MB peak_rss_after={r1/1024:.0f}MB')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def main() -> None:
    """Write the files, time both readers, print the figures."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=300_000, help="rows per benchmark file")
    ap.add_argument("--big-mb", type=int, default=0, help="also stream a file of ~this many MB")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for name, codec in (("rllib-pickle", "rllib"), ("offrl-npy", "offrl"), ("plain", None)):
            path = Path(tmp) / f"{name}.json"
            write_file(path, args.rows, codec)
            mb = os.path.getsize(path) / 1e6
            t_fast, n_fast = timed(offrl_read, path)
            t_naive, n_naive = timed(naive_read, path)
            assert n_fast == n_naive == args.rows, (n_fast, n_naive)
            print(
                f"{name:13s} {mb:7.1f} MB  JsonReader {n_fast / t_fast / 1e6:5.2f}M rows/s "
                f"{mb / t_fast:6.0f} MB/s | naive {n_naive / t_naive / 1e6:5.2f}M rows/s "
                f"{mb / t_naive:5.0f} MB/s | speed-up x{t_naive / t_fast:.1f}"
            )
        if args.big_mb:
            big = Path(tmp) / "big.json"
            bytes_per_row = os.path.getsize(Path(tmp) / "rllib-pickle.json") / args.rows
            write_file(big, int(args.big_mb * 1e6 / bytes_per_row), "rllib")
            print(f"streaming {os.path.getsize(big) / 1e6:.0f} MB: {peak_rss_streaming(big)}")
    print(
        f"this process peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}MB"
    )


if __name__ == "__main__":
    main()
