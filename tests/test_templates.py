"""Payload templates: a verified layout is read directly; anything else takes the reference."""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
from rllib_variants import b64_lz4, rllib_column, rllib_pickle_payload

from offrl.io import templates
from offrl.io.codecs import (
    CodecError,
    decode_payload,
    decompress_string,
    encode_column,
    npy_bytes,
)
from offrl.io.templates import PayloadTemplates

rng = np.random.default_rng(0)
OBS = rng.normal(size=(100, 4)).astype(np.float32)


def same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


class Calls:
    """Counts calls of the reference decoder (codecs.decode_payload) the templates use."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.n = 0
        monkeypatch.setattr(templates, "decode_payload", self)

    def __call__(self, payload: Any) -> np.ndarray:
        self.n += 1
        return decode_payload(payload)


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Calls:
    return Calls(monkeypatch)


def learned(t: PayloadTemplates) -> int:
    return sum(map(len, t._by_length.values()))


@pytest.mark.parametrize("codec", ["rllib", "offrl"])
def test_second_payload_of_a_layout_skips_the_reference(calls: Calls, codec: str) -> None:
    t = PayloadTemplates()
    first, second = OBS, OBS[::-1] * 3
    assert same(t.decode_string(encode_column(first, codec)), first)  # type: ignore[arg-type]
    after_first = calls.n  # the payload, then the probe that verifies the template
    assert after_first == 2 and learned(t) == 1
    out = t.decode_string(encode_column(second, codec))  # type: ignore[arg-type]
    assert calls.n == after_first  # read through the template: nothing unpickled
    assert same(out, second.astype(np.float32))
    assert out.flags.writeable and out.flags.aligned and out.flags.c_contiguous


@pytest.mark.parametrize(
    "arr",
    [
        np.arange(24, dtype=np.uint8).reshape(2, 3, 4),
        np.array([True, False, True]),
        np.array([-(2**62), 2**62 + 1], dtype=np.int64),
        np.array(3.5, dtype=np.float32),
        np.arange(12, dtype=">f4"),
        np.arange(20_000, dtype=np.float64),  # several pickle frames
        np.zeros((2, 2, 2, 2), np.float64),
    ],
    ids=lambda a: f"{a.dtype}{a.shape}",
)
@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_templates_agree_with_the_reference(arr: np.ndarray, protocol: int) -> None:
    t = PayloadTemplates()
    for variant in (arr, arr[::-1].copy() if arr.ndim else arr + 1, arr):
        payload = pickle.dumps(np.ascontiguousarray(variant), protocol=protocol)
        for p in (payload, npy_bytes(variant)):
            out = t.decode_payload(bytearray(p))
            assert same(out, decode_payload(p)) and out.flags.writeable


def test_protocol_2_and_fortran_arrays_are_never_templates() -> None:
    t = PayloadTemplates()
    t.decode_payload(bytearray(pickle.dumps(OBS, protocol=2)))  # data is latin-1 text
    t.decode_payload(bytearray(pickle.dumps(np.asfortranarray(OBS), protocol=5)))
    buf = io.BytesIO()
    np.save(buf, np.asfortranarray(OBS), allow_pickle=False)  # fortran_order: True
    out = t.decode_payload(bytearray(buf.getvalue()))
    assert learned(t) == 0 and same(np.ascontiguousarray(out), OBS)


def test_learning_stops_after_max_attempts(calls: Calls) -> None:
    t = PayloadTemplates(max_attempts=2)
    payload = pickle.dumps(OBS, protocol=2)  # never learnable
    for _ in range(5):
        assert same(t.decode_payload(bytearray(payload)), OBS)
    assert calls.n == 5  # one reference decode per payload, no probes after 2 attempts
    assert t._attempts_left == 0


def test_outputs_do_not_share_memory() -> None:
    t = PayloadTemplates()
    a = t.decode_string(encode_column(OBS, "offrl"))
    b = t.decode_string(encode_column(OBS, "offrl"))
    a[0, 0] = 99.0
    assert b[0, 0] == OBS[0, 0] and not np.shares_memory(a, b)


# -- what must not match a template -------------------------------------------------


def test_other_prefix_goes_through_the_restricted_unpickler(calls: Calls) -> None:
    t = PayloadTemplates()
    t.decode_string(rllib_column(OBS))
    n = calls.n
    # numpy 1.x module names: same data and shape, other bytes before the data.
    old_names = rllib_pickle_payload(OBS, 5, numpy_core=True)
    out = t.decode_payload(bytearray(old_names))
    assert calls.n > n and same(out, OBS)


def test_same_length_other_global_is_refused_after_learning() -> None:
    t = PayloadTemplates()
    good = pickle.dumps(OBS, protocol=5)
    t.decode_payload(bytearray(good))
    # Same length, same data, but the prefix names another function: no template matches.
    evil = good.replace(b"\x8c\x0b_frombuffer", b"\x8c\x0bsystemcalls")
    assert len(evil) == len(good)
    with pytest.raises(CodecError, match="refused to unpickle numpy._core.numeric.systemcalls"):
        t.decode_payload(bytearray(evil))


def test_other_shape_in_the_suffix_is_not_read_with_the_template() -> None:
    t = PayloadTemplates()
    t.decode_payload(bytearray(pickle.dumps(OBS, protocol=5)))
    reshaped = OBS.reshape(200, 2)  # same bytes and length, other shape after the data
    out = t.decode_payload(bytearray(pickle.dumps(reshaped, protocol=5)))
    assert out.shape == (200, 2) and same(out, reshaped)


class _WritesFile:
    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (self.target, "w"))


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_malicious_payload_refused_after_templates_were_learned(
    tmp_path: Path, protocol: int
) -> None:
    t = PayloadTemplates()
    for codec in ("rllib", "offrl"):
        t.decode_string(encode_column(OBS, codec))  # type: ignore[arg-type]
    assert learned(t) == 2
    target = tmp_path / "pwned.txt"
    evil = pickle.dumps(_WritesFile(str(target)), protocol=protocol)
    with pytest.raises(CodecError, match=r"refused to unpickle (io|builtins)\.open"):
        t.decode_string(b64_lz4(evil))
    system = pickle.dumps(os.system, protocol=protocol)
    with pytest.raises(CodecError, match=r"refused to unpickle (posix|os|nt)\.system"):
        t.decode_payload(bytearray(system))
    assert not os.listdir(tmp_path)


def test_truncated_and_corrupt_payloads_keep_the_reference_errors() -> None:
    t = PayloadTemplates()
    good = pickle.dumps(OBS, protocol=5)
    t.decode_payload(bytearray(good))
    with pytest.raises(CodecError, match="corrupt pickle payload"):
        t.decode_payload(bytearray(good[:70] + good[71:]))
    with pytest.raises(CodecError, match="not a valid LZ4 frame"):
        t.decode_string("BCJNG" + rllib_column(OBS)[5:40] + "AAAA")
    with pytest.raises(CodecError, match="not valid base64"):
        t.decode_string("BCJNG!!!!")


def test_data_start_needs_one_unambiguous_bytes_argument() -> None:
    pair = pickle.dumps((OBS.tobytes(), OBS), protocol=5)  # the same bytes twice
    assert templates._pickle_data_start(bytearray(pair), OBS.nbytes) is None
    single = pickle.dumps(OBS, protocol=5)
    start = templates._pickle_data_start(bytearray(single), OBS.nbytes)
    assert start is not None and single[start : start + OBS.nbytes] == OBS.tobytes()


# -- the compiled match (offrl/io/_linedec.c) ---------------------------------------------

try:
    from offrl.io import _linedec  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - only where the extension was not built
    _linedec = None

needs_linedec = pytest.mark.skipif(_linedec is None, reason="offrl.io._linedec not built")

LAYOUTS = [
    rng.normal(size=(7, 4)).astype(np.float32),
    np.arange(-5, 6, dtype=np.int64) * 2**40 + 3,
    np.arange(60, dtype=np.uint8).reshape(3, 4, 5),
    np.array([True, False, False, True, True]),
    np.arange(6, dtype=">f4"),
]


def _other_data(arr: np.ndarray) -> np.ndarray:
    """Same dtype and shape, other values: the same payload layout."""
    return ~arr if arr.dtype == bool else (np.flip(arr) * 3).astype(arr.dtype)


def _learned(arr: np.ndarray, codec: str) -> tuple[PayloadTemplates, bytearray]:
    """Templates that learned ``arr``'s layout, and a payload of that layout (other data)."""
    t = PayloadTemplates()
    t.decode_string(encode_column(arr, codec))  # type: ignore[arg-type]
    assert learned(t) == 1
    other = encode_column(_other_data(arr), codec)  # type: ignore[arg-type]
    return t, cast(bytearray, decompress_string(other, writable=True))


def assert_identical(a: np.ndarray, b: np.ndarray) -> None:
    assert same(a, b)
    for flag in ("writeable", "c_contiguous", "aligned"):
        assert getattr(a.flags, flag) and getattr(b.flags, flag), flag


@needs_linedec
@pytest.mark.parametrize("codec", ["rllib", "offrl"])
@pytest.mark.parametrize("arr", LAYOUTS, ids=lambda a: f"{a.dtype}{a.shape}")
def test_compiled_match_gives_the_python_match_arrays(arr: np.ndarray, codec: str) -> None:
    t, payload = _learned(arr, codec)
    found = t._by_length[len(payload)]
    compiled = _linedec.match(payload, found)
    python = templates._match_py(bytearray(payload), found)
    assert compiled is not None and python is not None
    assert_identical(compiled, python)
    assert same(compiled, _other_data(arr))
    assert not np.shares_memory(compiled, np.frombuffer(payload, np.uint8))  # a copy
    assert same(compiled, decode_payload(bytes(payload)))  # and what the reference reads


class _CountingMatchPy:
    """templates._match_py, counting its calls."""

    def __init__(self) -> None:
        self.n = 0
        self._match_py = templates._match_py

    def __call__(self, payload: bytearray, found: list) -> Any:
        self.n += 1
        return self._match_py(payload, found)


def _no_reference(payload: Any) -> np.ndarray:
    raise AssertionError("a learned layout went to the reference decoder")


@pytest.mark.parametrize("codec", ["rllib", "offrl"])
@pytest.mark.parametrize("arr", LAYOUTS, ids=lambda a: f"{a.dtype}{a.shape}")
def test_decode_payload_same_with_and_without_the_compiled_match(
    monkeypatch: pytest.MonkeyPatch, arr: np.ndarray, codec: str
) -> None:
    outputs = []
    for compiled in (True, False) if _linedec is not None else (False,):
        t, payload = _learned(arr, codec)
        python = _CountingMatchPy()
        with monkeypatch.context() as m:
            m.setattr(templates, "_match", _linedec.match if compiled else None)
            m.setattr(templates, "_match_py", python)
            m.setattr(templates, "decode_payload", _no_reference)
            outputs.append(t.decode_payload(payload))
        assert python.n == (0 if compiled else 1)  # the compiled match when it is there
    for out in outputs:
        assert_identical(out, outputs[0])
        assert same(out, _other_data(arr))


@needs_linedec
@pytest.mark.parametrize("codec", ["rllib", "offrl"])
def test_compiled_match_refuses_other_heads_tails_and_lengths(codec: str) -> None:
    t, payload = _learned(LAYOUTS[0], codec)
    found = t._by_length[len(payload)]
    head, tail = found[0][0], found[0][1]
    assert _linedec.match(payload, found) is not None
    in_head = [0, len(head) // 2, len(head) - 1]
    in_tail = [len(payload) - len(tail), len(payload) - 1] if tail else []  # npy: no tail
    assert bool(in_tail) == (codec == "rllib")
    for pos in in_head + in_tail:
        changed = bytearray(payload)
        changed[pos] ^= 0x01
        assert _linedec.match(changed, found) is None, pos
        assert templates._match_py(changed, found) is None, pos
    for other_length in (payload + b"\x00", payload[:-1], payload[1:], b"\x00" + payload):
        assert _linedec.match(other_length, found) is None
    assert _linedec.match(payload, []) is None
    # The first template that matches wins, wherever it is in the list.
    wrong = (b"X" + head[1:], tail, *found[0][2:])
    assert same(_linedec.match(payload, [wrong, *found]), _other_data(LAYOUTS[0]))


@needs_linedec
def test_compiled_match_rejects_malformed_templates() -> None:
    f4 = np.dtype(np.float32)
    payload = b"HEAD" + np.arange(4, dtype=np.float32).tobytes() + b"TAIL"
    good = (b"HEAD", b"TAIL", f4, (2, 2), 4)
    assert same(_linedec.match(payload, [good]), np.arange(4, dtype=np.float32).reshape(2, 2))
    malformed = [
        good[:4],  # too short
        (*good, 0),  # too long
        list(good),  # not a tuple
        ("HEAD", b"TAIL", f4, (2, 2), 4),  # head not bytes
        (bytearray(b"HEAD"), b"TAIL", f4, (2, 2), 4),
        (b"HEAD", None, f4, (2, 2), 4),  # tail not bytes
        (b"HEAD", b"TAIL", np.float32, (2, 2), 4),  # a type, not a dtype
        (b"HEAD", b"TAIL", f4, [2, 2], 4),  # shape not a tuple
        (b"HEAD", b"TAIL", f4, (2, 2), 4.0),  # count not an int
        (b"HEAD", b"TAIL", f4, (5,), 4),  # count inconsistent with the shape
        (b"HEAD", b"TAIL", f4, (2, 3), 4),
        (b"HEAD", b"TAIL", f4, (-2, -2), 4),
        (b"HEAD", b"TAIL", f4, (4,), -1),  # negative count
    ]
    for template in malformed:
        with pytest.raises(TypeError):
            _linedec.match(payload, [template])
    with pytest.raises(TypeError):
        _linedec.match(payload, (good,))  # templates not a list
    with pytest.raises(TypeError):
        _linedec.match("HEAD....TAIL", [good])  # payload not bytes-like


@needs_linedec
@pytest.mark.parametrize(
    "dtype",
    [
        np.dtype("O"),
        np.dtype([("a", "f4"), ("b", "O")]),
        np.dtype([("a", "i8"), ("nested", [("x", "f4"), ("o", "O")])]),
    ],
    ids=str,
)
def test_compiled_match_refuses_a_dtype_holding_python_objects(dtype: np.dtype) -> None:
    """Bytes copied into an object array would be taken for pointers: never build one."""
    assert dtype.hasobject
    data = bytes(2 * dtype.itemsize)  # the template fits the payload exactly
    payload = b"HEAD" + data + b"TAIL"
    objects = (b"HEAD", b"TAIL", dtype, (2,), 2)
    with pytest.raises(TypeError, match="match: templates must be"):
        _linedec.match(payload, [objects])
    # Also behind a template that does not match this payload.
    other = (b"XXXX", b"TAIL", np.dtype(np.uint8), (len(data),), len(data))
    with pytest.raises(TypeError, match="match: templates must be"):
        _linedec.match(payload, [other, objects])
    # The same bytes as plain numbers are read.
    plain = (b"HEAD", b"TAIL", np.dtype(np.uint8), (len(data),), len(data))
    assert same(_linedec.match(payload, [plain]), np.zeros(len(data), np.uint8))
