"""Action distributions of the policy-gradient learner, one per action space.

Each works on ``inputs``, the rows the policy writes into ``action_dist_inputs``:

- :class:`Categorical` (``Discrete(n)``): n logits.
- :class:`MultiCategorical` (``MultiDiscrete(nvec)``): the logits of every component,
  concatenated (``sum(nvec)`` per row); an action is one integer per component.
- :class:`DiagGaussian` (``Box``): means then log-stds (``2 * dim`` per row), as RLlib
  writes them; the log-std is a learned parameter that does not depend on the state.

Acting runs in numpy (``sample``, ``logp_np``); the loss runs in torch (``logp``,
``entropy``, ``kl``), so the same formulas appear twice and
``tests/test_dists.py`` checks each pair against the other and against torch.distributions.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, TypeVar

import gymnasium as gym
import numpy as np
import torch

from offrl.errors import ConfigError

_LOG_2PI = math.log(2.0 * math.pi)


def softmax_np(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(probs, log_probs) of logits (N, A), computed stably in numpy."""
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    s = e.sum(axis=1, keepdims=True)
    return e / s, z - np.log(s)


def _writable(actions: np.ndarray, dtype: type) -> np.ndarray:
    """``actions`` as ``dtype``, copied if read-only (torch warns on read-only arrays)."""
    return np.require(np.asarray(actions, dtype=dtype), requirements="W")


class Categorical:
    """One of ``n`` actions; inputs are n logits."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.n_params = n  # policy network outputs
        self.n_inputs = n  # action_dist_inputs width

    def sample(
        self, inputs: np.ndarray, rng: np.random.Generator, explore: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        """(actions (N,) int64, logp (N,)): a draw, or the most likely action."""
        probs, logp_all = softmax_np(inputs)
        if explore:
            # Inverse-CDF sampling in numpy: cheaper than torch.distributions per step.
            u = rng.random((len(inputs), 1), dtype=np.float32)
            actions = (probs.cumsum(axis=1) < u).sum(axis=1)
            np.minimum(actions, self.n - 1, out=actions)  # cumsum may end at 1 - eps
        else:
            actions = inputs.argmax(axis=1)
        return actions.astype(np.int64), logp_all[np.arange(len(actions)), actions]

    def logp_np(self, inputs: np.ndarray, actions: np.ndarray) -> np.ndarray:
        rows = np.arange(len(inputs))
        return softmax_np(inputs)[1][rows, np.asarray(actions, dtype=np.int64).reshape(-1)]

    def actions_tensor(self, actions: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(_writable(actions, np.int64).reshape(-1))

    def logp(self, inputs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        logp_all = torch.log_softmax(inputs, dim=-1)
        return logp_all.gather(1, actions.unsqueeze(1)).squeeze(1)

    def entropy(self, inputs: torch.Tensor) -> torch.Tensor:
        logp_all = torch.log_softmax(inputs, dim=-1)
        return -(logp_all.exp() * logp_all).sum(-1)

    def kl(self, old: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
        """KL(old || new) per row."""
        old_lp, new_lp = torch.log_softmax(old, dim=-1), torch.log_softmax(new, dim=-1)
        return (old_lp.exp() * (old_lp - new_lp)).sum(-1)


_T = TypeVar("_T", np.ndarray, torch.Tensor)


def _total(terms: Iterable[_T]) -> _T:
    """The sum of per-part arrays (or tensors): ``sum`` typed, without its ``0 +``."""
    parts = iter(terms)
    out = next(parts)
    for term in parts:
        out = out + term
    return out


class MultiCategorical:
    """One Categorical per component of a MultiDiscrete space; the log-probs add up."""

    def __init__(self, nvec: np.ndarray) -> None:
        self.shape = tuple(nvec.shape)
        self.parts = [Categorical(int(k)) for k in nvec.reshape(-1)]
        self.bounds = np.cumsum([0] + [p.n for p in self.parts])
        self.n_params = int(self.bounds[-1])
        self.n_inputs = self.n_params

    def _split(self, inputs: Any, i: int) -> Any:
        """Columns of part ``i`` (numpy array or tensor, as given)."""
        return inputs[:, self.bounds[i] : self.bounds[i + 1]]

    def sample(
        self, inputs: np.ndarray, rng: np.random.Generator, explore: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        actions = np.empty((len(inputs), len(self.parts)), dtype=np.int64)
        logp = np.zeros(len(inputs), dtype=inputs.dtype)
        for i, part in enumerate(self.parts):
            actions[:, i], lp = part.sample(self._split(inputs, i), rng, explore)
            logp += lp
        return actions.reshape(len(inputs), *self.shape), logp

    def logp_np(self, inputs: np.ndarray, actions: np.ndarray) -> np.ndarray:
        a = np.asarray(actions, dtype=np.int64).reshape(len(inputs), -1)
        return _total(p.logp_np(self._split(inputs, i), a[:, i]) for i, p in enumerate(self.parts))

    def actions_tensor(self, actions: np.ndarray) -> torch.Tensor:
        a = _writable(actions, np.int64)
        return torch.as_tensor(a.reshape(len(a), len(self.parts)))

    def logp(self, inputs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return _total(
            p.logp(self._split(inputs, i), actions[:, i]) for i, p in enumerate(self.parts)
        )

    def entropy(self, inputs: torch.Tensor) -> torch.Tensor:
        return _total(p.entropy(self._split(inputs, i)) for i, p in enumerate(self.parts))

    def kl(self, old: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
        return _total(
            p.kl(self._split(old, i), self._split(new, i)) for i, p in enumerate(self.parts)
        )


class DiagGaussian:
    """Independent normals over a Box's ``dim`` components; inputs are (means, log-stds).

    log N(a; m, s) = sum_i [ -(a_i - m_i)^2 / (2 s_i^2) - log s_i - log(2 pi) / 2 ].
    """

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape = shape
        self.dim = math.prod(shape)
        self.n_params = self.dim  # the network outputs the means; log-std is a parameter
        self.n_inputs = 2 * self.dim

    def sample(
        self, inputs: np.ndarray, rng: np.random.Generator, explore: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        """(actions (N, *shape) float32, logp (N,)): a draw, or the mean."""
        mean, log_std = inputs[:, : self.dim], inputs[:, self.dim :]
        actions = mean
        if explore:
            noise = rng.standard_normal(mean.shape, dtype=np.float32)
            actions = mean + np.exp(log_std) * noise
        actions = actions.astype(np.float32)
        return actions.reshape(len(inputs), *self.shape), self.logp_np(inputs, actions)

    def logp_np(self, inputs: np.ndarray, actions: np.ndarray) -> np.ndarray:
        mean, log_std = inputs[:, : self.dim], inputs[:, self.dim :]
        a = np.asarray(actions, dtype=np.float32).reshape(len(inputs), self.dim)
        z = (a - mean) * np.exp(-log_std)
        return (-0.5 * z * z - log_std - 0.5 * _LOG_2PI).sum(axis=1)

    def actions_tensor(self, actions: np.ndarray) -> torch.Tensor:
        a = _writable(actions, np.float32)
        return torch.as_tensor(a.reshape(len(a), self.dim))

    def logp(self, inputs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        mean, log_std = inputs[:, : self.dim], inputs[:, self.dim :]
        z = (actions - mean) * torch.exp(-log_std)
        return (-0.5 * z * z - log_std - 0.5 * _LOG_2PI).sum(-1)

    def entropy(self, inputs: torch.Tensor) -> torch.Tensor:
        log_std = inputs[:, self.dim :]
        return (log_std + 0.5 * (1.0 + _LOG_2PI)).sum(-1)

    def kl(self, old: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
        """KL(old || new) = sum [log(s1/s0) + (s0^2 + (m0 - m1)^2) / (2 s1^2) - 1/2]."""
        m0, ls0 = old[:, : self.dim], old[:, self.dim :]
        m1, ls1 = new[:, : self.dim], new[:, self.dim :]
        var_ratio = torch.exp(2.0 * (ls0 - ls1))
        mean_term = (m0 - m1).pow(2) * torch.exp(-2.0 * ls1)
        return (ls1 - ls0 + 0.5 * (var_ratio + mean_term) - 0.5).sum(-1)


ActionDist = Categorical | MultiCategorical | DiagGaussian


def action_dist(space: gym.Space, algo: str) -> ActionDist:
    """The distribution for ``space``; a ConfigError naming the space for any other."""
    if isinstance(space, gym.spaces.Discrete):
        return Categorical(int(space.n))
    if isinstance(space, gym.spaces.MultiDiscrete):
        return MultiCategorical(space.nvec)
    if isinstance(space, gym.spaces.Box) and np.issubdtype(space.dtype, np.floating):
        return DiagGaussian(tuple(space.shape))
    raise ConfigError(
        f"{algo} supports Discrete, MultiDiscrete and float Box action spaces; this env has {space}"
    )
