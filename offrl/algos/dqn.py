"""DQN (Mnih et al. 2015) with double Q, dueling heads, n-step returns and prioritized replay.

Reads top to bottom: schedules, n-step transitions, the learner (the Q network and
the TD math on Q values are in ``offrl/algos/qnet.py``).
The learner works the same online (fragments from the sampler) and offline
(records from files): every batch is turned into transitions
``(obs, action, R, discount, next_obs)`` with ``R`` the n-step return and
``discount`` = gamma^k, or 0 when the n-step window ends on a true terminal,
stored in a replay buffer, and replayed for updates.
"""

from __future__ import annotations

import math
from typing import Any, cast

import gymnasium as gym
import numpy as np
import torch

from offrl import batch as sb
from offrl.algos.base import discrete_n, set_cpu_threads
from offrl.algos.configs import DQNConfig, scheduled_lr
from offrl.algos.dists import action_index
from offrl.algos.obsfilter import MeanStdFilter, load_filter_state, make_filter
from offrl.algos.qnet import QNetwork, TorchQ, huber, huber_grad, q_backend, td_targets
from offrl.algos.replay import PrioritizedReplayBuffer, ReplayBuffer
from offrl.batch import SampleBatch
from offrl.errors import OffrlRuntimeError
from offrl.preprocess import preprocessor
from offrl.returns import n_step_targets
from offrl.seeding import Stream, generator, int_seed

# Columns postprocess() adds; learn() computes them itself for batches that skipped it.
N_STEP_RETURNS = "n_step_returns"
N_STEP_DISCOUNTS = "n_step_discounts"
N_STEP_NEW_OBS = "n_step_new_obs"
TD_VALID = "td_valid"

# -- schedules -------------------------------------------------------------------


def linear_schedule(t: float, start: float, end: float, duration: float) -> float:
    """``start + (end - start) * min(t / duration, 1)``; ``end`` when duration is 0."""
    if duration <= 0:
        return end
    return start + (end - start) * min(max(t, 0.0) / duration, 1.0)


def epsilon_at(config: DQNConfig, t: int) -> float:
    """Exploration epsilon at timestep ``t``."""
    duration = config.exploration_fraction * config.schedule_max_timesteps
    return linear_schedule(
        t, config.exploration_initial_eps, config.exploration_final_eps, duration
    )


def lr_at(config: DQNConfig, t: int) -> float:
    """Learning rate at timestep ``t``: ``lr_schedule`` interpolated, or the constant ``lr``."""
    return scheduled_lr(config.lr, config.lr_schedule, t)


def epsilon_greedy_probs(greedy: np.ndarray, actions: np.ndarray, eps: float, n: int) -> np.ndarray:
    """Probability (N,) of ``actions`` under epsilon-greedy: 1-eps+eps/n if greedy, else eps/n."""
    return np.where(actions == greedy, 1.0 - eps + eps / n, eps / n).astype(np.float32)


# -- n-step transitions -------------------------------------------------------------


def transitions(batch: SampleBatch, gamma: float, n_step: int) -> dict[str, np.ndarray]:
    """n-step transition columns for ``batch`` (rows grouped per episode, in time order).

    A segment ends at an ``eps_id`` change, a done, the batch end, and both at and
    just before a row whose ``new_obs`` is unknown (``new_obs_valid`` False): n-step
    sums never cross one. ``td_valid`` is False for rows whose own or bootstrap
    ``new_obs`` is unknown (unless terminated, where it is never used).
    """
    if sb.NEW_OBS not in batch:
        raise OffrlRuntimeError(
            f"DQN needs a 'new_obs' column; this batch has only {sorted(batch.keys())}. "
            "Record experiences with new_obs, or read them with offrl's reader, which rebuilds it"
        )
    n = batch.count
    dones = batch.dones_column()
    if dones is None:
        raise OffrlRuntimeError("DQN needs 'dones' or 'terminateds' in every batch")
    # Old files have only `dones`: FORMAT.md says treat them as terminated.
    term = np.asarray(batch.get(sb.TERMINATEDS, dones), dtype=bool)
    valid = np.asarray(batch.get(sb.NEW_OBS_VALID, np.ones(n, dtype=bool)), dtype=bool)
    known = valid | term  # a terminal's new_obs is never used, so it need not be known
    seg_end = dones | ~valid
    seg_end[-1:] = True
    seg_end[:-1] |= ~valid[1:]
    if sb.EPS_ID in batch:
        eps = batch[sb.EPS_ID]
        seg_end[:-1] |= eps[1:] != eps[:-1]
    ret, nxt, disc = n_step_targets(batch[sb.REWARDS], term, seg_end, gamma, n_step)
    new_obs = np.asarray(batch[sb.NEW_OBS])
    new_obs = new_obs.reshape(n, -1).astype(_obs_dtype(new_obs), copy=False)
    return {
        N_STEP_RETURNS: ret.astype(np.float32),
        N_STEP_DISCOUNTS: disc.astype(np.float32),
        N_STEP_NEW_OBS: new_obs[nxt],
        TD_VALID: known & known[nxt],
    }


def _obs_dtype(obs: np.ndarray) -> type:
    """uint8 frames stay uint8 until the network reads them; anything else is float32."""
    return np.uint8 if obs.dtype == np.uint8 else np.float32


# -- the learner -------------------------------------------------------------------

_REPLAY_COLUMNS = (sb.OBS, sb.ACTIONS, N_STEP_RETURNS, N_STEP_DISCOUNTS, N_STEP_NEW_OBS)
_COUNTERS = ("num_steps_sampled", "num_updates", "num_target_updates", "last_target_update")


class DQN:
    """Epsilon-greedy policy plus replay learner; see the module docstring."""

    def __init__(
        self, config: DQNConfig, observation_space: gym.Space, action_space: gym.Space
    ) -> None:
        config.validate()  # a DQNConfig built directly has not been through from_dict
        self.config = config
        self.n_actions = discrete_n(action_space, "DQN")
        # The env's actions are start .. start + n - 1; Q columns and replay hold start-free
        # indices: compute_actions adds start, learn() takes it off (the only two places).
        self.action_start = int(cast(gym.spaces.Discrete, action_space).start)
        seed = config.seed if config.seed is not None else 0
        set_cpu_threads(config.num_threads)
        with torch.random.fork_rng():  # seeded init without touching the caller's global RNG
            torch.manual_seed(int_seed(seed, Stream.MODEL_INIT))
            self.online = QNetwork(observation_space, self.n_actions, config)
        self.target = QNetwork(observation_space, self.n_actions, config)
        # Replay keeps uint8 frames as uint8 (4x less memory); everything else is float32.
        self.obs_dtype = preprocessor(observation_space).dtype
        # Replay keeps unfiltered observations; the filter applies at the network input.
        self.obs_filter: MeanStdFilter | None = make_filter(
            config.observation_filter, observation_space
        )
        self.target.load_state_dict(self.online.state_dict())
        self.target.requires_grad_(False)
        self.lr = lr_at(config, 0)
        # How the networks run: numpy for small MLPs (cheaper updates at CartPole sizes;
        # benchmarks/README.md), torch autograd for the rest. The update below is the same.
        self.nets: TorchQ = q_backend(self.online, self.target, config.adam_epsilon)
        self.explore_rng = generator(seed, Stream.EXPLORATION)
        self.replay_rng = generator(seed, Stream.REPLAY)
        self.buffer: ReplayBuffer = self._new_buffer()
        self.counters = dict.fromkeys(_COUNTERS, 0)
        self.update_credit = 0.0
        self.last_stats: dict[str, float] = {}

    def _new_buffer(self) -> ReplayBuffer:
        c = self.config
        if c.prioritized_replay:
            return PrioritizedReplayBuffer(
                c.buffer_size, c.prioritized_replay_alpha, c.prioritized_replay_eps
            )
        return ReplayBuffer(c.buffer_size)

    # -- acting --------------------------------------------------------------------

    def epsilon(self) -> float:
        """Current exploration epsilon (from the rows sampled so far)."""
        return epsilon_at(self.config, self.counters["num_steps_sampled"])

    def _input(self, obs: np.ndarray) -> np.ndarray:
        """Observations as the networks take them: filtered flat float32 with a filter,
        else as given (the backends flatten them)."""
        if self.obs_filter is None:
            return obs
        return self.obs_filter(np.asarray(obs, dtype=np.float32).reshape(len(obs), -1))

    def q_values(self, obs: np.ndarray) -> np.ndarray:
        """Q values (N, n_actions) of the online network."""
        return self.nets.q(self._input(obs))

    def compute_actions(
        self, obs: np.ndarray, *, explore: bool
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Epsilon-greedy actions, values of the env's space (``start`` + the Q column);
        greedy with probability 1 when ``explore`` is False."""
        q = self.q_values(obs)
        greedy = q.argmax(axis=1)
        eps = self.epsilon() if explore else 0.0
        actions = greedy
        if eps > 0.0:
            draw = self.explore_rng.random(len(q)) < eps
            random_actions = self.explore_rng.integers(0, self.n_actions, size=len(q))
            actions = np.where(draw, random_actions, greedy)
        prob = epsilon_greedy_probs(greedy, actions, eps, self.n_actions)
        return actions + self.action_start, {
            sb.ACTION_PROB: prob,
            sb.ACTION_LOGP: np.log(prob),
            sb.ACTION_DIST_INPUTS: q,
            sb.Q_VALUES: q,
        }

    def action_probs(self, obs: np.ndarray) -> np.ndarray:
        """Epsilon-greedy probabilities (N, n_actions) at the current epsilon; column k
        is the action ``start + k``."""
        greedy = self.q_values(obs).argmax(axis=1)
        eps = self.epsilon()
        probs = np.full((len(obs), self.n_actions), eps / self.n_actions, dtype=np.float32)
        probs[np.arange(len(obs)), greedy] += 1.0 - eps
        return probs

    def rollout_fragment_length(self) -> int:
        return self.config.rollout_fragment_length

    def steps_per_iteration(self) -> int:
        return self.config.timesteps_per_iteration

    # -- learning ------------------------------------------------------------------

    def postprocess(self, batch: SampleBatch) -> SampleBatch:
        """The batch plus n-step columns (see :func:`transitions`)."""
        out = SampleBatch(batch.columns)
        for name, col in transitions(batch, self.config.gamma, self.config.n_step).items():
            out[name] = col
        return out

    def _updates_due(self, rows: int) -> int:
        """Whole updates earned by ``rows`` new rows at the configured replay intensity."""
        c = self.config
        intensity = c.training_intensity
        if intensity is None:
            intensity = c.train_batch_size / (c.rollout_fragment_length * c.num_envs_per_worker)
        self.update_credit += rows * intensity / c.train_batch_size
        due = math.floor(self.update_credit)
        self.update_credit -= due
        return due

    def learn(self, batch: SampleBatch, timesteps_total: int) -> dict[str, float]:
        """Store the batch's transitions, then replay as many updates as it earns."""
        if N_STEP_RETURNS not in batch:  # offline without postprocess_inputs: 1-step targets
            batch = SampleBatch({**batch.columns, **transitions(batch, self.config.gamma, 1)})
        keep = np.asarray(batch[TD_VALID], dtype=bool)
        rows = {name: np.asarray(batch[name])[keep] for name in _REPLAY_COLUMNS}
        for col in (sb.OBS, N_STEP_NEW_OBS):
            rows[col] = rows[col].reshape(len(rows[col]), -1).astype(self.obs_dtype, copy=False)
        rows[sb.ACTIONS] = action_index(rows[sb.ACTIONS], self.n_actions, self.action_start)
        if keep.any():
            self.buffer.add(rows)
        self.counters["num_steps_sampled"] += batch.count
        due = self._updates_due(batch.count)
        if len(self.buffer) < max(self.config.learning_starts, 1):
            due = 0
        stats = [self._update() for _ in range(due)]
        # After the updates, from the new rows only (never replayed ones): see pg.learn.
        if self.obs_filter is not None:
            self.obs_filter.update(batch[sb.OBS])
        if stats:
            self.last_stats = {k: float(np.mean([s[k] for s in stats])) for k in stats[0]}
            self.last_stats["min_q"] = min(s["min_q"] for s in stats)
            self.last_stats["max_q"] = max(s["max_q"] for s in stats)
        return {
            **self.last_stats,
            "cur_lr": self.lr,
            "epsilon": self.epsilon(),
            "num_updates": self.counters["num_updates"],
            "num_target_updates": self.counters["num_target_updates"],
            "buffer_size": len(self.buffer),
        }

    def _update(self) -> dict[str, float]:
        """One gradient step on a replayed batch, then priorities and the target net."""
        c, t = self.config, self.counters["num_steps_sampled"]
        beta = linear_schedule(
            t,
            c.prioritized_replay_beta,
            c.final_prioritized_replay_beta,
            c.prioritized_replay_beta_annealing_timesteps,
        )
        cols, slots, weights = self.buffer.sample(c.train_batch_size, self.replay_rng, beta)
        self.lr = lr_at(c, t)
        q_taken, td, loss = self._step(cols, weights)
        self.buffer.update_priorities(slots, td)
        self.counters["num_updates"] += 1
        if t - self.counters["last_target_update"] >= c.target_network_update_freq:
            self._update_target(c.tau)
            self.counters["last_target_update"] = t
        n = len(td)
        return {
            "mean_q": float(q_taken.sum()) / n,
            "min_q": float(q_taken.min()),
            "max_q": float(q_taken.max()),
            "mean_td_error": float(td.sum()) / n,
            "loss": loss,
        }

    def _step(
        self, cols: dict[str, np.ndarray], weights: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, float]:
        """One Adam step on the replayed batch ``cols``: (q_taken, td, loss).

        loss = mean_i(w_i * huber(td_i)), td = Q(s, a) - y, y = R + discount *
        Q_target(s', a*) held fixed (:func:`~offrl.algos.qnet.td_targets`), w the
        importance weights (1 without prioritized replay). Its gradient, dloss/dQ(s, a)
        = w * clip(td, -1, 1) / B and 0 for the actions not taken, is handed to the
        backend to backpropagate.
        """
        c = self.config
        obs, next_obs = self._input(cols[sb.OBS]), self._input(cols[N_STEP_NEW_OBS])
        actions = cols[sb.ACTIONS]
        b = len(obs)
        rows = np.arange(b)
        # One forward pass over obs and next_obs: at these sizes call overhead dominates.
        q_all = self.nets.forward(np.concatenate([obs, next_obs]))
        q, q_next_online = q_all[:b], q_all[b:]
        q_next_target = self.nets.target_q(next_obs)
        y = td_targets(
            cols[N_STEP_RETURNS], cols[N_STEP_DISCOUNTS], q_next_online, q_next_target, c.double_q
        )
        q_taken = q[rows, actions]
        td = q_taken - y
        loss = float(np.dot(weights, huber(td))) / b
        grad_q = np.zeros_like(q)
        grad_q[rows, actions] = weights * huber_grad(td) / np.float32(b)
        self.nets.backward(grad_q)
        self.nets.step(self.lr, c.grad_norm_clipping)
        return q_taken, td, loss

    def _update_target(self, tau: float) -> None:
        """Polyak-average the online weights into the target (a copy when tau is 1)."""
        if tau >= 1.0:
            self.nets.target_flat[:] = self.nets.flat
        else:
            self.nets.target_flat += np.float32(tau) * (self.nets.flat - self.nets.target_flat)
        self.counters["num_target_updates"] += 1

    # -- checkpoints -----------------------------------------------------------------

    def get_state(self) -> dict[str, Any]:
        """Networks, optimizer, counters, RNG states, observation filter statistics
        (+ replay buffer if configured)."""
        state: dict[str, Any] = {
            "online": self.online.state_dict(),
            "target": self.target.state_dict(),
            "optimizer": {**self.nets.state_dict(), "lr": self.lr},
            "counters": dict(self.counters),
            "update_credit": self.update_credit,
            "explore_rng": self.explore_rng.bit_generator.state,
            "replay_rng": self.replay_rng.bit_generator.state,
        }
        if self.config.store_buffer_in_checkpoints:
            state["buffer"] = self.buffer.get_state()
        if self.obs_filter is not None:
            state["obs_filter"] = self.obs_filter.state()
        return state

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`get_state` returned; without a stored buffer, replay restarts."""
        self.online.load_state_dict(state["online"])
        self.target.load_state_dict(state["target"])
        # Older checkpoints may hold a torch.optim.Adam state; the backend reads both.
        self.nets.load_state_dict(state["optimizer"])
        self.lr = float(state["optimizer"].get("lr", self.lr))
        self.counters = {k: int(state["counters"][k]) for k in _COUNTERS}
        self.update_credit = float(state["update_credit"])
        self.explore_rng.bit_generator.state = state["explore_rng"]
        self.replay_rng.bit_generator.state = state["replay_rng"]
        load_filter_state(self.obs_filter, state.get("obs_filter"))
        self.buffer = self._new_buffer()
        if "buffer" in state:
            self.buffer.set_state(state["buffer"])
