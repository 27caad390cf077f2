"""check_batch_spaces: shape, discrete range and reward checks with exact messages."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from offrl.batch import SampleBatch
from offrl.errors import DataFormatError
from offrl.spaces import check_batch_spaces

CARTPOLE_OBS = gym.spaces.Box(-np.inf, np.inf, shape=(4,), dtype=np.float32)
TWO_ACTIONS = gym.spaces.Discrete(2)


def batch(obs_dim: int = 4, actions: list[object] | None = None, **extra: object) -> SampleBatch:
    n = 3
    return SampleBatch(
        obs=np.zeros((n, obs_dim), np.float32),
        new_obs=np.zeros((n, obs_dim), np.float32),
        actions=np.asarray(actions if actions is not None else [0, 1, 1]),
        rewards=np.ones(n, np.float32),
        **extra,
    )


def test_matching_batch_passes() -> None:
    check_batch_spaces(batch(), CARTPOLE_OBS, TWO_ACTIONS, where="d.json")


def test_obs_shape_mismatch_names_column_expected_and_found() -> None:
    with pytest.raises(DataFormatError) as e:
        check_batch_spaces(batch(obs_dim=3), CARTPOLE_OBS, TWO_ACTIONS, where="d.json")
    msg = str(e.value)
    assert msg.startswith("d.json: column 'obs' has shape (3, 3)")
    assert "expects (None, 4)" in msg


def test_flattened_box_obs_accepted_and_wrong_size_refused() -> None:
    space = gym.spaces.Box(0, 1, shape=(2, 2), dtype=np.float32)
    check_batch_spaces(batch(obs_dim=4), space, TWO_ACTIONS, where="d")
    with pytest.raises(DataFormatError, match=r"expects \(None, 2, 2\) or \(None, 4\)"):
        check_batch_spaces(batch(obs_dim=5), space, TWO_ACTIONS, where="d")


def test_out_of_range_discrete_action_names_value_and_row() -> None:
    with pytest.raises(DataFormatError) as e:
        check_batch_spaces(batch(actions=[0, 1, 2]), CARTPOLE_OBS, TWO_ACTIONS, where="d.json")
    assert "column 'actions' row 2: value 2 is outside the space's range [0, 1]" in str(e.value)


def test_negative_action_and_discrete_start() -> None:
    with pytest.raises(DataFormatError, match="row 0: value -1"):
        check_batch_spaces(batch(actions=[-1, 0, 0]), CARTPOLE_OBS, TWO_ACTIONS, where="d")
    shifted = gym.spaces.Discrete(2, start=1)
    check_batch_spaces(batch(actions=[1, 2, 1]), CARTPOLE_OBS, shifted, where="d")
    with pytest.raises(
        DataFormatError, match=r"row 2: value 0 is outside the space.s range \[1, 2\]"
    ):
        check_batch_spaces(batch(actions=[1, 2, 0]), CARTPOLE_OBS, shifted, where="d")


def test_action_shape_mismatch_for_discrete() -> None:
    with pytest.raises(DataFormatError, match=r"column 'actions' has shape \(3, 2\)"):
        check_batch_spaces(
            batch(actions=[[0, 1], [1, 0], [0, 0]]), CARTPOLE_OBS, TWO_ACTIONS, where="d"
        )


def test_non_integer_float_action_refused_but_integral_floats_pass() -> None:
    check_batch_spaces(batch(actions=[0.0, 1.0, 1.0]), CARTPOLE_OBS, TWO_ACTIONS, where="d")
    with pytest.raises(DataFormatError, match="row 1: 0.5 is not an integer"):
        check_batch_spaces(batch(actions=[0.0, 0.5, 1.0]), CARTPOLE_OBS, TWO_ACTIONS, where="d")


def test_box_action_shape() -> None:
    space = gym.spaces.Box(-1, 1, shape=(2,), dtype=np.float32)
    check_batch_spaces(batch(actions=[[0, 0]] * 3), CARTPOLE_OBS, space, where="d")
    with pytest.raises(DataFormatError, match=r"'actions' has shape \(3,\)"):
        check_batch_spaces(batch(actions=[0.0, 0.0, 0.0]), CARTPOLE_OBS, space, where="d")


def test_multidiscrete_range() -> None:
    space = gym.spaces.MultiDiscrete([2, 3])
    check_batch_spaces(batch(actions=[[1, 2]] * 3), CARTPOLE_OBS, space, where="d")
    with pytest.raises(DataFormatError, match=r"row 1: value \[1, 3\]"):
        check_batch_spaces(batch(actions=[[1, 2], [1, 3], [0, 0]]), CARTPOLE_OBS, space, where="d")


def test_discrete_observation_range() -> None:
    obs_space = gym.spaces.Discrete(16)
    b = SampleBatch(
        obs=np.array([0.0, 15.0, 16.0], np.float32),
        actions=np.array([0, 0, 0]),
        rewards=np.zeros(3, np.float32),
    )
    with pytest.raises(DataFormatError, match=r"column 'obs' row 2: value 16"):
        check_batch_spaces(b, obs_space, TWO_ACTIONS, where="d")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_rewards_refused(bad: float) -> None:
    b = batch()
    b["rewards"] = np.array([1.0, bad, 0.0], np.float32)
    with pytest.raises(DataFormatError) as e:
        check_batch_spaces(b, CARTPOLE_OBS, TWO_ACTIONS, where="d.json")
    assert "column 'rewards' row 1" in str(e.value)
    assert "refuses NaN/Infinity rewards" in str(e.value)


def test_dict_observations_checked_flattened() -> None:
    space = gym.spaces.Dict({"a": gym.spaces.Discrete(2), "b": gym.spaces.Box(0, 1, (3,))})
    check_batch_spaces(batch(obs_dim=5), space, TWO_ACTIONS, where="d")  # 2 one-hot + 3
    with pytest.raises(DataFormatError, match=r"column 'obs' has shape \(3, 7\).*\(None, 5\)"):
        check_batch_spaces(batch(obs_dim=7), space, TWO_ACTIONS, where="d")


def test_discrete_observations_one_hot_as_rllib_writes_them() -> None:
    space = gym.spaces.Discrete(4)
    one_hot = np.eye(4, dtype=np.float32)[[0, 3, 1]]
    b = SampleBatch(obs=one_hot, actions=np.array([0, 1, 0]), rewards=np.zeros(3, np.float32))
    out = check_batch_spaces(b, space, TWO_ACTIONS, where="d")
    assert out["obs"] is one_hot
    b["obs"] = np.array([[1, 0, 0, 0], [0, 1, 1, 0], [0, 0, 0, 1]], np.float32)
    with pytest.raises(DataFormatError, match=r"row 1: \[0.0, 1.0, 1.0, 0.0\] is not a one-hot"):
        check_batch_spaces(b, space, TWO_ACTIONS, where="d")


def test_integer_discrete_observations_become_one_hot() -> None:
    space = gym.spaces.Discrete(3, start=1)
    b = SampleBatch(
        obs=np.array([1, 3, 2]), actions=np.array([0, 1, 0]), rewards=np.zeros(3, np.float32)
    )
    out = check_batch_spaces(b, space, TWO_ACTIONS, where="d")
    assert out["obs"].dtype == np.float32
    assert out["obs"].tolist() == [[1, 0, 0], [0, 0, 1], [0, 1, 0]]


def test_multidiscrete_observations_integers_or_one_hot() -> None:
    space = gym.spaces.MultiDiscrete([3, 2])
    ints = SampleBatch(
        obs=np.array([[2, 0], [0, 1]]), actions=np.array([0, 1]), rewards=np.zeros(2, np.float32)
    )
    out = check_batch_spaces(ints, space, TWO_ACTIONS, where="d")
    assert out["obs"].tolist() == [[0, 0, 1, 1, 0], [1, 0, 0, 0, 1]]
    ints["obs"] = np.array([[3, 0], [0, 1]])
    with pytest.raises(DataFormatError, match=r"row 0: value \[3, 0\] is outside"):
        check_batch_spaces(ints, space, TWO_ACTIONS, where="d")


def test_image_observations_keep_shape_or_flattened() -> None:
    space = gym.spaces.Box(0, 255, (8, 10, 3), np.uint8)
    frames = np.zeros((2, 8, 10, 3), np.uint8)
    b = SampleBatch(obs=frames, actions=np.array([0, 1]), rewards=np.zeros(2, np.float32))
    assert check_batch_spaces(b, space, TWO_ACTIONS, where="d")["obs"] is frames
    b["obs"] = frames.reshape(2, -1)
    check_batch_spaces(b, space, TWO_ACTIONS, where="d")
    b["obs"] = np.zeros((2, 10, 8, 3), np.uint8)
    with pytest.raises(DataFormatError, match=r"\(2, 10, 8, 3\).*expects \(None, 8, 10, 3\)"):
        check_batch_spaces(b, space, TWO_ACTIONS, where="f.json:3")


def test_box_actions_shape_and_finite_values_not_bounds() -> None:
    space = gym.spaces.Box(-2.0, 2.0, (1,), np.float32)
    b = batch(actions=[[0.5], [-3.9], [4.2]])  # unclipped Gaussian samples, as RLlib writes
    check_batch_spaces(b, CARTPOLE_OBS, space, where="d")
    with pytest.raises(DataFormatError, match=r"column 'actions' row 1 is \[nan\]"):
        check_batch_spaces(batch(actions=[[0.5], [np.nan], [0.0]]), CARTPOLE_OBS, space, where="d")
    with pytest.raises(DataFormatError, match=r"has shape \(3, 2\).*expects \(None, 1\)"):
        check_batch_spaces(batch(actions=[[0.5, 1]] * 3), CARTPOLE_OBS, space, where="d")
