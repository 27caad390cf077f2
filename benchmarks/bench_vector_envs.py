"""Env steps/s of the Sampler for envs without a vectorised implementation.

Acrobot-v1, (with Box2D installed) LunarLander-v3 and the two expensive envs below (Acrobot
plus 1 ms of waiting, or of computing, per step) have no vector class of their own:
with ``num_envs_per_worker`` > 1 they run either in gymnasium's SyncVectorEnv (one
Python ``step`` per env, all in the learner process; ``remote_worker_envs`` false) or in
one process per env (``remote_worker_envs`` true, gymnasium's AsyncVectorEnv). This
script measures, in one run, PG's Sampler (acting with PG's network, explore=True) for
``num_envs_per_worker`` 1, 4, 8 and both settings, and prints each figure's ratio to
one env stepped in-process (the baseline). Env start-up is excluded (one warm-up
fragment per measurement). Prints one JSON object per measurement, then a table.

    python benchmarks/bench_vector_envs.py [--seconds 3] [--envs Acrobot-v1 LunarLander-v3]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import gymnasium as gym
import torch

from offrl.algos import get_algorithm
from offrl.config import from_dict
from offrl.envs import env_spaces
from offrl.rollout import Sampler

NUM_ENVS = (1, 4, 8)
FRAGMENT = 50  # env steps per env in one fragment
STEP_COST = 0.001  # seconds each step of the two expensive envs below adds


class SleepAcrobot(gym.Wrapper):
    """Acrobot whose every step also waits 1 ms, as an env that waits on an external
    simulator or device does (the CPU is free meanwhile)."""

    def __init__(self, render_mode: str | None = None) -> None:
        super().__init__(gym.make("Acrobot-v1"))

    def step(self, action: Any) -> Any:
        time.sleep(STEP_COST)
        return self.env.step(action)


class BusyAcrobot(SleepAcrobot):
    """Acrobot whose every step also computes for 1 ms (a CPU-bound simulator)."""

    def step(self, action: Any) -> Any:
        end = time.perf_counter() + STEP_COST
        while time.perf_counter() < end:
            pass
        return self.env.step(action)


def available(env_id: str) -> bool:
    try:
        env_spaces(env_id)
    except Exception as e:  # e.g. Box2D not installed
        print(f"# skipping {env_id}: {type(e).__name__}: {e}")
        return False
    return True


def measure(env_id: str, num_envs: int, remote: bool, seconds: float, seed: int) -> dict[str, Any]:
    cfg_cls, algo_cls = get_algorithm("PG")
    cfg = from_dict(cfg_cls, {"num_envs_per_worker": num_envs, "remote_worker_envs": remote})
    algo = algo_cls(cfg, *env_spaces(env_id))
    sampler = Sampler(env_id, num_envs, algo, FRAGMENT, seed, remote_envs=remote)
    try:
        sampler.next()  # warm-up
        steps, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            steps += sampler.next().count
        elapsed = time.perf_counter() - start
    finally:
        sampler.close()
    return {
        "env": env_id,
        "num_envs_per_worker": num_envs,
        "remote_worker_envs": remote,
        "vector_env": type(sampler.env).__name__,
        "env_steps": steps,
        "seconds": round(elapsed, 2),
        "env_steps_per_s": round(steps / elapsed),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--envs",
        nargs="+",
        default=[
            "Acrobot-v1",
            "LunarLander-v3",
            "bench_vector_envs:SleepAcrobot",
            "bench_vector_envs:BusyAcrobot",
        ],
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"# load average at start: {os.getloadavg()}, cores: {os.cpu_count()}")
    rows = []
    for env_id in filter(available, args.envs):
        for n in NUM_ENVS:
            for remote in (False, True) if n > 1 else (False,):
                row = measure(env_id, n, remote, args.seconds, args.seed)
                print(json.dumps(row), flush=True)
                rows.append(row)
    print(f"# load average at end: {os.getloadavg()}")
    print("| env | num_envs_per_worker | remote_worker_envs | env steps/s | vs 1 env |")
    print("|---|---|---|---|---|")
    for row in rows:
        base = next(
            r["env_steps_per_s"]
            for r in rows
            if r["env"] == row["env"] and r["num_envs_per_worker"] == 1
        )
        print(
            f"| {row['env']} | {row['num_envs_per_worker']} | "
            f"{str(row['remote_worker_envs']).lower()} | {row['env_steps_per_s']:,} | "
            f"{row['env_steps_per_s'] / base:.2f}× |"
        )


if __name__ == "__main__":
    main()
