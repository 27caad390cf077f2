"""DQN on CartPole-v1: greedy evaluation return and wall time per seed, online and offline.

Online: trains with the settings of ``configs/dqn-cartpole.json`` for its
``timesteps_total`` (50k), then evaluates 10 greedy episodes. The target is an
evaluation mean >= 475 on every seed in <= 1/3 of SB3 DQN's wall time on this
machine (44.6 s for 50k steps, rl-zoo3 hyperparameters, torch 1 thread).

Offline (``--offline``): writes the online run's 50k rows to JSON Lines with
offrl's JsonWriter, then trains a fresh DQN from those files only (JsonReader,
``configs/dqn-offline-cartpole.json``, its ``input`` replaced by the temp dir),
evaluating every iteration and stopping at an evaluation mean >= 475, as
``offrl train -f configs/dqn-offline-cartpole.json`` does.

Times are wall and CPU (process) seconds: on a shared, loaded VM the CPU time
is the better guide to what an idle machine's wall time would be.

Prints one JSON line per run, then a summary table. Usage::

    python benchmarks/bench_dqn.py --seeds 1 2 3 4 5
    python benchmarks/bench_dqn.py --seeds 1 --offline
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from offrl.algos.dqn import DQN, DQNConfig
from offrl.batch import SampleBatch
from offrl.config import from_dict
from offrl.envs import env_spaces
from offrl.rollout import Sampler, evaluate

ROOT = Path(__file__).resolve().parent.parent
SB3_WALL_S = 44.6  # SB3 DQN, 50k CartPole-v1 steps, measured on this 2-core VM


def load_run(path: Path) -> dict[str, Any]:
    """The run file (run/env/config/stop) as a dict."""
    return json.loads(path.read_text())


def train_online(
    run: dict[str, Any], seed: int, record: list[SampleBatch] | None = None
) -> tuple[DQN, int, float, float]:
    """Train until ``stop.timesteps_total``; returns (algo, steps, wall s, CPU s)."""
    cfg = from_dict(DQNConfig, {**run["config"], "seed": seed}, algo="DQN")
    obs_space, act_space = env_spaces(run["env"])
    algo = DQN(cfg, obs_space, act_space)
    sampler = Sampler(run["env"], cfg.num_envs_per_worker, algo, cfg.rollout_fragment_length, seed)
    stop = run["stop"]["timesteps_total"]
    steps = 0
    start, cpu_start = time.perf_counter(), time.process_time()
    while steps < stop:
        raw = sampler.next()
        if record is not None:
            record.append(raw)
        batch = algo.postprocess(raw)
        steps += batch.count
        algo.learn(batch, steps)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    sampler.close()
    return algo, steps, wall, cpu


def write_dataset(batches: list[SampleBatch], directory: Path) -> None:
    """Record the online run's fragments as offrl JSON Lines (what ``output`` writes)."""
    from offrl.io.json_writer import JsonWriter

    with JsonWriter(directory) as writer:
        for batch in batches:
            writer.write(batch)


def train_offline(run: dict[str, Any], directory: Path, seed: int) -> tuple[DQN, float, float]:
    """Train a fresh DQN from the files only, evaluating like the trainer does.

    Returns (algo, wall s, CPU s) until the evaluation stop key or ``timesteps_total``.
    """
    from offrl.io.json_reader import JsonReader

    cfg = from_dict(DQNConfig, {**run["config"], "seed": seed, "input": str(directory)})
    obs_space, act_space = env_spaces(run["env"])
    algo = DQN(cfg, obs_space, act_space)
    reader = JsonReader(str(directory), seed=seed)
    stop = run["stop"]
    rows, it = 0, 0
    start, cpu_start = time.perf_counter(), time.process_time()
    while rows < stop["timesteps_total"]:
        goal = rows + cfg.timesteps_per_iteration
        while rows < goal:
            batch = reader.next()
            batch = algo.postprocess(batch) if cfg.postprocess_inputs else batch
            rows += batch.count
            algo.learn(batch, rows)
        it += 1
        if cfg.evaluation_interval and it % cfg.evaluation_interval == 0:
            returns = evaluate(run["env"], algo, cfg.evaluation_num_episodes, seed=seed + it)
            if np.mean(returns) >= stop.get("evaluation/episode_reward_mean", np.inf):
                break
    return algo, time.perf_counter() - start, time.process_time() - cpu_start


def greedy_eval(algo: DQN, env: str, seed: int) -> tuple[float, float, float]:
    """(mean, min, eval seconds) over 10 greedy episodes."""
    start = time.perf_counter()
    returns = evaluate(env, algo, 10, seed=10_000 + seed)
    return float(np.mean(returns)), float(np.min(returns)), time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    parser.add_argument("--config", type=Path, default=ROOT / "configs/dqn-cartpole.json")
    parser.add_argument(
        "--offline-config", type=Path, default=ROOT / "configs/dqn-offline-cartpole.json"
    )
    parser.add_argument(
        "--override", type=json.loads, default={}, help="JSON object merged into the online config"
    )
    parser.add_argument("--offline", action="store_true", help="also train offline")
    args = parser.parse_args()
    torch.set_num_threads(1)
    run = load_run(args.config)
    run["config"] = {**run["config"], **args.override}
    rows = []
    for seed in args.seeds:
        record: list[SampleBatch] | None = [] if args.offline else None
        algo, steps, wall, cpu = train_online(run, seed, record)
        mean, low, eval_s = greedy_eval(algo, run["env"], seed)
        row = {
            "mode": "online",
            "seed": seed,
            "steps": steps,
            "train_wall_s": round(wall, 2),
            "train_cpu_s": round(cpu, 2),
            "eval_mean": mean,
            "eval_min": low,
            "eval_wall_s": round(eval_s, 2),
            "steps_per_s": round(steps / wall),
            "updates": algo.counters["num_updates"],
            "vs_sb3_wall": round(wall / SB3_WALL_S, 3),
        }
        print(json.dumps(row), flush=True)
        rows.append(row)
        if record is not None:
            off_run = load_run(args.offline_config)
            with tempfile.TemporaryDirectory() as tmp:
                write_dataset(record, Path(tmp))
                off_algo, off_wall, off_cpu = train_offline(off_run, Path(tmp), seed)
            mean, low, eval_s = greedy_eval(off_algo, off_run["env"], seed)
            row = {
                "mode": "offline",
                "seed": seed,
                "rows": off_algo.counters["num_steps_sampled"],
                "train_wall_s": round(off_wall, 2),
                "train_cpu_s": round(off_cpu, 2),
                "eval_mean": mean,
                "eval_min": low,
                "updates": off_algo.counters["num_updates"],
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
    head = ("mode", "seed", "wall s", "cpu s", "eval mean", "eval min", "updates")
    print("\n" + " ".join(f"{h:>9}" for h in head))
    for r in rows:
        cells = (
            r["mode"],
            r["seed"],
            r["train_wall_s"],
            r["train_cpu_s"],
            r["eval_mean"],
            r["eval_min"],
            r["updates"],
        )
        print(" ".join(f"{c:>9}" for c in cells))
    for mode in ("online", "offline"):
        sel = [r for r in rows if r["mode"] == mode]
        if sel:
            solved = sum(r["eval_mean"] >= 475 for r in sel)
            print(
                f"{mode}: solved {solved}/{len(sel)}, mean train wall "
                f"{np.mean([r['train_wall_s'] for r in sel]):.2f} s"
                + (
                    f" ({np.mean([r['train_wall_s'] for r in sel]) / SB3_WALL_S:.2f}x SB3's "
                    f"{SB3_WALL_S} s)"
                    if mode == "online"
                    else ""
                )
            )


if __name__ == "__main__":
    main()
