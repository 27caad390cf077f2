"""The `offrl` command line, through click's CliRunner and as a real subprocess."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from rllib_variants import cartpole_columns, sample_batch_record, write_jsonl

from offrl import __version__
from offrl.cli import main
from tests.clitools import run_offrl, start_offrl

FAST_PG = {"train_batch_size": 200, "num_envs_per_worker": 2, "model": {"fcnet_hiddens": [16]}}


def invoke(*args: str) -> tuple[int, str, str]:
    runner = CliRunner()
    res = runner.invoke(main, list(args), catch_exceptions=False)
    return res.exit_code, res.stdout, res.stderr


def train_args(tmp_path: Path, *extra: str, config: dict | None = None) -> list[str]:
    return [
        "train",
        "--run",
        "PG",
        "--env",
        "CartPole-v1",
        "--local-dir",
        str(tmp_path),
        "--config",
        json.dumps(config if config is not None else FAST_PG),
        "-q",
        *extra,
    ]


def test_version() -> None:
    code, out, _ = invoke("--version")
    assert code == 0 and __version__ in out


def test_train_prints_final_result_json_on_stdout(tmp_path: Path) -> None:
    code, out, err = invoke(
        *train_args(tmp_path, "--stop", '{"training_iteration": 2}', "--seed", "3")
    )
    assert code == 0, err
    result = json.loads(out)
    assert result["training_iteration"] == 2
    assert result["timesteps_total"] >= 400
    logdir = Path(result["logdir"])
    assert logdir.parent == tmp_path / "default"
    assert logdir.name.startswith("PG_CartPole-v1_")
    lines = (logdir / "result.json").read_text().splitlines()
    assert [json.loads(x)["training_iteration"] for x in lines] == [1, 2]
    params = json.loads((logdir / "params.json").read_text())
    assert params["seed"] == 3 and params["train_batch_size"] == 200 and params["run"] == "PG"
    assert (logdir / "progress.csv").read_text().startswith(
        "training_iteration,"
    ) or "training_iteration" in (logdir / "progress.csv").read_text().splitlines()[0]


def test_same_seed_same_rewards(tmp_path: Path) -> None:
    outs = []
    for sub in ("a", "b"):
        code, out, err = invoke(
            *train_args(tmp_path / sub, "--stop", '{"training_iteration": 3}', "--seed", "7")
        )
        assert code == 0, err
        rows = (Path(json.loads(out)["logdir"]) / "result.json").read_text().splitlines()
        outs.append(
            [
                (json.loads(r)["episode_reward_mean"], json.loads(r)["info/learner/policy_loss"])
                for r in rows
            ]
        )
    assert outs[0] == outs[1]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--config", '{"lr": -1}'], "'lr'"),
        (["--config", '{"train_batch_size": 0}'], "train_batch_size"),
        (["--config", '{"gamma": 2}'], "gamma"),
        (["--config", '{"lr": "fast"}'], "lr"),
        (["--config", '{"learning_rate": 0.1}'], "did you mean"),
        (["--config", '{"lr": 0.1'], "line 1 column"),
        (["--config", "[1, 2]"], "JSON object"),
        (["--stop", '{"episode_reward_man": 100}'], "did you mean 'episode_reward_mean'"),
        (["--stop", '{"timesteps_total": "x"}'], "must be a number"),
        (["--stop", "{oops}"], "--stop: invalid JSON"),
    ],
)
def test_config_errors_exit_2(tmp_path: Path, args: list[str], needle: str) -> None:
    base = ["train", "--run", "PG", "--env", "CartPole-v1", "--local-dir", str(tmp_path)]
    code, out, err = invoke(*base, *args)
    assert code == 2
    assert needle in err
    assert out == ""
    assert "Traceback" not in err
    assert not (tmp_path / "default").exists()  # rejected before any run directory is made


def test_unknown_run_and_env(tmp_path: Path) -> None:
    code, _, err = invoke("train", "--run", "PPO", "--env", "CartPole-v1")
    assert code == 2 and "PG, DQN" in err
    code, _, err = invoke("train", "--run", "PG", "--env", "CartPol-v1")
    assert code == 2 and "CartPole-v1" in err and "did you mean" in err
    code, _, err = invoke("train", "--run", "PG", "--env", "nosuchmodule:Env")
    assert code == 2 and "cannot import" in err


def test_algo_alias_and_run_file(tmp_path: Path) -> None:
    run_file = tmp_path / "run.json"
    run_file.write_text(
        json.dumps(
            {
                "run": "DQN",
                "env": "CartPole-v0",
                "name": "from-file",
                "config": {**FAST_PG, "lr": 0.5},
                "stop": {"training_iteration": 50},
            }
        )
    )
    # Flags override the file: --algo replaces run, --config keys override, --stop replaces.
    code, out, err = invoke(
        "train",
        "-f",
        str(run_file),
        "--algo",
        "PG",
        "--local-dir",
        str(tmp_path),
        "--config",
        '{"lr": 0.001}',
        "--stop",
        '{"training_iteration": 1}',
        "-q",
    )
    assert code == 0, err
    result = json.loads(out)
    assert result["training_iteration"] == 1
    logdir = Path(result["logdir"])
    assert logdir.parent.name == "from-file" and logdir.name.startswith("PG_CartPole-v0_")
    assert json.loads((logdir / "params.json").read_text())["lr"] == 0.001


def test_run_file_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"run": "PG",\n "env": }')
    code, _, err = invoke("train", "-f", str(bad))
    assert code == 2 and "line 2 column" in err
    unknown = tmp_path / "unknown.json"
    unknown.write_text('{"run": "PG", "env": "CartPole-v1", "confg": {}}')
    code, _, err = invoke("train", "-f", str(unknown))
    assert code == 2 and "did you mean 'config'" in err


def test_help_config_lists_keys() -> None:
    code, out, _ = invoke("train", "--run", "DQN", "--help-config")
    assert code == 0 and "target_network_update_freq" in out and "output_max_file_size" in out


def test_checkpoint_restore_and_rollout(tmp_path: Path) -> None:
    code, out, err = invoke(
        *train_args(
            tmp_path,
            "--stop",
            '{"training_iteration": 2}',
            "--checkpoint-freq",
            "1",
            "--checkpoint-at-end",
        )
    )
    assert code == 0, err
    first = json.loads(out)
    ckpt = Path(first["logdir"]) / "checkpoint_000002"
    assert (Path(first["logdir"]) / "checkpoint_000001" / "state.pt").exists()
    assert (ckpt / "state.pt").exists()
    code, out, err = invoke(
        *train_args(tmp_path, "--stop", '{"training_iteration": 3}', "--restore", str(ckpt))
    )
    assert code == 0, err
    resumed = json.loads(out)
    assert resumed["training_iteration"] == 3  # counting continues from the checkpoint
    assert resumed["timesteps_total"] > first["timesteps_total"]
    code, out, err = invoke("rollout", str(ckpt), "--episodes", "3")
    assert code == 0, err
    res = json.loads(out)
    assert res["episodes"] == 3
    assert res["episode_reward_min"] <= res["episode_reward_mean"] <= res["episode_reward_max"]


def test_restore_errors(tmp_path: Path) -> None:
    code, _, err = invoke(*train_args(tmp_path, "--restore", str(tmp_path / "nope")))
    assert code == 2 and "not found" in err
    corrupt = tmp_path / "checkpoint_000001"
    corrupt.mkdir()
    (corrupt / "state.pt").write_bytes(b"not a checkpoint")
    code, _, err = invoke(*train_args(tmp_path, "--restore", str(corrupt)))
    assert code == 1 and "corrupt" in err
    code, _, err = invoke("rollout", str(tmp_path / "nope"))
    assert code == 2 and "not found" in err


def test_restore_checkpoint_of_other_algorithm(tmp_path: Path) -> None:
    code, out, err = invoke(
        *train_args(tmp_path, "--stop", '{"training_iteration": 1}', "--checkpoint-at-end")
    )
    assert code == 0, err
    ckpt = Path(json.loads(out)["logdir"]) / "checkpoint_000001"
    code, _, err = invoke(
        "train",
        "--run",
        "DQN",
        "--env",
        "CartPole-v1",
        "--local-dir",
        str(tmp_path),
        "--restore",
        str(ckpt),
        "-q",
    )
    assert code == 2 and "from PG" in err


def test_subprocess_exit_codes_and_streams(tmp_path: Path) -> None:
    train = ["train", "--run", "PG", "--env", "CartPole-v1"]
    proc = run_offrl(
        [*train, "--config", json.dumps(FAST_PG), "--stop", '{"training_iteration": 1}'],
        tmp_path,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["training_iteration"] == 1  # stdout: exactly one JSON object
    assert "iter=1" in proc.stderr  # piped stderr: plain progress lines
    assert str(tmp_path) in proc.stderr  # default local dir honours OFFRL_RESULTS_DIR
    bad = run_offrl([*train, "--config", '{"gamma": 2}'], tmp_path, timeout=120)
    assert bad.returncode == 2 and "gamma" in bad.stderr and "Traceback" not in bad.stderr


# SIGINT stays in the default tier as the real-process signal smoke test; SIGTERM takes the
# same path (graceful_signals handles both) and runs in the slow tier.
@pytest.mark.parametrize(
    ("sig", "code"),
    [(signal.SIGINT, 130), pytest.param(signal.SIGTERM, 143, marks=pytest.mark.slow)],
)
def test_signal_stops_cleanly_with_checkpoint(tmp_path: Path, sig: int, code: int) -> None:
    args = [
        "train",
        "--run",
        "PG",
        "--env",
        "CartPole-v1",
        "--config",
        json.dumps({**FAST_PG, "output": "logdir"}),
        "--checkpoint-at-end",
    ]
    proc = start_offrl(args, tmp_path)
    deadline = time.time() + 60
    while time.time() < deadline and not list(tmp_path.glob("default/*/result.json")):
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    result = json.loads(out)
    logdir = Path(result["logdir"])
    assert (logdir / f"checkpoint_{result['training_iteration']:06d}" / "state.pt").exists()
    # every output line is complete JSON: the writer closed its file cleanly
    for f in logdir.glob("output-*.json"):
        text = f.read_text()
        assert text.endswith("\n")
        for line in text.splitlines():
            json.loads(line)


def _dqn_on_file(tmp_path: Path, mix: bool, input_config: dict) -> tuple[list[str], Path]:
    """``offrl train`` args of a one-iteration offline DQN run, and its results dir."""
    data = write_jsonl(tmp_path / "data" / "a.json", [sample_batch_record(cartpole_columns(3))])
    source: object = {"sampler": 0.5, str(data): 0.5} if mix else str(data)
    config = {"input": source, "input_config": input_config, "learning_starts": 1}
    results = tmp_path / "results"
    args = ["train", "--run", "DQN", "--env", "CartPole-v1", "--local-dir", str(results)]
    return [*args, "--config", json.dumps(config), "--stop", '{"training_iteration": 1}'], results


@pytest.mark.parametrize(
    ("input_config", "needle"),
    [
        ({"columns": "obs"}, "input_config.columns must be a list of column names, got 'obs'"),
        ({"columns": ["obs", 1]}, "input_config.columns"),
        ({"storage_options": "anon"}, "input_config.storage_options must be an object"),
    ],
    ids=repr,
)
@pytest.mark.parametrize("mix", [False, True], ids=["file", "mix-with-sampler"])
def test_file_input_config_of_the_wrong_type_exits_2_before_a_run_directory(
    tmp_path: Path, input_config: dict, needle: str, mix: bool
) -> None:
    args, results = _dqn_on_file(tmp_path, mix, input_config)
    code, out, err = invoke(*args)
    assert code == 2, err
    assert needle in err
    assert out == "" and "Traceback" not in err
    assert not results.exists()  # rejected before any run directory is made


@pytest.mark.parametrize("mix", [False, True], ids=["file", "mix-with-sampler"])
def test_file_input_config_of_the_right_types_trains(tmp_path: Path, mix: bool) -> None:
    # The runs above, with the options given correctly: they get past the check and train.
    args, results = _dqn_on_file(tmp_path, mix, {"columns": ["obs"], "storage_options": {}})
    code, out, err = invoke(*args, "-q")
    assert code == 0, err
    assert json.loads(out)["training_iteration"] == 1
    assert (results / "default").is_dir()


def test_class_input_config_is_not_checked_as_a_file_readers(tmp_path: Path) -> None:
    config = {"input": "no_such_module_xyz:Reader", "input_config": {"columns": "anything"}}
    base = ["train", "--run", "DQN", "--env", "CartPole-v1", "--local-dir", str(tmp_path)]
    code, _, err = invoke(*base, "--config", json.dumps(config))
    assert code == 2
    assert "no_such_module_xyz" in err  # the class is what fails, not its keyword arguments
    assert "input_config.columns" not in err


def test_help_config_and_params_say_lambda(tmp_path: Path) -> None:
    code, out, _ = invoke("train", "--run", "PG", "--help-config")
    assert code == 0 and "  lambda = 1.0" in out and "lambda_" not in out
    code, out, err = invoke(*train_args(tmp_path, "--stop", '{"training_iteration": 1}'))
    assert code == 0, err
    params = json.loads((Path(json.loads(out)["logdir"]) / "params.json").read_text())
    assert params["lambda"] == 1.0 and "lambda_" not in params


@pytest.mark.parametrize("kind", ["missing-input", "missing-mix-input", "output-is-a-file"])
def test_io_errors_leave_no_run_directory(tmp_path: Path, kind: str) -> None:
    """A missing input or an unwritable output was found only after the run directory (with
    an empty result.json) existed."""
    (tmp_path / "a-file").write_text("x")
    config = {
        "missing-input": {"input": str(tmp_path / "nothing-here")},
        "missing-mix-input": {"input": {"sampler": 0.5, str(tmp_path / "nothing"): 0.5}},
        "output-is-a-file": {"output": str(tmp_path / "a-file")},
    }[kind]
    results = tmp_path / "results"
    code, out, err = invoke(
        "train", "--run", "DQN", "--env", "CartPole-v1", "--local-dir", str(results),
        "--config", json.dumps(config), "--stop", '{"training_iteration": 1}',
    )  # fmt: skip
    assert code == 1, err
    assert ("no input files found" in err) or ("not a directory" in err)
    assert out == ""
    assert not results.exists()
