"""Where experience files are: resolve an ``input`` spec to files, and stream their lines.

A spec is a file, a directory (its ``*.json`` and ``*.jsonl`` files, not recursive),
a glob (``**`` matches across directories), a list of these, with ``~`` expanded;
or a URI / URI glob resolved through fsspec. Results are sorted per spec item.

What is a URI (one rule for reading and writing, :func:`uri_protocol`): ``scheme://...``,
or ``protocol:...`` where ``protocol`` is one of fsspec's known protocols (``hdfs:/archive``,
as Hadoop writes it, is ``hdfs:///archive``). ``file:`` URIs are plain local paths.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Iterator, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from offrl.errors import OffrlRuntimeError

_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*):")
_GLOB_CHARS = frozenset("*?[")
DATA_SUFFIXES = (".json", ".jsonl")
# Files a run directory holds beside experience files (offrl's, RLlib's and Tune's).
RUN_DIR_FILES = frozenset({"result.json", "params.json"})
_SNIFF_BYTES = 1 << 16


def is_experience_file(path: str) -> bool:
    """True when a ``*.json``/``*.jsonl`` file found in a directory holds experiences.

    FORMAT.md's rule for directories: every file is a stream of records, each a JSON
    object with a ``"type"``. So a run directory's ``result.json``/``params.json`` are
    not read, nor a file whose first line is complete JSON but not a record (an object
    without ``"type"``, a list, ...). A first line too long to look at (> 64 KiB), empty,
    or not JSON at all is left to the reader, which reports it.
    """
    if os.path.basename(path) in RUN_DIR_FILES:
        return False
    try:
        with open(path, "rb") as f:
            head = f.read(_SNIFF_BYTES)
    except OSError:
        return True  # the reader says what is wrong with it
    first = head.lstrip().split(b"\n", 1)[0].strip()
    if not first or (len(head) == _SNIFF_BYTES and b"\n" not in head):
        return True
    import json

    try:
        value = json.loads(first)
    except ValueError:
        return True  # a corrupt line: the reader skips it with a warning
    return isinstance(value, dict) and "type" in value


@lru_cache(maxsize=1)
def _fsspec_protocols() -> frozenset[str]:
    """Every protocol fsspec knows, installed or not (``s3``, ``hdfs``, ``gcs``, ...)."""
    import fsspec

    return frozenset(p.lower() for p in fsspec.available_protocols())


def uri_protocol(spec: str) -> str | None:
    """The protocol of a URI (``"s3"``, ``"hdfs"``, ``"file"``), or None for a local path.

    ``scheme://...`` always is a URI; ``protocol:...`` (one colon, as in
    ``hdfs:/archive/cartpole``) is one when fsspec knows the protocol. A one-letter
    scheme is a Windows drive (``C:/data``), never a URI.
    """
    m = _SCHEME_RE.match(spec)
    if m is None or len(m.group(1)) < 2:
        return None
    scheme = m.group(1).lower()
    if spec[m.end() :].startswith("//") or scheme in _fsspec_protocols():
        return scheme
    return None


def is_uri(spec: str) -> bool:
    """True for a URI (``file:`` included); see :func:`uri_protocol`."""
    return uri_protocol(spec) is not None


def needs_fsspec(spec: str) -> bool:
    """True for a URI that is not a local ``file:`` path."""
    return uri_protocol(spec) not in (None, "file")


def fsspec_url(spec: str) -> str:
    """``spec`` in the ``protocol://path`` form fsspec parses (``hdfs:/a`` -> ``hdfs:///a``)."""
    scheme, _, rest = spec.partition(":")
    if rest.startswith("//") or rest.startswith(":"):  # "s3://..." or chained "simplecache::"
        return spec
    return f"{scheme}://{rest}"


def backend_error(action: str, spec: str, error: Exception) -> str:
    """``cannot <action> 'spec': ...`` for a failure of the filesystem behind ``spec``.

    A missing implementation names what to install; any other failure keeps the
    first line of the error (pyarrow's HDFS error lists every path it tried). What to
    install (or set up) comes from fsspec's own registry.
    """
    from fsspec.registry import known_implementations

    protocol = uri_protocol(spec) or ""
    hint = known_implementations.get(protocol, {}).get("err")
    hint = hint or f"install the fsspec implementation of {protocol!r}"
    first = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
    if isinstance(error, ImportError):
        more = "" if hint in first else f"; {hint}"
        return (
            f"cannot {action} {spec!r}: the {protocol!r} filesystem is not installed: {first}{more}"
        )
    return (
        f"cannot {action} {spec!r}: {first}; check the address and the credentials "
        f"(storage_options); {protocol} needs: {hint}"
    )


def local_path(spec: str) -> str:
    """``file:`` stripped and ``~`` expanded."""
    if uri_protocol(spec) == "file":
        spec = re.sub(r"^file:(//)?", "", spec, flags=re.I)
    return os.path.expanduser(spec)


def _has_glob(text: str) -> bool:
    return any(c in _GLOB_CHARS for c in text)


def resolve_local(spec: str, suffix: str | None = None) -> tuple[list[str], str]:
    """Matching local files and a description of what was searched. A directory holds its
    experience files, or with ``suffix`` (``".parquet"``) its files of that suffix."""
    path = local_path(spec)
    if _has_glob(path):
        found = [p for p in glob.glob(path, recursive=True) if os.path.isfile(p)]
        return sorted(found), f"glob {path!r}"
    p = Path(path)
    if p.is_dir() and suffix is not None:
        found = [str(f) for f in p.iterdir() if f.suffix == suffix and f.is_file()]
        return sorted(found), f"*{suffix} files in directory {path!r}"
    if p.is_dir():
        found = [str(f) for f in p.iterdir() if f.suffix in DATA_SUFFIXES and f.is_file()]
        found = [f for f in found if is_experience_file(f)]
        return sorted(found), f"*.json and *.jsonl experience files in directory {path!r}"
    if p.is_file():
        return [path], f"file {path!r}"
    return [], f"path {path!r} (no such file or directory)"


def _resolve_uri(spec: str, storage_options: Mapping[str, Any]) -> tuple[list[str], str]:
    """Matching fsspec files (as full URIs) and a description of what was searched."""
    import fsspec  # imported here: only URI inputs need it

    try:
        fs, path = fsspec.core.url_to_fs(fsspec_url(spec), **storage_options)
        if _has_glob(path):
            found = [p for p in fs.glob(path) if fs.isfile(p)]
            what = f"URI glob {spec!r}"
        elif fs.isdir(path):
            found = [p for p in fs.ls(path, detail=False) if p.endswith(DATA_SUFFIXES)]
            found = [p for p in found if fs.isfile(p) and p.rsplit("/", 1)[-1] not in RUN_DIR_FILES]
            what = f"*.json and *.jsonl files under {spec!r}"
        elif fs.isfile(path):
            found, what = [path], f"URI {spec!r}"
        else:
            found, what = [], f"URI {spec!r} (not found)"
    except ValueError as e:
        raise OffrlRuntimeError(f"cannot read input {spec!r}: {e}") from None
    except (ImportError, OSError) as e:
        raise OffrlRuntimeError(backend_error("read input", spec, e)) from None
    return sorted(fs.unstrip_protocol(p) for p in found), what


def resolve_sources(
    spec: str | list[str], storage_options: Mapping[str, Any] | None = None
) -> list[str]:
    """Expand an input spec into a list of files or URIs.

    Raises OffrlRuntimeError naming what was searched when an item matches nothing.
    """
    items = [spec] if isinstance(spec, str) else list(spec)
    if not items:
        raise OffrlRuntimeError("input is an empty list: give at least one file, dir or glob")
    out: list[str] = []
    seen: set[str] = set()
    for item in items:
        if not isinstance(item, str):
            raise OffrlRuntimeError(f"input item {item!r} is not a string path, glob or URI")
        if needs_fsspec(item):
            found, what = _resolve_uri(item, storage_options or {})
        else:
            found, what = resolve_local(item)
        if not found:
            raise OffrlRuntimeError(
                f"no input files found for {item!r}: searched {what}. Check the path, or "
                f"record data there first, e.g. offrl train --run PG --env CartPole-v1 "
                f"""--config '{{"output": "{item}"}}' --stop '{{"timesteps_total": 100000}}'"""
            )
        for f in found:
            if f not in seen:
                seen.add(f)
                out.append(f)
    return out


# A line as a span of a larger buffer: (buffer, start, stop), the line being
# buffer[start:stop] with its "\n" (no copy is made until someone needs one).
Span = tuple[bytes, int, int]


def _open(uri: str, storage_options: Mapping[str, Any] | None) -> Any:
    """A binary handle on ``uri`` (local path or fsspec URI); OffrlRuntimeError if impossible."""
    try:
        if needs_fsspec(uri):
            import fsspec

            return fsspec.open(fsspec_url(uri), "rb", **(storage_options or {})).open()
        # _spans reads 256 KiB at a time itself: no second buffer in between.
        return open(local_path(uri), "rb", buffering=0)  # noqa: SIM115
    except OSError as e:
        raise OffrlRuntimeError(f"cannot open input file {uri!r}: {e}") from None


def open_source(uri: str, storage_options: Mapping[str, Any] | None = None) -> Iterator[bytes]:
    """Yield the raw lines (with their ``\\n``) of one file, streaming (bounded memory).

    The file is closed when the iterator is exhausted or closed.
    """
    with _open(uri, storage_options) as handle:
        for buf, start, stop in _spans(handle):
            yield buf if start == 0 and stop == len(buf) else buf[start:stop]  # whole: no copy


def open_source_spans(uri: str, storage_options: Mapping[str, Any] | None = None) -> Iterator[Span]:
    """Like :func:`open_source`, but each line as a :data:`Span` of the read it lies in."""
    with _open(uri, storage_options) as handle:
        yield from _spans(handle)


# 256 KiB reads: each read is decoded while it is still in the CPU's L2 cache (larger
# reads were slower in benchmarks/bench_reader.py).
READ_SIZE = 1 << 18


def _spans(handle: Any, size: int = READ_SIZE) -> Iterator[Span]:
    """The lines (with their ``\\n``) of a binary file, found with memchr in big reads.

    Iterating a file calls readline, which tests byte by byte (~4.5 instructions a byte,
    ~80 k per 20 KB experience line); memchr is far cheaper, and a span copies nothing.
    Memory: one read plus the pieces of one unfinished line.
    """
    head: list[bytes] = []  # pieces of a line that started in an earlier read
    while chunk := handle.read(size):
        pos = 0
        nl = chunk.find(b"\n")
        if head and nl >= 0:
            head.append(chunk[: nl + 1])
            line = b"".join(head)
            yield line, 0, len(line)
            head, pos = [], nl + 1
            nl = chunk.find(b"\n", pos)
        while nl >= 0:
            yield chunk, pos, nl + 1
            pos = nl + 1
            nl = chunk.find(b"\n", pos)
        if pos < len(chunk):
            head.append(chunk[pos:])
    if head:
        line = b"".join(head)
        yield line, 0, len(line)
