"""Tests for offrl/batch.py: SampleBatch construction, row operations, episodes, MultiAgentBatch."""

from __future__ import annotations

import numpy as np
import pytest

from offrl import batch as sb
from offrl.batch import DEFAULT_POLICY_ID, MultiAgentBatch, SampleBatch


def _batch(n: int = 5, start: int = 0) -> SampleBatch:
    """``n`` rows whose values encode their row number (obs rows are [k, -k])."""
    k = np.arange(start, start + n)
    return SampleBatch(
        {sb.OBS: np.stack([k, -k], axis=1).astype(np.float32), sb.ACTIONS: k},
        rewards=k * 0.5,
    )


# -- construction ------------------------------------------------------------------


def test_construction_from_mapping_and_kwargs_converts_lists_to_arrays() -> None:
    b = SampleBatch({sb.OBS: [[1.0, 2.0], [3.0, 4.0]]}, actions=[0, 1])
    assert isinstance(b[sb.OBS], np.ndarray) and b[sb.OBS].shape == (2, 2)
    assert isinstance(b[sb.ACTIONS], np.ndarray) and b[sb.ACTIONS].tolist() == [0, 1]
    assert len(b) == b.count == 2
    assert list(b.keys()) == [sb.OBS, sb.ACTIONS]
    assert sb.OBS in b and sb.REWARDS not in b
    assert b.get(sb.REWARDS) is None and b.get(sb.REWARDS, 7) == 7


def test_numpy_columns_are_kept_without_copy() -> None:
    obs = np.zeros((3, 2))
    b = SampleBatch(obs=obs)
    assert b[sb.OBS] is obs


def test_infos_column_is_an_object_array_of_dicts() -> None:
    infos = [{"a": 1}, {}, {"b": [1, 2]}]
    b = SampleBatch(infos=infos, rewards=[1.0, 2.0, 3.0])
    assert b[sb.INFOS].dtype == object
    assert b[sb.INFOS].shape == (3,)
    assert list(b[sb.INFOS]) == infos


def test_empty_batch_has_zero_rows() -> None:
    b = SampleBatch()
    assert b.count == 0 and len(b) == 0
    assert b.episode_bounds() == []
    assert b.split_by_episode() == []


def test_unequal_column_lengths_are_rejected_naming_the_lengths() -> None:
    with pytest.raises(ValueError, match="different lengths") as exc:
        SampleBatch(obs=np.zeros((3, 2)), actions=[0, 1])
    assert "'obs': 3" in str(exc.value) and "'actions': 2" in str(exc.value)


def test_setitem_checks_length_and_delitem_removes() -> None:
    b = _batch(4)
    b[sb.DONES] = [False, False, False, True]
    assert b[sb.DONES].dtype == bool
    with pytest.raises(ValueError, match="'weights' has 3 rows, batch has 4"):
        b[sb.WEIGHTS] = [1.0, 1.0, 1.0]
    assert sb.WEIGHTS not in b
    del b[sb.DONES]
    assert sb.DONES not in b


def test_setitem_on_empty_batch_sets_the_row_count() -> None:
    b = SampleBatch()
    b[sb.REWARDS] = [1.0, 2.0]
    assert b.count == 2


def test_columns_property_is_the_live_dict_and_copy_is_deep() -> None:
    b = _batch(3)
    assert b.columns is b.columns
    c = b.copy()
    c[sb.ACTIONS][0] = 99
    assert b[sb.ACTIONS][0] == 0


def test_repr_names_rows_and_columns() -> None:
    assert repr(_batch(2)) == "SampleBatch(2 rows: obs, actions, rewards)"


# -- slice / take / concat -------------------------------------------------------------


def test_slice_returns_rows_as_views() -> None:
    b = _batch(6)
    s = b.slice(2, 5)
    assert s.count == 3
    assert s[sb.ACTIONS].tolist() == [2, 3, 4]
    assert s[sb.OBS].tolist() == [[2, -2], [3, -3], [4, -4]]
    assert s[sb.REWARDS].tolist() == [1.0, 1.5, 2.0]
    s[sb.ACTIONS][0] = 42  # documented: views, so the parent sees the write
    assert b[sb.ACTIONS][2] == 42


def test_take_returns_rows_in_index_order_as_copies() -> None:
    b = _batch(5)
    t = b.take(np.array([4, 0, 4]))
    assert t[sb.ACTIONS].tolist() == [4, 0, 4]
    assert t[sb.OBS][:, 1].tolist() == [-4, 0, -4]
    t[sb.ACTIONS][1] = 42
    assert b[sb.ACTIONS][0] == 0


def test_take_with_boolean_mask() -> None:
    b = _batch(4)
    assert b.take(np.array([True, False, True, False]))[sb.ACTIONS].tolist() == [0, 2]


def test_concat_samples_joins_rows_in_order_and_skips_empty_batches() -> None:
    out = SampleBatch.concat_samples([_batch(2), SampleBatch(), _batch(3, start=2)])
    assert out.count == 5
    assert out[sb.ACTIONS].tolist() == [0, 1, 2, 3, 4]
    assert out[sb.OBS].shape == (5, 2)
    assert _batch(2).concat(_batch(1, start=2))[sb.ACTIONS].tolist() == [0, 1, 2]


def test_concat_samples_keeps_infos_dicts() -> None:
    a = SampleBatch(infos=[{"x": 1}], rewards=[1.0])
    b = SampleBatch(infos=[{"y": 2}], rewards=[2.0])
    out = SampleBatch.concat_samples([a, b])
    assert list(out[sb.INFOS]) == [{"x": 1}, {"y": 2}]


def test_concat_samples_of_nothing_is_empty() -> None:
    assert SampleBatch.concat_samples([]).count == 0
    assert SampleBatch.concat_samples([SampleBatch(), SampleBatch()]).count == 0


def test_concat_samples_rejects_different_columns() -> None:
    other = SampleBatch(obs=np.zeros((1, 2)), actions=[0])
    with pytest.raises(ValueError, match="cannot concatenate") as exc:
        SampleBatch.concat_samples([_batch(2), other])
    assert "rewards" in str(exc.value)


def test_concat_samples_accepts_same_columns_in_another_order() -> None:
    a = SampleBatch(actions=[0], rewards=[1.0])
    b = SampleBatch(rewards=[2.0], actions=[1])
    out = SampleBatch.concat_samples([a, b])
    assert out[sb.ACTIONS].tolist() == [0, 1] and out[sb.REWARDS].tolist() == [1.0, 2.0]


# -- episodes ------------------------------------------------------------------------


def test_episode_bounds_split_on_eps_id_changes() -> None:
    b = SampleBatch(eps_id=[7, 7, 7, 3, 3, 9], rewards=np.ones(6))
    assert b.episode_bounds() == [(0, 3), (3, 5), (5, 6)]


def test_episode_bounds_split_after_done_rows_without_eps_id() -> None:
    b = SampleBatch(dones=[False, True, False, False, True, False], rewards=np.ones(6))
    assert b.episode_bounds() == [(0, 2), (2, 5), (5, 6)]


def test_episode_bounds_split_after_done_even_if_eps_id_repeats() -> None:
    # Two episodes that (wrongly) share an id are still cut at the done row.
    b = SampleBatch(eps_id=[1, 1, 1, 1], dones=[False, True, False, True], rewards=np.ones(4))
    assert b.episode_bounds() == [(0, 2), (2, 4)]


def test_episode_bounds_combine_eps_id_and_dones() -> None:
    b = SampleBatch(
        eps_id=[1, 1, 2, 2, 2, 2],
        dones=[False, False, False, True, False, False],
        rewards=np.ones(6),
    )
    # id change at 2 (a fragment cut, no done), done at row 3 -> new part at 4.
    assert b.episode_bounds() == [(0, 2), (2, 4), (4, 6)]


def test_episode_bounds_done_on_last_row_adds_no_empty_episode() -> None:
    b = SampleBatch(dones=[False, False, True], rewards=np.ones(3))
    assert b.episode_bounds() == [(0, 3)]


def test_episode_bounds_without_eps_id_or_dones_is_one_episode() -> None:
    assert _batch(4).episode_bounds() == [(0, 4)]


def test_episode_bounds_uses_terminateds_and_truncateds() -> None:
    b = SampleBatch(
        terminateds=[False, True, False, False, False],
        truncateds=[False, False, False, True, False],
        rewards=np.ones(5),
    )
    assert b.episode_bounds() == [(0, 2), (2, 4), (4, 5)]


def test_split_by_episode_returns_the_row_blocks() -> None:
    b = SampleBatch(eps_id=[5, 5, 6, 6, 6], rewards=[1.0, 2.0, 3.0, 4.0, 5.0])
    parts = b.split_by_episode()
    assert [p[sb.REWARDS].tolist() for p in parts] == [[1.0, 2.0], [3.0, 4.0, 5.0]]
    assert [p[sb.EPS_ID].tolist() for p in parts] == [[5, 5], [6, 6, 6]]
    assert sum(p.count for p in parts) == b.count


def test_split_by_episode_with_string_eps_ids() -> None:
    b = SampleBatch(eps_id=["a", "a", "b"], rewards=[1.0, 2.0, 3.0])
    assert [p.count for p in b.split_by_episode()] == [2, 1]


# -- dones_column ---------------------------------------------------------------------


def test_dones_column_prefers_dones_and_casts_to_bool() -> None:
    b = SampleBatch(dones=[0, 1, 0], terminateds=[True, True, True], rewards=np.ones(3))
    done = b.dones_column()
    assert done is not None and done.dtype == bool
    assert done.tolist() == [False, True, False]


def test_dones_column_is_terminateds_or_truncateds() -> None:
    b = SampleBatch(
        terminateds=[True, False, False, False],
        truncateds=[False, True, False, True],
        rewards=np.ones(4),
    )
    done = b.dones_column()
    assert done is not None and done.tolist() == [True, True, False, True]


def test_dones_column_with_terminateds_only() -> None:
    b = SampleBatch(terminateds=[0, 1], rewards=np.ones(2))
    done = b.dones_column()
    assert done is not None and done.tolist() == [False, True]


def test_dones_column_does_not_modify_the_batch() -> None:
    term = np.array([True, False, False])
    b = SampleBatch(terminateds=term, truncateds=[False, False, True], rewards=np.ones(3))
    b.dones_column()
    assert b[sb.TERMINATEDS].tolist() == [True, False, False]
    assert sb.DONES not in b


def test_dones_column_is_none_without_done_columns() -> None:
    assert _batch(3).dones_column() is None


def test_truncateds_alone_do_not_make_a_dones_column() -> None:
    # FORMAT.md requires dones or terminateds; truncateds alone is no done signal.
    b = SampleBatch(truncateds=[False, True], rewards=np.ones(2))
    assert b.dones_column() is None


# -- MultiAgentBatch -------------------------------------------------------------------


def test_wrap_single_puts_the_batch_under_default_policy() -> None:
    b = _batch(3)
    ma = MultiAgentBatch.wrap_single(b)
    assert ma.count == 3
    assert list(ma.policy_batches) == [DEFAULT_POLICY_ID]
    assert ma.as_single_agent() is b
    assert repr(ma) == "MultiAgentBatch(count=3, policies=['default_policy'])"


def test_as_single_agent_works_for_any_single_policy_id() -> None:
    b = _batch(2)
    assert MultiAgentBatch({"pol": b}, 2).as_single_agent() is b


def test_as_single_agent_rejects_several_policies_naming_them() -> None:
    ma = MultiAgentBatch({"p1": _batch(2), "p0": _batch(3)}, 5)
    with pytest.raises(ValueError, match="single-agent") as exc:
        ma.as_single_agent()
    assert "['p0', 'p1']" in str(exc.value)


def test_as_single_agent_rejects_no_policy() -> None:
    with pytest.raises(ValueError, match="expected one policy, found \\[\\]"):
        MultiAgentBatch({}, 0).as_single_agent()


def test_multi_agent_count_is_int_and_policy_dict_is_a_copy() -> None:
    source = {DEFAULT_POLICY_ID: _batch(2)}
    ma = MultiAgentBatch(source, np.int64(2))  # type: ignore[arg-type]
    assert type(ma.count) is int
    source["other"] = _batch(1)
    assert list(ma.policy_batches) == [DEFAULT_POLICY_ID]


def test_known_columns_hold_every_constant() -> None:
    names = {
        v
        for k, v in vars(sb).items()
        if k.isupper() and isinstance(v, str) and k not in ("DEFAULT_POLICY_ID", "NEW_OBS_VALID")
    }  # new_obs_valid is added by the reader, never recorded
    assert names == set(sb.KNOWN_COLUMNS)
