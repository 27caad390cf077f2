"""Envs that misbehave, for tests of how offrl reports env failures (--env tests.bad_envs:X).

Each is a 2-observation, 2-action env that fails in one way at a known step.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any

import gymnasium as gym
import numpy as np

FAIL_AT = 3  # the step (1-based) at which the failing envs fail


class _Base(gym.Env):
    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, render_mode: str | None = None) -> None:
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(2,), dtype=np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self.t = 0

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(2, dtype=np.float32), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        self.t += 1
        return np.full(2, self.t, dtype=np.float32), 1.0, False, self.t >= 10, {}


class RaisesInInit(_Base):
    def __init__(self, render_mode: str | None = None) -> None:
        raise RuntimeError("no licence server")


class RaisesInReset(_Base):
    def reset(self, **kwargs: Any) -> tuple[np.ndarray, dict[str, Any]]:
        raise OSError("simulator not running")


class RaisesInStep(_Base):
    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self.t + 1 == FAIL_AT:
            raise ValueError("physics exploded")
        return super().step(action)


class ExitsInStep(_Base):
    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        raise SystemExit(3)


class FourValues(_Base):
    def step(self, action: Any) -> tuple[Any, ...]:
        obs, rew, term, trunc, info = super().step(action)
        return obs, rew, term or trunc, info


class WrongShape(_Base):
    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        _, rew, term, trunc, info = super().step(action)
        return np.zeros(5, dtype=np.float32), rew, term, trunc, info


class NaNReward(_Base):
    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        obs, rew, term, trunc, info = super().step(action)
        return obs, (float("nan") if self.t == FAIL_AT else rew), term, trunc, info


class InfObservation(_Base):
    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        obs, rew, term, trunc, info = super().step(action)
        if self.t == FAIL_AT:
            obs[1] = np.inf
        return obs, rew, term, trunc, info


class HangsInStep(_Base):
    """Steps normally, then never returns from step() (only a signal gets it out)."""

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self.t + 1 == FAIL_AT:
            time.sleep(3600)
        return super().step(action)


class BlocksInNativeCode(_Base):
    """Steps normally, then blocks in C without returning to the interpreter, like a
    simulator's blocking read: an endless SQLite query (SQLite never checks for signals,
    unlike ``re``, which does)."""

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self.t + 1 == FAIL_AT:
            endless = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c)"
            sqlite3.connect(":memory:").execute(f"{endless} SELECT count(*) FROM c").fetchone()
        return super().step(action)
