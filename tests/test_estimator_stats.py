"""Standard errors and intervals on hand-computed numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from offrl.estimators.stats import (
    Z95,
    mean_std_err,
    normal_ci,
    std_err_from_influence,
    summarize,
)


def test_mean_std_err_by_hand() -> None:
    # values 1, 2, 3, 6: mean 3; deviations -2,-1,0,3 -> sum sq 14; var 14/3; se sqrt(14/3)/2
    mean, se = mean_std_err(np.array([1.0, 2.0, 3.0, 6.0]))
    assert mean == 3.0
    assert se == pytest.approx(math.sqrt(14 / 3) / 2)


def test_std_err_undefined_for_one_value() -> None:
    mean, se = mean_std_err(np.array([4.0]))
    assert mean == 4.0 and math.isnan(se)
    assert math.isnan(std_err_from_influence(np.array([0.0])))


def test_influence_std_err_by_hand() -> None:
    # psi = 1, -1, 2, -2: sum sq 10, n(n-1) = 12 -> sqrt(10/12)
    assert std_err_from_influence(np.array([1.0, -1.0, 2.0, -2.0])) == pytest.approx(
        math.sqrt(10 / 12)
    )


def test_normal_ci() -> None:
    assert abs(Z95 - 1.96) < 1e-3
    low, high = normal_ci(10.0, 2.0)
    assert low == pytest.approx(10 - 2 * Z95) and high == pytest.approx(10 + 2 * Z95)


def test_summarize_keys_and_guards() -> None:
    out = summarize(v_behavior=2.0, v_target=3.0, std_err=0.5, num_episodes=7)
    assert out["v_gain"] == 1.5 and out["v_delta"] == 1.0 and out["num_episodes"] == 7.0
    assert out["v_target_ci_low"] == pytest.approx(3 - 0.5 * Z95)
    zero = summarize(v_behavior=0.0, v_target=3.0, std_err=math.nan, num_episodes=1)
    assert zero["v_gain"] == 0.0  # undefined ratio, never inf/NaN in results
    assert "v_target_std_err" not in zero and "v_target_ci_low" not in zero
    assert all(math.isfinite(v) for v in zero.values())
