"""Off-policy estimation: value of the current policy from logged episodes.

``make_estimators(["is", "wis", "dm", "dr"], gamma=..., action_space_n=..., obs_dim=...,
seed=...)`` builds the estimators; the trainer feeds each offline batch to
``process(batch, algo.action_probs)`` and reports ``estimate()`` under
``off_policy_estimation/<name>/<key>``. ``is``/``wis``/``dr`` raise
:class:`MissingBehaviourProbs` from ``process`` when the data has no behaviour
probabilities: warn once and drop that estimator.

Estimates cover every complete episode since creation or the last ``reset()``; the
target probabilities are those of the policy at ``process`` time. In a training run
call ``reset()`` after reporting so one estimate covers one policy snapshot;
``evaluate-offline`` never resets and should give FQE more steps
(``fqe_config={"n_iters": 600}``; the default 100 keeps a training iteration cheap).
Feed estimators unshuffled batches or batch-level shuffles (parts are re-ordered by
``t``), never row-shuffled ones. ``"simulation"`` is not an
estimator here: ``make_estimators`` skips it (the trainer runs it with the rollout).
"""

from __future__ import annotations

import difflib
from typing import Any

import gymnasium as gym
import numpy as np

from offrl.batch import ACTIONS, OBS, SampleBatch
from offrl.config import ESTIMATOR_NAMES
from offrl.errors import ConfigError
from offrl.estimators.base import (
    BEHAVIOUR_ESTIMATORS,
    MissingBehaviourProbs,
    OffPolicyEstimator,
    behaviour_probs,
    degenerate_behaviour,
    degenerate_warning,
)
from offrl.estimators.direct import DirectMethod, DoublyRobust, SharedFQE
from offrl.estimators.fqe import FQEConfig
from offrl.estimators.importance import ImportanceSampling, WeightedImportanceSampling
from offrl.seeding import Stream, int_seed

ESTIMATORS = tuple(n for n in ESTIMATOR_NAMES if n != "simulation")  # "is", "wis", "dm", "dr"
MODEL_BASED = ("dm", "dr")  # need a Q model over Discrete actions

__all__ = ["ESTIMATORS", "MissingBehaviourProbs", "OffPolicyEstimator", "make_estimators"]


def make_estimators(
    names: list[str],
    *,
    gamma: float,
    action_space_n: int,
    obs_dim: int,
    seed: int,
    fqe_config: dict | None = None,
    action_start: int = 0,
) -> list[OffPolicyEstimator]:
    """One estimator per name, in order; an unknown name is a ConfigError with a suggestion.

    ``action_start``: the ``start`` of a ``Discrete(action_space_n, start)`` action space;
    logged actions are its values, column ``action - start`` of ``target_probs``."""
    fqe = FQEConfig.from_dict(fqe_config)
    out: list[OffPolicyEstimator] = []
    shared: SharedFQE | None = None
    for i, name in enumerate(names):
        if name == "simulation":
            continue  # run by the trainer with the rollout, not an estimator over data
        est_seed = int_seed(seed, Stream.ESTIMATOR, i)
        if name == "is":
            out.append(ImportanceSampling(gamma=gamma, seed=est_seed, action_start=action_start))
        elif name == "wis":
            out.append(
                WeightedImportanceSampling(gamma=gamma, seed=est_seed, action_start=action_start)
            )
        elif name in ("dm", "dr"):
            if shared is None:  # dm and dr share one set of episodes and one model
                shared = SharedFQE(
                    gamma=gamma,
                    action_space_n=action_space_n,
                    obs_dim=obs_dim,
                    seed=est_seed,
                    fqe=fqe,
                    action_start=action_start,
                )
            cls = DirectMethod if name == "dm" else DoublyRobust
            out.append(cls(gamma=gamma, shared=shared))
        else:
            close = difflib.get_close_matches(str(name), [*ESTIMATORS, "simulation"], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(
                f"input_evaluation: unknown estimator {name!r}{hint}; "
                f"valid: {', '.join(ESTIMATORS)}, simulation"
            )
    return out


def estimators_for(
    names: list[str],
    *,
    gamma: float,
    observation_space: Any,
    action_space: Any,
    seed: int,
    fqe_config: dict | None = None,
) -> dict[str, OffPolicyEstimator]:
    """``{name: estimator}`` for an env's spaces (``"simulation"`` is skipped, and so are
    ``dm``/``dr`` without Discrete actions: see :func:`skipped_estimators`)."""
    from offrl.algos.base import obs_dim

    discrete = isinstance(action_space, gym.spaces.Discrete)
    estimators = make_estimators(
        [n for n in names if n != "simulation" and (discrete or n not in MODEL_BASED)],
        gamma=gamma,
        action_space_n=int(action_space.n) if discrete else 1,
        obs_dim=obs_dim(observation_space),
        seed=seed,
        fqe_config=fqe_config,
        action_start=int(action_space.start) if discrete else 0,
    )
    return {est.name: est for est in estimators}


def check_behaviour(estimators: dict[str, Any], batch: Any) -> list[str]:
    """A warning (once per set of estimators) when ``batch``'s behaviour probabilities are
    degenerate and an estimator that uses them is running."""
    users = [est for name, est in estimators.items() if name in BEHAVIOUR_ESTIMATORS]
    if not users or any(getattr(est, "warned_degenerate", False) for est in users):
        return []
    probs = behaviour_probs(batch)
    if probs is None:
        return []
    why = degenerate_behaviour(batch["obs"], batch["actions"], probs)
    if why is None:
        return []
    for est in users:
        est.warned_degenerate = True
    return [degenerate_warning(why)]


def skipped_estimators(names: list[str], action_space: Any) -> list[str]:
    """One warning per ``dm``/``dr`` in ``names`` that an action space other than
    Discrete rules out (their Q model has one output per action)."""
    if isinstance(action_space, gym.spaces.Discrete):
        return []
    return [
        f"input_evaluation: {name!r} skipped: it needs a Discrete action space and this env "
        f"has {action_space}; 'is' and 'wis' work with any action space"
        for name in names
        if name in MODEL_BASED
    ]


def logged_action_view(batch: SampleBatch, action_logp: Any) -> tuple[SampleBatch, Any]:
    """(batch, target_probs) for importance sampling with any action space.

    ``is``/``wis`` only need pi(a_t | s_t) of each logged action (a density for Box
    actions, as is ``exp(action_logp)`` of the behaviour policy). The view has one
    pseudo-action 0 per row whose target probability is exactly that.
    """
    probs = np.exp(np.asarray(action_logp(batch[OBS], batch[ACTIONS]), dtype=np.float64))
    view = SampleBatch({**batch.columns, ACTIONS: np.zeros(batch.count, dtype=np.int64)})

    def target_probs(obs: Any) -> np.ndarray:
        return probs[:, None]

    return view, target_probs


def _discrete_actions(batch: SampleBatch) -> bool:
    actions = batch[ACTIONS]
    return actions.ndim == 1 and actions.dtype.kind in "iub"


def feed_estimators(
    estimators: dict[str, Any], batch: Any, target_probs: Any, action_logp: Any = None
) -> list[str]:
    """Give ``batch`` to every estimator; drop those the data cannot serve.

    Returns one warning per dropped estimator (data without behaviour probabilities):
    a skipped estimator, never a crash; and one when the behaviour probabilities are
    degenerate (:func:`~offrl.estimators.base.degenerate_behaviour`, Discrete actions).
    ``action_logp(obs, actions)`` (the policy's log-probability of given actions) serves
    batches whose actions are not Discrete.
    """
    warnings: list[str] = []
    if _discrete_actions(batch):
        warnings += check_behaviour(estimators, batch)
    elif estimators and action_logp is not None:
        batch, target_probs = logged_action_view(batch, action_logp)
    for name in list(estimators):
        try:
            estimators[name].process(batch, target_probs)
        except MissingBehaviourProbs as e:
            del estimators[name]
            warnings.append(str(e))
    return warnings
