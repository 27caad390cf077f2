"""Fitted Q Evaluation: a small torch Q network for the target policy, fitted on logged data.

The model regresses Q(s, a) onto the target::

    y = r + gamma * (1 - terminated) * sum_a' pi(a'|s') Q_target(s', a')

where pi is the target policy (its probabilities are taken when the data is
processed) and Q_target a slowly tracking copy (Polyak averaging with ``tau``).
Fitting is incremental: each :meth:`FittedQEvaluation.train` call runs a bounded
number of gradient steps, so an estimator can refine the model a little per
training iteration instead of refitting from scratch.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np
import torch

from offrl.algos.base import as_tensor, mlp
from offrl.algos.fastmlp import TorchMLP, mlp_backend
from offrl.errors import ConfigError
from offrl.estimators.base import Episode


@dataclass
class FQEConfig:
    """Settings of the FQE model (``fqe_config`` in ``make_estimators``)."""

    n_iters: int = 100  # gradient steps per estimate() call (bounds its cost)
    lr: float = 3e-3
    batch_size: int = 128
    tau: float = 0.2  # Polyak rate of the target network, per gradient step
    hiddens: list[int] = field(default_factory=lambda: [64, 64])
    activation: str = "relu"
    # dm/dr intervals: 0 = spread over episodes only (the model's error is NOT included);
    # B > 0 = B bootstrap resamples of the episodes, each with its own refitted model
    bootstrap: int = 0

    @staticmethod
    def from_dict(data: dict | None) -> FQEConfig:
        """Build from a dict; unknown keys or bad values are a ConfigError naming them."""
        data = dict(data or {})
        known = {f.name for f in fields(FQEConfig)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"fqe_config: unknown keys {unknown}; valid keys: {sorted(known)}")
        cfg = FQEConfig(**data)
        checks = {
            "n_iters": cfg.n_iters >= 1,
            "lr": cfg.lr > 0,
            "batch_size": cfg.batch_size >= 1,
            "tau": 0 < cfg.tau <= 1,
            "bootstrap": cfg.bootstrap == 0 or cfg.bootstrap >= 2,
        }
        for key, ok in checks.items():
            if not ok:
                raise ConfigError(f"fqe_config: {key} = {getattr(cfg, key)!r} is out of range")
        return cfg


@dataclass
class Transitions:
    """Flat arrays of every step of a set of episodes. N steps, D obs dims, A actions."""

    obs: np.ndarray  # (N, D)
    actions: np.ndarray  # (N,)
    rewards: np.ndarray  # (N,)
    next_obs: np.ndarray  # (N, D), zeros where not bootstrapped
    next_probs: np.ndarray  # (N, A) target-policy probs at next_obs
    bootstrap: np.ndarray  # (N,) 1.0 where the target bootstraps from next_obs


def episodes_to_transitions(episodes: list[Episode]) -> Transitions:
    """Transitions of whole episodes; inside an episode s_{t+1} = obs[t+1].

    The last step bootstraps only when the episode was truncated (not terminated)
    and its ``new_obs`` was recorded; otherwise it is treated as terminal.
    """
    parts: dict[str, list[np.ndarray]] = {k: [] for k in Transitions.__dataclass_fields__}
    for ep in episodes:
        obs, probs = ep.obs, ep.target_probs
        if obs is None:
            raise ValueError("FQE needs episodes collected with keep_states=True")
        last_obs, last_probs = np.zeros_like(obs[0]), np.zeros_like(probs[0])
        boot_last = not ep.terminated and ep.last_next_obs is not None
        if boot_last and ep.last_next_obs is not None and ep.last_next_probs is not None:
            last_obs, last_probs = ep.last_next_obs, ep.last_next_probs
        boot = np.ones(len(obs))
        boot[-1] = float(boot_last)
        parts["obs"].append(obs)
        parts["actions"].append(ep.actions)
        parts["rewards"].append(ep.rewards)
        parts["next_obs"].append(np.concatenate([obs[1:], last_obs[None]]))
        parts["next_probs"].append(np.concatenate([probs[1:], last_probs[None]]))
        parts["bootstrap"].append(boot)
    return Transitions(**{k: np.concatenate(v) for k, v in parts.items()})


def value_bounds(rewards: np.ndarray, gamma: float) -> tuple[float, float] | None:
    """Range every discounted value lies in: [min(0, r_min), max(0, r_max)] / (1 - gamma).

    Clamping targets to it stops the extrapolation runaway of off-policy bootstrapping
    with function approximation (the "deadly triad"), seen as Q values above
    r_max / (1 - gamma) on CartPole. None (no clamp) for gamma >= 1 or no rewards.
    """
    if gamma >= 1 or len(rewards) == 0:
        return None
    scale = 1.0 / (1.0 - gamma)
    return min(0.0, float(rewards.min())) * scale, max(0.0, float(rewards.max())) * scale


class FittedQEvaluation:
    """A Q network for the target policy, fitted incrementally on :class:`Transitions`."""

    def __init__(self, obs_dim: int, n_actions: int, gamma: float, cfg: FQEConfig, seed: int):
        self.gamma = gamma
        self.cfg = cfg
        # Seed the init without touching torch's global RNG (no global mutable state).
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.q = mlp(obs_dim, cfg.hiddens, n_actions, cfg.activation)
            self.q_target = mlp(obs_dim, cfg.hiddens, n_actions, cfg.activation)
        self.q_target.load_state_dict(self.q.state_dict())
        # How the networks run: numpy when the layers allow (offrl/algos/fastmlp.py),
        # else autograd; the update in train() is the same either way.
        self.online: TorchMLP = mlp_backend(self.q)
        self.target: TorchMLP = mlp_backend(self.q_target)  # forward only
        self.rng = np.random.default_rng(seed)
        self.steps = 0
        self._np: dict[str, np.ndarray] = {}
        self._bounds: tuple[float, float] | None = None

    def set_data(self, data: Transitions) -> None:
        """Replace the training transitions (float32 arrays, int64 actions)."""
        columns = {
            "obs": as_tensor(data.obs),
            "actions": torch.as_tensor(data.actions, dtype=torch.int64),
            "rewards": as_tensor(data.rewards),
            "next_obs": as_tensor(data.next_obs),
            "next_probs": as_tensor(data.next_probs),
            "bootstrap": as_tensor(data.bootstrap),
        }
        self._np = {k: v.numpy() for k, v in columns.items()}
        self._bounds = value_bounds(data.rewards, self.gamma)

    def train(self, n_steps: int) -> float:
        """Run ``n_steps`` gradient steps on random minibatches; the mean loss (0 without data).

        loss = mean((Q(s, a) - y)^2), y = r + gamma * bootstrap * sum_a' pi(a'|s')
        Q_target(s', a') held fixed (clamped to the value bounds), so dloss/dQ(s, a) =
        2 (Q(s, a) - y) / B; then Adam and a Polyak step of the target.
        """
        n = len(self._np["rewards"]) if self._np else 0
        if n == 0:
            return 0.0
        losses = []
        for _ in range(n_steps):
            idx = self.rng.integers(n, size=min(self.cfg.batch_size, n))
            b = {k: v[idx] for k, v in self._np.items()}
            next_v = (self.target.forward(b["next_obs"]) * b["next_probs"]).sum(axis=1)
            y = b["rewards"] + np.float32(self.gamma) * b["bootstrap"] * next_v
            if self._bounds is not None:
                y = np.clip(y, *self._bounds)
            q = self.online.forward(b["obs"])
            rows = np.arange(len(idx))
            diff = q[rows, b["actions"]] - y
            grad_q = np.zeros_like(q)
            grad_q[rows, b["actions"]] = diff * np.float32(2.0 / len(idx))
            self.online.backward(grad_q)
            self.online.step(self.cfg.lr, None)
            self.target.flat += np.float32(self.cfg.tau) * (self.online.flat - self.target.flat)
            losses.append(float(np.dot(diff, diff)) / len(idx))
        self.steps += n_steps
        return float(np.mean(losses))

    def q_values(self, obs: np.ndarray) -> np.ndarray:
        """Q(s, .) for ``obs`` (N, D) -> (N, A), clamped to the data's value bounds."""
        with torch.no_grad():
            q = self.q(as_tensor(obs)).numpy().astype(np.float64)
        return q if self._bounds is None else np.clip(q, *self._bounds)
