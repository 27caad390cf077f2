"""JsonReader: epochs, seeds, shards, corrupt/truncated lines, bad files, metrics."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import pytest
from rllib_variants import (
    cartpole_columns,
    line,
    multi_agent_record,
    rllib_column,
    sample_batch_record,
    write_jsonl,
    zero_d_columns,
)

from offrl.batch import SampleBatch
from offrl.errors import DataFormatError
from offrl.io.codecs import encode_column
from offrl.io.decode import ALWAYS_READ, CorruptLineError, decode_record
from offrl.io.json_reader import JsonReader, plan_shard
from tests.shared_data import (
    RLLIB_260_DQN_CARTPOLE,
    RLLIB_260_PPO_FROZENLAKE,
    RLLIB_260_PPO_PENDULUM,
    RLLIB_FIXTURE,
)


def make_dataset(root: Path, n_files: int = 4, records_per_file: int = 3) -> dict[int, int]:
    """Files whose every record is one episode with a unique eps_id; returns eps_id -> rows."""
    sizes: dict[int, int] = {}
    for f in range(n_files):
        recs = []
        for r in range(records_per_file):
            eps, n = f * 100 + r, 2 + (f + r) % 4
            sizes[eps] = n
            recs.append(sample_batch_record(cartpole_columns(n, eps_id=eps, seed=eps)))
        write_jsonl(root / f"part-{f}.json", recs)
    return sizes


def eps_of(batch: object) -> int:
    return int(batch["eps_id"][0])  # type: ignore[index]


def test_every_row_once_per_epoch_then_next_epoch(tmp_path: Path) -> None:
    sizes = make_dataset(tmp_path)
    reader = JsonReader(str(tmp_path), seed=3)
    seen = Counter(eps_of(reader.next()) for _ in range(len(sizes)))
    assert seen == Counter(dict.fromkeys(sizes, 1))
    m = reader.metrics()
    assert m["epoch"] == 0 and m["rows_read"] == sum(sizes.values()) and m["files"] == 4
    assert m["bytes_read"] == sum(p.stat().st_size for p in tmp_path.iterdir())
    second = Counter(eps_of(reader.next()) for _ in range(len(sizes)))
    assert second == seen
    assert reader.metrics()["epoch"] == 1


def test_same_seed_same_order_and_epochs_reshuffle(tmp_path: Path) -> None:
    make_dataset(tmp_path, n_files=6, records_per_file=1)

    def order(seed: int) -> list[int]:
        r = JsonReader(str(tmp_path), seed=seed)
        return [eps_of(r.next()) for _ in range(6 * 4)]

    a, b = order(7), order(7)
    assert a == b
    epochs = [tuple(a[i : i + 6]) for i in range(0, 24, 6)]
    assert all(sorted(e) == [0, 100, 200, 300, 400, 500] for e in epochs)
    assert len(set(epochs)) > 1  # files reshuffled between epochs
    assert order(8) != a


def test_lines_within_a_file_keep_order(tmp_path: Path) -> None:
    make_dataset(tmp_path, n_files=1, records_per_file=5)
    r = JsonReader(str(tmp_path), seed=0)
    assert [eps_of(r.next()) for _ in range(5)] == [0, 1, 2, 3, 4]


def test_shuffle_off_reads_sorted(tmp_path: Path) -> None:
    make_dataset(tmp_path, n_files=3, records_per_file=1)
    r = JsonReader(str(tmp_path), shuffle_files=False)
    assert [eps_of(r.next()) for _ in range(6)] == [0, 100, 200, 0, 100, 200]


@pytest.mark.parametrize("n_files,n_workers", [(5, 2), (4, 4), (2, 5), (1, 3)])
def test_shards_cover_every_record_once(tmp_path: Path, n_files: int, n_workers: int) -> None:
    sizes = make_dataset(tmp_path, n_files=n_files, records_per_file=3)
    seen: Counter[int] = Counter()
    for w in range(n_workers):
        r = JsonReader(str(tmp_path), seed=1, worker_index=w, num_workers=n_workers)
        seen.update(eps_of(b) for b in r.iter_epoch())
    assert seen == Counter(dict.fromkeys(sizes, 1))


def test_plan_shard_files_round_robin() -> None:
    files = ["a", "b", "c", "d", "e"]
    assert plan_shard(files, 1, 2) == [("b", 1, 0), ("d", 1, 0)]
    assert plan_shard(["a", "b"], 4, 5) == [("a", 3, 2)]  # workers 0, 2, 4 share "a"
    with pytest.raises(ValueError, match="worker_index"):
        plan_shard(files, 2, 2)


def test_worker_with_no_records_is_an_error_not_a_hang(tmp_path: Path) -> None:
    make_dataset(tmp_path, n_files=1, records_per_file=2)
    r = JsonReader(str(tmp_path), worker_index=2, num_workers=3)
    with pytest.raises(DataFormatError, match="no rows"):
        r.next()


def test_truncated_last_line_and_garbage_line_skipped_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    good = [line(sample_batch_record(cartpole_columns(3, eps_id=i))) for i in range(3)]
    path = tmp_path / "crashed.json"
    path.write_bytes(good[0] + b"\x00\x13garbage here\n" + b"\n" + good[1] + good[2][:50])
    reader = JsonReader(str(path), seed=0)
    with caplog.at_level(logging.WARNING, logger="offrl"):
        got = [eps_of(b) for b in reader.iter_epoch()]
    assert got == [0, 1]
    assert reader.metrics()["num_corrupt_lines_skipped"] == 2
    assert reader.metrics()["rows_read"] == 6
    text = caplog.text
    assert f"{path}:2" in text and f"{path}:5" in text  # blank line 3 is not corrupt


def test_corrupt_line_counted_and_reported_once_across_epochs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    good = line(sample_batch_record(cartpole_columns(3, eps_id=1)))
    path = tmp_path / "cut.json"
    path.write_bytes(good + good[:40])
    reader = JsonReader(str(path), seed=0)
    with caplog.at_level(logging.WARNING, logger="offrl"):
        for _ in range(3):  # three epochs, one record each
            assert reader.next().count == 3
        reader.next()
    assert reader.metrics()["epoch"] == 3
    assert reader.metrics()["num_corrupt_lines_skipped"] == 1
    assert caplog.text.count(f"{path}:2") == 1


def test_binary_garbage_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "garbage.json"
    path.write_bytes(np.random.default_rng(0).bytes(3000).replace(b"\n", b"x") + b"\n\xff\x00")
    with pytest.raises(DataFormatError, match="no valid JSON record in the file"):
        JsonReader(str(path)).next()


def test_empty_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "empty.json").write_bytes(b"")
    with pytest.raises(DataFormatError, match="empty.json: file is empty"):
        JsonReader(str(tmp_path)).next()


def test_format_error_is_not_skipped(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "x.json", [{"type": "Episode", "obs": []}])
    with pytest.raises(DataFormatError, match=r"x\.json:1: unknown record"):
        JsonReader(str(path)).next()


def test_missing_new_obs_counted_and_warned_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    recs = []
    for i in range(2):
        cols = cartpole_columns(4, eps_id=i)
        del cols["new_obs"]
        cols["dones"] = [False] * 4  # fragment ends mid-episode: last row unusable
        recs.append(sample_batch_record(cols))
    path = write_jsonl(tmp_path / "no_new_obs.json", recs)
    reader = JsonReader(str(path))
    with caplog.at_level(logging.WARNING, logger="offrl"):
        batches = list(reader.iter_epoch())
    assert [b["new_obs_valid"].tolist() for b in batches] == [[True, True, True, False]] * 2
    m = reader.metrics()
    assert m["num_rows_new_obs_rebuilt"] == 8 and m["num_rows_new_obs_invalid"] == 2
    assert caplog.text.count("has no 'new_obs' column") == 1


def test_compressed_and_plain_files_read_the_same(tmp_path: Path) -> None:
    cols = cartpole_columns(5)
    comp = {**cols}
    comp["obs"] = encode_column(np.asarray(cols["obs"], np.float32), "rllib")
    comp["new_obs"] = encode_column(np.asarray(cols["new_obs"], np.float32), "offrl")
    write_jsonl(tmp_path / "a.json", [sample_batch_record(cols)])
    write_jsonl(tmp_path / "b.json", [sample_batch_record(comp)])
    a, b = (next(JsonReader(str(tmp_path / n)).iter_epoch()) for n in ("a.json", "b.json"))
    for k in a:
        assert a[k].tolist() == b[k].tolist(), k


def test_reads_memory_uri(tmp_path: Path) -> None:
    fs = fsspec.filesystem("memory")
    fs.pipe("/offrl-test-reader/d/1.json", line(sample_batch_record(cartpole_columns(4))))
    try:
        reader = JsonReader("memory:///offrl-test-reader/d", seed=0)
        assert reader.next().count == 4
        assert reader.metrics()["bytes_read"] > 0
    finally:
        fs.rm("/offrl-test-reader", recursive=True)


def test_large_file_streams_with_bounded_reads(tmp_path: Path) -> None:
    # Each next() holds one record and at most one 256 KiB read: the file is streamed, not loaded.
    path = tmp_path / "many.json"
    one = line(sample_batch_record(cartpole_columns(2)))
    path.write_bytes(one * 2000)
    reader = JsonReader(str(path))
    reader.next()
    assert reader.metrics()["bytes_read"] == len(one)
    reader.close()


def test_a_new_file_cut_off_in_its_first_record_is_skipped_not_an_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # kill -9 right after rotation: the new file holds half of one line and nothing else
    sizes = make_dataset(tmp_path, n_files=2, records_per_file=2)
    whole = line(sample_batch_record(cartpole_columns(5, eps_id=999, seed=9)))
    (tmp_path / "part-9.json").write_bytes(whole[: len(whole) // 2])
    reader = JsonReader(str(tmp_path), seed=0)
    with caplog.at_level(logging.WARNING, logger="offrl"):
        seen = Counter(eps_of(reader.next()) for _ in range(len(sizes)))
    assert seen == Counter(dict.fromkeys(sizes, 1))
    assert reader.metrics()["num_corrupt_lines_skipped"] == 1
    assert "part-9.json:1" in caplog.text


def test_a_file_of_one_complete_corrupt_line_is_still_an_error(tmp_path: Path) -> None:
    whole = line(sample_batch_record(cartpole_columns(5, eps_id=1, seed=1)))
    (tmp_path / "bad.json").write_bytes(whole[: len(whole) // 2] + b"\n")  # newline: not a cut
    with pytest.raises(DataFormatError, match="no valid JSON record in the file"):
        JsonReader(str(tmp_path)).next()


# -- column projection ----------------------------------------------------------------

PROJECTIONS = [
    ["obs"],
    ["weights", "no_such_column"],
    ["infos", "action_prob", "q_values"],
    [],
]


def _wide_columns(n: int, eps: int) -> dict[str, Any]:
    """cartpole_columns plus the columns RLlib adds, which a projection skips."""
    cols = cartpole_columns(n, eps_id=eps, seed=eps)
    rng = np.random.default_rng(eps + 1000)
    cols["action_prob"] = rng.uniform(size=n).round(4).tolist()
    cols["q_values"] = rng.normal(size=(n, 2)).round(4).tolist()
    cols["weights"] = [1.0] * n
    cols["agent_index"] = [0] * n
    return cols


def _compress(cols: dict[str, Any], codec: str) -> dict[str, Any]:
    out = dict(cols)
    out["obs"] = encode_column(np.asarray(cols["obs"], np.float32), codec)  # type: ignore[arg-type]
    out["new_obs"] = encode_column(np.asarray(cols["new_obs"], np.float32), codec)  # type: ignore[arg-type]
    out["q_values"] = encode_column(np.asarray(cols["q_values"], np.float32), codec)  # type: ignore[arg-type]
    out["actions"] = encode_column(np.asarray(cols["actions"], np.int64), codec)  # type: ignore[arg-type]
    return out


def _wide_dataset(root: Path, transform: Any = None) -> str:
    for f in range(3):
        recs = []
        for r in range(3):
            cols = _wide_columns(2 + (f + r) % 4, f * 100 + r)
            recs.append(transform(cols) if transform else sample_batch_record(cols))
        write_jsonl(root / f"part-{f}.json", recs)
    return str(root)


def _fallback_only_dataset(root: Path) -> str:
    """Lines only the Python paths decode (NaN/Infinity tokens, b'...'-wrapped columns)."""
    a = _wide_columns(4, 1)
    a["action_prob"][1] = float("nan")  # in a column a projection skips
    b = _wide_columns(3, 2)
    b["rewards"][0] = float("nan")  # in a column every read keeps
    b["q_values"][2][1] = float("inf")
    c = _wide_columns(5, 3)
    c["obs"] = rllib_column(np.asarray(c["obs"], np.float32), wrap=True)
    c["q_values"] = rllib_column(np.asarray(c["q_values"], np.float32), wrap=True)
    d = _wide_columns(2, 4)  # a common line between them
    write_jsonl(root / "fallback.json", [sample_batch_record(x) for x in (a, b, d, c)])
    assert b"NaN" in (root / "fallback.json").read_bytes()
    return str(root)


def _without(cols: dict[str, Any], name: str) -> dict[str, Any]:
    del cols[name]
    return cols


def _no_new_obs(cols: dict[str, Any]) -> dict[str, Any]:
    del cols["new_obs"]
    cols["dones"] = [False] * len(cols["dones"])  # the last row of each record is invalid
    return sample_batch_record(cols)


def _rllib_fixture(root: Path) -> str:
    return str(RLLIB_FIXTURE)


DATASETS: dict[str, Any] = {
    "plain": _wide_dataset,
    "rllib-codec": lambda d: _wide_dataset(d, lambda c: sample_batch_record(_compress(c, "rllib"))),
    "offrl-codec": lambda d: _wide_dataset(d, lambda c: sample_batch_record(_compress(c, "offrl"))),
    "multi-agent": lambda d: _wide_dataset(d, multi_agent_record),
    "no-infos": lambda d: _wide_dataset(d, lambda c: sample_batch_record(_without(c, "infos"))),
    "no-new-obs": lambda d: _wide_dataset(d, _no_new_obs),
    "fallback-only-lines": _fallback_only_dataset,
    "rllib-fixture": _rllib_fixture,
}


def read_with(spec: str, columns: list[str] | None) -> tuple[list[SampleBatch], dict[str, Any]]:
    """Two seeded epochs (same seed: same order)."""
    reader = JsonReader(spec, seed=11, columns=columns)
    per_epoch = sum(1 for _ in reader.iter_epoch())
    batches = [reader.next() for _ in range(2 * per_epoch)]
    return batches, reader.metrics()


def assert_same_column(got: np.ndarray, want: np.ndarray, name: str) -> None:
    assert got.dtype == want.dtype and got.shape == want.shape, name
    if got.dtype == object:
        assert got.tolist() == want.tolist(), name
    else:
        assert np.array_equal(got, want, equal_nan=got.dtype.kind == "f"), name


def assert_projection_of(
    proj: list[SampleBatch], full: list[SampleBatch], columns: list[str]
) -> None:
    assert len(proj) == len(full)
    keep = set(columns) | ALWAYS_READ
    for p, f in zip(proj, full, strict=True):
        assert set(p.keys()) == {k for k in f if k in keep}
        assert p.count == f.count
        for name in p:
            assert_same_column(p[name], f[name], name)


@pytest.mark.parametrize("columns", PROJECTIONS, ids=lambda c: "+".join(c) or "none")
@pytest.mark.parametrize("dataset", list(DATASETS))
def test_projection_reads_the_requested_and_always_read_columns(
    tmp_path: Path, dataset: str, columns: list[str]
) -> None:
    spec = DATASETS[dataset](tmp_path)
    full, full_metrics = read_with(spec, None)  # ground truth: every column
    assert any(k not in ALWAYS_READ for k in full[0])  # something to skip
    proj, metrics = read_with(spec, columns)
    assert_projection_of(proj, full, columns)
    assert "no_such_column" not in proj[0]
    assert metrics == full_metrics


def test_projection_keeps_requested_extra_columns(tmp_path: Path) -> None:
    spec = _wide_dataset(tmp_path, lambda c: sample_batch_record(_compress(c, "rllib")))
    batches, _ = read_with(spec, ["q_values", "infos"])
    b = batches[0]
    assert {"q_values", "infos"} <= set(b.keys())
    assert not {"action_prob", "weights", "agent_index"} & set(b.keys())
    assert b["q_values"].dtype == np.float32 and b["q_values"].shape == (b.count, 2)


def test_projection_still_skips_and_counts_corrupt_lines(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    good = [line(sample_batch_record(_wide_columns(3, i))) for i in range(3)]
    path = tmp_path / "crashed.json"
    path.write_bytes(good[0] + b"\x00\x13garbage here\n" + good[1] + good[2][:200])
    reader = JsonReader(str(path), columns=["obs"])
    with caplog.at_level(logging.WARNING, logger="offrl"):
        got = [eps_of(b) for b in reader.iter_epoch()]
    assert got == [0, 1]
    assert reader.metrics()["num_corrupt_lines_skipped"] == 2
    assert reader.metrics()["rows_read"] == 6
    assert f"{path}:2" in caplog.text and f"{path}:4" in caplog.text


@pytest.mark.parametrize(
    ("column", "bad"),
    [
        ("q_values", b"[[1.0, 2.0], [3.0,]]"),  # trailing comma
        ("weights", b"[1.0, tru, 1.0]"),
        ("action_prob", b"[0.5, 0.5 0.5]"),  # missing comma
        ("infos", b'[{}, {"a" 1}, {}]'),
        ("agent_index", b"[0, 0, 01]"),  # leading zero: not JSON
    ],
)
def test_skipped_column_that_is_not_json_makes_the_line_corrupt(
    tmp_path: Path, column: str, bad: bytes
) -> None:
    cols = _wide_columns(3, 5)
    cols[column] = "PLACEHOLDER"
    broken = line(sample_batch_record(cols)).replace(b'"PLACEHOLDER"', bad)
    good = line(sample_batch_record(_wide_columns(2, 6)))
    path = tmp_path / "bad-skipped.json"
    path.write_bytes(good + broken + good)
    reader = JsonReader(str(path), columns=["obs"])
    got = [eps_of(b) for b in reader.iter_epoch()]
    assert got == [6, 6]
    assert reader.metrics()["num_corrupt_lines_skipped"] == 1
    assert reader.metrics()["rows_read"] == 4


# Columns a projection onto ["obs"] leaves out, broken in ways that are errors when read.
BROKEN_SKIPPED: dict[str, tuple[str, Any]] = {
    "different-length": ("action_prob", [0.5]),
    "corrupt-compressed": ("q_values", "BCJNGgarbage"),
    "float-agent-index": ("agent_index", [0.5, 1.5, 2.5]),
    "ragged": ("q_values", [[1.0, 2.0], [3.0], [4.0, 5.0, 6.0]]),
    "compressed-0d": ("q_values", zero_d_columns()["pickle-float32"]),
}


@pytest.mark.parametrize("case", list(BROKEN_SKIPPED))
def test_broken_skipped_column_is_not_read_but_is_an_error_when_read(
    tmp_path: Path, case: str
) -> None:
    name, value = BROKEN_SKIPPED[case]
    intact = [_wide_columns(3, eps) for eps in range(4)]
    broken = [dict(c) for c in intact]
    broken[2][name] = value  # the third record of one file
    for i in (0, 3):
        broken[i]["q_values"] = encode_column(np.asarray(broken[i]["q_values"], np.float32))
    good = str(write_jsonl(tmp_path / "good" / "a.json", map(sample_batch_record, intact)))
    bad = str(write_jsonl(tmp_path / "bad" / "a.json", map(sample_batch_record, broken)))
    want, want_metrics = read_with(good, ["obs"])
    got, metrics = read_with(bad, ["obs"])
    assert_projection_of(got, want, ["obs"])
    del metrics["bytes_read"], want_metrics["bytes_read"]  # the files differ
    assert metrics == want_metrics
    errors = set()
    for columns in (None, [name]):
        with pytest.raises(DataFormatError) as e:
            read_with(bad, columns)
        assert type(e.value) is DataFormatError, columns
        assert (e.value.path, e.value.line) == (bad, 3), columns
        assert repr(name) in e.value.reason, columns
        errors.add(str(e.value))
    assert len(errors) == 1  # worded alike, whichever projection read it


@pytest.mark.parametrize("columns", ["obs", "", "obs,actions"])
def test_columns_as_one_string_is_a_type_error(tmp_path: Path, columns: str) -> None:
    path = write_jsonl(tmp_path / "a.json", [sample_batch_record(cartpole_columns(2))])
    with pytest.raises(TypeError, match="collection of names"):
        JsonReader(str(path), columns=columns)  # type: ignore[arg-type]
    reader = JsonReader(str(path), columns=(columns,))  # a tuple holding the string is fine
    assert reader.next().count == 2


# -- regressions: lines the removed compiled decoder misread (issue recipes) ------------


def test_line_ending_inside_a_skipped_array_is_corrupt_not_read_past(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The compiled decoder's skip loop ran past this line into the next one (heap overflow).
    recipe = b'{"type":"SampleBatch","x":[' + b"\n" + b'"' + b"z" * (1 << 20) + b"\n"
    good = line(sample_batch_record(_wide_columns(3, 8)))
    path = tmp_path / "recipe.json"
    path.write_bytes(recipe + good)
    with pytest.raises(CorruptLineError):
        decode_record(
            memoryview(recipe)[: recipe.index(b"\n") + 1],
            path="r",
            lineno=1,
            columns=frozenset({"obs"}) | ALWAYS_READ,
        )
    reader = JsonReader(str(path), columns=["obs"])
    with caplog.at_level(logging.WARNING, logger="offrl"):
        got = [eps_of(b) for b in reader.iter_epoch()]
    assert got == [8]
    assert reader.metrics()["num_corrupt_lines_skipped"] == 2
    assert f"skipping corrupt line {path}:1" in caplog.text
    assert f"skipping corrupt line {path}:2" in caplog.text


@pytest.mark.parametrize(
    "junk",
    [b'"BCJNG\\"}', b'"BCJNG\x01\x02raw control bytes"', b'"BCJNG\xff\xfe not utf-8"'],
    ids=["escaped-quote", "control-bytes", "invalid-utf8"],
)
def test_skipped_compressed_looking_string_that_is_not_json_is_corrupt(
    tmp_path: Path, junk: bytes
) -> None:
    # The compiled decoder did not check skipped strings starting with BCJNG.
    body = line(sample_batch_record(_wide_columns(3, 5)))
    broken = body[:-2] + b', "junk": ' + junk + b"}\n"
    good = line(sample_batch_record(_wide_columns(2, 6)))
    path = tmp_path / "junk.json"
    path.write_bytes(good + broken + good)
    reader = JsonReader(str(path), columns=["obs", "actions", "rewards"])
    assert [eps_of(b) for b in reader.iter_epoch()] == [6, 6]
    assert reader.metrics()["num_corrupt_lines_skipped"] == 1


# -- the files RLlib 2.60 itself wrote --------------------------------------------------


def test_reads_rllib_260_dqn_cartpole_file() -> None:
    reader = JsonReader(str(RLLIB_260_DQN_CARTPOLE), shuffle_files=False)
    batches = list(reader.iter_epoch())
    assert len(batches) == 441 and sum(b.count for b in batches) == 21_009
    assert reader.metrics()["num_corrupt_lines_skipped"] == 0
    b = batches[0]
    expected = {
        "obs": (np.float32, (4,)),
        "new_obs": (np.float32, (4,)),
        "actions": (np.int64, ()),
        "rewards": (np.float32, ()),
        "terminateds": (np.bool_, ()),
        "truncateds": (np.bool_, ()),
        "dones": (np.bool_, ()),
        "eps_id": (np.int64, ()),
        "t": (np.int64, ()),
        "q_values": (np.float32, (2,)),
        "action_dist_inputs": (np.float32, (2,)),
        "infos": (np.object_, ()),
    }
    for name, (dtype, row_shape) in expected.items():
        assert b[name].dtype == dtype and b[name].shape == (b.count, *row_shape), name
    for b in batches:  # one episode per line: obs[t + 1] == new_obs[t], t counts up
        assert np.array_equal(b["obs"][1:], b["new_obs"][:-1])
        assert b["t"].tolist() == list(range(b.count)) and len(set(b["eps_id"])) == 1
        assert b["dones"][-1] and not b["dones"][:-1].any()
        assert b["obs"].flags.writeable


def test_reads_rllib_260_ppo_box_actions_and_one_hot_obs() -> None:
    (pendulum,) = JsonReader(str(RLLIB_260_PPO_PENDULUM)).iter_epoch()
    assert pendulum.count == 4000 and pendulum["actions"].dtype == np.float32
    assert pendulum["actions"].shape == (4000, 1) and pendulum["obs"].shape == (4000, 3)
    (lake,) = JsonReader(str(RLLIB_260_PPO_FROZENLAKE)).iter_epoch()
    assert lake.count == 4003 and lake["obs"].dtype == np.float32
    assert lake["obs"].shape == (4003, 16) and (lake["obs"].sum(axis=1) == 1).all()


# RLlib's output_compress_columns: its default, and every numeric column of the PPO files.
_RLLIB_DEFAULT = ["obs", "new_obs"]
_RLLIB_NUMERIC = [*_RLLIB_DEFAULT, "actions", "rewards", "terminateds", "action_dist_inputs"]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("multi_agent", "compress"),
    [(False, _RLLIB_DEFAULT), (True, _RLLIB_DEFAULT), (False, _RLLIB_NUMERIC)],
)
def test_reads_what_real_rllib_writes_as_it_was(
    tmp_path: Path, multi_agent: bool, compress: list[str]
) -> None:
    """RLlib 2.60's own JsonWriter writes batches offrl read from RLlib's files; offrl
    reads them back identically (needs ``ray[rllib]``)."""
    pytest.importorskip("ray.rllib")
    from ray.rllib.offline.json_writer import JsonWriter as RllibJsonWriter
    from ray.rllib.policy.sample_batch import MultiAgentBatch as RllibMultiAgentBatch
    from ray.rllib.policy.sample_batch import SampleBatch as RllibSampleBatch

    dqn = JsonReader(str(RLLIB_260_DQN_CARTPOLE), shuffle_files=False).iter_epoch()
    source = [next(dqn) for _ in range(3)]
    for path in (RLLIB_260_PPO_PENDULUM, RLLIB_260_PPO_FROZENLAKE, RLLIB_FIXTURE):
        source.extend(JsonReader(str(path), shuffle_files=False).iter_epoch())
    writer = RllibJsonWriter(str(tmp_path), compress_columns=compress)
    for b in source:  # as RLlib holds them: without the columns offrl's reader derives
        rllib_batch = RllibSampleBatch(
            {k: v.copy() for k, v in b.items() if k not in ("new_obs_valid", "dones")}
        )
        if multi_agent:
            rllib_batch = RllibMultiAgentBatch({"default_policy": rllib_batch}, b.count)
        writer.write(rllib_batch)
    writer.cur_file.close()
    (written,) = tmp_path.glob("output-*.json")
    assert written.read_text().count("BCJNG") == sum(  # each of those columns compressed
        name in b for b in source for name in compress
    )
    got = list(JsonReader(str(tmp_path), shuffle_files=False).iter_epoch())
    assert len(got) == len(source)
    for want, back in zip(source, got, strict=True):
        assert set(back.keys()) == set(want.keys())
        for name, col in want.items():
            assert back[name].dtype == col.dtype and back[name].shape == col.shape, name
            if name == "infos":
                assert list(back[name]) == list(col)
            else:
                np.testing.assert_array_equal(back[name], col, err_msg=name)
