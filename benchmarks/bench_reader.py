"""Read throughput of JsonReader on CartPole experience files, against a naive baseline.

Writes files of ~100-row records shaped like RLlib 2.x CartPole output (obs/new_obs
compressed as whole-column ``BCJNG`` strings with RLlib's pickle codec or offrl's
npy codec, or everything as plain lists), then times one epoch of

* ``JsonReader``: :class:`offrl.io.json_reader.JsonReader`, every column (the compiled
  line decoder ``offrl/io/_linedec.c`` when it was built, else the simdjson path);
* ``JR columns``: ``JsonReader(columns=TRAINING_COLUMNS)``, reading only what offline
  DQN trains on (the other columns are checked to be JSON, not decoded);
* ``reference``: :func:`offrl.io.decode.decode_record` on every line (orjson path);
* ``naive``: what RLlib's JsonReader does (stdlib ``json.loads``; base64, LZ4 and an
  unpickle or ``np.load`` per compressed column; ``np.asarray`` per column). It uses
  none of offrl's decoding code, so it stays a fixed yardstick.

The readers run round-robin and each keeps its best round, so that load from other
processes on the machine hits all of them alike; figures are rows per wall second and
rows per CPU second of this process (``time.process_time``), and ratios to naive.
Optionally streams a large file and reports peak RSS.

    python benchmarks/bench_reader.py [--rows 100000] [--rounds 9] [--big-mb 200]
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lz4.frame
import numpy as np
from threadpoolctl import threadpool_limits

from offrl.batch import SampleBatch
from offrl.io.codecs import encode_column, restricted_loads
from offrl.io.decode import decode_record
from offrl.io.json_reader import JsonReader
from offrl.io.native import NATIVE

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


def naive_column(value: object) -> object:
    """RLlib's unpack: base64, LZ4, then unpickle (restricted here) or ``np.load``."""
    if isinstance(value, str) and value.startswith("BCJNG"):
        payload = lz4.frame.decompress(base64.b64decode(value))
        if payload.startswith(b"\x93NUMPY"):
            return np.load(io.BytesIO(payload), allow_pickle=False)
        return restricted_loads(payload)
    return value


def naive_read(path: Path) -> int:
    """What RLlib's JsonReader does per line: json.loads, decode columns, np.asarray."""
    rows = 0
    with path.open() as f:
        for line in f:
            rec = json.loads(line)
            rec.pop("type")
            batch = SampleBatch({k: np.asarray(naive_column(v)) for k, v in rec.items()})
            rows += batch.count
    return rows


def reference_read(path: Path) -> int:
    """offrl's reference (orjson) path on every line, without the simdjson fast path."""
    rows = 0
    with path.open("rb") as f:
        for lineno, line in enumerate(f, 1):
            rows += decode_record(line, path=str(path), lineno=lineno).count
    return rows


def offrl_read(path: Path) -> int:
    """One epoch with JsonReader."""
    return sum(b.count for b in JsonReader(str(path)).iter_epoch())


# What offline DQN reads (input_config.columns); eps_id and t are always read too.
TRAINING_COLUMNS = ["obs", "new_obs", "actions", "rewards", "terminateds", "truncateds"]


def offrl_read_columns(path: Path) -> int:
    """One epoch with JsonReader, training columns only."""
    return sum(b.count for b in JsonReader(str(path), columns=TRAINING_COLUMNS).iter_epoch())


READERS = {
    "JsonReader": offrl_read,
    "JR columns": offrl_read_columns,
    "reference": reference_read,
    "naive": naive_read,
}


def best_times(path: Path, rounds: int) -> dict[str, tuple[float, float]]:
    """Per reader, the best (wall, CPU) seconds of ``rounds`` round-robin epochs."""
    best = {name: (float("inf"), float("inf")) for name in READERS}
    for _ in range(rounds):
        for name, read in READERS.items():
            w0, c0 = time.perf_counter(), time.process_time()
            rows = read(path)
            wall, cpu = time.perf_counter() - w0, time.process_time() - c0
            if rows != count_rows(path):
                raise RuntimeError(f"{name} read {rows} rows from {path}")
            best[name] = (min(best[name][0], wall), min(best[name][1], cpu))
    return best


def count_rows(path: Path) -> int:
    """Rows written to ``path`` (every record has ROWS_PER_LINE rows)."""
    with path.open("rb") as f:
        return sum(1 for _ in f) * ROWS_PER_LINE


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


def report(name: str, mb: float, rows: int, best: dict[str, tuple[float, float]]) -> None:
    """Print one file's figures: per reader rows/s (wall), rows/CPU-s, MB/s, ratio to naive."""
    naive_wall, naive_cpu = best["naive"]
    for reader, (wall, cpu) in best.items():
        print(
            f"{name:13s} {mb:6.1f} MB  {reader:10s} {rows / wall / 1e6:5.2f}M rows/s "
            f"{mb / wall:5.0f} MB/s  {rows / cpu / 1e6:5.2f}M rows/CPU-s  "
            f"x{naive_wall / wall:4.1f} wall  x{naive_cpu / cpu:4.1f} CPU vs naive"
        )


def main() -> None:
    """Write the files, time the readers, print the figures."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=100_000, help="rows per benchmark file")
    ap.add_argument("--rounds", type=int, default=9, help="round-robin rounds (best kept)")
    ap.add_argument("--big-mb", type=int, default=0, help="also stream a file of ~this many MB")
    args = ap.parse_args()
    # As `offrl train` does (num_threads): an idle multi-threaded BLAS pool otherwise
    # spins on the second core, which shares a physical core with this one here.
    # (threadpoolctl directly: importing torch would inflate the RSS figures.)
    threadpool_limits(limits=1, user_api="blas")
    print(f"compiled line decoder: {'yes' if NATIVE else 'no (simdjson path)'}")
    with tempfile.TemporaryDirectory() as tmp:
        for name, codec in (("rllib-pickle", "rllib"), ("offrl-npy", "offrl"), ("plain", None)):
            path = Path(tmp) / f"{name}.json"
            write_file(path, args.rows, codec)
            report(name, os.path.getsize(path) / 1e6, args.rows, best_times(path, args.rounds))
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
