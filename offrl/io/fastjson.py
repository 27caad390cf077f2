"""Fast decoding of experience lines with pysimdjson (optional), exactly like the reference.

:class:`RecordDecoder` (what readers use) tries the compiled decoder first
(:mod:`offrl.io.native`), then the simdjson path below, then the reference path.

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
  actions int64 or else float32, flags bool when every value is true/false or
  0/1). Anything else is converted by :func:`offrl.io.decode.decode_value` itself,
  from plain Python values.
* Compressed strings are decoded here through one
  :class:`~offrl.io.templates.PayloadTemplates` per decoder (a payload layout is
  unpickled, restricted, once; later payloads of that layout are read directly)
  and converted with :func:`offrl.io.decode.convert_column`; a string that fails
  is left to decode_value, which raises the reference error.
* ``infos`` written as ``[{}, {}, ...]`` becomes an object array of the parsed
  empty dicts, one per row.

Measured cost per ~100-row CartPole line (2026-11-25): simdjson's parse ~20 us and
base64 ~5.5 us per compressed column are fixed; a 2-D column's row check
(``map(len, ...)`` over simdjson proxies) ~7 us and ``infos`` ~6 us are the largest
Python-side items left.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any

import numpy as np

from offrl.batch import DEFAULT_POLICY_ID, INFOS, SampleBatch
from offrl.io.codecs import CodecError, is_compressed
from offrl.io.decode import (
    BOOL_COLUMNS,
    FLOAT_COLUMNS,
    ID_COLUMNS,
    OBS_COLUMNS,
    columns_of,
    convert_column,
    decode_columns,
    decode_value,
    finish_checked,
    finish_columns,
    parse_line,
)
from offrl.io.native import (
    ALWAYS_READ,
    COMPLETE,
    NATIVE,
    PENDING,
    finish_frames,
    native_decode,
    native_kinds,
)
from offrl.io.sources import span_bytes
from offrl.io.templates import PayloadTemplates

try:  # optional accelerator; without it every line takes the reference path
    import simdjson
except ImportError:  # pragma: no cover - exercised only where pysimdjson is missing
    simdjson = None  # type: ignore[assignment]

_Array = simdjson.Array if simdjson is not None else None
_Object = simdjson.Object if simdjson is not None else None
# Keys of a column dict that are never columns (besides those whose value is null).
_NOT_COLUMNS = frozenset({"type", "seq_lens"})
# A handler turns a column of n >= 1 elements into (array, number of arrays it spans),
# or returns None when the reference converter must decide.
_Found = tuple[np.ndarray, int]
_F64, _F32, _I64 = np.dtype(np.float64), np.dtype(np.float32), np.dtype(np.int64)
_EMPTY: dict[str, Any] = {}


def _rows(v: Any, flat: np.ndarray, n: int) -> _Found | None:
    """``flat`` as (n, k) when every element of ``v`` is an array of k numbers; else None."""
    try:
        lengths = list(map(len, v))  # every element an array of the same length k
    except TypeError:
        return None
    k = lengths[0]
    if k == 0 or lengths.count(k) != n or flat.size != n * k:
        return None
    return flat.reshape(n, k), n + 1


def _floats(v: Any, n: int) -> _Found | None:
    """Float columns and observations: float32 from the parsed doubles (ints too)."""
    try:
        flat = np.frombuffer(v.as_buffer(of_type="d"), _F64)
    except (TypeError, ValueError):  # an element that is not a number
        return None
    # float32 is a copy: as_buffer's memory is our own anyway.
    if flat.size == n:
        return flat.astype(_F32), 1
    found = _rows(v, flat, n)
    return None if found is None else (found[0].astype(_F32), found[1])


def _ids(v: Any, n: int) -> _Found | None:
    """Id columns: int64, only when every value is an int64 (never through a float)."""
    try:
        flat = np.frombuffer(v.as_buffer(of_type="i"), _I64)  # writable: our own memory
    except (TypeError, ValueError):  # a float, or an int outside int64: reference path
        return None
    return (flat, 1) if flat.size == n else _rows(v, flat, n)


def _first_number(v: Any) -> Any:
    """The first scalar of a column (looking one level into rows), to pick a buffer type."""
    first = v[0]
    if type(first) is _Array and len(first):
        first = first[0]
    return first


def _numbers(v: Any, n: int) -> _Found | None:
    """Actions and unknown columns: int64 when all values are ints, else float32."""
    # Trying the likely type first saves a C++ exception (~5 us) per float column.
    if type(_first_number(v)) is not float:
        try:
            flat = np.frombuffer(v.as_buffer(of_type="i"), _I64)
        except TypeError:  # a float among the ints
            pass
        except ValueError:  # an int outside int64: only the reference path keeps it exact
            return None
        else:
            return (flat, 1) if flat.size == n else _rows(v, flat, n)
    return _floats(v, n)


def _flags(v: Any, n: int) -> _Found | None:
    """Flag columns: bool when every value is true/false or 0/1 (as the reference's astype)."""
    try:
        raw = bytearray(v.as_list())  # bools and small ints only; one byte each
    except (TypeError, ValueError, OverflowError):
        return None
    if raw.translate(None, b"\x00\x01"):
        return None  # 2, -1, ...: the reference path converts those
    return np.frombuffer(raw, bool), 1  # a bytearray: writable without a copy


def _infos(v: Any, n: int) -> _Found | None:
    """``[{}, {}, ...]``: the parsed empty dicts, one per row (annotated independently)."""
    items = v.as_list()
    # Only an empty dict equals {}: this rules out nested arrays, values and other types.
    if items.count(_EMPTY) != n:
        return None
    return np.fromiter(items, object, count=n), 1


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


def _compressed(name: str, text: str, templates: PayloadTemplates | None) -> Any:
    """A compressed column decoded and converted; the string itself if the reference must."""
    if templates is None or not is_compressed(text):
        return text
    try:
        arr = templates.decode_string(text)
        if arr.ndim == 0:
            return text  # not per-step values: decode_value words the error
        if arr.dtype == _F32 and name in OBS_COLUMNS:
            return arr  # what convert_column returns for it, without the calls
        return convert_column(name, arr)
    except (CodecError, ValueError, TypeError, OverflowError):
        return text  # decode_value repeats the work and words the error


def _extract(
    parser: Any, line: bytes, templates: PayloadTemplates | None = None
) -> dict[str, Any] | None:
    """Columns as final arrays or plain values for decode_value; None: use the reference.

    Compressed strings are decoded here when ``templates`` is given, else left as strings.
    """
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
    handlers = _HANDLERS
    for name in names:
        v = obj[name]
        kind = type(v)
        if kind is _Array and name not in _NOT_COLUMNS:
            n = len(v)
            found = handlers.get(name, _numbers)(v, n) if n else None
            if found is None:  # the reference converter decides, from plain values
                cols[name], count, minified = v.as_list(), v.mini.count(b"["), True
            else:
                cols[name], count = found
            arrays += count
        elif kind is str:
            if name not in _NOT_COLUMNS:  # a '[' inside it makes the line's count disagree
                cols[name] = _compressed(name, v, templates)
        elif v is None:
            continue  # not a column
        elif name not in _NOT_COLUMNS:
            return None  # a number, object or boolean: the reference path words the error
        elif kind is _Array or kind is _Object:
            arrays, minified = arrays + v.mini.count(b"["), True
    # bytes.replace finds the brackets with memchr: faster than counting them.
    if len(line) - len(line.replace(b"[", b"")) != arrays:
        return None
    if minified and b"\\" in line:
        return None  # an escape (e.g. \u005b) could make a minified count overstate the line's
    return cols


class RecordDecoder:
    """Decodes lines into SampleBatches, reusing one simdjson parser (not thread-safe).

    Results equal :func:`~offrl.io.decode.decode_record` on every line, errors included.
    Compressed columns go through one :class:`~offrl.io.templates.PayloadTemplates`, so a
    file's repeated payload layouts are unpickled (restricted) once, then read directly.

    ``columns``: read only these columns (plus :data:`ALWAYS_READ`); the others are
    checked to be JSON but not decoded (the compiled decoder skips them), so errors
    inside them may go unnoticed. None (the default) reads every column.
    """

    def __init__(self, columns: Collection[str] | None = None) -> None:
        if isinstance(columns, str):
            raise TypeError(f"columns must be a collection of names, not the string {columns!r}")
        self._parser = simdjson.Parser() if simdjson is not None else None
        self._templates = PayloadTemplates()
        self._keep = None if columns is None else frozenset(columns) | ALWAYS_READ
        self._kinds = native_kinds(self._keep)

    def decode(self, line: bytes, *, path: str, lineno: int) -> SampleBatch:
        """Parse and decode one JSON line (see :func:`offrl.io.decode.decode_record`)."""
        return self.decode_span(line, 0, len(line), path=path, lineno=lineno)

    def _decode_python(self, line: bytes, path: str, lineno: int) -> SampleBatch:
        """The simdjson path, else the reference path; projected before decoding."""
        cols = self._fast(line) if self._parser is not None else None
        if cols is None:  # the reference path
            raw = columns_of(parse_line(line, path=path, lineno=lineno), path, lineno)
            return decode_columns(self._project(raw), path=path, lineno=lineno)
        cols = self._project(cols)
        for name, value in cols.items():
            if type(value) is not np.ndarray:
                cols[name] = decode_value(name, value, path, lineno)
        return finish_columns(cols, path, lineno)

    def decode_span(
        self, buf: bytes, start: int, stop: int, *, path: str, lineno: int
    ) -> SampleBatch:
        """:meth:`decode` of the line ``buf[start:stop]``, copied only if the Python paths
        need it (the compiled decoder reads it in place)."""
        if NATIVE and type(buf) is bytes:
            # native_columns, inlined: this runs once a line
            kinds, default_kind = self._kinds
            by_length = self._templates.by_length
            decoded = native_decode(buf, kinds, default_kind, start, stop, by_length)
            if decoded is not None:
                cols: dict[str, Any] | None = decoded[0]
                state = decoded[1]
                if state == COMPLETE:
                    return SampleBatch.from_checked(decoded[0])
                if state == PENDING:
                    cols = finish_frames(decoded[0], self._templates)
                if cols is not None:
                    return finish_checked(cols, path, lineno)
        return self._decode_python(span_bytes(buf, start, stop), path, lineno)

    def _project(self, cols: Mapping[str, Any]) -> dict[str, Any]:
        """Only the columns to read, before anything is decoded: the other columns are
        never checked on any path (the compiled decoder skips them)."""
        keep = self._keep
        if keep is None or keep.issuperset(cols):
            return cols  # type: ignore[return-value]
        return {name: value for name, value in cols.items() if name in keep}

    def _fast(self, line: bytes) -> dict[str, Any] | None:
        try:
            return _extract(self._parser, line, self._templates)
        except RuntimeError:
            # simdjson refuses to reuse a parser while a proxy of the last document is
            # alive (e.g. held by a traceback); a fresh parser is cheap.
            self._parser = simdjson.Parser()
        try:
            return _extract(self._parser, line, self._templates)
        except RuntimeError:  # e.g. BIGINT_ERROR (an int below -2**63): reference path
            return None
