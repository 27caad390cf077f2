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
    zero_d_columns,
)

from offrl.batch import SampleBatch
from offrl.errors import DataFormatError
from offrl.io import codecs, native
from offrl.io.codecs import encode_column
from offrl.io.decode import CorruptLineError, decode_record
from offrl.io.fastjson import RecordDecoder, _extract
from offrl.io.json_reader import JsonReader
from offrl.io.native import ALWAYS_READ
from offrl.io.templates import PayloadTemplates
from tests.decode_paths import DECODE_PATHS, first_decoder
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
    **{
        f"compressed-0d-{name}-{payload}": line(sample_batch_record(cartpole(**{name: text})))
        for payload, text in zero_d_columns().items()
        for name in ("obs", "rewards", "agent_index", "action_dist_inputs")
    },
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


# -- the three decode paths: compiled, simdjson, reference ---------------------------------


def on_path(path: str, text: bytes, columns: list[str] | None = None) -> SampleBatch | str:
    """RecordDecoder(columns)'s outcome when ``path`` is the first decoder it tries.

    "native": the compiled decoder first (then the others, as readers do); "simdjson":
    no compiled decoder; "reference": neither (decode_record's own code only).
    """
    with first_decoder(path):
        return outcome(RecordDecoder(columns).decode, text)


def assert_same_batch(got: SampleBatch | str, want: SampleBatch | str) -> None:
    """Same error text, or the same columns in the same order with equal dtypes and values."""
    if isinstance(got, str) or isinstance(want, str):
        assert got == want
        return
    assert list(got.keys()) == list(want.keys())
    for k in want:
        a, b = got[k], want[k]
        assert (a.dtype, a.shape) == (b.dtype, b.shape), k
        if a.dtype == object:
            assert a.tolist() == b.tolist(), k
        else:
            assert np.array_equal(a, b, equal_nan=a.dtype.kind == "f"), k


def projected(batch: SampleBatch | str, columns: list[str]) -> SampleBatch | str:
    """What a projection onto ``columns`` keeps of a full batch."""
    if isinstance(batch, str):
        return batch
    keep = set(columns) | ALWAYS_READ
    return SampleBatch.from_checked({k: v for k, v in batch.items() if k in keep})


ZERO_D = zero_d_columns()


@pytest.mark.parametrize("path", DECODE_PATHS)
@pytest.mark.parametrize("payload", list(ZERO_D))
@pytest.mark.parametrize("name", ["x", "obs", "new_obs", "rewards", "actions", "eps_id", "dones"])
def test_0d_compressed_column_is_the_reference_error_on_every_path(
    path: str, payload: str, name: str
) -> None:
    text = line(sample_batch_record(cartpole(**{name: ZERO_D[payload]})))
    want = f"DataFormatError: f.json:7: column {name!r} must be a list of per-step values"
    got = on_path(path, text)
    assert isinstance(got, str) and got.startswith(want), got
    assert got == outcome(decode_record, text)


def test_0d_compressed_column_after_its_layout_is_learned() -> None:
    """One decoder: a 0-d layout it has already seen (a template) is still an error."""
    dec = RecordDecoder()
    text = line(sample_batch_record(cartpole(q_values=ZERO_D["pickle-float32"])))
    for lineno in (1, 2, 3):
        with pytest.raises(DataFormatError, match="column 'q_values' must be a list") as e:
            dec.decode(text, path="f.json", lineno=lineno)
        assert e.value.line == lineno


# A column a projection leaves out, broken in ways that are errors when it is read.
def _broken(n: int) -> dict[str, tuple[str, Any]]:
    return {
        "shorter": ("action_prob", [0.25] * (n - 1)),
        "longer-2d": ("action_dist_inputs", [[0.5, -0.25]] * (n + 2)),
        "corrupt-compressed": ("action_dist_inputs", "BCJNGgarbage"),
        "corrupt-lz4": ("action_prob", rllib_column(OBS)[:40] + "AAAA"),
        "compressed-wrong-length": ("q_values", rllib_column(np.zeros((n + 1, 2), np.float32))),
        "compressed-0d": ("q_values", ZERO_D["pickle-float32"]),
        "float-agent-index": ("agent_index", [0.5] * n),
        "float-unroll-id": ("unroll_id", [1.0, 2.5] + [3.0] * (n - 2)),
        "ragged": ("action_dist_inputs", [[1.0, 2.0], [3.0]] + [[4.0, 5.0, 6.0]] * (n - 2)),
        "hidden-nesting": ("action_prob", [0.25, [0.5]] + [0.75] * (n - 2)),
        "plain-string": ("action_prob", "not compressed"),
        "number": ("action_prob", 0.5),
        "object": ("q_values", {"a": 1}),
        "bool": ("q_values", True),
        "strings-in-floats": ("action_logp", ["a"] * n),
        "agent-index-beyond-uint64": ("agent_index", [2**64 + 1] + [0] * (n - 1)),
    }


BROKEN = _broken(3)


@pytest.mark.parametrize("kind", ["sample-batch", "multi-agent"])
@pytest.mark.parametrize("case", list(BROKEN))
def test_broken_skipped_column_never_raises_and_paths_agree(case: str, kind: str) -> None:
    name, value = BROKEN[case]
    record = sample_batch_record if kind == "sample-batch" else multi_agent_record
    text = line(record(cartpole(**{name: value})))
    intact = decode_record(line(record(cartpole())), path="f.json", lineno=7)
    full = outcome(decode_record, text)
    assert isinstance(full, str) and full.startswith("DataFormatError: f.json:7: ")
    for columns in (["obs"], ["q_values", "infos"] if name != "q_values" else ["infos"], []):
        want = projected(intact, columns)
        for path in DECODE_PATHS:
            assert_same_batch(on_path(path, text, columns), want)
    # The same column read (requested, or every column) is the reference's error.
    for columns in ([name], None, [name, "obs"]):
        for path in DECODE_PATHS:
            assert on_path(path, text, columns) == full, (path, columns)


# Which of them each fast decoder takes itself (projecting before it decodes); it leaves
# the others to the next path, which projects the same way.
_SIMDJSON_DECLINES = {"hidden-nesting", "number", "object", "bool", "agent-index-beyond-uint64"}
_NATIVE_DECLINES = {"plain-string", "number", "object", "bool"}


@pytest.mark.parametrize("case", list(BROKEN))
def test_broken_skipped_column_is_skipped_by_the_fast_decoders_themselves(case: str) -> None:
    name, value = BROKEN[case]
    text = line(sample_batch_record(cartpole(**{name: value})))
    assert takes_fast_path(text) == (case not in _SIMDJSON_DECLINES)
    if native._linedec is not None:
        keep = native.native_kinds(frozenset({"obs"}) | ALWAYS_READ)
        cols = native.native_columns(text, PayloadTemplates(), *keep)
        assert (cols is not None) == (case not in _NATIVE_DECLINES)
        assert cols is None or name not in cols


def _replace(text: bytes, old: bytes, new: bytes) -> bytes:
    assert text.count(old) == 1, old
    return text.replace(old, new)


_PROB = b'"action_prob": [0.25, 0.25, 0.25]'
_BASE = line(sample_batch_record(cartpole()))
# Lines whose trouble is JSON itself, inside a column a projection leaves out (or not).
NOT_PLAIN_JSON: dict[str, bytes] = {
    "truncated": _BASE[:-40],
    "truncated-in-skipped": _BASE[: _BASE.index(_PROB) + 20],
    "missing-comma-in-skipped": _replace(_BASE, _PROB, b'"action_prob": [0.25, 0.25 0.25]'),
    "trailing-comma-in-skipped": _replace(_BASE, _PROB, b'"action_prob": [0.25, 0.25, 0.25,]'),
    "bad-utf8-in-skipped": _replace(_BASE, _PROB, b'"action_prob": "\xff\xfe"'),
    "bare-word-in-skipped": _replace(_BASE, _PROB, b'"action_prob": [0.25, nan, 0.25]'),
    "nan-in-skipped": _replace(_BASE, _PROB, b'"action_prob": [NaN, Infinity, -Infinity]'),
    "nan-in-requested": _replace(_BASE, b'"rewards": [1.0, 1.0, 1.0]', b'"rewards": [NaN, 1, 2]'),
    "nan-in-skipped-2d": _replace(
        _BASE, b'"action_dist_inputs": [[0.5, -0.25]', b'"action_dist_inputs": [[NaN, -0.25]'
    ),
    "int-beyond-64-bits-in-skipped": _replace(
        _BASE, _PROB, b'"action_prob": [123456789012345678901234567890, 1, 2]'
    ),
    "duplicate-skipped-key": _replace(
        _BASE, _PROB, b'"action_prob": [1], "action_prob": [0.25, 0.25, 0.25]'
    ),
    "escape-in-skipped-string": _replace(_BASE, _PROB, b'"action_prob": "\\u005b"'),
}


@pytest.mark.parametrize("columns", [["obs"], ["action_prob"], None], ids=str)
@pytest.mark.parametrize("name", list(NOT_PLAIN_JSON))
def test_lines_that_are_not_plain_json_agree_on_every_path(
    name: str, columns: list[str] | None
) -> None:
    text = NOT_PLAIN_JSON[name]
    want = on_path("reference", text, columns)
    if columns is None:
        assert_same_batch(want, outcome(decode_record, text))
    elif not isinstance(want, str):
        assert set(want.keys()) <= set(columns) | ALWAYS_READ
    for path in DECODE_PATHS:
        assert_same_batch(on_path(path, text, columns), want)


def test_what_the_reference_makes_of_lines_that_are_not_plain_json() -> None:
    """The outcomes the agreement above is about: corrupt, or NaN read as a float."""
    corrupt = [
        "truncated",
        "truncated-in-skipped",
        "missing-comma-in-skipped",
        "trailing-comma-in-skipped",
        "bad-utf8-in-skipped",
        "bare-word-in-skipped",
    ]
    for name in corrupt:
        with pytest.raises(CorruptLineError, match=r"^f\.json:7: not a valid JSON line"):
            decode_record(NOT_PLAIN_JSON[name], path="f.json", lineno=7)
        got = on_path("reference", NOT_PLAIN_JSON[name], ["obs"])  # projected: still corrupt
        assert isinstance(got, str) and got.startswith("CorruptLineError: f.json:7: "), name
    for name in ("nan-in-skipped", "nan-in-skipped-2d", "escape-in-skipped-string"):
        got = on_path("reference", NOT_PLAIN_JSON[name], ["obs"])
        assert isinstance(got, SampleBatch) and got.count == 3, name
    b = decode_record(NOT_PLAIN_JSON["nan-in-skipped"], path="f.json", lineno=7)
    assert np.isnan(b["action_prob"][0]) and b["action_prob"][1:].tolist() == [np.inf, -np.inf]
    b = decode_record(NOT_PLAIN_JSON["nan-in-requested"], path="f.json", lineno=7)
    assert np.isnan(b["rewards"][0]) and b["rewards"].dtype == np.float32
    b = decode_record(NOT_PLAIN_JSON["duplicate-skipped-key"], path="f.json", lineno=7)
    assert b["action_prob"].tolist() == [0.25] * 3  # the last one wins
    with pytest.raises(DataFormatError, match="'action_prob' is a string that is not"):
        decode_record(NOT_PLAIN_JSON["escape-in-skipped-string"], path="f.json", lineno=7)
    b = decode_record(NOT_PLAIN_JSON["int-beyond-64-bits-in-skipped"], path="f.json", lineno=7)
    assert b["action_prob"].dtype == np.float32


# -- the columns argument ----------------------------------------------------------------


@pytest.mark.parametrize("columns", ["obs", "", "obs,actions"])
def test_columns_as_one_string_is_a_type_error(columns: str) -> None:
    with pytest.raises(TypeError, match="collection of names"):
        RecordDecoder(columns)  # type: ignore[arg-type]


@pytest.mark.parametrize("columns", [["obs"], ("obs",), {"obs"}, frozenset({"obs"}), [], None])
def test_columns_as_a_collection_of_names_is_accepted(columns: Any) -> None:
    b = RecordDecoder(columns).decode(_BASE, path="f.json", lineno=1)
    assert "obs" in b and ("action_prob" in b) == (columns is None)
