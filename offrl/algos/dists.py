"""Action distributions of the policy-gradient learner, one per action space.

Each works on ``inputs``, the rows the policy writes into ``action_dist_inputs``:

- :class:`Categorical` (``Discrete(n, start)``): n logits.
- :class:`MultiCategorical` (``MultiDiscrete(nvec, start)``): the logits of every
  component, concatenated (``sum(nvec)`` per row); an action is one integer per component.

Actions are values of the space, as the env takes them and files record them: logit
``k`` is the action ``start + k``. Only the distributions know ``start``.
- :class:`DiagGaussian` (``Box``): means then log-stds (``2 * dim`` per row), as RLlib
  writes them; the log-std is a learned parameter that does not depend on the state.

Everything is numpy and written once: acting (``sample``), and what the learner's loss
needs (``logp_np``, ``entropy_np``, ``kl_np``) with its gradient ``grad_np``, the
derivative w.r.t. the inputs of ``sum_i [w_i * logp_i + c * H_i]``. Any network backend
(numpy or torch autograd, ``offrl/algos/pgnet.py``) backpropagates that gradient.
``tests/test_dists.py`` checks every formula against torch.distributions and autograd.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import gymnasium as gym
import numpy as np

from offrl.errors import ConfigError, OffrlRuntimeError

_LOG_2PI = math.log(2.0 * math.pi)


def softmax_np(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(probs, log_probs) of logits (N, A), computed stably in numpy."""
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    s = e.sum(axis=1, keepdims=True)
    return e / s, z - np.log(s)


def action_index(actions: np.ndarray, n: int, start: int) -> np.ndarray:
    """Indices (N,) int64, ``action - start``, of actions of ``Discrete(n, start)``; an
    OffrlRuntimeError for one outside the space (a negative index would silently pick
    a column from the other end)."""
    idx = np.asarray(actions).astype(np.int64).reshape(-1) - start
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        bad = int(idx[(idx < 0) | (idx >= n)][0]) + start
        raise OffrlRuntimeError(
            f"action {bad} is not one of the policy's actions {start}..{start + n - 1}; "
            "the data does not match this environment's action space"
        )
    return idx


class Categorical:
    """One of the ``n`` actions ``start .. start + n - 1``; inputs are n logits."""

    def __init__(self, n: int, start: int = 0) -> None:
        self.n = n
        self.start = start
        self.n_params = n  # policy network outputs
        self.n_inputs = n  # action_dist_inputs width

    def sample(
        self, inputs: np.ndarray, rng: np.random.Generator, explore: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        """(actions (N,) int64, logp (N,)): a draw, or the most likely action (values of
        the space: ``start`` + the logit's index)."""
        probs, logp_all = softmax_np(inputs)
        if explore:
            # Inverse-CDF sampling in numpy: cheaper than torch.distributions per step.
            u = rng.random((len(inputs), 1), dtype=np.float32)
            actions = (probs.cumsum(axis=1) < u).sum(axis=1)
            np.minimum(actions, self.n - 1, out=actions)  # cumsum may end at 1 - eps
        else:
            actions = inputs.argmax(axis=1)
        logp = logp_all[np.arange(len(actions)), actions]
        return actions.astype(np.int64) + self.start, logp

    def index(self, actions: np.ndarray) -> np.ndarray:
        """Logit indices (N,) of actions (values of the space)."""
        return action_index(actions, self.n, self.start)

    def logp_np(self, inputs: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """log p(a) (N,) = z_a - logsumexp(z)."""
        return softmax_np(inputs)[1][np.arange(len(inputs)), self.index(actions)]

    def entropy_np(self, inputs: np.ndarray) -> np.ndarray:
        """H (N,) = -sum_k p_k log p_k."""
        probs, logp_all = softmax_np(inputs)
        return -(probs * logp_all).sum(axis=1)

    def kl_np(self, old: np.ndarray, new: np.ndarray) -> np.ndarray:
        """KL(old || new) (N,) = sum_k p_old,k (log p_old,k - log p_new,k)."""
        old_p, old_lp = softmax_np(old)
        return (old_p * (old_lp - softmax_np(new)[1])).sum(axis=1)

    def grad_np(
        self, inputs: np.ndarray, actions: np.ndarray, weights: np.ndarray, c: float
    ) -> np.ndarray:
        """d/dz of sum_i [w_i log p_i(a_i) + c H_i], (N, n): with p = softmax(z),
        dlog p(a)/dz = onehot(a) - p and dH/dz = -p (log p + H)."""
        probs, logp_all = softmax_np(inputs)
        rows = np.arange(len(inputs))
        grad = probs * -weights[:, None]
        grad[rows, self.index(actions)] += weights
        if c:
            entropy = -(probs * logp_all).sum(axis=1, keepdims=True)
            grad -= np.float32(c) * probs * (logp_all + entropy)
        return grad


def _total(terms: Iterable[np.ndarray]) -> np.ndarray:
    """The sum of per-part arrays: ``sum`` typed, without its ``0 +``."""
    parts = iter(terms)
    out = next(parts)
    for term in parts:
        out = out + term
    return out


class MultiCategorical:
    """One Categorical per component of a MultiDiscrete space; the log-probs add up."""

    def __init__(self, nvec: np.ndarray, start: np.ndarray | None = None) -> None:
        self.shape = tuple(nvec.shape)
        starts = np.zeros(nvec.size, dtype=np.int64) if start is None else start.reshape(-1)
        pairs = zip(nvec.reshape(-1), starts, strict=True)
        self.parts = [Categorical(int(k), int(s)) for k, s in pairs]
        self.bounds = np.cumsum([0] + [p.n for p in self.parts])
        self.n_params = int(self.bounds[-1])
        self.n_inputs = self.n_params

    def _split(self, inputs: np.ndarray, i: int) -> np.ndarray:
        """Columns of part ``i``."""
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

    def entropy_np(self, inputs: np.ndarray) -> np.ndarray:
        return _total(p.entropy_np(self._split(inputs, i)) for i, p in enumerate(self.parts))

    def kl_np(self, old: np.ndarray, new: np.ndarray) -> np.ndarray:
        return _total(
            p.kl_np(self._split(old, i), self._split(new, i)) for i, p in enumerate(self.parts)
        )

    def grad_np(
        self, inputs: np.ndarray, actions: np.ndarray, weights: np.ndarray, c: float
    ) -> np.ndarray:
        """Each part's :meth:`Categorical.grad_np`, side by side (log-probs and entropies add)."""
        a = np.asarray(actions, dtype=np.int64).reshape(len(inputs), -1)
        return np.concatenate(
            [
                p.grad_np(self._split(inputs, i), a[:, i], weights, c)
                for i, p in enumerate(self.parts)
            ],
            axis=1,
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

    def entropy_np(self, inputs: np.ndarray) -> np.ndarray:
        """H (N,) = sum_i [log s_i + (1 + log(2 pi)) / 2]."""
        return (inputs[:, self.dim :] + np.float32(0.5 * (1.0 + _LOG_2PI))).sum(axis=1)

    def kl_np(self, old: np.ndarray, new: np.ndarray) -> np.ndarray:
        """KL(old || new) (N,) = sum [log(s1/s0) + (s0^2 + (m0 - m1)^2) / (2 s1^2) - 1/2]."""
        m0, ls0 = old[:, : self.dim], old[:, self.dim :]
        m1, ls1 = new[:, : self.dim], new[:, self.dim :]
        var_ratio = np.exp(2.0 * (ls0 - ls1))
        mean_term = (m0 - m1) ** 2 * np.exp(-2.0 * ls1)
        return (ls1 - ls0 + 0.5 * (var_ratio + mean_term) - 0.5).sum(axis=1)

    def grad_np(
        self, inputs: np.ndarray, actions: np.ndarray, weights: np.ndarray, c: float
    ) -> np.ndarray:
        """d/d(means, log-stds) of sum_i [w_i log p_i(a_i) + c H_i], (N, 2 * dim):
        with z = (a - m) / s, dlog p/dm = z / s, dlog p/dlog s = z^2 - 1, dH/dlog s = 1."""
        mean, log_std = inputs[:, : self.dim], inputs[:, self.dim :]
        a = np.asarray(actions, dtype=np.float32).reshape(len(inputs), self.dim)
        inv_std = np.exp(-log_std)
        z = (a - mean) * inv_std
        w = weights[:, None]
        return np.concatenate([w * z * inv_std, w * (z * z - 1.0) + np.float32(c)], axis=1)


ActionDist = Categorical | MultiCategorical | DiagGaussian


def action_dist(space: gym.Space, algo: str) -> ActionDist:
    """The distribution for ``space``; a ConfigError naming the space for any other."""
    if isinstance(space, gym.spaces.Discrete):
        return Categorical(int(space.n), int(space.start))
    if isinstance(space, gym.spaces.MultiDiscrete):
        return MultiCategorical(space.nvec, np.asarray(space.start))
    if isinstance(space, gym.spaces.Box) and np.issubdtype(space.dtype, np.floating):
        return DiagGaussian(tuple(space.shape))
    raise ConfigError(
        f"{algo} supports Discrete, MultiDiscrete and float Box action spaces; this env has {space}"
    )
