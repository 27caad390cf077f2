"""Fitted Q evaluation: transitions of whole episodes, and fits to known Q values."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from offrl.algos.fastmlp import NumpyMLP, TorchMLP
from offrl.errors import ConfigError
from offrl.estimators.base import Episode
from offrl.estimators.fqe import (
    FittedQEvaluation,
    FQEConfig,
    episodes_to_transitions,
    value_bounds,
)

torch.set_num_threads(1)


def episode(n: int, *, terminated: bool, next_obs: bool = True) -> Episode:
    obs = np.arange(n, dtype=np.float32)[:, None] + 10 * terminated
    probs = np.tile([0.3, 0.7], (n, 1))
    return Episode(
        rewards=np.ones(n),
        actions=np.zeros(n, dtype=np.int64),
        target_probs=probs,
        behaviour_prob=np.full(n, 0.5),
        terminated=terminated,
        obs=obs,
        last_next_obs=np.array([99.0], dtype=np.float32) if next_obs else None,
        last_next_probs=np.array([0.9, 0.1]) if next_obs else None,
    )


def test_transitions_bootstrap_only_inside_and_after_truncation() -> None:
    tr = episodes_to_transitions(
        [episode(3, terminated=True), episode(2, terminated=False), episode(1, terminated=False,
                                                                          next_obs=False)]
    )  # fmt: skip
    # terminated episode (obs 10,11,12): next obs 11, 12, <none>; last step does not bootstrap
    assert tr.next_obs[:3, 0].tolist() == [11, 12, 0]
    assert tr.bootstrap.tolist() == [1, 1, 0, 1, 1, 0]
    # truncated episode (obs 0,1) bootstraps from its recorded new_obs 99 with its probs
    assert tr.next_obs[3:5, 0].tolist() == [1, 99]
    assert tr.next_probs[4].tolist() == [0.9, 0.1]
    # truncated without new_obs cannot bootstrap: treated as terminal
    assert tr.bootstrap[5] == 0
    assert len(tr.rewards) == 6 and tr.obs.shape == (6, 1)


def fit(episodes: list[Episode], gamma: float, steps: int, seed: int = 0) -> FittedQEvaluation:
    model = FittedQEvaluation(1, 2, gamma, FQEConfig(lr=3e-3, batch_size=64), seed)
    model.set_data(episodes_to_transitions(episodes))
    model.train(steps)
    return model


def bandit_episode(action: int) -> Episode:
    return Episode(
        rewards=np.array([float(action)]),
        actions=np.array([action]),
        target_probs=np.array([[0.5, 0.5]]),
        behaviour_prob=np.array([0.5]),
        terminated=True,
        obs=np.zeros((1, 1), dtype=np.float32),
    )


def test_one_step_bandit_q_values() -> None:
    # Terminal after one step, reward = action: Q(s, 0) = 0, Q(s, 1) = 1 exactly.
    model = fit([bandit_episode(0), bandit_episode(1)] * 20, gamma=0.9, steps=200)
    q = model.q_values(np.zeros((1, 1), dtype=np.float32))[0]
    assert q == pytest.approx([0.0, 1.0], abs=0.05)


def test_two_step_chain_bootstraps_with_target_probs() -> None:
    # s=0 -> s=1 -> end, reward 1 per step, action-independent. At s=1: Q = 1.
    # At s=0: Q = 1 + 0.5 * sum_a pi(a|s1) Q(s1, a) = 1 + 0.5 * 1 = 1.5 for both actions.
    eps = []
    for a in (0, 1):
        eps.append(Episode(
            rewards=np.ones(2), actions=np.array([a, 1 - a]),
            target_probs=np.array([[0.2, 0.8], [0.6, 0.4]]), behaviour_prob=np.full(2, 0.5),
            terminated=True, obs=np.array([[0.0], [1.0]], dtype=np.float32),
        ))  # fmt: skip
    model = fit(eps * 20, gamma=0.5, steps=800)
    q = model.q_values(np.array([[0.0], [1.0]], dtype=np.float32))
    assert q[0] == pytest.approx([1.5, 1.5], abs=0.05)
    assert q[1] == pytest.approx([1.0, 1.0], abs=0.05)


def test_same_seed_same_model() -> None:
    eps = [bandit_episode(0), bandit_episode(1)]
    a = fit(eps, gamma=0.9, steps=20, seed=4).q_values(np.ones((2, 1), dtype=np.float32))
    b = fit(eps, gamma=0.9, steps=20, seed=4).q_values(np.ones((2, 1), dtype=np.float32))
    c = fit(eps, gamma=0.9, steps=20, seed=5).q_values(np.ones((2, 1), dtype=np.float32))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_train_without_data_is_a_no_op() -> None:
    model = FittedQEvaluation(1, 2, 0.9, FQEConfig(), 0)
    assert model.train(5) == 0.0 and model.steps == 0


def test_config_errors_name_the_key() -> None:
    assert FQEConfig.from_dict({"n_iters": 5}).n_iters == 5
    with pytest.raises(ConfigError, match="unknown keys \\['n_iter'\\]"):
        FQEConfig.from_dict({"n_iter": 5})
    with pytest.raises(ConfigError, match="tau = 0"):
        FQEConfig.from_dict({"tau": 0})


def test_value_bounds_by_hand() -> None:
    # rewards in [0.5, 1], gamma .95: [min(0, .5), max(0, 1)] / 0.05 = [0, 20]
    assert value_bounds(np.array([1.0, 0.5]), 0.95) == pytest.approx((0.0, 20.0))
    # rewards in [-1, 2], gamma .5: [-1, 2] / 0.5 = [-2, 4]
    assert value_bounds(np.array([-1.0, 2.0]), 0.5) == pytest.approx((-2.0, 4.0))
    assert value_bounds(np.array([1.0]), 1.0) is None


def test_targets_and_outputs_are_clamped_to_the_value_bounds() -> None:
    truncated = Episode(
        rewards=np.array([1.0]), actions=np.array([0]), target_probs=np.array([[0.5, 0.5]]),
        behaviour_prob=np.array([0.5]), terminated=False, obs=np.zeros((1, 1), np.float32),
        last_next_obs=np.zeros(1, np.float32), last_next_probs=np.array([0.5, 0.5]),
    )  # fmt: skip
    model = FittedQEvaluation(1, 2, 0.5, FQEConfig(batch_size=1), 0)
    model.set_data(episodes_to_transitions([truncated]))  # rewards in [0, 1] -> bounds [0, 2]
    with torch.no_grad():  # a runaway model: Q = 100 everywhere
        for net in (model.q, model.q_target):
            net[-1].weight.zero_()
            net[-1].bias.fill_(100.0)
    assert model.q_values(np.zeros((3, 1), dtype=np.float32)).tolist() == [[2.0, 2.0]] * 3
    # Unclamped target 1 + 0.5 * 100 = 51 -> loss (100 - 51)^2 = 2401; clamped to 2 -> 98^2
    assert model.train(1) == pytest.approx(98.0**2)


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_numpy_fit_equals_the_autograd_fit(activation: str) -> None:
    episodes = [episode(6, terminated=True), episode(5, terminated=False)]
    models = []
    for fast in (True, False):
        model = FittedQEvaluation(1, 2, 0.9, FQEConfig(batch_size=4, activation=activation), 3)
        if not fast:  # force autograd for both networks
            model.online, model.target = TorchMLP(model.q), TorchMLP(model.q_target)
        else:
            assert isinstance(model.online, NumpyMLP) and isinstance(model.target, NumpyMLP)
        model.set_data(episodes_to_transitions(episodes))
        models.append((model, model.train(20)))
    (fast_model, fast_loss), (slow_model, slow_loss) = models
    assert fast_loss == pytest.approx(slow_loss, rel=1e-4)
    obs = np.linspace(0, 12, 7, dtype=np.float32)[:, None]
    np.testing.assert_allclose(
        fast_model.q_values(obs), slow_model.q_values(obs), rtol=1e-4, atol=1e-5
    )


def test_unsupported_activation_fits_with_autograd() -> None:
    model = FittedQEvaluation(1, 2, 0.9, FQEConfig(activation="elu", batch_size=4), 0)
    assert type(model.online) is TorchMLP
    model.set_data(episodes_to_transitions([episode(4, terminated=True)]))
    assert model.train(5) > 0
