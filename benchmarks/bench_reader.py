"""Read throughput on files RLlib 2.60 wrote, against RLlib's reader (real, and its algorithm).

Files (real first):

* ``rllib-2.60 dqn-cartpole``: tests/data/rllib/rllib-2.60/dqn-cartpole, written by RLlib
  2.60's JsonWriter (MultiAgentBatch lines, one per episode, obs/new_obs as base64 LZ4
  pickles); ``... x N``: the same real lines repeated into a temp file of ~``--real-mb``;
  ``ppo-pendulum`` / ``ppo-frozenlake``: RLlib 2.60's PPO files (one 4,000-row line each);
  ``rllib-old cartpole``: an older RLlib's plain-list SampleBatch lines.
* ``offrl npy`` / ``offrl pickle`` / ``offrl plain``: the DQN file's rows re-written by
  offrl's own writer (obs/new_obs compressed with each codec, or nothing compressed).

Readers, each one cold pass (a fresh reader, one epoch, every row decoded) per round:

* ``offrl``: :class:`offrl.io.json_reader.JsonReader`, every column;
* ``offrl cols``: ``JsonReader(columns=TRAINING_COLUMNS)`` (what offline DQN trains on);
* ``rllib algo``: RLlib's ``JsonReader._from_json`` re-implemented (runs without Ray):
  ``json.loads`` of each text line, ``unpack_if_needed`` per column (base64, LZ4 frame,
  unpickle, with find_class limited to numpy since the project never runs plain
  ``pickle.loads`` on file content; the C unpickler costs the same), then
  ``SampleBatch(...)``'s ``np.array`` of every list column. (For offrl's npy codec, which
  RLlib cannot read, the payload is read with ``np.load`` instead of unpickled.)
* ``rllib real``: where ``ray[rllib]`` is importable, RLlib's own
  ``ray.rllib.offline.json_reader.JsonReader`` over the same files (``read_all_files()``:
  every line, every column, as RLlib's SampleBatch/MultiAgentBatch). Without Ray its rows
  say "not installed"; it is not run on offrl's npy codec, which it cannot read.

The readers run round-robin and each keeps its best round, so that load from other
processes hits all alike; figures are rows per wall second and per CPU second of this
process, and ratios to ``rllib algo`` and (when installed) ``rllib real``. ``--big-mb``
streams a file of real lines repeated in a fresh process and reports its peak RSS before
and after reading.

Where the time goes on the real DQN file (CPU ms of one pass, best round, round-robin with
the whole passes of ``rllib algo`` and ``rllib real``): each phase of offrl's reader alone
(orjson's parse; the compressed columns; the other columns' lists into arrays), and the
parse of the other parsers the issue allows (``pyarrow.json.read_json`` of the whole file;
pysimdjson's parse, and its parse plus every numeric column exported as a flat float64
buffer with nothing checked), when they are installed. ``ceiling`` = ``rllib algo``'s pass /
(that parse + the compressed columns): the most a reader built on that parser could reach
if everything else cost nothing.

    python benchmarks/bench_reader.py [--rounds 5] [--real-mb 50] [--big-mb 500]
"""

from __future__ import annotations

import argparse
import base64
import gc
import io
import json
import logging
import os
import pickle
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import lz4.frame
import numpy as np
import orjson
from threadpoolctl import threadpool_limits

from offrl.batch import SampleBatch
from offrl.io.decode import NEW_OBS_VALID, columns_of, decode_value, is_column
from offrl.io.json_reader import JsonReader
from offrl.io.json_writer import JsonWriter

ROOT = Path(__file__).resolve().parent.parent / "tests" / "data" / "rllib"
RLLIB_260 = ROOT / "rllib-2.60"
FILES = {
    "rllib-2.60 dqn-cartpole": RLLIB_260 / "dqn-cartpole",
    "rllib-2.60 ppo-pendulum": RLLIB_260 / "ppo-pendulum",
    "rllib-2.60 ppo-frozenlake": RLLIB_260 / "ppo-frozenlake",
    "rllib-old cartpole": ROOT / "cartpole-small.json",
}
# What offline DQN reads (input_config.columns); eps_id and t are always read too.
TRAINING_COLUMNS = ["obs", "new_obs", "actions", "rewards", "terminateds", "truncateds"]


# -- RLlib's reader algorithm ------------------------------------------------------------


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """The C unpickler, as RLlib's ``pickle.loads``, refusing anything but numpy."""

    def find_class(self, module: str, name: str) -> object:
        if module.split(".")[0] != "numpy":
            raise pickle.UnpicklingError(f"{module}.{name} refused")
        return super().find_class(module, name)


def rllib_unpack_if_needed(data: object) -> object:
    """rllib/utils/compression.py: ``unpack`` of ``BCJNG`` strings (bytes repr too)."""
    if isinstance(data, bytes | str) and data[:5] in ("BCJNG", b"BCJNG"):
        raw = lz4.frame.decompress(base64.b64decode(data))
        if raw.startswith(b"\x93NUMPY"):  # offrl's npy codec, which RLlib cannot read
            return np.load(io.BytesIO(raw), allow_pickle=False)
        return _NumpyOnlyUnpickler(io.BytesIO(raw)).load()
    return data


def rllib_sample_batch(columns: dict[str, object]) -> dict[str, object]:
    """SampleBatch.__init__'s conversion: every list becomes ``np.array``."""
    return {k: np.array(v) if isinstance(v, list) else v for k, v in columns.items()}


def rllib_from_json(line: str) -> int:
    """rllib/offline/json_reader.py ``_from_json`` of one line; returns its row count."""
    data = json.loads(line)
    kind = data.pop("type")
    if kind == "SampleBatch":
        cols = rllib_sample_batch({k: rllib_unpack_if_needed(v) for k, v in data.items()})
        return len(cols["rewards"])  # type: ignore[arg-type]
    rows = 0
    for batch in data["policy_batches"].values():
        cols = rllib_sample_batch({k: rllib_unpack_if_needed(v) for k, v in batch.items()})
        rows += len(cols["rewards"])  # type: ignore[arg-type]
    return rows


def rllib_read(path: Path) -> int:
    rows = 0
    for file in files_of(path):
        with file.open() as f:  # RLlib reads text lines
            for line in f:
                if line.strip():
                    rows += rllib_from_json(line)
    return rows


# -- offrl -------------------------------------------------------------------------------


def offrl_read(path: Path) -> int:
    return sum(b.count for b in JsonReader(str(path), shuffle_files=False).iter_epoch())


def offrl_read_columns(path: Path) -> int:
    reader = JsonReader(str(path), shuffle_files=False, columns=TRAINING_COLUMNS)
    return sum(b.count for b in reader.iter_epoch())


ALGO = "rllib algo"  # RLlib's reader algorithm, re-implemented above
REAL = "rllib real"  # RLlib's own JsonReader (only where ray[rllib] is importable)
READERS: dict[str, Callable[[Path], int]] = {
    "offrl": offrl_read,
    "offrl cols": offrl_read_columns,
    ALGO: rllib_read,
}


def real_rllib_reader() -> tuple[Callable[[Path], int] | None, str]:
    """RLlib's own JsonReader as a reader of this benchmark, and the Ray version (or why not)."""
    try:
        import ray
        from ray.rllib.offline.json_reader import JsonReader as RllibJsonReader
    except ImportError as e:
        return None, f"not installed ({e})"
    logging.getLogger("ray.rllib").setLevel(logging.ERROR)  # its per-reader info lines

    def read(path: Path) -> int:
        reader = RllibJsonReader([str(f) for f in files_of(path)])  # a list: no glob
        return sum(batch.count for batch in reader.read_all_files())

    return read, f"ray {ray.__version__}"


# -- files -------------------------------------------------------------------------------


def files_of(path: Path) -> list[Path]:
    return sorted(path.glob("*.json")) if path.is_dir() else [path]


def repeat_lines(src: Path, dest: Path, megabytes: float) -> Path:
    """The real lines of ``src`` repeated until ``dest`` holds ~``megabytes`` MB."""
    lines = b"".join(f.read_bytes() for f in files_of(src))
    with dest.open("wb") as f:
        for _ in range(max(1, round(megabytes * 1e6 / len(lines)))):
            f.write(lines)
    return dest


def rewrite_with_offrl(src: Path, dest: Path, codec: str | None) -> Path:
    """The rows of ``src`` (one batch per line) written by offrl's JsonWriter."""
    compress = ["obs", "new_obs"] if codec else []
    with JsonWriter(
        dest, compress_columns=compress, codec=codec or "offrl", max_file_size=1 << 40
    ) as w:
        for batch in JsonReader(str(src), shuffle_files=False).iter_epoch():
            w.write(SampleBatch({k: v for k, v in batch.items() if k != NEW_OBS_VALID}))
    return dest


# -- timing ------------------------------------------------------------------------------


def best_times(
    path: Path, rounds: int, readers: dict[str, Callable[[Path], int]]
) -> tuple[int, dict[str, tuple[float, float]]]:
    """Rows, and per reader the best (wall, CPU) seconds of ``rounds`` round-robin passes."""
    best = {name: (float("inf"), float("inf")) for name in readers}
    counts = set()
    for _ in range(rounds):
        for name, read in readers.items():
            w0, c0 = time.perf_counter(), time.process_time()
            counts.add(read(path))
            wall, cpu = time.perf_counter() - w0, time.process_time() - c0
            best[name] = (min(best[name][0], wall), min(best[name][1], cpu))
    if len(counts) != 1:
        raise RuntimeError(f"the readers read different row counts from {path}: {counts}")
    return counts.pop(), best


def report(
    name: str, path: Path, rounds: int, readers: dict[str, Callable[[Path], int]], real_note: str
) -> None:
    """One row per reader; ``real_note`` is printed instead when ``rllib real`` is absent."""
    mb = sum(f.stat().st_size for f in files_of(path)) / 1e6
    rows, best = best_times(path, rounds, readers)
    for reader, (wall, cpu) in best.items():
        ratios = [f"x{best[ALGO][0] / wall:4.2f} wall  x{best[ALGO][1] / cpu:4.2f} CPU vs algo"]
        if REAL in best:
            ratios.append(
                f"x{best[REAL][0] / wall:4.2f} wall  x{best[REAL][1] / cpu:4.2f} CPU vs real"
            )
        print(
            f"{name:26s} {mb:6.1f} MB {rows:8d} rows  {reader:10s} "
            f"{rows / wall / 1e6:5.2f}M rows/s  {rows / cpu / 1e6:5.2f}M rows/CPU-s  "
            + "  ".join(ratios),
            flush=True,
        )
    if REAL not in best:
        print(f"{name:26s} {mb:6.1f} MB {rows:8d} rows  {REAL:10s} {real_note}", flush=True)


# -- where the time goes ----------------------------------------------------------------


def each(fn: Callable[[object], object], items: list) -> Callable[[], None]:
    """A pass applying ``fn`` to every item, dropping the results (as a reader does)."""

    def run() -> None:
        for item in items:
            fn(item)

    return run


def simdjson_numeric(lines: list[bytes]) -> None:
    """pysimdjson's parse, every numeric column as a flat float64 buffer, nothing checked."""
    import simdjson

    parser = simdjson.Parser()
    for line in lines:
        doc = parser.parse(line)
        cols = doc["policy_batches"]["default_policy"] if "policy_batches" in doc else doc
        for key in cols:
            value = cols[key]
            if not isinstance(value, str):
                try:
                    np.frombuffer(value.as_buffer(of_type="d"), dtype=np.float64)
                except Exception:  # noqa: BLE001, S112 - bools, dicts: counted as free
                    continue
        del doc, cols, value  # the parser is reused only when no proxy refers to it


def parser_phases(
    path: Path, real: Callable[[Path], int] | None
) -> dict[str, Callable[[], object]]:
    """One pass's phases over ``path``'s lines, and the other parsers' (when installed)."""
    data = b"".join(f.read_bytes() for f in files_of(path))
    lines = [line for line in data.splitlines() if line.strip()]
    parsed = [columns_of(orjson.loads(line), str(path), i) for i, line in enumerate(lines)]
    values = [(k, v) for cols in parsed for k, v in cols.items() if is_column(k, v)]
    packed = [(k, v) for k, v in values if isinstance(v, str)]
    plain = [(k, v) for k, v in values if not isinstance(v, str)]
    phases: dict[str, Callable[[], object]] = {
        "rllib algo, whole pass": lambda: rllib_read(path),
        "offrl, whole pass": lambda: offrl_read(path),
        "offrl: orjson.loads": each(orjson.loads, lines),
        "offrl: compressed columns": each(lambda kv: decode_value(*kv, "-", 0), packed),
        "offrl: lists to arrays": each(lambda kv: decode_value(*kv, "-", 0), plain),
    }
    if real is not None:
        phases["rllib real, whole pass"] = lambda: real(path)
    gc.collect()
    gc.freeze()  # the prepared inputs are not traversed by the collections timed below
    try:
        import pyarrow as pa
        import pyarrow.json as pj

        opts = pj.ReadOptions(use_threads=False, block_size=1 << 20)
        phases["pyarrow.json.read_json"] = lambda: pj.read_json(
            pa.py_buffer(data), read_options=opts
        )
    except ImportError:
        print("pyarrow not installed: its parse not measured")
    try:
        import simdjson

        parser = simdjson.Parser()
        phases["simdjson parse"] = each(lambda line: parser.parse(line) and None, lines)
        phases["simdjson + numeric buffers"] = lambda: simdjson_numeric(lines)
    except ImportError:
        print("pysimdjson not installed: its parse not measured")
    return phases


def report_phases(path: Path, rounds: int, real: Callable[[Path], int] | None) -> None:
    phases = parser_phases(path, real)
    best = dict.fromkeys(phases, float("inf"))
    for _ in range(rounds):
        for name, run in phases.items():
            c0 = time.process_time()
            run()
            best[name] = min(best[name], time.process_time() - c0)
    gc.unfreeze()  # the later reports run as the ones before
    rllib, packed = best["rllib algo, whole pass"], best["offrl: compressed columns"]
    for name, cpu in best.items():
        note = ""
        if name in ("offrl: orjson.loads", "pyarrow.json.read_json", "simdjson parse") or (
            name == "simdjson + numeric buffers"
        ):
            note = f"ceiling x{rllib / (cpu + packed):4.2f} vs rllib algo"
        elif name == "offrl, whole pass":
            note = f"x{rllib / cpu:4.2f} vs rllib algo"
            if "rllib real, whole pass" in best:
                note += f", x{best['rllib real, whole pass'] / cpu:4.2f} vs rllib real"
        print(f"  {name:28s} {cpu * 1e3:7.1f} CPU ms  {note}", flush=True)


def peak_rss_streaming(path: Path) -> str:
    """Stream ``path`` in a fresh process; its peak RSS before and after reading.

    The peak is the process's own (``VmHWM``): ``ru_maxrss`` would carry over the peak of
    this forked benchmark, which holds the test files, across ``exec``.
    """
    code = (
        "import re\n"
        "from offrl.io.json_reader import JsonReader\n"
        "def hwm():\n"
        "    with open('/proc/self/status') as f:\n"
        "        return int(re.search(r'VmHWM:\\s+(\\d+)', f.read()).group(1)) / 1024\n"
        "r0=hwm()\n"
        f"n=sum(b.count for b in JsonReader({str(path)!r}).iter_epoch())\n"
        "r1=hwm()\n"
        "print(f'rows={n} peak RSS before reading {r0:.0f} MB, after {r1:.0f} MB')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=5, help="round-robin rounds (best kept)")
    ap.add_argument("--real-mb", type=float, default=50, help="size of the repeated real file")
    ap.add_argument("--big-mb", type=float, default=0, help="also stream a file of this size")
    args = ap.parse_args()
    threadpool_limits(limits=1, user_api="blas")  # as `offrl train` does (num_threads)
    real, real_note = real_rllib_reader()
    print(f"{REAL}: RLlib's own JsonReader, {real_note}", flush=True)
    readers = dict(READERS, **({REAL: real} if real else {}))
    # RLlib cannot read offrl's npy codec (by design): that file is read by the others only.
    npy_note = "not run: RLlib cannot read offrl's npy codec" if real else real_note
    dqn = FILES["rllib-2.60 dqn-cartpole"]
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        repeated = repeat_lines(dqn, t / "dqn-repeated.json", args.real_mb)
        times = round(repeated.stat().st_size / sum(f.stat().st_size for f in files_of(dqn)))
        report("rllib-2.60 dqn-cartpole", dqn, args.rounds, readers, real_note)
        print("where the time goes on rllib-2.60 dqn-cartpole:")
        report_phases(dqn, max(args.rounds, 7), real)
        rounds = max(1, args.rounds // 2)
        report(f"rllib-2.60 dqn-cartpole x{times}", repeated, rounds, readers, real_note)
        for name in ("rllib-2.60 ppo-pendulum", "rllib-2.60 ppo-frozenlake", "rllib-old cartpole"):
            report(name, FILES[name], args.rounds, readers, real_note)
        for codec in ("offrl", "rllib", None):
            name = f"offrl-written {codec or 'plain'}"
            own = rewrite_with_offrl(dqn, t / f"own-{codec}", codec)
            if codec == "offrl":
                report(name, own, args.rounds, READERS, npy_note)
            else:
                report(name, own, args.rounds, readers, real_note)
        if args.big_mb:
            big = repeat_lines(dqn, t / "big.json", args.big_mb)
            print(f"streaming {big.stat().st_size / 1e6:.0f} MB: {peak_rss_streaming(big)}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
