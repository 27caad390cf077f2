"""The standard control suite: offrl's configs beside Stable-Baselines3, in one run.

For each config in ``configs/`` named on the command line and each seed, offrl trains with
``offrl train -f CONFIG --seed S --checkpoint-at-end`` (a subprocess, so wall time includes
start-up as a user sees it), then the final checkpoint is greedy-evaluated with
``offrl rollout CKPT --episodes 20 --seed 12345``.

With ``--sb3`` (``pip install stable-baselines3``; installed only for this script) the same
env is trained with SB3 in a child process (torch 1 thread), timed like offrl's: the whole
process, imports included. DQN with rl-zoo3's hyperparameters for DQN configs, A2C with
rl-zoo3's hyperparameters (``VecNormalize`` included) for PG configs; its final model is
evaluated the same way (20 greedy episodes, ``deterministic=True``, reset seeds 12345,
12346, ...). ``--only sb3`` runs SB3 alone (the offrl side of the same configs in another
invocation).

Both sides also report the time inside the run, start-up left out (``run_wall_s``: offrl's
``time_total_s``; SB3's time from building the model to the end of ``learn``), so the two
can be compared either way. ``--extra-config JSON`` merges keys into every offrl config (to
try settings without editing ``configs/``).

Two modes:

- default: the config's whole budget (its ``stop``), both sides.
- ``--to-goal``: both sides stop as soon as a greedy evaluation of 20 episodes, every
  ``--eval-every`` env steps, reaches the goal (or at the budget). offrl does it with its own
  ``evaluation_interval`` and a ``stop`` on ``evaluation/episode_reward_mean``; SB3 with
  ``EvalCallback`` + ``StopTrainingOnRewardThreshold`` on 8 eval envs. Both sides' wall and
  CPU times include their evaluations. This is the speed goal's "wall time to the goal".

Figures per run: env steps, wall and CPU (user+sys) seconds of the process, wall seconds
inside the run, env steps per wall second,
greedy mean (min, max) of the final model, goal met or missed. One JSON line per run, then
a table.

Goals (greedy mean): dqn-acrobot / pg-acrobot >= -100, dqn-lunarlander >= 150,
dqn-mountaincar >= -110, pg-pendulum >= -300, dqn-cartpole >= 475. Usage::

    python benchmarks/bench_suite.py dqn-acrobot --seeds 1 2 3
    python benchmarks/bench_suite.py dqn-acrobot pg-acrobot --seeds 1 --sb3 --to-goal
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
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
GOALS = {
    "dqn-acrobot": -100.0,
    "pg-acrobot": -100.0,
    "dqn-lunarlander": 150.0,
    "dqn-mountaincar": -110.0,
    "pg-pendulum": -300.0,
    "dqn-cartpole": 475.0,
}
EVAL_EPISODES = 20
EVAL_SEED = 12345

# rl-zoo3's hyperparameters (hyperparams/dqn.yml), for the SB3 side.
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
    "CartPole-v1": dict(
        learning_rate=2.3e-3, batch_size=64, buffer_size=100000, learning_starts=1000,
        gamma=0.99, target_update_interval=10, train_freq=256, gradient_steps=128,
        exploration_fraction=0.16, exploration_final_eps=0.04,
        policy_kwargs=dict(net_arch=[256, 256]),
    ),
}  # fmt: skip

# rl-zoo3's hyperparameters (hyperparams/a2c.yml): envs, VecNormalize, A2C keywords.
SB3_A2C = {
    "Acrobot-v1": dict(n_envs=16, gamma=0.99, kwargs=dict(ent_coef=0.0)),
    "Pendulum-v1": dict(
        n_envs=8, gamma=0.9,
        kwargs=dict(
            ent_coef=0.0, max_grad_norm=0.5, n_steps=8, gae_lambda=0.9, vf_coef=0.4,
            gamma=0.9, use_rms_prop=True, normalize_advantage=False,
            learning_rate=lambda progress: progress * 7e-4, use_sde=True,
            policy_kwargs=dict(log_std_init=-2, ortho_init=False),
        ),
    ),
}  # fmt: skip


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _offrl(args: list[str], results: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OFFRL_RESULTS_DIR": str(results)}
    cmd = [sys.executable, "-m", "offrl.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)


def _spec(name: str) -> dict[str, Any]:
    return json.loads((ROOT / "configs" / f"{name}.json").read_text())


def _summary(returns: list[float]) -> dict[str, float]:
    return {
        "greedy_mean": round(sum(returns) / len(returns), 2),
        "greedy_min": round(min(returns), 2),
        "greedy_max": round(max(returns), 2),
    }


def run_offrl(
    name: str, seed: int, results: Path, to_goal: bool, every: int, extra: dict[str, Any]
) -> dict[str, Any]:
    """Train ``configs/NAME.json`` (plus ``extra`` config keys) with ``seed``, then roll its
    final checkpoint out."""
    spec = _spec(name)
    spec["config"].update(extra)
    config_file = results / f"{name}-{seed}.json"
    config_file.write_text(json.dumps(spec))
    args = ["train", "-f", str(config_file), "--seed", str(seed)]
    if to_goal:
        # rows per training iteration: DQN's timesteps_per_iteration, PG's train_batch_size
        # (offrl's defaults 1000 and 200)
        key, default = (
            ("timesteps_per_iteration", 1000) if spec["run"] == "DQN" else ("train_batch_size", 200)
        )
        per_iter = int(spec["config"].get(key, default))
        evaluation = {
            "evaluation_interval": max(every // per_iter, 1),
            "evaluation_num_episodes": EVAL_EPISODES,
        }
        stop = {**spec["stop"], "evaluation/episode_reward_mean": GOALS[name]}
        args += ["--config", json.dumps(evaluation), "--stop", json.dumps(stop)]
    cpu0, start = _children_cpu(), time.perf_counter()
    proc = _offrl([*args, "--checkpoint-at-end", "-q"], results)
    wall, cpu = time.perf_counter() - start, _children_cpu() - cpu0
    if proc.returncode != 0:
        raise RuntimeError(f"offrl train {name} seed {seed} failed:\n{proc.stderr[-2000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    ckpts = sorted(Path(result["logdir"]).glob("checkpoint_*"))
    roll = _offrl(
        ["rollout", str(ckpts[-1]), "--episodes", str(EVAL_EPISODES), "--seed", str(EVAL_SEED)],
        results,
    )
    if roll.returncode != 0:
        raise RuntimeError(f"offrl rollout failed:\n{roll.stderr[-2000:]}")
    greedy = json.loads(roll.stdout.strip().splitlines()[-1])
    steps = int(result["timesteps_total"])
    return {
        "who": "offrl", "config": name, "seed": seed, "steps": steps,
        "wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "steps_per_s": round(steps / wall, 1),
        "run_wall_s": round(float(result["time_total_s"]), 1),
        "greedy_mean": greedy["episode_reward_mean"], "greedy_min": greedy["episode_reward_min"],
        "greedy_max": greedy["episode_reward_max"],
        "last_eval": result.get("evaluation/episode_reward_mean"),
        "train_reward_mean": result.get("episode_reward_mean"),
    }  # fmt: skip


def _sb3_model(spec: dict[str, Any], seed: int) -> tuple[Any, Any]:
    """The SB3 model for ``spec`` and the function that prepares an eval env like its own."""
    from stable_baselines3 import A2C, DQN
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    env_id = spec["env"]
    if spec["run"] == "DQN":
        model = DQN("MlpPolicy", env_id, seed=seed, **SB3_DQN[env_id])
        return model, lambda venv: venv
    zoo = SB3_A2C[env_id]
    venv = VecNormalize(make_vec_env(env_id, n_envs=zoo["n_envs"], seed=seed), gamma=zoo["gamma"])
    model = A2C("MlpPolicy", venv, seed=seed, **zoo["kwargs"])

    def like_train(eval_venv: Any) -> Any:
        return VecNormalize(eval_venv, training=False, norm_reward=False, gamma=zoo["gamma"])

    return model, like_train


def _sb3_greedy(model: Any, env_id: str) -> list[float]:
    import gymnasium as gym
    from stable_baselines3.common.vec_env import VecNormalize

    norm = model.get_env() if isinstance(model.get_env(), VecNormalize) else None
    env = gym.make(env_id)
    returns = []
    for k in range(EVAL_EPISODES):
        obs, _ = env.reset(seed=EVAL_SEED + k)
        total, done = 0.0, False
        while not done:
            action, _ = model.predict(
                obs if norm is None else norm.normalize_obs(obs), deterministic=True
            )
            obs, rew, term, trunc, _ = env.step(action)
            total += float(rew)
            done = bool(term or trunc)
        returns.append(total)
    env.close()
    return returns


def run_sb3(name: str, seed: int, to_goal: bool, every: int) -> dict[str, Any]:
    """:func:`sb3_child` in a child process, timed whole (imports included) like offrl's."""
    cmd = [sys.executable, __file__, "--sb3-child", name, "--seeds", str(seed)]
    cmd += ["--eval-every", str(every)] + (["--to-goal"] if to_goal else [])
    cpu0, start = _children_cpu(), time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall, cpu = time.perf_counter() - start, _children_cpu() - cpu0
    if proc.returncode != 0:
        raise RuntimeError(f"SB3 {name} seed {seed} failed:\n{proc.stderr[-2000:]}")
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    steps = row["steps"]
    return row | {
        "wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "steps_per_s": round(steps / wall, 1),
    }  # fmt: skip


def sb3_child(name: str, seed: int, to_goal: bool, every: int) -> dict[str, Any]:
    """The same env and budget with SB3 (DQN or A2C with rl-zoo3's settings)."""
    import torch
    from stable_baselines3.common.callbacks import EvalCallback, StopTrainingOnRewardThreshold
    from stable_baselines3.common.env_util import make_vec_env

    torch.set_num_threads(1)
    spec = _spec(name)
    env_id, budget = spec["env"], int(spec["stop"]["timesteps_total"])
    start = time.perf_counter()
    model, like_train = _sb3_model(spec, seed)
    callback = None
    if to_goal:
        stop = StopTrainingOnRewardThreshold(reward_threshold=GOALS[name], verbose=0)
        eval_env = like_train(make_vec_env(env_id, n_envs=8, seed=seed + 1000))
        callback = EvalCallback(
            eval_env, callback_on_new_best=stop, n_eval_episodes=EVAL_EPISODES,
            eval_freq=max(every // model.n_envs, 1), deterministic=True, verbose=0,
        )  # fmt: skip
    model.learn(total_timesteps=budget, callback=callback)
    run_wall = time.perf_counter() - start
    return {
        "who": "sb3", "config": name, "seed": seed, "steps": int(model.num_timesteps),
        "run_wall_s": round(run_wall, 1), **_summary(_sb3_greedy(model, env_id)),
        "last_eval": None if callback is None else round(float(callback.last_mean_reward), 2),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configs", nargs="+", choices=sorted(GOALS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[1])
    parser.add_argument("--sb3", action="store_true", help="also train SB3 on the same budget")
    parser.add_argument("--only", choices=("offrl", "sb3"), help="run one side only")
    parser.add_argument("--to-goal", action="store_true", help="stop each run at its goal")
    parser.add_argument("--eval-every", type=int, default=5000, help="env steps (--to-goal)")
    parser.add_argument("--extra-config", default="{}", help="JSON keys added to offrl's configs")
    parser.add_argument("--sb3-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sb3_child:  # one SB3 run, in the child process run_sb3 started
        row = sb3_child(args.configs[0], args.seeds[0], args.to_goal, args.eval_every)
        print(json.dumps(row), flush=True)
        return
    extra = json.loads(args.extra_config)
    sides = [args.only] if args.only else ["offrl", "sb3"] if args.sb3 else ["offrl"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.configs:
            for seed in args.seeds:
                for side in sides:
                    if side == "offrl":
                        row = run_offrl(name, seed, Path(tmp), args.to_goal, args.eval_every, extra)
                    else:
                        row = run_sb3(name, seed, args.to_goal, args.eval_every)
                    row["mode"] = "to-goal" if args.to_goal else "budget"
                    row["goal"] = GOALS[name]
                    row["met"] = row["greedy_mean"] >= GOALS[name]
                    print(json.dumps(row), flush=True)
                    rows.append(row)
    head = ("config", "who", "seed", "steps", "wall s", "CPU s", "run s", "steps/s", "last eval")
    print(
        "\n{:16} {:5} {:>4} {:>8} {:>7} {:>7} {:>6} {:>8} {:>9}  {:26} goal".format(*head, "greedy")
    )
    for r in rows:
        greedy = f"{r['greedy_mean']:.1f} ({r['greedy_min']:.0f}, {r['greedy_max']:.0f})"
        print(
            f"{r['config']:16} {r['who']:5} {r['seed']:>4} {r['steps']:>8} {r['wall_s']:>7} "
            f"{r['cpu_s']:>7} {r['run_wall_s']:>6} {r['steps_per_s']:>8} "
            f"{r['last_eval'] or '-':>9}  {greedy:26} "
            f"{'met' if r['met'] else 'missed'}"
        )


if __name__ == "__main__":
    main()
