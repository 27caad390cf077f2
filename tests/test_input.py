"""make_input_reader: paths build a JsonReader, "module:Class" builds the user's reader."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from rllib_variants import cartpole_columns, sample_batch_record, write_jsonl

from offrl.config import CommonConfig
from offrl.errors import ConfigError, OffrlRuntimeError
from offrl.io.decode import ALWAYS_READ
from offrl.io.input import make_input_reader
from offrl.io.json_reader import JsonReader
from offrl.io.specs import InputReader, check_file_input_config, is_class_spec, reads_files

USER_MODULE = """
import numpy as np
from offrl.batch import SampleBatch

class ConstantReader:
    def __init__(self, rows=2, reward=1.0):
        self.rows, self.reward = rows, reward

    def next(self):
        n = self.rows
        return SampleBatch(obs=np.zeros((n, 4), np.float32), actions=np.zeros(n, np.int64),
                           rewards=np.full(n, self.reward, np.float32))

class NoNext:
    def __init__(self):
        pass

class Echo:
    def __init__(self, columns, storage_options):
        self.columns, self.storage_options = columns, storage_options

    def next(self):
        raise NotImplementedError
"""


@pytest.fixture
def user_module(tmp_path: Path) -> Iterator[str]:
    (tmp_path / "my_readers_for_test.py").write_text(USER_MODULE)
    sys.path.insert(0, str(tmp_path))
    yield "my_readers_for_test"
    sys.path.remove(str(tmp_path))
    sys.modules.pop("my_readers_for_test", None)


def test_path_gives_json_reader_for_its_shard(tmp_path: Path) -> None:
    for i in range(4):
        write_jsonl(tmp_path / f"{i}.json", [sample_batch_record(cartpole_columns(2, eps_id=i))])
    reader = make_input_reader(
        str(tmp_path), config=CommonConfig(), seed=0, worker_index=1, num_workers=2
    )
    assert isinstance(reader, JsonReader) and isinstance(reader, InputReader)
    assert [p for p, _, _ in reader.shard] == [str(tmp_path / "1.json"), str(tmp_path / "3.json")]


def test_list_spec(tmp_path: Path) -> None:
    a = write_jsonl(tmp_path / "a.json", [sample_batch_record(cartpole_columns(2))])
    reader = make_input_reader([str(a)], config=CommonConfig(), seed=None)
    assert reader.next().count == 2


def test_missing_path_is_runtime_error(tmp_path: Path) -> None:
    with pytest.raises(OffrlRuntimeError, match="no input files found"):
        make_input_reader(str(tmp_path / "nope"), config=CommonConfig(), seed=0)


def test_class_spec_built_with_input_config(user_module: str) -> None:
    config = CommonConfig(input_config={"rows": 5, "reward": 2.0})
    reader = make_input_reader(f"{user_module}:ConstantReader", config=config, seed=0)
    batch = reader.next()
    assert batch.count == 5 and batch["rewards"].tolist() == [2.0] * 5


def test_class_spec_errors_are_config_errors(user_module: str) -> None:
    with pytest.raises(ConfigError, match="cannot import module 'no_such_mod_xyz'"):
        make_input_reader("no_such_mod_xyz:Reader", config=CommonConfig(), seed=0)
    with pytest.raises(ConfigError, match="has no 'Missing'"):
        make_input_reader(f"{user_module}:Missing", config=CommonConfig(), seed=0)
    with pytest.raises(ConfigError, match=r"has no next\(\) method"):
        make_input_reader(f"{user_module}:NoNext", config=CommonConfig(), seed=0)
    bad = CommonConfig(input_config={"colour": "red"})
    with pytest.raises(ConfigError, match="cannot construct ConstantReader"):
        make_input_reader(f"{user_module}:ConstantReader", config=bad, seed=0)


@pytest.mark.parametrize("spec", ["sampler", {"sampler": 1.0}])
def test_sampler_and_mixes_are_not_handled_here(spec: object) -> None:
    with pytest.raises(ValueError, match="offline inputs only"):
        make_input_reader(spec, config=CommonConfig(), seed=0)  # type: ignore[arg-type]


def test_is_class_spec(tmp_path: Path) -> None:
    assert is_class_spec("pkg.mod:Reader")
    assert not is_class_spec("s3://bucket/x")
    assert not is_class_spec("/data/x.json")
    assert not is_class_spec("data/*.json")


# -- input_config.columns -------------------------------------------------------------


def test_input_config_columns_reach_the_json_reader(tmp_path: Path) -> None:
    cols = cartpole_columns(3)
    cols["action_prob"] = [0.5, 0.5, 0.5]
    write_jsonl(tmp_path / "a.json", [sample_batch_record(cols)])

    def columns_read(input_config: dict[str, object]) -> set[str]:
        config = CommonConfig(input_config=input_config)
        return set(make_input_reader(str(tmp_path), config=config, seed=0).next().keys())

    everything = columns_read({})
    assert {"infos", "action_prob"} <= everything
    assert columns_read({"columns": None}) == everything
    projected = columns_read({"columns": ["action_prob", "no_such_column"]})
    assert projected == (everything & ALWAYS_READ) | {"action_prob"}
    assert columns_read({"columns": []}) == everything & ALWAYS_READ
    assert "infos" not in projected


@pytest.mark.parametrize(
    "columns",
    ["obs", ["obs", 3], {"obs": True}, 5, [["obs"]], ("obs", "actions"), [None]],
    ids=repr,
)
def test_input_config_columns_not_a_list_of_names_is_a_config_error(
    tmp_path: Path, columns: object
) -> None:
    write_jsonl(tmp_path / "a.json", [sample_batch_record(cartpole_columns(2))])
    config = CommonConfig(input_config={"columns": columns})
    with pytest.raises(ConfigError, match=r"input_config\.columns") as e:
        make_input_reader(str(tmp_path), config=config, seed=0)
    assert repr(columns) in str(e.value)


# -- which inputs read files, and their input_config ------------------------------------


@pytest.mark.parametrize(
    "spec",
    [
        "/data/x.json",
        "data/*.json",
        "s3://bucket/prefix",
        "memory://x/a.json",
        "relative_dir",
        ["/data/a.json", "/data/b.json"],
        ["pkg.mod:Reader"],  # a list is always files (make_input_reader builds a JsonReader)
        [],
        {"sampler": 0.5, "/data/x.json": 0.5},
        {"pkg.mod:Reader": 0.5, "s3://bucket/x": 0.5},
        {"/data/x.json": 1.0},
    ],
    ids=repr,
)
def test_reads_files_for_paths_lists_and_mixes_with_a_path(spec: object) -> None:
    assert reads_files(spec)


@pytest.mark.parametrize(
    "spec",
    [
        "sampler",
        "pkg.mod:Reader",
        "my_readers_for_test:ConstantReader",
        {"sampler": 1.0},
        {"sampler": 0.5, "pkg.mod:Reader": 0.5},
        {},
        None,
        3,
    ],
    ids=repr,
)
def test_reads_files_is_false_for_the_sampler_and_class_specs(spec: object) -> None:
    assert not reads_files(spec)


def test_reads_files_for_an_existing_path_that_looks_like_a_class_spec(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert not reads_files("mod:Reader")
    (tmp_path / "mod:Reader").write_text("")
    assert reads_files("mod:Reader")  # an existing path is a path (is_class_spec)


@pytest.mark.parametrize(
    "input_config",
    [
        {},
        {"columns": None, "storage_options": None},
        {"columns": [], "storage_options": {}},
        {"columns": ["obs", "q_values"], "storage_options": {"anon": True}},
        {"other_key": object()},  # not checked here
    ],
    ids=repr,
)
def test_check_file_input_config_accepts_names_and_an_object(
    input_config: dict[str, object],
) -> None:
    check_file_input_config(input_config)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("columns", "obs"),
        ("columns", ["obs", 3]),
        ("columns", ("obs",)),
        ("columns", {"obs": True}),
        ("columns", 5),
        ("columns", [["obs"]]),
        ("storage_options", "anon"),
        ("storage_options", ["anon", True]),
        ("storage_options", 5),
        ("storage_options", True),
    ],
    ids=repr,
)
def test_check_file_input_config_rejects_wrong_types(key: str, value: object) -> None:
    with pytest.raises(ConfigError, match=rf"input_config\.{key} must be") as e:
        check_file_input_config({key: value})
    assert repr(value) in str(e.value)
    assert e.value.exit_code == 2


def test_class_spec_reader_gets_any_columns_and_storage_options(user_module: str) -> None:
    """A user's reader is not a file reader: its keyword arguments are its own business."""
    input_config = {"columns": "anything", "storage_options": 5}
    config = CommonConfig(input=f"{user_module}:Echo", input_config=input_config)
    config.validate()  # not checked as a file input's
    reader = make_input_reader(config.input, config=config, seed=0)
    assert (reader.columns, reader.storage_options) == ("anything", 5)  # type: ignore[attr-defined]
