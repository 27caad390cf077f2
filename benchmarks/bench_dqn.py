"""DQN on CartPole-v1: greedy evaluation return and wall time per seed, online and offline.

Online: trains with the settings of ``configs/dqn-cartpole.json`` for its
``timesteps_total`` (50k), then evaluates 10 greedy episodes. The target is an
evaluation mean >= 475 on every seed in <= 1/3 of SB3 DQN's wall time on this
machine (44.6 s for 50k steps, rl-zoo3 hyperparameters, torch 1 thread).

Offline (``--offline``): records the online run's 50k rows to JSON Lines with
offrl's writer when it exists (else an .npz of the same columns), then trains a
fresh DQN from those rows only, with ``configs/dqn-offline-cartpole.json``.

Prints one JSON line per run, then a summary table. Usage::

    python benchmarks/bench_dqn.py --seeds 1 2 3 4 5
    python benchmarks/bench_dqn.py --seeds 1 --offline
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from offrl.algos.dqn import DQN, DQNConfig
from offrl.batch import SampleBatch
from offrl.config import from_dict
from offrl.rollout import Sampler, env_spaces, evaluate

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
    sampler = Sampler(run["env"], cfg.num_envs_per_worker, algo, cfg.rollout_fragment_length,
                      seed)
    stop = run["stop"]["timesteps_total"]
    steps = 0
    start, cpu_start = time.perf_counter(), time.process_time()
    while steps < stop:
        batch = algo.postprocess(sampler.next())
        steps += batch.count
        algo.learn(batch, steps)
        if record is not None:
            record.append(batch)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    sampler.close()
    return algo, steps, wall, cpu


def train_offline(run: dict[str, Any], batches: list[SampleBatch], seed: int) -> tuple[DQN, float]:
    """Train a fresh DQN from recorded batches only (no env steps)."""
    cfg = from_dict(DQNConfig, {**run["config"], "seed": seed, "input": "sampler"}, algo="DQN")
    obs_space, act_space = env_spaces(run["env"])
    algo = DQN(cfg, obs_space, act_space)
    keep = ("obs", "new_obs", "actions", "rewards", "terminateds", "truncateds", "dones",
            "eps_id")
    raw = [SampleBatch({k: b[k] for k in keep}) for b in batches]
    rows, stop = 0, run["stop"]["timesteps_total"]
    start = time.perf_counter()
    while rows < stop:
        for b in raw:
            batch = algo.postprocess(b) if cfg.postprocess_inputs else b
            rows += batch.count
            algo.learn(batch, rows)
            if rows >= stop:
                break
    return algo, time.perf_counter() - start


def greedy_eval(algo: DQN, env: str, seed: int) -> tuple[float, float, float]:
    """(mean, min, eval seconds) over 10 greedy episodes."""
    start = time.perf_counter()
    returns = evaluate(env, algo, 10, seed=10_000 + seed)
    return float(np.mean(returns)), float(np.min(returns)), time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    parser.add_argument("--config", type=Path, default=ROOT / "configs/dqn-cartpole.json")
    parser.add_argument("--offline-config", type=Path,
                        default=ROOT / "configs/dqn-offline-cartpole.json")
    parser.add_argument("--override", type=json.loads, default={},
                        help="JSON object merged into the online config")
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
        row = {"mode": "online", "seed": seed, "steps": steps, "train_wall_s": round(wall, 2),
               "train_cpu_s": round(cpu, 2),               "eval_mean": mean, "eval_min": low, "eval_wall_s": round(eval_s, 2),
               "steps_per_s": round(steps / wall), "updates": algo.counters["num_updates"],
               "vs_sb3_wall": round(wall / SB3_WALL_S, 3)}
        print(json.dumps(row), flush=True)
        rows.append(row)
        if record is not None:
            off_run = load_run(args.offline_config)
            off_algo, off_wall = train_offline(off_run, record, seed)
            mean, low, eval_s = greedy_eval(off_algo, off_run["env"], seed)
            row = {"mode": "offline", "seed": seed, "rows": off_algo.counters["num_steps_sampled"],
                   "train_wall_s": round(off_wall, 2), "eval_mean": mean, "eval_min": low,
                   "updates": off_algo.counters["num_updates"]}
            print(json.dumps(row), flush=True)
            rows.append(row)
    print(f"\n{'mode':8} {'seed':>4} {'train s':>8} {'eval mean':>9} {'eval min':>8} {'updates':>7}")
    for r in rows:
        print(f"{r['mode']:8} {r['seed']:>4} {r['train_wall_s']:>8.2f} {r['eval_mean']:>9.1f} "
              f"{r['eval_min']:>8.1f} {r['updates']:>7}")
    for mode in ("online", "offline"):
        sel = [r for r in rows if r["mode"] == mode]
        if sel:
            solved = sum(r["eval_mean"] >= 475 for r in sel)
            print(f"{mode}: solved {solved}/{len(sel)}, mean train wall "
                  f"{np.mean([r['train_wall_s'] for r in sel]):.2f} s"
                  + (f" ({np.mean([r['train_wall_s'] for r in sel]) / SB3_WALL_S:.2f}x SB3's "
                     f"{SB3_WALL_S} s)" if mode == "online" else ""))


if __name__ == "__main__":
    main()
