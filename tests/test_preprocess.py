"""Observation preprocessing (RLlib's conventions) and env-action conversion."""

from __future__ import annotations

from collections import OrderedDict

import gymnasium as gym
import numpy as np
import pytest

from offrl.errors import ConfigError
from offrl.preprocess import (
    CheckObservations,
    ObservationMismatch,
    env_actions,
    flat_size,
    obs_problem,
    preprocessor,
)
from tests.envs import DictObsEnv, WrongShapeObsEnv

Box, Discrete, MultiDiscrete = gym.spaces.Box, gym.spaces.Discrete, gym.spaces.MultiDiscrete


def test_discrete_is_one_hot_float32_with_start() -> None:
    pre = preprocessor(Discrete(3, start=-1))
    out = pre(np.array([-1, 1, 0]), 3)
    assert out.dtype == np.float32 and pre.shape == (3,)
    assert out.tolist() == [[1, 0, 0], [0, 0, 1], [0, 1, 0]]


def test_multidiscrete_concatenates_one_hots() -> None:
    pre = preprocessor(MultiDiscrete([2, 3]))
    assert pre.shape == (5,)
    assert pre(np.array([[1, 0], [0, 2]]), 2).tolist() == [[0, 1, 1, 0, 0], [1, 0, 0, 0, 1]]


def test_box_flattened_and_image_kept_with_its_dtype() -> None:
    pre = preprocessor(Box(0, 1, (2, 3)))
    assert pre.shape == (6,) and pre(np.ones((4, 2, 3), np.float64), 4).dtype == np.float32
    img = preprocessor(Box(0, 255, (8, 9, 3), np.uint8))
    frames = np.arange(2 * 8 * 9 * 3).reshape(2, 8, 9, 3).astype(np.uint8)
    out = img(frames, 2)
    assert img.shape == (8, 9, 3) and out.dtype == np.uint8
    assert np.array_equal(out, frames)
    float_img = preprocessor(Box(0.0, 1.0, (8, 8, 1), np.float64))
    assert float_img.dtype == np.float32


def test_dict_keys_sorted_nested_tuple_flattened() -> None:
    # gymnasium sorts the keys of a plain dict: "a" (Box 2), "b" (Discrete 3), "c" (Tuple).
    space = gym.spaces.Dict(
        {
            "c": gym.spaces.Tuple((Discrete(2), Box(0, 1, (1,)))),
            "a": Box(0, 9, (2,)),
            "b": Discrete(3),
        }
    )
    pre = preprocessor(space)
    assert flat_size(space) == 2 + 3 + 3 == pre.shape[0]
    obs = {
        "a": np.array([[7.0, 8.0]]),
        "b": np.array([2]),
        "c": (np.array([1]), np.array([[0.5]])),
    }
    assert pre(obs, 1).tolist() == [[7, 8, 0, 0, 1, 0, 1, 0.5]]


def test_ordered_dict_keeps_insertion_order() -> None:
    space = gym.spaces.Dict(OrderedDict([("z", Discrete(2)), ("a", Box(0, 1, (1,)))]))
    out = preprocessor(space)({"z": np.array([1]), "a": np.array([[0.25]])}, 1)
    assert out.tolist() == [[0, 1, 0.25]]


def test_one_unbatched_observation() -> None:
    env = DictObsEnv()
    obs, _ = env.reset(seed=0)
    out = preprocessor(env.observation_space).one(obs)
    # sorted keys: cue (one-hot 2), extra (Discrete(3) t=0 one-hot, Box 0.25), pos
    cue = [0.0, 1.0] if env.cue else [1.0, 0.0]
    assert out.tolist() == [[*cue, 1, 0, 0, 0.25, 0.5, -0.5]]


def test_unsupported_space_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="Text.*not supported.*Box, Discrete"):
        preprocessor(gym.spaces.Text(5))


def test_obs_problem_names_what_does_not_fit() -> None:
    assert obs_problem(Box(0, 1, (4,)), np.zeros(3)) == "expected shape (4,), got (3,)"
    assert obs_problem(Discrete(2), 2) == "2 is outside Discrete(2)"
    assert obs_problem(Discrete(2), 0.5) == "expected one integer, got 0.5"
    space = gym.spaces.Dict({"a": Box(0, 1, (2,))})
    assert obs_problem(space, {"a": np.zeros(2)}) is None
    assert obs_problem(space, {"a": np.zeros(3)}) == "['a']: expected shape (2,), got (3,)"
    assert obs_problem(space, {"b": 1}) == "expected a dict with keys ['a'], got ['b']"


def test_check_observations_wrapper_names_the_mismatch() -> None:
    env = CheckObservations(WrongShapeObsEnv())
    expected = r"WrongShapeObsEnv.reset\(\) returned an observation"
    with pytest.raises(ObservationMismatch, match=expected):
        env.reset(seed=0)


def test_env_actions_unsquash_and_clip() -> None:
    space = Box(np.array([-2.0, 0.0], np.float32), np.array([2.0, 10.0], np.float32))
    a = np.array([[0.5, -1.0], [-3.0, 1.5]], np.float32)
    # normalized: low + (a + 1) (high - low) / 2, then clipped
    assert env_actions(space, a, normalized=True).tolist() == [[1.0, 0.0], [-2.0, 10.0]]
    assert env_actions(space, a, normalized=False).tolist() == [[0.5, 0.0], [-2.0, 1.5]]
    assert env_actions(space, a, normalized=True).dtype == np.float32


def test_env_actions_unbounded_box_not_normalized_and_discrete_unchanged() -> None:
    space = Box(-np.inf, np.inf, (1,), np.float32)
    assert env_actions(space, np.array([[5.0]]), normalized=True).tolist() == [[5.0]]
    acts = np.array([1, 0])
    assert env_actions(Discrete(2), acts, normalized=True) is acts
