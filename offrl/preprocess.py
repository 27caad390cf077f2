"""Observation preprocessing and env-action conversion: one definition for every space.

What the sampler records in ``obs``/``new_obs``, what the models read, and what the
reader checks files against is the *preprocessed* observation, as in RLlib (its
``ray.rllib.models.preprocessors``; FORMAT.md, "Spaces in the columns"):

- ``Box`` of rank 1 or 2: the values as float32, flattened to ``(prod(shape),)``.
- ``Box`` of rank 3 (an image, H x W x C): kept as it is, ``(H, W, C)``; a uint8 image
  stays uint8 (4x smaller in files and replay; the model scales it by 1/255),
  any other dtype becomes float32.
- ``Discrete(n)``: one-hot float32 ``(n,)``; ``MultiDiscrete(nvec)``: the one-hots
  of every component, concatenated ``(sum(nvec),)``; ``MultiBinary``: its bits as float32.
- ``Dict`` and ``Tuple``: every component preprocessed and flattened, then
  concatenated in the space's own order: a Tuple's positions, a Dict's keys as
  gymnasium orders them (sorted, unless the Dict was built from an OrderedDict),
  recursively for nested spaces (RLlib's ``DictFlatteningPreprocessor``).

Actions are recorded as the policy chose them; :func:`env_actions` is what reaches the env.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from offrl.errors import ConfigError

SUPPORTED_SPACES = "Box, Discrete, MultiDiscrete, MultiBinary, Dict and Tuple"


def is_image(space: gym.Space) -> bool:
    """A Box of rank 3 (H, W, C): models read it with convolutions."""
    return isinstance(space, gym.spaces.Box) and len(space.shape) == 3


def flat_size(space: gym.Space) -> int:
    """Length of the flattened preprocessed observation of ``space``."""
    if isinstance(space, gym.spaces.Box | gym.spaces.MultiBinary):
        return math.prod(space.shape)
    if isinstance(space, gym.spaces.Discrete):
        return int(space.n)
    if isinstance(space, gym.spaces.MultiDiscrete):
        return int(space.nvec.sum())
    if isinstance(space, gym.spaces.Dict):
        return sum(flat_size(s) for s in space.spaces.values())
    if isinstance(space, gym.spaces.Tuple):
        return sum(flat_size(s) for s in space.spaces)
    raise ConfigError(
        f"observation space {space} is not supported; offrl reads {SUPPORTED_SPACES} spaces"
    )


def _one_hot(values: np.ndarray, n: int) -> np.ndarray:
    """(N,) integers in [0, n) -> (N, n) float32 one-hot rows."""
    out = np.zeros((len(values), n), dtype=np.float32)
    out[np.arange(len(values)), values] = 1.0
    return out


def _flat_parts(space: gym.Space, obs: Any, n: int) -> list[np.ndarray]:
    """Batched observations ``obs`` (n rows) of ``space`` as (n, k) float32 blocks."""
    if isinstance(space, gym.spaces.Box | gym.spaces.MultiBinary):
        return [np.asarray(obs, dtype=np.float32).reshape(n, -1)]
    if isinstance(space, gym.spaces.Discrete):
        values = np.asarray(obs, dtype=np.int64).reshape(n) - int(space.start)
        return [_one_hot(values, int(space.n))]
    if isinstance(space, gym.spaces.MultiDiscrete):
        values = np.asarray(obs, dtype=np.int64).reshape(n, -1) - space.start.reshape(-1)
        return [_one_hot(values[:, i], int(k)) for i, k in enumerate(space.nvec.reshape(-1))]
    if isinstance(space, gym.spaces.Dict):
        return [p for key, sub in space.spaces.items() for p in _flat_parts(sub, obs[key], n)]
    if isinstance(space, gym.spaces.Tuple):
        return [p for i, sub in enumerate(space.spaces) for p in _flat_parts(sub, obs[i], n)]
    flat_size(space)  # raises the ConfigError naming the space
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class Preprocessor:
    """Batched env observations -> the (n, *shape) array offrl records and learns from."""

    space: gym.Space
    shape: tuple[int, ...]
    dtype: np.dtype

    def __call__(self, obs: Any, n: int) -> np.ndarray:
        """``obs``: n observations as a vector env batches them (arrays, dicts, tuples)."""
        try:
            if is_image(self.space):
                return np.asarray(obs).reshape(n, *self.shape).astype(self.dtype, copy=False)
            parts = _flat_parts(self.space, obs, n)
        except (ValueError, IndexError, KeyError, TypeError) as e:
            raise observation_mismatch(self.space, obs, e) from None
        if len(parts) == 1:
            return parts[0]
        out = np.concatenate(parts, axis=1)
        if out.shape[1] != self.shape[0]:
            raise observation_mismatch(self.space, obs, None)
        return out

    def one(self, obs: Any) -> np.ndarray:
        """One unbatched observation -> (1, *shape)."""
        empty: Any = gym.vector.utils.create_empty_array(self.space, 1)
        batched = gym.vector.utils.concatenate(self.space, [obs], empty)
        return self(batched, 1)


class ObservationMismatch(ValueError):
    """An env returned observations its own observation_space does not describe: a fault of
    the env's code, which the caller reports like the env's other failures (``env X failed at
    reset/step N``, exit 1)."""


def observation_mismatch(
    space: gym.Space, obs: Any, cause: Exception | None
) -> ObservationMismatch:
    """The error for a batch of observations ``obs`` that ``space`` does not describe."""
    got = f"shape {np.shape(obs)}" if not isinstance(obs, dict | tuple) else type(obs).__name__
    why = f" ({cause})" if cause is not None else ""
    return ObservationMismatch(
        f"the environment returned observations ({got}) that do not fit its "
        f"observation_space {space}{why}; fix the env's observation_space or its observations"
    )


def preprocessor(space: gym.Space) -> Preprocessor:
    """The preprocessor of an observation space (see the module docstring)."""
    if is_image(space):
        dtype = np.dtype(np.uint8) if space.dtype == np.uint8 else np.dtype(np.float32)
        return Preprocessor(space, tuple(space.shape or ()), dtype)  # an image is a Box
    return Preprocessor(space, (flat_size(space),), np.dtype(np.float32))


def obs_problem(space: gym.Space, obs: Any) -> str | None:
    """Why one raw observation does not fit ``space`` (its structure and shape), or None."""
    if isinstance(space, gym.spaces.Dict):
        if not isinstance(obs, dict) or set(obs) != set(space.spaces):
            keys = sorted(obs) if isinstance(obs, dict) else type(obs).__name__
            return f"expected a dict with keys {sorted(space.spaces)}, got {keys}"
        for key, sub in space.spaces.items():
            problem = obs_problem(sub, obs[key])
            if problem:
                return f"[{key!r}]: {problem}"
        return None
    if isinstance(space, gym.spaces.Tuple):
        if not isinstance(obs, tuple | list) or len(obs) != len(space.spaces):
            return f"expected a tuple of {len(space.spaces)}, got {type(obs).__name__}"
        for i, sub in enumerate(space.spaces):
            problem = obs_problem(sub, obs[i])
            if problem:
                return f"[{i}]: {problem}"
        return None
    if isinstance(space, gym.spaces.Discrete):
        value = np.asarray(obs)
        if value.size != 1 or not np.issubdtype(value.dtype, np.integer):
            return f"expected one integer, got {value.tolist()!r}"
        if not space.start <= int(value) < space.start + space.n:
            return f"{int(value)} is outside {space}"
        return None
    shape = getattr(space, "shape", None)
    if shape is not None and np.shape(obs) != tuple(shape):
        return f"expected shape {tuple(shape)}, got {np.shape(obs)}"
    return None


class CheckObservations(gym.Wrapper):
    """Raise a clear error when a (user's) env's first observations do not fit its space.

    Checks the reset observation and the first step's, then gets out of the way: a
    wrong shape would otherwise surface as a numpy broadcasting traceback deep inside
    the vector env.
    """

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self._checks_left = 2

    def _check(self, obs: Any, where: str) -> None:
        if self._checks_left <= 0:
            return
        self._checks_left -= 1
        problem = obs_problem(self.observation_space, obs)
        if problem:
            raise ObservationMismatch(
                f"{type(self.env.unwrapped).__name__}.{where} returned an observation that does "
                f"not fit its observation_space {self.observation_space}: {problem}"
            )

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        self._check(obs, "reset()")
        return obs, info

    def step(self, action: Any) -> tuple[Any, Any, bool, bool, dict[str, Any]]:
        out = self.env.step(action)
        self._check(out[0], "step()")
        return out


# -- actions -----------------------------------------------------------------------


def box_bounded(space: gym.Space) -> bool:
    """A float Box with finite bounds on every side (RLlib normalizes only those)."""
    return (
        isinstance(space, gym.spaces.Box)
        and np.issubdtype(space.dtype, np.floating)
        and bool(np.all(np.isfinite(space.low)) and np.all(np.isfinite(space.high)))
    )


def env_actions(space: gym.Space, actions: np.ndarray, normalized: bool) -> np.ndarray:
    """The actions to send to the env for recorded ``actions`` (n, ...).

    Box: with ``normalized`` (RLlib's ``normalize_actions``) the policy acts in
    [-1, 1] and ``low + (a + 1) (high - low) / 2`` maps it to the bounds; either way
    the result is clipped into [low, high] (a Gaussian sample can fall outside).
    The recorded action stays the unclipped sample, so ``action_logp`` describes it.
    """
    if not isinstance(space, gym.spaces.Box):
        return actions
    a = np.asarray(actions, dtype=np.float64).reshape(len(actions), *space.shape)
    low, high = space.low.astype(np.float64), space.high.astype(np.float64)
    if normalized and box_bounded(space):
        a = low + (a + 1.0) * (high - low) / 2.0
    return np.clip(a, low, high).astype(space.dtype)
