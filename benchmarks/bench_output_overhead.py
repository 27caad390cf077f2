"""What recording every step costs a PG training run: the same run with and without `output`.

Runs `offrl train -f configs/pg-cartpole.json` for a fixed number of steps, alternating
without and with `"output"` (compressed obs/new_obs, the default), and reports the
training time (`time_total_s` of the final result) of each and the overhead ratio, plus
the time the recorded run spent inside `output.write()` (`time_output_write_s`), which is
the direct measure (whole-run ratios of ~3 s runs carry a few % of noise).

    python benchmarks/bench_output_overhead.py --steps 200000 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(steps: int, seed: int, output: str | None, results: str) -> dict:
    config = {"output": output} if output else {}
    cmd = [
        sys.executable,
        "-m",
        "offrl.cli",
        "train",
        "-f",
        str(ROOT / "configs/pg-cartpole.json"),
        "--seed",
        str(seed),
        "--config",
        json.dumps(config),
        "--local-dir",
        results,
        "-q",
        "--stop",
        json.dumps({"timesteps_total": steps}),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(proc.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(args.repeats):
            plain = run(args.steps, k + 1, None, f"{tmp}/results")
            out_dir = f"{tmp}/out{k}"
            recorded = run(args.steps, k + 1, out_dir, f"{tmp}/results")
            size = sum(f.stat().st_size for f in Path(out_dir).glob("*.json"))
            lines = (Path(recorded["logdir"]) / "result.json").read_text().splitlines()
            write_s = sum(json.loads(x)["time_output_write_s"] for x in lines)
            row = {
                "seed": k + 1,
                "steps": plain["timesteps_total"],
                "time_without_output_s": round(plain["time_total_s"], 3),
                "time_with_output_s": round(recorded["time_total_s"], 3),
                "overhead": round(recorded["time_total_s"] / plain["time_total_s"] - 1, 4),
                "time_in_write_s": round(write_s, 3),
                "write_share": round(write_s / recorded["time_total_s"], 4),
                "bytes_written": size,
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
    overheads = sorted(r["overhead"] for r in rows)
    shares = sorted(r["write_share"] for r in rows)
    print(
        f"time inside output.write(): median {shares[len(shares) // 2]:.1%} of the run "
        f"(min {shares[0]:.1%}, max {shares[-1]:.1%})"
    )
    print(
        f"\nseeds {len(rows)}, {args.steps} steps each: overhead of writing every step "
        f"median {overheads[len(overheads) // 2]:+.1%} (min {overheads[0]:+.1%}, "
        f"max {overheads[-1]:+.1%})"
    )


if __name__ == "__main__":
    main()
