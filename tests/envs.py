"""Tiny deterministic gymnasium envs for tests (usable as ``--env tests.envs:CountEnv``).

``CountEnv`` makes every sampler invariant checkable by eye: the observation is
``[instance_uid, t]``, the reward of step ``t`` (0-based) is ``t + 1``, three
``1`` actions end the episode (terminated) and ``HORIZON`` steps cut it
(truncated). Policy "always 0" gives episodes of exactly ``HORIZON`` steps and
return ``1 + 2 + ... + HORIZON``; "always 1" gives terminated episodes of 3 steps.
"""

from __future__ import annotations

import itertools
from typing import Any

import gymnasium as gym
import numpy as np

HORIZON = 5
ONES_TO_TERMINATE = 3

# Each instance gets its own uid so a test can tell which sub-env produced a row.
_uids = itertools.count()


class CountEnv(gym.Env):
    """Counts steps; terminates after 3 actions of 1, truncates at HORIZON steps."""

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, render_mode: str | None = None) -> None:
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(2,), dtype=np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self.render_mode = render_mode
        self.uid = next(_uids)
        self.t = 0
        self.ones = 0
        self.steps_taken = 0  # every real step() call, across episodes

    def _obs(self) -> np.ndarray:
        return np.array([self.uid, self.t], dtype=np.float32)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self.t = 0
        self.ones = 0
        return self._obs(), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        self.steps_taken += 1
        self.t += 1
        self.ones += int(action)
        reward = float(self.t)
        terminated = self.ones >= ONES_TO_TERMINATE
        truncated = not terminated and self.t >= HORIZON
        return self._obs(), reward, terminated, truncated, {}


class NotAnEnv:
    """A class that is not a gymnasium.Env, for error-message tests."""
