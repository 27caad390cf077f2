"""JsonReader: stream SampleBatches from JSON Lines experience files, epoch after epoch.

* Order: each epoch visits this worker's files once, shuffled by a numpy Generator
  seeded with ``(seed, worker_index)`` (same seed, same order); lines within a file
  keep their order. ``next()`` never runs dry: after the last record, a new epoch starts.
* Shards: worker ``i`` of ``N`` (``0 <= i < N``) reads ``files[i::N]``. With more
  workers than files, workers share a file by records (worker ``i`` reads file
  ``i % F``, every ``k``-th record), so every row is still read once per epoch overall.
* Bad data: a line that is not JSON (corrupt, or a truncated last line) is skipped,
  counted once in ``num_corrupt_lines_skipped`` (not again in later epochs) and logged
  as a warning on the ``"offrl"`` logger naming file and line. A file without a single
  valid record, or an epoch that yields no rows, is a DataFormatError (never an endless
  loop). Any other format problem is a DataFormatError at once.
* Columns: ``columns`` reads only those columns (plus the ones every batch needs:
  ``offrl.io.decode.ALWAYS_READ``); the others are parsed (a line that is not JSON
  is corrupt whatever is projected) but not converted. None (the default) reads
  every column.
* Memory: files are read 256 KiB at a time (see :func:`~offrl.io.sources.open_source_spans`);
  only that read and the current record are held. A compressed column decodes to at
  most ``max_column_bytes`` (``input_config.max_column_bytes``, default 256 MiB);
  every size a line states is checked before anything is allocated.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterator, Mapping
from typing import Any

import numpy as np

from offrl.batch import SampleBatch
from offrl.errors import DataFormatError
from offrl.io.codecs import DEFAULT_MAX_COLUMN_BYTES
from offrl.io.decode import ALWAYS_READ, NEW_OBS_VALID, CorruptLineError, decode_record
from offrl.io.sources import open_source_spans, resolve_sources

log = logging.getLogger("offrl")

# A shard entry: (file, stride, offset): read the records whose index % stride == offset.
ShardEntry = tuple[str, int, int]
_MAX_CORRUPT_WARNINGS_PER_FILE = 5
_WHITESPACE = frozenset(b" \t\r\n\x0b\x0c")  # what bytes.isspace() counts
_NEWLINE = ord("\n")


def plan_shard(files: list[str], worker_index: int, num_workers: int) -> list[ShardEntry]:
    """The files (and record stride/offset within them) worker ``worker_index`` reads."""
    if num_workers < 1 or not 0 <= worker_index < num_workers:
        raise ValueError(
            f"worker_index must be in [0, num_workers), got {worker_index} of {num_workers}"
        )
    n_files = len(files)
    if num_workers <= n_files:
        return [(f, 1, 0) for f in files[worker_index::num_workers]]
    # More workers than files: the workers on one file split its records round-robin.
    file_idx = worker_index % n_files
    stride = len(range(file_idx, num_workers, n_files))
    return [(files[file_idx], stride, worker_index // n_files)]


class EpochReader:
    """This worker's shard of ``files``, read epoch after epoch in a seeded order (module
    docstring). JsonReader and ParquetReader differ only in ``_read_file``."""

    def __init__(
        self,
        files: list[str],
        *,
        seed: int | None,
        worker_index: int,
        num_workers: int,
        shuffle_files: bool,
    ) -> None:
        self.files = files
        self.shard = plan_shard(files, worker_index, num_workers)
        if num_workers > len(files):
            log.info(
                "%d workers but %d input files: workers share files record by record",
                num_workers,
                len(files),
            )
        self._shuffle = shuffle_files
        self._rng = np.random.default_rng(None if seed is None else [seed, worker_index])
        self._epoch = 0
        self._rows = 0
        self._iter: Iterator[SampleBatch] | None = None
        # (file, line) of the record next() returned last, for errors found downstream.
        self.position: tuple[str, int] | None = None

    # -- public API ---------------------------------------------------------------
    def next(self) -> SampleBatch:
        """The next record; starts a new (reshuffled) epoch after the last one."""
        while True:
            if self._iter is None:
                self._iter = self._pass(self._epoch_order())
            try:
                batch = next(self._iter, None)
            except DataFormatError:
                self._iter = None  # a retry starts the pass over instead of a new epoch
                raise
            if batch is not None:
                return batch
            self._iter = None
            self._epoch += 1

    def iter_epoch(self) -> Iterator[SampleBatch]:
        """One pass over this worker's shard in sorted file order (for data tools)."""
        return self._pass(list(self.shard))

    def metrics(self) -> dict[str, Any]:
        """Reading progress: epoch (completed passes), rows read, files in this worker's share."""
        return {"epoch": self._epoch, "rows_read": self._rows, "files": len(self.shard)}

    def close(self) -> None:
        """Close the file being read, if any."""
        if self._iter is not None:
            self._iter.close()  # type: ignore[attr-defined]
            self._iter = None

    # -- internals ----------------------------------------------------------------
    def _epoch_order(self) -> list[ShardEntry]:
        if not self._shuffle:
            return list(self.shard)
        return [self.shard[i] for i in self._rng.permutation(len(self.shard))]

    def _pass(self, order: list[ShardEntry]) -> Iterator[SampleBatch]:
        rows_before = self._rows
        for path, stride, offset in order:
            for lineno, batch in self._read_file(path, stride, offset):
                self._rows += batch.count
                self.position = (path, lineno)
                yield batch
        if self._rows == rows_before:
            raise DataFormatError(
                ", ".join(p for p, _, _ in order),
                None,
                "a whole pass over the input produced no rows (every record is empty "
                "or this worker's share holds no records); check the files or use "
                "fewer workers",
            )

    def _read_file(self, path: str, stride: int, offset: int) -> Iterator[tuple[int, SampleBatch]]:
        """(line or record number, batch) of the records of ``path`` this worker reads."""
        raise NotImplementedError


class JsonReader(EpochReader):
    """Reads SampleBatches (one record per ``next()``) from files, a dir, a glob or URIs."""

    def __init__(
        self,
        spec: str | list[str],
        *,
        seed: int | None = None,
        worker_index: int = 0,
        num_workers: int = 1,
        storage_options: Mapping[str, Any] | None = None,
        shuffle_files: bool = True,
        columns: Collection[str] | None = None,
        max_column_bytes: int = DEFAULT_MAX_COLUMN_BYTES,
    ) -> None:
        if isinstance(columns, str):
            raise TypeError(f"columns must be a collection of names, not the string {columns!r}")
        super().__init__(
            resolve_sources(spec, storage_options),
            seed=seed,
            worker_index=worker_index,
            num_workers=num_workers,
            shuffle_files=shuffle_files,
        )
        self._storage_options = dict(storage_options or {})
        self._bytes = 0
        self._corrupt = 0
        self._corrupt_seen: set[tuple[str, int | None]] = set()
        self._rebuilt_rows = 0
        self._invalid_new_obs_rows = 0
        self._warned_rebuilt: set[str] = set()
        self._columns = None if columns is None else frozenset(columns) | ALWAYS_READ
        self._limit = max_column_bytes

    def metrics(self) -> dict[str, Any]:
        """Reading progress (:meth:`EpochReader.metrics`), bytes, corrupt lines, rebuilt rows."""
        return {
            **super().metrics(),
            "bytes_read": self._bytes,
            "num_corrupt_lines_skipped": self._corrupt,
            "num_rows_new_obs_rebuilt": self._rebuilt_rows,
            "num_rows_new_obs_invalid": self._invalid_new_obs_rows,
        }

    def __enter__(self) -> JsonReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _read_file(self, path: str, stride: int, offset: int) -> Iterator[tuple[int, SampleBatch]]:
        records = assigned = valid = corrupt = 0
        cut_off = False  # the last corrupt line had no newline: a write cut off by a crash
        columns, limit = self._columns, self._limit
        for lineno, (buf, start, stop) in enumerate(
            open_source_spans(path, self._storage_options), 1
        ):
            self._bytes += stop - start
            if buf[start] in _WHITESPACE and buf[start:stop].isspace():  # blank line
                continue
            records += 1
            if (records - 1) % stride != offset:
                continue
            assigned += 1
            line = memoryview(buf)[start:stop]
            try:
                batch = decode_record(line, path=path, lineno=lineno, columns=columns, limit=limit)
            except CorruptLineError as e:
                corrupt += 1
                cut_off = buf[stop - 1] != _NEWLINE
                self._on_corrupt(e, corrupt)
                continue
            valid += 1
            if batch.count == 0:
                continue
            if NEW_OBS_VALID in batch:
                self._note_rebuilt(path, batch)
            yield lineno, batch
        if records == 0:
            raise DataFormatError(path, None, "file is empty: it holds no JSON line")
        # A crash during a new file's first record leaves one partial line and nothing
        # else (FORMAT.md: readers skip it); any other all-corrupt file is an error.
        if assigned and not valid and not (corrupt == 1 and cut_off):
            raise DataFormatError(
                path, None, f"no valid JSON record in the file ({corrupt} corrupt lines)"
            )

    def _on_corrupt(self, err: CorruptLineError, nth_in_file: int) -> None:
        if (err.path, err.line) in self._corrupt_seen:
            return  # seen in an earlier epoch: already counted and reported
        self._corrupt_seen.add((err.path, err.line))
        self._corrupt += 1
        if nth_in_file <= _MAX_CORRUPT_WARNINGS_PER_FILE:
            log.warning("skipping corrupt line %s:%s: %s", err.path, err.line, err.reason)
        elif nth_in_file == _MAX_CORRUPT_WARNINGS_PER_FILE + 1:
            log.warning("more corrupt lines in %s: not shown, still counted", err.path)

    def _note_rebuilt(self, path: str, batch: SampleBatch) -> None:
        valid = batch[NEW_OBS_VALID]
        self._rebuilt_rows += batch.count
        self._invalid_new_obs_rows += int(batch.count - np.count_nonzero(valid))
        if path not in self._warned_rebuilt:
            self._warned_rebuilt.add(path)
            log.warning(
                "%s has no 'new_obs' column: rebuilt from the next 'obs' of each episode; "
                "rows without a successor are marked new_obs_valid=False",
                path,
            )
