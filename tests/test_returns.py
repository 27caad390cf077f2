"""Return math of offrl/returns.py on hand-computed numbers."""

from __future__ import annotations

import numpy as np
import pytest

from offrl.returns import (
    _scalar_segment_sums,
    n_step_targets,
    segment_discounted_sums,
)

F, T = False, True


def test_segment_sums_are_discounted_returns_of_a_terminated_episode() -> None:
    # G2 = 1, G1 = 1 + .5 * 1, G0 = 1 + .5 * 1.5
    out = segment_discounted_sums(np.ones(3), np.array([F, F, T]), 0.5)
    np.testing.assert_allclose(out, [1.75, 1.5, 1.0])


def test_segment_sums_restart_after_a_segment_end() -> None:
    out = segment_discounted_sums(np.array([1.0, 2.0, 3.0]), np.array([T, F, F]), 0.5)
    np.testing.assert_allclose(out, [1.0, 3.5, 3.0])


def test_n_step_targets_stop_at_terminal() -> None:
    ret, nxt, disc = n_step_targets(
        np.array([1.0, 2.0, 3.0, 4.0]), np.array([F, F, F, T]), np.array([F, F, F, T]), 0.5, 2
    )
    np.testing.assert_allclose(ret, [2.0, 3.5, 5.0, 4.0])
    np.testing.assert_array_equal(nxt, [1, 2, 3, 3])
    np.testing.assert_allclose(disc, [0.25, 0.25, 0.0, 0.0])


def test_n_step_targets_never_cross_a_cut() -> None:
    ret, nxt, disc = n_step_targets(
        np.array([1.0, 2.0, 3.0, 4.0]), np.zeros(4, bool), np.array([F, T, F, F]), 0.5, 3
    )
    np.testing.assert_allclose(ret, [2.0, 2.0, 5.0, 4.0])
    np.testing.assert_array_equal(nxt, [1, 1, 3, 3])
    # cut and batch-end rows bootstrap (gamma^k), unlike terminals
    np.testing.assert_allclose(disc, [0.25, 0.5, 0.25, 0.5])


def test_segment_sums_scalar_path_by_hand() -> None:
    out = segment_discounted_sums(
        np.ones(4), np.array([F, T, F, F]), 0.5, np.array([0.0, 4.0, 0.0, 2.0])
    )
    np.testing.assert_allclose(out, [2.5, 3.0, 2.0, 2.0])


def test_segment_sums_vector_path_by_hand() -> None:
    # 20 segments of 2 rows: short enough for the vectorised path.
    end = np.tile([F, T], 20)
    boot = np.where(end, 2.0, 0.0)
    out = segment_discounted_sums(np.ones(40), end, 0.5, boot)
    np.testing.assert_allclose(out, np.tile([2.0, 2.0], 20))
    out0 = segment_discounted_sums(np.ones(40), end, 0.5)
    np.testing.assert_allclose(out0, np.tile([1.5, 1.0], 20))


@pytest.mark.parametrize("seg_len", [3, 50, 400])
def test_segment_sums_paths_agree_with_reference_loop(seg_len: int) -> None:
    rng = np.random.default_rng(0)
    n = 2000
    x = rng.normal(size=n)
    end = rng.random(n) < 1.0 / seg_len
    boot = rng.normal(size=n)
    ref = _scalar_segment_sums(x.tolist(), [*end[:-1].tolist(), True], boot.tolist(), 0.97)
    np.testing.assert_allclose(segment_discounted_sums(x, end, 0.97, boot), ref, rtol=1e-12)


def test_segment_sums_empty() -> None:
    assert segment_discounted_sums(np.zeros(0), np.zeros(0, bool), 0.9).shape == (0,)
