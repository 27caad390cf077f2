"""decode_record: every record variant of FORMAT.md, dtypes, normalisation, errors, security."""

from __future__ import annotations

import base64
import json
import os
import pickle
import re
from pathlib import Path

import lz4.frame
import numpy as np
import pytest
from rllib_variants import (
    b64_lz4,
    line,
    multi_agent_record,
    rllib_column,
    rllib_rows,
    sample_batch_record,
    zero_d_columns,
)

from offrl.errors import DataFormatError
from offrl.io.codecs import encode_column
from offrl.io.decode import (
    NEW_OBS_VALID,
    CorruptLineError,
    decode_record,
    decode_value,
    finish_columns,
)

OBS = np.array([[0.5, -1.25, 2.0, 0.0], [1.0, 2.0, 3.0, 4.0], [-0.5, 0.25, 0.125, 8.0]], np.float32)


def three_rows(**overrides: object) -> dict[str, object]:
    cols: dict[str, object] = {
        "obs": OBS.tolist(),
        "new_obs": (OBS + 1).tolist(),
        "actions": [0, 1, 1],
        "rewards": [1.0, 0.5, -2.0],
        "dones": [False, False, True],
        "eps_id": [11, 11, 11],
    }
    cols.update(overrides)
    return cols


def decode(record: dict[str, object]) -> object:
    return decode_record(line(record), path="f.json", lineno=3)


# -- record types -------------------------------------------------------------------


def test_sample_batch_plain_lists_values_and_dtypes() -> None:
    b = decode(sample_batch_record(three_rows(infos=[{}, {"a": 1}, {}])))
    np.testing.assert_array_equal(b["obs"], OBS)
    assert b["obs"].dtype == np.float32 and b["new_obs"].dtype == np.float32
    assert b["actions"].dtype == np.int64 and b["actions"].tolist() == [0, 1, 1]
    assert b["rewards"].dtype == np.float32 and b["rewards"].tolist() == [1.0, 0.5, -2.0]
    assert b["eps_id"].dtype == np.int64
    assert b["infos"].dtype == object and b["infos"][1] == {"a": 1}


def test_multi_agent_default_policy_reads_as_sample_batch() -> None:
    b = decode(multi_agent_record(three_rows()))
    assert b.count == 3
    np.testing.assert_array_equal(b["obs"], OBS)


@pytest.mark.parametrize("policies", [{"other": None}, {"default_policy": None, "p2": None}, {}])
def test_multi_agent_other_policies_rejected(policies: dict[str, None]) -> None:
    record = {
        "type": "MultiAgentBatch",
        "count": 3,
        "policy_batches": {k: three_rows() for k in policies},
    }
    with pytest.raises(DataFormatError) as e:
        decode(record)
    assert e.value.path == "f.json" and e.value.line == 3
    assert "default_policy" in e.value.reason


def test_unknown_type_and_non_object_lines_rejected() -> None:
    with pytest.raises(DataFormatError, match="unknown record \"type\": 'Episode'"):
        decode({"type": "Episode", **three_rows()})
    with pytest.raises(DataFormatError, match="expected a JSON object per line, found list"):
        decode_record(b"[1, 2, 3]\n", path="f.json", lineno=1)
    err = pytest.raises(DataFormatError, decode_record, b"[1]", path="f.json", lineno=1)
    assert not isinstance(err.value, CorruptLineError)  # not skipped as corrupt: it is JSON


def test_not_json_is_corrupt_line_error_naming_file_and_line() -> None:
    with pytest.raises(CorruptLineError) as e:
        decode_record(b'{"type": "SampleBatch", "obs": [[1.0, 2', path="x.json", lineno=9)
    assert str(e.value).startswith("x.json:9: not a valid JSON line")


# -- compressed columns -------------------------------------------------------------


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
@pytest.mark.parametrize("wrap", [False, True])
@pytest.mark.parametrize("numpy_core", [False, True])
def test_rllib_pickle_whole_column(protocol: int, wrap: bool, numpy_core: bool) -> None:
    obs = rllib_column(OBS, protocol, wrap=wrap, numpy_core=numpy_core)
    new_obs = rllib_column(OBS + 1, protocol, wrap=wrap, numpy_core=numpy_core)
    assert obs.startswith("b'BCJNG" if wrap else "BCJNG")
    b = decode(sample_batch_record(three_rows(obs=obs, new_obs=new_obs)))
    np.testing.assert_array_equal(b["obs"], OBS)
    np.testing.assert_array_equal(b["new_obs"], OBS + 1)
    assert b["obs"].dtype == np.float32


@pytest.mark.parametrize("protocol", [2, 5])
@pytest.mark.parametrize("wrap", [False, True])
def test_rllib_pickle_per_row(protocol: int, wrap: bool) -> None:
    rows = rllib_rows(OBS, protocol, wrap=wrap)
    b = decode(multi_agent_record(three_rows(obs=rows)))
    np.testing.assert_array_equal(b["obs"], OBS)


def test_float64_pickled_obs_becomes_float32() -> None:
    b = decode(sample_batch_record(three_rows(obs=rllib_column(OBS.astype(np.float64)))))
    assert b["obs"].dtype == np.float32
    np.testing.assert_array_equal(b["obs"], OBS)


def test_offrl_npy_codec_whole_and_per_row() -> None:
    whole = encode_column(OBS, "offrl")
    per_row = [encode_column(r, "offrl") for r in OBS]
    b = decode(sample_batch_record(three_rows(obs=whole, new_obs=per_row)))
    np.testing.assert_array_equal(b["obs"], OBS)
    np.testing.assert_array_equal(b["new_obs"], OBS)


def test_uint8_image_obs_keeps_its_dtype() -> None:
    img = np.arange(3 * 2 * 2, dtype=np.uint8).reshape(3, 2, 2)
    b = decode(sample_batch_record(three_rows(obs=encode_column(img, "offrl"), new_obs=None)))
    assert b["obs"].dtype == np.uint8
    np.testing.assert_array_equal(b["obs"], img)


def test_pyarrow_era_column_gives_clear_error() -> None:
    # 2019 RLlib: pyarrow.serialize output inside the LZ4 frame: neither npy nor pickle.
    legacy = b64_lz4(b"\x00\x00\x00\x00ARROW1\x00\x00serialized-union-data")
    with pytest.raises(DataFormatError) as e:
        decode(sample_batch_record(three_rows(obs=legacy)))
    assert (e.value.path, e.value.line) == ("f.json", 3)
    assert "column 'obs'" in e.value.reason and "pyarrow" in e.value.reason
    assert "output_compress_columns" in e.value.reason  # says what to do


def test_corrupt_compressed_column_names_file_line_and_column() -> None:
    good = rllib_column(OBS)
    with pytest.raises(DataFormatError, match=r"^f\.json:3: column 'new_obs': .*LZ4"):
        decode(sample_batch_record(three_rows(new_obs=good[:40] + "AAAA")))


def test_plain_string_column_is_not_treated_as_compressed() -> None:
    with pytest.raises(DataFormatError, match="column 'actions' is a string that is not"):
        decode(sample_batch_record(three_rows(actions="left,right,left")))


class _WritesFile:
    """A pickle whose unpickling would create a file (via builtins.open)."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (self.target, "w"))


@pytest.mark.parametrize("protocol", [2, 5])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path: Path, protocol: int) -> None:
    target = tmp_path / "pwned.txt"
    payload = pickle.dumps(_WritesFile(str(target)), protocol=protocol)
    record = sample_batch_record(three_rows(obs=b64_lz4(payload)))
    with pytest.raises(DataFormatError) as e:
        decode_record(line(record), path="evil.json", lineno=4)
    assert str(e.value).startswith("evil.json:4: column 'obs': refused to unpickle")
    assert re.search(r"refused to unpickle (io|builtins)\.open", e.value.reason)
    assert not target.exists()
    assert not os.listdir(tmp_path)


# -- dones / terminateds / truncateds -----------------------------------------------


def test_dones_only_means_terminated() -> None:
    b = decode(sample_batch_record(three_rows()))
    assert b["terminateds"].tolist() == [False, False, True]
    assert b["truncateds"].tolist() == [False, False, False]
    assert b["dones"].dtype == bool


def test_terminateds_truncateds_only_builds_dones() -> None:
    cols = three_rows(terminateds=[False, True, False], truncateds=[False, False, True])
    del cols["dones"]
    b = decode(sample_batch_record(cols))
    assert b["dones"].tolist() == [False, True, True]


def test_terminateds_only() -> None:
    cols = three_rows(terminateds=[False, False, True])
    del cols["dones"]
    b = decode(sample_batch_record(cols))
    assert b["dones"].tolist() == [False, False, True]
    assert b["truncateds"].tolist() == [False, False, False]


def test_both_forms_kept_as_written() -> None:
    b = decode(
        sample_batch_record(
            three_rows(terminateds=[False, False, False], truncateds=[False, False, True])
        )
    )
    assert b["dones"].tolist() == [False, False, True]
    assert b["truncateds"].tolist() == [False, False, True]
    assert b["terminateds"].tolist() == [False, False, False]


def test_missing_required_columns_named() -> None:
    cols = three_rows()
    del cols["dones"], cols["rewards"]
    with pytest.raises(DataFormatError, match=r"missing required column\(s\) \['rewards'\]"):
        decode(sample_batch_record(cols))
    cols = three_rows()
    del cols["dones"]
    with pytest.raises(DataFormatError, match="missing column 'dones'"):
        decode(sample_batch_record(cols))


# -- new_obs rebuilding ---------------------------------------------------------------


def test_missing_new_obs_rebuilt_within_episode_and_marked() -> None:
    # Rows 0-1 episode 5 (truncated by the fragment end), rows 2-3 episode 6 terminated.
    obs = [[0.0], [1.0], [2.0], [3.0]]
    cols = {
        "obs": obs,
        "actions": [0, 0, 0, 0],
        "rewards": [0.0] * 4,
        "dones": [False, False, False, True],
        "eps_id": [5, 5, 6, 6],
    }
    b = decode(sample_batch_record(cols))
    assert b["new_obs"][:, 0].tolist() == [1.0, 1.0, 3.0, 3.0]
    # Row 1 has no known successor; row 3 is terminal, so TD never needs its new_obs.
    assert b[NEW_OBS_VALID].tolist() == [True, False, True, True]


def test_rebuild_respects_t_gaps() -> None:
    cols = three_rows(new_obs=None, t=[0, 1, 5], dones=[False, False, False])
    b = decode(sample_batch_record(cols))
    assert b[NEW_OBS_VALID].tolist() == [True, False, False]
    np.testing.assert_array_equal(b["new_obs"][0], OBS[1])


def test_new_obs_present_adds_no_flag() -> None:
    assert NEW_OBS_VALID not in decode(sample_batch_record(three_rows()))


# -- columns and dtypes ---------------------------------------------------------------


def test_columns_of_different_lengths_named() -> None:
    with pytest.raises(DataFormatError) as e:
        decode(sample_batch_record(three_rows(rewards=[1.0, 2.0], t=[0, 1, 2, 3])))
    assert "different lengths" in e.value.reason
    assert "'rewards': 2" in e.value.reason and "'t': 4" in e.value.reason


def test_unknown_extra_columns_kept() -> None:
    b = decode(sample_batch_record(three_rows(my_score=[0.5, 1.5, 2.5], tags=["a", "b", "c"])))
    assert b["my_score"].tolist() == [0.5, 1.5, 2.5]
    assert b["tags"].tolist() == ["a", "b", "c"]


def test_eps_id_above_2_pow_53_is_exact() -> None:
    big = 2**62 + 1  # not representable as a float64
    b = decode(sample_batch_record(three_rows(eps_id=[big, big, big + 2])))
    assert b["eps_id"].dtype == np.int64
    assert b["eps_id"].tolist() == [big, big, big + 2]


def test_eps_id_between_2_pow_63_and_2_pow_64_stays_exact() -> None:
    big = 2**64 - 5
    b = decode(sample_batch_record(three_rows(eps_id=[big, big, big])))
    assert b["eps_id"].tolist() == [big] * 3


def test_float_ids_rejected_not_truncated() -> None:
    with pytest.raises(DataFormatError, match="column 'eps_id'"):
        decode(sample_batch_record(three_rows(eps_id=[1.5, 1.5, 1.5])))


def test_float_actions_are_float32() -> None:
    b = decode(sample_batch_record(three_rows(actions=[[0.5, -1.0], [0.0, 1.0], [1.0, 1.0]])))
    assert b["actions"].dtype == np.float32 and b["actions"].shape == (3, 2)


def test_nan_and_infinity_tokens_parse() -> None:
    text = json.dumps(sample_batch_record(three_rows(rewards=[float("nan"), np.inf, -np.inf])))
    assert "NaN" in text and "-Infinity" in text
    b = decode_record(text.encode(), path="f.json", lineno=1)
    r = b["rewards"]
    assert np.isnan(r[0]) and r[1] == np.inf and r[2] == -np.inf


def test_non_list_column_rejected() -> None:
    with pytest.raises(DataFormatError, match="column 'rewards' must be a list"):
        decode(sample_batch_record(three_rows(rewards=5)))


def test_ragged_obs_rejected_with_column_name() -> None:
    with pytest.raises(DataFormatError, match="column 'obs': cannot convert"):
        decode(sample_batch_record(three_rows(obs=[[1.0, 2.0], [1.0], [1.0, 2.0]])))


# -- more errors ------------------------------------------------------------------------


def test_b64_wrapper_with_double_quotes_not_needed_for_plain() -> None:
    # A whole column written by encode_column round-trips through base64 bytes unchanged.
    text = encode_column(OBS, "rllib")
    raw = lz4.frame.decompress(base64.b64decode(text))
    assert raw[:1] == b"\x80"
    np.testing.assert_array_equal(decode(sample_batch_record(three_rows(obs=text)))["obs"], OBS)


def test_object_where_a_list_belongs_is_named() -> None:
    with pytest.raises(DataFormatError, match=r"column 'infos' must be a list.*\{'a': 1\}"):
        decode(sample_batch_record(three_rows(infos={"a": 1})))


@pytest.mark.parametrize("name", ["eps_id", "t"])
@pytest.mark.parametrize(
    "value",
    [[[11], [11], [11]], [[0, 1], [1, 2], [2, 3]], "compressed"],
    ids=["rows-of-one", "rows-of-two", "compressed"],
)
def test_2d_ids_without_new_obs_name_the_column_and_shape(name: str, value: object) -> None:
    if value == "compressed":
        value = encode_column(np.arange(6, dtype=np.int64).reshape(3, 2), "rllib")
    shape = (3, 1) if value == [[11], [11], [11]] else (3, 2)
    message = re.escape(
        f"f.json:3: column '{name}' must hold one value per row, found shape {shape}"
    )
    record = sample_batch_record(three_rows(new_obs=None, **{name: value}))
    with pytest.raises(DataFormatError, match=message):
        decode(record)


def test_finish_columns_checks_id_shapes_only_when_rebuilding_new_obs() -> None:
    cols = {
        "obs": OBS.copy(),
        "actions": np.array([0, 1, 1]),
        "rewards": np.zeros(3, np.float32),
        "dones": np.array([False, False, True]),
        "eps_id": np.array([[1], [1], [1]]),
    }
    with pytest.raises(DataFormatError, match=r"column 'eps_id' .* shape \(3, 1\)"):
        finish_columns(dict(cols), "f.json", 3)
    cols["eps_id"] = np.array([1, 1, 1])
    cols["t"] = np.zeros((3, 1), np.int64)
    with pytest.raises(DataFormatError, match=r"column 't' .* shape \(3, 1\)"):
        finish_columns(dict(cols), "f.json", 3)
    del cols["t"]
    b = finish_columns(dict(cols), "f.json", 3)  # 1-D ids: rebuilt as before
    assert b[NEW_OBS_VALID].tolist() == [True, True, True]
    np.testing.assert_array_equal(b["new_obs"][:2], OBS[1:])


# -- 0-d compressed columns ------------------------------------------------------------

ZERO_D = zero_d_columns()


@pytest.mark.parametrize("payload", list(ZERO_D))
@pytest.mark.parametrize("name", ["x", "obs", "rewards", "actions", "eps_id", "dones", "infos"])
def test_decode_value_of_a_0d_compressed_column_is_a_format_error(name: str, payload: str) -> None:
    with pytest.raises(DataFormatError) as e:
        decode_value(name, ZERO_D[payload], "f.json", 3)
    assert type(e.value) is DataFormatError  # not a TypeError from len(), not corrupt
    assert (e.value.path, e.value.line) == ("f.json", 3)
    assert e.value.reason.startswith(f"column {name!r} must be a list of per-step values")


@pytest.mark.parametrize("payload", list(ZERO_D))
@pytest.mark.parametrize("name", ["x", "obs", "new_obs", "rewards"])
def test_record_with_a_0d_compressed_column_names_file_line_and_column(
    name: str, payload: str
) -> None:
    record = sample_batch_record(three_rows(**{name: ZERO_D[payload]}))
    message = rf"^f\.json:3: column '{name}' must be a list of per-step values"
    with pytest.raises(DataFormatError, match=message):
        decode(record)
    with pytest.raises(DataFormatError, match=message):
        decode(multi_agent_record(three_rows(**{name: ZERO_D[payload]})))


def test_0d_value_of_a_per_row_compressed_column_stacks_into_a_column() -> None:
    # Per row, 0-d payloads are one value per step: stacked, they are a 1-D column.
    rows = [ZERO_D["npy-float32"]] * 3
    b = decode(sample_batch_record(three_rows(rewards=rows)))
    assert b["rewards"].dtype == np.float32 and b["rewards"].tolist() == [1.0, 1.0, 1.0]
