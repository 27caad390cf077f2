"""Compressed-column codecs (FORMAT.md, "Compressed columns").

A compressed column is one ASCII string: base64 of an LZ4 frame (so it starts
with ``BCJNG``). Inside the frame is either

* offrl's safe codec: the array as ``.npy`` bytes (magic ``\\x93NUMPY``), read
  with ``allow_pickle=False``; or
* RLlib's codec: a numpy pickle, which is only ever decoded by
  :class:`RestrictedUnpickler` (numpy's array and dtype reconstructors only); or
* the 2019 pyarrow ``serialize`` format, which cannot be read any more.

Some writers store the string as the repr of a bytes object (``"b'BCJNG...'"``)
and some compress per row (a list of such strings); both are decoded here.
"""

from __future__ import annotations

import base64
import binascii
import functools
import io
import math
import pickle
import re
from typing import Any, Literal

import lz4.frame
import numpy as np

Codec = Literal["offrl", "rllib"]

LZ4_B64_PREFIX = "BCJNG"
NPY_MAGIC = b"\x93NUMPY"

# Globals a numpy array pickle may name, under numpy 1.x and 2.x module names.
# Everything else (os.system, builtins.eval, subprocess.*, ...) is refused.
_ALLOWED_GLOBALS = frozenset(
    {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        # Protocol 2 pickles bytes as _codecs.encode(text, "latin1"): a pure function.
        ("_codecs", "encode"),
    }
)
# numpy.dtypes.Float32DType etc. appear in pickles written by numpy >= 2 for dtypes.
_ALLOWED_MODULE_PREFIXES = ("numpy.dtypes",)


class CodecError(ValueError):
    """A compressed value that cannot (or must not) be decoded; the message says why."""


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that only admits numpy's array and dtype reconstructors."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS or module.startswith(_ALLOWED_MODULE_PREFIXES):
            if module.startswith("numpy.core"):
                # numpy 2 keeps numpy.core as a deprecated alias; resolve to numpy._core.
                module = module.replace("numpy.core", "numpy._core", 1)
            return super().find_class(module, name)
        raise CodecError(
            f"refused to unpickle {module}.{name}: only numpy arrays are allowed in "
            "compressed columns (the payload may be malicious; it was not executed)"
        )


def restricted_loads(data: bytes | bytearray) -> Any:
    """Unpickle ``data`` admitting only numpy arrays (never plain ``pickle.loads``)."""
    return RestrictedUnpickler(io.BytesIO(data)).load()


# -- encoding -------------------------------------------------------------------


def _frame_b64(payload: bytes) -> str:
    return base64.b64encode(lz4.frame.compress(payload)).decode("ascii")


def npy_bytes(arr: np.ndarray) -> bytes:
    """``arr`` in numpy's ``.npy`` format (no pickle allowed: object arrays are refused)."""
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(arr), allow_pickle=False)
    return buf.getvalue()


def encode_column(arr: np.ndarray, codec: Codec = "offrl") -> str:
    """One column as a ``BCJNG...`` string: npy (``offrl``) or numpy pickle (``rllib``)."""
    if codec == "offrl":
        return _frame_b64(npy_bytes(arr))
    if codec == "rllib":
        return _frame_b64(pickle.dumps(np.asarray(arr), protocol=pickle.HIGHEST_PROTOCOL))
    raise CodecError(f"unknown codec {codec!r}; use 'offrl' or 'rllib'")


# -- decoding -------------------------------------------------------------------


def _strip_bytes_repr(value: str) -> str:
    """``"b'BCJNG...'"`` -> ``"BCJNG..."``; other strings unchanged."""
    if len(value) >= 3 and value[:2] in ("b'", 'b"') and value[-1] == value[1]:
        return value[2:-1]
    return value


def is_compressed(value: Any) -> bool:
    """True for a string holding an LZ4/base64 payload (``BCJNG...`` or ``b'BCJNG...'``)."""
    if not isinstance(value, str):
        return False
    return value.startswith(LZ4_B64_PREFIX) or (
        value[:2] in ("b'", 'b"') and value[2:7] == LZ4_B64_PREFIX
    )


# -- decoding: fast paths ---------------------------------------------------------------

# Exactly the numeric dtypes the fast paths read; anything else takes numpy's own readers.
_FAST_DTYPES = frozenset({"f4", "f8", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "b1"})
_NPY_HEADER_RE = re.compile(
    rb"\{'descr': '([<|])([fiub][1248])', 'fortran_order': False, 'shape': \(([0-9, ]*)\), \}"
)
# numpy's protocol-5 pickle of a C-contiguous array in one frame:
#   _frombuffer(bytearray(data), dtype(code, False, True) + setstate, shape, "C")
# matched byte for byte around the data; nothing in it is ever unpickled.
_PICKLE_HEAD_RE = re.compile(
    rb"\x80\x05\x95(.{8})\x8c(?:\x13numpy\._core|\x12numpy\.core)\.numeric\x94"
    rb"\x8c\x0b_frombuffer\x94\x93\x94\(\x96(.{8})",
    re.DOTALL,
)
_PICKLE_TAIL_RE = re.compile(
    rb"\x94\x8c\x05numpy\x94\x8c\x05dtype\x94\x93\x94\x8c\x02([fiub][1248])\x94\x89\x88\x87\x94"
    rb"R\x94\(K\x03\x8c\x01([<|])\x94NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00t\x94b"
    rb"(\)|(?:K.|M..|J....){1,3}[\x85\x86\x87]\x94)\x8c\x01C\x94t\x94R\x94\.",
    re.DOTALL,
)
_INT_OPS = {ord("K"): 1, ord("M"): 2, ord("J"): 4}


# An array's layout in a payload: dtype, shape and byte size of its data.
_Layout = tuple[np.dtype, tuple[int, ...], int]


@functools.lru_cache(maxsize=256)
def _layout(order: bytes, code: bytes, shape: tuple[int, ...]) -> _Layout | None:
    """The layout for a fast-path dtype and a valid shape; None for anything else."""
    if code.decode() not in _FAST_DTYPES or any(d < 0 for d in shape):
        return None
    dtype = np.dtype(order.decode() + code.decode())
    return dtype, shape, math.prod(shape) * dtype.itemsize


def _read(
    data: bytes | bytearray, start: int, end: int, layout: _Layout | None
) -> np.ndarray | None:
    """A writable copy of the array in ``data[start:end]``; None if the sizes disagree."""
    if layout is None or end - start != layout[2]:
        return None  # truncated or padded: numpy's own reader reports it
    dtype, shape, nbytes = layout
    # Copy: frombuffer over bytes is read-only, and learners may write in place.
    return np.frombuffer(data, dtype, nbytes // dtype.itemsize, start).reshape(shape).copy()


@functools.lru_cache(maxsize=256)
def _npy_layout(header: bytes) -> _Layout | None:
    """The layout a plain npy header describes (cached: headers repeat); None otherwise."""
    m = _NPY_HEADER_RE.fullmatch(header.rstrip(b" \n"))
    if m is None:
        return None
    shape = tuple(int(x) for x in m.group(3).split(b",") if x.strip())
    return _layout(m.group(1), m.group(2), shape)


def _fast_npy(payload: bytes | bytearray) -> np.ndarray | None:
    """A v1.0 ``.npy`` payload with a plain header, without numpy's slow header parser."""
    if payload[6:8] != b"\x01\x00":
        return None
    end = 10 + int.from_bytes(payload[8:10], "little")
    return _read(payload, end, len(payload), _npy_layout(bytes(payload[10:end])))


@functools.lru_cache(maxsize=256)
def _pickle_layout(tail: bytes) -> _Layout | None:
    """The layout the template's bytes after the data describe (cached); None otherwise."""
    m = _PICKLE_TAIL_RE.fullmatch(tail)
    if m is None:
        return None
    code, order, ops = m.group(1), m.group(2), m.group(3)
    if (order == b"|") != (code[1:] == b"1"):
        return None  # numpy writes "|" exactly for one-byte types
    shape, i = [], 0
    while ops[i] in _INT_OPS:
        width = _INT_OPS[ops[i]]
        shape.append(int.from_bytes(ops[i + 1 : i + 1 + width], "little", signed=width == 4))
        i += 1 + width
    if shape and ops[i] - 0x84 != len(shape):  # TUPLE1..3 (0x85..0x87) close the shape
        return None
    return _layout(order, code, tuple(shape))


def _fast_pickle(payload: bytes | bytearray) -> np.ndarray | None:
    """Read numpy's protocol-5 array pickle by its exact byte layout, without unpickling."""
    head = _PICKLE_HEAD_RE.match(payload)
    if head is None or int.from_bytes(head.group(1), "little") != len(payload) - 11:
        return None
    start = head.end()
    end = start + int.from_bytes(head.group(2), "little")
    if len(payload) - end > 256:
        return None  # longer than any template tail
    return _read(payload, start, end, _pickle_layout(bytes(payload[end:])))


# -- decoding ---------------------------------------------------------------------------


# What unpickling damaged bytes raises (a huge length field: MemoryError/OverflowError).
_CORRUPT_PICKLE = (
    pickle.UnpicklingError,
    EOFError,
    AttributeError,
    TypeError,
    ValueError,
    IndexError,
    KeyError,
    MemoryError,
    OverflowError,
    RecursionError,
)


def decode_payload(payload: bytes | bytearray) -> np.ndarray:
    """Decode a decompressed column payload: npy, numpy pickle (restricted), or refuse."""
    if payload.startswith(NPY_MAGIC):
        arr = _fast_npy(payload)
        if arr is not None:
            return arr
        try:
            return np.load(io.BytesIO(payload), allow_pickle=False)
        except (ValueError, EOFError, MemoryError, OverflowError) as e:  # truncated, bad header
            raise CodecError(f"corrupt npy payload in compressed column: {e}") from None
    if payload[:1] == b"\x80":  # PROTO opcode: a pickle of protocol >= 2
        arr = _fast_pickle(payload)
        if arr is not None:
            return arr
        try:
            # bytes: a corrupt pickle must not leave a view of a bytearray payload behind
            value = restricted_loads(bytes(payload))
        except CodecError:
            raise
        except _CORRUPT_PICKLE as e:
            why = str(e) or type(e).__name__  # str(MemoryError()) is empty
            raise CodecError(f"corrupt pickle payload in compressed column: {why}") from None
        if not isinstance(value, np.ndarray):
            value = np.asarray(value)
        return value
    raise CodecError(
        "compressed column in pyarrow's removed 'serialize' format (RLlib 2019-2020): "
        "modern pyarrow cannot read it. Re-export the data with an RLlib version of that "
        "era as plain lists (output_compress_columns: []), or regenerate it"
    )


def _b64decode(text: str) -> bytes:
    """Validating base64 (binascii's strict_mode measured no faster: both ~2.4 ns/char)."""
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        raise CodecError(f"compressed column is not valid base64: {e}") from None


def decompress_string(value: str, *, writable: bool = False) -> bytes | bytearray:
    """The payload inside a ``BCJNG...`` string (optionally inside ``b'...'``).

    ``writable=True`` returns a bytearray, from which arrays are writable without a copy.
    """
    frame = _b64decode(_strip_bytes_repr(value))
    try:
        return lz4.frame.decompress(frame, return_bytearray=writable)  # type: ignore[no-any-return]
    except RuntimeError as e:
        raise CodecError(f"compressed column is not a valid LZ4 frame: {e}") from None


def decode_string(value: str) -> np.ndarray:
    """Decode one ``BCJNG...`` string (optionally inside ``b'...'``) into an array."""
    return decode_payload(decompress_string(value))


def decode_column(value: Any) -> Any:
    """Decode a column if it is compressed, whole (a string) or per row (a list of strings).

    Anything that is not compressed is returned unchanged.
    """
    if isinstance(value, str):
        return decode_string(value) if is_compressed(value) else value
    if isinstance(value, list) and value and is_compressed(value[0]):
        return np.stack([decode_string(v) for v in value])
    return value
