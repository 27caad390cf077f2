"""Check decoded batches against the environment's spaces before training (FORMAT.md).

Policy: data that does not fit the spaces is refused with a DataFormatError naming
the column and the expected and found shape (or the out-of-range action, its value
and row); non-finite rewards (NaN, +-Infinity) are refused too, because one of
them turns every learned value into NaN. Observations of a multi-dimensional Box
may be stored flattened (FORMAT.md), so ``(prod(shape),)`` is accepted as well.
Spaces other than Box, Discrete and MultiDiscrete (Dict, Tuple, ...) are not checked.
"""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np

from offrl.batch import ACTIONS, NEW_OBS, OBS, REWARDS, SampleBatch
from offrl.errors import DataFormatError


def _expected_shapes(space: gym.Space) -> list[tuple[int, ...]] | None:
    """Accepted per-row shapes for ``space``; None when the space is not checked."""
    if isinstance(space, gym.spaces.Discrete):
        return [()]
    if isinstance(space, gym.spaces.MultiDiscrete):
        return [tuple(space.nvec.shape)]
    if isinstance(space, gym.spaces.Box):
        shape = tuple(space.shape)
        flat = (math.prod(shape),)
        return [shape] if flat == shape else [shape, flat]
    return None


def _check_shape(col: str, arr: np.ndarray, space: gym.Space, where: str) -> None:
    expected = _expected_shapes(space)
    if expected is None:
        return
    found = tuple(arr.shape[1:])
    if found not in expected:
        want = " or ".join(str((None, *s)) for s in expected)
        raise DataFormatError(
            where,
            None,
            f"column {col!r} has shape {(len(arr), *found)} but the environment's {space} "
            f"expects {want} (rows first): was the data recorded in a different environment?",
        )


def _check_discrete(
    col: str, arr: np.ndarray, low: np.ndarray, high: np.ndarray, where: str
) -> None:
    """Values must be integers with ``low <= value < high`` (elementwise)."""
    if arr.dtype.kind == "f":
        bad = np.flatnonzero((arr != np.round(arr)).reshape(len(arr), -1).any(axis=1))
        if bad.size:
            row = int(bad[0])
            raise DataFormatError(
                where, None, f"column {col!r} row {row}: {arr[row].tolist()} is not an integer"
            )
    elif arr.dtype.kind not in "iub":
        raise DataFormatError(where, None, f"column {col!r} has dtype {arr.dtype}, not integers")
    out = (arr < low) | (arr >= high)
    bad = np.flatnonzero(out.reshape(len(arr), -1).any(axis=1))
    if bad.size:
        row = int(bad[0])
        raise DataFormatError(
            where,
            None,
            f"column {col!r} row {row}: value {arr[row].tolist()} is outside the space's "
            f"range [{low.tolist()}, {(high - 1).tolist()}] ({bad.size} rows out of range)",
        )


def _check_actions(arr: np.ndarray, space: gym.Space, where: str) -> None:
    _check_shape(ACTIONS, arr, space, where)
    if isinstance(space, gym.spaces.Discrete):
        low = np.asarray(space.start)
        _check_discrete(ACTIONS, arr, low, low + space.n, where)
    elif isinstance(space, gym.spaces.MultiDiscrete):
        low = np.asarray(space.start)
        _check_discrete(ACTIONS, arr, low, low + space.nvec, where)


def _check_rewards(rewards: np.ndarray, where: str) -> None:
    if rewards.ndim != 1:
        raise DataFormatError(
            where, None, f"column 'rewards' has shape {rewards.shape}, expected one value per row"
        )
    bad = np.flatnonzero(~np.isfinite(rewards))
    if bad.size:
        row = int(bad[0])
        raise DataFormatError(
            where,
            None,
            f"column 'rewards' row {row} is {rewards[row]} ({bad.size} non-finite rewards): "
            "offrl refuses NaN/Infinity rewards; fix or drop those records",
        )


def check_batch_spaces(
    batch: SampleBatch, observation_space: gym.Space, action_space: gym.Space, *, where: str
) -> None:
    """Raise DataFormatError when ``batch`` does not fit the spaces; ``where`` names the data."""
    for col in (OBS, NEW_OBS):
        if col in batch:
            _check_shape(col, batch[col], observation_space, where)
    if isinstance(observation_space, gym.spaces.Discrete) and OBS in batch:
        low = np.asarray(observation_space.start)
        _check_discrete(OBS, batch[OBS], low, low + observation_space.n, where)
    if ACTIONS in batch:
        _check_actions(batch[ACTIONS], action_space, where)
    if REWARDS in batch:
        _check_rewards(batch[REWARDS], where)
