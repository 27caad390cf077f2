"""The contract every reader/writer pair keeps, run over each pair on real files.

Pairs: ``JsonWriter`` with each codec (RLlib's pickle, offrl's npy, plain lists, the
MultiAgentBatch shape) read by ``JsonReader``; ``ParquetWriter`` read by ``ParquetReader``;
and a user's ``module:Class`` writer and reader built through the ``output`` / ``input``
config keys. For each: a round trip gives the same arrays; bad input is a clear OffrlError
naming the file; a writer used as a context manager closes its file when the body raises,
leaving only complete records.
"""

from __future__ import annotations

import json
import os
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from offrl.batch import SampleBatch
from offrl.config import CommonConfig, from_dict
from offrl.errors import ConfigError, OffrlError
from offrl.io.input import make_input_reader
from offrl.io.output import close_output, make_output_writer

COLUMNS = ("obs", "new_obs", "actions", "rewards", "terminateds", "truncateds", "eps_id", "t")


def make_batch(n: int, start: int, eps_id: int) -> SampleBatch:
    rng = np.random.default_rng(start)
    t = np.arange(n, dtype=np.int64)
    return SampleBatch(
        obs=rng.normal(size=(n, 4)).astype(np.float32),
        new_obs=rng.normal(size=(n, 4)).astype(np.float32),
        actions=rng.integers(0, 2, size=n).astype(np.int64),
        rewards=np.ones(n, dtype=np.float32),
        terminateds=t == n - 1,
        truncateds=np.zeros(n, dtype=bool),
        eps_id=np.full(n, eps_id, dtype=np.int64),
        t=t,
        action_prob=np.full(n, 0.5, dtype=np.float32),
        action_logp=np.full(n, np.log(0.5), dtype=np.float32),
    )


BATCHES = [make_batch(5, 0, 1), make_batch(3, 1, 2), make_batch(7, 2, 3)]

USER_IO = '''
"""A user's own experience format: one JSON object of plain lists per line."""
import json
import numpy as np
from offrl.batch import SampleBatch


class LinesWriter:
    def __init__(self, path):
        self.handle = open(path, "x")

    def write(self, batch):
        self.handle.write(json.dumps({k: batch[k].tolist() for k in batch}) + "\\n")
        self.handle.flush()

    def close(self):
        self.handle.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class LinesReader:
    def __init__(self, path):
        self.records = [json.loads(line) for line in open(path)]
        self.i = 0

    def next(self):
        record = self.records[self.i % len(self.records)]
        self.i += 1
        return SampleBatch({k: np.asarray(v) for k, v in record.items()})
'''


@dataclass
class Pair:
    """How to write ``out`` and read back what was written there."""

    name: str
    write_to: Callable[[Path, Path], Any]  # (out, tmp) -> writer (a context manager)
    read_from: Callable[[Path], Any]  # out -> reader
    files: Callable[[Path], list[Path]]  # out -> the files written


def _config(**keys: Any) -> CommonConfig:
    return from_dict(CommonConfig, keys)


def _json_writer(**keys: Any) -> Callable[[Path, Path], Any]:
    def build(out: Path, tmp: Path) -> Any:
        return make_output_writer(str(out), logdir=tmp, worker_index=0, config=_config(**keys))

    return build


def _json_reader(out: Path) -> Any:
    return make_input_reader(str(out), config=_config(), seed=0)


def _parquet_writer(out: Path, tmp: Path) -> Any:
    from offrl.io.parquet import ParquetWriter

    return ParquetWriter(out / "data.parquet", row_group_rows=4)


def _parquet_reader(out: Path) -> Any:
    return make_input_reader(str(out / "data.parquet"), config=_config(), seed=0)


def _user_writer(out: Path, tmp: Path) -> Any:
    cfg = _config(output="user_io:LinesWriter", output_config={"path": str(out / "data.lines")})
    return make_output_writer(cfg.output, logdir=tmp, worker_index=0, config=cfg)


def _user_reader(out: Path) -> Any:
    cfg = _config(input="user_io:LinesReader", input_config={"path": str(out / "data.lines")})
    return make_input_reader(cfg.input, config=cfg, seed=0)


def _json_files(out: Path) -> list[Path]:
    return sorted(out.glob("*.json"))


PAIRS = [
    Pair("json-rllib-codec", _json_writer(output_codec="rllib"), _json_reader, _json_files),
    Pair("json-offrl-codec", _json_writer(output_codec="offrl"), _json_reader, _json_files),
    Pair("json-plain-lists", _json_writer(output_compress_columns=[]), _json_reader, _json_files),
    Pair(
        "json-multi-agent",
        _json_writer(output_multi_agent=True, output_compress_columns=["obs"]),
        _json_reader,
        _json_files,
    ),
    Pair("parquet", _parquet_writer, _parquet_reader, lambda out: [out / "data.parquet"]),
    Pair("user-module-class", _user_writer, _user_reader, lambda out: [out / "data.lines"]),
]
IDS = [p.name for p in PAIRS]


@pytest.fixture(autouse=True)
def _user_io_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The user's module ``user_io`` importable, as a user's own package would be."""
    mod_dir = tmp_path / "user_mod"
    mod_dir.mkdir()
    (mod_dir / "user_io.py").write_text(textwrap.dedent(USER_IO))
    monkeypatch.syspath_prepend(str(mod_dir))
    monkeypatch.delitem(__import__("sys").modules, "user_io", raising=False)


def _open_fds(paths: list[Path]) -> list[str]:
    """This process's open file descriptors on ``paths``."""
    wanted = {str(p.resolve()) for p in paths}
    fds = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target in wanted:
            fds.append(target)
    return fds


def _write_all(pair: Pair, out: Path, tmp: Path) -> None:
    with pair.write_to(out, tmp) as writer:
        for batch in BATCHES:
            writer.write(batch)


def _read(pair: Pair, out: Path, n: int) -> Iterator[SampleBatch]:
    reader = pair.read_from(out)
    for _ in range(n):
        yield reader.next()
    close_output(reader)  # a reader's close(), where it has one


@pytest.mark.parametrize("pair", PAIRS, ids=IDS)
def test_round_trip_gives_the_same_arrays(pair: Pair, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    _write_all(pair, out, tmp_path)
    assert pair.files(out) and all(f.stat().st_size > 0 for f in pair.files(out))
    *read, wrapped = _read(pair, out, len(BATCHES) + 1)
    # one record per written batch, in writing order (one file, read from its start)
    assert [b.count for b in read] == [b.count for b in BATCHES]
    # then the reader starts the data over (a new epoch): readers never run dry
    np.testing.assert_array_equal(wrapped["obs"], BATCHES[0]["obs"])
    for written, got in zip(BATCHES, read, strict=True):
        for column in COLUMNS:
            np.testing.assert_array_equal(got[column], written[column], err_msg=column)
            assert got[column].shape == written[column].shape, column
        np.testing.assert_allclose(got["action_prob"], written["action_prob"])


def _garbage(out: Path, pair: Pair) -> list[Path]:
    """Every file of the pair replaced by bytes no format accepts."""
    files = pair.files(out)
    for f in files:
        f.write_bytes(bytes(range(256)) * 8)
    return files


def _cut_in_half(out: Path, pair: Pair) -> list[Path]:
    """Every file cut to half its first record (a JSON line, or Parquet's bytes): what a
    crash while writing the first record leaves."""
    files = pair.files(out)
    for f in files:
        first = f.read_bytes() if f.suffix == ".parquet" else f.read_bytes().split(b"\n")[0]
        f.write_bytes(first[: len(first) // 2])
    return files


@pytest.mark.parametrize("pair", [p for p in PAIRS if p.name != "user-module-class"], ids=IDS[:-1])
@pytest.mark.parametrize("damage", [_garbage, _cut_in_half], ids=["garbage", "cut"])
def test_bad_input_is_an_offrl_error_naming_the_file(
    pair: Pair, damage: Callable[[Path, Pair], list[Path]], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    _write_all(pair, out, tmp_path)
    files = damage(out, pair)
    with pytest.raises(OffrlError) as err:
        reader = pair.read_from(out)
        reader.next()
    assert any(f.name in str(err.value) for f in files), str(err.value)
    assert err.value.exit_code == 1  # a runtime failure, not a usage error


def test_user_reader_and_writer_errors_name_the_class(tmp_path: Path) -> None:
    """For a user's module:Class the data format is the user's; offrl's part is the
    class: not importable, or without next()/write(), is a ConfigError naming it."""
    bad = [
        ("user_io:NoSuchReader", lambda s: make_input_reader(s, config=_config(), seed=0)),
        ("no_such_module:Reader", lambda s: make_input_reader(s, config=_config(), seed=0)),
        ("user_io:LinesWriter", lambda s: make_input_reader(s, config=_config(), seed=0)),
        (
            "user_io:LinesReader",
            lambda s: make_output_writer(s, logdir=tmp_path, worker_index=0, config=_config()),
        ),
    ]
    for spec, build in bad:
        with pytest.raises(ConfigError) as err:
            build(spec)
        assert spec in str(err.value) and err.value.exit_code == 2


@pytest.mark.parametrize("pair", [p for p in PAIRS if p.name != "parquet"], ids=IDS[:4] + IDS[5:])
def test_writer_closes_its_file_when_the_body_raises(pair: Pair, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(KeyboardInterrupt), pair.write_to(out, tmp_path) as writer:
        for batch in BATCHES[:2]:
            writer.write(batch)
        assert _open_fds(pair.files(out)), "the writer holds its file open while writing"
        raise KeyboardInterrupt  # Ctrl-C in the middle of a run
    files = pair.files(out)
    assert _open_fds(files) == []
    # only complete records: every line is whole JSON, and both batches are there
    lines = [line for f in files for line in f.read_bytes().split(b"\n")]
    assert lines[-1] == b""  # the last record ends its line
    records = [json.loads(line) for line in lines[:-1]]
    assert len(records) == 2
    if pair.name.startswith("json"):
        assert {r["type"] for r in records} <= {"SampleBatch", "MultiAgentBatch"}
    assert sum(b.count for b in _read(pair, out, 2)) == BATCHES[0].count + BATCHES[1].count


def test_parquet_writer_removes_its_unfinished_file_when_the_body_raises(tmp_path: Path) -> None:
    """A Parquet file without its footer is unreadable: on error the writer closes and
    deletes it, so no reader ever meets a half-written file."""
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(KeyboardInterrupt), _parquet_writer(out, tmp_path) as writer:
        for batch in BATCHES:
            writer.write(batch)
        assert _open_fds([out / "data.parquet"])
        raise KeyboardInterrupt
    assert not (out / "data.parquet").exists()
    assert _open_fds([out / "data.parquet"]) == []


@pytest.mark.parametrize("pair", PAIRS[:5], ids=IDS[:5])
def test_writer_refuses_to_overwrite_and_reader_closes(pair: Pair, tmp_path: Path) -> None:
    """Writing twice into the same place keeps the first files; close() releases the file."""
    out = tmp_path / "out"
    out.mkdir()
    _write_all(pair, out, tmp_path)
    before = {f: f.read_bytes() for f in pair.files(out)}
    try:
        _write_all(pair, out, tmp_path)
    except OffrlError as err:  # Parquet: one named file, which exists
        assert "never overwritten" in str(err)
    for f, data in before.items():
        assert f.read_bytes() == data
    reader = pair.read_from(out)
    reader.next()
    assert _open_fds(pair.files(out)), "the reader holds the file it is reading open"
    reader.close()
    assert _open_fds(pair.files(out)) == []
