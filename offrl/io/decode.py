"""Decode one JSON line of an experience file into a :class:`SampleBatch` (FORMAT.md).

:func:`decode_record` is the one decoder of a line: what a line means. Readers call
it once a line; compressed columns go through :mod:`offrl.io.codecs`.

Lines are parsed with orjson. orjson rejects the non-standard ``NaN`` /
``Infinity`` / ``-Infinity`` tokens that Python's ``json`` writes, so only lines
orjson rejects are retried with the (slower, but correct for those tokens) stdlib
parser; a line neither accepts is a :class:`CorruptLineError`, which readers skip.
Every other problem (a line that is not an object, an unknown record type, a
column that cannot be decoded, columns of different lengths) is a
:class:`~offrl.errors.DataFormatError`: the file breaks the contract and reading stops.

Normalisation applied to every record:

* ``dones`` / ``terminateds`` / ``truncateds``: all three are present afterwards
  (``dones = terminateds | truncateds``; ``dones`` alone is read as terminated).
* Missing ``new_obs`` is rebuilt from the next ``obs`` of the same episode inside
  the record, and a boolean column ``new_obs_valid`` (:data:`NEW_OBS_VALID`) is
  added: False marks rows whose successor observation is unknown (a truncated
  last step of the record), which TD learners must drop. The column is the flag:
  :class:`~offrl.io.json_reader.JsonReader` counts those rows and logs a warning
  once per file. Files that have ``new_obs`` never get the column.
* dtypes: observations float32 (integer-typed compressed observations, e.g. uint8
  images, keep their dtype), actions int64 for integer data else float32, rewards
  and other float columns float32, ids int64 exactly (never through a float),
  flags bool, ``infos`` an object array of dicts. Unknown columns are kept.
* Top-level keys whose value is ``null`` and ``seq_lens`` (RNN metadata, not a
  per-step column) are not columns and are dropped.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import orjson

from offrl import batch as sb
from offrl.batch import DEFAULT_POLICY_ID, SampleBatch
from offrl.errors import DataFormatError
from offrl.io.codecs import (
    DEFAULT_MAX_COLUMN_BYTES,
    CodecError,
    decode_column,
    is_compressed,
)

NEW_OBS_VALID = sb.NEW_OBS_VALID

OBS_COLUMNS = frozenset({sb.OBS, sb.NEW_OBS})
FLOAT_COLUMNS = frozenset(
    {sb.REWARDS, sb.PREV_REWARDS, sb.ACTION_PROB, sb.ACTION_LOGP, sb.ACTION_DIST_INPUTS}
    | {sb.Q_VALUES, sb.WEIGHTS, sb.ADVANTAGES, sb.VALUE_TARGETS, sb.VF_PREDS}
)
BOOL_COLUMNS = frozenset({sb.DONES, sb.TERMINATEDS, sb.TRUNCATEDS})
ID_COLUMNS = frozenset({sb.EPS_ID, sb.T, sb.AGENT_INDEX, sb.UNROLL_ID})
ACTION_COLUMNS = frozenset({sb.ACTIONS, sb.PREV_ACTIONS})
_NOT_COLUMNS = frozenset({"seq_lens"})
# Read whatever columns a reader is asked for: a batch needs these to be normalised
# (dones/terminateds/truncateds) and to rebuild a missing new_obs (eps_id, t).
ALWAYS_READ = frozenset(
    {sb.OBS, sb.NEW_OBS, sb.ACTIONS, sb.REWARDS, sb.EPS_ID, sb.T, NEW_OBS_VALID} | BOOL_COLUMNS
)
_INT64_MAX = np.iinfo(np.int64).max


class CorruptLineError(DataFormatError):
    """A line that is not JSON at all (truncated, garbage): readers skip it and count it."""


# -- parsing ------------------------------------------------------------------------


def parse_line(line: bytes | memoryview, *, path: str, lineno: int) -> Any:
    """Parse one JSON line: orjson, falling back to ``json`` for NaN/Infinity tokens."""
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        pass
    line = bytes(line)
    try:
        # Only reached for lines orjson rejects: NaN/Infinity tokens, or real garbage.
        return json.loads(line)
    except (ValueError, RecursionError) as e:  # JSONDecodeError and UnicodeDecodeError
        snippet = line[:60].decode("utf-8", "replace").rstrip()
        raise CorruptLineError(
            path, lineno, f"not a valid JSON line ({e}); starts with {snippet!r}"
        ) from None


def columns_of(record: Any, path: str, lineno: int) -> Mapping[str, Any]:
    """The column dict of a SampleBatch record or a default_policy-only MultiAgentBatch."""
    if not isinstance(record, dict):
        raise DataFormatError(
            path, lineno, f"expected a JSON object per line, found {type(record).__name__}"
        )
    kind = record.get("type")
    if kind == "SampleBatch":
        return record
    if kind == "MultiAgentBatch":
        policies = record.get("policy_batches")
        if not isinstance(policies, dict) or set(policies) != {DEFAULT_POLICY_ID}:
            found = sorted(policies) if isinstance(policies, dict) else policies
            raise DataFormatError(
                path,
                lineno,
                f"MultiAgentBatch with policies {found!r}: offrl trains single-agent "
                f"policies and reads only a MultiAgentBatch whose one policy is "
                f"{DEFAULT_POLICY_ID!r}",
            )
        cols = policies[DEFAULT_POLICY_ID]
        if not isinstance(cols, dict):
            raise DataFormatError(
                path, lineno, f"policy_batches.{DEFAULT_POLICY_ID} is not an object"
            )
        return cols
    raise DataFormatError(
        path,
        lineno,
        f'unknown record "type": {kind!r}; expected "SampleBatch" or "MultiAgentBatch"',
    )


# -- column conversion --------------------------------------------------------------


def object_array(values: list[Any]) -> np.ndarray:
    """A 1-D object array holding ``values`` as they are (dicts stay dicts)."""
    return np.fromiter(values, dtype=object, count=len(values))


def _obs_array(value: Any) -> np.ndarray:
    arr = value if isinstance(value, np.ndarray) else np.asarray(value, dtype=np.float32)
    # Integer observations from compressed columns (uint8 images) stay compact.
    return arr if arr.dtype.kind in "iub" else arr.astype(np.float32, copy=False)


def _action_array(value: Any) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype.kind in "iu":
        return arr.astype(np.int64, copy=False)
    if arr.dtype.kind in "fb":
        return arr.astype(np.float32, copy=False)
    raise ValueError(f"expected numbers, found dtype {arr.dtype}")


def _id_array(value: Any) -> np.ndarray:
    # No dtype= here: np.asarray(..., dtype=int64) would silently truncate floats.
    arr = np.asarray(value)
    if arr.dtype.kind == "i":
        return arr.astype(np.int64, copy=False)
    if arr.dtype.kind == "u":
        # Ids between 2**63 and 2**64 stay exact as uint64.
        return arr.astype(np.int64) if arr.size and arr.max() <= _INT64_MAX else arr
    if arr.size == 0:
        return arr.astype(np.int64)
    raise ValueError(f"expected integers below 2**64, found dtype {arr.dtype}")


def _bool_array(value: Any) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"expected booleans, found dtype {arr.dtype}")
    return arr.astype(bool, copy=False)


def _generic_array(value: list[Any]) -> np.ndarray:
    try:
        arr = np.asarray(value)
    except ValueError:  # ragged nesting: keep the rows as objects
        return object_array(value)
    return arr.astype(np.float32) if arr.dtype == np.float64 else arr


def _float32_array(value: Any) -> np.ndarray:
    return np.asarray(value, dtype=np.float32)


_CONVERTERS: dict[str, Callable[[Any], np.ndarray]] = {
    **dict.fromkeys(OBS_COLUMNS, _obs_array),
    **dict.fromkeys(FLOAT_COLUMNS, _float32_array),
    **dict.fromkeys(ACTION_COLUMNS, _action_array),
    **dict.fromkeys(ID_COLUMNS, _id_array),
    **dict.fromkeys(BOOL_COLUMNS, _bool_array),
    sb.INFOS: object_array,
}


def _decompress(name: str, value: Any, path: str, lineno: int, limit: int) -> Any:
    """A compressed column (whole or per row) decoded; any other value unchanged."""
    if isinstance(value, str) and not is_compressed(value):
        raise DataFormatError(
            path,
            lineno,
            f"column {name!r} is a string that is not a compressed column "
            f"(it does not start with BCJNG): {value[:40]!r}",
        )
    try:
        return decode_column(value, limit)
    except CodecError as e:
        raise DataFormatError(path, lineno, f"column {name!r}: {e}") from None


def decode_value(
    name: str, value: Any, path: str, lineno: int, limit: int = DEFAULT_MAX_COLUMN_BYTES
) -> np.ndarray:
    """One column value (list, array, or compressed string/list of strings) -> numpy array.

    A compressed column decodes to at most ``limit`` bytes (``max_column_bytes``); the
    dtype rules are the module docstring's.
    """
    if type(value) is not list or (value and type(value[0]) is str):  # not plain numbers
        value = _decompress(name, value, path, lineno, limit)
        if not isinstance(value, (list, np.ndarray)) or getattr(value, "ndim", 1) == 0:
            raise DataFormatError(
                path,
                lineno,
                f"column {name!r} must be a list of per-step values, found {value!r:.60}",
            )
    try:
        return _CONVERTERS.get(name, _generic_array)(value)
    except Exception as e:  # noqa: BLE001 - numpy raises many kinds on odd nesting
        why = str(e) or type(e).__name__
        raise DataFormatError(path, lineno, f"column {name!r}: cannot convert ({why})") from None


# -- record-level normalisation -----------------------------------------------------


def _check_lengths(cols: Mapping[str, np.ndarray], path: str, lineno: int) -> None:
    if len(set(map(len, cols.values()))) <= 1:
        return
    lengths = {name: len(arr) for name, arr in cols.items()}
    common = max(set(lengths.values()), key=list(lengths.values()).count)
    odd = {k: v for k, v in lengths.items() if v != common}
    raise DataFormatError(
        path, lineno, f"columns have different lengths: most have {common} rows, but {odd}"
    )


def _normalise_dones(cols: dict[str, np.ndarray], path: str, lineno: int) -> None:
    """Make ``dones``, ``terminateds`` and ``truncateds`` all present (FORMAT.md)."""
    has_d, has_te, has_tr = sb.DONES in cols, sb.TERMINATEDS in cols, sb.TRUNCATEDS in cols
    if not has_d and not has_te:
        raise DataFormatError(
            path, lineno, "missing column 'dones' (or 'terminateds'): one of them is required"
        )
    n = len(cols[sb.DONES] if has_d else cols[sb.TERMINATEDS])
    if not has_te:
        cols[sb.TERMINATEDS] = cols[sb.DONES]  # FORMAT.md: dones alone means terminated
    if not has_tr:
        cols[sb.TRUNCATEDS] = np.zeros(n, dtype=bool)
    if not has_d:
        cols[sb.DONES] = cols[sb.TERMINATEDS] | cols[sb.TRUNCATEDS]


def rebuild_new_obs(cols: dict[str, np.ndarray]) -> None:
    """Add ``new_obs`` (``obs[t+1]`` within an episode) and ``new_obs_valid`` in place.

    Row i continues into row i+1 when both share ``eps_id`` (if present), ``t``
    steps by one (if present) and row i is not done. Terminated rows are valid
    without a successor (TD never bootstraps from them); their ``new_obs`` is a
    copy of ``obs`` as a placeholder. Other rows without a successor are invalid.
    """
    obs = cols[sb.OBS]
    n = len(obs)
    cont = np.zeros(n, dtype=bool)
    if n > 1:
        c = ~cols[sb.DONES][:-1]
        if sb.EPS_ID in cols:
            c &= cols[sb.EPS_ID][1:] == cols[sb.EPS_ID][:-1]
        if sb.T in cols:
            c &= cols[sb.T][1:] == cols[sb.T][:-1] + 1
        cont[:-1] = c
    new_obs = obs.copy()
    idx = np.flatnonzero(cont)
    new_obs[idx] = obs[idx + 1]
    cols[sb.NEW_OBS] = new_obs
    cols[NEW_OBS_VALID] = cont | cols[sb.TERMINATEDS]


def finish_columns(cols: dict[str, np.ndarray], path: str, lineno: int) -> SampleBatch:
    """Check and normalise decoded columns into a SampleBatch (see module docstring).

    Every value of ``cols`` must be a numpy array (decode_value's results).
    """
    if not (sb.OBS in cols and sb.ACTIONS in cols and sb.REWARDS in cols):
        missing = [c for c in (sb.OBS, sb.ACTIONS, sb.REWARDS) if c not in cols]
        raise DataFormatError(
            path, lineno, f"missing required column(s) {missing}; found {sorted(cols)}"
        )
    _check_lengths(cols, path, lineno)
    _normalise_dones(cols, path, lineno)
    if sb.NEW_OBS not in cols:
        for name in (sb.EPS_ID, sb.T):  # rebuild_new_obs compares them row by row
            if name in cols and cols[name].ndim != 1:
                raise DataFormatError(
                    path,
                    lineno,
                    f"column {name!r} must hold one value per row, found shape {cols[name].shape}",
                )
        rebuild_new_obs(cols)
    return SampleBatch.from_checked(cols)  # every column an array, lengths checked


def is_column(name: str, value: Any) -> bool:
    """False for the keys of a column dict that are not per-step columns."""
    return name != "type" and value is not None and name not in _NOT_COLUMNS


def decode_columns(
    raw: Mapping[str, Any],
    *,
    path: str,
    lineno: int,
    columns: frozenset[str] | None = None,
    limit: int = DEFAULT_MAX_COLUMN_BYTES,
) -> SampleBatch:
    """Turn a parsed column dict into a normalised SampleBatch (see module docstring).

    ``columns``: decode only these (the others are parsed JSON, never decoded).
    """
    cols = {
        name: decode_value(name, value, path, lineno, limit)
        for name, value in raw.items()
        if is_column(name, value) and (columns is None or name in columns)
    }
    return finish_columns(cols, path, lineno)


def decode_record(
    line: bytes | memoryview,
    *,
    path: str,
    lineno: int,
    columns: frozenset[str] | None = None,
    limit: int = DEFAULT_MAX_COLUMN_BYTES,
) -> SampleBatch:
    """Parse and decode one JSON line into a SampleBatch.

    Raises :class:`CorruptLineError` for a line that is not JSON (the whole line is
    parsed, projected columns included) and :class:`~offrl.errors.DataFormatError`
    for JSON that breaks the format. ``columns``: decode only these columns (callers
    add :data:`ALWAYS_READ`); ``limit``: ``max_column_bytes``.
    """
    record = parse_line(line, path=path, lineno=lineno)
    raw = columns_of(record, path, lineno)
    return decode_columns(raw, path=path, lineno=lineno, columns=columns, limit=limit)
