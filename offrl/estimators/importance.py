"""Per-decision importance sampling (``is``) and weighted importance sampling (``wis``).

Both work on whole episodes (joined across batches) and use the target policy's
probability of the *logged* action. WIS normalises over every episode collected
(dataset-wide), not per batch as RLlib did.
"""

from __future__ import annotations

import numpy as np

from offrl.batch import SampleBatch
from offrl.errors import OffrlRuntimeError
from offrl.estimators.base import (
    Episode,
    EpisodeCollector,
    MissingBehaviourProbs,
    TargetProbs,
    behaviour_probs,
    discounted_sum,
)
from offrl.estimators.stats import mean_std_err, std_err_from_influence, summarize


def cumulative_ratios(target_prob: np.ndarray, behaviour_prob: np.ndarray) -> np.ndarray:
    """rho_{0:t} = prod_{k<=t} pi(a_k|s_k) / b(a_k|s_k) for one episode, (L,) -> (L,)."""
    if np.any(behaviour_prob <= 0):
        bad = int(np.flatnonzero(behaviour_prob <= 0)[0])
        raise OffrlRuntimeError(
            f"behaviour probability of a logged action is {behaviour_prob[bad]!r} (step {bad} "
            "of an episode); importance sampling needs every logged action_prob > 0"
        )
    return np.cumprod(target_prob / behaviour_prob)


def episode_ratios(episode: Episode, estimator: str) -> np.ndarray:
    """rho_{0:t} of one collected episode, (L,)."""
    if episode.behaviour_prob is None:
        raise MissingBehaviourProbs(estimator, ["(an episode without action_prob)"])
    return cumulative_ratios(episode.target_prob_logged, episode.behaviour_prob)


def is_episode_values(
    rewards: list[np.ndarray], ratios: list[np.ndarray], gamma: float
) -> np.ndarray:
    """Per-episode step-wise IS values V_i = sum_t gamma^t rho_{i,0:t} r_{i,t}, (n,)."""
    return np.array(
        [discounted_sum(rho * r, gamma) for r, rho in zip(rewards, ratios, strict=True)]
    )


def effective_sample_size(ratios: list[np.ndarray]) -> float:
    """Kish's ESS of the whole-episode weights w_i = rho_{i,0:L_i-1}: (sum w)^2 / sum w^2.

    Far below the number of episodes means a few episodes dominate: distrust the estimate
    and its interval (reported as ``ess`` beside the estimate).
    """
    w = np.array([rho[-1] for rho in ratios])
    total = float(np.sum(w**2))
    return float(np.sum(w) ** 2 / total) if total > 0 else 0.0


def _padded(rewards: list[np.ndarray], ratios: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(n, H) arrays: rho*r padded with 0, and rho padded with its last value (H = max L)."""
    horizon = max(len(r) for r in rewards)
    num = np.zeros((len(rewards), horizon))
    den = np.empty((len(rewards), horizon))
    for i, (r, rho) in enumerate(zip(rewards, ratios, strict=True)):
        num[i, : len(r)] = rho * r
        den[i, : len(r)] = rho
        den[i, len(r) :] = rho[-1]
    return num, den


def wis_value(
    rewards: list[np.ndarray], ratios: list[np.ndarray], gamma: float
) -> tuple[float, float]:
    """Step-wise WIS over all episodes, and its delta-method standard error.

    With episodes of different lengths, an episode that ended before step t is read
    as staying in an absorbing state with reward 0 where both policies agree, so its
    ratio stays at its final value rho_{i,0:L_i-1}::

        w_t   = mean_i rho_{i,0:min(t, L_i - 1)}          (every episode, at every t)
        V_WIS = sum_t gamma^t  mean_i(rho_{i,0:t} r_{i,t}) / w_t    (r_{i,t} = 0 for t >= L_i)

    (normalising only over episodes still running at t would ignore how likely the
    target policy is to survive to t, and bias long-horizon tasks such as CartPole.)
    Standard error: V is a smooth function of the means A_t (numerator) and w_t, so
    its influence value per episode is psi_i = sum_t gamma^t (a_{i,t} - V_t w_{i,t}) / w_t
    with V_t = A_t / w_t, and Var(V) ~= sum psi_i^2 / (n (n-1)).
    """
    num, den = _padded(rewards, ratios)
    disc = gamma ** np.arange(num.shape[1])
    a_mean, w = num.mean(axis=0), den.mean(axis=0)
    w_safe = np.where(w > 0, w, 1.0)  # all ratios 0 at t: the numerator is 0 too
    value = float(np.sum(disc * a_mean / w_safe))
    psi = ((num - (a_mean / w_safe) * den) / w_safe) @ disc
    return value, std_err_from_influence(psi)


class _ImportanceBase:
    """Collects whole episodes with behaviour probabilities; subclasses pick the formula."""

    name = ""

    def __init__(self, *, gamma: float, seed: int) -> None:
        self.gamma = gamma
        self.collector = EpisodeCollector(keep_states=False, seed=seed)

    def process(self, batch: SampleBatch, target_probs: TargetProbs) -> None:
        """Join the batch's rows into episodes; raise MissingBehaviourProbs without them."""
        if behaviour_probs(batch) is None:
            raise MissingBehaviourProbs(self.name, list(batch.keys()))
        self.collector.add(batch, target_probs)

    def reset(self) -> None:
        """Forget completed episodes (pending parts are kept)."""
        self.collector.reset()

    def _inputs(self) -> tuple[list[np.ndarray], list[np.ndarray], list[Episode]]:
        eps = self.collector.episodes
        ratios = [episode_ratios(e, self.name) for e in eps]
        return [e.rewards for e in eps], ratios, eps

    def _behaviour_value(self, rewards: list[np.ndarray]) -> float:
        return float(np.mean([discounted_sum(r, self.gamma) for r in rewards]))


class ImportanceSampling(_ImportanceBase):
    """Step-wise IS: V = mean_i sum_t gamma^t rho_{i,0:t} r_{i,t}.

    Standard error: std of the per-episode values / sqrt(n); 95 % CI by normal approximation.
    """

    name = "is"

    def estimate(self) -> dict[str, float]:
        """Estimates over every complete episode collected so far."""
        rewards, ratios, _ = self._inputs()
        if not rewards:
            return {"num_episodes": 0.0}
        value, se = mean_std_err(is_episode_values(rewards, ratios, self.gamma))
        out = summarize(self._behaviour_value(rewards), value, se, len(rewards))
        return {**out, "ess": effective_sample_size(ratios)}


class WeightedImportanceSampling(_ImportanceBase):
    """Step-wise WIS normalised dataset-wide (see :func:`wis_value`); delta-method CI."""

    name = "wis"

    def estimate(self) -> dict[str, float]:
        """Estimates over every complete episode collected so far."""
        rewards, ratios, _ = self._inputs()
        if not rewards:
            return {"num_episodes": 0.0}
        value, se = wis_value(rewards, ratios, self.gamma)
        out = summarize(self._behaviour_value(rewards), value, se, len(rewards))
        return {**out, "ess": effective_sample_size(ratios)}
