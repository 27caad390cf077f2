"""The simdjson fast path: takes the common lines and always agrees with decode_record."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rllib_variants import (
    cartpole_columns,
    line,
    multi_agent_record,
    rllib_column,
    rllib_rows,
    sample_batch_record,
    write_jsonl,
)

from offrl.batch import SampleBatch
from offrl.errors import DataFormatError
from offrl.io import codecs
from offrl.io.codecs import encode_column
from offrl.io.decode import decode_record
from offrl.io.fastjson import RecordDecoder, _extract
from offrl.io.json_reader import JsonReader
from tests.shared_data import RLLIB_FIXTURE

simdjson = pytest.importorskip("simdjson")

OBS = np.array([[0.5, -1.25, 2.0, 0.0], [1.0, 2.0, 3.0, 4.0], [-0.5, 0.25, 0.125, 8.0]], np.float32)


def cartpole(n: int = 3, **overrides: Any) -> dict[str, Any]:
    """RLlib 2.x-like CartPole columns, plain lists, with overrides (None deletes)."""
    cols: dict[str, Any] = {
        **cartpole_columns(n),
        "terminateds": [False] * (n - 1) + [True],
        "truncateds": [False] * n,
        "unroll_id": [4] * n,
        "agent_index": [0] * n,
        "action_prob": [0.25] * n,
        "action_logp": [-1.3862943649291992] * n,
        "action_dist_inputs": [[0.5, -0.25]] * n,
    }
    cols.update(overrides)
    return {k: v for k, v in cols.items() if v is not None}


def raw(record: dict[str, Any], **replace: str) -> bytes:
    """The JSON line of ``record`` with text replacements (to write what json.dumps cannot)."""
    text = json.dumps(record)
    for old, new in replace.items():
        assert old in text
        text = text.replace(old, new)
    return (text + "\n").encode()


def outcome(decode: Any, text: bytes) -> SampleBatch | str:
    try:
        return decode(text, path="f.json", lineno=7)
    except DataFormatError as e:
        return f"{type(e).__name__}: {e}"


def assert_agree(text: bytes) -> SampleBatch | str:
    """Fast and reference path give the same batch (keys, order, dtypes, values) or error."""
    fast = outcome(RecordDecoder().decode, text)
    slow = outcome(decode_record, text)
    if isinstance(slow, str) or isinstance(fast, str):
        assert fast == slow
        return fast
    assert list(fast.keys()) == list(slow.keys())
    for k in fast:
        a, b = fast[k], slow[k]
        assert (a.dtype, a.shape) == (b.dtype, b.shape), k
        if a.dtype.kind == "f":
            assert np.array_equal(a, b, equal_nan=True), k
            assert np.array_equal(np.signbit(a), np.signbit(b)), k
        else:
            assert a.tolist() == b.tolist(), k
        assert a.flags.writeable, k
    return fast


def takes_fast_path(text: bytes) -> bool:
    return _extract(simdjson.Parser(), text) is not None


# -- the common lines take the fast path --------------------------------------------


@pytest.mark.parametrize(
    "record",
    [
        sample_batch_record(cartpole(6)),
        multi_agent_record(cartpole(4)),
        sample_batch_record(cartpole(obs=rllib_column(OBS), new_obs=rllib_column(OBS + 1))),
        sample_batch_record(
            cartpole(obs=encode_column(OBS, "offrl"), new_obs=rllib_column(OBS, wrap=True))
        ),
        multi_agent_record(cartpole(obs=rllib_column(OBS), new_obs=rllib_column(OBS))),
    ],
    ids=["plain", "multi-agent", "rllib-codec", "npy-and-wrapped", "multi-agent-compressed"],
)
def test_cartpole_lines_take_the_fast_path_and_agree(record: dict[str, Any]) -> None:
    text = line(record)
    assert takes_fast_path(text)
    assert_agree(text)


def test_compact_separators_take_the_fast_path() -> None:
    text = (json.dumps(sample_batch_record(cartpole()), separators=(",", ":")) + "\n").encode()
    assert takes_fast_path(text)
    assert assert_agree(text).count == 3  # type: ignore[union-attr]


def test_float32_values_round_trip_exactly() -> None:
    values = np.random.default_rng(1).normal(0, 10, size=(50, 4)).astype(np.float32)
    values[0, :3] = [np.float32(1e-45), np.float32(3.4028235e38), np.float32(-0.0)]
    text = line(sample_batch_record(cartpole(50, obs=values.tolist(), new_obs=values.tolist())))
    assert takes_fast_path(text)
    b = RecordDecoder().decode(text, path="f", lineno=1)
    assert b["obs"].dtype == np.float32
    assert b["obs"].tobytes() == values.tobytes()  # bit for bit, -0.0 included


def test_infos_rows_are_distinct_dicts() -> None:
    b = RecordDecoder().decode(line(sample_batch_record(cartpole())), path="f", lineno=1)
    infos = b["infos"]
    assert infos.dtype == object and infos.tolist() == [{}, {}, {}]
    assert len({id(d) for d in infos}) == 3
    infos[0]["seen"] = True
    assert infos[1] == {}


# -- every variant agrees with the reference ------------------------------------------

VARIANTS: dict[str, bytes] = {
    "eps-id-above-2**53": line(sample_batch_record(cartpole(eps_id=[2**60 + 3] * 3))),
    "eps-id-above-2**63": line(sample_batch_record(cartpole(eps_id=[2**64 - 5] * 3))),
    "eps-id-mixed-signs-beyond-int64": line(
        sample_batch_record(cartpole(eps_id=[2**64 - 5, -1, 0]))
    ),
    "eps-id-floats": line(sample_batch_record(cartpole(eps_id=[1.5, 1.5, 1.5]))),
    "nan-and-infinity": line(
        sample_batch_record(cartpole(rewards=[float("nan"), float("inf"), -float("inf")]))
    ),
    "overflowing-double": raw(
        sample_batch_record(cartpole(rewards=[1.0, 2.0, 3.5])), **{"3.5": "1e400"}
    ),
    "nested-obs-3d": line(sample_batch_record(cartpole(obs=[[[1.0, 2.0]]] * 3, new_obs=None))),
    "obs-1d": line(sample_batch_record(cartpole(obs=[0.5, 1.5, 2.5], new_obs=[1.5, 2.5, 3.5]))),
    "int-obs": line(sample_batch_record(cartpole(obs=[[1, 2], [3, 4], [5, 6]], new_obs=None))),
    "obs-one-column": line(sample_batch_record(cartpole(obs=[[1.0], [2.0], [3.0]]))),
    "per-row-compressed-pickle": line(sample_batch_record(cartpole(obs=rllib_rows(OBS)))),
    "per-row-compressed-npy": line(
        multi_agent_record(cartpole(new_obs=[encode_column(r, "offrl") for r in OBS]))
    ),
    "hidden-nesting-1d": line(sample_batch_record(cartpole(rewards=[1.0, [2.0], 3.0]))),
    "hidden-nesting-with-empty": line(sample_batch_record(cartpole(rewards=[1.0, [], [2.0, 3.0]]))),
    "ragged-2d": line(
        sample_batch_record(cartpole(action_dist_inputs=[[1.0, 2.0], [3.0], [4.0, 5.0, 6.0]]))
    ),
    "scalar-among-rows": line(
        sample_batch_record(cartpole(action_dist_inputs=[[1.0, [2.0, 3.0]], 4.0, [5.0, 6.0]]))
    ),
    "rows-with-nested-empties": line(
        sample_batch_record(cartpole(action_dist_inputs=[[[], 1.0], [2.0, 3.0], [4.0, 5.0]]))
    ),
    # A '[' in a string (written escaped) may not compensate for a hidden nesting elsewhere.
    "escaped-bracket-compensates": raw(
        sample_batch_record(cartpole(infos=[{"k": "x"}, {}, {}], rewards=[1.0, [2.0], 3.0])),
        **{'"x"': '"\\u005b"'},
    ),
    "bracket-in-key": line(sample_batch_record(cartpole(**{"we[ird": [1, 2, 3]}))),
    "bracket-in-info-string": line(sample_batch_record(cartpole(infos=[{"a": "[x]"}, {}, {}]))),
    "escaped-key": raw(sample_batch_record(cartpole()), **{'"rewards"': '"\\u0072ewards"'}),
    "lone-surrogate": raw(
        sample_batch_record(cartpole(infos=[{"a": "x"}, {}, {}])), **{'"x"': '"\\ud800"'}
    ),
    "duplicate-key": raw(
        sample_batch_record(cartpole()), **{'"rewards":': '"rewards": [9.0, 9.0, 9.0], "rewards":'}
    ),
    "flags-as-ints": line(
        sample_batch_record(cartpole(terminateds=[0, 0, 1], truncateds=[0.0, 1.0, 0.0]))
    ),
    "flags-other-numbers": line(sample_batch_record(cartpole(terminateds=[0, 2, -0.5]))),
    "flags-with-null": line(sample_batch_record(cartpole(terminateds=[False, None, True]))),
    "flags-strings": line(sample_batch_record(cartpole(dones=["no", "no", "yes"]))),
    "dones-only": line(sample_batch_record(cartpole(terminateds=None, truncateds=None))),
    "new-obs-missing": line(sample_batch_record(cartpole(new_obs=None, t=[0, 1, 5]))),
    "infos-with-content": line(sample_batch_record(cartpole(infos=[{}, {"a": [1, 2]}, {}]))),
    "infos-object": line(sample_batch_record(cartpole(infos={"a": 1}))),
    "floats-from-ints": line(
        sample_batch_record(cartpole(rewards=[1, 2, 3], action_prob=[1, 0.5, 2]))
    ),
    "float-column-huge-int": line(sample_batch_record(cartpole(rewards=[2**60 + 2**36 + 1, 0, 1]))),
    "actions-continuous": line(
        sample_batch_record(cartpole(actions=[[0.5, -1.0], [0.0, 1.0], [1.0, 1.0]]))
    ),
    "actions-int-2d": line(sample_batch_record(cartpole(actions=[[1, 2], [3, 4], [0, 0]]))),
    "actions-mixed": line(sample_batch_record(cartpole(actions=[0, 1.5, 2]))),
    "actions-bools": line(sample_batch_record(cartpole(actions=[True, False, True]))),
    "unknown-columns": line(
        sample_batch_record(
            cartpole(tags=["a", "b", "c"], score=[1, 2, 3], w=[0.5, 1, 2], m=[[1], [2, 3], []])
        )
    ),
    "unknown-string-column": line(sample_batch_record(cartpole(note="a[b"))),
    "null-and-seq-lens": line(sample_batch_record(cartpole(state_in=None, seq_lens=[3]))),
    "empty-record": line(
        sample_batch_record({"obs": [], "actions": [], "rewards": [], "dones": [], "infos": []})
    ),
    "different-lengths": line(sample_batch_record(cartpole(rewards=[1.0, 2.0]))),
    "number-as-column": line(sample_batch_record(cartpole(rewards=5))),
    "missing-required": line(sample_batch_record(cartpole(actions=None))),
    "other-policy": line(multi_agent_record(cartpole(), policy="p1")),
    "multi-agent-extra-array": raw(
        multi_agent_record(cartpole()), **{'"count":': '"extra": [[1]], "count":'}
    ),
    "unknown-type": line({"type": "Episode", **cartpole()}),
    "no-type": line(cartpole()),
    "top-level-array": b"[1, 2, 3]\n",
    "corrupt-compressed": line(sample_batch_record(cartpole(obs=rllib_column(OBS)[:40] + "AAAA"))),
    "flags-above-a-byte": line(sample_batch_record(cartpole(terminateds=[False, 300, True]))),
    "flags-negative": line(sample_batch_record(cartpole(terminateds=[0, -1, 1]))),
    "flags-nested": line(sample_batch_record(cartpole(terminateds=[[True], [False], [True]]))),
    "actions-float-first": line(sample_batch_record(cartpole(actions=[0.5, 1, 2]))),
    "actions-beyond-int64": line(sample_batch_record(cartpole(actions=[2**64 - 5, 0, 1]))),
    "actions-float-then-huge-int": line(sample_batch_record(cartpole(actions=[0.5, 2**63, 1]))),
    "actions-empty-row-first": line(sample_batch_record(cartpole(actions=[[], [1], [2]]))),
    "unknown-2d-ints-then-float": line(
        sample_batch_record(cartpole(extra=[[1, 2], [3, 4.5], [5, 6]]))
    ),
    "compressed-float64-obs": line(
        sample_batch_record(cartpole(obs=rllib_column(OBS.astype(np.float64)), new_obs=None))
    ),
    "compressed-uint8-obs": line(
        sample_batch_record(
            cartpole(obs=encode_column(np.arange(12, dtype=np.uint8).reshape(3, 4)))
        )
    ),
    "compressed-actions-and-rewards": line(
        sample_batch_record(
            cartpole(
                actions=encode_column(np.array([1, 0, 1], np.int32), "rllib"),
                rewards=encode_column(np.array([1.0, 0.5, 2.0]), "offrl"),
            )
        )
    ),
    "compressed-wrong-length": line(sample_batch_record(cartpole(obs=rllib_column(OBS[:2])))),
    "plain-string-column": line(sample_batch_record(cartpole(obs="not compressed"))),
    "pyarrow-era": line(sample_batch_record(cartpole(obs="BCJNGAAAA"))),
}


@pytest.mark.parametrize("name", list(VARIANTS))
def test_variant_agrees_with_reference(name: str) -> None:
    assert_agree(VARIANTS[name])


@pytest.mark.parametrize(
    "name",
    ["hidden-nesting-1d", "ragged-2d", "scalar-among-rows", "escaped-bracket-compensates"],
)
def test_malformed_columns_are_errors_on_both_paths(name: str) -> None:
    result = assert_agree(VARIANTS[name])
    assert isinstance(result, str) and "cannot convert" in result


def test_truncated_line_is_corrupt_on_both_paths() -> None:
    text = line(sample_batch_record(cartpole()))[:-40]
    assert not takes_fast_path(text)
    result = assert_agree(text)
    assert isinstance(result, str) and result.startswith("CorruptLineError: f.json:7")


def test_decoder_survives_many_lines_and_errors() -> None:
    dec = RecordDecoder()
    good = line(sample_batch_record(cartpole()))
    bad = line(sample_batch_record(cartpole(rewards=[1.0])))
    bad_codec = VARIANTS["corrupt-compressed"]
    for _ in range(3):
        assert dec.decode(good, path="f", lineno=1).count == 3
        with pytest.raises(DataFormatError, match="different lengths"):
            dec.decode(bad, path="f", lineno=2)
        with pytest.raises(DataFormatError, match="column 'obs'"):
            dec.decode(bad_codec, path="f", lineno=3)


# -- dtypes and the compressed-column templates on the fast path ------------------------


def test_fast_path_keeps_each_columns_dtype_and_exact_values() -> None:
    big = 2**62 + 12345  # exact only if never routed through a float
    cols = cartpole(
        3,
        eps_id=[big] * 3,
        t=[0, 1, 2],
        actions=[1, 0, 1],
        rewards=[1, 2.5, 3],  # ints in a float column become float32
        terminateds=[0, 0, 1],
        extra_ints=[[1, 2], [3, 4], [5, 6]],
        extra_floats=[0.1, 0.2, 0.3],
    )
    text = line(sample_batch_record(cols))
    assert takes_fast_path(text)
    b = assert_agree(text)
    assert isinstance(b, SampleBatch)
    assert b["eps_id"].dtype == np.int64 and b["eps_id"].tolist() == [big] * 3
    assert b["actions"].dtype == np.int64 and b["actions"].tolist() == [1, 0, 1]
    assert b["rewards"].dtype == np.float32 and b["rewards"].tolist() == [1.0, 2.5, 3.0]
    assert b["terminateds"].dtype == bool and b["terminateds"].tolist() == [False, False, True]
    assert b["extra_ints"].dtype == np.int64 and b["extra_ints"].shape == (3, 2)
    assert b["extra_floats"].dtype == np.float32
    assert b["action_dist_inputs"].dtype == np.float32 and b["action_dist_inputs"].shape == (3, 2)


def test_compressed_columns_use_learned_templates(monkeypatch: pytest.MonkeyPatch) -> None:
    from offrl.io import templates

    calls = []
    monkeypatch.setattr(
        templates, "decode_payload", lambda p: calls.append(1) or codecs.decode_payload(p)
    )
    dec = RecordDecoder()
    for i in range(4):
        obs = OBS + i
        for codec in ("rllib", "offrl"):
            cols = cartpole(obs=encode_column(obs, codec), new_obs=encode_column(obs + 1, codec))
            text = line(sample_batch_record(cols))
            b = dec.decode(text, path="f", lineno=i)
            assert b["obs"].dtype == np.float32 and b["obs"].tobytes() == obs.tobytes()
            assert b["new_obs"].tobytes() == (obs + 1).tobytes()
            assert b["obs"].flags.writeable and b["new_obs"].flags.writeable
    assert len(calls) == 4  # per codec: the first payload and its probe, then templates only


def test_rllib_fixture_fast_path_equals_reference_exactly() -> None:
    if not RLLIB_FIXTURE.exists():
        pytest.skip(f"RLlib fixture not found at {RLLIB_FIXTURE}")
    texts = RLLIB_FIXTURE.read_bytes().splitlines(keepends=True)
    assert len(texts) == 3
    for text in texts:
        assert takes_fast_path(text)
        b = assert_agree(text)
        assert isinstance(b, SampleBatch) and b["obs"].dtype == np.float32


def test_rllib_fixture_compressed_reads_like_plain(tmp_path: Path) -> None:
    if not RLLIB_FIXTURE.exists():
        pytest.skip(f"RLlib fixture not found at {RLLIB_FIXTURE}")
    plain = list(JsonReader(str(RLLIB_FIXTURE), shuffle_files=False).iter_epoch())
    assert float(plain[0]["obs"][0, 0]) == 0.040251147001981735
    for codec in ("rllib", "offrl"):
        records = []
        for text in RLLIB_FIXTURE.read_bytes().splitlines():
            rec = json.loads(text)
            for col in ("obs", "new_obs"):
                rec[col] = encode_column(np.array(rec[col], np.float32), codec)  # type: ignore[arg-type]
            records.append(rec)
        path = write_jsonl(tmp_path / f"{codec}.json", records)
        got = list(JsonReader(str(path), shuffle_files=False).iter_epoch())
        assert len(got) == len(plain)
        for a, b in zip(got, plain, strict=True):
            assert list(a.keys()) == list(b.keys())
            for k in a:
                assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
                assert a[k].tolist() == b[k].tolist(), k
