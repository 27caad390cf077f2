"""Differential fuzzing of the line decoder on mutated real RLlib lines (tests/data/rllib).

Every input is a real line (RLlib 2.60 DQN CartPole, an older RLlib's CartPole, and the
same rows written by offrl's npy codec) with seeded mutations: bit flips, truncations,
inserted bytes, number edge cases, and mutations inside compressed columns (the base64
text, the LZ4 frame with its header checksum fixed up, the pickle or npy payload,
re-compressed). For each input:

* only :class:`~offrl.errors.DataFormatError` (or its CorruptLineError) escapes
  :func:`~offrl.io.decode.decode_record`, and only :class:`CodecError` the codecs;
* the decoding paths agree: a projected read gives the full read's columns bit for bit
  (or the full read rejects the line), numpy's pickle read by its layout equals the
  restricted unpickler's result (or both reject), and the two LZ4 branches give the
  same bytes (or both reject);
* memory stays within a small multiple of the line (LZ4's ratio at worst).

The default tier runs a smoke budget; ``-m slow`` runs up to two minutes. Inputs that
ever failed are kept in tests/data/fuzz/ and replayed by ``test_corpus_replays``.
"""

from __future__ import annotations

import base64
import binascii
import os
import random
import re
import struct
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

import lz4.frame
import numpy as np
import pytest

from offrl.batch import SampleBatch
from offrl.errors import DataFormatError
from offrl.io import codecs
from offrl.io.codecs import CodecError
from offrl.io.decode import ALWAYS_READ, CorruptLineError, decode_record
from offrl.io.encode import encode_record
from tests.shared_data import RLLIB_260_DQN_CARTPOLE, RLLIB_FIXTURE

CORPUS = Path(__file__).resolve().parent / "data" / "fuzz"
SMOKE_INPUTS = 400
SLOW_SECONDS = float(os.environ.get("OFFRL_FUZZ_SECONDS", "100"))
PROJECTION = frozenset({"obs", "actions"}) | ALWAYS_READ
# A line may legitimately decode to LZ4's ratio times its compressed text; plus numpy's
# and the parser's fixed costs.
MEMORY_FACTOR = codecs.LZ4_MAX_RATIO + 16
MEMORY_SLACK = 4 << 20


# -- seeds: real lines ---------------------------------------------------------------------


def seed_lines() -> list[bytes]:
    """A few real RLlib 2.60 lines, the older fixture's lines, and one line re-encoded
    with offrl's npy codec (so npy payloads are fuzzed too)."""
    dqn = next(RLLIB_260_DQN_CARTPOLE.glob("*.json")).read_bytes().splitlines()
    lines = [dqn[i] for i in (0, 1, 7, 40)] + RLLIB_FIXTURE.read_bytes().splitlines()[:2]
    batch = decode_record(dqn[3], path="seed", lineno=4)
    cols = {k: v for k, v in batch.items() if k != "new_obs_valid"}
    lines.append(encode_record(SampleBatch(cols), compress_columns=("obs", "new_obs")).rstrip())
    return lines


# -- mutations -----------------------------------------------------------------------------

_EDGE_NUMBERS = [
    b"1e309",
    b"-1e309",
    b"-0",
    b"0.0",
    b"4.9e-324",
    b"1.7976931348623157e308",
    b"NaN",
    b"Infinity",
    b"-Infinity",
    b"9223372036854775807",
    b"9223372036854775808",
    b"-9223372036854775809",
    b"18446744073709551616",
    b"1e-400",
    b"01",
    b"1.",
    b".5",
    b"true",
    b"null",
    b"[]",
    b'""',
    b"{}",
    b"1" * 5000,
]
_TOKENS = [
    b"[",
    b"]",
    b"{",
    b"}",
    b'"',
    b"\\",
    b",",
    b":",
    b"\n",
    b"\x00",
    b"\xff",
    b"\xc3",
    b"BCJNG",
    b'"BCJNG',
    b"\\u0000",
    b"\\ud800",
    b"[[[[[[[[",
    b"NaN",
]
_NUMBER = re.compile(rb"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")
_COMPRESSED = re.compile(rb'"(BCJNG[A-Za-z0-9+/=]*)"')


def _xxh32(data: bytes, seed: int = 0) -> int:
    """XXH32, for the LZ4 frame header checksum (python-lz4 does not expose it)."""
    p1, p2, p3, p4, p5 = 2654435761, 2246822519, 3266489917, 668265263, 374761393
    m = 0xFFFFFFFF

    def rotl(x: int, r: int) -> int:
        return ((x << r) | (x >> (32 - r))) & m

    n, i = len(data), 0
    if n >= 16:
        v = [(seed + p1 + p2) & m, (seed + p2) & m, seed & m, (seed - p1) & m]
        while i + 16 <= n:
            for j in range(4):
                lane = struct.unpack_from("<I", data, i + 4 * j)[0]
                v[j] = (rotl((v[j] + lane * p2) & m, 13) * p1) & m
            i += 16
        h = (rotl(v[0], 1) + rotl(v[1], 7) + rotl(v[2], 12) + rotl(v[3], 18)) & m
    else:
        h = (seed + p5) & m
    h = (h + n) & m
    while i + 4 <= n:
        h = (rotl((h + struct.unpack_from("<I", data, i)[0] * p3) & m, 17) * p4) & m
        i += 4
    while i < n:
        h = (rotl((h + data[i] * p5) & m, 11) * p1) & m
        i += 1
    h ^= h >> 15
    h = (h * p2) & m
    h ^= h >> 13
    h = (h * p3) & m
    return h ^ (h >> 16)


def fix_header_checksum(frame: bytearray) -> bytearray:
    """Recompute an LZ4 frame's header checksum after its descriptor was changed."""
    if len(frame) < 7 or frame[:4] != b"\x04\x22\x4d\x18":
        return frame
    end = 6 + (8 if frame[4] & 0x08 else 0) + (4 if frame[4] & 0x01 else 0)
    if end < len(frame):
        frame[end] = (_xxh32(bytes(frame[4:end])) >> 8) & 0xFF
    return frame


def _flip(rng: random.Random, data: bytearray) -> bytearray:
    for _ in range(rng.choice((1, 1, 2, 8))):
        if data:
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    return data


def _truncate(rng: random.Random, data: bytearray) -> bytearray:
    return data[: rng.randrange(len(data) + 1)]


def _insert(rng: random.Random, data: bytearray, tokens: list[bytes]) -> bytearray:
    at = rng.randrange(len(data) + 1)
    return data[:at] + rng.choice(tokens) + data[at:]


def _payload_mutation(rng: random.Random, payload: bytearray) -> bytearray:
    """Damage a decompressed payload where it hurts: sizes, shapes, opcodes, headers."""
    kind = rng.randrange(6)
    if kind == 0:
        return _flip(rng, payload)
    if kind == 1:
        return _truncate(rng, payload)
    if kind == 2:  # a big number where a size or shape is
        at = rng.randrange(max(1, len(payload) - 8))
        payload[at : at + 8] = struct.pack("<Q", rng.choice((2**62, 2**32 - 1, 2**31, 65536)))
        return payload
    if kind == 3:  # a pickle opcode with a huge argument
        op = rng.choice(
            (
                b"r\xff\xff\xff\xff",
                b"\x96" + struct.pack("<Q", 2**40),
                b"h\xff",
                b"j\xff\xff\xff\x7f",
                b"\x95" + struct.pack("<Q", 2**62),
                b"N",
                b"0",
            )
        )
        at = rng.randrange(len(payload) + 1)
        return payload[:at] + op + payload[at:]
    if kind == 4:  # the npy header's text
        text = re.sub(
            rb"\d+",
            lambda m: rng.choice((b"0", b"4000000000", b"-1", b"3,")),
            payload[:128],
            count=1,
        )
        return bytearray(text) + payload[128:]
    return _insert(rng, payload, [b"(", b")", b"'", b"}", b"\x80", b"."])


def _mutate_compressed(rng: random.Random, line: bytearray) -> bytearray:
    found = list(_COMPRESSED.finditer(line))
    if not found:
        return _flip(rng, line)
    m = rng.choice(found)
    text = m.group(1)
    kind = rng.randrange(4)
    if kind == 0:  # the base64 text
        new = bytes(_rng_choice_mutation(rng, bytearray(text), [b"=", b"==", b"!", b"\xe9", b"A"]))
    else:
        try:
            frame = bytearray(base64.b64decode(text))
            payload = codecs.decompress_frame(bytes(frame))  # bounded, unlike lz4's own
        except (binascii.Error, ValueError):  # mutated in an earlier round (CodecError too)
            return _flip(rng, line)
        if kind == 1:  # the frame: its descriptor (content size), then the header checksum
            if len(frame) > 14 and rng.random() < 0.5:
                frame[6:14] = struct.pack("<Q", rng.choice((0, 1, 2**62, len(frame) * 300, 10**6)))
            else:
                frame = _flip(rng, frame)
            frame = fix_header_checksum(frame)
        else:  # the payload inside, re-compressed (checksums right)
            frame = bytearray(
                lz4.frame.compress(
                    bytes(_payload_mutation(rng, payload)), store_size=rng.random() < 0.8
                )
            )
        new = base64.b64encode(bytes(frame))
    return line[: m.start(1)] + new + line[m.end(1) :]


def _rng_choice_mutation(rng: random.Random, data: bytearray, tokens: list[bytes]) -> bytearray:
    return rng.choice((_flip, _truncate, lambda r, d: _insert(r, d, tokens)))(rng, data)


def _edge_number(rng: random.Random, line: bytearray) -> bytearray:
    found = list(_NUMBER.finditer(line))
    if not found:
        return line
    m = rng.choice(found)
    return line[: m.start()] + rng.choice(_EDGE_NUMBERS) + line[m.end() :]


MUTATORS: list[Callable[[random.Random, bytearray], bytearray]] = [
    _flip,
    _truncate,
    lambda rng, d: _insert(rng, d, _TOKENS),
    _edge_number,
    _mutate_compressed,
    _mutate_compressed,
]


def mutants(seed: int) -> Iterator[bytes]:
    """An endless, reproducible stream of mutated real lines."""
    rng = random.Random(seed)
    seeds = seed_lines()
    while True:
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.choice((1, 1, 1, 2, 3))):
            data = rng.choice(MUTATORS)(rng, data)
        yield bytes(data)


# -- the oracle ------------------------------------------------------------------------------


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype.hasobject:
        return a.tolist() == b.tolist()
    return np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes()


def _decode(line: bytes | memoryview, columns: frozenset[str] | None) -> SampleBatch | Exception:
    try:
        return decode_record(line, path="fuzz", lineno=1, columns=columns)
    except DataFormatError as e:  # anything else escapes: a finding
        return e


def check_payload_paths(payload: bytes) -> None:
    """numpy's pickle by its layout == the restricted unpickler, or both reject."""
    try:
        fast = codecs._fast_pickle(payload)
    except Exception as e:  # noqa: BLE001
        raise AssertionError(f"the layout reader raised {e!r}") from e
    try:
        ref: np.ndarray | None = codecs.restricted_loads(payload)
    except CodecError:
        ref = None
    if fast is not None:
        assert ref is not None and _same(fast, ref), "layout reader and unpickler disagree"
    try:
        got: np.ndarray | None = codecs.decode_payload(payload)
    except CodecError:
        got = None
    want = fast if fast is not None else ref
    assert (got is None) == (want is None) and (got is None or _same(got, want))


def check_lz4_paths(frame: bytes) -> None:
    """The one-call and the bounded LZ4 branches give the same bytes, or both reject."""
    try:
        stated = codecs._lz4_content_size(frame)
    except CodecError:
        return
    if stated is None or stated > 1 << 24:
        return
    results = []
    for branch in (
        lambda: codecs._lz4_whole(frame, stated),
        lambda: codecs._lz4_bounded(frame, stated, stated),
    ):
        try:
            results.append(bytes(branch()))
        except CodecError:
            results.append(None)
    assert results[0] == results[1], "LZ4 branches disagree"


def check_line(line: bytes) -> None:
    """Every invariant of the module docstring for one input line."""
    buf = line + b'\n"' + b"z" * 64  # what follows a line in a read: never part of it
    full = _decode(memoryview(buf)[: len(line)], None)
    assert isinstance(full, (SampleBatch, DataFormatError))
    again = _decode(line, None)
    assert type(again) is type(full)
    if isinstance(full, SampleBatch):
        assert isinstance(again, SampleBatch) and full.keys() == again.keys()
        assert all(_same(full[k], again[k]) for k in full)
    proj = _decode(line, PROJECTION)
    if isinstance(proj, SampleBatch):
        if isinstance(full, SampleBatch):
            assert set(proj.keys()) == {k for k in full if k in PROJECTION}
            for k in proj:
                assert _same(proj[k], full[k]), k
        else:  # the full read may only reject for a column the projection skips
            assert not isinstance(full, CorruptLineError), "projection read a corrupt line"
    elif isinstance(proj, CorruptLineError):
        assert isinstance(full, CorruptLineError)
    else:
        assert isinstance(full, DataFormatError), "projection rejects what the full read accepts"
    for m in _COMPRESSED.finditer(line):
        try:
            frame = base64.b64decode(m.group(1), validate=True)
        except (binascii.Error, ValueError):
            continue
        check_lz4_paths(frame)
        try:
            payload = bytes(codecs.decompress_frame(frame))
        except CodecError:
            continue
        if payload[:1] == b"\x80":
            check_payload_paths(payload)


def check_memory(line: bytes) -> None:
    tracemalloc.start()
    try:
        _decode(line, None)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak <= MEMORY_FACTOR * len(line) + MEMORY_SLACK, f"peak {peak} for {len(line)} B"


def run(inputs: Iterator[bytes], scratch: Path, *, count: int | None, seconds: float | None) -> int:
    """Check inputs until ``count`` or ``seconds`` is reached.

    Each input is written to ``scratch/current-input`` first (a crash leaves it there) and a
    failing one to ``scratch/found-<hash>.jsonl``: add it to tests/data/fuzz/ once fixed.
    """
    start, done = time.monotonic(), 0
    current = scratch / "current-input"
    for line in inputs:
        current.write_bytes(line)
        try:
            check_line(line)
            if done % 10 == 0:
                check_memory(line)
        except BaseException:
            found = scratch / f"found-{_xxh32(line):08x}.jsonl"
            found.write_bytes(line)
            print(f"the failing input is in {found}")
            raise
        done += 1
        if count is not None and done >= count:
            break
        if seconds is not None and time.monotonic() - start >= seconds:
            break
    return done


# -- tests ---------------------------------------------------------------------------------


def test_xxh32_matches_python_lz4_header_checksums() -> None:
    frame = bytearray(lz4.frame.compress(b"abc" * 100, store_size=True))
    want = frame[14]
    frame[14] ^= 0xFF
    assert fix_header_checksum(frame)[14] == want


# float32 columns holding 1e300 become inf, with numpy's overflow warning: expected here.
pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")


def test_fuzz_smoke(tmp_path: Path) -> None:
    assert run(mutants(seed=1), tmp_path, count=SMOKE_INPUTS, seconds=None) == SMOKE_INPUTS


@pytest.mark.slow
def test_fuzz_long(tmp_path: Path) -> None:
    done = run(mutants(seed=2), tmp_path, count=None, seconds=SLOW_SECONDS)
    print(f"{done} inputs in {SLOW_SECONDS:.0f} s")
    assert done > 1000


def corpus_files() -> list[Path]:
    return sorted(p for p in CORPUS.iterdir() if p.suffix in (".jsonl", ".bin"))


@pytest.mark.parametrize("path", corpus_files(), ids=lambda p: p.name)
def test_corpus_replays(path: Path) -> None:
    data = path.read_bytes()
    first = data.split(b"\n", 1)[0] + (b"\n" if b"\n" in data else b"")
    for line in {first, data}:  # the first line as a reader's span, and the whole input
        check_line(line)
        check_memory(line)
    # Every input here is a bad line: skipped as corrupt or reported, never decoded.
    assert isinstance(_decode(first, None), DataFormatError)
    assert isinstance(_decode(first, PROJECTION), DataFormatError)
