"""Off-policy estimation with action spaces other than Discrete: is/wis through the
policy's log-probability of the logged action; dm/dr skipped with a warning. And a
Discrete action space with a start: logged actions are its values."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest

from offrl import batch as sb
from offrl.batch import SampleBatch
from offrl.errors import OffrlRuntimeError
from offrl.estimators import estimators_for, feed_estimators, skipped_estimators

BOX = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
OBS = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)


def one_episode() -> SampleBatch:
    """Two steps, rewards 1 and 1, behaviour log-density -1 at each (a Box action)."""
    return SampleBatch(
        {
            sb.OBS: np.zeros((2, 3), np.float32),
            sb.ACTIONS: np.array([[0.5, -0.5], [0.1, 0.2]], np.float32),
            sb.REWARDS: np.array([1.0, 1.0], np.float32),
            sb.DONES: np.array([False, True]),
            sb.TERMINATEDS: np.array([False, True]),
            sb.EPS_ID: np.array([7, 7]),
            sb.T: np.array([0, 1]),
            sb.ACTION_LOGP: np.array([-1.0, -1.0], np.float32),
        }
    )


def test_is_on_box_actions_uses_the_target_density_of_the_logged_action() -> None:
    ests = estimators_for(["is", "dm"], gamma=0.5, observation_space=OBS, action_space=BOX, seed=0)
    assert list(ests) == ["is"]  # dm needs Discrete actions
    calls: list[tuple[np.ndarray, np.ndarray]] = []

    def action_logp(obs: np.ndarray, actions: np.ndarray) -> np.ndarray:
        calls.append((obs, actions))
        return np.full(len(obs), -1.0 + math.log(2.0))  # twice the behaviour density

    def action_probs(obs: np.ndarray) -> np.ndarray:
        raise AssertionError("not used for Box actions")

    batch = one_episode()
    assert feed_estimators(ests, batch, action_probs, action_logp) == []
    assert np.array_equal(calls[0][1], batch[sb.ACTIONS])
    # rho_0 = 2, rho_01 = 4: V = 1 * 2 + 0.5 * 1 * 4
    assert ests["is"].estimate()["v_target"] == pytest.approx(4.0)


def test_dm_dr_skipped_with_a_warning_only_for_non_discrete_actions() -> None:
    (warning,) = skipped_estimators(["is", "dr", "simulation"], BOX)
    assert "'dr' skipped: it needs a Discrete action space" in warning
    assert "Box(-1.0, 1.0, (2,), float32)" in warning
    assert skipped_estimators(["dm", "dr"], gym.spaces.Discrete(3)) == []
    multi = gym.spaces.MultiDiscrete([2, 2])
    assert len(skipped_estimators(["dm", "dr"], multi)) == 2


START_SPACE = gym.spaces.Discrete(3, start=-1)  # actions -1, 0, 1


def discrete_episode(actions: list[int]) -> SampleBatch:
    """Two steps, rewards 1 and 1, behaviour probability 1/2 at each, logged ``actions``."""
    return SampleBatch(
        {
            sb.OBS: np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]], np.float32),
            sb.NEW_OBS: np.array([[1.0, 0.0, 0.0], [2.0, 0.0, 0.0]], np.float32),
            sb.ACTIONS: np.array(actions, np.int64),
            sb.REWARDS: np.array([1.0, 1.0], np.float32),
            sb.DONES: np.array([False, True]),
            sb.TERMINATEDS: np.array([False, True]),
            sb.EPS_ID: np.array([3, 3]),
            sb.T: np.array([0, 1]),
            sb.ACTION_PROB: np.array([0.5, 0.5], np.float32),
        }
    )


def target_probs(obs: np.ndarray) -> np.ndarray:
    """Columns are the actions -1, 0, 1."""
    return np.tile([0.5, 0.25, 0.25], (len(obs), 1))


def test_is_with_a_start_reads_the_target_probability_of_action_minus_start() -> None:
    ests = estimators_for(
        ["is", "wis", "dm", "dr"],
        gamma=0.5,
        observation_space=OBS,
        action_space=START_SPACE,
        seed=0,
        fqe_config={"n_iters": 5},
    )
    assert feed_estimators(ests, discrete_episode([-1, 1]), target_probs) == []
    # pi(-1) = 1/2, pi(1) = 1/4: rho_0 = 1, rho_01 = 1/2; V = 1 * 1 + 0.5 * 1 * 1/2
    assert ests["is"].estimate()["v_target"] == pytest.approx(1.25)
    for name in ("wis", "dm", "dr"):
        assert np.isfinite(ests[name].estimate()["v_target"]), name


def test_model_based_estimates_with_a_start_equal_the_start_free_ones() -> None:
    def run(space: gym.Space, actions: list[int]) -> dict[str, float]:
        ests = estimators_for(
            ["dm", "dr"],
            gamma=0.5,
            observation_space=OBS,
            action_space=space,
            seed=0,
            fqe_config={"n_iters": 5},
        )
        feed_estimators(ests, discrete_episode(actions), target_probs)
        return {name: est.estimate()["v_target"] for name, est in ests.items()}

    assert run(START_SPACE, [-1, 1]) == run(gym.spaces.Discrete(3), [0, 2])


def test_logged_action_outside_a_start_space_is_named() -> None:
    ests = estimators_for(
        ["is"], gamma=0.5, observation_space=OBS, action_space=START_SPACE, seed=0
    )
    with pytest.raises(OffrlRuntimeError, match=r"range -1..2 but the policy's actions are -1..1"):
        feed_estimators(ests, discrete_episode([-1, 2]), target_probs)
