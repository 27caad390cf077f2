"""The real RLlib experience files the tests read, vendored under ``tests/data/rllib/``.

Nobody on this project wrote them: RLlib's own ``JsonWriter`` did. ``tests/data/rllib/README.md``
says which RLlib version wrote each file, how, and what each one shows.
"""

from __future__ import annotations

from pathlib import Path

RLLIB_DATA = Path(__file__).resolve().parent / "data" / "rllib"

# An older RLlib's SampleBatch lines: three CartPole episodes, plain-list columns, `dones`.
RLLIB_FIXTURE = RLLIB_DATA / "cartpole-small.json"

# RLlib 2.60.0 (old API stack), one directory per run, each holding one output file.
RLLIB_260 = RLLIB_DATA / "rllib-2.60"
RLLIB_260_DQN_CARTPOLE = RLLIB_260 / "dqn-cartpole"
RLLIB_260_PPO_PENDULUM = RLLIB_260 / "ppo-pendulum"
RLLIB_260_PPO_FROZENLAKE = RLLIB_260 / "ppo-frozenlake"
