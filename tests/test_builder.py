"""SampleBatchBuilder: rows in, one SampleBatch out, reset after each build."""

from __future__ import annotations

import numpy as np
import pytest

from offrl.io.builder import SampleBatchBuilder


def test_scalars_become_typed_columns() -> None:
    b = SampleBatchBuilder()
    b.add_values(t=0, rewards=1.5, dones=False, action_prob=np.float32(0.25))
    b.add_values(t=1, rewards=-2.0, dones=True, action_prob=np.float32(0.75))
    batch = b.build_and_reset()
    assert batch.count == 2
    assert batch["t"].dtype == np.int64 and batch["t"].tolist() == [0, 1]
    assert batch["rewards"].dtype == np.float64 and batch["rewards"].tolist() == [1.5, -2.0]
    assert batch["dones"].dtype == np.bool_ and batch["dones"].tolist() == [False, True]
    assert batch["action_prob"].dtype == np.float32
    assert batch["action_prob"].tolist() == [0.25, 0.75]


def test_arrays_are_stacked_keeping_dtype() -> None:
    b = SampleBatchBuilder()
    rows = [np.arange(4, dtype=np.float32) + i for i in range(3)]
    for row in rows:
        b.add_values(obs=row)
    obs = b.build_and_reset()["obs"]
    assert obs.shape == (3, 4) and obs.dtype == np.float32
    assert obs[2].tolist() == [2.0, 3.0, 4.0, 5.0]
    rows[0][0] = 99.0  # the batch owns its data
    assert obs[0, 0] == 0.0


def test_infos_stay_dicts() -> None:
    b = SampleBatchBuilder()
    first = {"lives": 3, "pos": [1, 2]}
    b.add_values(infos=first)
    b.add_values(infos={})
    infos = b.build_and_reset()["infos"]
    assert infos.dtype == object and infos[0] is first and infos[1] == {}


def test_build_resets_the_builder() -> None:
    b = SampleBatchBuilder()
    b.add_values(t=0)
    b.add_values(t=1)
    assert b.count == 2
    first = b.build_and_reset()
    assert b.count == 0
    b.add_values(t=7)
    second = b.build_and_reset()
    assert first["t"].tolist() == [0, 1] and second["t"].tolist() == [7]
    assert b.build_and_reset().count == 0


def test_rows_with_different_columns_are_refused() -> None:
    b = SampleBatchBuilder()
    b.add_values(obs=1.0, actions=0)
    with pytest.raises(ValueError, match=r"row 1.*missing \['actions'\], extra \['reward'\]"):
        b.add_values(obs=2.0, reward=1.0)


def test_rows_with_different_shapes_are_refused() -> None:
    b = SampleBatchBuilder()
    b.add_values(obs=np.zeros(4))
    b.add_values(obs=np.zeros(3))
    with pytest.raises(ValueError, match=r"column 'obs': rows have different shapes"):
        b.build_and_reset()
