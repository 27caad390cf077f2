"""Check decoded batches against the environment's spaces before training (FORMAT.md).

Policy: data that does not fit the spaces is refused with a DataFormatError naming
the column, the expected and found shape (or the bad value and its row); non-finite
rewards and Box actions (NaN, +-Infinity) are refused too, because one of them turns
every learned value into NaN.

Observations are expected as offrl and RLlib record them, *preprocessed* (see
``offrl/preprocess.py``): Box values (an image keeps its (H, W, C) shape; any
multi-dimensional Box may also be flattened), Discrete and MultiDiscrete one-hot,
Dict and Tuple flattened. Discrete and MultiDiscrete observations stored as their
integers are accepted too and turned into one-hots (:func:`check_batch_spaces`
returns the batch to train on). Box actions are not checked against the bounds: a
Gaussian policy's recorded sample may fall outside them (the env got it clipped).
"""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np

from offrl.batch import ACTIONS, NEW_OBS, OBS, REWARDS, SampleBatch
from offrl.errors import DataFormatError
from offrl.preprocess import Preprocessor, preprocessor


def _shape_text(shapes: list[tuple[int, ...]]) -> str:
    return " or ".join(str((None, *s)) for s in shapes)


def _shapes(shape: tuple[int, ...]) -> list[tuple[int, ...]]:
    """A value's row shapes: its own, and flattened (the learners flatten a Box)."""
    flat = (math.prod(shape),)
    return [shape] if flat == shape else [shape, flat]


def _shape_problem(col: str, arr: np.ndarray, space: gym.Space, expected: list) -> str | None:
    found = tuple(arr.shape[1:])
    if found in expected:
        return None
    return (
        f"column {col!r} has shape {(len(arr), *found)} but the environment's {space} "
        f"expects {_shape_text(expected)} (rows first; one row {expected[0]}, found "
        f"{found}): was the data recorded in a different environment?"
    )


def _integer_problem(
    col: str, arr: np.ndarray, low: np.ndarray, high: np.ndarray, space: gym.Space
) -> str | None:
    """Values must be integers with ``low <= value < high`` (elementwise)."""
    if arr.dtype.kind == "f":
        bad = np.flatnonzero((arr != np.round(arr)).reshape(len(arr), -1).any(axis=1))
        if bad.size:
            row = int(bad[0])
            return f"column {col!r} row {row}: {arr[row].tolist()} is not an integer"
    elif arr.dtype.kind not in "iub":
        return f"column {col!r} has dtype {arr.dtype}, not integers"
    out = (arr < low) | (arr >= high)
    bad = np.flatnonzero(out.reshape(len(arr), -1).any(axis=1))
    if bad.size:
        row = int(bad[0])
        return (
            f"column {col!r} row {row}: value {arr[row].tolist()} is outside the space's "
            f"range [{low.tolist()}, {(high - 1).tolist()}] of {space} "
            f"({bad.size} rows out of range)"
        )
    return None


def _finite_problem(col: str, arr: np.ndarray) -> str | None:
    if arr.dtype.kind != "f":
        return None
    bad = np.flatnonzero(~np.isfinite(arr.reshape(len(arr), -1)).all(axis=1))
    if not bad.size:
        return None
    row = int(bad[0])
    return f"column {col!r} row {row} is {arr[row].tolist()} ({bad.size} rows not finite)"


def _integer_space(space: gym.Space) -> tuple[tuple[int, ...], np.ndarray, np.ndarray] | None:
    """(shape, low, high) of a Discrete/MultiDiscrete value stored as integers, else None."""
    if isinstance(space, gym.spaces.Discrete):
        low = np.asarray(space.start)
        return (), low, low + space.n
    if isinstance(space, gym.spaces.MultiDiscrete):
        return tuple(space.nvec.shape), space.start, space.start + space.nvec
    return None


def _one_hot_problem(col: str, arr: np.ndarray, space: gym.Space) -> str | None:
    """Rows of a one-hot Discrete observation hold one 1 and zeros (MultiDiscrete: per part)."""
    if not isinstance(space, gym.spaces.Discrete):
        return None
    ok = ((arr == 0) | (arr == 1)).all(axis=1) & (arr.sum(axis=1) == 1)
    bad = np.flatnonzero(~ok)
    if not bad.size:
        return None
    row = int(bad[0])
    return f"column {col!r} row {row}: {arr[row].tolist()} is not a one-hot row of {space}"


def _obs_problem(col: str, arr: np.ndarray, pre: Preprocessor) -> str | None:
    """None when ``arr`` (rows of ``col``) fits the observation space, else why not."""
    space = pre.space
    ints = _integer_space(space)
    if ints is not None and tuple(arr.shape[1:]) == ints[0]:
        return _integer_problem(col, arr, ints[1], ints[2], space)
    shape = tuple(space.shape) if isinstance(space, gym.spaces.Box) else pre.shape
    expected = _shapes(shape)
    if ints is not None:
        expected.append(ints[0])
    problem = _shape_problem(col, arr, space, expected)
    if problem is None and len(arr):
        problem = _one_hot_problem(col, arr.reshape(len(arr), -1), space)
    return problem


def _action_problem(arr: np.ndarray, space: gym.Space) -> str | None:
    ints = _integer_space(space)
    if ints is not None:
        shape, low, high = ints
        return _shape_problem(ACTIONS, arr, space, [shape]) or _integer_problem(
            ACTIONS, arr, low, high, space
        )
    if isinstance(space, gym.spaces.Box):
        problem = _shape_problem(ACTIONS, arr, space, _shapes(tuple(space.shape)))
        return problem or _finite_problem(ACTIONS, arr)
    return None


def _rewards_problem(rewards: np.ndarray) -> str | None:
    if rewards.ndim != 1:
        return f"column 'rewards' has shape {rewards.shape}, expected one value per row"
    bad = np.flatnonzero(~np.isfinite(rewards))
    if bad.size:
        row = int(bad[0])
        return (
            f"column 'rewards' row {row} is {rewards[row]} ({bad.size} non-finite rewards): "
            "offrl refuses NaN/Infinity rewards; fix or drop those records"
        )
    return None


def space_problems(
    batch: SampleBatch,
    observation_space: gym.Space,
    action_space: gym.Space,
    *,
    rewards: bool = True,
) -> list[str]:
    """Every way ``batch`` does not fit the spaces (at most one per column; ``rewards``:
    check that column too)."""
    pre = preprocessor(observation_space)
    problems = [_obs_problem(col, batch[col], pre) for col in (OBS, NEW_OBS) if col in batch]
    if ACTIONS in batch:
        problems.append(_action_problem(batch[ACTIONS], action_space))
    if rewards and REWARDS in batch:
        problems.append(_rewards_problem(batch[REWARDS]))
    return [p for p in problems if p is not None]


def _as_preprocessed(arr: np.ndarray, pre: Preprocessor) -> np.ndarray:
    """Integer Discrete/MultiDiscrete observations -> one-hot rows; anything else as is."""
    ints = _integer_space(pre.space)
    if ints is None or tuple(arr.shape[1:]) != ints[0]:
        return arr
    return pre(arr.astype(np.int64), len(arr))


def check_batch_spaces(
    batch: SampleBatch, observation_space: gym.Space, action_space: gym.Space, *, where: str
) -> SampleBatch:
    """``batch`` ready to train on (integer observations one-hot), or a DataFormatError
    naming ``where`` (the file and line) when it does not fit the spaces."""
    problems = space_problems(batch, observation_space, action_space)
    if problems:
        raise DataFormatError(where, None, problems[0])
    if _integer_space(observation_space) is None:
        return batch
    pre = preprocessor(observation_space)
    cols = dict(batch.columns)
    for col in (OBS, NEW_OBS):
        if col in cols:
            cols[col] = _as_preprocessed(cols[col], pre)
    return SampleBatch(cols)
