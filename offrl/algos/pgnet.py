"""PG's networks (policy and value) and the backends that run them for the learner.

:class:`PGModel` is the torch module (init, ``state_dict``, checkpoints). The learner
(``offrl/algos/pg.py``) writes the loss and its gradient dLoss/d(dist inputs), dLoss/dV
once, in numpy; a backend runs forward and backward and steps one flat Adam over every
parameter (policy, value, log-std): :class:`NumpyPG` with numpy on the same memory for
MLPs (``offrl/algos/fastmlp.py``), :class:`TorchPG` with autograd for anything else
(image encoders). One checkpoint format for both; ``tests/test_pgnet.py`` checks them
against each other and against an autograd reference of the loss.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from offrl.algos.base import as_tensor
from offrl.algos.dists import ActionDist, DiagGaussian
from offrl.algos.fastmlp import FlatBackend, MLPPlan, backward, forward, plan_sequential
from offrl.algos.models import is_mlp, network


class PGModel(nn.Module):
    """Policy network (the action distribution's inputs) and, with a baseline, a value network.

    Both are :func:`~offrl.algos.models.network`: an image encoder for image
    observations, then ``fcnet_hiddens``. For a Gaussian the policy network outputs the
    means and ``log_std`` is one learned parameter per action component (state-independent).
    With ``bounded_mean`` (a Gaussian over normalised actions in [-1, 1]) a tanh keeps the
    means inside those bounds: a mean far outside them makes every clipped sample the same
    action, whose advantage then says nothing about the mean (PG on Pendulum stalled so on
    5 of 8 seeds; benchmarks/README.md).
    """

    def __init__(
        self,
        obs_space: gym.Space,
        dist: ActionDist,
        model: dict,
        use_baseline: bool,
        bounded_mean: bool = False,
    ) -> None:
        super().__init__()
        self.dist = dist
        self.pi = network(obs_space, model, dist.n_params)
        # A near-uniform initial policy keeps early exploration wide (as in RLlib/CleanRL).
        head = cast(nn.Linear, self.pi[-1])
        nn.init.normal_(head.weight, std=0.01)
        nn.init.zeros_(head.bias)
        if bounded_mean and isinstance(dist, DiagGaussian):
            self.pi.append(nn.Tanh())
        self.vf = network(obs_space, model, 1) if use_baseline else None
        self.log_std = (
            nn.Parameter(torch.zeros(dist.dim)) if isinstance(dist, DiagGaussian) else None
        )

    def dist_inputs(self, obs: torch.Tensor) -> torch.Tensor:
        """``action_dist_inputs`` (B, dist.n_inputs): logits, or means then log-stds."""
        out = self.pi(obs)
        if self.log_std is None:
            return out
        return torch.cat([out, self.log_std.expand(len(out), -1)], dim=1)

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        """V(obs) (B,); zeros without a baseline."""
        if self.vf is None:
            return torch.zeros(len(obs))
        return self.vf(obs).squeeze(-1)


def _tanh_(x: torch.Tensor) -> torch.Tensor:
    # tanh(x) = 2 * sigmoid(2x) - 1: torch's CPU tanh is slower than sigmoid here.
    return torch.sigmoid_(x.mul_(2.0)).mul_(2.0).sub_(1.0)


_INPLACE_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "tanh": _tanh_,
    "relu": torch.relu_,
    "elu": lambda x: nn.functional.elu(x, inplace=True),
    "swish": lambda x: nn.functional.silu(x, inplace=True),
    "silu": lambda x: nn.functional.silu(x, inplace=True),
    "linear": lambda x: x,
}


class FastForward:
    """Inference-only forward pass of an ``mlp``: fused addmm + in-place activations.

    The sampler calls the policy once per vector step, so nn.Module call overhead
    and temporaries matter there. Holds the live parameter tensors (the optimizer
    updates them in place), so it never goes stale.
    """

    def __init__(self, net: nn.Sequential, activation: str) -> None:
        # Transposed views of the live parameters: they follow in-place optimizer updates.
        self.layers = [(m.weight.t(), m.bias) for m in net if isinstance(m, nn.Linear)]
        self.act = _INPLACE_ACTIVATIONS[activation]
        self.out_tanh = isinstance(net[-1], nn.Tanh)  # a bounded Gaussian mean

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        for weight_t, bias in self.layers[:-1]:
            x = self.act(torch.addmm(bias, x, weight_t))
        weight_t, bias = self.layers[-1]
        out = torch.addmm(bias, x, weight_t)
        return _tanh_(out) if self.out_tanh else out


# -- backends: how the learner's networks run ----------------------------------------------


class TorchPG(FlatBackend):
    """A :class:`PGModel` run by torch; gradients by autograd (any layer type).

    Every parameter (policy, value, log-std) lives in one flat array with one Adam
    (:class:`~offrl.algos.fastmlp.FlatBackend`), so clipping is over the global norm of
    all of them, as ``clip_grad_norm_(model.parameters())`` is.
    """

    def __init__(self, model: PGModel, activation: str) -> None:
        super().__init__(model)
        self.model = model
        self.n_params = model.dist.n_params
        vf = model.vf
        where = [] if vf is None else [self.where[id(p)] for p in vf.parameters()]
        # The value net's parameters, contiguous: frozen when a batch has no value targets.
        self.vf_slice = slice(where[0].start, where[-1].stop) if where else None
        self.log_std_slice = None if model.log_std is None else self.where[id(model.log_std)]
        # The sampler calls the policy once per vector step: skip nn.Module overhead there.
        self._pi_fast = FastForward(model.pi, activation) if is_mlp(model.pi) else None
        self._vf_fast = FastForward(vf, activation) if vf is not None and is_mlp(vf) else None
        self._outs: list[torch.Tensor] = []

    def _with_log_std(self, out: np.ndarray) -> np.ndarray:
        """Policy outputs (N, n_params) -> ``action_dist_inputs`` (log-stds appended)."""
        if self.log_std_slice is None:
            return out
        log_std = self.flat[self.log_std_slice]
        return np.concatenate([out, np.broadcast_to(log_std, out.shape)], axis=1)

    def dist_inputs(self, obs: np.ndarray) -> np.ndarray:
        """``action_dist_inputs`` (N, dist.n_inputs) for flat observations (N, obs_dim)."""
        with torch.inference_mode():
            out = (self._pi_fast or self.model.pi)(as_tensor(obs)).numpy()
        return self._with_log_std(out)

    def values(self, obs: np.ndarray) -> np.ndarray:
        """V(obs) (N,) float32; needs a value network."""
        assert self.model.vf is not None, "values() without a baseline"
        with torch.inference_mode():
            return (self._vf_fast or self.model.vf)(as_tensor(obs))[:, 0].numpy()

    def forward(self, obs: np.ndarray, with_values: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """(dist inputs (B, n_inputs), V (B,) or None) for :meth:`backward`."""
        x = as_tensor(obs)
        pi = self.model.pi(x)
        self._outs = [pi]
        values = None
        if with_values and self.model.vf is not None:
            v = self.model.vf(x)[:, 0]
            self._outs.append(v)
            values = v.detach().numpy()
        return self._with_log_std(pi.detach().numpy()), values

    def backward(self, grad_inputs: np.ndarray, grad_values: np.ndarray | None) -> None:
        """dLoss/d(parameters) into :attr:`grad` from dLoss/d(dist inputs) (B, n_inputs)
        and dLoss/dV (B,) (None: the value net gets no gradient)."""
        grads = [torch.from_numpy(np.ascontiguousarray(grad_inputs[:, : self.n_params]))]
        if grad_values is not None:
            grads.append(torch.from_numpy(grad_values))
        torch.autograd.backward(self._outs[: len(grads)], grads)
        self._outs = []
        self.grads_from_torch()
        self._log_std_grad(grad_inputs)

    def _log_std_grad(self, grad_inputs: np.ndarray) -> None:
        # One log-std shared by every row: its gradient is the sum over rows.
        if self.log_std_slice is not None:
            np.sum(grad_inputs[:, self.n_params :], axis=0, out=self.grad[self.log_std_slice])


class NumpyPG(TorchPG):
    """:class:`TorchPG` with forward and backward done by numpy on the same memory
    (``fcnet_hiddens`` MLPs with relu or tanh)."""

    def __init__(self, base: TorchPG, pi: MLPPlan, vf: MLPPlan | None) -> None:
        vars(self).update(vars(base))
        self.pi_plan, self.vf_plan = pi, vf
        self._pi_outs: list[np.ndarray] = []
        self._vf_outs: list[np.ndarray] = []

    def dist_inputs(self, obs: np.ndarray) -> np.ndarray:
        return self._with_log_std(forward(self.pi_plan, obs)[-1])

    def values(self, obs: np.ndarray) -> np.ndarray:
        assert self.vf_plan is not None, "values() without a baseline"
        return forward(self.vf_plan, obs)[-1][:, 0]

    def forward(self, obs: np.ndarray, with_values: bool) -> tuple[np.ndarray, np.ndarray | None]:
        self._pi_outs = forward(self.pi_plan, obs)
        values = None
        if with_values and self.vf_plan is not None:
            self._vf_outs = forward(self.vf_plan, obs)
            values = self._vf_outs[-1][:, 0]
        return self._with_log_std(self._pi_outs[-1]), values

    def backward(self, grad_inputs: np.ndarray, grad_values: np.ndarray | None) -> None:
        rows = len(grad_inputs)
        backward(self.pi_plan, self._pi_outs, grad_inputs[:, : self.n_params], rows)
        if self.vf_slice is not None:
            if grad_values is None or self.vf_plan is None:
                self.grad[self.vf_slice] = 0.0
            else:
                backward(self.vf_plan, self._vf_outs, grad_values[:, None], rows)
        self._log_std_grad(grad_inputs)


def pg_backend(model: PGModel, activation: str, numpy: bool = True) -> TorchPG:
    """:class:`NumpyPG` when numpy has a plan for every layer (and ``numpy``), else
    :class:`TorchPG`; either way the same update and the same checkpoint."""
    backend = TorchPG(model, activation)
    if not numpy:
        return backend
    pi = plan_sequential(model.pi, backend.where, backend.flat, backend.grad)
    vf = None
    if model.vf is not None:
        vf = plan_sequential(model.vf, backend.where, backend.flat, backend.grad)
        if vf is None:
            return backend
    return backend if pi is None else NumpyPG(backend, pi, vf)
