"""Direct method (``dm``) and step-wise doubly robust (``dr``) estimates with an FQE model.

``process`` only joins episodes (cheap); ``estimate`` refreshes the FQE training set
when new episodes arrived, runs ``fqe_config["n_iters"]`` gradient steps (bounded
cost per call, the model keeps improving over calls) and evaluates. ``dm`` and ``dr``
made together share one :class:`SharedFQE` (one set of episodes, one model, one fit).

Intervals. The normal interval over per-episode values ignores that the model was
fitted on those same episodes: it can exclude the truth while looking precise. With
``fqe_config["bootstrap"] = B`` the interval is a percentile bootstrap over episodes
in which every resample refits its own model (as many steps as the main one), so the
model's variance is in it; ``ci_includes_model_error`` says which one a result holds
(1.0 or 0.0). No interval covers a bias every refit shares (an under-fitted model).
"""

from __future__ import annotations

import numpy as np

from offrl.batch import SampleBatch
from offrl.estimators.base import (
    Episode,
    EpisodeCollector,
    MissingBehaviourProbs,
    TargetProbs,
    behaviour_probs,
    discounted_sum,
)
from offrl.estimators.fqe import FittedQEvaluation, FQEConfig, episodes_to_transitions
from offrl.estimators.importance import episode_ratios
from offrl.estimators.stats import mean_std_err, summarize
from offrl.seeding import Stream, generator, int_seed

Replicate = tuple[FittedQEvaluation, list[Episode]]


def with_interval(out: dict[str, float], replicates: np.ndarray | None) -> dict[str, float]:
    """``out`` with a bootstrap interval from ``replicates`` (B estimates), when given.

    std err = the replicates' standard deviation; the 95 % interval their 2.5 and 97.5
    percentiles. ``ci_includes_model_error`` records which kind of interval ``out`` holds.
    """
    if replicates is None or len(replicates) < 2:
        return {**out, "ci_includes_model_error": 0.0}
    low, high = np.percentile(replicates, [2.5, 97.5])
    return {
        **out,
        "v_target_std_err": float(np.std(replicates, ddof=1)),
        "v_target_ci_low": float(low),
        "v_target_ci_high": float(high),
        "ci_includes_model_error": 1.0,
    }


def dr_episode_value(
    rewards: np.ndarray, ratios: np.ndarray, q_logged: np.ndarray, v: np.ndarray, gamma: float
) -> float:
    """Step-wise doubly robust value of one episode (Jiang & Li 2016), all arrays (L,).

    The recursion V_t = V^(s_t) + p_t (r_t + gamma V_{t+1} - Q^(s_t, a_t)), V_L = 0,
    with p_t = pi(a_t|s_t)/b(a_t|s_t), unrolls to::

        V_DR = sum_t gamma^t (rho_{0:t} (r_t - Q^(s_t, a_t)) + rho_{0:t-1} V^(s_t)),  rho_{0:-1} = 1

    where ``ratios`` = rho_{0:t}, ``q_logged`` = Q^(s_t, a_t), ``v`` = sum_a pi(a|s_t) Q^(s_t, a).
    """
    prev = np.concatenate([[1.0], ratios[:-1]])
    terms = ratios * (rewards - q_logged) + prev * v
    return float(np.sum(gamma ** np.arange(len(rewards)) * terms))


class SharedFQE:
    """Whole episodes and one FQE model that ``dm`` and ``dr`` share, so they pay for one fit.

    Every subscriber passes every batch and asks for a fit once per estimate; the n-th
    batch (n-th fit, n-th reset) is acted on only by the first subscriber that reaches
    it, identified by the subscriber's own counter.
    """

    def __init__(
        self,
        *,
        gamma: float,
        action_space_n: int,
        obs_dim: int,
        seed: int,
        fqe: FQEConfig,
        action_start: int = 0,
    ) -> None:
        self.collector = EpisodeCollector(keep_states=True, seed=seed, action_start=action_start)
        self.model = FittedQEvaluation(obs_dim, action_space_n, gamma, fqe, seed)
        self.counts = {"add": 0, "fit": 0, "reset": 0}
        self._data_key = (-1, -1)  # (episodes seen, stored) when the data was last set
        self._dims = (obs_dim, action_space_n, gamma, fqe, seed)
        self._replicates: tuple[int, list[Replicate]] = (-1, [])

    def replicates(self) -> list[Replicate]:
        """``fqe.bootstrap`` (model, resampled episodes) pairs for the current fit, each
        model refitted from scratch on its resample; made once per fit, shared by dm and dr."""
        obs_dim, n_actions, gamma, fqe, seed = self._dims
        if fqe.bootstrap == 0:
            return []
        if self._replicates[0] == self.counts["fit"]:
            return self._replicates[1]
        eps = self.collector.episodes
        fit = self.counts["fit"]
        rng = generator(seed, Stream.BOOTSTRAP, fit, 0)
        out: list[Replicate] = []
        for b in range(fqe.bootstrap):
            sample = [eps[i] for i in rng.integers(len(eps), size=len(eps))]
            model_seed = int_seed(seed, Stream.BOOTSTRAP, fit, b + 1)
            model = FittedQEvaluation(obs_dim, n_actions, gamma, fqe, model_seed)
            model.set_data(episodes_to_transitions(sample))
            model.train(max(self.model.steps, fqe.n_iters))
            out.append((model, sample))
        self._replicates = (self.counts["fit"], out)
        return out

    def _first(self, op: str, caller_count: int) -> bool:
        if caller_count < self.counts[op]:
            return False  # another subscriber already did this one
        self.counts[op] += 1
        return True

    def add(self, caller_count: int, batch: SampleBatch, target_probs: TargetProbs) -> None:
        """Join the batch into episodes unless another subscriber already did."""
        if self._first("add", caller_count):
            self.collector.add(batch, target_probs)

    def fit(self, caller_count: int) -> None:
        """Refresh the training set if episodes changed, then ``n_iters`` gradient steps."""
        if not self._first("fit", caller_count):
            return
        key = (self.collector.seen, len(self.collector.episodes))
        if key != self._data_key:
            self.model.set_data(episodes_to_transitions(self.collector.episodes))
            self._data_key = key
        self.model.train(self.model.cfg.n_iters)

    def reset(self, caller_count: int) -> None:
        """Forget completed episodes; the model keeps its weights as a warm start."""
        if self._first("reset", caller_count):
            self.collector.reset()


class _ModelBased:
    """Feeds a (possibly shared) FQE state and evaluates its model in ``estimate``."""

    name = ""
    needs_behaviour = False
    warned_degenerate = False  # set once a degenerate-probabilities warning was given

    def __init__(self, *, gamma: float, shared: SharedFQE) -> None:
        self.gamma = gamma
        self.shared = shared
        self._counts = {"add": 0, "fit": 0, "reset": 0}

    @property
    def collector(self) -> EpisodeCollector:
        return self.shared.collector

    @property
    def model(self) -> FittedQEvaluation:
        return self.shared.model

    def process(self, batch: SampleBatch, target_probs: TargetProbs) -> None:
        """Join the batch's rows into episodes (no model work here)."""
        if self.needs_behaviour and behaviour_probs(batch) is None:
            raise MissingBehaviourProbs(self.name, list(batch.keys()))
        self.shared.add(self._counts["add"], batch, target_probs)
        self._counts["add"] += 1

    def reset(self) -> None:
        """Forget completed episodes; the model keeps its weights as a warm start."""
        self.shared.reset(self._counts["reset"])
        self._counts["reset"] += 1

    def _fit(self) -> list[Episode]:
        self.shared.fit(self._counts["fit"])
        self._counts["fit"] += 1
        return self.collector.episodes

    def _behaviour_value(self, eps: list[Episode]) -> float:
        return float(np.mean([discounted_sum(e.rewards, self.gamma) for e in eps]))


class DirectMethod(_ModelBased):
    """V_DM = mean_i sum_a pi(a|s_{i,0}) Q^(s_{i,0}, a).

    Its standard error covers the spread of start states only, not the model's error.
    """

    name = "dm"

    def estimate(self) -> dict[str, float]:
        """Fit the model a bounded number of steps more, then estimate."""
        if not self.collector.episodes:
            return {"num_episodes": 0.0}
        eps = self._fit()
        value, se = mean_std_err(dm_values(self.model, eps))
        reps = self.shared.replicates()
        boot = np.array([dm_values(m, sample).mean() for m, sample in reps]) if reps else None
        return with_interval(summarize(self._behaviour_value(eps), value, se, len(eps)), boot)


class DoublyRobust(_ModelBased):
    """Step-wise DR (see :func:`dr_episode_value`); normal-approx CI over per-episode values."""

    name = "dr"
    needs_behaviour = True

    def estimate(self) -> dict[str, float]:
        """Fit the model a bounded number of steps more, then estimate."""
        if not self.collector.episodes:
            return {"num_episodes": 0.0}
        eps = self._fit()
        value, se = mean_std_err(dr_values(self.model, eps, self.gamma))
        reps = self.shared.replicates()
        boot = (
            np.array([dr_values(m, sample, self.gamma).mean() for m, sample in reps])
            if reps
            else None
        )
        return with_interval(summarize(self._behaviour_value(eps), value, se, len(eps)), boot)


def dm_values(model: FittedQEvaluation, eps: list[Episode]) -> np.ndarray:
    """Per-episode DM values sum_a pi(a|s_0) Q^(s_0, a), (E,)."""
    starts = np.stack([e.obs[0] for e in eps])  # type: ignore[index]
    probs = np.stack([e.target_probs[0] for e in eps])
    return np.sum(model.q_values(starts) * probs, axis=1)


def dr_values(model: FittedQEvaluation, eps: list[Episode], gamma: float) -> np.ndarray:
    """Per-episode step-wise DR values (:func:`dr_episode_value`), (E,)."""
    all_q = model.q_values(np.concatenate([e.obs for e in eps]))  # type: ignore[misc]
    values, start = [], 0
    for e in eps:
        q = all_q[start : start + len(e.rewards)]
        start += len(e.rewards)
        rows = np.arange(len(e.actions))
        ratios = episode_ratios(e, "dr")
        v = np.sum(q * e.target_probs, axis=1)
        values.append(dr_episode_value(e.rewards, ratios, q[rows, e.actions], v, gamma))
    return np.array(values)
