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


# -- one small env per kind of space (``--env tests.envs:ImageEnv`` ...) --------------------
#
# Each rewards a policy that reads its observation: the right action depends on a bit
# of the observation, so a learner that sees it can beat chance. Episodes last
# SPACE_HORIZON steps, so every test run is a few hundred steps.

SPACE_HORIZON = 8


class _CueEnv(gym.Env):
    """A random cue in {0, 1} each step; reward 1 for the action that matches it."""

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, render_mode: str | None = None) -> None:
        self.render_mode = render_mode
        self.t = 0
        self.cue = 0

    def _obs(self) -> Any:
        raise NotImplementedError

    def _reward(self, action: Any) -> float:
        return float(int(np.asarray(action).reshape(-1)[0]) == self.cue)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        super().reset(seed=seed)
        self.t = 0
        self.cue = int(self.np_random.integers(2))
        return self._obs(), {}

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        reward = self._reward(action)
        self.t += 1
        self.cue = int(self.np_random.integers(2))
        return self._obs(), reward, False, self.t >= SPACE_HORIZON, {}


class ImageEnv(_CueEnv):
    """uint8 (10, 12, 3) frames, bright when the cue is 1; Discrete(2) actions."""

    def __init__(self, render_mode: str | None = None) -> None:
        super().__init__(render_mode)
        self.observation_space = gym.spaces.Box(0, 255, shape=(10, 12, 3), dtype=np.uint8)
        self.action_space = gym.spaces.Discrete(2)

    def _obs(self) -> np.ndarray:
        return np.full((10, 12, 3), 200 * self.cue + 20, dtype=np.uint8)


class DictObsEnv(_CueEnv):
    """Dict observations, nested: {"pos": Box(2), "cue": Discrete(2), "extra":
    Tuple(Discrete(3), Box(1))}; Discrete(2) actions."""

    def __init__(self, render_mode: str | None = None) -> None:
        super().__init__(render_mode)
        self.observation_space = gym.spaces.Dict(
            {
                "pos": gym.spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32),
                "cue": gym.spaces.Discrete(2),
                "extra": gym.spaces.Tuple(
                    (
                        gym.spaces.Discrete(3),
                        gym.spaces.Box(0.0, 1.0, shape=(1,), dtype=np.float32),
                    )
                ),
            }
        )
        self.action_space = gym.spaces.Discrete(2)

    def _obs(self) -> dict[str, Any]:
        return {
            "pos": np.array([0.5, -0.5], dtype=np.float32),
            "cue": self.cue,
            "extra": (self.t % 3, np.array([0.25], dtype=np.float32)),
        }


class BoxActionEnv(_CueEnv):
    """Box(2) observations (the cue, and 1); Box([-2, -1], [2, 1]) actions; the reward
    is ``-(a0 - target)^2`` with target 1 when the cue is 1, else -1 (clipped actions)."""

    def __init__(self, render_mode: str | None = None) -> None:
        super().__init__(render_mode)
        self.observation_space = gym.spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        self.action_space = gym.spaces.Box(
            np.array([-2.0, -1.0], dtype=np.float32), np.array([2.0, 1.0], dtype=np.float32)
        )
        self.received: list[np.ndarray] = []  # what step() was given, for tests

    def _obs(self) -> np.ndarray:
        return np.array([2 * self.cue - 1, 1.0], dtype=np.float32)

    def _reward(self, action: Any) -> float:
        a = np.asarray(action, dtype=np.float32)
        self.received.append(a.copy())
        target = 2 * self.cue - 1
        return -float((a[0] - target) ** 2)


class MultiDiscreteEnv(_CueEnv):
    """MultiDiscrete([3, 2]) observations (cue and t % 2) and MultiDiscrete([2, 3]) actions;
    reward 1 when the first action component matches the cue."""

    def __init__(self, render_mode: str | None = None) -> None:
        super().__init__(render_mode)
        self.observation_space = gym.spaces.MultiDiscrete([3, 2])
        self.action_space = gym.spaces.MultiDiscrete([2, 3])

    def _obs(self) -> np.ndarray:
        return np.array([self.cue, self.t % 2], dtype=np.int64)


class TupleObsEnv(_CueEnv):
    """Tuple(Discrete(2), Box(3)) observations; Discrete(2) actions."""

    def __init__(self, render_mode: str | None = None) -> None:
        super().__init__(render_mode)
        self.observation_space = gym.spaces.Tuple(
            (gym.spaces.Discrete(2), gym.spaces.Box(0.0, 1.0, shape=(3,), dtype=np.float32))
        )
        self.action_space = gym.spaces.Discrete(2)

    def _obs(self) -> tuple[int, np.ndarray]:
        return self.cue, np.full(3, 0.5, dtype=np.float32)


class WrongShapeObsEnv(_CueEnv):
    """Declares Box(4) observations but returns 3 numbers: a user's bug offrl must name."""

    def __init__(self, render_mode: str | None = None) -> None:
        super().__init__(render_mode)
        self.observation_space = gym.spaces.Box(-1.0, 1.0, shape=(4,), dtype=np.float32)
        self.action_space = gym.spaces.Discrete(2)

    def _obs(self) -> np.ndarray:
        return np.zeros(3, dtype=np.float32)


class SixteenStatesTwoActions(_CueEnv):
    """Discrete(16) observations like FrozenLake's, but only Discrete(2) actions: FrozenLake's
    recorded actions (0-3) do not fit it."""

    def __init__(self, render_mode: str | None = None) -> None:
        super().__init__(render_mode)
        self.observation_space = gym.spaces.Discrete(16)
        self.action_space = gym.spaces.Discrete(2)

    def _obs(self) -> int:
        return self.cue


class ActionOutsideSpace(AssertionError):
    """Raised by the start-offset envs when step() gets an action outside their space."""


class DiscreteStartEnv(_CueEnv):
    """Discrete(3, start=-1) actions (-1, 0, 1): reward 1 for ``2 * cue - 1`` (-1 or 1).
    step() asserts that every action it gets is in its space, and keeps them."""

    def __init__(self, render_mode: str | None = None) -> None:
        super().__init__(render_mode)
        self.observation_space = gym.spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        self.action_space = gym.spaces.Discrete(3, start=-1)
        self.received: list[int] = []

    def _obs(self) -> np.ndarray:
        return np.array([2 * self.cue - 1, 1.0], dtype=np.float32)

    def _reward(self, action: Any) -> float:
        if not self.action_space.contains(np.int64(action)):
            raise ActionOutsideSpace(f"action {action!r} is not in {self.action_space}")
        self.received.append(int(action))
        return float(int(action) == 2 * self.cue - 1)


class MultiDiscreteStartEnv(_CueEnv):
    """MultiDiscrete([2, 3], start=[1, -1]) actions: reward 1 when the first component
    is ``cue + 1``. step() asserts that every action it gets is in its space."""

    def __init__(self, render_mode: str | None = None) -> None:
        super().__init__(render_mode)
        self.observation_space = gym.spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        self.action_space = gym.spaces.MultiDiscrete([2, 3], start=[1, -1])
        self.received: list[np.ndarray] = []

    def _obs(self) -> np.ndarray:
        return np.array([2 * self.cue - 1, 1.0], dtype=np.float32)

    def _reward(self, action: Any) -> float:
        a = np.asarray(action, dtype=np.int64)
        if not self.action_space.contains(a):
            raise ActionOutsideSpace(f"action {action!r} is not in {self.action_space}")
        self.received.append(a.copy())
        return float(int(a[0]) == self.cue + 1)
