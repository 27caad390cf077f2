"""make_output_writer: the `output` config key, user writers, close_output."""

from __future__ import annotations

import base64
import json
import textwrap
from pathlib import Path
from typing import Any

import fsspec
import lz4.frame
import numpy as np
import pytest

from offrl.batch import SampleBatch
from offrl.config import CommonConfig, from_dict
from offrl.errors import ConfigError
from offrl.io.json_writer import JsonWriter
from offrl.io.output import close_output, make_output_writer
from offrl.io.specs import OutputWriter, is_class_spec


def config(**keys: Any) -> CommonConfig:
    return from_dict(CommonConfig, keys)


def batch() -> SampleBatch:
    return SampleBatch(obs=np.ones((3, 4), np.float32), actions=np.array([0, 1, 0]))


def test_none_records_nothing(tmp_path: Path) -> None:
    assert make_output_writer(None, logdir=tmp_path, worker_index=0, config=config()) is None


def test_logdir_writes_into_the_run_directory(tmp_path: Path) -> None:
    writer = make_output_writer("logdir", logdir=tmp_path, worker_index=2, config=config())
    assert isinstance(writer, JsonWriter) and isinstance(writer, OutputWriter)
    writer.write(batch())
    close_output(writer)
    (path,) = tmp_path.glob("output-*_worker-2_0.json")
    assert json.loads(path.read_bytes())["actions"] == [0, 1, 0]


def test_path_uses_the_output_config_keys(tmp_path: Path) -> None:
    cfg = config(
        output_max_file_size=1000,
        output_compress_columns=["obs"],
        output_codec="rllib",
        output_multi_agent=True,
    )
    out = tmp_path / "out"
    writer = make_output_writer(str(out), logdir=tmp_path, worker_index=1, config=cfg)
    assert isinstance(writer, JsonWriter)
    assert writer.max_file_size == 1000 and writer.compress_columns == ("obs",)
    writer.write(batch())
    close_output(writer)
    (path,) = out.glob("output-*_worker-1_0.json")
    record = json.loads(path.read_bytes())
    obs = record["policy_batches"]["default_policy"]["obs"]
    assert lz4.frame.decompress(base64.b64decode(obs))[:1] == b"\x80"  # RLlib's pickle codec


def test_uri_gets_storage_options(tmp_path: Path) -> None:
    cfg = config(output_config={"storage_options": {"skip_instance_cache": True}})
    writer = make_output_writer(
        "memory://offrl-output-test", logdir=tmp_path, worker_index=0, config=cfg
    )
    assert isinstance(writer, JsonWriter)
    writer.write(batch())
    close_output(writer)
    assert writer.paths[0].startswith("memory://offrl-output-test/output-")
    fsspec.filesystem("memory").rm("memory://offrl-output-test", recursive=True)


def test_unknown_output_config_key_for_json_writer(tmp_path: Path) -> None:
    cfg = config(output_config={"compression": "gzip"})
    with pytest.raises(ConfigError, match="compression.*storage_options"):
        make_output_writer(str(tmp_path), logdir=tmp_path, worker_index=0, config=cfg)


def test_unknown_compress_column_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="\"obz\".*did you mean 'obs'"):
        config(output_compress_columns=["obz"])


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A user's module on sys.path with a good and a bad writer class."""
    name = f"user_writers_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(
        textwrap.dedent(
            """
            class Recorder:
                def __init__(self, tag):
                    self.tag, self.batches, self.closed = tag, [], False
                def write(self, batch):
                    self.batches.append(batch)
                def close(self):
                    self.closed = True

            class NoWrite:
                pass
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def test_user_class_gets_output_config(tmp_path: Path, user_module: str) -> None:
    cfg = config(output_config={"tag": "exp1"})
    writer: Any = make_output_writer(
        f"{user_module}:Recorder", logdir=tmp_path, worker_index=0, config=cfg
    )
    assert writer.tag == "exp1"
    b = batch()
    writer.write(b)
    assert writer.batches == [b]
    close_output(writer)
    assert writer.closed


@pytest.mark.parametrize(
    "ref,match",
    [
        ("no_such_module_xyz:Writer", "cannot import module 'no_such_module_xyz'"),
        ("{mod}:Missing", "has no 'Missing'"),
        ("{mod}:NoWrite", "no write\\(batch\\) method"),
    ],
)
def test_bad_user_class(tmp_path: Path, user_module: str, ref: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        make_output_writer(
            ref.format(mod=user_module), logdir=tmp_path, worker_index=0, config=config()
        )


def test_user_class_with_wrong_output_config(tmp_path: Path, user_module: str) -> None:
    cfg = config(output_config={"colour": "red"})
    with pytest.raises(ConfigError, match="Recorder.*colour"):
        make_output_writer(f"{user_module}:Recorder", logdir=tmp_path, worker_index=0, config=cfg)


def test_class_refs_are_told_apart_from_paths() -> None:
    assert is_class_spec("my_pkg.writers:S3Writer")
    assert not is_class_spec("/tmp/out")
    assert not is_class_spec("out")
    assert not is_class_spec("s3://bucket/x:y")
    assert not is_class_spec("./a:b")


def test_close_output_tolerates_writers_without_close() -> None:
    class Bare:
        def write(self, batch: SampleBatch) -> None:
            pass

    close_output(Bare())
    close_output(None)
