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
from offrl.estimators.stats import Z95, mean_std_err, std_err_from_influence, summarize


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
    value, se, _ = _wis_parts(num, den, gamma ** np.arange(num.shape[1]))
    return value, se


def _wis_parts(
    num: np.ndarray, den: np.ndarray, disc: np.ndarray
) -> tuple[float, float, np.ndarray]:
    """(V_WIS, its delta-method standard error, the per-step values V_t) of padded arrays."""
    a_mean, w = num.mean(axis=0), den.mean(axis=0)
    w_safe = np.where(w > 0, w, 1.0)  # all ratios 0 at t: the numerator is 0 too
    per_step = a_mean / w_safe
    psi = ((num - per_step * den) / w_safe) @ disc
    return float(disc @ per_step), std_err_from_influence(psi), per_step


def missing_mass(den: np.ndarray) -> np.ndarray:
    """m_t = clip(1 - mean_i rho_{i,0:t}, 0, 1) of padded ratios (n, H) -> (H,).

    Under the behaviour policy E[rho_{0:t}] = 1 exactly, so the mean ratio of the data
    is the share of the target policy's probability its episodes show; 1 - w_t is the
    share they do not show. With a near-deterministic target over a long horizon the
    trajectories that carry that probability are too rare to be logged: w_t falls
    towards 0, and no resampling of the data can reveal the bias this causes.
    """
    return np.clip(1.0 - den.mean(axis=0), 0.0, 1.0)


def reward_range(rewards: list[np.ndarray]) -> tuple[float, float]:
    """The range of one step's reward: the logged rewards', with the absorbing state's 0
    when an episode ended before the longest one did."""
    low = min(float(r.min()) for r in rewards)
    high = max(float(r.max()) for r in rewards)
    if len({len(r) for r in rewards}) > 1:
        low, high = min(low, 0.0), max(high, 0.0)
    return low, high


def widened_interval(
    per_step: np.ndarray,
    num: np.ndarray,
    den: np.ndarray,
    rewards: list[np.ndarray],
    disc: np.ndarray,
    std_err: float,
) -> tuple[float, float, float]:
    """(low, high, missing mass) of an IS-type estimate's 95 % interval.

    The sampling interval (estimate -+ 1.96 std err) is widened by what the data
    cannot show: at a step with missing mass m_t > 0 the step's value lies in
    A_t + m_t [r_low, r_high] (A_t = mean_i rho_{i,0:t} r_{i,t}: the value shown,
    plus the unseen share at any reward of the logged range), which always holds the
    WIS per-step value A_t / w_t. ``per_step`` is the estimator's per-step value (the
    interval always contains it). Where the ratios are well spread m_t is ~0 and this
    is the usual interval; the third value is the discount-weighted mean of m_t,
    reported as ``missing_mass``.
    """
    m = missing_mass(den)
    shown = num.mean(axis=0)
    r_low, r_high = reward_range(rewards)
    low_t = np.where(m > 0, np.minimum(per_step, shown + m * r_low), per_step)
    high_t = np.where(m > 0, np.maximum(per_step, shown + m * r_high), per_step)
    low = float(disc @ low_t) - Z95 * std_err
    high = float(disc @ high_t) + Z95 * std_err
    return low, high, float(disc @ m / disc.sum())


class _ImportanceBase:
    """Collects whole episodes with behaviour probabilities; subclasses pick the formula."""

    warned_degenerate = False  # set once a degenerate-probabilities warning was given

    name = ""

    def __init__(self, *, gamma: float, seed: int, action_start: int = 0) -> None:
        self.gamma = gamma
        self.collector = EpisodeCollector(keep_states=False, seed=seed, action_start=action_start)

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

    @staticmethod
    def _value(
        num: np.ndarray, den: np.ndarray, disc: np.ndarray
    ) -> tuple[float, float, np.ndarray]:
        """(estimate, standard error, per-step values) from the padded arrays."""
        raise NotImplementedError

    def estimate(self) -> dict[str, float]:
        """Estimates over every complete episode collected so far."""
        rewards, ratios, _ = self._inputs()
        if not rewards:
            return {"num_episodes": 0.0}
        num, den = _padded(rewards, ratios)
        disc = self.gamma ** np.arange(num.shape[1])
        value, se, per_step = self._value(num, den, disc)
        out = summarize(self._behaviour_value(rewards), value, se, len(rewards))
        low, high, mass = widened_interval(per_step, num, den, rewards, disc, se)
        if "v_target_ci_low" in out:
            out.update(v_target_ci_low=low, v_target_ci_high=high)
        return {**out, "missing_mass": mass, "ess": effective_sample_size(ratios)}


class ImportanceSampling(_ImportanceBase):
    """Step-wise IS: V = mean_i sum_t gamma^t rho_{i,0:t} r_{i,t}.

    Standard error: std of the per-episode values / sqrt(n); the 95 % interval is the
    normal one, widened by the missing mass (see :func:`widened_interval`).
    """

    name = "is"

    @staticmethod
    def _value(
        num: np.ndarray, den: np.ndarray, disc: np.ndarray
    ) -> tuple[float, float, np.ndarray]:
        value, se = mean_std_err(num @ disc)  # per-episode values sum_t gamma^t rho r
        return value, se, num.mean(axis=0)


class WeightedImportanceSampling(_ImportanceBase):
    """Step-wise WIS normalised dataset-wide (see :func:`wis_value`); delta-method
    standard error, interval widened by the missing mass (see :func:`widened_interval`)."""

    name = "wis"

    @staticmethod
    def _value(
        num: np.ndarray, den: np.ndarray, disc: np.ndarray
    ) -> tuple[float, float, np.ndarray]:
        return _wis_parts(num, den, disc)
