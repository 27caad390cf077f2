"""Action distributions: the numpy formulas (log-prob, entropy, KL and the loss gradient)
agree with torch.distributions, with autograd, and with hand-computed numbers."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch.distributions import Categorical as TorchCategorical
from torch.distributions import Normal, kl_divergence

from offrl.algos.dists import Categorical, DiagGaussian, MultiCategorical, action_dist
from offrl.errors import ConfigError, OffrlRuntimeError

RNG = np.random.default_rng(0)


def test_gaussian_logp_entropy_kl_against_torch() -> None:
    dist = DiagGaussian((2,))
    inputs = np.array([[0.5, -1.0, 0.1, -0.3], [0.0, 2.0, -0.5, 0.2]], np.float32)
    actions = np.array([[1.0, -1.5], [0.3, 2.5]], np.float32)
    ref = Normal(torch.tensor(inputs[:, :2]), torch.tensor(np.exp(inputs[:, 2:])))
    expected = ref.log_prob(torch.tensor(actions)).sum(-1).numpy()
    assert np.allclose(dist.logp_np(inputs, actions), expected, atol=1e-6)
    assert np.allclose(dist.entropy_np(inputs), ref.entropy().sum(-1).numpy(), atol=1e-6)
    other = np.array([[0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 0.5, -0.5]], np.float32)
    ref_other = Normal(torch.tensor(other[:, :2]), torch.tensor(np.exp(other[:, 2:])))
    assert np.allclose(
        dist.kl_np(inputs, other), kl_divergence(ref, ref_other).sum(-1).numpy(), atol=1e-5
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
    assert np.allclose(dist.entropy_np(logits), ref.entropy().numpy(), atol=1e-6)
    other = np.array([[1.0, 0.0, 0.5], [0.0, 0.0, 0.0]], np.float32)
    ref_other = TorchCategorical(logits=torch.tensor(other))
    assert np.allclose(dist.kl_np(logits, other), kl_divergence(ref, ref_other).numpy(), atol=1e-6)
    greedy, _ = dist.sample(logits, RNG, explore=False)
    assert greedy.tolist() == [1, 0]


def test_multicategorical_sums_components() -> None:
    dist = MultiCategorical(np.array([2, 3]))
    inputs = np.array([[0.0, math.log(3.0), 0.0, 0.0, math.log(2.0)]], np.float32)
    # P(a0=1) = 3/4, P(a1=2) = 2/4
    logp = dist.logp_np(inputs, np.array([[1, 2]]))
    assert logp[0] == pytest.approx(math.log(0.75) + math.log(0.5), rel=1e-6)
    h = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75)) - 2 * 0.25 * math.log(0.25)
    h -= 0.5 * math.log(0.5)
    assert dist.entropy_np(inputs)[0] == pytest.approx(h, rel=1e-6)
    actions, lp = dist.sample(np.repeat(inputs, 4, 0), RNG, explore=True)
    assert actions.shape == (4, 2) and np.allclose(
        lp, dist.logp_np(np.repeat(inputs, 4, 0), actions)
    )
    assert dist.kl_np(inputs, inputs)[0] == pytest.approx(0.0, abs=1e-7)
    # KL of independent parts adds: only the second part differs here
    other = np.array([[0.0, math.log(3.0), 0.0, 0.0, 0.0]], np.float32)
    kl = 0.25 * math.log(0.25 / (1 / 3)) + 0.25 * math.log(0.25 / (1 / 3))
    kl += 0.5 * math.log(0.5 / (1 / 3))
    assert dist.kl_np(inputs, other)[0] == pytest.approx(kl, rel=1e-5)


def test_action_dist_for_each_space_and_errors() -> None:
    assert isinstance(action_dist(gym.spaces.Discrete(4), "PG"), Categorical)
    assert isinstance(action_dist(gym.spaces.MultiDiscrete([2, 2]), "PG"), MultiCategorical)
    box = action_dist(gym.spaces.Box(-1, 1, (2, 2)), "PG")
    assert isinstance(box, DiagGaussian) and box.n_inputs == 8
    with pytest.raises(ConfigError, match="PG supports Discrete, MultiDiscrete and float Box"):
        action_dist(gym.spaces.MultiBinary(3), "PG")


# -- the loss gradient: grad_np = d/d(inputs) sum_i [w_i logp_i + c H_i] -----------------


def torch_logp_entropy(dist: object, inputs: torch.Tensor, actions: np.ndarray) -> tuple:
    """(logp, entropy) per row from torch.distributions, differentiable in ``inputs``."""
    if isinstance(dist, Categorical):
        ref = TorchCategorical(logits=inputs)
        return ref.log_prob(torch.as_tensor(actions)), ref.entropy()
    if isinstance(dist, MultiCategorical):
        logp, entropy = torch.zeros(len(inputs)), torch.zeros(len(inputs))
        for i, (lo, hi) in enumerate(zip(dist.bounds[:-1], dist.bounds[1:], strict=True)):
            part = TorchCategorical(logits=inputs[:, lo:hi])
            logp = logp + part.log_prob(torch.as_tensor(actions[:, i]))
            entropy = entropy + part.entropy()
        return logp, entropy
    assert isinstance(dist, DiagGaussian)
    normal = Normal(inputs[:, : dist.dim], inputs[:, dist.dim :].exp())
    return normal.log_prob(torch.as_tensor(actions)).sum(-1), normal.entropy().sum(-1)


def random_case(dist: object, n: int, rng: np.random.Generator) -> tuple:
    inputs = rng.normal(size=(n, dist.n_inputs)).astype(np.float32)  # type: ignore[attr-defined]
    actions, _ = dist.sample(inputs, rng, explore=True)  # type: ignore[attr-defined]
    return inputs, actions


@pytest.mark.parametrize(
    "dist",
    [Categorical(4), MultiCategorical(np.array([2, 3, 4])), DiagGaussian((3,))],
    ids=["categorical", "multicategorical", "gaussian"],
)
@pytest.mark.parametrize("c", [0.0, 0.3])
def test_grad_np_matches_autograd_of_torch_distributions(dist: object, c: float) -> None:
    rng = np.random.default_rng(7)
    inputs, actions = random_case(dist, 16, rng)
    weights = rng.normal(size=16).astype(np.float32)
    t_in = torch.tensor(inputs, dtype=torch.float64, requires_grad=True)
    logp, entropy = torch_logp_entropy(dist, t_in, actions)
    (torch.as_tensor(weights, dtype=torch.float64) * logp + c * entropy).sum().backward()
    assert t_in.grad is not None
    got = dist.grad_np(inputs, actions, weights, c)  # type: ignore[attr-defined]
    assert got.shape == inputs.shape
    np.testing.assert_allclose(got, t_in.grad.numpy(), rtol=1e-4, atol=1e-5)
    # and the values the loss reports
    np.testing.assert_allclose(
        dist.logp_np(inputs, actions), logp.detach().numpy(), rtol=1e-5, atol=1e-5
    )
    np.testing.assert_allclose(
        dist.entropy_np(inputs), entropy.detach().numpy(), rtol=1e-5, atol=1e-5
    )


def test_categorical_grad_hand_computed() -> None:
    dist = Categorical(2)
    logits = np.array([[0.0, math.log(3.0)]], np.float32)  # p = [1/4, 3/4]
    # w = 2, action 1: 2 * (onehot - p) = [-1/2, 1/2]
    got = dist.grad_np(logits, np.array([1]), np.array([2.0], np.float32), 0.0)
    np.testing.assert_allclose(got, [[-0.5, 0.5]], atol=1e-6)
    # entropy alone (w = 0, c = 1): dH/dz_k = -p_k (log p_k + H)
    h = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    expected = [-0.25 * (math.log(0.25) + h), -0.75 * (math.log(0.75) + h)]
    got = dist.grad_np(logits, np.array([1]), np.array([0.0], np.float32), 1.0)
    np.testing.assert_allclose(got, [expected], atol=1e-6)


def test_gaussian_grad_hand_computed() -> None:
    dist = DiagGaussian((1,))
    # m = 0, s = 2, a = 1: z = 1/2, dlogp/dm = z/s = 1/4, dlogp/dlog s = z^2 - 1 = -3/4
    inputs = np.array([[0.0, math.log(2.0)]], np.float32)
    got = dist.grad_np(inputs, np.array([[1.0]]), np.array([1.0], np.float32), 0.5)
    np.testing.assert_allclose(got, [[0.25, -0.75 + 0.5]], atol=1e-6)  # dH/dlog s = 1


# -- action spaces with a start: actions are values of the space, logits are indices ------


def test_categorical_with_start_samples_values_and_indexes_logits_by_action_minus_start() -> None:
    dist = Categorical(3, start=-1)  # actions -1, 0, 1
    logits = np.array([[0.0, math.log(3.0), 0.0]], np.float32)  # p = [1/5, 3/5, 1/5]
    logp = dist.logp_np(np.repeat(logits, 3, 0), np.array([-1, 0, 1]))
    np.testing.assert_allclose(logp, np.log([0.2, 0.6, 0.2]), rtol=1e-6)
    greedy, greedy_logp = dist.sample(logits, RNG, explore=False)
    assert greedy.tolist() == [0] and greedy_logp[0] == pytest.approx(math.log(0.6), rel=1e-6)
    many = np.repeat(logits, 20000, 0)
    actions, lp = dist.sample(many, np.random.default_rng(2), explore=True)
    assert set(np.unique(actions)) == {-1, 0, 1}
    assert abs(np.mean(actions == 0) - 0.6) < 0.015
    np.testing.assert_allclose(lp, dist.logp_np(many, actions), rtol=1e-6)
    # w = 1, action 0 (index 1): onehot(1) - p
    got = dist.grad_np(logits, np.array([0]), np.array([1.0], np.float32), 0.0)
    np.testing.assert_allclose(got, [[-0.2, 0.4, -0.2]], atol=1e-6)


@pytest.mark.parametrize("action", [2, -2])
def test_categorical_action_outside_the_space_is_named_not_wrapped(action: int) -> None:
    # -2 - (-1) = index -1 would silently read the last logit
    dist = Categorical(3, start=-1)
    logits = np.zeros((1, 3), np.float32)
    with pytest.raises(OffrlRuntimeError, match=rf"action {action} is not one of .* -1\.\.1"):
        dist.logp_np(logits, np.array([action]))
    with pytest.raises(OffrlRuntimeError, match=rf"action {action} is not one"):
        dist.grad_np(logits, np.array([action]), np.ones(1, np.float32), 0.0)


def test_multicategorical_with_start_per_component() -> None:
    dist = MultiCategorical(np.array([2, 3]), np.array([1, -1]))  # a0 in {1, 2}, a1 in {-1, 0, 1}
    inputs = np.array([[0.0, math.log(3.0), 0.0, 0.0, math.log(2.0)]], np.float32)
    # P(a0=2) = 3/4 (index 1), P(a1=1) = 2/4 (index 2)
    logp = dist.logp_np(inputs, np.array([[2, 1]]))
    assert logp[0] == pytest.approx(math.log(0.75) + math.log(0.5), rel=1e-6)
    greedy, _ = dist.sample(inputs, RNG, explore=False)
    assert greedy.tolist() == [[2, 1]]
    many = np.repeat(inputs, 2000, 0)
    actions, lp = dist.sample(many, np.random.default_rng(3), explore=True)
    assert set(np.unique(actions[:, 0])) == {1, 2} and set(np.unique(actions[:, 1])) == {-1, 0, 1}
    np.testing.assert_allclose(lp, dist.logp_np(many, actions), rtol=1e-6)
    # the gradient is the start-free one at the shifted actions
    plain = MultiCategorical(np.array([2, 3]))
    w = np.random.default_rng(4).normal(size=2000).astype(np.float32)
    np.testing.assert_allclose(
        dist.grad_np(many, actions, w, 0.1), plain.grad_np(many, actions - [1, -1], w, 0.1)
    )
    with pytest.raises(OffrlRuntimeError, match="action 0 is not one of the policy's actions 1..2"):
        dist.logp_np(inputs, np.array([[0, 0]]))


def test_action_dist_takes_the_start_of_the_space() -> None:
    cat = action_dist(gym.spaces.Discrete(3, start=-1), "PG")
    assert isinstance(cat, Categorical) and (cat.n, cat.start) == (3, -1)
    multi = action_dist(gym.spaces.MultiDiscrete([2, 3], start=[1, -1]), "PG")
    assert isinstance(multi, MultiCategorical)
    assert [(p.n, p.start) for p in multi.parts] == [(2, 1), (3, -1)]
