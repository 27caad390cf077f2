"""The DQN Q network (trunk + optional dueling heads), the TD math on Q values, and the
two backends that run the network for the learner.

:class:`QNetwork` is the torch module (init, ``state_dict``, checkpoints). The learner
(``offrl/algos/dqn.py``) writes the loss and its gradient dLoss/dQ once; a backend
runs forward and backward: :class:`NumpyQ` with numpy on the same memory for small
MLPs (see ``offrl/algos/fastmlp.py``), :class:`TorchQ` with autograd for anything else.
Both step the same flat Adam, so a checkpoint from one restores into the other.
"""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from offrl.algos.base import as_tensor, mlp
from offrl.algos.configs import DQNConfig
from offrl.algos.fastmlp import MLPPlan, TorchMLP, backward, flatten_parameters, plan_sequential
from offrl.algos.fastmlp import forward as mlp_forward
from offrl.algos.models import trunk


def td_targets(
    returns: np.ndarray,
    discounts: np.ndarray,
    q_next_online: np.ndarray,
    q_next_target: np.ndarray,
    double_q: bool,
) -> np.ndarray:
    """``y = R + discount * Q_target(s', a*)``, shapes (B,), (B,), (B, A), (B, A) -> (B,).

    ``a* = argmax_a Q_online(s', a)`` with double Q, else ``argmax_a Q_target(s', a)``.
    ``discount`` is already 0 where the window ended on a true terminal, so the
    target never bootstraps across one (a truncation keeps gamma^k).
    """
    chooser = q_next_online if double_q else q_next_target
    best = chooser.argmax(axis=1)
    return returns + discounts * q_next_target[np.arange(len(best)), best]


def huber(x: np.ndarray, delta: float = 1.0) -> np.ndarray:
    """Elementwise Huber loss: x^2/2 if |x| <= delta, else delta * (|x| - delta/2)."""
    abs_x = np.abs(x)
    return np.where(abs_x <= delta, 0.5 * x * x, delta * (abs_x - 0.5 * delta))


def huber_grad(x: np.ndarray, delta: float = 1.0) -> np.ndarray:
    """d huber(x)/dx = clip(x, -delta, delta)."""
    return np.clip(x, -delta, delta)


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


# -- backends: how the learner's Q networks run ----------------------------------------


class TorchQ(TorchMLP):
    """The online and target :class:`QNetwork` run by torch; gradients by autograd.

    Any layer type. Both networks' parameters live in flat arrays (:class:`FlatBackend`
    for the online one), so Polyak averaging and Adam are the same for every backend.
    ``forward``/``backward`` are :class:`TorchMLP`'s, on the online network.
    """

    _tensor = staticmethod(as_tensor)  # uint8 frames and read-only arrays as float32

    def __init__(self, online: QNetwork, target: QNetwork, eps: float) -> None:
        super().__init__(online, eps=eps)
        self.online, self.target = online, target
        self.target_flat, self.target_where = flatten_parameters(target)

    def q(self, obs: np.ndarray) -> np.ndarray:
        """Online Q values (N, A) for acting; no gradient."""
        with torch.no_grad():
            return self.online(as_tensor(obs).reshape(len(obs), -1)).numpy()

    def target_q(self, obs: np.ndarray) -> np.ndarray:
        """Target-network Q values (N, A) of flat observations."""
        with torch.no_grad():
            return self.target(as_tensor(obs)).numpy()


class NumpyQ(TorchQ):
    """:class:`TorchQ` with forward and backward done by numpy (:class:`FastQ`) on the same
    memory: at CartPole sizes several times cheaper per update (benchmarks/README.md)."""

    def __init__(self, base: TorchQ, online: FastQ, target: FastQ) -> None:
        vars(self).update(vars(base))
        self.fast_online, self.fast_target = online, target
        self._cache: list[list[np.ndarray]] = []

    def q(self, obs: np.ndarray) -> np.ndarray:
        x = np.asarray(obs, dtype=np.float32).reshape(len(obs), -1)
        return self.fast_online.forward(x)[0]

    def target_q(self, obs: np.ndarray) -> np.ndarray:
        return self.fast_target.forward(obs)[0]

    def forward(self, obs: np.ndarray) -> np.ndarray:
        q, self._cache = self.fast_online.forward(obs)
        return q

    def backward(self, grad_q: np.ndarray) -> None:
        self.fast_online.backward(self._cache, grad_q)


def q_backend(online: QNetwork, target: QNetwork, eps: float) -> TorchQ:
    """:class:`NumpyQ` when numpy has a plan for every layer (small MLPs), else
    :class:`TorchQ`; either way the same update and the same checkpoint."""
    backend = TorchQ(online, target, eps)
    fast = fast_q(online, backend.where, backend.flat, backend.grad)
    unused_grad = np.zeros_like(backend.target_flat)  # the target is never backpropagated
    fast_target = fast_q(target, backend.target_where, backend.target_flat, unused_grad)
    if fast is None or fast_target is None:
        return backend
    return NumpyQ(backend, fast, fast_target)
