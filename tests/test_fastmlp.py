"""The numpy fast path against autograd: same forward values, same gradients, same Adam."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from offrl.algos.base import mlp
from offrl.algos.fastmlp import (
    Adam,
    FlatBackend,
    adam_state_from_torch,
    backward,
    clip_grad_norm,
    flatten_parameters,
    forward,
    plan_sequential,
)


def planned(net: nn.Sequential) -> tuple[np.ndarray, np.ndarray, object]:
    flat, where = flatten_parameters(net)
    grad = np.zeros_like(flat)
    plan = plan_sequential(net, where, flat, grad)
    assert plan is not None
    return flat, grad, plan


def test_flat_parameters_are_shared_with_the_torch_module() -> None:
    torch.manual_seed(0)
    net = mlp(3, [5], 2, "tanh")
    before = {k: v.clone() for k, v in net.state_dict().items()}
    flat, _ = flatten_parameters(net)
    for k, v in net.state_dict().items():  # moving kept the values
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)
    assert flat.size == 3 * 5 + 5 + 5 * 2 + 2
    flat[:] = 0.5  # numpy writes are torch's values
    assert all(bool((p == 0.5).all()) for p in net.parameters())
    net.load_state_dict(before)  # torch writes are numpy's values
    assert flat[0] == before["0.weight"].reshape(-1)[0].item()


@pytest.mark.parametrize("activation", ["relu", "tanh", "linear"])
def test_forward_and_gradients_match_autograd(activation: str) -> None:
    torch.manual_seed(1)
    net = mlp(4, [8, 6], 3, activation)
    x = np.random.default_rng(0).normal(size=(10, 4)).astype(np.float32)
    upstream = np.random.default_rng(1).normal(size=(7, 3)).astype(np.float32)
    _, grad, plan = planned(net)

    outs = forward(plan, x)  # type: ignore[arg-type]
    expected = net(torch.from_numpy(x))
    np.testing.assert_allclose(outs[-1], expected.detach().numpy(), rtol=1e-5, atol=1e-6)

    # Gradients only from the first 7 rows, as DQN back-propagates obs but not next_obs.
    xt = torch.from_numpy(x).requires_grad_(True)
    (net(xt)[:7] * torch.from_numpy(upstream)).sum().backward()
    grad_in = backward(plan, outs, upstream, rows=7)  # type: ignore[arg-type]
    auto = np.concatenate([p.grad.reshape(-1).numpy() for p in net.parameters()])
    np.testing.assert_allclose(grad, auto, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grad_in, xt.grad.numpy()[:7], rtol=1e-5, atol=1e-6)


def test_unsupported_layers_have_no_plan() -> None:
    for net in (mlp(4, [8], 2, "elu"), nn.Sequential(nn.Linear(4, 2, bias=False))):
        flat, where = flatten_parameters(net)
        assert plan_sequential(net, where, flat, np.zeros_like(flat)) is None


def test_clip_grad_norm_scales_to_max_norm_like_torch() -> None:
    g = np.array([3.0, 4.0], dtype=np.float32)  # norm 5
    assert clip_grad_norm(g, 1.0) == pytest.approx(5.0)
    np.testing.assert_allclose(g, [0.6, 0.8], rtol=1e-5)
    small = np.array([0.3, 0.4], dtype=np.float32)
    clip_grad_norm(small, 1.0)
    np.testing.assert_array_equal(small, np.array([0.3, 0.4], dtype=np.float32))


def test_adam_first_step_moves_each_weight_by_lr_times_sign() -> None:
    # Step 1: m = 0.1 g, v = 0.001 g^2, bias-corrected m/sqrt(v) = sign(g) (eps aside).
    p = np.array([1.0, 1.0, 1.0], dtype=np.float32)
    Adam(3, eps=1e-8).step(p, np.array([2.0, -0.5, 0.0], dtype=np.float32), lr=0.1)
    np.testing.assert_allclose(p, [0.9, 1.1, 1.0], rtol=1e-6)


def test_adam_matches_torch_over_several_steps_and_restores() -> None:
    rng = np.random.default_rng(3)
    start = rng.normal(size=20).astype(np.float32)
    grads = rng.normal(size=(5, 20)).astype(np.float32)
    mine, adam = start.copy(), Adam(20, eps=1e-7)
    theirs = torch.nn.Parameter(torch.from_numpy(start.copy()))
    opt = torch.optim.Adam([theirs], lr=0.01, eps=1e-7)
    for g in grads[:3]:
        adam.step(mine, g, 0.01)
        theirs.grad = torch.from_numpy(g.copy())
        opt.step()
    again = Adam(20, eps=1e-7)
    again.set_state(adam.get_state())
    for g in grads[3:]:
        again.step(mine, g, 0.01)
        theirs.grad = torch.from_numpy(g.copy())
        opt.step()
    np.testing.assert_allclose(mine, theirs.detach().numpy(), rtol=1e-5, atol=1e-7)


def test_set_cpu_threads_limits_numpy_blas_too() -> None:
    from threadpoolctl import threadpool_info

    from offrl.algos.base import set_cpu_threads

    set_cpu_threads(1)
    blas = [pool for pool in threadpool_info() if pool["user_api"] == "blas"]
    assert blas, "numpy should load a BLAS library"
    assert all(pool["num_threads"] == 1 for pool in blas)
    assert torch.get_num_threads() == 1


def test_tanh_in_place_matches_numpy_tanh() -> None:
    from offrl.algos.fastmlp import tanh_

    z = np.linspace(-20, 20, 4001, dtype=np.float32)
    expected = np.tanh(z)
    tanh_(z)
    np.testing.assert_allclose(z, expected, rtol=0, atol=3e-7)


def test_a_frozen_slice_keeps_its_values_and_adam_moments() -> None:
    backend = FlatBackend(nn.Linear(2, 2))  # weight: flat[0:4], bias: flat[4:6]
    backend.grad[:] = 1.0
    backend.step(0.1, None)
    frozen = slice(4, 6)
    kept = [a[frozen].copy() for a in (backend.flat, backend.adam.exp_avg, backend.adam.exp_avg_sq)]
    weight = backend.flat[:4].copy()
    backend.grad[:] = 1.0
    backend.step(0.1, None, frozen)
    now = (backend.flat, backend.adam.exp_avg, backend.adam.exp_avg_sq)
    for old, new in zip(kept, now, strict=True):
        np.testing.assert_array_equal(new[frozen], old)
    # the rest stepped as usual: Adam's step with a constant gradient is lr
    np.testing.assert_allclose(backend.flat[:4], weight - 0.1, rtol=1e-5)
    assert backend.adam.step_count == 2


def test_torch_adam_state_with_a_parameter_that_never_stepped() -> None:
    net = nn.Sequential(nn.Linear(2, 1), nn.Linear(1, 1))
    adam = torch.optim.Adam(net.parameters(), lr=0.1)
    net[0](torch.ones(1, 2)).sum().backward()  # only the first layer gets a gradient
    adam.step()
    state = adam.state_dict()
    assert sorted(state["state"]) == [0, 1]
    sizes = [p.numel() for p in net.parameters()]  # 2, 1, 1, 1
    restored = adam_state_from_torch(state, sizes)
    # d(sum(w x + b))/dw = x = 1, /db = 1: exp_avg = 0.1 * g, exp_avg_sq = 0.001 * g^2
    np.testing.assert_allclose(restored["exp_avg"].numpy(), [0.1, 0.1, 0.1, 0.0, 0.0])
    np.testing.assert_allclose(restored["exp_avg_sq"].numpy(), [1e-3, 1e-3, 1e-3, 0.0, 0.0])
    assert restored["step"] == 1
