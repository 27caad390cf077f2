"""``offrl data convert``: JSON <-> Parquet and JSON -> JSON re-encoding, record by record.

Records are converted one at a time (memory holds one record plus one Parquet
row group), and written with exactly the columns the source had: columns the
reader derives (``terminateds`` from ``dones``, a rebuilt ``new_obs``) are not
added, so JSON -> Parquet -> JSON gives back the same rows, floats bit for bit.
A MultiAgentBatch whose one policy is ``default_policy`` becomes a SampleBatch
unless ``multi_agent`` asks for RLlib 2.x's wrapper.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from offrl.batch import SampleBatch
from offrl.datatools import ProgressFn, iter_records, raw_only
from offrl.errors import ConfigError, OffrlRuntimeError
from offrl.io.codecs import Codec
from offrl.io.json_writer import DEFAULT_MAX_FILE_SIZE, JsonWriter
from offrl.io.parquet import ParquetWriter, is_parquet, iter_parquet_records, resolve_parquet
from offrl.io.sources import resolve_sources

log = logging.getLogger("offrl")


@dataclass
class ConvertOptions:
    """How JSON output is written (ignored for Parquet output)."""

    compress_columns: Sequence[str] = ("obs", "new_obs")
    codec: Codec = "rllib"
    multi_agent: bool = False
    max_file_size: int = DEFAULT_MAX_FILE_SIZE


@dataclass
class ConvertStats:
    """What a conversion did."""

    records: int = 0
    rows: int = 0
    corrupt_lines_skipped: int = 0
    outputs: list[str] = field(default_factory=list)


def source_files(src: list[str]) -> list[str]:
    """The files ``src`` names (Parquet or JSON, decided by the ``.parquet`` suffix).

    A directory or glob that matches both kinds is refused: JSON is never parsed out of a
    Parquet file, nor the other way round."""
    if is_parquet(src):
        return resolve_parquet(src)
    files = resolve_sources(src)
    parquet = [f for f in files if is_parquet(f)]
    if parquet and len(parquet) < len(files):
        raise ConfigError(
            f"{' '.join(src)} matches both Parquet files ({parquet[0]}) and JSON files; "
            "convert them separately (e.g. 'src/*.json' and 'src/*.parquet')"
        )
    return files


def total_bytes(files: list[str]) -> int | None:
    """Total size of local ``files`` (for a progress bar); None if any is remote."""
    try:
        return sum(os.path.getsize(f) for f in files)
    except OSError:
        return None


def check_destination(dst: str) -> None:
    """ConfigError unless ``dst`` is new: conversions never overwrite."""
    if os.path.lexists(os.path.expanduser(dst)):
        raise ConfigError(
            f"output {dst!r} already exists; give a path that does not exist yet "
            "(convert never overwrites or adds to existing data)"
        )


def _json_batches(
    files: list[str], stats: ConvertStats, on_bytes: ProgressFn | None
) -> Iterator[SampleBatch]:
    for rec in iter_records(files, on_bytes=on_bytes):
        if rec.error is not None:
            if not rec.corrupt:
                raise rec.error
            stats.corrupt_lines_skipped += 1
            log.warning("skipping corrupt line %s:%s: %s", rec.path, rec.lineno, rec.error.reason)
            continue
        if rec.batch is not None:
            yield raw_only(rec.batch, rec.raw)


def _parquet_batches(files: list[str], on_bytes: ProgressFn | None) -> Iterator[SampleBatch]:
    for path in files:
        for cols in iter_parquet_records(path):
            yield SampleBatch(cols)
        if on_bytes is not None:
            on_bytes(os.path.getsize(path))  # Parquet progress is counted file by file


def _open_writer(dst: str, opts: ConvertOptions) -> Any:
    if is_parquet(dst):
        parent = Path(dst).expanduser().parent
        try:
            parent.mkdir(parents=True, exist_ok=True)  # as the JSON writer makes its folders
        except OSError as e:
            raise OffrlRuntimeError(
                f"cannot create the folder {str(parent)!r} for {dst}: {e.strerror or e}"
            ) from None
        return ParquetWriter(dst)
    return JsonWriter(
        Path(dst).expanduser(),
        max_file_size=opts.max_file_size,
        compress_columns=opts.compress_columns,
        codec=opts.codec,
        multi_agent=opts.multi_agent,
    )


def convert(
    src: list[str], dst: str, opts: ConvertOptions | None = None, on_bytes: ProgressFn | None = None
) -> ConvertStats:
    """Convert every record of ``src`` into ``dst`` (a ``.parquet`` file or a JSON directory)."""
    opts = opts or ConvertOptions()
    check_destination(dst)
    files = source_files(src)
    stats = ConvertStats()
    batches = (
        _parquet_batches(files, on_bytes)
        if is_parquet(files)
        else _json_batches(files, stats, on_bytes)
    )
    with _open_writer(dst, opts) as writer:
        for batch in batches:
            writer.write(batch)
            stats.records += 1
            stats.rows += batch.count
    stats.outputs = [str(writer.path)] if isinstance(writer, ParquetWriter) else list(writer.paths)
    return stats
