"""The DQN Q network (trunk + optional dueling heads), its numpy twin, and the TD math on Q values.

:class:`QNetwork` is the torch module (init, ``state_dict``, checkpoints, acting when the
numpy path is unavailable); :class:`FastQ` runs the same network from the same memory in
numpy (see ``offrl/algos/fastmlp.py``) for the learner's forward and backward passes.
"""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from offrl.algos.base import mlp
from offrl.algos.configs import DQNConfig
from offrl.algos.fastmlp import MLPPlan, backward, plan_sequential
from offrl.algos.fastmlp import forward as mlp_forward
from offrl.algos.models import trunk


def td_targets(
    returns: torch.Tensor,
    discounts: torch.Tensor,
    q_next_online: torch.Tensor,
    q_next_target: torch.Tensor,
    double_q: bool,
) -> torch.Tensor:
    """``y = R + discount * Q_target(s', a*)``, shapes (B,), (B,), (B, A), (B, A) -> (B,).

    ``a* = argmax_a Q_online(s', a)`` with double Q, else ``argmax_a Q_target(s', a)``.
    ``discount`` is already 0 where the window ended on a true terminal, so the
    target never bootstraps across one (a truncation keeps gamma^k).
    """
    chooser = q_next_online if double_q else q_next_target
    best = chooser.argmax(dim=1, keepdim=True)
    return returns + discounts * q_next_target.gather(1, best).squeeze(1)


def huber(x: torch.Tensor, delta: float = 1.0) -> torch.Tensor:
    """Elementwise Huber loss: x^2/2 if |x| <= delta, else delta * (|x| - delta/2)."""
    return F.huber_loss(x, torch.zeros_like(x), reduction="none", delta=delta)


class QNetwork(nn.Module):
    """Trunk (image encoder for image observations, then ``model.fcnet_hiddens``) then a
    Q head, or value + advantage heads (dueling)."""

    def __init__(self, obs_space: gym.Space, n_actions: int, config: DQNConfig) -> None:
        super().__init__()
        widths = list(config.model.get("fcnet_hiddens", [256, 256]))
        act = config.model.get("fcnet_activation", "tanh")
        encoder, in_dim = trunk(obs_space, config.model)
        # mlp() ends in a bare Linear; dropping it leaves layers that end in the activation.
        self.trunk = nn.Sequential(*encoder, *list(mlp(in_dim, widths, 1, act))[:-1])
        last = widths[-1] if widths else in_dim
        self.dueling = config.dueling
        self.advantage = mlp(last, config.hiddens, n_actions, "relu")
        self.value = mlp(last, config.hiddens, 1, "relu") if config.dueling else None

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """Q values (B, n_actions) for observations (B, obs_dim)."""
        h = self.trunk(obs)
        adv = self.advantage(h)
        if self.value is None:
            return adv
        # Subtracting the mean advantage makes V and A identifiable (Wang et al. 2016).
        return self.value(h) + adv - adv.mean(dim=1, keepdim=True)


@dataclass
class FastQ:
    """A :class:`QNetwork` run by numpy (see ``offrl/algos/fastmlp.py``): same memory, same math."""

    trunk: MLPPlan
    advantage: MLPPlan
    value: MLPPlan | None

    def forward(self, obs: np.ndarray) -> tuple[np.ndarray, list[list[np.ndarray]]]:
        """Q values (B, A) and the layer outputs :meth:`backward` needs."""
        trunk = mlp_forward(self.trunk, obs)
        adv = mlp_forward(self.advantage, trunk[-1])
        if self.value is None:
            return adv[-1], [trunk, adv]
        value = mlp_forward(self.value, trunk[-1])
        a = adv[-1]
        # sum * (1/A): np.mean's Python overhead outweighs the arithmetic at this size
        mean_a = a.sum(axis=1, keepdims=True) * np.float32(1.0 / a.shape[1])
        return value[-1] + a - mean_a, [trunk, adv, value]

    def backward(self, cache: list[list[np.ndarray]], grad_q: np.ndarray) -> None:
        """Parameter gradients for dLoss/dQ ``grad_q`` (rows, A) of the first rows forwarded."""
        rows = len(grad_q)
        if self.value is None:
            grad_h = backward(self.advantage, cache[1], grad_q, rows)
        else:
            # Q = V + A - mean(A): dV = sum_a dQ, dA = dQ - mean_a dQ.
            grad_v = grad_q.sum(axis=1, keepdims=True)
            grad_a = grad_q - grad_v * np.float32(1.0 / grad_q.shape[1])
            grad_h = backward(self.advantage, cache[1], grad_a, rows)
            grad_h = grad_h + backward(self.value, cache[2], grad_v, rows)
        if self.trunk.layers:
            backward(self.trunk, cache[0], grad_h, rows)


def fast_q(
    net: QNetwork, where: dict[int, slice], flat: np.ndarray, grad: np.ndarray
) -> FastQ | None:
    """``net`` as numpy views of ``flat``/``grad``; None when a layer is not supported."""
    trunk = plan_sequential(net.trunk, where, flat, grad)
    adv = plan_sequential(net.advantage, where, flat, grad)
    value = plan_sequential(net.value, where, flat, grad) if net.value is not None else None
    if trunk is None or adv is None or (net.value is not None and value is None):
        return None
    return FastQ(trunk, adv, value)


def huber_grad(td: np.ndarray, delta: float = 1.0) -> np.ndarray:
    """d huber(x)/dx = clip(x, -delta, delta)."""
    return np.clip(td, -delta, delta)
