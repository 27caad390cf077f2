"""TensorBoard event files without TensorBoard: TFRecord framing around hand-encoded protobufs.

An event file is a sequence of TFRecords::

    uint64 length (little endian) | uint32 masked_crc32c(length bytes)
    data (length bytes)           | uint32 masked_crc32c(data)

where ``masked_crc(x) = ((crc >> 15) | (crc << 17)) + 0xA282EAD8`` (mod 2**32) and
crc is CRC-32C (Castagnoli). Each record's data is a serialised ``tensorflow.Event``;
the first holds ``file_version = "brain.Event:2"``, the others a ``Summary`` of
``simple_value`` scalars. Only the protobuf fields used here are encoded:

    Event:   1 wall_time (double), 2 step (int64), 3 file_version (string), 5 summary
    Summary: 1 value (repeated Summary.Value)
    Value:   1 tag (string), 2 simple_value (float)
"""

from __future__ import annotations

import math
import socket
import struct
import time
from collections.abc import Iterator, Mapping
from numbers import Real
from pathlib import Path
from types import TracebackType
from typing import IO, Any

FILE_VERSION = "brain.Event:2"
_CRC32C_POLY = 0x82F63B78  # Castagnoli polynomial, reflected
_MASK_DELTA = 0xA282EAD8


def _crc_table() -> tuple[int, ...]:
    table = []
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ _CRC32C_POLY if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_TABLE = _crc_table()


def crc32c(data: bytes) -> int:
    """CRC-32C of ``data`` (pure Python: event records are small)."""
    crc = 0xFFFFFFFF
    for b in data:
        crc = _TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    """TFRecord's masked CRC: rotate right by 15 and add a constant (mod 2**32)."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def tfrecord(data: bytes) -> bytes:
    """``data`` framed as one TFRecord."""
    header = struct.pack("<Q", len(data))
    return (
        header
        + struct.pack("<I", masked_crc32c(header))
        + data
        + struct.pack("<I", masked_crc32c(data))
    )


# -- protobuf wire format ---------------------------------------------------------------


def _varint(value: int) -> bytes:
    value &= 0xFFFFFFFFFFFFFFFF  # negative int64 is encoded as its two's complement
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _len_field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def summary_value(tag: str, value: float) -> bytes:
    """A ``Summary.Value`` with ``tag`` and ``simple_value`` (float32)."""
    try:
        packed = struct.pack("<f", value)
    except OverflowError:  # beyond float32's range: TensorBoard shows it as +-inf
        packed = struct.pack("<f", math.copysign(math.inf, value))
    return _len_field(1, tag.encode()) + _varint(2 << 3 | 5) + packed


def event(
    wall_time: float,
    step: int,
    *,
    file_version: str | None = None,
    scalars: Mapping[str, float] | None = None,
) -> bytes:
    """A serialised ``Event`` holding a file version or a summary of scalars."""
    out = _varint(1 << 3 | 1) + struct.pack("<d", wall_time) + _varint(2 << 3 | 0) + _varint(step)
    if file_version is not None:
        out += _len_field(3, file_version.encode())
    if scalars:
        summary = b"".join(_len_field(1, summary_value(t, v)) for t, v in scalars.items())
        out += _len_field(5, summary)
    return out


# -- results -> scalars -----------------------------------------------------------------


def numeric_items(result: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, float]]:
    """``(tag, value)`` for every number in ``result``; nested dicts join keys with ``/``.

    Booleans, strings, lists and None are skipped: TensorBoard scalars are numbers.
    """
    for key, value in result.items():
        tag = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from numeric_items(value, tag + "/")
        elif isinstance(value, bool):
            continue
        elif isinstance(value, Real) or (
            hasattr(value, "dtype") and getattr(value, "ndim", 1) == 0 and value.dtype.kind in "iuf"
        ):
            yield tag, float(value)


class TensorBoardWriter:
    """Appends scalar summaries to a new ``events.out.tfevents.<time>.<host>`` file."""

    def __init__(self, logdir: str | Path) -> None:
        self.logdir = Path(logdir)
        self.logdir.mkdir(parents=True, exist_ok=True)
        now = time.time()
        name = f"events.out.tfevents.{int(now)}.{socket.gethostname()}"
        self.path = self.logdir / name
        suffix = 0
        while True:  # two writers in the same second: never overwrite the other's file
            try:
                self._file: IO[bytes] | None = open(self.path, "xb")  # noqa: SIM115
                break
            except FileExistsError:
                suffix += 1
                self.path = self.logdir / f"{name}.{suffix}"
        self._write(event(now, 0, file_version=FILE_VERSION))

    def add_scalars(self, result: Mapping[str, Any], step: int) -> None:
        """One event at ``step`` with every numeric value of ``result`` (tag = key)."""
        scalars = dict(numeric_items(result))
        if scalars:
            self._write(event(time.time(), int(step), scalars=scalars))

    def _write(self, data: bytes) -> None:
        if self._file is None:
            raise ValueError(f"TensorBoardWriter for {self.path} is closed")
        self._file.write(tfrecord(data))
        self._file.flush()  # TensorBoard tails the file while the run goes on

    def close(self) -> None:
        """Close the file (idempotent)."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> TensorBoardWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
