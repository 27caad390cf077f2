"""encode_record: RLlib's record shape, exact round trips, NaN tokens, codecs."""

from __future__ import annotations

import base64
import json
import pickle
from typing import Any

import lz4.frame
import numpy as np
import pytest

from offrl.batch import MultiAgentBatch, SampleBatch
from offrl.io import codecs
from offrl.io.codecs import decode_column
from offrl.io.encode import encode_record
from tests.shared_data import RLLIB_FIXTURE

FIXTURE = RLLIB_FIXTURE
BIG_ID = 2**62 + 1  # not representable as a double: only exact int handling keeps it


def full_batch() -> SampleBatch:
    """Every column type a record can hold, with values that break lossy encoders."""
    rng = np.random.default_rng(7)
    n = 5
    obs = rng.normal(size=(n, 4)).astype(np.float32)
    obs[0, 0] = np.float32(0.1)  # float32(0.1) != 0.1: shortest-repr traps show here
    obs[1, 1] = np.float32(1e-40)  # subnormal
    return SampleBatch(
        obs=obs,
        new_obs=obs[::-1].copy(),
        actions=np.array([0, 1, 1, 0, 1], dtype=np.int64),
        rewards=np.array([1.0, np.nan, np.inf, -np.inf, 0.5], dtype=np.float32),
        dones=np.array([False, False, False, False, True]),
        eps_id=np.array([BIG_ID] * 4 + [-BIG_ID], dtype=np.int64),
        unroll_id=np.array([2**64 - 1] * n, dtype=np.uint64),
        t=np.arange(n),
        q_values=rng.normal(size=(n, 2)),  # float64 stays float64
        action_prob=np.full(n, 1 / 3, dtype=np.float32),
        infos=[{}, {"a": 1}, {"nested": {"x": [1.5, None]}}, {"s": "null\n"}, {}],
    )


def decode_line(line: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    """Parse with the stdlib (it reads NaN tokens) and decode compressed columns."""
    raw = json.loads(line)
    cols = raw["policy_batches"]["default_policy"] if raw["type"] == "MultiAgentBatch" else raw
    return raw, {k: decode_column(v) for k, v in cols.items() if k != "type"}


def assert_bits_equal(expected: np.ndarray, got: Any) -> None:
    got_arr = np.asarray(got, dtype=expected.dtype)
    assert got_arr.shape == expected.shape
    if expected.dtype.kind == "f":
        assert got_arr.tobytes() == expected.tobytes()
    else:
        assert np.array_equal(got_arr, expected)


@pytest.mark.parametrize(
    "compress,codec",
    [((), "offrl"), (("obs", "new_obs"), "offrl"), (("obs", "new_obs", "rewards"), "rllib")],
)
def test_round_trip_every_column_is_exact(compress: tuple[str, ...], codec: str) -> None:
    batch = full_batch()
    line = encode_record(batch, compress_columns=compress, codec=codec)  # type: ignore[arg-type]
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    raw, cols = decode_line(line)
    assert list(raw) == ["type", *batch.keys()]
    for name in compress:
        assert isinstance(raw[name], str) and raw[name].startswith("BCJNG")
    for name, arr in batch.items():
        if name == "infos":
            assert cols[name] == list(arr)
        else:
            assert_bits_equal(arr, cols[name])
    assert raw["eps_id"][0] == BIG_ID and raw["unroll_id"][0] == 2**64 - 1


def test_float32_text_is_the_widened_double_like_rllib() -> None:
    line = encode_record(
        SampleBatch(obs=np.array([[0.040251147001981735]], dtype=np.float32)),
        compress_columns=(),
    )
    assert b'"obs":[[0.040251147001981735]]' in line


def test_nan_and_infinity_are_written_as_tokens_not_null() -> None:
    batch = SampleBatch(
        rewards=np.array([np.nan, np.inf, -np.inf], dtype=np.float32),
        infos=[{"v": float("nan")}, {"v": None}, {}],
    )
    line = encode_record(batch, compress_columns=())
    assert b'"rewards":[NaN,Infinity,-Infinity]' in line
    assert b'"infos":[{"v":NaN},{"v":null},{}]' in line


def test_booleans_ints_and_infos_have_rllib_json_types() -> None:
    raw, _ = decode_line(encode_record(full_batch(), compress_columns=()))
    assert all(type(v) is bool for v in raw["dones"])
    assert all(type(v) is int for v in raw["actions"])
    assert all(type(v) is float for v in raw["action_prob"])
    assert all(type(v) is dict for v in raw["infos"])


def _json_type(value: Any) -> Any:
    """The JSON type tree of a value: ``[[float]]``-like, for comparing shapes of records."""
    if isinstance(value, list):
        return ["list", _json_type(value[0]) if value else None]
    return type(value).__name__


def _batch_from_rllib_record(record: dict[str, Any]) -> SampleBatch:
    """Columns as RLlib held them: float32 floats, int64 ints, bools, dicts."""
    cols: dict[str, Any] = {}
    for name, value in record.items():
        if name == "type":
            continue
        first = value[0]
        while isinstance(first, list):
            first = first[0]
        dtype = {bool: np.bool_, int: np.int64, float: np.float32}.get(type(first))
        cols[name] = value if dtype is None else np.array(value, dtype=dtype)
    return SampleBatch(cols)


def test_rllib_fixture_records_are_reproduced_exactly() -> None:
    lines = FIXTURE.read_bytes().splitlines()
    assert len(lines) == 3
    for text in lines:
        fixture = json.loads(text)
        ours, _ = decode_line(encode_record(_batch_from_rllib_record(fixture), compress_columns=()))
        assert list(ours) == list(fixture)  # same keys, same order
        assert {k: _json_type(v) for k, v in ours.items()} == {
            k: _json_type(v) for k, v in fixture.items()
        }
        assert ours == fixture  # every float32 value comes back as the same double


def test_multi_agent_wraps_under_default_policy() -> None:
    batch = SampleBatch(obs=np.zeros((3, 2), np.float32), actions=np.array([0, 1, 0]))
    raw, cols = decode_line(encode_record(batch, multi_agent=True))
    assert list(raw) == ["type", "count", "policy_batches"]
    assert raw["type"] == "MultiAgentBatch" and raw["count"] == 3
    assert list(raw["policy_batches"]) == ["default_policy"]
    assert raw["policy_batches"]["default_policy"]["obs"].startswith("BCJNG")
    assert_bits_equal(batch["obs"], cols["obs"])


def test_multi_agent_batch_keeps_its_policies_and_count() -> None:
    a = SampleBatch(actions=np.array([1, 2]))
    b = SampleBatch(actions=np.array([3]))
    raw = json.loads(encode_record(MultiAgentBatch({"p0": a, "p1": b}, count=2)))
    assert raw == {
        "type": "MultiAgentBatch",
        "count": 2,
        "policy_batches": {"p0": {"actions": [1, 2]}, "p1": {"actions": [3]}},
    }


def test_non_contiguous_columns_are_encoded() -> None:
    base = np.arange(24, dtype=np.float32).reshape(6, 4)
    batch = SampleBatch(obs=base[::2], new_obs=base[::2].T.copy().T, actions=np.arange(12)[::4])
    raw, cols = decode_line(encode_record(batch, compress_columns=("new_obs",)))
    assert raw["obs"] == base[::2].tolist()
    assert raw["actions"] == [0, 4, 8]
    assert_bits_equal(base[::2], cols["new_obs"])


def _payload(text: str) -> bytes:
    return lz4.frame.decompress(base64.b64decode(text))


def test_safe_codec_writes_npy_and_never_unpickles(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("unpickling was attempted")

    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(codecs, "restricted_loads", refuse)
    batch = full_batch()
    raw = json.loads(encode_record(batch, codec="offrl"))
    assert _payload(raw["obs"]).startswith(b"\x93NUMPY")
    assert_bits_equal(batch["obs"], decode_column(raw["obs"]))


def test_rllib_codec_writes_a_numpy_pickle_the_restricted_reader_accepts() -> None:
    batch = full_batch()
    raw = json.loads(encode_record(batch, codec="rllib"))
    assert _payload(raw["obs"])[:1] == b"\x80"  # pickle PROTO opcode, as RLlib writes
    assert_bits_equal(batch["obs"], decode_column(raw["obs"]))


def test_compressing_an_object_column_is_refused() -> None:
    with pytest.raises(ValueError, match="infos.*cannot be compressed"):
        encode_record(SampleBatch(infos=[{}, {}]), compress_columns=("infos",))


def test_a_dtype_without_json_form_is_refused_with_its_name() -> None:
    with pytest.raises(ValueError, match="'z'.*complex"):
        encode_record(SampleBatch(z=np.array([1j, 2j])), compress_columns=())


def test_info_dicts_with_int_keys_and_numpy_values() -> None:
    infos = [{1: np.float32(0.5), "arr": np.arange(2)}, {}]
    raw, _ = decode_line(encode_record(SampleBatch(infos=infos), compress_columns=()))
    assert raw["infos"] == [{"1": 0.5, "arr": [0, 1]}, {}]


def test_unserialisable_info_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="column 'infos'.*JSON-serialisable"):
        encode_record(SampleBatch(infos=[{"env": object()}]), compress_columns=())
