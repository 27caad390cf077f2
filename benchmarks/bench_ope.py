"""Off-policy estimation accuracy on CartPole-v1, and its cost next to offline DQN training.

Behaviour policy: a soft scripted controller, p(a=1) = eps_b/2 + (1-eps_b) sigmoid(beta*s)
with s = theta + 0.5 * theta_dot. Target policies: the hard scripted controller
(a = 1 if s > 0) with epsilon-random actions, eps in {0.05, 0.6, 0.9}. True values:
mean discounted return of many simulated episodes. Episodes are capped at
``--max-len`` steps (truncated). Each repeat records a fresh dataset (own seed),
cuts it into fixed-size fragments (so episodes are split across batches) and runs
is, wis, dm, dr. Prints bias, RMSE, mean relative error, share within 10 % and
95 % CI coverage and mean width per estimator and target (and, for is/wis, the mean
``missing_mass``: the share of the target's probability the data does not show), then
the timing figures.

    python benchmarks/bench_ope.py              # full run (a few minutes on 2 cores)
    python benchmarks/bench_ope.py --repeats 3  # quick look
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import gymnasium as gym
import numpy as np
import torch

from offrl.batch import SampleBatch
from offrl.estimators import make_estimators

Policy = Callable[[np.ndarray], np.ndarray]  # obs (N, 4) -> probs (N, 2)
NAMES = ["is", "wis", "dm", "dr"]
COLUMNS = ("obs", "new_obs", "actions", "rewards", "terminateds", "truncateds", "action_prob")


def score(obs: np.ndarray) -> np.ndarray:
    return obs[:, 2] + 0.5 * obs[:, 3]


def soft_policy(eps: float, beta: float) -> Policy:
    """p(a=1) = eps/2 + (1-eps) * sigmoid(beta * s)."""

    def probs(obs: np.ndarray) -> np.ndarray:
        p1 = eps / 2 + (1 - eps) / (1 + np.exp(-beta * score(obs)))
        return np.stack([1 - p1, p1], axis=1)

    return probs


def scripted_policy(eps: float) -> Policy:
    """Hard scripted controller with epsilon-random actions."""

    def probs(obs: np.ndarray) -> np.ndarray:
        p1 = np.where(score(obs) > 0, 1 - eps / 2, eps / 2)
        return np.stack([1 - p1, p1], axis=1)

    return probs


def record(policy: Policy, episodes: int, seed: int, max_len: int) -> list[SampleBatch]:
    """Episodes of ``policy`` on CartPole-v1 with action_prob, one SampleBatch each."""
    env = gym.make("CartPole-v1", max_episode_steps=max_len)
    rng = np.random.default_rng(seed)
    out = []
    obs, _ = env.reset(seed=seed)
    for ep in range(episodes):
        cols: dict[str, list] = {k: [] for k in COLUMNS}
        done = False
        while not done:
            p = policy(obs[None])[0]
            a = int(rng.random() < p[1])
            new_obs, r, term, trunc, _ = env.step(a)
            for k, v in zip(cols, (obs, new_obs, a, r, term, trunc, p[a]), strict=True):
                cols[k].append(v)
            obs, done = new_obs, term or trunc
        n = len(cols["rewards"])
        out.append(SampleBatch({**cols, "eps_id": [seed * 100_000 + ep] * n, "t": range(n)}))
        obs, _ = env.reset()
    env.close()
    return out


def discounted(batches: list[SampleBatch], gamma: float) -> np.ndarray:
    return np.array([np.sum(gamma ** np.arange(b.count) * b["rewards"]) for b in batches])


def fragments(episodes: list[SampleBatch], size: int) -> list[SampleBatch]:
    """The episodes concatenated and cut every ``size`` rows (episodes split across batches)."""
    joined = SampleBatch.concat_samples(episodes)
    return [joined.slice(s, min(s + size, joined.count)) for s in range(0, joined.count, size)]


def run_estimators(
    batches: list[SampleBatch], target: Policy, gamma: float, seed: int, n_iters: int
) -> dict[str, dict[str, float]]:
    ests = make_estimators(NAMES, gamma=gamma, action_space_n=2, obs_dim=4, seed=seed,
                           fqe_config={"n_iters": n_iters})  # fmt: skip
    for b in batches:
        for est in ests:
            est.process(b, target)
    return {name: est.estimate() for name, est in zip(NAMES, ests, strict=True)}


def accuracy(args: argparse.Namespace) -> None:
    behaviour = soft_policy(args.behaviour_eps, args.beta)
    targets = {f"eps={e}": scripted_policy(e) for e in args.target_eps}
    truth = {}
    for i, (label, pol) in enumerate(targets.items()):
        truth[label] = float(discounted(record(pol, args.truth_episodes, 10_000 + i,
                                               args.max_len), args.gamma).mean())  # fmt: skip
    print(f"gamma={args.gamma} max_len={args.max_len} episodes/dataset={args.episodes} "
          f"repeats={args.repeats} fqe n_iters={args.fqe_iters}")  # fmt: skip
    print("true values: " + ", ".join(f"{k}: {v:.3f}" for k, v in truth.items()))
    est: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
    v_behaviour = []
    for r in range(args.repeats):
        data = record(behaviour, args.episodes, r, args.max_len)
        v_behaviour.append(discounted(data, args.gamma).mean())
        batches = fragments(data, args.fragment)
        for label, pol in targets.items():
            for name, out in run_estimators(batches, pol, args.gamma, r, args.fqe_iters).items():
                low = out.get("v_target_ci_low", np.nan)
                high = out.get("v_target_ci_high", np.nan)
                mass = out.get("missing_mass", np.nan)
                est.setdefault((name, label), []).append((out["v_target"], low, high, mass))
    print(f"behaviour value (mean over datasets): {np.mean(v_behaviour):.3f}")
    header = f"{'estimator':9} {'target':9} {'truth':>7} {'mean':>7} {'bias':>7} {'RMSE':>7} "
    print(header + f"{'rel.err':>8} {'<=10%':>6} {'CI cover':>8} {'CI width':>8} {'missing':>7}")
    for (name, label), rows in est.items():
        arr = np.array(rows)
        err = arr[:, 0] - truth[label]
        rel = np.abs(err) / abs(truth[label])
        cover = np.mean((arr[:, 1] <= truth[label]) & (truth[label] <= arr[:, 2]))
        width, mass = np.mean(arr[:, 2] - arr[:, 1]), np.mean(arr[:, 3])
        print(f"{name:9} {label:9} {truth[label]:7.3f} {arr[:, 0].mean():7.3f} {err.mean():7.3f} "
              f"{np.sqrt(np.mean(err**2)):7.3f} {rel.mean():8.1%} {np.mean(rel <= 0.1):6.0%} "
              f"{cover:8.0%} {width:8.2f} {mass:7.2f}")  # fmt: skip


def timing(args: argparse.Namespace) -> None:
    """Cost of process+estimate next to one offline DQN training iteration on the same rows."""
    from offrl.algos.dqn import DQN, DQNConfig
    from offrl.config import from_dict

    env = gym.make("CartPole-v1")
    config = from_dict(DQNConfig, {"seed": 0, "learning_starts": 1000}, algo="DQN")
    dqn = DQN(config, env.observation_space, env.action_space)
    data = fragments(record(soft_policy(args.behaviour_eps, args.beta), 200, 99, args.max_len),
                     args.fragment)  # fmt: skip
    per_iter = config.timesteps_per_iteration // args.fragment
    iters = [data[i * per_iter : (i + 1) * per_iter] for i in range(len(data) // per_iter)]
    ests = make_estimators(NAMES, gamma=args.gamma, action_space_n=2, obs_dim=4, seed=0)

    def train_iter(batches: list[SampleBatch]) -> float:
        start = time.perf_counter()
        for b in batches:
            dqn.learn(dqn.postprocess(b), 0)
        return time.perf_counter() - start

    def estimate_iter(batches: list[SampleBatch]) -> tuple[float, float]:
        start = time.perf_counter()
        for b in batches:
            for est in ests:
                est.process(b, dqn.action_probs)
        mid = time.perf_counter()
        for est in ests:
            est.estimate()
            est.reset()  # one estimate per iteration, as in a training run
        return mid - start, time.perf_counter() - mid

    train_iter(iters[0])  # fills learning_starts
    t_train, t_proc, t_est = [], [], []
    for batches in iters[1 : 1 + args.timing_iters]:
        t_train.append(train_iter(batches))
        p, e = estimate_iter(batches)
        t_proc.append(p)
        t_est.append(e)
    rows = per_iter * args.fragment
    train, proc, est = np.median(t_train), np.median(t_proc), np.median(t_est)
    print(f"\ntiming (median of {len(t_train)} iterations of {rows} rows, "
          f"{len(iters[0])} batches of {args.fragment} rows):")  # fmt: skip
    print(f"  offline DQN iteration (postprocess+learn): {train * 1e3:8.1f} ms")
    print(f"  process, all 4 estimators:                 {proc * 1e3:8.1f} ms "
          f"({proc / len(iters[0]) * 1e3:.2f} ms per batch)")  # fmt: skip
    print(f"  estimate, all 4 (default fqe_config):      {est * 1e3:8.1f} ms")
    print(f"  estimation / training iteration:           {(proc + est) / train:8.1%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--episodes", type=int, default=100, help="episodes per dataset")
    parser.add_argument("--truth-episodes", type=int, default=1000)
    parser.add_argument("--gamma", type=float, default=0.95)
    parser.add_argument("--max-len", type=int, default=200)
    parser.add_argument("--fragment", type=int, default=200, help="rows per batch")
    parser.add_argument("--behaviour-eps", type=float, default=0.3)
    parser.add_argument("--beta", type=float, default=5.0)
    parser.add_argument("--target-eps", type=float, nargs="+", default=[0.05, 0.6, 0.9])
    parser.add_argument("--fqe-iters", type=int, default=600, help="FQE steps (one estimate)")
    parser.add_argument("--timing-iters", type=int, default=5)
    parser.add_argument("--skip-accuracy", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    if not args.skip_accuracy:
        accuracy(args)
    timing(args)
    print(f"\ntotal {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
