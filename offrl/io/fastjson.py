"""Fast decoding of experience lines with pysimdjson (optional), exactly like the reference.

simdjson parses a line into a tape in C; every numeric column is then copied out
as one buffer (``as_buffer``) without a Python float per number. The fast path
only accepts what it can prove it decodes exactly as :func:`offrl.io.decode.decode_record`
would; for anything else it returns None and the reference path decides (and words
the errors):

* Lines simdjson refuses (``NaN``/``Infinity`` tokens, corrupt JSON, bad UTF-8),
  records that are not a SampleBatch or a default_policy-only MultiAgentBatch,
  duplicate keys, or column values that are not arrays, strings or null.
* Shapes: ``as_buffer`` flattens nested arrays. A column of n elements and n
  numbers is taken as 1-D; n elements of k numbers each as (n, k). The line's
  count of ``[`` bytes must then equal the number of arrays those shapes imply
  (1 per 1-D column, n + 1 per 2-D column, 0 per string, and for other columns
  the count in simdjson's minified text, exact when the line has no escapes).
  Every column holds at least that many arrays and strings add their own ``[``,
  so equality proves no column hides deeper nesting and no string holds a ``[``.
* dtypes: the reference converters' rules (float columns and observations
  float32 from the parsed doubles, ids int64 only when every value is an int64,
  actions int64 or else float32, flags bool when every value equals True or
  False). Compressed strings and anything else are converted by
  :func:`offrl.io.decode.decode_value` itself, from plain Python values.
* ``infos`` written as ``[{}, {}, ...]`` becomes an object array of fresh empty
  dicts (one per row) without building them through a parser.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from offrl.batch import DEFAULT_POLICY_ID, INFOS, SampleBatch
from offrl.io.decode import (
    BOOL_COLUMNS,
    FLOAT_COLUMNS,
    ID_COLUMNS,
    OBS_COLUMNS,
    decode_record,
    decode_value,
    finish_columns,
    is_column,
)

try:  # optional accelerator; without it every line takes the reference path
    import simdjson
except ImportError:  # pragma: no cover - exercised only where pysimdjson is missing
    simdjson = None  # type: ignore[assignment]

_OPEN = ord("[")
_Array = simdjson.Array if simdjson is not None else None
_Object = simdjson.Object if simdjson is not None else None
_NP_TYPES = {"d": np.float64, "i": np.int64}
_EMPTY: dict[str, Any] = {}
# A handler turns a column of n >= 1 elements into (array, number of arrays it spans),
# or returns None when the reference converter must decide.
_Found = tuple[np.ndarray, int]


def _empty_infos_text(n: int, cache: dict[int, bytes] = {}) -> bytes:  # noqa: B006 (memo)
    """``[{},{},...]`` with n entries, as simdjson minifies it."""
    text = cache.get(n)
    if text is None:
        text = cache[n] = b"[" + b",".join([b"{}"] * n) + b"]"
    return text


def _numeric(v: Any, n: int, types: str) -> _Found | None:
    """A 1-D or rectangular 2-D array from buffer types ``types`` ("i": int64, "d": float64)."""
    for of_type in types:
        try:
            flat = np.frombuffer(v.as_buffer(of_type=of_type), _NP_TYPES[of_type])
            break
        except TypeError:  # an element of another type: try the next buffer type
            continue
        except ValueError:  # an int outside int64: only the reference path keeps it exact
            return None
    else:
        return None
    if flat.size == n:
        arr, arrays = flat, 1
    else:
        try:
            lengths = list(map(len, v))  # every element an array of the same length k
        except TypeError:
            return None
        k = lengths[0]
        if k == 0 or lengths.count(k) != n or flat.size != n * k:
            return None
        arr, arrays = flat.reshape(n, k), n + 1
    # Floats narrow to float32 (a copy); as_buffer's memory is our own and writable.
    return (arr.astype(np.float32) if arr.dtype == np.float64 else arr), arrays


def _floats(v: Any, n: int) -> _Found | None:
    """Float columns and observations: float32 from the parsed doubles (ints too)."""
    return _numeric(v, n, "d")


def _ids(v: Any, n: int) -> _Found | None:
    """Id columns: int64, only when every value is an int64 (never through a float)."""
    return _numeric(v, n, "i")


def _numbers(v: Any, n: int) -> _Found | None:
    """Actions and unknown columns: int64 when all values are ints, else float32."""
    return _numeric(v, n, "id")


def _flags(v: Any, n: int) -> _Found | None:
    """Flag columns: bool when every value equals True or False (as the reference's astype)."""
    items = v.as_list()
    # Values equal to True/False are true/false, 1/0 or 1.0/0.0: all convert alike.
    if items.count(True) + items.count(False) != n:
        return None
    return np.fromiter(items, bool, count=n), 1


def _infos(v: Any, n: int) -> _Found | None:
    """``[{}, {}, ...]``: a fresh empty dict per row (rows may be annotated independently)."""
    if v.mini != _empty_infos_text(n):
        return None
    return np.fromiter(map(dict.copy, [_EMPTY] * n), object, count=n), 1


_HANDLERS: dict[str, Callable[[Any, int], _Found | None]] = {
    **dict.fromkeys(FLOAT_COLUMNS | OBS_COLUMNS, _floats),
    **dict.fromkeys(ID_COLUMNS, _ids),
    **dict.fromkeys(BOOL_COLUMNS, _flags),
    INFOS: _infos,
}


def _policy_columns(doc: Any) -> Any:
    """The column object of a SampleBatch / default_policy MultiAgentBatch document."""
    kind = doc.get("type")
    if kind == "SampleBatch":
        return doc
    if kind != "MultiAgentBatch":
        return None
    policies = doc.get("policy_batches")
    if not isinstance(policies, simdjson.Object) or list(policies.keys()) != [DEFAULT_POLICY_ID]:
        return None
    cols = policies[DEFAULT_POLICY_ID]
    return cols if isinstance(cols, simdjson.Object) else None


def _extract(parser: Any, line: bytes) -> dict[str, Any] | None:
    """Columns as final arrays or plain values for decode_value; None: use the reference."""
    try:
        doc = parser.parse(line)
    except ValueError:  # NaN/Infinity tokens, corrupt JSON, bad UTF-8: reference path
        return None
    if not isinstance(doc, simdjson.Object):
        return None
    obj = _policy_columns(doc)
    if obj is None:
        return None
    names = list(obj.keys())
    if len(set(names)) != len(names):
        return None  # duplicate keys: the reference parser keeps the last one
    cols: dict[str, Any] = {}
    arrays, minified = 0, False  # arrays the columns imply; any counted from minified text?
    for name in names:
        v = obj[name]
        column = is_column(name, v)
        kind = type(v)
        if kind is str:
            if column:
                cols[name] = v  # a '[' inside it makes the line's count disagree
        elif kind is _Array and column:
            n = len(v)
            found = _HANDLERS.get(name, _numbers)(v, n) if n else None
            if found is None:  # the reference converter decides, from plain values
                cols[name], count, minified = v.as_list(), v.mini.count(b"["), True
            else:
                cols[name], count = found
            arrays += count
        elif column:
            return None  # a number, object or boolean: the reference path words the error
        elif kind is _Array or kind is _Object:
            arrays, minified = arrays + v.mini.count(b"["), True
    if np.count_nonzero(np.frombuffer(line, np.uint8) == _OPEN) != arrays:
        return None
    if minified and b"\\" in line:
        return None  # an escape (e.g. \u005b) could make a minified count overstate the line's
    return cols


class RecordDecoder:
    """Decodes lines into SampleBatches, reusing one simdjson parser (not thread-safe).

    Results equal :func:`~offrl.io.decode.decode_record` on every line, errors included.
    """

    def __init__(self) -> None:
        self._parser = simdjson.Parser() if simdjson is not None else None

    def decode(self, line: bytes, *, path: str, lineno: int) -> SampleBatch:
        """Parse and decode one JSON line (see :func:`offrl.io.decode.decode_record`)."""
        cols = self._fast(line) if self._parser is not None else None
        if cols is None:
            return decode_record(line, path=path, lineno=lineno)
        for name, value in cols.items():
            if not isinstance(value, np.ndarray):
                cols[name] = decode_value(name, value, path, lineno)
        return finish_columns(cols, path, lineno)

    def _fast(self, line: bytes) -> dict[str, Any] | None:
        try:
            return _extract(self._parser, line)
        except RuntimeError:
            # simdjson refuses to reuse a parser while a proxy of the last document is
            # alive (e.g. held by a traceback); a fresh parser is cheap.
            self._parser = simdjson.Parser()
            return _extract(self._parser, line)
