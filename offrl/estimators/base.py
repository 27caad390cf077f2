"""What every off-policy estimator shares: whole episodes joined across batches.

An estimator is fed batches with ``process(batch, target_probs)`` and reports with
``estimate()``. Batches may cut episodes anywhere (RLlib's estimators silently
treated each fragment as an episode); :class:`EpisodeCollector` joins the parts by
``eps_id`` and hands over an :class:`Episode` only once its last row is done.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from offrl.batch import (
    ACTION_LOGP,
    ACTION_PROB,
    ACTIONS,
    DONES,
    EPS_ID,
    NEW_OBS,
    OBS,
    REWARDS,
    TERMINATEDS,
    SampleBatch,
)
from offrl.batch import T as T_COL
from offrl.errors import OffrlRuntimeError

TargetProbs = Callable[[np.ndarray], np.ndarray]


class MissingBehaviourProbs(OffrlRuntimeError):
    """The data has no ``action_prob``/``action_logp``: an IS-type estimator cannot run.

    The trainer catches it, warns once and drops the estimator; it is not a crash.
    """

    def __init__(self, estimator: str, columns: list[str]) -> None:
        self.estimator = estimator
        super().__init__(
            f"off-policy estimator {estimator!r} needs the behaviour policy's probability of "
            f"each logged action (column 'action_prob' or 'action_logp'), but the data has only "
            f"{sorted(columns)}; it is skipped. Record data with a policy that writes "
            f"action_prob, or use 'dm', which does not need it."
        )


class OffPolicyEstimator(Protocol):
    """Accumulates episodes of logged data and estimates the value of a target policy."""

    name: str

    def process(self, batch: SampleBatch, target_probs: TargetProbs) -> None:
        """Take in a batch; ``target_probs(obs)`` gives (N, n_actions) current-policy probs."""
        ...

    def estimate(self) -> dict[str, float]:
        """``v_behavior``, ``v_target``, ``v_gain``, ``v_delta``, std err, 95 % CI, episodes."""
        ...

    def reset(self) -> None:
        """Forget completed episodes (pending parts are kept), e.g. after the policy changed."""
        ...


@dataclass
class Episode:
    """One whole episode, rows in time order. Shapes: L rows, A actions, D obs dims."""

    rewards: np.ndarray  # (L,) float64
    actions: np.ndarray  # (L,) int64: column indices (action - start) of target_probs
    target_probs: np.ndarray  # (L, A) current-policy probabilities at obs[t]
    behaviour_prob: np.ndarray | None  # (L,) behaviour probability of the logged action
    terminated: bool  # the last row ended the MDP (no bootstrapping past it)
    obs: np.ndarray | None = None  # (L, D), kept only for model-based estimators
    last_next_obs: np.ndarray | None = None  # (D,) new_obs of the last row, if any
    last_next_probs: np.ndarray | None = None  # (A,) target probs at last_next_obs

    @property
    def target_prob_logged(self) -> np.ndarray:
        """pi(a_t | s_t) of the logged actions, (L,)."""
        return self.target_probs[np.arange(len(self.actions)), self.actions]


# The estimators that use the behaviour policy's probabilities.
BEHAVIOUR_ESTIMATORS = ("is", "wis", "dr")


def degenerate_behaviour(obs: np.ndarray, actions: np.ndarray, probs: np.ndarray) -> str | None:
    """Why these logged behaviour probabilities cannot be right, or None.

    Two signs, both seen in real data: every probability is 1.0 although different
    actions were logged (a greedy policy that explored: RLlib's DQN writes 1.0 for its
    epsilon-greedy actions), or one state logged with different actions whose
    probabilities sum to more than 1. Shapes: obs (N, ...), actions (N, ...), probs (N,).
    """
    n = len(probs)
    if n == 0:
        return None
    acts = np.asarray(actions).reshape(n, -1)
    if np.all(probs == 1.0) and len(np.unique(acts, axis=0)) > 1:
        return (
            "every action_prob is 1.0, yet different actions were logged (a greedy policy "
            "that explored; RLlib's DQN writes 1.0 for its epsilon-greedy actions)"
        )
    _, state = np.unique(np.asarray(obs).reshape(n, -1), axis=0, return_inverse=True)
    state = state.reshape(-1)
    repeated = np.flatnonzero(np.bincount(state)[state] > 1)
    best: dict[tuple[int, bytes], float] = {}
    for i in repeated:
        key = (int(state[i]), acts[i].tobytes())
        best[key] = max(best.get(key, 0.0), float(probs[i]))
    totals: dict[int, list[float]] = {}
    for (s_id, _), p in best.items():
        totals.setdefault(s_id, []).append(p)
    for ps in totals.values():
        if len(ps) > 1 and sum(ps) > 1.0 + 1e-6:
            return (
                f"one state was logged with {len(ps)} different actions whose probabilities "
                f"sum to {sum(ps):.3g} > 1"
            )
    return None


def degenerate_warning(why: str) -> str:
    """The user-facing warning for :func:`degenerate_behaviour`: what it breaks."""
    return (
        f"behaviour probabilities look wrong: {why}. This breaks "
        f"{', '.join(BEHAVIOUR_ESTIMATORS)}: is/wis then report v_target = v_behavior with a "
        "zero-width interval, and dr's correction term is wrong; dm does not use them. "
        "Record the data with the probability the behaviour policy really gave each action"
    )


def discounted_sum(rewards: np.ndarray, gamma: float) -> float:
    """sum_t gamma^t r_t of one episode."""
    return float(np.sum(gamma ** np.arange(len(rewards)) * rewards))


def behaviour_probs(batch: SampleBatch) -> np.ndarray | None:
    """``action_prob``, else ``exp(action_logp)``, as float64 (N,); None when neither exists."""
    if ACTION_PROB in batch:
        return np.asarray(batch[ACTION_PROB], dtype=np.float64).reshape(-1)
    if ACTION_LOGP in batch:
        return np.exp(np.asarray(batch[ACTION_LOGP], dtype=np.float64).reshape(-1))
    return None


def _row_columns(
    batch: SampleBatch, target_probs: TargetProbs, keep_states: bool, action_start: int = 0
) -> dict[str, np.ndarray]:
    """Per-row arrays an Episode is built from, computed once per batch; logged actions
    (values of ``Discrete(n, action_start)``) become column indices ``action - start``."""
    actions = np.asarray(batch[ACTIONS]).astype(np.int64).reshape(-1) - action_start
    obs = np.asarray(batch[OBS], dtype=np.float32).reshape(batch.count, -1)
    probs = np.asarray(target_probs(obs), dtype=np.float64)
    if probs.ndim != 2 or probs.shape[0] != batch.count:
        raise ValueError(f"target_probs returned shape {probs.shape}; expected ({batch.count}, A)")
    if actions.size and (actions.min() < 0 or actions.max() >= probs.shape[1]):
        low, high = action_start, action_start + probs.shape[1] - 1
        raise OffrlRuntimeError(
            f"logged actions range {actions.min() + low}..{actions.max() + low} but the "
            f"policy's actions are {low}..{high}; the data does not match this environment"
        )
    done = batch.dones_column()
    cols = {
        "rewards": np.asarray(batch[REWARDS], dtype=np.float64).reshape(-1),
        "actions": actions,
        "target_probs": probs,
        "done": np.zeros(batch.count, bool) if done is None else done,
        "terminated": _terminated(batch),
    }
    if T_COL in batch:
        cols["t"] = np.asarray(batch[T_COL]).astype(np.int64)
    b = behaviour_probs(batch)
    if b is not None:
        cols["behaviour_prob"] = b
    if keep_states:
        cols["obs"] = obs
        if NEW_OBS in batch:
            cols["new_obs"] = np.asarray(batch[NEW_OBS], dtype=np.float32).reshape(batch.count, -1)
            # Only the next-state probs of episode-ending rows are ever needed (inside an
            # episode new_obs[t] == obs[t+1]), so only those rows pay a forward pass.
            ends = np.flatnonzero(cols["done"])
            nxt = np.zeros_like(probs)
            if ends.size:
                nxt[ends] = target_probs(cols["new_obs"][ends])
            cols["next_probs"] = nxt
    return cols


def _terminated(batch: SampleBatch) -> np.ndarray:
    """``terminateds``, else ``dones`` (older files: done means terminated), else all false."""
    for name in (TERMINATEDS, DONES):
        if name in batch:
            return np.asarray(batch[name], dtype=bool).reshape(-1)
    return np.zeros(batch.count, dtype=bool)


class _Pending:
    """The parts of one episode seen so far."""

    def __init__(self) -> None:
        self.parts: list[dict[str, np.ndarray]] = []
        self.rows = 0
        self.end_t: int | None = None  # t of the done row (or -1 without a t column)

    def complete(self) -> bool:
        if self.end_t is None:
            return False
        if self.end_t < 0:
            return True
        # With a t column, parts may arrive out of order (batch-level shuffles): wait
        # until rows 0..end_t are all here.
        t_min = min(int(p["t"].min()) for p in self.parts)
        return t_min == 0 and self.rows == self.end_t + 1


class EpisodeCollector:
    """Joins episode parts across batches and keeps completed episodes, memory-bounded.

    At most ``max_pending`` unfinished episodes are held (the least recently extended
    is dropped first and counted in ``dropped``); at most ``max_episodes`` completed
    ones, beyond which a uniform reservoir sample (seeded) is kept, so estimates are
    then over a random subset of all episodes seen. ``action_start``: the ``start`` of
    a ``Discrete`` action space; episodes hold actions as indices from 0.
    """

    def __init__(
        self,
        *,
        keep_states: bool,
        seed: int,
        max_episodes: int = 20_000,
        max_pending: int = 10_000,
        action_start: int = 0,
    ) -> None:
        self.keep_states = keep_states
        self.action_start = action_start
        self.max_episodes = max_episodes
        self.max_pending = max_pending
        self.episodes: list[Episode] = []
        self.seen = 0
        self.dropped = 0
        self._pending: OrderedDict[object, _Pending] = OrderedDict()
        self._rng = np.random.default_rng(seed)

    def add(self, batch: SampleBatch, target_probs: TargetProbs) -> None:
        """Split ``batch`` by episode, extend pending episodes, store completed ones."""
        if batch.count == 0:
            return
        cols = _row_columns(batch, target_probs, self.keep_states, self.action_start)
        for key, rows in episode_rows(batch, cols["done"]):
            part = {name: arr[rows] for name, arr in cols.items()}
            pend = self._pending.pop(key, None) or _Pending()
            pend.parts.append(part)
            pend.rows += len(rows)
            ended = np.flatnonzero(part["done"])
            if ended.size:
                pend.end_t = int(part["t"][ended[-1]]) if "t" in part else -1
            if pend.complete():
                self._store(_build_episode(pend.parts))
            else:
                self._pending[key] = pend
        while len(self._pending) > self.max_pending:
            self._pending.popitem(last=False)
            self.dropped += 1

    def _store(self, episode: Episode) -> None:
        self.seen += 1
        if len(self.episodes) < self.max_episodes:
            self.episodes.append(episode)
            return
        j = int(self._rng.integers(self.seen))
        if j < self.max_episodes:
            self.episodes[j] = episode

    @property
    def num_pending(self) -> int:
        return len(self._pending)

    def reset(self) -> None:
        """Forget completed episodes; keep the pending parts."""
        self.episodes = []
        self.seen = 0


def episode_rows(batch: SampleBatch, done: np.ndarray) -> list[tuple[object, np.ndarray]]:
    """``[(episode key, row indices)]`` in order of first appearance.

    With ``eps_id`` rows are grouped by it (rows of several episodes may interleave);
    without it, episodes are runs of rows ended by ``dones``, and the first run
    continues the previous batch's unfinished one (key None).
    """
    if EPS_ID in batch:
        eps = np.asarray(batch[EPS_ID])
        uniq, first, inverse = np.unique(eps, return_index=True, return_inverse=True)
        order = np.argsort(first, kind="stable")
        members = np.argsort(inverse, kind="stable")
        splits = np.cumsum(np.bincount(inverse.reshape(-1), minlength=len(uniq)))[:-1]
        groups = np.split(members, splits)
        # .item() gives hashable Python ints; object arrays (huge ids) hold them already
        keys = [u.item() if isinstance(u, np.generic) else u for u in uniq]
        return [(keys[g], groups[g]) for g in order]
    out: list[tuple[object, np.ndarray]] = []
    for i, (s, e) in enumerate(batch.episode_bounds()):
        # Only the last run can stay unfinished; earlier ones end with done.
        key: object = None if (i == 0 or not done[e - 1]) else ("run", i)
        out.append((key, np.arange(s, e)))
    return out


def _build_episode(parts: list[dict[str, np.ndarray]]) -> Episode:
    cols = {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
    if "t" in cols:
        order = np.argsort(cols["t"], kind="stable")
        cols = {name: arr[order] for name, arr in cols.items()}
    last = len(cols["rewards"]) - 1
    new_obs = cols.get("new_obs")
    return Episode(
        rewards=cols["rewards"],
        actions=cols["actions"],
        target_probs=cols["target_probs"],
        behaviour_prob=cols.get("behaviour_prob"),
        terminated=bool(cols["terminated"][last]),
        obs=cols.get("obs"),
        last_next_obs=None if new_obs is None else new_obs[last],
        last_next_probs=cols["next_probs"][last] if "next_probs" in cols else None,
    )
