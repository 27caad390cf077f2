"""Payload templates: a verified layout is read directly; anything else takes the reference."""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rllib_variants import b64_lz4, rllib_column, rllib_pickle_payload

from offrl.io import templates
from offrl.io.codecs import CodecError, decode_payload, encode_column, npy_bytes
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
