"""The standard control suite: offrl's configs, and optionally Stable-Baselines3, same budget.

For each config in ``configs/`` named on the command line and each seed: train with
``offrl train -f CONFIG --seed S --checkpoint-at-end`` for the config's
``timesteps_total`` (a subprocess, so wall time includes start-up as a user sees it),
then greedy-evaluate the final checkpoint with ``offrl rollout CKPT --episodes 20``.

With ``--sb3`` (``pip install stable-baselines3``; installed only for this script) the
same env is trained with SB3 for the same number of steps: DQN with rl-zoo3's
hyperparameters for DQN configs, A2C with SB3's defaults and 8 envs for PG configs, torch 1 thread,
and evaluated the same way (20 greedy episodes, ``deterministic=True``).

Goals (greedy mean): dqn-acrobot / pg-acrobot >= -100, dqn-lunarlander >= 150,
dqn-mountaincar >= -110, pg-pendulum >= -300.

Prints one JSON line per run, then a summary table. Usage::

    python benchmarks/bench_suite.py dqn-acrobot --seeds 1 2 3
    python benchmarks/bench_suite.py dqn-acrobot pg-acrobot --seeds 1 --sb3
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
GOALS = {
    "dqn-acrobot": -100.0,
    "pg-acrobot": -100.0,
    "dqn-lunarlander": 150.0,
    "dqn-mountaincar": -110.0,
    "pg-pendulum": -300.0,
}
EVAL_EPISODES = 20

# rl-zoo3's hyperparameters (hyperparams/dqn.yml and a2c.yml), for the SB3 side.
SB3_DQN = {
    "Acrobot-v1": dict(
        learning_rate=6.3e-4, batch_size=128, buffer_size=50000, learning_starts=0,
        gamma=0.99, target_update_interval=250, train_freq=4, gradient_steps=-1,
        exploration_fraction=0.12, exploration_final_eps=0.1,
        policy_kwargs=dict(net_arch=[256, 256]),
    ),
    "LunarLander-v3": dict(
        learning_rate=6.3e-4, batch_size=128, buffer_size=50000, learning_starts=0,
        gamma=0.99, target_update_interval=250, train_freq=4, gradient_steps=-1,
        exploration_fraction=0.12, exploration_final_eps=0.1,
        policy_kwargs=dict(net_arch=[256, 256]),
    ),
    "MountainCar-v0": dict(
        learning_rate=4e-3, batch_size=128, buffer_size=10000, learning_starts=1000,
        gamma=0.98, target_update_interval=600, train_freq=16, gradient_steps=8,
        exploration_fraction=0.2, exploration_final_eps=0.07,
        policy_kwargs=dict(net_arch=[256, 256]),
    ),
}  # fmt: skip


def _offrl(args: list[str], results: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OFFRL_RESULTS_DIR": str(results)}
    cmd = [sys.executable, "-m", "offrl.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)


def run_offrl(name: str, seed: int, results: Path) -> dict[str, Any]:
    """Train ``configs/NAME.json`` with ``seed``, then roll its final checkpoint out."""
    config = ROOT / "configs" / f"{name}.json"
    start = time.perf_counter()
    proc = _offrl(
        ["train", "-f", str(config), "--seed", str(seed), "--checkpoint-at-end", "-q"], results
    )
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"offrl train {name} seed {seed} failed:\n{proc.stderr[-2000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    ckpts = sorted(Path(result["logdir"]).glob("checkpoint_*"))
    roll = _offrl(
        ["rollout", str(ckpts[-1]), "--episodes", str(EVAL_EPISODES), "--seed", "12345"], results
    )
    if roll.returncode != 0:
        raise RuntimeError(f"offrl rollout failed:\n{roll.stderr[-2000:]}")
    greedy = json.loads(roll.stdout.strip().splitlines()[-1])
    steps = int(result["timesteps_total"])
    return {
        "who": "offrl", "config": name, "seed": seed, "steps": steps, "wall_s": round(wall, 1),
        "steps_per_s": round(steps / wall, 1), "greedy_mean": greedy["episode_reward_mean"],
        "train_reward_mean": result.get("episode_reward_mean"),
    }  # fmt: skip


def run_sb3(name: str, seed: int) -> dict[str, Any]:
    """The same env and budget with SB3 (DQN with rl-zoo3's settings, or 8-env A2C)."""
    import gymnasium as gym
    import numpy as np
    import torch
    from stable_baselines3 import A2C, DQN
    from stable_baselines3.common.env_util import make_vec_env

    torch.set_num_threads(1)
    spec = json.loads((ROOT / "configs" / f"{name}.json").read_text())
    env_id, steps = spec["env"], int(spec["stop"]["timesteps_total"])
    start = time.perf_counter()
    if spec["run"] == "DQN":
        model = DQN("MlpPolicy", env_id, seed=seed, **SB3_DQN[env_id])
    else:
        model = A2C("MlpPolicy", make_vec_env(env_id, n_envs=8, seed=seed), seed=seed)
    model.learn(total_timesteps=steps)
    wall = time.perf_counter() - start
    env = gym.make(env_id)
    returns = []
    for k in range(EVAL_EPISODES):
        obs, _ = env.reset(seed=12345 + k)
        total, done = 0.0, False
        while not done:
            action, _ = model.predict(obs, deterministic=True)
            obs, rew, term, trunc, _ = env.step(action)
            total += float(rew)
            done = bool(term or trunc)
        returns.append(total)
    return {
        "who": "sb3", "config": name, "seed": seed, "steps": steps, "wall_s": round(wall, 1),
        "steps_per_s": round(steps / wall, 1), "greedy_mean": float(np.mean(returns)),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configs", nargs="+", choices=sorted(GOALS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[1])
    parser.add_argument("--sb3", action="store_true", help="also train SB3 on the same budget")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.configs:
            for seed in args.seeds:
                runs = [run_offrl(name, seed, Path(tmp))]
                if args.sb3:
                    runs.append(run_sb3(name, seed))
                for row in runs:
                    row["goal"] = GOALS[name]
                    row["met"] = row["greedy_mean"] >= GOALS[name]
                    print(json.dumps(row), flush=True)
                    rows.append(row)
    head = ("config", "who", "seed", "steps", "wall s", "steps/s", "greedy")
    print("\n{:18} {:6} {:>4} {:>8} {:>8} {:>8} {:>9} goal".format(*head))
    for r in rows:
        print(
            f"{r['config']:18} {r['who']:6} {r['seed']:>4} {r['steps']:>8} {r['wall_s']:>8} "
            f"{r['steps_per_s']:>8} {r['greedy_mean']:>9.1f} {'met' if r['met'] else 'missed'}"
        )


if __name__ == "__main__":
    main()
