"""PG: steps to a reward target (CartPole-v1: 475) and env steps/s while training.

Drives Sampler + PG the way the trainer does (sample a fragment, postprocess, learn) for
each seed, prints one JSON line per run, then a summary table. The baseline is raw
vectorised env stepping with random actions, measured in the same run. ``--backend
both`` runs every seed with PG's numpy backend and with its torch autograd backend
(``offrl/algos/pgnet.py``), alternating, and prints the speed ratio.

    python benchmarks/bench_pg.py                       # configs/pg-cartpole.json, 5 seeds
    python benchmarks/bench_pg.py --seeds 1 --config '{"num_envs_per_worker": 128}'
    python benchmarks/bench_pg.py --file configs/pg-pendulum.json --target none \
        --max-steps 100000 --seeds 2 --backend both
"""

from __future__ import annotations

import argparse
import collections
import json
import time
from pathlib import Path

import numpy as np
import torch

from offrl.algos.pg import PG, PGConfig
from offrl.config import from_dict
from offrl.envs import make_vector_env
from offrl.rollout import Sampler

ROOT = Path(__file__).resolve().parent.parent


def raw_env_steps_per_s(env_id: str, num_envs: int, steps: int = 2000) -> float:
    """Env steps per CPU second of the bare vector env with random actions (the ceiling)."""
    env = make_vector_env(env_id, num_envs)
    env.reset(seed=0)
    env.action_space.seed(0)
    actions = [env.action_space.sample() for _ in range(steps)]
    start = time.process_time()
    for k in range(steps):
        env.step(actions[k])
    elapsed = time.process_time() - start
    env.close()
    return steps * num_envs / elapsed


def run(
    env_id: str, config: dict, seed: int, max_steps: int, target: float | None, backend: str
) -> dict:
    """Train one seed until the last-100-episode mean reaches ``target`` or max_steps."""
    cfg = from_dict(PGConfig, {**config, "seed": seed}, algo="PG")
    sampler_probe = make_vector_env(env_id, 1)
    algo = PG(
        cfg,
        sampler_probe.single_observation_space,
        sampler_probe.single_action_space,
        numpy_backend=backend == "numpy",
    )
    sampler_probe.close()
    sampler = Sampler(env_id, cfg.num_envs_per_worker, algo, algo.rollout_fragment_length(), seed)
    recent: collections.deque[float] = collections.deque(maxlen=100)
    steps, solved_at, best = 0, None, -np.inf
    t_sample = t_learn = 0.0
    start, cpu_start = time.perf_counter(), time.process_time()
    while steps < max_steps:
        t0 = time.perf_counter()
        batch = sampler.next()
        t1 = time.perf_counter()
        steps += batch.count
        algo.learn(algo.postprocess(batch), steps)  # the total so far, as the trainer passes
        t_learn += time.perf_counter() - t1
        t_sample += t1 - t0
        recent.extend(r for r, _ in sampler.pop_episodes())
        if len(recent) == 100:
            best = max(best, float(np.mean(recent)))
            if target is not None and best >= target:
                solved_at = steps
                break
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu_start
    sampler.close()
    return {
        "seed": seed,
        "backend": type(algo.nets).__name__,
        "solved": solved_at is not None,
        "steps_to_target": solved_at,
        "timesteps": steps,
        "best_reward_mean_100": round(best, 1),
        "time_s": round(elapsed, 2),
        "env_steps_per_s": round(steps / elapsed),
        # the VM is shared: steps per second of this process's CPU time is the fairer figure
        "env_steps_per_cpu_s": round(steps / cpu),
        "sample_share": round(t_sample / elapsed, 2),
        "learn_share": round(t_learn / elapsed, 2),
    }


def parts_per_backend(env_id: str, config: dict, repeats: int = 5) -> None:
    """Learner rows/s and acting calls/s of each backend on one recorded batch, alternating
    backends ``repeats`` times; medians, per CPU second."""
    cfg = from_dict(PGConfig, {**config, "seed": 1}, algo="PG")
    probe = make_vector_env(env_id, 1)
    spaces = probe.single_observation_space, probe.single_action_space
    probe.close()
    algos = {b: PG(cfg, *spaces, numpy_backend=b == "numpy") for b in ("numpy", "torch")}
    sampler = Sampler(
        env_id, cfg.num_envs_per_worker, algos["numpy"], algos["numpy"].rollout_fragment_length(), 1
    )
    batch = algos["numpy"].postprocess(sampler.next())
    sampler.close()
    obs = batch["obs"][: cfg.num_envs_per_worker]
    learn: dict[str, list[float]] = {b: [] for b in algos}
    act: dict[str, list[float]] = {b: [] for b in algos}
    for _ in range(repeats):
        for name, algo in algos.items():
            start = time.process_time()
            for _ in range(5):
                algo.learn(batch, batch.count)
            learn[name].append(5 * batch.count / (time.process_time() - start))
            start = time.process_time()
            for _ in range(500):
                algo.compute_actions(obs, explore=True)
            act[name].append(500 / (time.process_time() - start))
    for name in algos:
        print(
            f"{name}: learn {np.median(learn[name]):,.0f} rows per CPU s, "
            f"act {np.median(act[name]):,.0f} calls of {len(obs)} obs per CPU s"
        )
    print(
        f"numpy / torch: learn {np.median(learn['numpy']) / np.median(learn['torch']):.2f}x, "
        f"act {np.median(act['numpy']) / np.median(act['torch']):.2f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--file", default=str(ROOT / "configs" / "pg-cartpole.json"))
    parser.add_argument("--config", default="{}", help="JSON overriding the file's config")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--max-steps", type=int, default=500_000)
    parser.add_argument("--target", default="475", help="reward mean to stop at, or 'none'")
    parser.add_argument("--backend", choices=["numpy", "torch", "both"], default="numpy")
    parser.add_argument(
        "--parts", action="store_true", help="time learn and act of both backends, then exit"
    )
    args = parser.parse_args()
    target = None if args.target == "none" else float(args.target)
    backends = ["numpy", "torch"] if args.backend == "both" else [args.backend]
    torch.set_num_threads(1)
    spec = json.loads(Path(args.file).read_text())
    config = {**spec.get("config", {}), **json.loads(args.config)}
    env_id = spec.get("env", "CartPole-v1")
    if args.parts:
        parts_per_backend(env_id, config)
        return
    raw = raw_env_steps_per_s(env_id, config.get("num_envs_per_worker", 1))
    rows = []
    for seed in range(1, args.seeds + 1):
        for backend in backends:
            row = run(env_id, config, seed, args.max_steps, target, backend)
            row["ratio_to_raw_env"] = round(row["env_steps_per_cpu_s"] / raw, 3)
            print(json.dumps(row), flush=True)
            rows.append(row)
    print(f"\nPG {env_id}, config {json.dumps(config)}")
    print(f"raw vector env (random actions): {raw:,.0f} steps per CPU s")
    print(
        f"{'seed':>4} {'backend':>8} {'solved':>6} {'steps_to_target':>15} {'steps/s':>9} "
        f"{'steps/cpu_s':>11} {'learn':>5} {'time_s':>7}"
    )
    for r in rows:
        print(
            f"{r['seed']:>4} {r['backend']:>8} {r['solved']!s:>6} {r['steps_to_target']!s:>15} "
            f"{r['env_steps_per_s']:>9,} {r['env_steps_per_cpu_s']:>11,} {r['learn_share']:>5} "
            f"{r['time_s']:>7}"
        )
    cpu_by_backend = {}
    for name in sorted({r["backend"] for r in rows}):
        mine = [r for r in rows if r["backend"] == name]
        wall = np.median([r["env_steps_per_s"] for r in mine])
        cpu = cpu_by_backend[name] = float(np.median([r["env_steps_per_cpu_s"] for r in mine]))
        print(
            f"{name}: solved {sum(r['solved'] for r in mine)}/{len(mine)}; median {wall:,.0f} "
            f"steps/s wall, {cpu:,.0f} per CPU s ({cpu / raw:.2f} of the raw env)"
        )
    if len(cpu_by_backend) == 2:
        ratio = cpu_by_backend["NumpyPG"] / cpu_by_backend["TorchPG"]
        print(f"numpy backend / torch backend, env steps per CPU s: {ratio:.2f}x")


if __name__ == "__main__":
    main()
