"""Compressed-column codecs (FORMAT.md, "Compressed columns").

A compressed column is one ASCII string: base64 of an LZ4 frame (so it starts
with ``BCJNG``). Inside the frame is either

* offrl's safe codec: the array as ``.npy`` bytes (magic ``\\x93NUMPY``); or
* RLlib's codec: a numpy pickle, which is only ever read by :func:`restricted_loads`
  (numpy's array and dtype reconstructors only) or, for numpy's own protocol-5
  layout, by :func:`_fast_pickle` without unpickling anything; or
* the 2019 pyarrow ``serialize`` format, which cannot be read any more.

Some writers store the string as the repr of a bytes object (``"b'BCJNG...'"``)
and some compress per row (a list of such strings); both are decoded here.

Every size a payload states is checked before anything is allocated (see
``docs/reliability.md``, "Bounded allocations"): the LZ4 frame's content size and
its decompressed length against ``limit`` (``input_config.max_column_bytes``) and
LZ4's maximum ratio; an npy header's shape against the bytes that follow it; a
pickled array's shape against its data; pickle memo indices live in a dict. Any
failure is a :class:`CodecError` saying what was wrong.
"""

from __future__ import annotations

import base64
import binascii
import functools
import io
import math
import pickle
import re
import struct
from typing import Any, Literal

import lz4.frame
import numpy as np

from offrl.io.specs import DEFAULT_MAX_COLUMN_BYTES

Codec = Literal["offrl", "rllib"]

LZ4_B64_PREFIX = "BCJNG"
NPY_MAGIC = b"\x93NUMPY"
# LZ4 writes at least one byte per 255 bytes of output (a match length's extension
# bytes), so a frame of n bytes never holds more than 255 * n (plus one short block).
LZ4_MAX_RATIO = 255
_LZ4_SLACK = 1 << 16
_LZ4_MAGIC = b"\x04\x22\x4d\x18"


_NUMERIC_KINDS = frozenset("biufc")  # the dtypes a column may decode to (npy and pickle)


class CodecError(ValueError):
    """A compressed value that cannot (or must not) be decoded; the message says why."""


# -- encoding -------------------------------------------------------------------


def _frame_b64(payload: bytes) -> str:
    return base64.b64encode(lz4.frame.compress(payload)).decode("ascii")


def npy_bytes(arr: np.ndarray) -> bytes:
    """``arr`` in numpy's ``.npy`` format (no pickle allowed: object arrays are refused)."""
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(arr), allow_pickle=False)
    return buf.getvalue()


@functools.lru_cache(maxsize=256)
def _npy_head(dtype: np.dtype, shape: tuple[int, ...]) -> bytes:
    """The ``.npy`` header numpy writes for a C-ordered array of this dtype and shape
    (cached: ``np.save`` spends most of its time on it)."""
    template = np.zeros(shape, dtype=dtype)
    return npy_bytes(template)[: -template.nbytes or None]


def encode_column(arr: np.ndarray, codec: Codec = "offrl") -> str:
    """One column as a ``BCJNG...`` string: npy (``offrl``) or numpy pickle (``rllib``)."""
    if codec == "offrl":
        arr = np.ascontiguousarray(arr)
        return _frame_b64(_npy_head(arr.dtype, arr.shape) + arr.tobytes())
    if codec == "rllib":
        return _frame_b64(pickle.dumps(np.asarray(arr), protocol=pickle.HIGHEST_PROTOCOL))
    raise CodecError(f"unknown codec {codec!r}; use 'offrl' or 'rllib'")


# -- the restricted unpickler -------------------------------------------------------


def _checked_shape(shape: Any, dtype: Any, nbytes: int, what: str) -> tuple[int, ...]:
    """``shape`` as ints when it describes exactly ``nbytes`` bytes of ``dtype``."""
    if not isinstance(dtype, np.dtype) or dtype.kind not in _NUMERIC_KINDS:
        raise CodecError(f"{what}: dtype {dtype!r} is not a plain numeric dtype")
    if not isinstance(shape, tuple) or not all(type(d) is int and d >= 0 for d in shape):
        raise CodecError(f"{what}: shape {shape!r:.60} is not a tuple of sizes")
    if math.prod(shape) * dtype.itemsize != nbytes:
        raise CodecError(
            f"{what}: shape {shape} of {dtype} needs {math.prod(shape) * dtype.itemsize} "
            f"bytes, the payload holds {nbytes}"
        )
    return shape


class _Reconstructed(np.ndarray):
    """What ``_reconstruct`` makes: its ``__setstate__`` checks sizes before numpy's."""

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise CodecError(f"array state {state!r:.60} is not numpy's")
        shape, dtype, fortran, data = state[-4:]
        if (len(state) == 5 and state[0] != 1) or fortran not in (True, False):
            raise CodecError(f"array state {state!r:.60} is not numpy's")
        if not isinstance(data, (bytes, bytearray)):
            raise CodecError("array state holds no raw bytes (object arrays are refused)")
        _checked_shape(shape, dtype, len(data), "pickled array")
        super().__setstate__(state)


_NDARRAY = object()  # stands for numpy.ndarray: only _reconstruct may receive it


def _reconstruct(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
    if subtype is not _NDARRAY or not isinstance(shape, tuple) or math.prod(shape) != 0:
        raise CodecError("pickle reconstructs something other than an empty numpy array")
    return np.ndarray.__new__(_Reconstructed, (0,), np.uint8)


def _frombuffer(buf: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    if not isinstance(buf, (bytes, bytearray)) or order not in ("C", "F"):
        raise CodecError("pickled array data is not a byte string in C or F order")
    shape = _checked_shape(shape, dtype, len(buf), "pickled array")
    arr = np.frombuffer(buf, dtype).reshape(shape, order=order)
    return arr.copy(order="K")  # writable and aligned


def _dtype(obj: Any, align: Any = False, copy: Any = False) -> np.dtype:
    """``numpy.dtype(code, False, True)`` as numpy pickles it: a fresh numeric dtype."""
    if not isinstance(obj, str) or len(obj) > 8:
        raise CodecError(f"pickled dtype {obj!r:.40} is not a numeric type code")
    try:
        dtype = np.dtype(obj, align=bool(align), copy=True)  # never the shared singleton
    except TypeError as e:
        raise CodecError(f"pickled dtype {obj!r}: {e}") from None
    if dtype.kind == "O":
        raise CodecError(
            f"pickled dtype {obj!r} is an array of Python objects, which offrl never unpickles "
            "(they could run code); leave the column out with input_config.columns, or write "
            "it uncompressed"
        )
    if dtype.kind not in _NUMERIC_KINDS:
        raise CodecError(f"pickled dtype {obj!r} is not a plain numeric dtype")
    return dtype


def _check_dtype_state(state: Any) -> None:
    """What numpy writes for a numeric dtype: (3, order, None, None, None, -1, -1, 0)."""
    if not (
        isinstance(state, tuple)
        and len(state) in (8, 9)
        and state[0] in (3, 4)
        and state[1] in ("<", ">", "|", "=")
        and state[2:5] == (None, None, None)
        and state[5:8] == (-1, -1, 0)
        and (len(state) == 8 or state[8] is None)
    ):
        raise CodecError(f"pickled dtype state {state!r:.60} is not a numeric dtype's")


def _latin1(text: Any, encoding: Any) -> bytes:
    """Protocol 2 pickles bytes as ``_codecs.encode(text, "latin1")``; nothing else."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise CodecError("pickle calls _codecs.encode other than on text to latin1")
    return text.encode("latin1")


_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _dtype,
    ("_codecs", "encode"): _latin1,
}


# Python's pure-Python unpickler: private, so untyped (its opcode methods are overridden below).
_PyUnpickler: Any = pickle._Unpickler  # type: ignore[attr-defined]


class RestrictedUnpickler(_PyUnpickler):
    """Python's own unpickler (its memo is a dict: a huge memo index costs nothing),
    admitting only numpy's array and dtype reconstructors, with sizes checked."""

    def __init__(self, data: bytes | bytearray) -> None:
        super().__init__(io.BytesIO(data))
        self._size = len(data)

    def _load_bytearray8(self) -> None:
        # The one opcode that allocates what it states before reading it.
        (size,) = struct.unpack("<Q", self.read(8))
        if size > self._size:
            raise CodecError(
                "corrupt pickle payload in compressed column: a byte array of "
                f"{size} bytes stated in a payload of {self._size}"
            )
        self.append(bytearray(self.read(size)))

    def _load_frame(self) -> None:
        # Python's unframer takes a short frame as it is; the C unpickler calls it truncated.
        (size,) = struct.unpack("<Q", self.read(8))
        if size > self._size:
            raise CodecError("corrupt pickle payload in compressed column: frame too long")
        self._unframer.load_frame(size)
        frame = self._unframer.current_frame
        if frame.seek(0, io.SEEK_END) != size:
            raise CodecError("corrupt pickle payload in compressed column: truncated frame")
        frame.seek(0)

    def _load_build(self) -> None:
        # BUILD calls __setstate__ of whatever is on the stack: only checked states pass
        # (numpy's own setstate crashed on fuzzed dtype states).
        state = self.stack.pop()
        inst = self.stack[-1]
        if type(inst) is _Reconstructed:
            inst.__setstate__(state)  # checks the sizes first
        elif isinstance(inst, np.dtype):
            _check_dtype_state(state)
            inst.__setstate__(state)  # type: ignore[attr-defined]  # numpy's stubs omit it
        else:
            raise CodecError(f"pickle sets the state of a {type(inst).__name__}")

    dispatch = {
        **_PyUnpickler.dispatch,
        pickle.BUILD[0]: _load_build,
        pickle.BYTEARRAY8[0]: _load_bytearray8,
        pickle.FRAME[0]: _load_frame,
    }

    def find_class(self, module: str, name: str) -> Any:
        found = _ALLOWED.get((module, name))
        if found is not None:
            return found
        raise CodecError(
            f"refused to unpickle {module}.{name}: only numpy arrays are allowed in "
            "compressed columns (the payload may be malicious; it was not executed)"
        )


def restricted_loads(data: bytes | bytearray) -> np.ndarray:
    """Unpickle ``data`` admitting only a numpy array (never plain ``pickle.loads``)."""
    try:
        value = RestrictedUnpickler(data).load()
    except CodecError:
        raise
    except Exception as e:  # noqa: BLE001 - any failure of untrusted bytes is "corrupt"
        why = str(e) or type(e).__name__  # str(MemoryError()) is empty
        raise CodecError(f"corrupt pickle payload in compressed column: {why}") from None
    if not isinstance(value, np.ndarray):
        raise CodecError(f"pickle payload decodes to {type(value).__name__}, not a numpy array")
    return value.view(np.ndarray) if type(value) is not np.ndarray else value


# -- npy -----------------------------------------------------------------------------


@functools.lru_cache(maxsize=256)
def _npy_header(header: bytes) -> tuple[np.dtype, tuple[int, ...], bool]:
    """(dtype, shape, fortran_order) of an npy header (cached: a file repeats a few)."""
    fp = io.BytesIO(header)
    try:
        version = np.lib.format.read_magic(fp)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fp)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fp)
        else:
            raise ValueError(f"npy version {version} is not read")
    except Exception as e:  # noqa: BLE001 - numpy's header parser raises many kinds
        why = f"{type(e).__name__}: {e}"
        raise CodecError(
            f"corrupt npy payload in compressed column: its header does not parse ({why})"
        ) from None
    return dtype, shape, fortran


def _npy(payload: bytes | bytearray) -> np.ndarray:
    """An npy payload: header checked against the bytes after it, then one view."""
    head = bytes(payload[6:12])
    if len(head) < 4:
        raise CodecError("corrupt npy payload in compressed column: truncated header")
    size = 10 + int.from_bytes(head[2:4], "little")
    if head[0] >= 2 and len(head) == 6:
        size = 12 + int.from_bytes(head[2:6], "little")
    if size > len(payload):
        raise CodecError("corrupt npy payload in compressed column: truncated header")
    dtype, shape, fortran = _npy_header(bytes(payload[:size]))
    shape = _checked_shape(shape, dtype, len(payload) - size, "corrupt npy payload")
    arr = np.frombuffer(payload, dtype, math.prod(shape), size)
    arr = arr.reshape(shape, order="F" if fortran else "C")
    return arr if arr.flags.writeable and arr.flags.aligned else arr.copy(order="K")


# -- numpy's protocol-5 pickle, read by its exact layout (the accelerator) ----------

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


@functools.lru_cache(maxsize=256)
def _pickle_layout(tail: bytes) -> tuple[np.dtype, tuple[int, ...]] | None:
    """(dtype, shape) the bytes after the data describe (cached); None otherwise."""
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
    try:
        dtype = np.dtype(order.decode() + code.decode())
    except TypeError:  # "f1", "b8", ...: not a dtype
        return None
    return (dtype, tuple(shape)) if all(d >= 0 for d in shape) else None


def _fast_pickle(payload: bytes | bytearray) -> np.ndarray | None:
    """numpy's protocol-5 array pickle read by its byte layout; None: unpickle it."""
    head = _PICKLE_HEAD_RE.match(payload)
    if head is None or int.from_bytes(head.group(1), "little") != len(payload) - 11:
        return None
    start = head.end()
    end = start + int.from_bytes(head.group(2), "little")
    if not 0 <= len(payload) - end <= 256:
        return None  # not a template tail
    layout = _pickle_layout(bytes(payload[end:]))
    if layout is None or math.prod(layout[1]) * layout[0].itemsize != end - start:
        return None
    dtype, shape = layout
    arr = np.frombuffer(payload, dtype, math.prod(shape), start).reshape(shape)
    return arr.copy()  # aligned and writable, as the unpickler's result


# -- decoding ---------------------------------------------------------------------------


def decode_payload(payload: bytes | bytearray) -> np.ndarray:
    """Decode a decompressed column payload: npy, numpy pickle (restricted), or refuse."""
    if payload.startswith(NPY_MAGIC):
        return _npy(payload)
    if payload[:1] == b"\x80":  # PROTO opcode: a pickle of protocol >= 2
        arr = _fast_pickle(payload)
        return arr if arr is not None else restricted_loads(payload)
    raise CodecError(
        "compressed column in pyarrow's removed 'serialize' format (RLlib 2019-2020): "
        "modern pyarrow cannot read it. Re-export the data with an RLlib version of that "
        "era as plain lists (output_compress_columns: []), or regenerate it"
    )


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


def _lz4_content_size(frame: bytes) -> int | None:
    """The content size an LZ4 frame header states (None when it states none)."""
    if len(frame) < 7 or frame[:4] != _LZ4_MAGIC:
        raise CodecError("compressed column is not a valid LZ4 frame: bad magic or header")
    if not frame[4] & 0x08:
        return None
    if len(frame) < 15:
        raise CodecError("compressed column is not a valid LZ4 frame: truncated header")
    return int(struct.unpack_from("<Q", frame, 6)[0])


def _lz4_whole(frame: bytes, stated: int) -> bytearray:
    """One call of lz4.frame.decompress: only where LZ4's ratio keeps it within the limit."""
    try:
        out = lz4.frame.decompress(frame, return_bytearray=True)
    except RuntimeError as e:
        raise CodecError(f"compressed column is not a valid LZ4 frame: {e}") from None
    if len(out) != stated:
        raise CodecError("compressed column is not a valid LZ4 frame: sizes disagree")
    return out  # type: ignore[no-any-return]


def _lz4_bounded(frame: bytes, bound: int, stated: int | None) -> bytearray:
    """The frame decompressed into at most ``bound`` (or ``stated``) bytes, never more."""
    decompressor = lz4.frame.LZ4FrameDecompressor(return_bytearray=True)
    try:
        out = decompressor.decompress(frame, max_length=bound if stated is None else stated)
    except RuntimeError as e:
        raise CodecError(f"compressed column is not a valid LZ4 frame: {e}") from None
    if not decompressor.eof and decompressor.needs_input:
        raise CodecError("compressed column is not a valid LZ4 frame: truncated")
    # Bytes after the frame are ignored, as lz4.frame.decompress (and so RLlib) does.
    if stated is not None and (len(out) != stated or not decompressor.eof):
        raise CodecError("compressed column is not a valid LZ4 frame: sizes disagree")
    if not decompressor.eof:
        raise CodecError(
            f"compressed column decompresses to more than {bound} bytes "
            "(raise input_config.max_column_bytes if the data is real)"
        )
    return out  # type: ignore[no-any-return]


def decompress_frame(frame: bytes, limit: int = DEFAULT_MAX_COLUMN_BYTES) -> bytearray:
    """The payload of one LZ4 frame, never more than ``limit`` bytes nor LZ4's ratio."""
    worst = LZ4_MAX_RATIO * len(frame) + _LZ4_SLACK
    bound = min(limit, worst)
    stated = _lz4_content_size(frame)
    if stated is not None and stated > bound:
        raise CodecError(
            f"compressed column: its LZ4 frame says it holds {stated} bytes, more than "
            f"{'max_column_bytes' if stated > limit else 'LZ4 can expand'} allows ({bound}; "
            "raise input_config.max_column_bytes if the data is real)"
        )
    if stated is not None and worst <= limit:  # even a lying frame stays within the limit
        return _lz4_whole(frame, stated)
    return _lz4_bounded(frame, bound, stated)


def decompress_string(value: str, limit: int = DEFAULT_MAX_COLUMN_BYTES) -> bytearray:
    """The payload inside a ``BCJNG...`` string (optionally inside ``b'...'``)."""
    try:
        frame = base64.b64decode(_strip_bytes_repr(value), validate=True)
    except (binascii.Error, ValueError) as e:
        raise CodecError(f"compressed column is not valid base64: {e}") from None
    return decompress_frame(frame, limit)


def decode_string(value: str, limit: int = DEFAULT_MAX_COLUMN_BYTES) -> np.ndarray:
    """Decode one ``BCJNG...`` string (optionally inside ``b'...'``) into an array."""
    return decode_payload(decompress_string(value, limit))


def decode_column(value: Any, limit: int = DEFAULT_MAX_COLUMN_BYTES) -> Any:
    """Decode a column if it is compressed, whole (a string) or per row (a list of strings).

    Per row, all rows together stay within ``limit``. Anything that is not compressed
    is returned unchanged.
    """
    if isinstance(value, str):
        return decode_string(value, limit) if is_compressed(value) else value
    if not (isinstance(value, list) and value and is_compressed(value[0])):
        return value
    rows, left = [], limit
    for i, text in enumerate(value):
        if not isinstance(text, str):
            raise CodecError(f"row {i} of a per-row compressed column is not a string")
        rows.append(decode_string(text, left))
        left -= rows[-1].nbytes
    try:
        return np.stack(rows)
    except ValueError as e:
        raise CodecError(f"per-row compressed column: rows do not stack ({e})") from None
