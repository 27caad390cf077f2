"""Decode one JSON line of an experience file into a :class:`SampleBatch` (FORMAT.md).

The fast path parses with orjson. orjson rejects the non-standard ``NaN`` /
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

import binascii
import json
import re
import sys
from collections.abc import Callable, Mapping
from typing import Any

import lz4.frame
import numpy as np
import orjson

from offrl.batch import (
    ACTION_DIST_INPUTS,
    ACTION_LOGP,
    ACTION_PROB,
    ACTIONS,
    ADVANTAGES,
    AGENT_INDEX,
    DEFAULT_POLICY_ID,
    DONES,
    EPS_ID,
    INFOS,
    NEW_OBS,
    OBS,
    PREV_ACTIONS,
    PREV_REWARDS,
    Q_VALUES,
    REWARDS,
    TERMINATEDS,
    TRUNCATEDS,
    UNROLL_ID,
    VALUE_TARGETS,
    VF_PREDS,
    WEIGHTS,
    SampleBatch,
    T,
)
from offrl.errors import DataFormatError
from offrl.io.codecs import (
    NPY_MAGIC,
    CodecError,
    _decode_payload,
    decode_string,
    is_compressed,
)

try:  # optional accelerator: parses without building a Python object per number
    import simdjson
except ImportError:  # pragma: no cover - exercised only where pysimdjson is missing
    simdjson = None

NEW_OBS_VALID = "new_obs_valid"

_OBS_COLS = frozenset({OBS, NEW_OBS})
_FLOAT_COLS = frozenset(
    {
        REWARDS, PREV_REWARDS, ACTION_PROB, ACTION_LOGP, ACTION_DIST_INPUTS, Q_VALUES,
        WEIGHTS, ADVANTAGES, VALUE_TARGETS, VF_PREDS,
    }
)  # fmt: skip
_BOOL_COLS = frozenset({DONES, TERMINATEDS, TRUNCATEDS})
_ID_COLS = frozenset({EPS_ID, T, AGENT_INDEX, UNROLL_ID})
_ACTION_COLS = frozenset({ACTIONS, PREV_ACTIONS})
_NOT_COLUMNS = frozenset({"seq_lens"})
_INT64_MAX = np.iinfo(np.int64).max


class CorruptLineError(DataFormatError):
    """A line that is not JSON at all (truncated, garbage): readers skip it and count it."""


# -- parsing ------------------------------------------------------------------------


def parse_line(line: bytes, *, path: str, lineno: int) -> Any:
    """Parse one JSON line: orjson, falling back to ``json`` for NaN/Infinity tokens."""
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        pass
    try:
        # Only reached for lines orjson rejects: NaN/Infinity tokens, or real garbage.
        return json.loads(line)
    except (ValueError, RecursionError) as e:  # JSONDecodeError and UnicodeDecodeError
        snippet = line[:60].decode("utf-8", "replace").rstrip()
        raise CorruptLineError(
            path, lineno, f"not a valid JSON line ({e}); starts with {snippet!r}"
        ) from None


def _columns_of(record: Any, path: str, lineno: int) -> Mapping[str, Any]:
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
            raise DataFormatError(path, lineno, f"policy_batches.{DEFAULT_POLICY_ID} is not an object")
        return cols
    raise DataFormatError(
        path,
        lineno,
        f'unknown record "type": {kind!r}; expected "SampleBatch" or "MultiAgentBatch"',
    )


# -- column conversion --------------------------------------------------------------


def _object_array(values: list[Any]) -> np.ndarray:
    """A 1-D object array holding ``values`` as they are (dicts stay dicts)."""
    return np.fromiter(values, dtype=object, count=len(values))


def _to_float32(arr: np.ndarray) -> np.ndarray:
    return arr if arr.dtype == np.float32 else arr.astype(np.float32)


def _obs_array(value: Any) -> np.ndarray:
    arr = value if isinstance(value, np.ndarray) else np.asarray(value, dtype=np.float32)
    # Integer observations from compressed columns (uint8 images) stay compact.
    return arr if arr.dtype.kind in "iub" else _to_float32(arr)


def _action_array(value: Any) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype.kind in "iu":
        return arr.astype(np.int64, copy=False)
    if arr.dtype.kind in "fb":
        return _to_float32(arr)
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
        return _object_array(value)
    return _to_float32(arr) if arr.dtype == np.float64 else arr


def _converter(name: str) -> Callable[[Any], np.ndarray]:
    if name in _OBS_COLS:
        return _obs_array
    if name in _FLOAT_COLS:
        return lambda v: np.asarray(v, dtype=np.float32)
    if name in _ACTION_COLS:
        return _action_array
    if name in _ID_COLS:
        return _id_array
    if name in _BOOL_COLS:
        return _bool_array
    if name == INFOS:
        return _object_array
    return _generic_array


def _decode_value(name: str, value: Any, path: str, lineno: int) -> np.ndarray:
    """One column value (list, or compressed string/list of strings) -> numpy array."""
    if isinstance(value, str) or (isinstance(value, list) and value and is_compressed(value[0])):
        try:
            value = decode_column(value)
        except CodecError as e:
            raise DataFormatError(path, lineno, f"column {name!r}: {e}") from None
        if isinstance(value, str):
            raise DataFormatError(
                path,
                lineno,
                f"column {name!r} is a string that is not a compressed column "
                f"(it does not start with BCJNG): {value[:40]!r}",
            )
    elif not isinstance(value, list):
        raise DataFormatError(
            path, lineno, f"column {name!r} must be a list of per-step values, found {value!r:.60}"
        )
    try:
        return _converter(name)(value)
    except (ValueError, TypeError, OverflowError) as e:
        raise DataFormatError(path, lineno, f"column {name!r}: cannot convert ({e})") from None


# -- record-level normalisation -----------------------------------------------------


def _check_lengths(cols: Mapping[str, np.ndarray], path: str, lineno: int) -> None:
    lengths = {name: len(arr) for name, arr in cols.items()}
    if len(set(lengths.values())) > 1:
        common = max(set(lengths.values()), key=list(lengths.values()).count)
        odd = {k: v for k, v in lengths.items() if v != common}
        raise DataFormatError(
            path,
            lineno,
            f"columns have different lengths: most have {common} rows, but {odd}",
        )


def _normalise_dones(cols: dict[str, np.ndarray], path: str, lineno: int) -> None:
    """Make ``dones``, ``terminateds`` and ``truncateds`` all present (FORMAT.md)."""
    has_d, has_te, has_tr = DONES in cols, TERMINATEDS in cols, TRUNCATEDS in cols
    if not has_d and not has_te:
        raise DataFormatError(
            path, lineno, "missing column 'dones' (or 'terminateds'): one of them is required"
        )
    n = len(cols[DONES] if has_d else cols[TERMINATEDS])
    if not has_te:
        cols[TERMINATEDS] = cols[DONES]  # FORMAT.md: dones alone means terminated
    if not has_tr:
        cols[TRUNCATEDS] = np.zeros(n, dtype=bool)
    if not has_d:
        cols[DONES] = cols[TERMINATEDS] | cols[TRUNCATEDS]


def rebuild_new_obs(cols: dict[str, np.ndarray]) -> None:
    """Add ``new_obs`` (``obs[t+1]`` within an episode) and ``new_obs_valid`` in place.

    Row i continues into row i+1 when both share ``eps_id`` (if present), ``t``
    steps by one (if present) and row i is not done. Terminated rows are valid
    without a successor (TD never bootstraps from them); their ``new_obs`` is a
    copy of ``obs`` as a placeholder. Other rows without a successor are invalid.
    """
    obs = cols[OBS]
    n = len(obs)
    cont = np.zeros(n, dtype=bool)
    if n > 1:
        c = ~cols[DONES][:-1]
        if EPS_ID in cols:
            c &= cols[EPS_ID][1:] == cols[EPS_ID][:-1]
        if T in cols:
            c &= cols[T][1:] == cols[T][:-1] + 1
        cont[:-1] = c
    new_obs = obs.copy()
    idx = np.flatnonzero(cont)
    new_obs[idx] = obs[idx + 1]
    cols[NEW_OBS] = new_obs
    cols[NEW_OBS_VALID] = cont | cols[TERMINATEDS]


def decode_columns(raw: Mapping[str, Any], *, path: str, lineno: int) -> SampleBatch:
    """Turn a parsed column dict into a normalised SampleBatch (see module docstring)."""
    cols: dict[str, np.ndarray] = {}
    for name, value in raw.items():
        if name == "type" or value is None or name in _NOT_COLUMNS:
            continue
        cols[name] = _decode_value(name, value, path, lineno)
    missing = [c for c in (OBS, ACTIONS, REWARDS) if c not in cols]
    if missing:
        raise DataFormatError(
            path, lineno, f"missing required column(s) {missing}; found {sorted(cols)}"
        )
    _check_lengths(cols, path, lineno)
    _normalise_dones(cols, path, lineno)
    if NEW_OBS not in cols:
        rebuild_new_obs(cols)
    return SampleBatch(cols)


def decode_record(line: bytes, *, path: str, lineno: int) -> SampleBatch:
    """Parse and decode one JSON line into a SampleBatch.

    Raises :class:`CorruptLineError` for a line that is not JSON and
    :class:`~offrl.errors.DataFormatError` for JSON that breaks the format.
    """
    record = parse_line(line, path=path, lineno=lineno)
    return decode_columns(_columns_of(record, path, lineno), path=path, lineno=lineno)
