"""Direct method (``dm``) and step-wise doubly robust (``dr``) estimates with an FQE model.

``process`` only joins episodes (cheap); ``estimate`` refreshes the FQE training set
when new episodes arrived, runs ``fqe_config["n_iters"]`` gradient steps (bounded
cost per call, the model keeps improving over calls) and evaluates.
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


class _ModelBased:
    """Collects whole episodes with states and fits an FQE model lazily in ``estimate``."""

    name = ""
    needs_behaviour = False

    def __init__(
        self, *, gamma: float, action_space_n: int, obs_dim: int, seed: int, fqe: FQEConfig
    ) -> None:
        self.gamma = gamma
        self.collector = EpisodeCollector(keep_states=True, seed=seed)
        self.model = FittedQEvaluation(obs_dim, action_space_n, gamma, fqe, seed)
        self._fitted_on = (-1, -1)  # (episodes seen, stored) when the data was last set

    def process(self, batch: SampleBatch, target_probs: TargetProbs) -> None:
        """Join the batch's rows into episodes (no model work here)."""
        if self.needs_behaviour and behaviour_probs(batch) is None:
            raise MissingBehaviourProbs(self.name, list(batch.keys()))
        self.collector.add(batch, target_probs)

    def reset(self) -> None:
        """Forget completed episodes; the model keeps its weights as a warm start."""
        self.collector.reset()

    def _fit(self) -> list[Episode]:
        eps = self.collector.episodes
        key = (self.collector.seen, len(eps))
        if key != self._fitted_on:
            self.model.set_data(episodes_to_transitions(eps))
            self._fitted_on = key
        self.model.train(self.model.cfg.n_iters)
        return eps

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
        starts = np.stack([e.obs[0] for e in eps])  # type: ignore[index]
        probs = np.stack([e.target_probs[0] for e in eps])
        values = np.sum(self.model.q_values(starts) * probs, axis=1)
        value, se = mean_std_err(values)
        return summarize(self._behaviour_value(eps), value, se, len(eps))


class DoublyRobust(_ModelBased):
    """Step-wise DR (see :func:`dr_episode_value`); normal-approx CI over per-episode values."""

    name = "dr"
    needs_behaviour = True

    def estimate(self) -> dict[str, float]:
        """Fit the model a bounded number of steps more, then estimate."""
        if not self.collector.episodes:
            return {"num_episodes": 0.0}
        eps = self._fit()
        all_q = self.model.q_values(np.concatenate([e.obs for e in eps]))  # type: ignore[misc]
        values, start = [], 0
        for e in eps:
            q = all_q[start : start + len(e.rewards)]
            start += len(e.rewards)
            rows = np.arange(len(e.actions))
            ratios = episode_ratios(e, self.name)
            v = np.sum(q * e.target_probs, axis=1)
            values.append(dr_episode_value(e.rewards, ratios, q[rows, e.actions], v, self.gamma))
        value, se = mean_std_err(np.array(values))
        return summarize(self._behaviour_value(eps), value, se, len(eps))
