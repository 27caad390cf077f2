"""JsonWriter: names, rotation boundaries, no overwrites, flushing, crash safety, fsspec."""

from __future__ import annotations

import errno
import json
import os
import re
import time
import uuid
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import pytest

from offrl.batch import SampleBatch
from offrl.errors import ConfigError, OffrlRuntimeError
from offrl.io import json_writer
from offrl.io.encode import encode_record
from offrl.io.json_reader import JsonReader
from offrl.io.json_writer import JsonWriter
from tests.shared_data import (
    RLLIB_260_DQN_CARTPOLE,
    RLLIB_260_PPO_FROZENLAKE,
    RLLIB_260_PPO_PENDULUM,
)

NAME_RE = re.compile(r"^output-(\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d)(?:-\d+)?_worker-(\d+)_(\d+)\.json$")


def batch(tag: int, n: int = 4) -> SampleBatch:
    """A small batch whose ``t`` column tells which write it came from."""
    return SampleBatch(
        obs=np.full((n, 4), tag, dtype=np.float32),
        actions=np.zeros(n, dtype=np.int64),
        rewards=np.ones(n, dtype=np.float32),
        t=np.full(n, tag, dtype=np.int64),
    )


LINE_SIZE = len(encode_record(batch(1)))  # every batch(tag < 10) encodes to this many bytes


def files(directory: Path) -> list[Path]:
    return sorted(directory.glob("output-*.json"), key=lambda p: int(NAME_RE.match(p.name)[3]))


def tags(path: Path) -> list[int]:
    """The ``t`` tag of every record in the file (each line must be complete JSON)."""
    data = path.read_bytes()
    assert data.endswith(b"\n")
    return [json.loads(line)["t"][0] for line in data.splitlines()]


@pytest.fixture
def fixed_stamp(monkeypatch: pytest.MonkeyPatch) -> str:
    """Every file opens 'in the same second'."""
    stamp = "2026-01-02_03-04-05"
    monkeypatch.setattr(json_writer, "local_stamp", lambda now=None: stamp)
    return stamp


def test_file_name_pattern_and_local_open_time(tmp_path: Path) -> None:
    before = time.time()
    with JsonWriter(tmp_path, worker_index=3) as w:
        w.write(batch(1))
    after = time.time()
    (path,) = files(tmp_path)
    m = NAME_RE.match(path.name)
    assert m and m[2] == "3" and m[3] == "0"
    opened = time.mktime(time.strptime(m[1], "%Y-%m-%d_%H-%M-%S"))  # parsed as local time
    assert int(before) <= opened <= after


@pytest.mark.parametrize(
    "max_size,expected",
    [
        (LINE_SIZE, [[1], [2], [3]]),  # file holds exactly the limit: rotate
        (LINE_SIZE + 1, [[1, 2], [3]]),  # one byte under after 1 record: one more goes in
        (2 * LINE_SIZE - 1, [[1, 2], [3]]),  # second record overshoots by < one record
        (2 * LINE_SIZE, [[1, 2], [3]]),
        (2 * LINE_SIZE + 1, [[1, 2, 3]]),
    ],
)
def test_rotation_boundaries(tmp_path: Path, max_size: int, expected: list[list[int]]) -> None:
    with JsonWriter(tmp_path, max_file_size=max_size) as w:
        for tag in (1, 2, 3):
            w.write(batch(tag))
    found = files(tmp_path)
    assert [tags(p) for p in found] == expected
    assert [NAME_RE.match(p.name)[3] for p in found] == [str(i) for i in range(len(expected))]
    assert all(p.stat().st_size < max_size + LINE_SIZE for p in found)


def test_two_writers_in_the_same_second_never_overwrite(tmp_path: Path, fixed_stamp: str) -> None:
    with JsonWriter(tmp_path, max_file_size=1) as a, JsonWriter(tmp_path, max_file_size=1) as b:
        a.write(batch(1))
        b.write(batch(2))
        a.write(batch(3))
        b.write(batch(4))
    # each writer counts its own files; the second one's names carry "-1" after the time,
    # so "_1" never looks like a rotation of the other run's file
    assert [Path(p).name for p in a.paths] == [
        f"output-{fixed_stamp}_worker-0_{i}.json" for i in range(2)
    ]
    assert [Path(p).name for p in b.paths] == [
        f"output-{fixed_stamp}-1_worker-0_{i}.json" for i in range(2)
    ]
    assert [tags(Path(p)) for p in (*a.paths, *b.paths)] == [[1], [3], [2], [4]]


def test_existing_file_of_a_previous_run_is_kept(tmp_path: Path, fixed_stamp: str) -> None:
    old = tmp_path / f"output-{fixed_stamp}_worker-0_0.json"
    old.write_bytes(b"previous run\n")
    with JsonWriter(tmp_path) as w:
        w.write(batch(1))
    assert old.read_bytes() == b"previous run\n"
    assert Path(w.paths[0]).name == f"output-{fixed_stamp}-1_worker-0_0.json"


def test_each_record_is_flushed_before_close(tmp_path: Path) -> None:
    w = JsonWriter(tmp_path)
    w.write(batch(1))
    path = Path(w.current_path or "")
    assert tags(path) == [1]  # another reader sees the complete line now
    w.write(batch(2))
    assert tags(path) == [1, 2]
    w.close()
    assert w.current_path is None


def test_closed_on_exception_and_refuses_later_writes(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), JsonWriter(tmp_path) as w:
        w.write(batch(1))
        raise RuntimeError("training crashed")
    assert w.current_path is None
    assert tags(Path(w.paths[0])) == [1]
    with pytest.raises(OffrlRuntimeError, match="after close"):
        w.write(batch(2))


class FailingFile:
    """A file that writes part of the data, then fails like a full disk (or Ctrl-C)."""

    def __init__(self, real: Any, fail_on_call: int, error: BaseException) -> None:
        self.real, self.calls, self.fail_on_call, self.error = real, 0, fail_on_call, error

    def write(self, data: memoryview) -> int:
        self.calls += 1
        if self.calls == self.fail_on_call:
            self.real.write(data[: len(data) // 2])
            raise self.error
        return self.real.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def _patch_open(monkeypatch: pytest.MonkeyPatch, error: BaseException) -> None:
    real_open = json_writer._LocalTarget.open_exclusive

    def open_failing(self: Any, name: str) -> Any:
        return FailingFile(real_open(self, name), fail_on_call=2, error=error)

    monkeypatch.setattr(json_writer._LocalTarget, "open_exclusive", open_failing)


def test_disk_full_cuts_back_to_last_record(tmp_path: Path, monkeypatch) -> None:
    _patch_open(monkeypatch, OSError(errno.ENOSPC, "No space left on device"))
    w = JsonWriter(tmp_path)
    w.write(batch(1))
    with pytest.raises(OffrlRuntimeError) as info:
        w.write(batch(2))
    msg = str(info.value)
    assert w.paths[0] in msg and "No space left" in msg and "Free disk space" in msg
    assert "cut back" in msg
    assert tags(Path(w.paths[0])) == [1]  # the half-written second line is gone
    with pytest.raises(OffrlRuntimeError):
        w.write(batch(3))


def test_ctrl_c_mid_write_cuts_the_partial_line(tmp_path: Path, monkeypatch) -> None:
    _patch_open(monkeypatch, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt), JsonWriter(tmp_path) as w:
        w.write(batch(1))
        w.write(batch(2))
    assert tags(Path(w.paths[0])) == [1]


def test_directory_is_created(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b"
    with JsonWriter(target) as w:
        w.write(batch(1))
    assert len(files(target)) == 1


def test_empty_batch_writes_nothing(tmp_path: Path) -> None:
    with JsonWriter(tmp_path) as w:
        w.write(SampleBatch())
    assert w.paths == [] and files(tmp_path) == []


def test_output_that_is_a_file_is_refused(tmp_path: Path) -> None:
    existing = tmp_path / "data.json"
    existing.write_text("{}\n")
    with pytest.raises(OffrlRuntimeError, match="existing file"):
        JsonWriter(existing)
    assert existing.read_text() == "{}\n"


def test_directory_that_cannot_be_created(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("")
    with pytest.raises(OffrlRuntimeError, match="cannot create output directory .*f/sub"):
        JsonWriter(tmp_path / "f" / "sub")


def test_directory_that_cannot_be_written(tmp_path: Path, monkeypatch) -> None:
    def denied(**kwargs: Any) -> Any:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(json_writer.tempfile, "TemporaryFile", denied)
    with pytest.raises(OffrlRuntimeError, match="cannot write to output directory.*Permission"):
        JsonWriter(tmp_path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only directories")
def test_read_only_directory_for_real(tmp_path: Path) -> None:
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(OffrlRuntimeError, match="cannot write"):
            JsonWriter(tmp_path)
    finally:
        tmp_path.chmod(0o700)


@pytest.mark.parametrize("value", [0, -1, 1.5, "5000000", True, None])
def test_invalid_max_file_size(tmp_path: Path, value: Any) -> None:
    with pytest.raises(ConfigError, match="output_max_file_size"):
        JsonWriter(tmp_path, max_file_size=value)


@pytest.mark.parametrize(
    "kwargs,key",
    [
        ({"compress_columns": "obs"}, "output_compress_columns"),
        ({"compress_columns": ["infos"]}, "output_compress_columns"),
        ({"codec": "pickle"}, "output_codec"),
        ({"worker_index": -1}, "worker_index"),
    ],
)
def test_invalid_options(tmp_path: Path, kwargs: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        JsonWriter(tmp_path, **kwargs)


def test_plain_lists_and_multi_agent_option(tmp_path: Path) -> None:
    with JsonWriter(tmp_path, compress_columns=[], multi_agent=True) as w:
        w.write(batch(1))
    record = json.loads(Path(w.paths[0]).read_bytes())
    assert record["type"] == "MultiAgentBatch"
    assert record["policy_batches"]["default_policy"]["obs"] == [[1.0] * 4] * 4


def test_file_url_is_a_local_path(tmp_path: Path) -> None:
    with JsonWriter(f"file://{tmp_path}/out") as w:
        w.write(batch(1))
    assert [tags(p) for p in files(tmp_path / "out")] == [[1]]


@pytest.fixture
def memory_dir() -> Any:
    root = f"memory://offrl-test-{uuid.uuid4().hex}"
    yield root
    fs = fsspec.filesystem("memory")
    if fs.exists(root):
        fs.rm(root, recursive=True)


def test_memory_url_rotation_and_collisions(memory_dir: str, fixed_stamp: str) -> None:
    fs = fsspec.filesystem("memory")
    with JsonWriter(memory_dir, max_file_size=1) as a, JsonWriter(memory_dir) as b:
        a.write(batch(1))
        b.write(batch(2))
        a.write(batch(3))
        line = fs.cat(a.paths[0])
        assert json.loads(line)["t"][0] == 1  # visible before close
    names = sorted(p.rsplit("/", 1)[-1] for p in fs.ls(memory_dir, detail=False))
    assert names == [
        f"output-{fixed_stamp}-1_worker-0_0.json",
        f"output-{fixed_stamp}_worker-0_0.json",
        f"output-{fixed_stamp}_worker-0_1.json",
    ]
    assert a.paths == [f"{memory_dir}/{names[1]}", f"{memory_dir}/{names[2]}"]
    assert [json.loads(fs.cat(p))["t"][0] for p in (*a.paths, *b.paths)] == [1, 3, 2]


def complete_batch(tag: int, n: int) -> SampleBatch:
    """A batch with the columns a reader requires (dones, ...) and big episode ids."""
    b = batch(tag, n)
    b["new_obs"] = b["obs"] + np.float32(0.1)
    b["dones"] = np.arange(n) == n - 1
    b["terminateds"] = b["dones"].copy()
    b["truncateds"] = np.zeros(n, dtype=bool)
    b["eps_id"] = np.full(n, 2**60 + tag, dtype=np.int64)
    return b


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"compress_columns": []},
        {"codec": "rllib"},
        {"multi_agent": True, "compress_columns": ["obs", "rewards"]},
    ],
)
def test_files_read_back_through_the_reader_decoder(tmp_path: Path, kwargs: dict) -> None:
    from offrl.io.decode import decode_record

    written = [complete_batch(1, 3), complete_batch(2, 7)]
    with JsonWriter(tmp_path, **kwargs) as w:
        for b in written:
            w.write(b)
    lines = Path(w.paths[0]).read_bytes().splitlines()
    for lineno, (line, want) in enumerate(zip(lines, written, strict=True), 1):
        got = decode_record(line, path=w.paths[0], lineno=lineno)
        for name in want:
            assert got[name].dtype == want[name].dtype, name
            assert got[name].tobytes() == want[name].tobytes(), name


def test_unencodable_batch_is_a_runtime_error_and_writes_nothing(tmp_path: Path) -> None:
    with JsonWriter(tmp_path) as w:
        w.write(batch(1))
        with pytest.raises(OffrlRuntimeError, match="cannot record.*'infos'"):
            w.write(SampleBatch(infos=[{"env": object()}]))
        w.write(batch(2))  # the writer is still usable
    assert tags(Path(w.paths[0])) == [1, 2]


# -- the default output is RLlib's own format ---------------------------------------------


def _rllib_unpack(value: str) -> Any:
    """RLlib's ``unpack`` (rllib/utils/compression.py): base64, LZ4 frame, pickle.

    Only ever called on bytes this test has just written itself.
    """
    import base64
    import pickle

    import lz4.frame

    return pickle.loads(lz4.frame.decompress(base64.b64decode(value)))  # noqa: S301


def _rllib_from_json(line: bytes) -> dict[str, dict[str, np.ndarray]]:
    """What RLlib 2.x's ``JsonReader._from_json`` / ``from_json_data`` does with a line:
    every string column is unpacked, everything else becomes an array; returns
    ``{policy_id: columns}`` (``default_policy`` for a SampleBatch)."""
    record = json.loads(line)
    kind = record.pop("type")
    if kind == "SampleBatch":
        batches = {"default_policy": record}
    elif kind == "MultiAgentBatch":
        batches = record["policy_batches"]
    else:
        raise ValueError(f"RLlib refuses type {kind!r}")
    out = {}
    for pid, cols in batches.items():
        out[pid] = {
            k: _rllib_unpack(v)
            if isinstance(v, (str, bytes))
            else np.asarray(v, dtype=object)
            if k == "infos"
            else np.asarray(v)
            for k, v in cols.items()
        }
    return out


def _full_batch(n: int = 5) -> SampleBatch:
    rng = np.random.default_rng(0)
    return SampleBatch(
        obs=rng.standard_normal((n, 4)).astype(np.float32),
        new_obs=rng.standard_normal((n, 4)).astype(np.float32),
        actions=np.arange(n, dtype=np.int64) % 2,
        rewards=np.ones(n, dtype=np.float32),
        terminateds=np.arange(n) == n - 1,
        truncateds=np.zeros(n, dtype=bool),
        eps_id=np.full(n, 2**60 + 3, dtype=np.int64),
        t=np.arange(n, dtype=np.int64),
        action_prob=np.full(n, 0.5, dtype=np.float32),
        infos=np.array([{} for _ in range(n)], dtype=object),
    )


@pytest.mark.parametrize("multi_agent", [False, True])
def test_default_output_decodes_with_rllibs_own_reader_logic(
    tmp_path: Path, multi_agent: bool
) -> None:
    written = _full_batch()
    with JsonWriter(tmp_path, multi_agent=multi_agent) as w:  # every option at its default
        w.write(written)
    (path,) = files(tmp_path)
    (line,) = path.read_bytes().splitlines()
    assert json.loads(line)["type"] == ("MultiAgentBatch" if multi_agent else "SampleBatch")
    cols = _rllib_from_json(line)["default_policy"]
    for name in ("obs", "new_obs", "actions", "rewards", "terminateds", "eps_id", "t"):
        np.testing.assert_array_equal(cols[name], written[name], err_msg=name)
    assert cols["obs"].dtype == np.float32  # a real array, not a string RLlib cannot use
    np.testing.assert_allclose(cols["action_prob"], 0.5)
    # RLlib's pickle codec, protocol 5, as RLlib 2.60 writes it (tests/data/rllib/)
    import base64

    import lz4.frame

    raw = json.loads(line)
    obs = raw["policy_batches"]["default_policy"]["obs"] if multi_agent else raw["obs"]
    assert lz4.frame.decompress(base64.b64decode(obs))[:2] == b"\x80\x05"


def test_the_npy_codec_is_opt_in_and_not_rllib_readable(tmp_path: Path) -> None:
    with JsonWriter(tmp_path, codec="offrl") as w:
        w.write(_full_batch())
    (path,) = files(tmp_path)
    with pytest.raises(Exception):  # noqa: B017 - RLlib's reader fails on the npy payload
        _rllib_from_json(path.read_bytes().splitlines()[0])


@pytest.mark.slow
def test_default_output_is_read_by_real_rllib(tmp_path: Path) -> None:
    """Runs where ``ray[rllib]`` is installed (CI need not install Ray)."""
    pytest.importorskip("ray.rllib")
    from ray.rllib.offline.json_reader import JsonReader as RllibJsonReader

    written = _full_batch()
    with JsonWriter(tmp_path) as w:
        w.write(written)
    (path,) = files(tmp_path)
    got = RllibJsonReader(str(path)).next()
    np.testing.assert_array_equal(np.asarray(got["obs"]), written["obs"])
    np.testing.assert_array_equal(np.asarray(got["actions"]), written["actions"])


def _truncated_episode(n: int = 6) -> SampleBatch:
    """One episode cut by a time limit, columns in the sampler's order (dones last)."""
    terminateds = np.zeros(n, dtype=bool)
    truncateds = np.arange(n) == n - 1
    return SampleBatch(
        obs=np.arange(n * 3, dtype=np.float32).reshape(n, 3),
        actions=np.linspace(-2, 2, n, dtype=np.float32).reshape(n, 1),
        rewards=np.full(n, -0.5, dtype=np.float32),
        terminateds=terminateds,
        truncateds=truncateds,
        eps_id=np.full(n, 7, dtype=np.int64),
        t=np.arange(n, dtype=np.int64),
        dones=terminateds | truncateds,
    )


@pytest.mark.parametrize("multi_agent", [False, True])
def test_dones_is_written_before_terminateds(tmp_path: Path, multi_agent: bool) -> None:
    # RLlib 2.x's reader renames dones to terminateds key by key: written after
    # terminateds, dones would turn every truncation into a termination.
    with JsonWriter(tmp_path, multi_agent=multi_agent) as w:
        w.write(_truncated_episode())
    (path,) = files(tmp_path)
    record = json.loads(path.read_bytes())
    cols = record["policy_batches"]["default_policy"] if multi_agent else record
    names = [k for k in cols if k != "type"]
    assert names == [
        "obs",
        "actions",
        "rewards",
        "dones",
        "terminateds",
        "truncateds",
        "eps_id",
        "t",
    ]
    assert cols["terminateds"] == [False] * 6 and cols["dones"] == [False] * 5 + [True]


def _real_rllib_batches() -> list[SampleBatch]:
    """Batches offrl read from files RLlib 2.60 wrote: DQN CartPole (3 episodes),
    PPO Pendulum (Box actions, time-limit truncations), PPO FrozenLake (one-hot obs)."""
    dqn = JsonReader(str(RLLIB_260_DQN_CARTPOLE), shuffle_files=False).iter_epoch()
    out = [next(dqn) for _ in range(3)]
    for path in (RLLIB_260_PPO_PENDULUM, RLLIB_260_PPO_FROZENLAKE):
        out.extend(JsonReader(str(path), shuffle_files=False).iter_epoch())
    return [SampleBatch({k: v for k, v in b.items() if k != "new_obs_valid"}) for b in out]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("multi_agent", "options"),
    [(False, {}), (True, {}), (False, {"compress_columns": []})],
    ids=["default", "multi-agent", "plain-lists"],
)
def test_default_output_of_real_rllib_data_is_read_back_by_real_rllib(
    tmp_path: Path, multi_agent: bool, options: dict[str, Any]
) -> None:
    """RLlib 2.60's own JsonReader reads every column offrl wrote (needs ``ray[rllib]``)."""
    pytest.importorskip("ray.rllib")
    from ray.rllib.offline.json_reader import JsonReader as RllibJsonReader

    written = _real_rllib_batches()
    assert sum(int(b["truncateds"].sum()) for b in written) == 20  # Pendulum's time limits
    with JsonWriter(tmp_path, multi_agent=multi_agent, **options) as w:
        for b in written:
            w.write(b)
    (path,) = files(tmp_path)
    got = list(RllibJsonReader(str(path)).read_all_files())
    assert len(got) == len(written)
    for want, batch in zip(written, got, strict=True):
        cols = batch.policy_batches["default_policy"] if multi_agent else batch
        assert cols.count == want.count
        # RLlib renames dones to terminateds; everything else comes back under its name.
        assert set(cols.keys()) == set(want.keys()) - {"dones"}
        for name in ("obs", "new_obs"):  # compressed: the very float32 arrays; plain
            # lists: float64 in RLlib (as from its own files), checked by value below
            expected = np.float64 if "compress_columns" in options else want[name].dtype
            assert cols[name].dtype == expected, name
        for name in set(want.keys()) - {"dones", "infos"}:
            got_col = np.asarray(cols[name])
            # Plain float lists come back float64 in RLlib, as from its own files: the
            # exact widening of offrl's float32 values.
            assert got_col.shape == want[name].shape, name
            np.testing.assert_array_equal(got_col, want[name], err_msg=name)
        assert list(cols["infos"]) == list(want["infos"])
