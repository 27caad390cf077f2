"""The one interface every algorithm implements, and the small torch helpers they share.

The trainer drives an algorithm like this (see ``offrl/trainer.py``)::

    while rows_this_iter < algo.steps_per_iteration():
        batch = source.next()                      # live fragment or offline batch
        batch = algo.postprocess(batch)            # when live, or postprocess_inputs
        stats = algo.learn(batch, timesteps_total)
        rows_this_iter += batch.count

The sampler asks ``algo.compute_actions(obs, explore=True)`` for every vector
step; evaluation asks with ``explore=False``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from offrl.batch import SampleBatch
from offrl.config import CommonConfig


class Algorithm(Protocol):
    """A learner plus the policy that acts for it."""

    config: CommonConfig

    def compute_actions(
        self, obs: np.ndarray, *, explore: bool
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Actions for ``obs`` (N, *obs_shape) and extra columns of the behaviour policy.

        Returns ``actions`` as recorded ((N,) for Discrete, (N, *shape) otherwise; for
        Discrete and MultiDiscrete values of the space, ``start`` included) and
        a dict with at least ``action_prob`` (N,), ``action_logp`` (N,) and
        ``action_dist_inputs`` (N, width): the probability (a density for Box actions)
        of the returned action under the policy that chose it. An algorithm whose
        recorded actions differ from what the env takes also has
        ``env_actions(actions)`` (PG: Box actions unsquashed and clipped), which the
        sampler applies before ``env.step``.
        """
        ...

    def action_probs(self, obs: np.ndarray) -> np.ndarray:
        """Probabilities (N, n_actions) of every action under the current (target) policy.

        Off-policy estimation uses it: the target policy's probability of a
        logged action is ``action_probs(obs)[i, actions[i] - start]`` (``start`` that of
        the ``Discrete`` space; recorded actions are values of the space).
        """
        ...

    def rollout_fragment_length(self) -> int:
        """Vector steps per sampled fragment (rows per fragment = this x num_envs)."""
        ...

    def steps_per_iteration(self) -> int:
        """Rows the trainer feeds to ``learn`` in one training iteration."""
        ...

    def postprocess(self, batch: SampleBatch) -> SampleBatch:
        """Add learner columns (PG: returns/advantages; DQN: n-step targets) to a batch."""
        ...

    def learn(self, batch: SampleBatch, timesteps_total: int) -> dict[str, float]:
        """Consume new rows; return learner stats (reported under ``info/learner/``)."""
        ...

    def get_state(self) -> dict[str, Any]:
        """Everything a checkpoint needs: networks, optimizer, counters, RNG states."""
        ...

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore what ``get_state`` returned."""
        ...


_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "swish": nn.SiLU,
    "silu": nn.SiLU,
}


def mlp(in_dim: int, hiddens: Sequence[int], out_dim: int, activation: str) -> nn.Sequential:
    """Fully connected network ``in_dim -> hiddens... -> out_dim`` (no activation at the end)."""
    layers: list[nn.Module] = []
    last = in_dim
    for width in hiddens:
        layers.append(nn.Linear(last, width))
        if activation != "linear":
            layers.append(_ACTIVATIONS[activation]())
        last = width
    layers.append(nn.Linear(last, out_dim))
    return nn.Sequential(*layers)


def obs_dim(space: gym.Space) -> int:
    """Length of a flattened observation of ``space``."""
    return int(gym.spaces.flatdim(space))


def discrete_n(space: gym.Space, algo: str) -> int:
    """Number of actions of a Discrete space; a clear error for anything else."""
    from offrl.errors import ConfigError

    if not isinstance(space, gym.spaces.Discrete):
        raise ConfigError(
            f"{algo} needs a Discrete action space; this env has {space}. "
            "Use --run PG, which also learns Box (Gaussian) and MultiDiscrete actions"
        )
    return int(space.n)


def set_cpu_threads(n: int) -> None:
    """Use ``n`` threads in torch and in numpy's BLAS (the learners' matrix products).

    On small machines a multithreaded BLAS spends more time waking threads than
    multiplying CartPole-sized matrices, and competes with the sampler for cores.
    """
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(n)
    threadpool_limits(limits=n, user_api="blas")


def as_tensor(x: np.ndarray, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A torch view of a numpy array (no copy when dtype and layout allow)."""
    return torch.as_tensor(np.ascontiguousarray(x), dtype=dtype)
