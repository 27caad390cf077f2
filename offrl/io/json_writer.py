"""JsonWriter: experience batches to rotating JSON Lines files (FORMAT.md, "File names").

Files are named ``output-<YYYY-mm-dd_HH-MM-SS>_worker-<i>_<n>.json`` (local time
when the file opens; ``<n>`` counts this writer's files, 0, 1, 2 ...) and are
created exclusively, so two writers in the same directory never overwrite each
other. When another writer (another run) already holds a name, the time gets a
suffix ``-<k>`` (``output-<time>-1_worker-0_0.json``), never the next ``<n>``:
``_1``, ``_2`` only ever mean "the same writer rotated". Each record is one
complete line, written and flushed at once; a failed write is cut back to the
last complete record.

Local paths are written with plain file descriptors; a path with a URL scheme
(``s3://``, ``memory://``, ...) goes through fsspec. On object stores a file
becomes visible when it is closed (at rotation or at the end of the run).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from offrl.batch import INFOS, MultiAgentBatch, SampleBatch
from offrl.errors import ConfigError, OffrlRuntimeError
from offrl.io.codecs import Codec
from offrl.io.encode import encode_record
from offrl.io.sources import backend_error, fsspec_url, local_path, needs_fsspec

DEFAULT_MAX_FILE_SIZE = 64 * 1024 * 1024
_MAX_NAME_ATTEMPTS = 10_000


def file_name(stamp: str, worker_index: int, file_index: int, tag: int = 0) -> str:
    """``output-<stamp>[-<tag>]_worker-<worker_index>_<file_index>.json`` (no suffix for tag 0)."""
    time_part = f"{stamp}-{tag}" if tag else stamp
    return f"output-{time_part}_worker-{worker_index}_{file_index}.json"


def local_stamp(now: float | None = None) -> str:
    """Local time as ``YYYY-mm-dd_HH-MM-SS`` (the time part of a file name)."""
    return time.strftime("%Y-%m-%d_%H-%M-%S", time.localtime(now))


# -- targets: where files are created --------------------------------------------------


class _LocalTarget:
    """A local directory; files are created with O_EXCL and written unbuffered."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        prepare_local_dir(directory)

    def describe(self, name: str) -> str:
        return str(self.directory / name)

    def existing_names(self) -> set[str]:
        return set()  # O_EXCL already refuses taken names atomically

    def open_exclusive(self, name: str) -> IO[bytes]:
        fd = os.open(self.directory / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        return os.fdopen(fd, "wb", buffering=0)


def prepare_local_dir(directory: Path) -> None:
    """Create ``directory`` if missing and prove a file can be created in it."""
    if directory.exists() and not directory.is_dir():
        raise OffrlRuntimeError(
            f"output path {directory} is an existing file, not a directory; "
            "set 'output' to a directory (it is created if missing)"
        )
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OffrlRuntimeError(
            f"cannot create output directory {directory}: {e.strerror or e}; "
            "choose an 'output' directory you can write to"
        ) from None
    try:
        # os.access lies for root and on read-only mounts: create a file to be sure.
        with tempfile.TemporaryFile(dir=directory, prefix=".offrl-probe-"):
            pass
    except OSError as e:
        raise OffrlRuntimeError(
            f"cannot write to output directory {directory}: {e.strerror or e}; "
            "fix its permissions or choose another 'output' directory"
        ) from None


class _FsspecTarget:
    """A directory behind an fsspec URL; taken names are found by listing it."""

    def __init__(self, url: str, storage_options: Mapping[str, Any]) -> None:
        import fsspec

        try:
            self.fs, self.root = fsspec.core.url_to_fs(fsspec_url(url), **storage_options)
        except (ImportError, OSError) as e:
            raise OffrlRuntimeError(backend_error("write output to", url, e)) from None
        except ValueError as e:
            raise ConfigError(f"output {url!r}: {e}") from None
        self.url = url.rstrip("/")
        try:
            self.fs.makedirs(self.root, exist_ok=True)
        except OSError as e:
            raise OffrlRuntimeError(
                f"cannot create output directory {url}: {e}; check the URL, the "
                "credentials (output_config.storage_options) and that the bucket exists"
            ) from None

    def describe(self, name: str) -> str:
        return f"{self.url}/{name}"

    def existing_names(self) -> set[str]:
        self.fs.invalidate_cache(self.root)  # another writer may have added files since
        try:
            return {p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(self.root, detail=False)}
        except FileNotFoundError:
            return set()

    def open_exclusive(self, name: str) -> IO[bytes]:
        path = f"{self.root.rstrip('/')}/{name}"
        if self.fs.exists(path):
            raise FileExistsError(path)
        self._reserve(path)
        return self.fs.open(path, "wb")

    def _reserve(self, path: str) -> None:
        """Create ``path`` empty and exclusively, or raise FileExistsError.

        Object stores create an object only when its file is closed, so a name
        is claimed with an empty exclusive upload (S3: ``If-None-Match: *``)
        before the real, buffered file is opened over it.
        """
        try:
            handle = self.fs.open(path, "xb")
        except (ValueError, NotImplementedError):
            return  # no exclusive mode in this backend: the exists() check must do
        try:
            handle.close()
        except OSError:
            if self.fs.exists(path):
                raise FileExistsError(path) from None  # another writer claimed it first
            raise


def _make_target(path: str | Path, storage_options: Mapping[str, Any] | None) -> Any:
    text = str(path)
    if not needs_fsspec(text):  # the one URI rule, shared with the reader
        return _LocalTarget(Path(local_path(text)))
    return _FsspecTarget(text, storage_options or {})


# -- validation -----------------------------------------------------------------------


def _check_options(
    max_file_size: Any, compress_columns: Any, codec: Any, worker_index: Any
) -> None:
    """ConfigError naming the option when a constructor argument is invalid."""
    if type(max_file_size) is not int or max_file_size <= 0:
        raise ConfigError(
            f"output_max_file_size: invalid value {max_file_size!r}; "
            "allowed: a positive integer number of bytes (e.g. 67108864 for 64 MiB)"
        )
    if isinstance(compress_columns, str) or not isinstance(compress_columns, Sequence):
        raise ConfigError(
            f"output_compress_columns: invalid value {compress_columns!r}; "
            'allowed: a list of column names such as ["obs", "new_obs"], or []'
        )
    for col in compress_columns:
        if not isinstance(col, str) or col == INFOS:
            raise ConfigError(
                f"output_compress_columns: cannot compress column {col!r}; "
                "list numeric columns only (infos holds dicts)"
            )
    if codec not in ("offrl", "rllib"):
        raise ConfigError(f"output_codec: invalid value {codec!r}; allowed: 'offrl' or 'rllib'")
    if type(worker_index) is not int or worker_index < 0:
        raise ConfigError(f"worker_index: invalid value {worker_index!r}; allowed: an int >= 0")


# -- the writer -----------------------------------------------------------------------


class JsonWriter:
    """Write batches as JSON lines to rotating, never-overwritten files (an OutputWriter)."""

    def __init__(
        self,
        path: str | Path,
        *,
        max_file_size: int = DEFAULT_MAX_FILE_SIZE,
        compress_columns: Sequence[str] = ("obs", "new_obs"),
        codec: Codec = "rllib",
        multi_agent: bool = False,
        worker_index: int = 0,
        storage_options: Mapping[str, Any] | None = None,
    ) -> None:
        _check_options(max_file_size, compress_columns, codec, worker_index)
        self.max_file_size = max_file_size
        self.compress_columns = tuple(compress_columns)
        self.codec: Codec = codec
        self.multi_agent = multi_agent
        self.worker_index = worker_index
        self._target = _make_target(path, storage_options)
        self._file: IO[bytes] | None = None
        self._size = 0  # bytes of complete records in the open file
        self._next_index = 0
        self._closed = False
        self.paths: list[str] = []  # every file opened, in order

    # -- public API --------------------------------------------------------------
    def write(self, batch: SampleBatch | MultiAgentBatch) -> None:
        """Append ``batch`` as one record; rotate first if the open file is full."""
        if self._closed:
            raise OffrlRuntimeError("JsonWriter.write() called after close(); open a new writer")
        if batch.count == 0:
            return  # an empty record carries no steps and only trips readers
        try:
            line = encode_record(
                batch,
                compress_columns=self.compress_columns,
                codec=self.codec,
                multi_agent=self.multi_agent,
            )
        except ValueError as e:
            raise OffrlRuntimeError(f"cannot record a batch of experiences: {e}") from None
        if self._file is None or self._size >= self.max_file_size:
            self._rotate()
        self._append(line)

    def close(self) -> None:
        """Close the open file (idempotent); later writes are refused."""
        self._closed = True
        self._close_file()

    def __enter__(self) -> JsonWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()  # also on exceptions and Ctrl-C, so the last file is complete

    @property
    def current_path(self) -> str | None:
        """The file records go to now, or None before the first write / after close."""
        return self.paths[-1] if self._file is not None else None

    # -- internals ---------------------------------------------------------------
    def _rotate(self) -> None:
        self._close_file()
        self._file = self._open_next()
        self._size = 0

    def _open_next(self) -> IO[bytes]:
        """Open this writer's next file ``output-<time>_worker-<i>_<n>.json``; a name another
        writer holds gets a ``-<k>`` suffix on the time, so ``<n>`` stays this writer's count."""
        stamp = local_stamp()
        taken = self._target.existing_names()
        index = self._next_index
        for tag in range(_MAX_NAME_ATTEMPTS):
            name = file_name(stamp, self.worker_index, index, tag)
            if name in taken:
                continue
            try:
                handle = self._target.open_exclusive(name)
            except FileExistsError:
                continue
            except OSError as e:
                self._closed = True
                raise OffrlRuntimeError(
                    f"cannot create output file {self._target.describe(name)}: "
                    f"{e.strerror or e}; check that the output directory is writable"
                ) from None
            self._next_index = index + 1
            self.paths.append(self._target.describe(name))
            return handle
        raise OffrlRuntimeError(
            f"no free output file name after {_MAX_NAME_ATTEMPTS} tries for "
            f"{self._target.describe(file_name(stamp, self.worker_index, index))}; "
            "use a fresh output directory"
        )

    def _append(self, line: bytes) -> None:
        handle = self._file
        if handle is None:  # pragma: no cover - _rotate always opens one
            raise OffrlRuntimeError("JsonWriter has no open file")
        try:
            view = memoryview(line)
            while view:  # raw files may accept part of a large write; finish it
                n = handle.write(view)
                view = view[n if n is not None else len(view) :]
            handle.flush()
        except OSError as e:
            kept = self._abort()
            raise OffrlRuntimeError(
                f"writing {self.paths[-1]} failed: {e.strerror or e}; {kept} "
                "Free disk space (or fix the storage) and run again; earlier files are complete"
            ) from None
        except BaseException:
            self._abort()  # Ctrl-C mid-write: cut the partial line, then let it propagate
            raise
        self._size += len(line)

    def _abort(self) -> str:
        """Cut the open file back to its last complete record and close it; say what is kept."""
        handle, self._file, self._closed = self._file, None, True
        if handle is None:
            return ""
        try:
            handle.truncate(self._size)
            kept = f"the file was cut back to its last complete record ({self._size} bytes)."
        except (OSError, ValueError):
            kept = "the file may end in a partial line, which readers skip."
        with contextlib.suppress(OSError):
            handle.close()
        return kept

    def _close_file(self) -> None:
        handle, self._file = self._file, None
        if handle is None:
            return
        try:
            handle.close()
        except OSError as e:
            raise OffrlRuntimeError(
                f"closing {self.paths[-1]} failed: {e.strerror or e}; its last record may be "
                "missing. Check the storage and free space"
            ) from None
