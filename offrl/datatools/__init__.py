"""Data tools behind ``offrl data inspect|validate|convert``: stream records, one at a time.

Every tool walks the same stream: :func:`iter_records` yields one :class:`Record`
per non-blank line of each file, with the parsed raw columns (so tools can see
how a column was stored) and, unless asked not to, the decoded SampleBatch.
Only the current record is held in memory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from offrl.batch import SampleBatch
from offrl.errors import DataFormatError
from offrl.io.decode import CorruptLineError, columns_of, decode_columns, parse_line
from offrl.io.sources import open_source, resolve_sources

SAMPLE_BATCH = "SampleBatch"
MULTI_AGENT_BATCH = "MultiAgentBatch"

ProgressFn = Callable[[int], None]


@dataclass
class Record:
    """One line of an experience file: where it is, how it was stored, what it holds."""

    path: str
    lineno: int
    nbytes: int
    kind: str = ""  # "SampleBatch" or "MultiAgentBatch"; "" when the line is unreadable
    raw: Mapping[str, Any] = field(default_factory=dict)  # column -> value as parsed
    batch: SampleBatch | None = None
    error: DataFormatError | None = None  # set when the line could not be read or decoded

    @property
    def corrupt(self) -> bool:
        """True for a line that is not JSON at all (truncated, garbage)."""
        return isinstance(self.error, CorruptLineError)


def record_columns(record: Any, path: str, lineno: int) -> tuple[str, Mapping[str, Any]]:
    """``(kind, columns)`` of a parsed record; a default_policy-only MultiAgentBatch unwraps."""
    cols = columns_of(record, path, lineno)  # raises DataFormatError for anything else
    return record["type"], {k: v for k, v in cols.items() if k != "type"}


def read_line(line: bytes, path: str, lineno: int, *, decode: bool = True) -> Record:
    """Parse (and decode) one line into a Record; problems are kept in ``Record.error``."""
    rec = Record(path=path, lineno=lineno, nbytes=len(line))
    try:
        rec.kind, rec.raw = record_columns(parse_line(line, path=path, lineno=lineno), path, lineno)
        if decode:
            rec.batch = decode_columns(rec.raw, path=path, lineno=lineno)
    except DataFormatError as e:
        rec.error = e
    return rec


def iter_records(
    paths: str | list[str], *, decode: bool = True, on_bytes: ProgressFn | None = None
) -> Iterator[Record]:
    """Every non-blank line of every file matched by ``paths`` (sorted), as a Record.

    ``on_bytes(n)`` is called with the size of each line read, blank ones included,
    so a caller can drive a progress bar against the total file size.
    """
    for path in resolve_sources(paths):
        for lineno, line in enumerate(open_source(path), 1):
            if on_bytes is not None:
                on_bytes(len(line))
            if line.isspace():
                continue
            yield read_line(line, path, lineno, decode=decode)


def raw_only(batch: SampleBatch, raw: Mapping[str, Any]) -> SampleBatch:
    """``batch`` without the columns the decoder added (kept faithful to the file)."""
    return SampleBatch({k: v for k, v in batch.items() if k in raw})
