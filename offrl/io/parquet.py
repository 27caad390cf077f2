"""Experiences as Parquet: one row per step, for pandas / Spark / DuckDB (optional extra).

Layout: every batch column is one Parquet column. Numbers keep their dtype
(float32 stays float32, so values round-trip bit for bit); per-step arrays such
as ``obs`` are fixed-size lists (nested for more than one dimension); Python
objects (``infos`` dicts) are JSON text, marked by the field metadata
``offrl.encoding = json``. The column ``_offrl_record`` numbers the JSON record
each row came from, so converting back reproduces the records exactly; Parquet
files without it are served in blocks of ``batch_rows`` rows.

pyarrow is optional (``pip install 'offrl[parquet]'``); it is imported only here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np
import orjson

from offrl.batch import MultiAgentBatch, SampleBatch
from offrl.errors import DataFormatError, OffrlRuntimeError
from offrl.io.decode import decode_columns, object_array
from offrl.io.encode import to_builtin
from offrl.io.json_reader import EpochReader
from offrl.io.sources import resolve_local

RECORD_COLUMN = "_offrl_record"
ENCODING_KEY = b"offrl.encoding"
JSON_ENCODING = b"json"
PARQUET_SUFFIX = ".parquet"
DEFAULT_ROW_GROUP_ROWS = 65_536
DEFAULT_BATCH_ROWS = 1_000


def require_pyarrow() -> Any:
    """The ``pyarrow`` module (``pyarrow.parquet`` loaded), or an error saying how to install it."""
    try:
        import pyarrow
        import pyarrow.parquet  # noqa: F401  (callers use it as pyarrow.parquet)
    except ImportError:
        raise OffrlRuntimeError(
            "Parquet support needs pyarrow, which is not installed: "
            "run pip install 'offrl[parquet]'"
        ) from None
    return pyarrow


# -- numpy <-> arrow ------------------------------------------------------------------


def _json_text(value: Any) -> str:
    try:
        return orjson.dumps(value, default=to_builtin).decode()
    except TypeError as e:
        raise OffrlRuntimeError(f"cannot store value {value!r:.60} in Parquet: {e}") from None


def column_to_arrow(name: str, arr: np.ndarray) -> tuple[Any, Any]:
    """``(field, array)`` for one column: numbers natively, per-step arrays as fixed-size lists."""
    pa = require_pyarrow()
    if arr.dtype.kind == "O":
        values = pa.array([_json_text(v) for v in arr.tolist()], type=pa.string())
        return pa.field(name, pa.string(), metadata={ENCODING_KEY: JSON_ENCODING}), values
    flat = np.ascontiguousarray(arr).reshape(-1)
    values = pa.array(flat.tolist() if arr.dtype.kind in "US" else flat)
    for size in reversed(arr.shape[1:]):
        values = pa.FixedSizeListArray.from_arrays(values, size)
    return pa.field(name, values.type), values


def batch_to_table(batch: SampleBatch, record_index: int | None = None) -> Any:
    """One pa.Table row per step; with ``record_index``, the ``_offrl_record`` column too."""
    pa = require_pyarrow()
    fields, arrays = [], []
    for name, arr in batch.items():
        f, a = column_to_arrow(name, arr)
        fields.append(f)
        arrays.append(a)
    if record_index is not None:
        fields.append(pa.field(RECORD_COLUMN, pa.int64()))
        arrays.append(pa.array(np.full(batch.count, record_index, dtype=np.int64)))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def column_to_numpy(field: Any, array: Any) -> np.ndarray:
    """Inverse of :func:`column_to_arrow` for one (chunk of a) column."""
    pa = require_pyarrow()
    if (field.metadata or {}).get(ENCODING_KEY) == JSON_ENCODING:
        return object_array([orjson.loads(s) if s is not None else None for s in array.to_pylist()])
    n, shape, values = len(array), [], array
    while pa.types.is_fixed_size_list(values.type):
        shape.append(values.type.list_size)
        values = values.flatten()  # flatten() honours slice offsets; .values would not
    flat = values.to_numpy(zero_copy_only=False)
    return flat.reshape(n, *shape) if shape else flat


# -- writing --------------------------------------------------------------------------


class ParquetWriter:
    """Write batches as rows of one new Parquet file (an OutputWriter; a context manager).

    The file is created exclusively (an existing file is never overwritten) and
    removed again if writing fails, since a Parquet file without its footer is
    unreadable. Rows are buffered into row groups of ``row_group_rows``.
    """

    def __init__(self, path: str | Path, *, row_group_rows: int = DEFAULT_ROW_GROUP_ROWS) -> None:
        self._pa = require_pyarrow()
        self.path = Path(path).expanduser()
        self.row_group_rows = row_group_rows
        try:
            self._handle: IO[bytes] | None = open(self.path, "xb")  # noqa: SIM115
        except FileExistsError:
            raise OffrlRuntimeError(
                f"{self.path} already exists; choose a new output file (it is never overwritten)"
            ) from None
        except OSError as e:
            raise OffrlRuntimeError(f"cannot create {self.path}: {e.strerror or e}") from None
        self._writer: Any = None
        self._pending: list[Any] = []
        self._pending_rows = 0
        self.records = 0
        self.rows = 0

    def write(self, batch: SampleBatch | MultiAgentBatch) -> None:
        """Append ``batch`` (one record) as rows."""
        if isinstance(batch, MultiAgentBatch):
            batch = batch.as_single_agent()
        if batch.count == 0:
            return
        table = batch_to_table(batch, self.records)
        if self._writer is None:
            # CRC32 of every data page: a flipped byte is caught on reading, not trained on.
            pq = self._pa.parquet
            self._writer = pq.ParquetWriter(self._handle, table.schema, write_page_checksum=True)
        elif not table.schema.equals(self._writer.schema, check_metadata=True):
            raise DataFormatError(
                str(self.path),
                None,
                f"record {self.records} has columns {table.schema.names} "
                f"({_types(table.schema)}), but the file was started with "
                f"{self._writer.schema.names} ({_types(self._writer.schema)}): one Parquet "
                "file holds one schema; convert records of different shapes separately",
            )
        self._pending.append(table)
        self._pending_rows += table.num_rows
        self.records += 1
        self.rows += table.num_rows
        if self._pending_rows >= self.row_group_rows:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            self._writer.write_table(self._pa.concat_tables(self._pending))
            self._pending, self._pending_rows = [], 0

    def close(self) -> None:
        """Write the buffered rows and the footer; an empty input still gets a valid file."""
        if self._handle is None:
            return
        try:
            self._flush()
            if self._writer is not None:
                self._writer.close()
            else:  # no rows, still Parquet
                empty = self._pa.table({})
                self._pa.parquet.write_table(empty, self._handle, write_page_checksum=True)
        finally:
            self._handle.close()
            self._handle = None

    def abort(self) -> None:
        """Close and delete the unfinished file."""
        if self._writer is not None:
            # Closed here so pyarrow's finaliser does not write to a closed handle later.
            with contextlib.suppress(OSError, ValueError):
                self._writer.close()
            self._writer = None
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def __enter__(self) -> ParquetWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _types(schema: Any) -> str:
    return ", ".join(f"{f.name}: {f.type}" for f in schema)


# -- reading --------------------------------------------------------------------------


def resolve_parquet(spec: str | list[str]) -> list[str]:
    """Parquet files of a file, directory (its ``*.parquet``), glob, or a list of these."""
    out: list[str] = []
    for item in [spec] if isinstance(spec, str) else spec:
        found, what = resolve_local(item, PARQUET_SUFFIX)
        if not found:
            raise OffrlRuntimeError(
                f"no Parquet files found for {item!r}: searched {what}; check the path"
            )
        out += [f for f in found if f not in out]
    return out


def iter_parquet_records(
    path: str, *, batch_rows: int = DEFAULT_BATCH_ROWS, read_rows: int = DEFAULT_ROW_GROUP_ROWS
) -> Iterator[dict[str, np.ndarray]]:
    """The records of one Parquet file as ``column -> array`` dicts, streaming.

    Rows of one ``_offrl_record`` value form one record; without that column,
    blocks of ``batch_rows`` rows. At most ``read_rows`` rows plus one record are held.
    """
    pq = require_pyarrow().parquet
    try:
        pf = pq.ParquetFile(path, page_checksum_verification=True)
    except (OSError, ValueError) as e:  # pyarrow raises ArrowInvalid (a ValueError) on garbage
        raise DataFormatError(path, None, f"not a readable Parquet file: {e}") from None
    schema = pf.schema_arrow
    pending: dict[str, np.ndarray] | None = None
    max_rows = max(read_rows, batch_rows)
    for chunk in _checked_batches(pf, path, read_rows):
        cols = {f.name: _column(path, f, chunk.column(i)) for i, f in enumerate(schema)}
        if pending is not None:
            cols = {k: np.concatenate([pending[k], v]) for k, v in cols.items()}
        ids = cols.pop(RECORD_COLUMN, None)
        bounds = _record_bounds(ids, len(next(iter(cols.values()))), batch_rows)
        for start, end in bounds[:-1]:
            yield {k: v[start:end] for k, v in cols.items()}
        start, end = bounds[-1]
        while end - start >= max_rows:  # a huge record comes in pieces: memory stays bounded
            yield {k: v[start : start + max_rows] for k, v in cols.items()}
            start += max_rows
        pending = {k: v[start:end] for k, v in cols.items()}
        if ids is not None:
            pending[RECORD_COLUMN] = ids[start:end]
    if pending is not None:
        pending.pop(RECORD_COLUMN, None)
        if len(next(iter(pending.values()))):
            yield pending


def _checked_batches(pf: Any, path: str, read_rows: int) -> Iterator[Any]:
    """``pf.iter_batches``; a page whose checksum does not match is a DataFormatError."""
    batches = pf.iter_batches(batch_size=read_rows)
    while True:
        try:
            chunk = next(batches, None)
        except (OSError, ValueError) as e:
            raise DataFormatError(
                path, None, f"corrupt Parquet data ({str(e).splitlines()[0][:200]})"
            ) from None
        if chunk is None:
            return
        yield chunk


def _column(path: str, field: Any, array: Any) -> np.ndarray:
    """:func:`column_to_numpy`, with null rows and invalid JSON named as data errors."""
    if array.null_count and (field.metadata or {}).get(ENCODING_KEY) != JSON_ENCODING:
        first = next(i for i, v in enumerate(array.is_null().to_pylist()) if v)
        raise DataFormatError(
            path,
            None,
            f"column {field.name!r} has {array.null_count} null rows (the first at row {first} "
            "of a read block); every step needs a value",
        )
    try:
        return column_to_numpy(field, array)
    except orjson.JSONDecodeError as e:
        raise DataFormatError(
            path, None, f"column {field.name!r} is marked JSON but holds invalid JSON ({e})"
        ) from None


def _record_bounds(ids: np.ndarray | None, n: int, batch_rows: int) -> list[tuple[int, int]]:
    """Row ranges of records: runs of equal ids, or blocks of ``batch_rows``."""
    if ids is None:
        starts = list(range(0, n, batch_rows)) or [0]
    else:
        starts = [0, *(np.flatnonzero(ids[1:] != ids[:-1]) + 1).tolist()]
    return list(zip(starts, [*starts[1:], n], strict=True))


class ParquetReader(EpochReader):
    """An InputReader over Parquet files, with JsonReader's order, shards and epochs
    (:class:`~offrl.io.json_reader.EpochReader`); records are normalised like JSON records."""

    def __init__(
        self,
        spec: str | list[str],
        *,
        seed: int | None = None,
        worker_index: int = 0,
        num_workers: int = 1,
        batch_rows: int = DEFAULT_BATCH_ROWS,
        shuffle_files: bool = True,
    ) -> None:
        require_pyarrow()
        super().__init__(
            resolve_parquet(spec),
            seed=seed,
            worker_index=worker_index,
            num_workers=num_workers,
            shuffle_files=shuffle_files,
        )
        self.batch_rows = batch_rows

    def _read_file(self, path: str, stride: int, offset: int) -> Iterator[tuple[int, SampleBatch]]:
        for i, cols in enumerate(iter_parquet_records(path, batch_rows=self.batch_rows)):
            if i % stride == offset:  # "line" = record number
                yield i + 1, decode_columns(cols, path=path, lineno=i + 1)


def is_parquet(spec: str | list[str] | Mapping[str, Any]) -> bool:
    """True when an input spec names Parquet data (every item ends in ``.parquet``)."""
    if isinstance(spec, str):
        return spec.rstrip("/").endswith(PARQUET_SUFFIX)
    if isinstance(spec, list) and spec:
        return all(isinstance(s, str) and is_parquet(s) for s in spec)
    return False
