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
from torch import nn

from offrl.algos.base import as_tensor, mlp
from offrl.algos.fastmlp import Adam, backward, flatten_parameters, forward, plan_sequential
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
        # numpy fast path (offrl/algos/fastmlp.py) when the layers allow; else autograd
        self._flat, where = flatten_parameters(self.q)
        self._grad = np.zeros_like(self._flat)
        self._target_flat, target_where = flatten_parameters(self.q_target)
        self._plan = plan_sequential(self.q, where, self._flat, self._grad)
        self._target_plan = plan_sequential(
            self.q_target, target_where, self._target_flat, self._grad
        )
        self._adam = Adam(len(self._flat))
        self.optim = torch.optim.Adam(self.q.parameters(), lr=cfg.lr)
        self.rng = np.random.default_rng(seed)
        self.steps = 0
        self._data: dict[str, torch.Tensor] = {}
        self._np: dict[str, np.ndarray] = {}
        self._bounds: tuple[float, float] | None = None

    def set_data(self, data: Transitions) -> None:
        """Replace the training transitions (kept as tensors for cheap minibatches)."""
        self._data = {
            "obs": as_tensor(data.obs),
            "actions": torch.as_tensor(data.actions, dtype=torch.int64),
            "rewards": as_tensor(data.rewards),
            "next_obs": as_tensor(data.next_obs),
            "next_probs": as_tensor(data.next_probs),
            "bootstrap": as_tensor(data.bootstrap),
        }
        self._np = {k: v.numpy() for k, v in self._data.items()}
        self._bounds = value_bounds(data.rewards, self.gamma)

    def train(self, n_steps: int) -> float:
        """Run ``n_steps`` gradient steps on random minibatches; the mean loss (0 without data)."""
        n = len(self._data["rewards"]) if self._data else 0
        if n == 0:
            return 0.0
        if self._plan is not None and self._target_plan is not None:
            losses = [self._step_numpy(n) for _ in range(n_steps)]
            self.steps += n_steps
            return float(np.mean(losses))
        losses = []
        for _ in range(n_steps):
            idx = torch.as_tensor(self.rng.integers(n, size=min(self.cfg.batch_size, n)))
            batch = {k: v[idx] for k, v in self._data.items()}
            with torch.no_grad():
                next_v = (self.q_target(batch["next_obs"]) * batch["next_probs"]).sum(-1)
                y = batch["rewards"] + self.gamma * batch["bootstrap"] * next_v
                if self._bounds is not None:
                    y = y.clamp(*self._bounds)
            q = self.q(batch["obs"]).gather(1, batch["actions"][:, None]).squeeze(1)
            loss = nn.functional.mse_loss(q, y)
            self.optim.zero_grad()
            loss.backward()
            self.optim.step()
            self._soft_update()
            losses.append(loss.item())
        self.steps += n_steps
        return float(np.mean(losses))

    def _step_numpy(self, n: int) -> float:
        """One step of :meth:`train` in numpy (same draws, loss and Adam): the loss."""
        assert self._plan is not None and self._target_plan is not None
        idx = self.rng.integers(n, size=min(self.cfg.batch_size, n))
        b = {k: v[idx] for k, v in self._np.items()}
        next_v = (forward(self._target_plan, b["next_obs"])[-1] * b["next_probs"]).sum(axis=1)
        y = b["rewards"] + np.float32(self.gamma) * b["bootstrap"] * next_v
        if self._bounds is not None:
            y = np.clip(y, *self._bounds)
        outs = forward(self._plan, b["obs"])
        rows = np.arange(len(idx))
        diff = outs[-1][rows, b["actions"]] - y
        grad_q = np.zeros_like(outs[-1])
        grad_q[rows, b["actions"]] = diff * np.float32(2.0 / len(idx))  # d mean(diff^2)
        backward(self._plan, outs, grad_q, len(idx))
        self._adam.step(self._flat, self._grad, self.cfg.lr)
        self._target_flat += np.float32(self.cfg.tau) * (self._flat - self._target_flat)
        return float(np.dot(diff, diff)) / len(idx)

    def _soft_update(self) -> None:
        with torch.no_grad():
            for p_t, p in zip(self.q_target.parameters(), self.q.parameters(), strict=True):
                p_t.mul_(1 - self.cfg.tau).add_(p, alpha=self.cfg.tau)

    def q_values(self, obs: np.ndarray) -> np.ndarray:
        """Q(s, .) for ``obs`` (N, D) -> (N, A), clamped to the data's value bounds."""
        with torch.no_grad():
            q = self.q(as_tensor(obs)).numpy().astype(np.float64)
        return q if self._bounds is None else np.clip(q, *self._bounds)
