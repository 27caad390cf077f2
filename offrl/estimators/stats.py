"""Standard errors and normal-approximation confidence intervals for estimates over episodes."""

from __future__ import annotations

import math

import numpy as np

# Two-sided 95 % quantile of the standard normal.
Z95 = 1.959963984540054


def mean_std_err(values: np.ndarray) -> tuple[float, float]:
    """Mean and standard error ``std(values, ddof=1) / sqrt(n)`` of per-episode values (n,).

    The standard error is ``nan`` for fewer than two values (it is not defined).
    """
    values = np.asarray(values, dtype=np.float64)
    n = len(values)
    mean = float(values.mean()) if n else math.nan
    if n < 2:
        return mean, math.nan
    return mean, float(values.std(ddof=1) / math.sqrt(n))


def std_err_from_influence(psi: np.ndarray) -> float:
    """Delta-method standard error of a smooth statistic from its influence values psi (n,).

    ``Var ~= sum_i psi_i^2 / (n (n - 1))``; ``psi`` has mean 0 by construction for the
    statistics that use it (e.g. a ratio of means), so no centring is needed.
    """
    psi = np.asarray(psi, dtype=np.float64)
    n = len(psi)
    if n < 2:
        return math.nan
    return float(math.sqrt(float(np.sum(psi**2)) / (n * (n - 1))))


def normal_ci(estimate: float, std_err: float, z: float = Z95) -> tuple[float, float]:
    """``estimate -+ z * std_err`` (95 % by default)."""
    return estimate - z * std_err, estimate + z * std_err


def summarize(
    v_behavior: float, v_target: float, std_err: float, num_episodes: int
) -> dict[str, float]:
    """The result keys every estimator reports.

    ``v_gain = v_target / v_behavior`` is reported as 0.0 when ``v_behavior`` is 0 (the
    ratio is undefined; read ``v_delta``). The standard error and interval keys are
    left out when they are undefined (fewer than two episodes), never reported as NaN.
    """
    out = {
        "v_behavior": float(v_behavior),
        "v_target": float(v_target),
        "v_gain": float(v_target / v_behavior) if v_behavior != 0 else 0.0,
        "v_delta": float(v_target - v_behavior),
        "num_episodes": float(num_episodes),
    }
    if math.isfinite(std_err):
        low, high = normal_ci(v_target, std_err)
        out.update(v_target_std_err=std_err, v_target_ci_low=low, v_target_ci_high=high)
    return out
