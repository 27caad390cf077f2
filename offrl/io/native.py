"""The compiled line decoder (``offrl/io/_linedec.c``), when it was built.

:func:`native_columns` decodes the common shape of an experience line in C: numeric
and flag columns straight into arrays of the reference dtypes, ``infos`` of empty
dicts, and compressed observation columns whose payload layout the
:class:`~offrl.io.templates.PayloadTemplates` have learned (base64, the LZ4 frame
and the template match all in C). Other compressed columns come back as their LZ4
frame and are finished here (python-lz4, the templates, the dtype rules), which
also learns new layouts. It returns None for every line it cannot prove it decodes
exactly like :func:`offrl.io.decode.decode_record`; the caller then takes the slower
paths, which also word the errors.

The extension is optional: ``pip install`` builds it where a C compiler is present
and installs offrl without it otherwise (``NATIVE`` is then False and every line
takes the Python paths). ``OFFRL_NO_NATIVE=1`` switches it off at run time.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import lz4.frame
import numpy as np

from offrl import batch as sb
from offrl.batch import INFOS
from offrl.io.codecs import CodecError
from offrl.io.decode import (
    ACTION_COLUMNS,
    BOOL_COLUMNS,
    FLOAT_COLUMNS,
    ID_COLUMNS,
    NEW_OBS_VALID,
    OBS_COLUMNS,
    convert_column,
)
from offrl.io.templates import PayloadTemplates

try:
    from offrl.io import _linedec  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - exercised only where the build was skipped
    _linedec = None

NATIVE = _linedec is not None and os.environ.get("OFFRL_NO_NATIVE", "") in ("", "0")


def _not_built(*args: Any) -> None:
    raise RuntimeError("offrl.io._linedec is not built")  # only called when NATIVE


# (columns, state) | None of one line: _linedec.decode_columns (see _linedec.c).
native_decode: Callable[..., tuple[dict[str, Any], int] | None] = (
    _linedec.decode_columns if _linedec is not None else _not_built
)

# The states of _linedec.decode_columns: LZ4 frames left for finish_frames; every column
# built and checked; checked, with nothing left for finish_checked to normalise.
PENDING, CHECKED, COMPLETE = (
    (_linedec.STATE_PENDING, _linedec.STATE_CHECKED, _linedec.STATE_COMPLETE)
    if _linedec is not None
    else (0, 1, 2)
)

# Column name -> how the C decoder converts it (the reference converters' rules).
_KINDS: dict[str, int] = (
    {
        **dict.fromkeys(FLOAT_COLUMNS, _linedec.KIND_FLOAT),
        **dict.fromkeys(OBS_COLUMNS, _linedec.KIND_OBS),
        **dict.fromkeys(ID_COLUMNS, _linedec.KIND_ID),
        **dict.fromkeys(BOOL_COLUMNS, _linedec.KIND_BOOL),
        **dict.fromkeys(ACTION_COLUMNS, _linedec.KIND_ACTION),
        INFOS: _linedec.KIND_INFOS,
    }
    if _linedec is not None
    else {}
)
# Read whatever columns a reader is asked for: a batch needs these to be normalised
# (dones/terminateds/truncateds) and to rebuild a missing new_obs (eps_id, t).
ALWAYS_READ = frozenset(
    {sb.OBS, sb.NEW_OBS, sb.ACTIONS, sb.REWARDS, sb.EPS_ID, sb.T, NEW_OBS_VALID} | BOOL_COLUMNS
)
_REQUIRED = frozenset({sb.OBS, sb.ACTIONS, sb.REWARDS})
_F32 = np.dtype(np.float32)
_FRAME_ERRORS = (CodecError, RuntimeError, ValueError, TypeError, OverflowError)


def native_kinds(keep: frozenset[str] | None) -> tuple[dict[str, int], int]:
    """(kinds, kind of other columns) for :func:`native_columns`: all, or only ``keep``."""
    if _linedec is None:
        return {}, 0
    if keep is None:
        return _KINDS, _linedec.KIND_GENERIC
    kinds = {name: _KINDS.get(name, _linedec.KIND_GENERIC) for name in keep}
    return kinds, _linedec.KIND_SKIP


def native_columns(
    line: bytes,
    templates: PayloadTemplates,
    kinds: dict[str, int] | None = None,
    default_kind: int = 0,
    start: int = 0,
    stop: int = -1,
) -> dict[str, Any] | None:
    """The line's columns as final arrays, or None: decode it another way.

    Only records with obs, actions, rewards and columns of one length are returned;
    ``dones`` is added (terminateds | truncateds) when the record has both and no dones.

    ``kinds`` and ``default_kind`` come from :func:`native_kinds` (default: every
    column); ``line`` must be bytes; ``start``/``stop`` select a line inside it (the
    default: all of it).
    """
    decoded = native_decode(
        line, _KINDS if kinds is None else kinds, default_kind, start, stop, templates.by_length
    )
    if decoded is None:
        return None
    cols, state = decoded
    return cols if state != PENDING else finish_frames(cols, templates)


def finish_frames(cols: dict[str, Any], templates: PayloadTemplates) -> dict[str, Any] | None:
    """Columns the C decoder left as LZ4 frames decoded here (learning their layouts),
    then the checks of :func:`native_columns`; None: decode the line another way."""
    for name, value in cols.items():
        if type(value) is bytes:  # the LZ4 frame of a compressed column
            try:
                arr = templates.decode_payload(lz4.frame.decompress(value, return_bytearray=True))
                if arr.ndim == 0:
                    return None  # not per-step values: the reference path words it
                cols[name] = (
                    arr if arr.dtype == _F32 and name in OBS_COLUMNS else convert_column(name, arr)
                )
            except _FRAME_ERRORS:
                return None  # the reference path repeats the work and words the error
    # Records that break the format (a required column missing, columns of different
    # lengths) go to the reference path, which words the error without the dones the
    # C decoder may have added.
    if not (cols.keys() >= _REQUIRED and len(set(map(len, cols.values()))) == 1):
        return None
    return cols
