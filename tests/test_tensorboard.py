"""TensorBoard event files: checked by an independent decoder here and by TensorBoard itself."""

from __future__ import annotations

import re
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from offrl.tensorboard import TensorBoardWriter, crc32c, masked_crc32c, numeric_items

# -- an independent reader: bitwise CRC-32C and a minimal protobuf walker -------------------


def slow_crc32c(data: bytes) -> int:
    """CRC-32C bit by bit (no table), to check the table-driven one."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def mask(crc: int) -> int:
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def read_records(data: bytes) -> list[bytes]:
    """TFRecord payloads; raises if a length or data CRC does not match."""
    out, pos = [], 0
    while pos < len(data):
        header = data[pos : pos + 8]
        (length,) = struct.unpack("<Q", header)
        (hcrc,) = struct.unpack("<I", data[pos + 8 : pos + 12])
        assert hcrc == mask(slow_crc32c(header)), f"bad length CRC at {pos}"
        payload = data[pos + 12 : pos + 12 + length]
        (dcrc,) = struct.unpack("<I", data[pos + 12 + length : pos + 16 + length])
        assert dcrc == mask(slow_crc32c(payload)), f"bad data CRC at {pos}"
        out.append(payload)
        pos += 16 + length
    return out


def varint(buf: bytes, pos: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, pos


def fields(buf: bytes) -> list[tuple[int, Any]]:
    """(field number, value) pairs of one message; bytes for length-delimited fields."""
    out, pos = [], 0
    while pos < len(buf):
        key, pos = varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = varint(buf, pos)
        elif wire == 1:
            value, pos = struct.unpack("<d", buf[pos : pos + 8])[0], pos + 8
        elif wire == 5:
            value, pos = struct.unpack("<f", buf[pos : pos + 4])[0], pos + 4
        elif wire == 2:
            n, pos = varint(buf, pos)
            value, pos = buf[pos : pos + n], pos + n
        else:
            raise AssertionError(f"unexpected wire type {wire}")
        out.append((number, value))
    return out


def decode_event(payload: bytes) -> dict[str, Any]:
    ev: dict[str, Any] = {"scalars": {}}
    for number, value in fields(payload):
        if number == 1:
            ev["wall_time"] = value
        elif number == 2:
            ev["step"] = value
        elif number == 3:
            ev["file_version"] = value.decode()
        elif number == 5:
            for _, val in fields(value):
                parts = dict(fields(val))
                ev["scalars"][parts[1].decode()] = parts[2]
    return ev


# -- tests ----------------------------------------------------------------------------------


def test_crc32c_known_vectors() -> None:
    assert crc32c(b"123456789") == 0xE3069283  # the standard CRC-32C check value
    assert crc32c(b"") == 0
    data = bytes(range(256)) * 3
    assert crc32c(data) == slow_crc32c(data)
    assert masked_crc32c(b"123456789") == mask(0xE3069283)


def write_run(logdir: Path) -> Path:
    with TensorBoardWriter(logdir) as w:
        for step in (100, 200, 300):
            w.add_scalars(
                {
                    "episode_reward_mean": step / 10,
                    "info": {"learner": {"loss": -step}},
                    "done": True,
                    "env": "CartPole-v1",
                    "hist": [1, 2],
                    "np": np.float32(0.25),
                },
                step,
            )
    return w.path


def test_independent_decoder_reads_every_event(tmp_path: Path) -> None:
    path = write_run(tmp_path)
    assert re.fullmatch(r"events\.out\.tfevents\.\d{10}\..+", path.name)
    events = [decode_event(p) for p in read_records(path.read_bytes())]
    assert events[0]["file_version"] == "brain.Event:2"
    assert [e["step"] for e in events[1:]] == [100, 200, 300]
    assert events[2]["scalars"] == {
        "episode_reward_mean": 20.0,
        "info/learner/loss": -200.0,
        "np": 0.25,
    }


def test_corruption_is_detected_by_crc(tmp_path: Path) -> None:
    data = bytearray(write_run(tmp_path).read_bytes())
    data[-10] ^= 0x01  # flip a bit inside the last event's payload
    with pytest.raises(AssertionError, match="bad data CRC"):
        read_records(bytes(data))


def test_two_writers_same_second_keep_both_files(tmp_path: Path) -> None:
    a, b = TensorBoardWriter(tmp_path), TensorBoardWriter(tmp_path)
    a.close()
    b.close()
    assert a.path != b.path and a.path.exists() and b.path.exists()


def test_numeric_items_skips_non_numbers() -> None:
    items = dict(numeric_items({"a": 1, "b": False, "c": None, "d": {"e": 2.5}, "f": "x"}))
    assert items == {"a": 1.0, "d/e": 2.5}


def test_tensorboard_reads_the_file(tmp_path: Path) -> None:
    ea_mod = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    write_run(tmp_path)
    acc = ea_mod.EventAccumulator(str(tmp_path))
    acc.Reload()
    assert sorted(acc.Tags()["scalars"]) == ["episode_reward_mean", "info/learner/loss", "np"]
    loss = acc.Scalars("info/learner/loss")
    assert [(e.step, e.value) for e in loss] == [(100, -100.0), (200, -200.0), (300, -300.0)]
    assert acc.Scalars("episode_reward_mean")[-1].value == pytest.approx(30.0)
