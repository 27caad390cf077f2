"""Vanilla policy gradient (RLlib's PG) with optional baseline, GAE, entropy bonus, KL guard.

Reads top to bottom: config, network, acting, post-processing (returns and
advantages), then the loss and the learner step. With the defaults it is RLlib's
PG: loss = -mean(logp(a|s) * G), G the discounted return of the episode segment.
The policy is a categorical, one categorical per MultiDiscrete component, or a
diagonal Gaussian for Box actions (``offrl/algos/dists.py``). The loss and its
gradient are written once, here, in numpy; a backend (``offrl/algos/pgnet.py``: numpy
for MLPs, torch autograd for image encoders) runs the networks and steps one Adam.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, cast

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from offrl import batch as sb
from offrl.algos.base import set_cpu_threads
from offrl.algos.configs import PGConfig, scheduled_lr
from offrl.algos.dists import Categorical, DiagGaussian, action_dist, softmax_np
from offrl.algos.fastmlp import grad_norm
from offrl.algos.obsfilter import MeanStdFilter, load_filter_state, make_filter
from offrl.algos.pgnet import PGModel, TorchPG, pg_backend
from offrl.batch import SampleBatch
from offrl.errors import ConfigError, OffrlRuntimeError
from offrl.preprocess import box_bounded, env_actions, flat_size
from offrl.returns import segment_discounted_sums
from offrl.seeding import Stream, generator, int_seed

# -- the algorithm ------------------------------------------------------------------------


class PG:
    """Policy gradient learner plus the policy that acts for it (see ``offrl/algos/dists.py``)."""

    def __init__(
        self,
        config: PGConfig,
        observation_space: gym.Space,
        action_space: gym.Space,
        *,
        numpy_backend: bool = True,
    ) -> None:
        """``numpy_backend=False`` runs even MLPs by autograd (tests and benchmarks)."""
        self.config = config
        self.action_space = action_space
        self.dist = action_dist(action_space, "PG")
        self.obs_dim = flat_size(observation_space)
        self.obs_filter: MeanStdFilter | None = make_filter(
            config.observation_filter, observation_space
        )
        # With normalize_value_targets the value net learns V / s (s: RMS of the targets).
        self.value_scale: MeanStdFilter | None = None
        if config.normalize_value_targets and config.use_baseline:
            self.value_scale = MeanStdFilter(1, "value target scale")
        seed = 0 if config.seed is None else config.seed
        set_cpu_threads(config.num_threads)
        with torch.random.fork_rng():  # seeded init without touching the caller's global RNG
            torch.manual_seed(int_seed(seed, Stream.MODEL_INIT))
            bounded_mean = config.normalize_actions and box_bounded(action_space)
            self.model = PGModel(
                observation_space, self.dist, config.model, config.use_baseline, bounded_mean
            )
        activation = config.model.get("fcnet_activation", "tanh")
        self.nets: TorchPG = pg_backend(self.model, activation, numpy_backend)
        self.lr = scheduled_lr(config.lr, config.lr_schedule, 0)
        self.rng = generator(seed, Stream.LEARNER)
        self.num_grad_updates = 0

    # -- acting ---------------------------------------------------------------------------
    def _flat(self, obs: np.ndarray) -> np.ndarray:
        """Observations (N, ...) as float32 (N, obs_dim), unfiltered."""
        return np.asarray(obs, dtype=np.float32).reshape(len(obs), self.obs_dim)

    def _obs_np(self, obs: np.ndarray) -> np.ndarray:
        """Observations (N, ...) as the networks take them: flat float32, filtered."""
        flat = self._flat(obs)
        return flat if self.obs_filter is None else self.obs_filter(flat)

    def _logits(self, obs: np.ndarray) -> np.ndarray:
        """``action_dist_inputs`` (N, dist.n_inputs) for observations (N, ...): logits,
        or a Gaussian's means then log-stds."""
        return self.nets.dist_inputs(self._obs_np(obs))

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
        """Probabilities (N, n) of every action under the current policy (Discrete):
        column k is the action ``start + k``."""
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
        return self.nets.values(self._obs_np(obs)).astype(np.float64) * self._vf_scale()

    def _vf_scale(self) -> float:
        """s: V(obs) = s * value_net(obs); 1 without normalize_value_targets."""
        if self.value_scale is None:
            return 1.0
        return max(float(self.value_scale.rms[0]), 1e-8)

    def _fold_value_targets(self, vt: np.ndarray) -> np.ndarray:
        """Fold ``vt`` into s, rescale the value net's last layer by s_old / s_new so that V
        stays the same (PopArt's output preservation), and return the targets / s_new."""
        if self.value_scale is None or self.model.vf is None:
            return vt
        old = self._vf_scale()
        self.value_scale.update(vt)
        new = self._vf_scale()
        head = cast(nn.Linear, self.model.vf[-1])
        with torch.no_grad():  # in place: the backend's flat array views these parameters
            head.weight.mul_(old / new)
            head.bias.mul_(old / new)
        return vt / np.float32(new)

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
        raw = self._flat(batch[sb.OBS])
        obs = raw if self.obs_filter is None else self.obs_filter(raw)
        actions = np.asarray(batch[sb.ACTIONS])
        adv = np.asarray(batch[sb.ADVANTAGES], dtype=np.float32)
        n = len(obs)
        if n == 0:
            return {"num_grad_updates": float(self.num_grad_updates)}
        if cfg.normalize_advantages and n > 1:
            adv = (adv - adv.mean()) / (adv.std(ddof=1) + np.float32(1e-8))
        # Offline data may carry only advantages: then the value net is not trained (its
        # parameters and Adam moments stay as they are, see FlatBackend.step).
        vt = None
        if sb.VALUE_TARGETS in batch and self.model.vf is not None:
            vt = self._fold_value_targets(np.asarray(batch[sb.VALUE_TARGETS], dtype=np.float32))
        # The policy before this batch's first step, for the KL guard.
        old_inputs = self.nets.dist_inputs(obs) if cfg.kl_target is not None else None

        def step(rows: np.ndarray | None) -> dict[str, float]:
            pick = slice(None) if rows is None else rows
            return self._step(
                obs[pick],
                actions[pick],
                adv[pick],
                None if vt is None else vt[pick],
                None if old_inputs is None else old_inputs[pick],
            )

        stats = self._summary(self._passes(n, step))
        # Trap: only after the steps, so the batch is learned with the statistics it was
        # sampled with (on-policy), and the policy's input changes between batches only.
        if self.obs_filter is not None:
            self.obs_filter.update(raw)
        return stats

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

    def _step(
        self,
        obs: np.ndarray,
        actions: np.ndarray,
        adv: np.ndarray,
        vt: np.ndarray | None,
        old_inputs: np.ndarray | None,
    ) -> dict[str, float]:
        """One Adam step on these B rows, unless the policy is past ``kl_target``:

        loss = -mean(A * logp(a|s)) - entropy_coeff * mean(H)
               + vf_loss_coeff * 0.5 * mean((V - vt)^2)

        so dLoss/d(dist inputs) is the distribution's gradient of sum_i [w_i logp_i + c H_i]
        with w = -A/B, c = -entropy_coeff/B, and dLoss/dV = vf_loss_coeff (V - vt)/B.
        ``old_inputs``: the dist inputs before the batch's first step, for mean KL(old || now).
        """
        cfg, dist = self.config, self.dist
        b = len(obs)
        inputs, values = self.nets.forward(obs, with_values=vt is not None)
        logp = dist.logp_np(inputs, actions)
        out = {
            "policy_loss": -float(np.dot(logp, adv)) / b,
            "entropy": float(dist.entropy_np(inputs).sum()) / b,
        }
        if old_inputs is not None:
            out["kl"] = float(dist.kl_np(old_inputs, inputs).sum()) / b
        diff = None
        if vt is not None and values is not None:
            diff = values - vt
            out["vf_loss"] = 0.5 * float(np.dot(diff, diff)) / b
        out["total_loss"] = (
            out["policy_loss"]
            - cfg.entropy_coeff * out["entropy"]
            + cfg.vf_loss_coeff * out.get("vf_loss", 0.0)
        )
        if cfg.kl_target is not None and out["kl"] > cfg.kl_target:
            return out | {"stopped_early": 1.0}
        if not math.isfinite(out["total_loss"]):
            raise OffrlRuntimeError(self._diverged(out["total_loss"], "loss"))
        inv_b = np.float32(1.0 / b)
        with np.errstate(over="ignore"):  # an overflow is reported just below
            grad_inputs = dist.grad_np(inputs, actions, -adv * inv_b, -cfg.entropy_coeff * inv_b)
        grad_values = None if diff is None else diff * np.float32(cfg.vf_loss_coeff / b)
        self.nets.backward(grad_inputs, grad_values)
        # Checked before Adam steps, so that the parameters (and checkpoints) stay finite.
        if not math.isfinite(grad_norm(self.nets.grad)):
            raise OffrlRuntimeError(self._diverged(grad_norm(self.nets.grad), "gradient norm"))
        clip = cfg.grad_clip if cfg.grad_clip is not None else float("inf")
        frozen = self.nets.vf_slice if grad_values is None else None
        norm = self.nets.step(self.lr, clip, frozen)
        self.num_grad_updates += 1
        return out | {"grad_gnorm": norm, "stopped_early": 0.0}

    def _diverged(self, value: float, what: str) -> str:
        """What to change when an update is no longer finite."""
        cfg = self.config
        step = self.num_grad_updates + 1
        msg = f"PG's update diverged at gradient update {step}: the {what} is {value}"
        log_std = self.model.log_std
        if isinstance(self.dist, DiagGaussian) and log_std is not None:
            low = float(log_std.detach().min())
            # Trap: the log-std is not bounded; passes over one batch can shrink it without end.
            msg += (
                f"; the Gaussian's log-std is down to {low:.3g} (std {math.exp(low):.3g}): "
                f"{cfg.num_sgd_iter} passes over each batch collapsed the policy onto the "
                "batch's actions"
            )
        return msg + (
            '. Set "kl_target" (e.g. 0.02) to stop a batch\'s passes once the policy has '
            f'moved, or lower "lr" (now {cfg.lr}) or "num_sgd_iter" (now {cfg.num_sgd_iter})'
        )

    # -- checkpoints ----------------------------------------------------------------------
    def get_state(self) -> dict[str, Any]:
        """Networks, optimizer, update counter, exploration RNG state and observation filter
        statistics (weights_only-safe)."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.nets.state_dict(),
            "rng": self.rng.bit_generator.state,
            "num_grad_updates": self.num_grad_updates,
        } | {
            key: stats.state()
            for key, stats in (("obs_filter", self.obs_filter), ("value_scale", self.value_scale))
            if stats is not None
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore ``get_state()`` in place (the backend keeps its views of the parameters).

        The optimizer entry may also be a ``torch.optim.Adam`` state dict over
        ``model.parameters()``, as older offrl versions wrote for some models.
        """
        self.model.load_state_dict(state["model"])
        self.nets.load_state_dict(state["optimizer"])
        self.rng.bit_generator.state = state["rng"]
        self.num_grad_updates = int(state["num_grad_updates"])
        load_filter_state(self.obs_filter, state.get("obs_filter"))
        load_filter_state(
            self.value_scale,
            state.get("value_scale"),
            '"normalize_value_targets": true, this run has false (or no baseline)',
        )


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
