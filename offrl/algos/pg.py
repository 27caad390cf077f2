"""Vanilla policy gradient (RLlib's PG) with optional baseline, GAE, entropy bonus, KL guard.

Reads top to bottom: config, network, acting, post-processing (returns and
advantages), then the loss and the learner step. With the defaults it is RLlib's
PG: loss = -mean(logp(a|s) * G), G the discounted return of the episode segment.
The policy is a categorical, one categorical per MultiDiscrete component, or a
diagonal Gaussian for Box actions (``offrl/algos/dists.py``); only the categorical
over an MLP has the numpy fast path (``_step_numpy``), everything else uses autograd.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from offrl import batch as sb
from offrl.algos.base import as_tensor, set_cpu_threads
from offrl.algos.configs import PGConfig, scheduled_lr
from offrl.algos.dists import Categorical, action_dist
from offrl.algos.fastmlp import (
    Adam,
    MLPPlan,
    backward,
    clip_grad_norm,
    flatten_parameters,
    forward,
    plan_sequential,
)
from offrl.algos.models import is_mlp
from offrl.algos.pgnet import FastForward, PGModel, pg_loss, softmax_np
from offrl.batch import SampleBatch
from offrl.errors import ConfigError
from offrl.preprocess import env_actions, flat_size
from offrl.returns import segment_discounted_sums
from offrl.seeding import Stream, generator, int_seed

# -- the algorithm ------------------------------------------------------------------------


class PG:
    """Policy gradient learner plus the policy that acts for it (see ``offrl/algos/dists.py``)."""

    def __init__(
        self, config: PGConfig, observation_space: gym.Space, action_space: gym.Space
    ) -> None:
        self.config = config
        self.action_space = action_space
        self.dist = action_dist(action_space, "PG")
        self.obs_dim = flat_size(observation_space)
        seed = 0 if config.seed is None else config.seed
        set_cpu_threads(config.num_threads)
        with torch.random.fork_rng():  # seeded init without touching the caller's global RNG
            torch.manual_seed(int_seed(seed, Stream.MODEL_INIT))
            self.model = PGModel(observation_space, self.dist, config.model, config.use_baseline)
        # The numpy fast path (see offrl/algos/fastmlp.py) when every layer is supported:
        # first, because it moves the parameters that everything below takes views of.
        self._flat, where = flatten_parameters(self.model)
        self._grad = np.zeros_like(self._flat)
        self._pi_plan = plan_sequential(self.model.pi, where, self._flat, self._grad)
        self._vf_plan = (
            None
            if self.model.vf is None
            else plan_sequential(self.model.vf, where, self._flat, self._grad)
        )
        # The hand-written gradients are the categorical policy's; other distributions
        # (and conv encoders, which have no plan) learn with autograd.
        self.fast = (
            isinstance(self.dist, Categorical)
            and self._pi_plan is not None
            and (self.model.vf is None or self._vf_plan is not None)
        )
        self.adam = Adam(len(self._flat))
        self.lr = scheduled_lr(config.lr, config.lr_schedule, 0)
        # fused: one kernel for all parameters instead of ~10 small ops per tensor per step
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr, fused=True)
        self.rng = generator(seed, Stream.LEARNER)
        self.num_grad_updates = 0
        act = config.model.get("fcnet_activation", "tanh")
        self._pi_fast = FastForward(self.model.pi, act) if is_mlp(self.model.pi) else None
        vf = self.model.vf
        self._vf_fast = FastForward(vf, act) if vf is not None and is_mlp(vf) else None

    # -- acting ---------------------------------------------------------------------------
    def _obs_np(self, obs: np.ndarray) -> np.ndarray:
        return np.asarray(obs, dtype=np.float32).reshape(len(obs), self.obs_dim)

    def _logits(self, obs: np.ndarray) -> np.ndarray:
        """``action_dist_inputs`` (N, dist.n_inputs) for observations (N, ...): logits,
        or a Gaussian's means then log-stds."""
        if self._pi_plan is not None:
            out = forward(self._pi_plan, self._obs_np(obs))[-1]
        else:
            with torch.inference_mode():
                x = self._obs_tensor(obs)
                out = (self._pi_fast or self.model.pi)(x).numpy()
        log_std = self.model.log_std
        if log_std is None:
            return out
        return np.concatenate([out, np.broadcast_to(log_std.detach().numpy(), out.shape)], 1)

    def _obs_tensor(self, obs: np.ndarray) -> torch.Tensor:
        """Observations (N, ...) as a float32 (N, obs_dim) tensor."""
        return as_tensor(np.asarray(obs, dtype=np.float32).reshape(len(obs), self.obs_dim))

    def compute_actions(
        self, obs: np.ndarray, *, explore: bool
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Sample (explore) or greedy actions (the mode; a Gaussian's mean), as recorded;
        extras are the behaviour policy's columns, ``action_logp`` that of the recorded
        action. :meth:`env_actions` turns them into what the env receives."""
        inputs = self._logits(obs)
        actions, logp = self.dist.sample(inputs, self.rng, explore)
        extras = {
            sb.ACTION_PROB: np.exp(logp),
            sb.ACTION_LOGP: logp,
            sb.ACTION_DIST_INPUTS: inputs,
        }
        return actions, extras

    def env_actions(self, actions: np.ndarray) -> np.ndarray:
        """Recorded actions -> the env's: Box actions un-normalized and clipped to the bounds."""
        return env_actions(self.action_space, actions, self.config.normalize_actions)

    def action_probs(self, obs: np.ndarray) -> np.ndarray:
        """Probabilities (N, n_actions) of every action under the current policy (Discrete)."""
        if not isinstance(self.dist, Categorical):
            raise ConfigError(
                f"action probabilities need Discrete actions, not {self.action_space}"
            )
        return softmax_np(self._logits(obs))[0]

    def action_logp(self, obs: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """log pi(actions | obs) (N,) under the current policy, for any action space."""
        return self.dist.logp_np(self._logits(obs), actions)

    def rollout_fragment_length(self) -> int:
        """Vector steps per fragment, so that one fragment of all envs is one train batch."""
        return math.ceil(self.config.train_batch_size / self.config.num_envs_per_worker)

    def steps_per_iteration(self) -> int:
        """Rows per training iteration: one train batch."""
        return self.config.train_batch_size

    # -- post-processing ------------------------------------------------------------------
    def _values(self, obs: np.ndarray) -> np.ndarray:
        if self.model.vf is None:
            return np.zeros(len(obs))
        if self._vf_plan is not None:
            return forward(self._vf_plan, self._obs_np(obs))[-1][:, 0].astype(np.float64)
        with torch.inference_mode():
            x = self._obs_tensor(obs)
            return (self._vf_fast or self.model.vf)(x).squeeze(-1).numpy().astype(np.float64)

    def postprocess(self, batch: SampleBatch) -> SampleBatch:
        """Add ``advantages`` and ``value_targets`` (and ``vf_preds`` with a baseline)."""
        n = batch.count
        rewards = np.asarray(batch[sb.REWARDS], dtype=np.float64)
        terminated = terminateds(batch)
        end = segment_ends(batch)
        cfg = self.config
        out = SampleBatch(dict(batch.columns))
        if self.model.vf is None:
            # No baseline: truncated and cut segments bootstrap from 0 (RLlib's PG).
            returns = segment_discounted_sums(rewards, end, cfg.gamma)
            out[sb.ADVANTAGES] = returns.astype(np.float32)
            out[sb.VALUE_TARGETS] = returns.astype(np.float32)
            return out
        values = self._values(batch[sb.OBS])
        next_values = np.zeros(n)
        next_values[:-1] = values[1:]
        # Trap: a terminated segment never bootstraps; a truncated or cut one does, from
        # V(new_obs) of its last row, but only where that new_obs is known.
        next_values[end] = 0.0
        boot_rows = np.flatnonzero(end & ~terminated & new_obs_known(batch))
        if len(boot_rows):
            next_values[boot_rows] = self._values(batch[sb.NEW_OBS][boot_rows])
        deltas = rewards + cfg.gamma * next_values - values
        advantages = segment_discounted_sums(deltas, end, cfg.gamma * cfg.lambda_)
        out[sb.ADVANTAGES] = advantages.astype(np.float32)
        out[sb.VALUE_TARGETS] = (advantages + values).astype(np.float32)
        out[sb.VF_PREDS] = values.astype(np.float32)
        return out

    # -- learning -------------------------------------------------------------------------
    def learn(self, batch: SampleBatch, timesteps_total: int) -> dict[str, float]:
        """Gradient steps on one post-processed batch; returns learner stats."""
        if sb.ADVANTAGES not in batch:
            raise ConfigError(
                "PG needs an 'advantages' column to learn from, and this input batch has none "
                f'(columns: {", ".join(sorted(batch.keys()))}); set "postprocess_inputs": '
                "true in the config so offrl computes discounted returns from the rewards"
            )
        cfg = self.config
        self.lr = scheduled_lr(cfg.lr, cfg.lr_schedule, timesteps_total)
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr
        targets = batch.get(sb.VALUE_TARGETS)
        # Without value targets torch leaves the value net's Adam state untouched; the
        # flat numpy Adam would not, so such batches take the autograd path.
        if self.fast and (targets is not None or self.model.vf is None):
            return self._learn_numpy(batch)
        obs = self._obs_tensor(batch[sb.OBS])
        actions = self.dist.actions_tensor(batch[sb.ACTIONS])
        adv = as_tensor(batch[sb.ADVANTAGES])
        if cfg.normalize_advantages and len(adv) > 1:
            adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        vt = as_tensor(targets) if targets is not None and self.model.vf is not None else None
        n = len(obs)
        if n == 0:
            return {"num_grad_updates": float(self.num_grad_updates)}
        old_logp = None
        if cfg.kl_target is not None:
            with torch.no_grad():
                old_logp = self.model.dist_inputs(obs)

        def step(rows: np.ndarray | None) -> dict[str, float]:
            idx = None if rows is None else torch.from_numpy(rows)
            return self._step(obs, actions, adv, vt, old_logp, idx)

        return self._summary(self._passes(n, step))

    def _passes(
        self, n: int, step: Callable[[np.ndarray | None], dict[str, float]]
    ) -> list[dict[str, float]]:
        """``num_sgd_iter`` passes of ``step(rows)`` over shuffled minibatches (None: all rows).

        Equal-size minibatches; the n % size leftover rows (a different random few each
        pass) sit a pass out rather than make one small, noisy step. Stops at the first
        step that reports ``stopped_early`` (the KL guard).
        """
        cfg = self.config
        size = n if cfg.sgd_minibatch_size is None else min(cfg.sgd_minibatch_size, n)
        stats: list[dict[str, float]] = []
        for _ in range(cfg.num_sgd_iter):
            order = self.rng.permutation(n) if size < n else None
            for start in range(0, n - size + 1, size):
                stats.append(step(None if order is None else order[start : start + size]))
                if stats[-1].get("stopped_early"):
                    return stats
        return stats

    def _summary(self, stats: list[dict[str, float]]) -> dict[str, float]:
        keys = dict.fromkeys(k for s in stats for k in s)  # a stopped step has no grad_gnorm
        mean = {k: float(np.mean([s[k] for s in stats if k in s])) for k in keys}
        mean["cur_lr"] = self.lr
        mean["num_grad_updates"] = float(self.num_grad_updates)
        return mean

    def _learn_numpy(self, batch: SampleBatch) -> dict[str, float]:
        """:meth:`learn` on the numpy fast path: the same minibatches, loss and Adam."""
        cfg = self.config
        obs = self._obs_np(batch[sb.OBS])
        actions = np.asarray(batch[sb.ACTIONS], dtype=np.int64)
        adv = np.asarray(batch[sb.ADVANTAGES], dtype=np.float32)
        n = len(obs)
        if n == 0:
            return {"num_grad_updates": float(self.num_grad_updates)}
        if cfg.normalize_advantages and n > 1:
            adv = (adv - adv.mean()) / (adv.std(ddof=1) + np.float32(1e-8))
        vt = None
        if self.model.vf is not None:
            vt = np.asarray(batch[sb.VALUE_TARGETS], dtype=np.float32)
        old_logp = None
        if cfg.kl_target is not None:
            old_logp = softmax_np(self._logits(obs))[1]

        def step(rows: np.ndarray | None) -> dict[str, float]:
            pick = slice(None) if rows is None else rows
            return self._step_numpy(
                obs[pick],
                actions[pick],
                adv[pick],
                None if vt is None else vt[pick],
                None if old_logp is None else old_logp[pick],
            )

        return self._summary(self._passes(n, step))

    def _step_numpy(
        self,
        obs: np.ndarray,
        actions: np.ndarray,
        adv: np.ndarray,
        vt: np.ndarray | None,
        old_logp: np.ndarray | None,
    ) -> dict[str, float]:
        """:meth:`_step` in numpy, with the gradients of :func:`pg_loss` written out:

        with p = softmax(z), dL/dz = -(A/B)(onehot(a) - p) + (c_H/B) p (log p + H)
        (H the row's entropy) and dL/dV = c_V (V - vt) / B.
        """
        cfg = self.config
        pi_plan = self._pi_plan
        assert pi_plan is not None
        b = len(obs)
        rows = np.arange(b)
        pi_outs = forward(pi_plan, obs)
        probs, logp_all = softmax_np(pi_outs[-1])
        logp = logp_all[rows, actions]
        row_entropy = -(probs * logp_all).sum(axis=1)
        out = {
            "policy_loss": -float(np.dot(logp, adv)) / b,
            "entropy": float(row_entropy.sum()) / b,
        }
        if old_logp is not None:
            out["kl"] = float((np.exp(old_logp) * (old_logp - logp_all)).sum()) / b
        stop = old_logp is not None and cfg.kl_target is not None and out["kl"] > cfg.kl_target
        if vt is not None and self._vf_plan is not None:
            out["vf_loss"] = self._vf_loss(self._vf_plan, obs, vt, grad=not stop)
        out["total_loss"] = (
            out["policy_loss"]
            - cfg.entropy_coeff * out["entropy"]
            + cfg.vf_loss_coeff * out.get("vf_loss", 0.0)
        )
        if stop:
            return out | {"stopped_early": 1.0}
        scale = adv * np.float32(1.0 / b)
        grad_z = probs * scale[:, None]
        grad_z[rows, actions] -= scale
        if cfg.entropy_coeff:
            grad_z += np.float32(cfg.entropy_coeff / b) * probs * (logp_all + row_entropy[:, None])
        backward(pi_plan, pi_outs, grad_z, b)
        clip = cfg.grad_clip
        norm = clip_grad_norm(self._grad, clip if clip is not None else float("inf"))
        self.adam.step(self._flat, self._grad, self.lr)
        self.num_grad_updates += 1
        return out | {"grad_gnorm": norm, "stopped_early": 0.0}

    def _vf_loss(self, plan: MLPPlan, obs: np.ndarray, vt: np.ndarray, *, grad: bool) -> float:
        """0.5 * mean((V - vt)^2); with ``grad``, writes the value net's gradients (x coeff)."""
        outs = forward(plan, obs)
        diff = outs[-1][:, 0] - vt
        if grad:
            scale = np.float32(self.config.vf_loss_coeff / len(obs))
            backward(plan, outs, (diff * scale)[:, None], len(obs))
        return 0.5 * float(np.dot(diff, diff)) / len(obs)

    def _step(
        self,
        obs: torch.Tensor,
        actions: torch.Tensor,
        adv: torch.Tensor,
        vt: torch.Tensor | None,
        old_logp: torch.Tensor | None,
        idx: torch.Tensor | None,
    ) -> dict[str, float]:
        """One Adam step on rows ``idx`` (all rows when None), unless past ``kl_target``."""
        if idx is not None:
            obs, actions, adv = obs[idx], actions[idx], adv[idx]
            vt = None if vt is None else vt[idx]
            old_logp = None if old_logp is None else old_logp[idx]
        losses = pg_loss(self.model, obs, actions, adv, vt, self.config, old_logp)
        kl_target = self.config.kl_target
        if kl_target is not None and losses["kl"].item() > kl_target:
            return {k: v.item() for k, v in losses.items()} | {"stopped_early": 1.0}
        self.optimizer.zero_grad(set_to_none=True)
        losses["total_loss"].backward()
        clip = self.config.grad_clip
        norm = nn.utils.clip_grad_norm_(
            self.model.parameters(), clip if clip is not None else float("inf")
        )
        self.optimizer.step()
        self.num_grad_updates += 1
        out = {k: v.item() for k, v in losses.items()}
        out["grad_gnorm"] = float(norm)
        out["stopped_early"] = 0.0
        return out

    # -- checkpoints ----------------------------------------------------------------------
    def get_state(self) -> dict[str, Any]:
        """Networks, optimizer, update counter and exploration RNG state (weights_only-safe)."""
        return {
            "model": self.model.state_dict(),
            "optimizer": (self.adam.checkpoint() if self.fast else self.optimizer.state_dict()),
            "rng": self.rng.bit_generator.state,
            "num_grad_updates": self.num_grad_updates,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore ``get_state()`` in place (FastForward keeps its views of the parameters)."""
        self.model.load_state_dict(state["model"])
        opt = state["optimizer"]
        if not self.fast:
            self.optimizer.load_state_dict(opt)
        else:
            self.adam.restore(opt)
        self.rng.bit_generator.state = state["rng"]
        self.num_grad_updates = int(state["num_grad_updates"])


# -- batch helpers ------------------------------------------------------------------------


def terminateds(batch: SampleBatch) -> np.ndarray:
    """Rows that ended a true terminal; files with only ``dones`` count as terminated."""
    if sb.TERMINATEDS in batch:
        return np.asarray(batch[sb.TERMINATEDS], dtype=bool)
    done = batch.dones_column()
    if done is None:
        raise ConfigError("PG post-processing needs a 'dones' or 'terminateds' column")
    return done


def segment_ends(batch: SampleBatch) -> np.ndarray:
    """Last row of each episode part: done, eps_id changes after it, or the batch ends."""
    n = batch.count
    end = np.zeros(n, dtype=bool)
    if n == 0:
        return end
    done = batch.dones_column()
    if done is not None:
        end |= done
    if sb.EPS_ID in batch:
        eps = batch[sb.EPS_ID]
        end[:-1] |= eps[1:] != eps[:-1]
    end[-1] = True
    return end


def new_obs_known(batch: SampleBatch) -> np.ndarray:
    """Rows whose ``new_obs`` exists and is valid (readers mark rebuilt gaps False)."""
    if sb.NEW_OBS not in batch:
        return np.zeros(batch.count, dtype=bool)
    if sb.NEW_OBS_VALID in batch:
        return np.asarray(batch[sb.NEW_OBS_VALID], dtype=bool)
    return np.ones(batch.count, dtype=bool)
