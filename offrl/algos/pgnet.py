"""PG's networks (policy logits and value), fast inference forward passes, and the loss.

``pg_loss`` is the autograd reference; ``PG._step_numpy`` in ``offrl/algos/pg.py``
writes its gradients out for the numpy path, and tests check the two agree.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import numpy as np
import torch
from torch import nn

from offrl.algos.base import mlp
from offrl.algos.configs import PGConfig


class PGModel(nn.Module):
    """Policy logits network and, with a baseline, a separate value network."""

    def __init__(self, in_dim: int, n_actions: int, model: dict, use_baseline: bool) -> None:
        super().__init__()
        hiddens = model.get("fcnet_hiddens", [256, 256])
        act = model.get("fcnet_activation", "tanh")
        self.pi = mlp(in_dim, hiddens, n_actions, act)
        # A near-uniform initial policy keeps early exploration wide (as in RLlib/CleanRL).
        head = cast(nn.Linear, self.pi[-1])
        nn.init.normal_(head.weight, std=0.01)
        nn.init.zeros_(head.bias)
        self.vf = mlp(in_dim, hiddens, 1, act) if use_baseline else None

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        """V(obs) (B,); zeros without a baseline."""
        if self.vf is None:
            return torch.zeros(len(obs))
        return self.vf(obs).squeeze(-1)


def _tanh_(x: torch.Tensor) -> torch.Tensor:
    # tanh(x) = 2 * sigmoid(2x) - 1: torch's CPU tanh is ~3x slower than sigmoid here.
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


def softmax_np(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(probs, log_probs) of logits (N, A), computed stably in numpy."""
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    s = e.sum(axis=1, keepdims=True)
    return e / s, z - np.log(s)


def pg_loss(
    model: PGModel,
    obs: torch.Tensor,
    actions: torch.Tensor,
    advantages: torch.Tensor,
    value_targets: torch.Tensor | None,
    cfg: PGConfig,
    old_logp_all: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """total = -mean(logp(a|s) * A) - entropy_coeff * H + vf_loss_coeff * 0.5 * mean((V - vt)^2).

    Shapes: obs (B, obs_dim), actions (B,) int64, advantages (B,), value_targets (B,),
    old_logp_all (B, n_actions): log-probabilities before this batch's first step, for
    the reported ``kl`` = mean KL(old || current).
    """
    logp_all = torch.log_softmax(model.pi(obs), dim=-1)
    logp = logp_all.gather(1, actions.unsqueeze(1)).squeeze(1)
    policy_loss = -(logp * advantages).mean()
    entropy = -(logp_all.exp() * logp_all).sum(-1).mean()
    total = policy_loss - cfg.entropy_coeff * entropy
    out = {"policy_loss": policy_loss, "entropy": entropy}
    if old_logp_all is not None:
        out["kl"] = (old_logp_all.exp() * (old_logp_all - logp_all.detach())).sum(-1).mean()
    if value_targets is not None and model.vf is not None:
        vf_loss = 0.5 * (model.value(obs) - value_targets).pow(2).mean()
        total = total + cfg.vf_loss_coeff * vf_loss
        out["vf_loss"] = vf_loss
    out["total_loss"] = total
    return out
