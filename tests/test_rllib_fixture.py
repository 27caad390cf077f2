"""The real RLlib file (3 CartPole episodes, 102 rows) read with exact values."""

from __future__ import annotations

import numpy as np
import pytest

from offrl.io.json_reader import JsonReader
from tests.shared_data import RLLIB_FIXTURE

FIXTURE = RLLIB_FIXTURE


@pytest.fixture(scope="module")
def batches() -> list:
    return list(JsonReader(str(FIXTURE), shuffle_files=False).iter_epoch())


def test_three_episodes_102_rows(batches: list) -> None:
    assert [b.count for b in batches] == [56, 26, 20]
    assert [int(b["eps_id"][0]) for b in batches] == [241561760, 1238833020, 464626363]
    for b in batches:
        assert len(set(b["eps_id"].tolist())) == 1
        assert b["dones"].tolist() == [False] * (b.count - 1) + [True]
        assert b["t"].tolist() == list(range(b.count))


def test_first_obs_exact_float32(batches: list) -> None:
    first = batches[0]["obs"][0]
    assert first.dtype == np.float32
    expected = np.array(
        [0.040251147001981735, -0.009447001852095127, 0.04735473543405533, -0.00123753328807652],
        dtype=np.float32,
    )
    np.testing.assert_array_equal(first, expected)
    assert float(first[0]) == 0.040251147001981735  # the text is the float32 widened exactly


def test_actions_and_transitions(batches: list) -> None:
    assert batches[0]["actions"][:5].tolist() == [0, 1, 1, 0, 1]
    assert batches[1]["actions"][:5].tolist() == [1, 1, 0, 1, 0]
    assert batches[2]["actions"][:5].tolist() == [0, 1, 0, 1, 0]
    for b in batches:
        assert b["actions"].dtype == np.int64
        np.testing.assert_array_equal(b["new_obs"][:-1], b["obs"][1:])
        assert b["rewards"].tolist() == [1.0] * b.count


def test_extra_columns_kept(batches: list) -> None:
    b = batches[0]
    for col in ("weights", "q_values", "action_prob", "prev_actions", "prev_rewards", "infos"):
        assert col in b
    assert b["q_values"].shape == (56, 2)
    assert b["infos"][0] == {}
    assert b["terminateds"].tolist() == b["dones"].tolist()
    assert not b["truncateds"].any()
