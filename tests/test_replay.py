"""Replay buffers: sum-tree arithmetic, ring storage, prioritized sampling and weights."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from offrl.algos.replay import PrioritizedReplayBuffer, ReplayBuffer, SumTree


def rows(values: list[float]) -> dict[str, np.ndarray]:
    """Rows whose ``x`` column is ``values``, to identify them after sampling."""
    x = np.asarray(values, dtype=np.float32)
    return {"x": x, "obs": np.stack([x, -x], axis=1)}


def test_sum_tree_total_and_find_on_hand_computed_prefixes() -> None:
    tree = SumTree(4)
    tree.update(np.arange(4), np.array([1.0, 2.0, 3.0, 4.0]))
    assert tree.total == 10.0
    # Cumulative sums 1, 3, 6, 10: leaf i owns [cum[i-1], cum[i]).
    prefixes = np.array([0.0, 0.99, 1.0, 2.9, 3.0, 5.99, 6.0, 9.99])
    assert tree.find(prefixes).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]


def test_sum_tree_update_refreshes_ancestors_and_last_duplicate_wins() -> None:
    tree = SumTree(4)
    tree.update(np.arange(4), np.ones(4))
    tree.update(np.array([2, 2]), np.array([5.0, 7.0]))
    assert tree.total == 10.0  # 1 + 1 + 7 + 1
    assert tree.nodes[3] == 8.0  # parent of leaves 2 and 3
    assert tree.find(np.array([2.0, 8.99, 9.0])).tolist() == [2, 2, 3]


def test_sum_tree_with_non_power_of_two_capacity_never_finds_padding() -> None:
    tree = SumTree(5)
    assert tree.leaf_base == 8
    tree.update(np.arange(5), np.array([1.0, 1.0, 1.0, 1.0, 1.0]))
    found = tree.find(np.linspace(0.0, 4.999, 200))
    assert found.max() == 4
    assert np.bincount(found).tolist() == [40, 40, 40, 40, 40]


def test_ring_buffer_overwrites_oldest_rows() -> None:
    buf = ReplayBuffer(3)
    buf.add(rows([0, 1]))
    slots = buf.add(rows([2, 3, 4]))
    assert slots.tolist() == [2, 0, 1]
    assert len(buf) == 3 and buf.pos == 2
    assert sorted(buf.columns["x"].tolist()) == [2.0, 3.0, 4.0]
    assert buf.columns["obs"][0].tolist() == [3.0, -3.0]


def test_adding_more_rows_than_capacity_keeps_the_newest() -> None:
    buf = ReplayBuffer(2)
    buf.add(rows([0, 1, 2, 3, 4]))
    assert sorted(buf.columns["x"].tolist()) == [3.0, 4.0]
    assert len(buf) == 2


def test_uniform_sample_draws_only_stored_rows_with_unit_weights() -> None:
    buf = ReplayBuffer(100)
    buf.add(rows([10, 11, 12]))
    cols, slots, weights = buf.sample(500, np.random.default_rng(0))
    assert set(cols["x"].tolist()) == {10.0, 11.0, 12.0}
    assert slots.max() == 2
    assert np.all(weights == 1.0)


def test_prioritized_sampling_follows_priorities() -> None:
    buf = PrioritizedReplayBuffer(4, alpha=1.0, eps=1e-9)
    slots = buf.add(rows([0, 1, 2, 3]))
    buf.update_priorities(slots, np.array([1.0, -2.0, 3.0, 4.0]))  # |td| is used
    rng = np.random.default_rng(0)
    counts = np.zeros(4)
    for _ in range(100):
        cols, _, _ = buf.sample(400, rng)
        counts += np.bincount(cols["x"].astype(int), minlength=4)
    freq = counts / counts.sum()
    np.testing.assert_allclose(freq, [0.1, 0.2, 0.3, 0.4], atol=0.005)


def test_alpha_flattens_priorities() -> None:
    buf = PrioritizedReplayBuffer(2, alpha=0.5, eps=1e-12)
    slots = buf.add(rows([0, 1]))
    buf.update_priorities(slots, np.array([1.0, 4.0]))
    np.testing.assert_allclose(buf.tree.leaves, [1.0, 2.0])  # sqrt(1), sqrt(4)
    assert buf.max_priority == pytest.approx(2.0)


def test_importance_weights_are_normalised_by_the_lowest_priority() -> None:
    buf = PrioritizedReplayBuffer(4, alpha=1.0, eps=1e-12)
    slots = buf.add(rows([0, 1, 2, 3]))
    buf.update_priorities(slots, np.array([1.0, 2.0, 3.0, 4.0]))
    cols, got_slots, weights = buf.sample(64, np.random.default_rng(1), beta=1.0)
    # w_i = (p_i / p_min)^-beta = 1 / p_i here.
    np.testing.assert_allclose(weights, 1.0 / (got_slots + 1.0), rtol=1e-6)
    _, s2, w2 = buf.sample(64, np.random.default_rng(1), beta=0.5)
    np.testing.assert_allclose(w2, (s2 + 1.0) ** -0.5, rtol=1e-6)


def test_new_rows_get_the_highest_priority_seen() -> None:
    buf = PrioritizedReplayBuffer(8, alpha=1.0, eps=1e-12)
    slots = buf.add(rows([0, 1]))
    buf.update_priorities(slots, np.array([5.0, 0.5]))
    new = buf.add(rows([2]))
    assert buf.tree.leaves[new[0]] == pytest.approx(5.0)
    assert buf.tree.total == pytest.approx(10.5)


def test_state_round_trip_through_torch_weights_only_load() -> None:
    buf = PrioritizedReplayBuffer(5, alpha=0.6, eps=1e-6)
    slots = buf.add(rows([0, 1, 2]))
    buf.update_priorities(slots, np.array([0.1, 2.0, 0.7]))
    raw = io.BytesIO()
    torch.save(buf.get_state(), raw)
    raw.seek(0)
    restored = PrioritizedReplayBuffer(5, alpha=0.6, eps=1e-6)
    restored.set_state(torch.load(raw, weights_only=True))
    assert restored.tree.total == pytest.approx(buf.tree.total)
    a = buf.sample(16, np.random.default_rng(3), beta=0.4)
    b = restored.sample(16, np.random.default_rng(3), beta=0.4)
    np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_array_equal(a[0]["obs"], b[0]["obs"])
    np.testing.assert_array_equal(a[2], b[2])
    assert restored.add(rows([9])).tolist() == [3]
