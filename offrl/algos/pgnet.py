"""PG's networks (policy logits and value), fast inference forward passes, and the loss.

``pg_loss`` is the autograd reference; ``PG._step_numpy`` in ``offrl/algos/pg.py``
writes its gradients out for the numpy path, and tests check the two agree.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import gymnasium as gym
import torch
from torch import nn

from offrl.algos.configs import PGConfig
from offrl.algos.dists import ActionDist, DiagGaussian
from offrl.algos.dists import softmax_np as softmax_np
from offrl.algos.models import network


class PGModel(nn.Module):
    """Policy network (the action distribution's inputs) and, with a baseline, a value network.

    Both are :func:`~offrl.algos.models.network`: an image encoder for image
    observations, then ``fcnet_hiddens``. For a Gaussian the policy network outputs the
    means and ``log_std`` is one learned parameter per action component (state-independent).
    """

    def __init__(
        self, obs_space: gym.Space, dist: ActionDist, model: dict, use_baseline: bool
    ) -> None:
        super().__init__()
        self.dist = dist
        self.pi = network(obs_space, model, dist.n_params)
        # A near-uniform initial policy keeps early exploration wide (as in RLlib/CleanRL).
        head = cast(nn.Linear, self.pi[-1])
        nn.init.normal_(head.weight, std=0.01)
        nn.init.zeros_(head.bias)
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

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        for weight_t, bias in self.layers[:-1]:
            x = self.act(torch.addmm(bias, x, weight_t))
        weight_t, bias = self.layers[-1]
        return torch.addmm(bias, x, weight_t)


def pg_loss(
    model: PGModel,
    obs: torch.Tensor,
    actions: torch.Tensor,
    advantages: torch.Tensor,
    value_targets: torch.Tensor | None,
    cfg: PGConfig,
    old_inputs: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """total = -mean(logp(a|s) * A) - entropy_coeff * H + vf_loss_coeff * 0.5 * mean((V - vt)^2).

    Shapes: obs (B, obs_dim), actions (B,) int64 (Discrete), (B, k) int64
    (MultiDiscrete) or (B, dim) float32 (Box), advantages (B,), value_targets (B,),
    old_inputs (B, dist.n_inputs): the distribution before this batch's first step
    (for Discrete, logits or log-probabilities), for the reported ``kl`` = mean KL(old || now).
    """
    dist = model.dist
    inputs = model.dist_inputs(obs)
    logp = dist.logp(inputs, actions)
    policy_loss = -(logp * advantages).mean()
    entropy = dist.entropy(inputs).mean()
    total = policy_loss - cfg.entropy_coeff * entropy
    out = {"policy_loss": policy_loss, "entropy": entropy}
    if old_inputs is not None:
        out["kl"] = dist.kl(old_inputs, inputs.detach()).mean()
    if value_targets is not None and model.vf is not None:
        vf_loss = 0.5 * (model.value(obs) - value_targets).pow(2).mean()
        total = total + cfg.vf_loss_coeff * vf_loss
        out["vf_loss"] = vf_loss
    out["total_loss"] = total
    return out
