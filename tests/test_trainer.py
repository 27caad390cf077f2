"""The training loop's pieces: estimates per iteration, stop keys."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from shared_data import RLLIB_260_DQN_CARTPOLE

from offrl.config import CommonConfig
from offrl.estimators import estimators_for, feed_estimators
from offrl.io.input import make_input_reader
from offrl.trainer import _estimates


def _uniform(obs: np.ndarray) -> np.ndarray:
    return np.full((len(obs), 2), 0.5)


def test_dm_and_dr_both_estimate_in_the_same_iteration() -> None:
    """RLlib's DQN files, one iteration's batches: dr reported num_episodes 0 because dm's
    reset (right after dm's estimate) emptied the episodes dm and dr share."""
    import gymnasium as gym

    env = gym.make("CartPole-v1")
    estimators = estimators_for(
        ["is", "dm", "dr"],
        gamma=0.99,
        observation_space=env.observation_space,
        action_space=env.action_space,
        seed=0,
        fqe_config={"n_iters": 2},
    )
    reader = make_input_reader(
        str(RLLIB_260_DQN_CARTPOLE), config=CommonConfig(), seed=0, worker_index=0, num_workers=1
    )
    for _ in range(2):
        for batch in reader.iter_epoch():
            for warning in feed_estimators(estimators, batch, _uniform):
                assert "every action_prob is 1.0" in warning  # no estimator is dropped
        out = _estimates(SimpleNamespace(estimators=estimators))
        n = out["off_policy_estimation/is/num_episodes"]
        assert n > 0
        assert out["off_policy_estimation/dm/num_episodes"] == n
        assert out["off_policy_estimation/dr/num_episodes"] == n
        assert "off_policy_estimation/dr/v_target" in out


@pytest.mark.parametrize("order", [["dr", "dm"], ["dm", "dr"]])
def test_estimates_then_reset_in_either_order(order: list[str]) -> None:
    import gymnasium as gym

    env = gym.make("CartPole-v1")
    estimators = estimators_for(
        order,
        gamma=0.9,
        observation_space=env.observation_space,
        action_space=env.action_space,
        seed=0,
        fqe_config={"n_iters": 2},
    )
    reader = make_input_reader(
        str(RLLIB_260_DQN_CARTPOLE), config=CommonConfig(), seed=0, worker_index=0, num_workers=1
    )
    for batch in reader.iter_epoch():
        feed_estimators(estimators, batch, _uniform)
    out = _estimates(SimpleNamespace(estimators=estimators))
    assert out["off_policy_estimation/dm/num_episodes"] > 0
    assert out["off_policy_estimation/dr/num_episodes"] > 0
    # after the iteration both start empty
    again = _estimates(SimpleNamespace(estimators=estimators))
    assert again["off_policy_estimation/dr/num_episodes"] == 0
