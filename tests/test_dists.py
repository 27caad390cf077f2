"""Action distributions: numpy and torch halves agree with each other and with torch."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch.distributions import Categorical as TorchCategorical
from torch.distributions import Normal, kl_divergence

from offrl.algos.dists import Categorical, DiagGaussian, MultiCategorical, action_dist
from offrl.errors import ConfigError

RNG = np.random.default_rng(0)


def test_gaussian_logp_entropy_kl_against_torch() -> None:
    dist = DiagGaussian((2,))
    inputs = np.array([[0.5, -1.0, 0.1, -0.3], [0.0, 2.0, -0.5, 0.2]], np.float32)
    actions = np.array([[1.0, -1.5], [0.3, 2.5]], np.float32)
    ref = Normal(torch.tensor(inputs[:, :2]), torch.tensor(np.exp(inputs[:, 2:])))
    expected = ref.log_prob(torch.tensor(actions)).sum(-1).numpy()
    assert np.allclose(dist.logp_np(inputs, actions), expected, atol=1e-6)
    t_in = torch.tensor(inputs)
    assert np.allclose(dist.logp(t_in, torch.tensor(actions)).numpy(), expected, atol=1e-6)
    assert np.allclose(dist.entropy(t_in).numpy(), ref.entropy().sum(-1).numpy(), atol=1e-6)
    other = torch.tensor([[0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 0.5, -0.5]])
    ref_other = Normal(other[:, :2], other[:, 2:].exp())
    assert np.allclose(
        dist.kl(t_in, other).numpy(), kl_divergence(ref, ref_other).sum(-1).numpy(), atol=1e-5
    )


def test_gaussian_hand_computed_logp() -> None:
    # N(1; 0, 1) in one dimension: -1/2 - log(2 pi)/2
    dist = DiagGaussian((1,))
    logp = dist.logp_np(np.array([[0.0, 0.0]], np.float32), np.array([[1.0]]))
    assert logp[0] == pytest.approx(-0.5 - 0.5 * math.log(2 * math.pi), rel=1e-6)


def test_gaussian_sample_records_logp_of_the_sample_and_greedy_is_the_mean() -> None:
    dist = DiagGaussian((3,))
    inputs = np.tile(np.array([[1.0, -2.0, 0.5, 0.0, -1.0, 0.3]], np.float32), (5000, 1))
    actions, logp = dist.sample(inputs, np.random.default_rng(1), explore=True)
    assert actions.shape == (5000, 3) and actions.dtype == np.float32
    assert np.allclose(logp, dist.logp_np(inputs, actions))
    assert np.allclose(actions.mean(0), [1.0, -2.0, 0.5], atol=0.05)
    assert np.allclose(actions.std(0), np.exp([0.0, -1.0, 0.3]), rtol=0.05)
    greedy, _ = dist.sample(inputs[:2], RNG, explore=False)
    assert greedy.tolist() == [[1.0, -2.0, 0.5]] * 2


def test_categorical_against_torch() -> None:
    dist = Categorical(3)
    logits = np.array([[0.0, 1.0, -1.0], [2.0, 0.0, 0.0]], np.float32)
    actions = np.array([1, 2])
    ref = TorchCategorical(logits=torch.tensor(logits))
    expected = ref.log_prob(torch.tensor(actions)).numpy()
    assert np.allclose(dist.logp_np(logits, actions), expected, atol=1e-6)
    t = torch.tensor(logits)
    assert np.allclose(dist.logp(t, torch.tensor(actions)).numpy(), expected, atol=1e-6)
    assert np.allclose(dist.entropy(t).numpy(), ref.entropy().numpy(), atol=1e-6)
    greedy, _ = dist.sample(logits, RNG, explore=False)
    assert greedy.tolist() == [1, 0]


def test_multicategorical_sums_components() -> None:
    dist = MultiCategorical(np.array([2, 3]))
    inputs = np.array([[0.0, math.log(3.0), 0.0, 0.0, math.log(2.0)]], np.float32)
    # P(a0=1) = 3/4, P(a1=2) = 2/4
    logp = dist.logp_np(inputs, np.array([[1, 2]]))
    assert logp[0] == pytest.approx(math.log(0.75) + math.log(0.5), rel=1e-6)
    t = torch.tensor(inputs)
    assert dist.logp(t, torch.tensor([[1, 2]])).item() == pytest.approx(logp[0], rel=1e-6)
    h = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75)) - 2 * 0.25 * math.log(0.25)
    h -= 0.5 * math.log(0.5)
    assert dist.entropy(t).item() == pytest.approx(h, rel=1e-6)
    actions, lp = dist.sample(np.repeat(inputs, 4, 0), RNG, explore=True)
    assert actions.shape == (4, 2) and np.allclose(
        lp, dist.logp_np(np.repeat(inputs, 4, 0), actions)
    )
    assert dist.kl(t, t).item() == pytest.approx(0.0, abs=1e-7)


def test_action_dist_for_each_space_and_errors() -> None:
    assert isinstance(action_dist(gym.spaces.Discrete(4), "PG"), Categorical)
    assert isinstance(action_dist(gym.spaces.MultiDiscrete([2, 2]), "PG"), MultiCategorical)
    box = action_dist(gym.spaces.Box(-1, 1, (2, 2)), "PG")
    assert isinstance(box, DiagGaussian) and box.n_inputs == 8
    with pytest.raises(ConfigError, match="PG supports Discrete, MultiDiscrete and float Box"):
        action_dist(gym.spaces.MultiBinary(3), "PG")
