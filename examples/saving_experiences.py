"""Save CartPole experiences with SampleBatchBuilder + JsonWriter (RLlib's saving_experiences).

Steps CartPole-v1 with a uniformly random policy and writes one record per
episode, with every column offline training and off-policy estimation need::

    python examples/saving_experiences.py --out /tmp/demo-out --episodes 100 --seed 0
    offrl train --run DQN --env CartPole-v1 --config '{"input": "/tmp/demo-out"}'

The same pattern converts logs of a deployed system: replace the env loop by a
loop over the logged steps and call ``add_values`` once per step.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Iterator, Sequence

import gymnasium as gym
import numpy as np

from offrl.batch import SampleBatch
from offrl.io.builder import SampleBatchBuilder
from offrl.io.json_writer import JsonWriter

ENV_ID = "CartPole-v1"


def collect_episodes(episodes: int, seed: int) -> Iterator[SampleBatch]:
    """Yield one SampleBatch per episode of a random policy (deterministic for a seed)."""
    rng = np.random.default_rng(seed)
    env = gym.make(ENV_ID)
    space = env.action_space
    if not isinstance(space, gym.spaces.Discrete):
        raise TypeError(f"{ENV_ID} should have a Discrete action space, got {space}")
    n_actions = int(space.n)
    # Uniform behaviour policy: IS/WIS need its probabilities. float32 like RLlib's columns.
    prob = np.float32(1.0 / n_actions)
    logp = np.float32(math.log(1.0 / n_actions))
    builder = SampleBatchBuilder()
    try:
        for episode in range(episodes):
            obs, _ = env.reset(seed=seed + episode)
            # Random 63-bit ids like RLlib's: not sequential, often above 2**53.
            eps_id = int(rng.integers(0, 2**63 - 1))
            prev_action, prev_reward = 0, np.float32(0.0)
            done, t = False, 0
            while not done:
                action = int(rng.integers(n_actions))
                new_obs, reward, terminated, truncated, info = env.step(action)
                done = terminated or truncated
                builder.add_values(
                    t=t,
                    eps_id=eps_id,
                    agent_index=0,
                    obs=obs,
                    actions=action,
                    action_prob=prob,
                    action_logp=logp,
                    rewards=np.float32(reward),
                    prev_actions=prev_action,
                    prev_rewards=prev_reward,
                    dones=done,
                    terminateds=terminated,
                    truncateds=truncated,
                    infos=dict(info),
                    new_obs=new_obs,
                )
                obs, prev_action, prev_reward = new_obs, action, np.float32(reward)
                t += 1
            yield builder.build_and_reset()
    finally:
        env.close()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options of the example."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="/tmp/demo-out", help="output directory or URI")
    parser.add_argument("--episodes", type=int, default=100, help="episodes to record")
    parser.add_argument("--seed", type=int, default=0, help="seed of env and policy")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Record ``--episodes`` random CartPole episodes to ``--out``; return the exit code."""
    args = parse_args(argv)
    steps = 0
    with JsonWriter(args.out) as writer:
        for batch in collect_episodes(args.episodes, args.seed):
            writer.write(batch)
            steps += batch.count
        paths = list(writer.paths)
    print(f"wrote {args.episodes} episodes, {steps} steps to {', '.join(paths)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
