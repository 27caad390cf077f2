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
import io
import pickle
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


def restricted_loads(data: bytes) -> Any:
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


def _decode_payload(payload: bytes) -> np.ndarray:
    if payload.startswith(NPY_MAGIC):
        return np.load(io.BytesIO(payload), allow_pickle=False)
    if payload[:1] == b"\x80":  # PROTO opcode: a pickle of protocol >= 2
        try:
            value = restricted_loads(payload)
        except CodecError:
            raise
        except (pickle.UnpicklingError, EOFError, AttributeError, TypeError, ValueError) as e:
            raise CodecError(f"corrupt pickle payload in compressed column: {e}") from None
        if not isinstance(value, np.ndarray):
            value = np.asarray(value)
        return value
    raise CodecError(
        "compressed column in pyarrow's removed 'serialize' format (RLlib 2019-2020): "
        "modern pyarrow cannot read it. Re-export the data with an RLlib version of that "
        "era as plain lists (output_compress_columns: []), or regenerate it"
    )


def decode_string(value: str) -> np.ndarray:
    """Decode one ``BCJNG...`` string (optionally inside ``b'...'``) into an array."""
    text = _strip_bytes_repr(value)
    try:
        frame = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        raise CodecError(f"compressed column is not valid base64: {e}") from None
    try:
        payload = lz4.frame.decompress(frame)
    except RuntimeError as e:
        raise CodecError(f"compressed column is not a valid LZ4 frame: {e}") from None
    return _decode_payload(payload)


def decode_column(value: Any) -> Any:
    """Decode a column if it is compressed, whole (a string) or per row (a list of strings).

    Anything that is not compressed is returned unchanged.
    """
    if isinstance(value, str):
        return decode_string(value) if is_compressed(value) else value
    if isinstance(value, list) and value and is_compressed(value[0]):
        return np.stack([decode_string(v) for v in value])
    return value
