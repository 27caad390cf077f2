"""The bad-input catalogue: everything a user can type or a file can contain that is wrong.

Each case runs the CLI and checks the exit code (2 usage/config, 1 runtime), that the
message names the culprit, and that no Python traceback reaches the user. Every case runs
in-process (click's CliRunner) in the default tier, and as a real subprocess (``python -m
offrl.cli``) in the slow tier; a few subprocess cases stay in the default tier. docs/reliability.md
lists the same cases as a table.
"""

from __future__ import annotations

import base64
import json
import os
import pickle
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import lz4.frame
import pytest

from tests.clitools import invoke_offrl, run_offrl
from tests.rllib_variants import zero_d_columns
from tests.shared_data import RLLIB_FIXTURE

FIXTURE = RLLIB_FIXTURE

PWNED = "pwned"  # the file (in the test's tmp_path) a pickle payload would create


class Evil:
    """A pickle payload that would create ``path`` when unpickled by plain pickle."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.path}",))


def fixture_records() -> list[dict]:
    return [json.loads(line) for line in FIXTURE.read_text().splitlines() if line.strip()]


def write_lines(path: Path, records: list[dict | str]) -> str:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return str(path)


def b64_lz4(payload: bytes) -> str:
    return base64.b64encode(lz4.frame.compress(payload)).decode("ascii")


# -- data files for the cases (each builder gets the tmp dir, returns an input path) ----------


def empty_file(d: Path) -> str:
    (d / "empty.json").write_text("")
    return str(d / "empty.json")


def binary_garbage(d: Path) -> str:
    (d / "garbage.json").write_bytes(bytes(range(256)) * 20)
    return str(d / "garbage.json")


def json_array_line(d: Path) -> str:
    return write_lines(d / "array.json", ["[1, 2, 3]"])


def unequal_columns(d: Path) -> str:
    rec = fixture_records()[0]
    rec["rewards"] = rec["rewards"][:-3]
    return write_lines(d / "unequal.json", [rec])


def wrong_obs_shape(d: Path) -> str:
    rec = fixture_records()[0]
    rec["obs"] = [o[:3] for o in rec["obs"]]
    rec["new_obs"] = [o[:3] for o in rec["new_obs"]]
    return write_lines(d / "shape.json", [rec])


def action_out_of_range(d: Path) -> str:
    rec = fixture_records()[0]
    rec["actions"][5] = 7
    return write_lines(d / "action.json", [rec])


def nan_rewards(d: Path) -> str:
    rec = fixture_records()[0]
    text = json.dumps(rec).replace('"rewards": [1.0,', '"rewards": [NaN,', 1)
    assert "NaN" in text
    return write_lines(d / "nan.json", [text])


def pyarrow_era(d: Path) -> str:
    rec = fixture_records()[0]
    # An LZ4 frame whose payload is neither npy nor pickle: pyarrow's removed serialize format.
    rec["obs"] = b64_lz4(b"ARROW1\x00\x00" + b"\x00" * 64)
    return write_lines(d / "pyarrow.json", [rec])


def malicious_pickle(d: Path) -> str:
    rec = fixture_records()[0]
    rec["obs"] = b64_lz4(pickle.dumps(Evil(d / PWNED), protocol=2))
    return write_lines(d / "evil.json", [rec])


def zero_d_obs(d: Path) -> str:
    """A compressed obs column whose payload is a scalar (0-d), not per-step values."""
    rec = fixture_records()[0]
    rec["obs"] = zero_d_columns()["pickle-float32"]
    return write_lines(d / "zerod.json", [fixture_records()[1], rec])


def zero_d_extra_column(d: Path) -> str:
    rec = fixture_records()[0]
    rec["q_values"] = zero_d_columns()["npy-float32"]
    return write_lines(d / "zerod-npy.json", [rec])


def truncated_last_line(d: Path) -> str:
    lines = FIXTURE.read_text().splitlines()
    (d / "cut.json").write_text(lines[0] + "\n" + lines[1] + "\n" + lines[2][: len(lines[2]) // 2])
    return str(d / "cut.json")


def two_policies(d: Path) -> str:
    rec = fixture_records()[0]
    cols = {k: v for k, v in rec.items() if k != "type"}
    ma = {"type": "MultiAgentBatch", "count": 56, "policy_batches": {"p1": cols, "p2": cols}}
    return write_lines(d / "ma.json", [ma])


def unknown_type(d: Path) -> str:
    rec = fixture_records()[0]
    rec["type"] = "EpisodeBatch"
    return write_lines(d / "type.json", [rec])


def good_data(d: Path) -> str:
    fixture_records()
    return str(FIXTURE)


def existing_file(d: Path) -> str:
    (d / "taken.json").write_text("keep me\n")
    return str(d / "taken.json")


def corrupt_checkpoint(d: Path) -> str:
    (d / "checkpoint_000001").mkdir()
    (d / "checkpoint_000001" / "state.pt").write_bytes(b"\x80garbage")
    return str(d / "checkpoint_000001")


def unwritable_dir(d: Path) -> str:
    if os.geteuid() == 0:
        # root ignores permission bits; /proc refuses new directories for everyone
        return "/proc/offrl-output"
    ro = d / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    return str(ro / "out")


@dataclass
class Case:
    name: str
    args: list[str]
    code: int
    needles: list[str]
    data: Callable[[Path], str] | None = None  # replaces {data} in args
    extra: dict = field(default_factory=dict)


def pg(config: dict | str, *more: str) -> list[str]:
    text = config if isinstance(config, str) else json.dumps(config)
    return ["train", "--run", "PG", "--env", "CartPole-v1", "--config", text, *more]


def dqn_input(*more: str, **config: object) -> list[str]:
    cfg = {"input": "{data}", "timesteps_per_iteration": 50, "learning_starts": 10, **config}
    return [
        "train",
        "--run",
        "DQN",
        "--env",
        "CartPole-v1",
        "--config",
        json.dumps(cfg),
        "--stop",
        '{"training_iteration": 1}',
        *more,
    ]


CASES = [
    Case("config-invalid-json", pg('{"lr": 0.1,}'), 2, ["--config", "line 1 column"]),
    Case("stop-invalid-json", pg({}, "--stop", '{"timesteps_total": }'), 2, ["--stop", "column"]),
    Case(
        "f-invalid-json",
        ["train", "-f", "{data}"],
        2,
        ["bad-run.json", "line 2"],
        data=lambda d: write_lines(d / "bad-run.json", ['{"run": "PG",\n "env": ,}']),
    ),
    Case("f-missing-file", ["train", "-f", "/nonexistent/run.json"], 2, ["/nonexistent/run.json"]),
    Case("config-not-object", pg("[1, 2]"), 2, ["JSON object"]),
    Case(
        "unknown-config-key",
        pg({"train_bach_size": 10}),
        2,
        ["train_bach_size", "did you mean 'train_batch_size'"],
    ),
    Case("negative-lr", pg({"lr": -0.1}), 2, ["'lr'", "-0.1", "> 0"]),
    Case("batch-size-zero", pg({"train_batch_size": 0}), 2, ["train_batch_size", ">= 1"]),
    Case("gamma-two", pg({"gamma": 2}), 2, ["'gamma'", "<= 1"]),
    Case("wrong-type", pg({"num_envs_per_worker": "4"}), 2, ["num_envs_per_worker", "an integer"]),
    Case("unknown-run", ["train", "--run", "A3C", "--env", "CartPole-v1"], 2, ["A3C", "PG, DQN"]),
    Case(
        "unknown-env",
        ["train", "--run", "PG", "--env", "CartPole-v9"],
        2,
        ["CartPole-v9", "CartPole-v1"],
    ),
    Case("env-not-importable", ["train", "--run", "PG", "--env", "nomodule:Env"], 2, ["nomodule"]),
    Case("unknown-stop-key", pg({}, "--stop", '{"reward": 100}'), 2, ["'reward'", "--stop"]),
    Case("unknown-estimator", pg({"input_evaluation": ["wls"]}), 2, ["wls", "did you mean"]),
    Case(
        "unknown-compress-column",
        pg({"output_compress_columns": ["observations"]}),
        2,
        ["observations", "output_compress_columns"],
    ),
    Case("max-file-size-zero", pg({"output_max_file_size": 0}), 2, ["output_max_file_size"]),
    Case(
        "max-file-size-string",
        pg({"output_max_file_size": "5MB"}),
        2,
        ["output_max_file_size", "an integer"],
    ),
    Case("mix-sums-to-0.7", pg({"input": {"sampler": 0.4, "/tmp/x": 0.3}}), 2, ["0.7"]),
    Case("mix-negative", pg({"input": {"sampler": 1.2, "/tmp/x": -0.2}}), 2, ["-0.2"]),
    Case("input-class-not-importable", pg({"input": "nomodule:Reader"}), 2, ["nomodule"]),
    Case("output-class-not-importable", pg({"output": "nomodule:Writer"}), 2, ["nomodule"]),
    Case(
        "input-matches-nothing",
        dqn_input(),
        1,
        ["/nonexistent/data/*.json"],
        data=lambda d: "/nonexistent/data/*.json",
    ),
    Case("empty-file", dqn_input(), 1, ["empty.json"], data=empty_file),
    Case("binary-garbage", dqn_input(), 1, ["garbage.json"], data=binary_garbage),
    Case("json-array-line", dqn_input(), 1, ["array.json", "1"], data=json_array_line),
    Case("unequal-columns", dqn_input(), 1, ["unequal.json", "rewards"], data=unequal_columns),
    Case(
        "wrong-obs-shape",
        dqn_input(),
        1,
        ["shape.json:1", "'obs'", "(56, 3)", "4"],
        data=wrong_obs_shape,
    ),
    Case("action-out-of-range", dqn_input(), 1, ["actions", "7"], data=action_out_of_range),
    Case("nan-rewards", dqn_input(), 1, ["rewards", "nan.json:1", "non-finite"], data=nan_rewards),
    Case("pyarrow-era-column", dqn_input(), 1, ["pyarrow", "pyarrow.json"], data=pyarrow_era),
    Case("malicious-pickle", dqn_input(), 1, ["evil.json", "refused"], data=malicious_pickle),
    Case(
        "zero-d-compressed-obs",
        dqn_input(),
        1,
        ["zerod.json:2", "column 'obs' must be a list of per-step values"],
        data=zero_d_obs,
    ),
    Case(
        "zero-d-compressed-column",
        dqn_input(),
        1,
        ["zerod-npy.json:1", "column 'q_values' must be a list of per-step values"],
        data=zero_d_extra_column,
    ),
    Case("two-policies", dqn_input(), 1, ["ma.json", "p1"], data=two_policies),
    Case("unknown-record-type", dqn_input(), 1, ["type.json", "EpisodeBatch"], data=unknown_type),
    Case(
        "input-columns-not-a-list",
        dqn_input(input_config={"columns": "obs"}),
        2,
        ["input_config.columns", "'obs'"],
        data=good_data,
    ),
    Case(
        "input-storage-options-not-an-object",
        dqn_input(input_config={"storage_options": "anon"}),
        2,
        ["input_config.storage_options", "'anon'"],
        data=good_data,
    ),
    Case(
        "pg-offline-without-postprocess",
        [
            "train",
            "--run",
            "PG",
            "--env",
            "CartPole-v1",
            "--config",
            '{"input": "{data}"}',
            "--stop",
            '{"training_iteration": 1}',
        ],
        2,
        ["postprocess_inputs"],
        data=good_data,
    ),
    Case(
        "output-is-existing-file",
        pg({"output": "{data}"}, "--stop", '{"training_iteration": 1}'),
        1,
        ["taken.json"],
        data=existing_file,
    ),
    Case(
        "output-unwritable",
        pg({"output": "{data}"}, "--stop", '{"training_iteration": 1}'),
        1,
        ["offrl-output" if os.geteuid() == 0 else "out"],
        data=unwritable_dir,
    ),
    Case(
        "restore-missing", pg({}, "--restore", "/nonexistent/checkpoint_000001"), 2, ["not found"]
    ),
    Case(
        "restore-corrupt",
        pg({}, "--restore", "{data}"),
        1,
        ["corrupt"],
        data=corrupt_checkpoint,
    ),
    Case("negative-seed", pg({}, "--seed", "-1"), 2, ["--seed"]),
    Case("unknown-flag", pg({}, "--stpo", "{}"), 2, ["--stpo"]),
    Case(
        "rollout-missing-checkpoint",
        ["rollout", "/nonexistent/checkpoint_000001"],
        2,
        ["not found"],
    ),
]


def run_cli(args: list[str], tmp: Path, how: str = "in-process") -> subprocess.CompletedProcess:
    if how == "subprocess":
        return run_offrl(args, tmp / "results")
    return invoke_offrl(args, tmp / "results")


# Cases that also run as a real process in the default tier: a config error (exit 2) and a
# runtime error (exit 1), the pickle payload that must not run in any process.
SUBPROCESS_SMOKE = {"unknown-config-key", "malicious-pickle"}
RUNS = [pytest.param(c, "in-process", id=c.name) for c in CASES] + [
    pytest.param(
        c,
        "subprocess",
        id=f"{c.name}-subprocess",
        marks=() if c.name in SUBPROCESS_SMOKE else pytest.mark.slow,
    )
    for c in CASES
]


@pytest.mark.parametrize(("case", "how"), RUNS)
def test_bad_input(case: Case, how: str, tmp_path: Path) -> None:
    data = case.data(tmp_path) if case.data else ""
    args = [a.replace("{data}", data) for a in case.args]
    proc = run_cli(args, tmp_path, how)
    assert proc.returncode == case.code, proc.stderr
    for needle in case.needles:
        assert needle in proc.stderr, f"{needle!r} not in: {proc.stderr}"
    assert "Traceback" not in proc.stderr
    assert proc.stdout.strip() == "" or proc.returncode == 0
    assert not (tmp_path / PWNED).exists(), "a pickle payload ran"
    if case.name == "output-is-existing-file":
        assert (tmp_path / "taken.json").read_text() == "keep me\n"  # never overwritten


@pytest.mark.parametrize("how", ["in-process", pytest.param("subprocess", marks=pytest.mark.slow)])
def test_truncated_last_line_is_skipped_and_counted(
    tmp_path: Path, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    data = truncated_last_line(tmp_path)
    args = [a.replace("{data}", data) for a in dqn_input("-q", timesteps_per_iteration=200)]
    proc = run_cli(args, tmp_path, how)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["num_corrupt_lines_skipped"] == 1
    # the warning names file and line: on stderr in a real process (logging's last-resort
    # handler); in-process pytest's log capture takes it first
    warnings = proc.stderr if how == "subprocess" else caplog.text
    assert "cut.json:3" in warnings


def test_projected_columns_train_offline_dqn(tmp_path: Path) -> None:
    data = good_data(tmp_path)
    columns = ["obs", "new_obs", "actions", "rewards", "terminateds", "truncateds"]
    args = [a.replace("{data}", data) for a in dqn_input("-q", input_config={"columns": columns})]
    proc = run_cli(args, tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["training_iteration"] == 1
    assert result["rows_read"] > 0 and result["num_corrupt_lines_skipped"] == 0
    assert "Traceback" not in proc.stderr


def test_catalogue_has_at_least_30_cases() -> None:
    assert len(CASES) >= 30
