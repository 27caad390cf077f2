"""Every class of broken compressed column, through the reader and every command that reads.

Each case is one real RLlib 2.60 line (tests/data/rllib) whose ``obs`` column is replaced
by a crafted payload. Whatever the command (``data inspect|validate|convert``, ``train``,
``evaluate-offline``), the user gets exit code 1 and a message naming the file, the line,
the column and what was wrong; never a traceback, never a run that goes on.
"""

from __future__ import annotations

import base64
import json
import pickle
import struct
import tracemalloc
from pathlib import Path
from typing import Any

import lz4.frame
import numpy as np
import pytest
from click.testing import CliRunner

from offrl.cli import main
from offrl.errors import DataFormatError
from offrl.io.codecs import npy_bytes
from offrl.io.json_reader import JsonReader
from tests.shared_data import RLLIB_260_DQN_CARTPOLE


def b64(frame: bytes) -> str:
    return base64.b64encode(frame).decode("ascii")


def lz4_b64(payload: bytes) -> str:
    return b64(lz4.frame.compress(payload))


def _huge_content_size() -> str:
    frame = bytearray(lz4.frame.compress(npy_bytes(np.zeros((3, 4), np.float32))))
    frame[6:14] = struct.pack("<Q", 2**62)  # the frame's stated content size
    return b64(bytes(frame))


def _broken_npy_header() -> str:
    header = b"{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), ".ljust(117) + b"\n"
    payload = b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + bytes(48)
    return lz4_b64(payload)


def _npy_shape_beyond_data() -> str:
    header = b"{'descr': '<f4', 'fortran_order': False, 'shape': (3000000000, 4), }".ljust(117)
    return lz4_b64(b"\x93NUMPY\x01\x00" + (118).to_bytes(2, "little") + header + b"\n" + bytes(48))


# class -> (obs value, what the message must say)
FAILURES: dict[str, tuple[str, str]] = {
    "broken-npy-header": (_broken_npy_header(), "corrupt npy payload"),
    "npy-shape-beyond-data": (_npy_shape_beyond_data(), "needs 48000000000 bytes"),
    "huge-lz4-content-size": (_huge_content_size(), "says it holds 4611686018427387904 bytes"),
    "pickle-of-none": (lz4_b64(pickle.dumps(None, protocol=5)), "decodes to NoneType"),
    "huge-memo-index": (lz4_b64(b"\x80\x02N" + b"r\xff\xff\xff\xff" + b"."), "decodes to None"),
    "truncated-base64": (lz4_b64(npy_bytes(np.zeros(4, np.float32)))[:-3], "not valid base64"),
    "truncated-lz4": (b64(lz4.frame.compress(npy_bytes(np.zeros(4)))[:-9]), "not a valid LZ4"),
    "forbidden-global": (lz4_b64(b"\x80\x02cos\nsystem\nq\x00."), "refused to unpickle os.system"),
    "zero-d-array": (lz4_b64(pickle.dumps(np.array(1.0), protocol=5)), "per-step values"),
    "object-array": (
        lz4_b64(pickle.dumps(np.array([{}, {}], dtype=object), protocol=2)),
        "array of Python objects",
    ),
}


WIDE = {"COLUMNS": "400"}  # rich wraps long lines at the terminal's width


def real_line() -> dict[str, Any]:
    path = next(RLLIB_260_DQN_CARTPOLE.glob("*.json"))
    with path.open("rb") as f:
        return json.loads(f.readline())


def bad_file(tmp_path: Path, case: str) -> Path:
    record = real_line()
    record["policy_batches"]["default_policy"]["obs"] = FAILURES[case][0]
    path = tmp_path / f"{case}.json"
    path.write_text(json.dumps(record) + "\n")
    return path


def assert_clear_failure(res: Any, path: Path, case: str) -> None:
    out = res.output
    assert res.exit_code == 1, out
    assert not isinstance(res.exception, Exception) or isinstance(res.exception, SystemExit), out
    assert "Traceback" not in out
    assert f"{path}:1" in out and "'obs'" in out, out
    assert FAILURES[case][1] in out, out


@pytest.mark.parametrize("case", list(FAILURES))
def test_reader_raises_a_format_error_naming_line_column_and_cause(
    tmp_path: Path, case: str
) -> None:
    path = bad_file(tmp_path, case)
    with pytest.raises(DataFormatError) as e:
        JsonReader(str(path)).next()
    assert type(e.value) is DataFormatError  # a JSON line: not skipped as corrupt
    assert (e.value.path, e.value.line) == (str(path), 1)
    assert e.value.reason.startswith("column 'obs'") and FAILURES[case][1] in e.value.reason


@pytest.mark.parametrize("case", list(FAILURES))
def test_a_crafted_line_costs_memory_in_proportion_to_its_size(tmp_path: Path, case: str) -> None:
    # A 16-byte pickle with memo index 2**32 - 1 took the C unpickler to gigabytes.
    path = bad_file(tmp_path, case)
    tracemalloc.start()
    try:
        with pytest.raises(DataFormatError):
            JsonReader(str(path)).next()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20, peak  # the line is 3 KB; the read buffer 256 KiB


@pytest.mark.parametrize("case", list(FAILURES))
@pytest.mark.parametrize("command", ["inspect", "validate", "convert"])
def test_data_commands_exit_1_with_the_cause(tmp_path: Path, case: str, command: str) -> None:
    path = bad_file(tmp_path, case)
    extra = [str(tmp_path / "out")] if command == "convert" else []
    res = CliRunner().invoke(main, ["data", command, "-q", str(path), *extra], env=WIDE)
    assert_clear_failure(res, path, case)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    results = tmp_path_factory.mktemp("results")
    res = CliRunner().invoke(
        main,
        [
            *("train", "--run", "PG", "--env", "CartPole-v1", "-q", "--checkpoint-at-end"),
            *("--local-dir", str(results), "--stop", '{"training_iteration": 1}'),
            *("--config", '{"train_batch_size": 50, "model": {"fcnet_hiddens": [8]}}'),
        ],
    )
    assert res.exit_code == 0, res.output
    return Path(json.loads(res.stdout)["logdir"]) / "checkpoint_000001"


def _train(tmp_path: Path, path: Path) -> Any:
    config = {"input": str(path), "learning_starts": 1, "timesteps_per_iteration": 20}
    return CliRunner().invoke(
        main,
        [
            *("train", "--run", "DQN", "--env", "CartPole-v1", "-q"),
            *("--local-dir", str(tmp_path / "r"), "--stop", '{"training_iteration": 1}'),
            *("--config", json.dumps(config)),
        ],
        env=WIDE,
    )


def _evaluate(checkpoint: Path, path: Path) -> Any:
    args = ["evaluate-offline", str(checkpoint), "--input", str(path), "-q"]
    return CliRunner().invoke(main, args, env=WIDE)


@pytest.mark.parametrize("case", ["pickle-of-none", "huge-lz4-content-size"])
def test_train_and_evaluate_offline_exit_1_with_the_cause(
    tmp_path: Path, checkpoint: Path, case: str
) -> None:
    path = bad_file(tmp_path, case)
    assert_clear_failure(_train(tmp_path, path), path, case)
    assert_clear_failure(_evaluate(checkpoint, path), path, case)


@pytest.mark.slow
@pytest.mark.parametrize("case", list(FAILURES))
def test_train_and_evaluate_offline_exit_1_for_every_class(
    tmp_path: Path, checkpoint: Path, case: str
) -> None:
    path = bad_file(tmp_path, case)
    assert_clear_failure(_train(tmp_path, path), path, case)
    assert_clear_failure(_evaluate(checkpoint, path), path, case)
