"""Off-policy estimation with action spaces other than Discrete: is/wis through the
policy's log-probability of the logged action; dm/dr skipped with a warning."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest

from offrl import batch as sb
from offrl.batch import SampleBatch
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
