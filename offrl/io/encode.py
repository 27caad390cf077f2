"""Encode a batch as one JSON line in RLlib's record shape (FORMAT.md, "Records").

The line is ``{"type": "SampleBatch", <column>: <value>, ...}\\n`` (or the
``MultiAgentBatch`` wrapper). Columns are plain nested lists, except those named
in ``compress_columns``, which become one ``BCJNG...`` string each
(:func:`offrl.io.codecs.encode_column`).

Floats are widened to float64 before writing, as RLlib does: the text then holds
the exact value of each float32, so float32 -> JSON -> float32 is bit-identical.
orjson writes NaN/Infinity as ``null``; columns holding them are written with the
stdlib encoder instead, which emits the ``NaN``/``Infinity`` tokens RLlib's
files contain.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import Any

import numpy as np
import orjson

from offrl.batch import DONES, TERMINATEDS, MultiAgentBatch, SampleBatch
from offrl.io.codecs import Codec, encode_column

_OPTS = orjson.OPT_SERIALIZE_NUMPY
_LINE_OPTS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_APPEND_NEWLINE
# Dict keys like {1: ...} become "1", as the stdlib json module (and so RLlib) writes them.
_OBJECT_OPTS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def to_builtin(value: Any) -> Any:
    """``default`` hook: numpy values orjson/json cannot take directly -> Python objects."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot write a value of type {type(value).__name__} as JSON")


def _fragment(value: Any, option: int) -> Any:
    """``value`` pre-encoded as JSON. orjson writes NaN/Infinity as null: text with a null
    (rare; the scan is cheaper than isfinite) is encoded again by the stdlib, which writes
    the ``NaN``/``Infinity`` tokens RLlib's files hold."""
    text = orjson.dumps(value, default=to_builtin, option=option)
    if b"null" in text:
        text = json.dumps(value, default=to_builtin, separators=(",", ":")).encode()
    return orjson.Fragment(text)


def plain_column(name: str, arr: np.ndarray) -> Any:
    """One column as a value orjson writes as nested lists of the right JSON types."""
    kind = arr.dtype.kind
    if kind == "f":  # widened to float64, as RLlib writes floats
        return _fragment(np.ascontiguousarray(arr, dtype=np.float64), _OPTS)
    if kind in "iub":
        return np.ascontiguousarray(arr)
    if kind == "O":  # infos dicts
        try:
            return _fragment(arr.tolist(), _OBJECT_OPTS)
        except TypeError as e:  # orjson.JSONEncodeError is a TypeError
            raise ValueError(
                f"column {name!r}: {e}; its values must be JSON-serialisable "
                "(dicts of numbers, strings, lists, numpy values)"
            ) from None
    if kind in "US":
        return arr.tolist()
    raise ValueError(
        f"column {name!r} has dtype {arr.dtype}, which has no JSON form; "
        "convert it to floats or ints, or list it in output_compress_columns"
    )


def _column_value(name: str, arr: np.ndarray, compress: Collection[str], codec: Codec) -> Any:
    if name not in compress:
        return plain_column(name, arr)
    if arr.dtype.kind == "O":
        raise ValueError(
            f"column {name!r} holds Python objects and cannot be compressed; "
            "remove it from output_compress_columns"
        )
    return encode_column(arr, codec)


def column_order(names: list[str]) -> list[str]:
    """``names`` in the batch's order, except that ``dones`` goes just before ``terminateds``.

    RLlib 2.x's reader renames ``dones`` to ``terminateds`` as it meets the keys, so a
    ``dones`` written after ``terminateds`` would overwrite it: every time-limit
    truncation would read as a termination. Written first, the real ``terminateds``
    wins, and readers that only know ``dones`` still find it.
    """
    if DONES not in names or TERMINATEDS not in names:
        return names
    rest = [name for name in names if name != DONES]
    at = rest.index(TERMINATEDS)
    return [*rest[:at], DONES, *rest[at:]]


def batch_columns(
    batch: SampleBatch, compress_columns: Collection[str], codec: Codec
) -> dict[str, Any]:
    """``column -> JSON-ready value`` for every column of ``batch`` (:func:`column_order`)."""
    return {
        name: _column_value(name, batch[name], compress_columns, codec)
        for name in column_order(list(batch.keys()))
    }


def encode_record(
    batch: SampleBatch | MultiAgentBatch,
    *,
    compress_columns: Collection[str] = ("obs", "new_obs"),
    codec: Codec = "rllib",
    multi_agent: bool = False,
) -> bytes:
    """One record as a JSON line ending in ``\\n`` (RLlib's shape; see module docstring).

    A ``MultiAgentBatch`` is always written as one; ``multi_agent=True`` wraps a
    ``SampleBatch`` under ``default_policy`` as RLlib 2.x does.
    """
    if multi_agent and not isinstance(batch, MultiAgentBatch):
        batch = MultiAgentBatch.wrap_single(batch)
    if not isinstance(batch, MultiAgentBatch):
        record = {"type": "SampleBatch", **batch_columns(batch, compress_columns, codec)}
    else:
        policies = batch.policy_batches.items()
        record = {
            "type": "MultiAgentBatch",
            "count": batch.count,
            "policy_batches": {
                pid: batch_columns(b, compress_columns, codec) for pid, b in policies
            },
        }
    return orjson.dumps(record, default=to_builtin, option=_LINE_OPTS)
