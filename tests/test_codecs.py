"""Compressed-column codecs: npy and RLlib pickle codecs, wrappers, fast paths, safety."""

from __future__ import annotations

import base64
import io
import os
import pickle
import struct
from pathlib import Path

import lz4.frame
import numpy as np
import pytest
from rllib_variants import b64_lz4, line, rllib_column, rllib_pickle_payload, sample_batch_record

from offrl.errors import DataFormatError
from offrl.io import codecs
from offrl.io.codecs import (
    NPY_MAGIC,
    CodecError,
    decode_column,
    decode_payload,
    decode_string,
    encode_column,
    is_compressed,
    npy_bytes,
    restricted_loads,
)
from offrl.io.decode import decode_record

OBS = np.array([[0.5, -1.25, 2.0, 0.0], [1.0, 2.0, 3.0, 4.0], [-0.5, 0.25, 0.125, 8.0]], np.float32)

# Arrays the fast paths read, and arrays they hand to numpy's own readers.
FAST = [
    OBS,
    np.arange(24, dtype=np.uint8).reshape(2, 3, 4),
    np.array([True, False, True]),
    np.array([-(2**62), 2**62 + 1], dtype=np.int64),
    np.zeros((0, 4), np.float32),
    np.arange(300 * 2, dtype=np.int16).reshape(300, 2),  # shape ints > 255 (BININT2)
    np.zeros((0, 70_000), np.uint8),  # shape int > 65535 (BININT)
    np.array(3.5, dtype=np.float32),  # 0-d: the shape is EMPTY_TUPLE
    np.arange(4, dtype=np.float16),
]
SLOW = [
    np.arange(12, dtype=">f4"),  # big-endian: not the template
    np.asfortranarray(OBS),  # Fortran order
    np.zeros((2, 2, 2, 2), np.float64),  # 4 dims: MARK ... TUPLE, not TUPLE1-3
    np.arange(20_000, dtype=np.float64),  # > 64 KiB: the pickle has several frames
]


def same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)


# -- round trips ------------------------------------------------------------------


@pytest.mark.parametrize("arr", FAST + SLOW, ids=lambda a: f"{a.dtype}{a.shape}")
def test_offrl_codec_round_trip(arr: np.ndarray) -> None:
    text = encode_column(arr, "offrl")
    assert text.startswith("BCJNG")
    payload = lz4.frame.decompress(base64.b64decode(text))
    assert payload.startswith(codecs.NPY_MAGIC)  # no pickle inside
    out = decode_string(text)
    assert same(out, np.ascontiguousarray(arr).reshape(arr.shape or (1,)))
    assert out.flags.writeable


@pytest.mark.parametrize(
    "arr",
    [
        np.arange(40, dtype=np.float32).reshape(10, 4),
        np.arange(40, dtype=np.float32).reshape(10, 4)[::2],  # non-contiguous
        np.arange(40, dtype=np.float32).reshape(4, 10).T,  # Fortran-ordered view
        np.zeros((0, 4), dtype=np.float32),
        np.arange(6, dtype=">i4"),  # big-endian dtype string in the header
        np.zeros((2, 84, 84), dtype=np.uint8),
    ],
)
def test_cached_header_codec_writes_what_np_save_writes(arr: np.ndarray) -> None:
    for _ in range(2):  # the second call hits the header cache
        frame = base64.b64decode(encode_column(arr, "offrl"))
        assert lz4.frame.decompress(frame) == npy_bytes(arr)
    decoded = decode_column(encode_column(arr, "offrl"))
    assert decoded.dtype == arr.dtype and decoded.shape == arr.shape
    assert np.array_equal(decoded, arr)


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
@pytest.mark.parametrize("numpy_core", [False, True])
@pytest.mark.parametrize("wrap", [False, True])
def test_rllib_codec_all_protocols_and_module_names(
    protocol: int, numpy_core: bool, wrap: bool
) -> None:
    text = rllib_column(OBS, protocol, wrap=wrap, numpy_core=numpy_core)
    assert is_compressed(text)
    out = decode_string(text)
    assert same(out, OBS) and out.flags.writeable


def test_bytes_repr_wrapper_with_either_quote() -> None:
    text = encode_column(OBS, "rllib")
    for wrapped in (f"b'{text}'", f'b"{text}"'):
        assert is_compressed(wrapped)
        assert same(decode_string(wrapped), OBS)


def test_encode_column_rllib_is_a_numpy_pickle() -> None:
    payload = lz4.frame.decompress(base64.b64decode(encode_column(OBS, "rllib")))
    assert payload[:1] == b"\x80"
    assert same(restricted_loads(payload), OBS)


def test_unknown_codec_name_refused() -> None:
    with pytest.raises(CodecError, match="unknown codec 'zip'"):
        encode_column(OBS, "zip")  # type: ignore[arg-type]


# -- fast paths agree with numpy's readers ------------------------------------------


@pytest.mark.parametrize("arr", FAST, ids=lambda a: f"{a.dtype}{a.shape}")
def test_fast_pickle_reads_the_template_like_the_unpickler(arr: np.ndarray) -> None:
    payload = pickle.dumps(arr, protocol=5)
    fast = codecs._fast_pickle(payload)
    assert fast is not None  # the template matched: nothing was unpickled
    assert same(fast, restricted_loads(payload)) and fast.flags.writeable
    assert same(decode_payload(payload), arr)


@pytest.mark.parametrize("arr", SLOW, ids=lambda a: f"{a.dtype}{a.shape}")
def test_other_pickles_go_through_the_restricted_unpickler(arr: np.ndarray) -> None:
    payload = pickle.dumps(arr, protocol=5)
    assert codecs._fast_pickle(payload) is None
    assert same(decode_payload(payload), restricted_loads(payload))


def test_fast_pickle_numpy_1_module_name() -> None:
    payload = rllib_pickle_payload(OBS, 5, numpy_core=True)
    assert b"numpy.core.numeric" in payload
    fast = codecs._fast_pickle(payload)
    assert fast is not None and same(fast, OBS)


@pytest.mark.parametrize("arr", FAST + SLOW, ids=lambda a: f"{a.dtype}{a.shape}")
def test_npy_payload_agrees_with_np_load(arr: np.ndarray) -> None:
    payload = bytearray(npy_bytes(arr))
    got = decode_payload(payload)
    assert same(got, np.load(io.BytesIO(payload), allow_pickle=False)) and got.flags.writeable


def test_truncated_payloads_are_errors_not_wrong_arrays() -> None:
    pickled = pickle.dumps(OBS, protocol=5)
    cut = pickled[:70] + pickled[71:]  # one data byte gone: lengths no longer agree
    assert codecs._fast_pickle(cut) is None
    with pytest.raises(CodecError, match="corrupt pickle payload"):
        decode_payload(cut)
    npy = npy_bytes(OBS)
    with pytest.raises(CodecError, match="corrupt npy payload"):
        decode_payload(npy[:-3])


def test_template_with_another_global_is_refused() -> None:
    # Same bytes as numpy's template, but naming a function that is not allowed.
    payload = pickle.dumps(OBS, protocol=5).replace(b"\x8c\x0b_frombuffer", b"\x8c\x0bsystemcalls")
    assert codecs._fast_pickle(payload) is None
    with pytest.raises(CodecError, match="refused to unpickle numpy._core.numeric.systemcalls"):
        decode_payload(payload)


# -- security ---------------------------------------------------------------------


class _WritesFile:
    """A pickle whose unpickling would create a file (via builtins.open)."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (self.target, "w"))


class _CallsSystem:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("true",))


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_non_numpy_globals_refused_and_never_run(tmp_path: Path, protocol: int) -> None:
    target = tmp_path / "pwned.txt"
    text = b64_lz4(pickle.dumps(_WritesFile(str(target)), protocol=protocol))
    with pytest.raises(CodecError, match=r"refused to unpickle (io|builtins)\.open"):
        decode_string(text)
    with pytest.raises(CodecError, match=r"refused to unpickle (posix|os|nt)\.system"):
        decode_string(b64_lz4(pickle.dumps(_CallsSystem(), protocol=protocol)))
    assert not target.exists() and not os.listdir(tmp_path)


# -- malformed strings ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("BCJNG!!!!", "not valid base64"),
        ("BCJNGé==", "not valid base64"),
        ("BCJNGxx", "not valid base64"),  # bad padding
        (base64.b64encode(b"\x04\x22\x4d\x18garbage").decode(), "not a valid LZ4 frame"),
        (b64_lz4(b"\x00\x00ARROW1 serialized"), "pyarrow"),
    ],
)
def test_malformed_strings_name_the_problem(text: str, message: str) -> None:
    with pytest.raises(CodecError, match=message):
        decode_string(text)


def test_decode_column_whole_per_row_and_plain() -> None:
    per_row = [encode_column(r, "offrl") for r in OBS]
    assert same(decode_column(per_row), OBS)
    assert same(decode_column(encode_column(OBS, "rllib")), OBS)
    assert decode_column("left") == "left"  # a plain string is not compressed
    assert decode_column([1, 2]) == [1, 2]
    assert not is_compressed("bcjng") and not is_compressed(b"BCJNG")


# -- damaged pickles ----------------------------------------------------------------------

_HUGE = struct.pack("<Q", 2**62)
# Pickles whose one opcode claims an impossible length: unpickled as they are, they raise
# MemoryError or OverflowError (or UnpicklingError), not a clean "corrupt" error.
DAMAGED = {
    "BINBYTES8": b"\x80\x04\x8e" + _HUGE + b"abc.",
    "BYTEARRAY8": b"\x80\x05\x96" + _HUGE + b"abc.",
    "BINUNICODE8": b"\x80\x04\x8d" + _HUGE + b"abc.",
    "FRAME": b"\x80\x04\x95" + _HUGE + b"N.",
    "BINBYTES8-max": b"\x80\x04\x8e" + struct.pack("<Q", 2**63 - 1) + b"abc.",
    "FRAME-2**64-1": b"\x80\x04\x95" + struct.pack("<Q", 2**64 - 1) + b"N.",
}


def test_damaged_pickles_really_break_the_plain_unpickler() -> None:
    # What decode_payload must turn into CodecError (so the cases below test something).
    with pytest.raises(MemoryError):
        pickle.loads(DAMAGED["BINBYTES8"])
    with pytest.raises(MemoryError):
        pickle.loads(DAMAGED["BYTEARRAY8"])
    with pytest.raises(OverflowError):
        pickle.loads(DAMAGED["BINBYTES8-max"])
    with pytest.raises(OverflowError):
        pickle.loads(DAMAGED["FRAME-2**64-1"])


_DAMAGED_MESSAGE = "corrupt pickle payload|pickle payload decodes to NoneType"


@pytest.mark.parametrize("payload", list(DAMAGED.values()), ids=list(DAMAGED))
def test_damaged_pickle_lengths_are_codec_errors(payload: bytes) -> None:
    for p in (payload, bytearray(payload)):
        with pytest.raises(CodecError, match=_DAMAGED_MESSAGE):
            decode_payload(p)
    with pytest.raises(CodecError, match=_DAMAGED_MESSAGE):
        decode_string(b64_lz4(payload))
    cols = {"obs": b64_lz4(payload), "actions": [0], "rewards": [0.0], "dones": [True]}
    text = line(sample_batch_record(cols))
    with pytest.raises(
        DataFormatError, match=rf"f\.json:4: column 'obs': ({_DAMAGED_MESSAGE})"
    ) as e:
        decode_record(text, path="f.json", lineno=4)
    assert type(e.value) is DataFormatError  # not a CorruptLineError: the line is JSON


def test_huge_memo_index_costs_nothing() -> None:
    # LONG_BINPUT with index 2**32 - 1: the C unpickler sizes its memo array by the index.
    bomb = b"\x80\x02N" + b"r\xff\xff\xff\xff" + b"."
    with pytest.raises(CodecError, match="decodes to NoneType, not a numpy array"):
        decode_payload(bomb)


def test_bytearray8_larger_than_the_payload_is_refused_before_allocating() -> None:
    payload = b"\x80\x05\x96" + struct.pack("<Q", 2**33) + b"abc."
    with pytest.raises(CodecError, match="a byte array of 8589934592 bytes"):
        decode_payload(payload)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (pickle.dumps(None, protocol=2), "decodes to NoneType"),
        (pickle.dumps([1.0, 2.0], protocol=5), "decodes to list"),
        (pickle.dumps(np.array([{}], dtype=object), protocol=5), "array of Python objects"),
        (pickle.dumps(np.float32(1.0), protocol=5), "refused to unpickle numpy"),
    ],
)
def test_pickles_that_are_not_numeric_arrays_are_refused(payload: bytes, message: str) -> None:
    with pytest.raises(CodecError, match=message):
        decode_payload(payload)


def test_pickled_shape_larger_than_its_data_is_refused() -> None:
    payload = pickle.dumps(OBS, protocol=2)  # _reconstruct + setstate
    bad = payload.replace(b"K\x03K\x04\x86", b"J\x00\x00\x00\x10K\x04\x86")
    assert bad != payload
    with pytest.raises(CodecError, match="needs 4294967296 bytes, the payload holds 48"):
        decode_payload(bad)


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (b"{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), ", "corrupt npy payload"),
        (b"{'descr': '<f4', 'fortran_order': False, 'shape': (2**40,), }", "corrupt npy"),
        (b"{'descr': '<f4', 'fortran_order': False, 'shape': (1099511627776,), }", "needs"),
        (b"{'descr': '|O', 'fortran_order': False, 'shape': (1,), }", "not a plain numeric"),
    ],
)
def test_broken_npy_headers_are_codec_errors(header: bytes, message: str) -> None:
    header = header.ljust(118) + b"\n"
    payload = NPY_MAGIC + b"\x01\x00" + len(header).to_bytes(2, "little") + header + bytes(48)
    with pytest.raises(CodecError, match=message):
        decode_payload(payload)


def test_lz4_content_size_beyond_the_limit_is_refused_before_allocating() -> None:
    frame = bytearray(lz4.frame.compress(npy_bytes(OBS), store_size=True))
    frame[6:14] = struct.pack("<Q", 2**62)
    text = base64.b64encode(bytes(frame)).decode()
    with pytest.raises(CodecError, match="LZ4 frame says it holds 4611686018427387904 bytes"):
        decode_string(text)
    small = encode_column(np.zeros(1000, np.float32))  # ~4 KB decompressed
    with pytest.raises(CodecError, match="max_column_bytes"):
        decode_string(small, limit=1000)
    assert decode_string(small, limit=5000).shape == (1000,)


def test_lz4_frame_without_content_size_is_bounded_too() -> None:
    text = base64.b64encode(lz4.frame.compress(bytes(100_000), store_size=False)).decode()
    with pytest.raises(CodecError, match="decompresses to more than 1000 bytes"):
        decode_string(text, limit=1000)
    truncated = base64.b64encode(lz4.frame.compress(npy_bytes(OBS))[:-6]).decode()
    with pytest.raises(CodecError, match="not a valid LZ4 frame"):
        decode_string(truncated)


def test_per_row_columns_share_one_limit() -> None:
    rows = [encode_column(np.zeros(100, np.float32)) for _ in range(5)]  # 528 B each
    assert decode_column(rows, limit=2700).shape == (5, 100)
    with pytest.raises(CodecError, match="max_column_bytes"):
        decode_column(rows, limit=1500)
    with pytest.raises(CodecError, match="rows do not stack"):
        decode_column([rows[0], encode_column(np.zeros(3, np.float32))])


def test_damaged_pickle_runs_nothing(tmp_path: Path) -> None:
    target = tmp_path / "pwned.txt"
    evil = pickle.dumps(_WritesFile(str(target)), protocol=2)
    # The huge length first: unpickling stops there, before the global.
    with pytest.raises(CodecError, match="corrupt pickle payload"):
        decode_payload(b"\x80\x02\x8e" + _HUGE + evil[2:])
    # The global first: refused before the damaged length is reached.
    with pytest.raises(CodecError, match=r"refused to unpickle (io|builtins)\.open"):
        decode_payload(evil[:-1] + b"\x8e" + _HUGE + b"abc.")
    assert not target.exists() and not os.listdir(tmp_path)


@pytest.mark.parametrize("error", [MemoryError, OverflowError, KeyError, IndexError, EOFError])
def test_unpickler_errors_without_a_message_are_named(
    monkeypatch: pytest.MonkeyPatch, error: type[BaseException]
) -> None:
    def broken(self: object) -> None:
        raise error

    monkeypatch.setattr(codecs.RestrictedUnpickler, "load", broken)
    with pytest.raises(CodecError) as e:
        decode_payload(pickle.dumps(OBS, protocol=2))
    prefix, _, why = str(e.value).partition(": ")
    assert prefix == "corrupt pickle payload in compressed column"
    assert why == error.__name__
