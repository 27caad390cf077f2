"""PG's backends: numpy and torch autograd give the same gradients and the same parameters,
both equal to a plain torch reference (torch.distributions loss, autograd, torch Adam);
checkpoints of older versions load."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn

from offrl import batch as sb
from offrl.algos.pg import PG, PGConfig
from offrl.algos.pgnet import NumpyPG, PGModel, TorchPG
from offrl.batch import SampleBatch
from offrl.config import from_dict
from tests.test_dists import torch_logp_entropy

OBS = gym.spaces.Box(-np.inf, np.inf, (4,), np.float32)
ACTION_SPACES = {
    "discrete": gym.spaces.Discrete(3),
    "multidiscrete": gym.spaces.MultiDiscrete([2, 3]),
    "box": gym.spaces.Box(-1.0, 1.0, (2,), np.float32),
}


def make(action: str, numpy_backend: bool, obs_space: gym.Space = OBS, **config: object) -> PG:
    cfg = from_dict(PGConfig, {"seed": 0, "model": {"fcnet_hiddens": [8, 8]}, "lr": 0.01, **config})
    return PG(cfg, obs_space, ACTION_SPACES[action], numpy_backend=numpy_backend)


def random_batch(
    action: str, n: int, seed: int, obs_space: gym.Space = OBS, value_targets: bool = True
) -> SampleBatch:
    rng = np.random.default_rng(seed)
    space = ACTION_SPACES[action]
    space.seed(seed)
    obs_space.seed(seed)
    columns = {
        sb.OBS: np.stack([obs_space.sample() for _ in range(n)]),
        sb.ACTIONS: np.stack([space.sample() for _ in range(n)]),
        sb.ADVANTAGES: rng.normal(size=n).astype(np.float32),
    }
    if obs_space is OBS:
        columns[sb.OBS] = rng.normal(size=(n, 4)).astype(np.float32)
    if value_targets:
        columns[sb.VALUE_TARGETS] = rng.normal(size=n).astype(np.float32)
    return SampleBatch(columns)


def reference_loss(model: PGModel, batch: SampleBatch, cfg: PGConfig) -> torch.Tensor:
    """The PG loss in plain torch (torch.distributions), for autograd."""
    obs = torch.as_tensor(np.asarray(batch[sb.OBS], np.float32).reshape(batch.count, -1))
    out = model.pi(obs)
    if model.log_std is not None:
        out = torch.cat([out, model.log_std.expand(len(out), -1)], dim=1)
    actions = np.asarray(batch[sb.ACTIONS])
    logp, entropy = torch_logp_entropy(model.dist, out, actions)
    adv = torch.as_tensor(batch[sb.ADVANTAGES])
    if cfg.normalize_advantages:
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    loss = -(logp * adv).mean() - cfg.entropy_coeff * entropy.mean()
    if model.vf is not None and sb.VALUE_TARGETS in batch:
        v = model.vf(obs).squeeze(-1)
        loss = (
            loss
            + cfg.vf_loss_coeff * 0.5 * (v - torch.as_tensor(batch[sb.VALUE_TARGETS])).pow(2).mean()
        )
    return loss


def flat_grad(model: nn.Module) -> np.ndarray:
    return torch.cat(
        [
            p.grad.reshape(-1) if p.grad is not None else torch.zeros(p.numel())
            for p in model.parameters()
        ]
    ).numpy()


def flat_params(model: nn.Module) -> np.ndarray:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).numpy()


@pytest.mark.parametrize("action", list(ACTION_SPACES))
@pytest.mark.parametrize("use_baseline", [False, True])
def test_both_backends_write_the_autograd_gradient(action: str, use_baseline: bool) -> None:
    config = {"use_baseline": use_baseline, "entropy_coeff": 0.05}
    batch = random_batch(action, 16, 1)
    ref = make(action, numpy_backend=False, **config)
    reference_loss(ref.model, batch, ref.config).backward()
    expected = flat_grad(ref.model)
    for numpy_backend in (True, False):
        algo = make(action, numpy_backend, **config)
        assert isinstance(algo.nets, NumpyPG) == numpy_backend
        algo.learn(batch, 16)  # one full-batch step; no clipping leaves the gradient as it was
        np.testing.assert_allclose(algo.nets.grad, expected, rtol=1e-4, atol=1e-6)


CONFIGS = [
    {"use_baseline": False},
    {"use_baseline": True, "entropy_coeff": 0.01, "grad_clip": 0.5},
    {"use_baseline": True, "normalize_advantages": True, "grad_clip": 40.0, "vf_loss_coeff": 0.5},
]


@pytest.mark.parametrize("action", list(ACTION_SPACES))
@pytest.mark.parametrize("config", CONFIGS, ids=["plain", "baseline-entropy-clip", "normalized"])
def test_backends_and_a_torch_adam_reference_reach_the_same_parameters(
    action: str, config: dict[str, object]
) -> None:
    fast, slow = make(action, True, **config), make(action, False, **config)
    ref = make(action, False, **config).model
    cfg = fast.config
    adam = torch.optim.Adam(ref.parameters(), lr=cfg.lr)
    for i in range(4):
        batch = random_batch(action, 32, i)
        a, b = fast.learn(batch, 32), slow.learn(batch, 32)
        assert a.keys() == b.keys()
        for key in a:
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), key
        adam.zero_grad()
        loss = reference_loss(ref, batch, cfg)
        assert a["total_loss"] == pytest.approx(loss.item(), rel=1e-4, abs=1e-6)
        loss.backward()
        clip = cfg.grad_clip if cfg.grad_clip is not None else float("inf")
        norm = nn.utils.clip_grad_norm_(ref.parameters(), clip)
        assert a["grad_gnorm"] == pytest.approx(float(norm), rel=1e-4)
        adam.step()
    np.testing.assert_allclose(fast.nets.flat, slow.nets.flat, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(fast.nets.flat, flat_params(ref), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("action", list(ACTION_SPACES))
def test_backends_agree_over_minibatch_passes_and_the_kl_guard(action: str) -> None:
    config = {"use_baseline": True, "sgd_minibatch_size": 16, "num_sgd_iter": 3, "kl_target": 0.02}
    fast, slow = make(action, True, **config), make(action, False, **config)
    for i in range(3):
        batch = random_batch(action, 64, i)
        a, b = fast.learn(batch, 64), slow.learn(batch, 64)
        assert a == pytest.approx(b, rel=1e-4, abs=1e-6)
    assert fast.num_grad_updates == slow.num_grad_updates
    np.testing.assert_allclose(fast.nets.flat, slow.nets.flat, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("numpy_backend", [True, False])
def test_a_batch_without_value_targets_leaves_the_value_net_and_its_adam_moments(
    numpy_backend: bool,
) -> None:
    algo = make("box", numpy_backend, use_baseline=True)
    algo.learn(random_batch("box", 32, 0), 32)  # the value net has moments now
    vf = algo.nets.vf_slice
    assert vf is not None
    before = [
        a[vf].copy() for a in (algo.nets.flat, algo.nets.adam.exp_avg, algo.nets.adam.exp_avg_sq)
    ]
    policy_before = algo.nets.flat[: vf.start].copy()
    stats = algo.learn(random_batch("box", 32, 1, value_targets=False), 64)
    assert "vf_loss" not in stats
    after = (algo.nets.flat, algo.nets.adam.exp_avg, algo.nets.adam.exp_avg_sq)
    for old, new in zip(before, after, strict=True):
        np.testing.assert_array_equal(new[vf], old)
    assert not np.array_equal(algo.nets.flat[: vf.start], policy_before)


@pytest.mark.parametrize("value_targets", [True, False])
def test_a_torch_adam_checkpoint_of_older_versions_loads(value_targets: bool) -> None:
    """Older versions saved ``torch.optim.Adam.state_dict()`` over ``model.parameters()``;
    without value targets torch kept no state for the value net."""
    config = {"use_baseline": True, "grad_clip": 1.0}
    old = make("discrete", False, **config)
    adam = torch.optim.Adam(old.model.parameters(), lr=old.config.lr)
    for i in range(2):
        adam.zero_grad(set_to_none=True)
        reference_loss(
            old.model, random_batch("discrete", 32, i, value_targets=value_targets), old.config
        ).backward()
        nn.utils.clip_grad_norm_(old.model.parameters(), 1.0)
        adam.step()
    state = {
        "model": old.model.state_dict(),
        "optimizer": adam.state_dict(),
        "rng": old.rng.bit_generator.state,
        "num_grad_updates": 2,
    }
    assert len(state["optimizer"]["state"]) == (12 if value_targets else 6)  # 3 Linear each
    for numpy_backend in (True, False):
        new = make("discrete", numpy_backend, **config)
        new.set_state(state)
        # (a value net that first trains after a resume would differ from torch in its
        # bias correction: one step count for every parameter, see FlatBackend.step)
        batch = random_batch("discrete", 32, 5, value_targets=value_targets)
        stats = new.learn(batch, 96)
        # the torch reference's next step
        ref = make("discrete", False, **config).model
        ref.load_state_dict(old.model.state_dict())
        ref_adam = torch.optim.Adam(ref.parameters(), lr=old.config.lr)
        ref_adam.load_state_dict(adam.state_dict())
        loss = reference_loss(ref, batch, old.config)
        assert stats["total_loss"] == pytest.approx(loss.item(), rel=1e-5)
        loss.backward()
        nn.utils.clip_grad_norm_(ref.parameters(), 1.0)
        ref_adam.step()
        np.testing.assert_allclose(new.nets.flat, flat_params(ref), rtol=1e-4, atol=1e-6)
        assert new.num_grad_updates == 3


def test_image_observations_learn_through_the_torch_backend() -> None:
    image = gym.spaces.Box(0, 255, (10, 12, 3), np.uint8)
    config = {"use_baseline": True, "model": {"fcnet_hiddens": [8]}}
    algo = make("discrete", True, obs_space=image, **config)
    assert type(algo.nets) is TorchPG  # no numpy plan for a conv encoder
    batch = random_batch("discrete", 8, 0, obs_space=image)
    ref = make("discrete", False, obs_space=image, **config)
    reference_loss(ref.model, batch, ref.config).backward()
    before = algo.nets.flat.copy()
    stats = algo.learn(batch, 8)
    assert stats["num_grad_updates"] == 1.0
    np.testing.assert_allclose(algo.nets.grad, flat_grad(ref.model), rtol=1e-4, atol=1e-6)
    assert not np.array_equal(algo.nets.flat, before)
    # acting reads the updated parameters
    inputs = algo.compute_actions(batch[sb.OBS], explore=False)[1][sb.ACTION_DIST_INPUTS]
    with torch.no_grad():
        expected = algo.model.pi(torch.as_tensor(batch[sb.OBS].reshape(8, -1), dtype=torch.float32))
    np.testing.assert_allclose(inputs, expected.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("action", list(ACTION_SPACES))
def test_one_checkpoint_format_restores_across_backends(action: str) -> None:
    config = {"use_baseline": True, "sgd_minibatch_size": 16, "num_sgd_iter": 2}
    fast = make(action, True, **config)
    fast.learn(random_batch(action, 32, 0), 32)
    state = fast.get_state()
    assert set(state["optimizer"]) == {"numpy_adam"}
    slow = make(action, False, **config, seed=5)
    slow.set_state(state)
    np.testing.assert_array_equal(slow.nets.flat, fast.nets.flat)
    batch = random_batch(action, 32, 1)
    assert fast.learn(batch, 64) == pytest.approx(slow.learn(batch, 64), rel=1e-4, abs=1e-6)
    np.testing.assert_allclose(slow.nets.flat, fast.nets.flat, rtol=1e-4, atol=1e-5)
