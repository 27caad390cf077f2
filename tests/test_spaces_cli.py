"""Every gymnasium space end to end through the CLI: train a couple of iterations, write
experience files, read them back offline, roll the checkpoint out; and bad input for spaces.

The envs are the tiny ones in ``tests/envs.py`` (8-step episodes), so each run takes a
fraction of a second after the first import of torch.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from shared_data import RLLIB_260_PPO_FROZENLAKE, RLLIB_260_PPO_PENDULUM

from offrl.cli import main
from offrl.io.json_reader import JsonReader

TINY = {"train_batch_size": 64, "model": {"fcnet_hiddens": [16]}}
TINY_DQN = {
    "learning_starts": 32,
    "timesteps_per_iteration": 64,
    "model": {"fcnet_hiddens": [16]},
    "hiddens": [16],
}


def invoke(*args: str) -> tuple[int, str, str]:
    res = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return res.exit_code, res.stdout, res.stderr


def train(tmp_path: Path, run: str, env: str, config: dict, iters: int = 2) -> tuple[int, str, str]:
    return invoke(
        "train",
        "--run",
        run,
        "--env",
        env,
        "--local-dir",
        str(tmp_path / "results"),
        "--config",
        json.dumps(config),
        "--stop",
        json.dumps({"training_iteration": iters}),
        "--checkpoint-at-end",
    )


def read_all(path: Path) -> dict[str, np.ndarray]:
    files = sorted(str(p) for p in path.glob("*.json"))
    with JsonReader(files, shuffle_files=False) as reader:
        batches = list(reader.iter_epoch())
    return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}


def validate_and_train_offline(tmp_path: Path, env: str, data: Path, estimators: list) -> dict:
    """``data validate`` of ``data`` against ``env``, then offline PG on it with
    ``estimators``: the run's result (both must succeed)."""
    code, _, err = invoke("data", "validate", str(data), "--env", env)
    assert code == 0, err
    offline = {**TINY, "input": str(data), "postprocess_inputs": True}
    offline["input_evaluation"] = estimators
    code, out, err = train(tmp_path, "PG", env, offline)
    assert code == 0, err
    return json.loads(out)


# (env, obs column (dtype, row shape), actions (dtype, row shape), DQN applies)
SPACES = [
    ("tests.envs:ImageEnv", ("uint8", (10, 12, 3)), ("int64", ()), True),
    ("tests.envs:DictObsEnv", ("float32", (8,)), ("int64", ()), True),
    ("tests.envs:TupleObsEnv", ("float32", (5,)), ("int64", ()), True),
    ("tests.envs:MultiDiscreteEnv", ("float32", (5,)), ("int64", (2,)), False),
    ("tests.envs:BoxActionEnv", ("float32", (2,)), ("float32", (2,)), False),
]


@pytest.mark.parametrize(("env", "obs", "actions", "dqn"), SPACES)
def test_every_space_trains_records_reads_back_and_rolls_out(
    tmp_path: Path, env: str, obs: tuple, actions: tuple, dqn: bool
) -> None:
    out_dir = tmp_path / "out"
    code, out, err = train(tmp_path, "PG", env, {**TINY, "output": str(out_dir)})
    assert code == 0, err
    result = json.loads(out)
    assert result["timesteps_total"] == 128
    cols = read_all(out_dir)
    assert (str(cols["obs"].dtype), cols["obs"].shape[1:]) == obs
    assert (str(cols["new_obs"].dtype), cols["new_obs"].shape[1:]) == obs
    assert (str(cols["actions"].dtype), cols["actions"].shape[1:]) == actions
    assert cols["prev_actions"].shape[1:] == actions[1]
    # The file checks against the env and trains offline.
    res = validate_and_train_offline(tmp_path, env, out_dir, ["is", "wis"])
    assert res["rows_read"] == 128
    assert np.isfinite(res["off_policy_estimation/wis/v_target"])
    ckpt = Path(res["logdir"]) / "checkpoint_000002"
    # a checkpoint's module:Class env is imported only when typed (docs/reliability.md)
    code, _, err = invoke("rollout", str(ckpt), "--episodes", "2")
    assert code == 2 and "not a registered gymnasium id" in err
    code, out, err = invoke("rollout", str(ckpt), "--episodes", "2", "--env", env)
    assert code == 0, err
    assert json.loads(out)["episodes"] == 2
    if dqn:
        code, out, err = train(tmp_path, "DQN", env, TINY_DQN)
        assert code == 0, err
        assert json.loads(out)["info/learner/num_updates"] > 0


def test_image_frames_stay_uint8_and_compressed_in_the_file(tmp_path: Path) -> None:
    out_dir = tmp_path / "out"
    code, _, err = train(tmp_path, "PG", "tests.envs:ImageEnv", {**TINY, "output": str(out_dir)})
    assert code == 0, err
    (path,) = out_dir.glob("*.json")
    record = json.loads(path.read_text().splitlines()[0])
    assert isinstance(record["obs"], str) and record["obs"].startswith("BCJNG")
    frames = read_all(out_dir)["obs"]
    assert set(np.unique(frames)) <= {20, 220}  # the env's two pixel values, unscaled


def test_box_actions_written_as_lists_of_float_lists(tmp_path: Path) -> None:
    out_dir = tmp_path / "out"
    code, _, err = train(
        tmp_path, "PG", "tests.envs:BoxActionEnv", {**TINY, "output": str(out_dir)}
    )
    assert code == 0, err
    (path,) = out_dir.glob("*.json")
    record = json.loads(path.read_text().splitlines()[0])
    assert len(record["actions"]) == 64
    assert all(len(a) == 2 and all(isinstance(x, float) for x in a) for a in record["actions"])
    assert len(record["action_dist_inputs"][0]) == 4  # two means, two log-stds


def test_rllib_pendulum_box_actions_read_validated_and_trained(tmp_path: Path) -> None:
    code, _, err = invoke("data", "validate", str(RLLIB_260_PPO_PENDULUM), "--env", "Pendulum-v1")
    assert code == 0, err
    cfg = {
        "input": str(RLLIB_260_PPO_PENDULUM),
        "postprocess_inputs": True,
        "train_batch_size": 500,
    }
    cfg["input_evaluation"] = ["is", "wis", "dm"]
    code, out, err = train(tmp_path, "PG", "Pendulum-v1", cfg)
    assert code == 0, err
    res = json.loads(out)
    assert res["info/learner/num_grad_updates"] > 0
    assert np.isfinite(res["off_policy_estimation/is/v_target"])
    assert "'dm' skipped: it needs a Discrete action space" in err


def test_rllib_pendulum_trains_on_its_own_advantages(tmp_path: Path) -> None:
    cfg = {"input": str(RLLIB_260_PPO_PENDULUM), "train_batch_size": 500}
    code, out, err = train(tmp_path, "PG", "Pendulum-v1", cfg)
    assert code == 0, err
    assert json.loads(out)["info/learner/num_grad_updates"] > 0


def test_rllib_frozenlake_one_hot_obs_read_validated_and_trained(tmp_path: Path) -> None:
    code, _, err = invoke(
        "data", "validate", str(RLLIB_260_PPO_FROZENLAKE), "--env", "FrozenLake-v1"
    )
    assert code == 0, err
    cfg = {"input": str(RLLIB_260_PPO_FROZENLAKE), "postprocess_inputs": True}
    code, out, err = train(tmp_path, "PG", "FrozenLake-v1", cfg)
    assert code == 0, err
    assert json.loads(out)["rows_read"] > 0
    code, out, err = train(tmp_path, "DQN", "FrozenLake-v1", {**TINY_DQN, "input": cfg["input"]})
    assert code == 0, err


# -- action spaces with a start: the env and the file get values of the space ---------------


def log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def test_discrete_start_actions_reach_the_env_and_file_in_the_space_and_train_offline(
    tmp_path: Path,
) -> None:
    # DiscreteStartEnv (Discrete(3, start=-1)) raises on an action outside its space, which
    # would end the run with exit 1.
    env = "tests.envs:DiscreteStartEnv"
    out_dir = tmp_path / "out"
    code, out, err = train(tmp_path, "PG", env, {**TINY, "output": str(out_dir)})
    assert code == 0, err
    cols = read_all(out_dir)
    assert set(np.unique(cols["actions"])) == {-1, 0, 1}
    # action_logp is that of the recorded action: logit (action - start) of the dist inputs
    logp = log_softmax(cols["action_dist_inputs"].astype(np.float64))
    expected = logp[np.arange(len(logp)), cols["actions"] + 1]
    np.testing.assert_allclose(cols["action_logp"], expected, rtol=1e-5)
    np.testing.assert_allclose(np.exp(cols["action_logp"]), cols["action_prob"], rtol=1e-5)
    res = validate_and_train_offline(tmp_path, env, out_dir, ["is", "wis", "dm"])
    for name in ("is", "wis", "dm"):
        assert np.isfinite(res[f"off_policy_estimation/{name}/v_target"]), name
    code, out, err = invoke(
        "rollout", str(Path(res["logdir"]) / "checkpoint_000002"), "--episodes", "2", "--env", env
    )
    assert code == 0, err
    code, out, err = train(tmp_path, "DQN", env, {**TINY_DQN, "input": str(out_dir)})
    assert code == 0, err
    assert json.loads(out)["info/learner/num_updates"] > 0
    # DQN online: epsilon-greedy actions in the space, recorded as such
    dqn_dir = tmp_path / "dqn_out"
    code, out, err = train(tmp_path, "DQN", env, {**TINY_DQN, "output": str(dqn_dir)})
    assert code == 0, err
    dqn_cols = read_all(dqn_dir)
    assert set(np.unique(dqn_cols["actions"])) == {-1, 0, 1}
    code, _, err = invoke("data", "validate", str(dqn_dir), "--env", env)
    assert code == 0, err
    dqn_ckpt = str(Path(json.loads(out)["logdir"]) / "checkpoint_000002")
    code, out, err = invoke("rollout", dqn_ckpt, "--env", env)
    assert code == 0, err
    code, out, err = invoke(
        "evaluate-offline", dqn_ckpt, "--input", str(out_dir), "--env", env, "-q",
        "--estimators", "is,dm", "--bootstrap", "0",
    )  # fmt: skip
    assert code == 0, err
    estimates = json.loads(out)["off_policy_estimation"]
    assert estimates["is"]["num_episodes"] == 16 and np.isfinite(estimates["dm"]["v_target"])


def test_multidiscrete_start_actions_reach_the_env_and_file_in_the_space(tmp_path: Path) -> None:
    env = "tests.envs:MultiDiscreteStartEnv"  # MultiDiscrete([2, 3], start=[1, -1])
    out_dir = tmp_path / "out"
    code, out, err = train(tmp_path, "PG", env, {**TINY, "output": str(out_dir)})
    assert code == 0, err
    cols = read_all(out_dir)
    assert set(np.unique(cols["actions"][:, 0])) == {1, 2}
    assert set(np.unique(cols["actions"][:, 1])) == {-1, 0, 1}
    inputs = cols["action_dist_inputs"].astype(np.float64)
    rows = np.arange(len(inputs))
    expected = log_softmax(inputs[:, :2])[rows, cols["actions"][:, 0] - 1]
    expected += log_softmax(inputs[:, 2:])[rows, cols["actions"][:, 1] + 1]
    np.testing.assert_allclose(cols["action_logp"], expected, rtol=1e-5)
    res = validate_and_train_offline(tmp_path, env, out_dir, ["is", "wis"])
    assert np.isfinite(res["off_policy_estimation/is/v_target"])
    code, out, err = invoke(
        "rollout", str(Path(res["logdir"]) / "checkpoint_000002"), "--episodes", "2", "--env", env
    )
    assert code == 0, err


# -- bad input ------------------------------------------------------------------------------


def test_dqn_on_box_actions_exits_2_naming_the_space_and_suggesting_pg(tmp_path: Path) -> None:
    code, _, err = train(tmp_path, "DQN", "Pendulum-v1", TINY_DQN)
    assert code == 2
    assert "DQN needs a Discrete action space; this env has Box(-2.0, 2.0, (1,), float32)" in err
    assert "--run PG" in err and "Traceback" not in err


def test_env_whose_observation_does_not_fit_its_space_is_named(tmp_path: Path) -> None:
    code, _, err = train(tmp_path, "PG", "tests.envs:WrongShapeObsEnv", TINY)
    assert code == 1  # a fault of the env's code, reported like its other failures
    assert "env tests.envs:WrongShapeObsEnv failed at reset" in err
    assert "WrongShapeObsEnv.reset() returned an observation that does not fit" in err
    assert "expected shape (4,), got (3,)" in err and "Traceback" not in err


def test_file_whose_actions_do_not_fit_the_env_names_file_line_and_column(tmp_path: Path) -> None:
    # Pendulum's Box actions read against MountainCarContinuous (Box(1,) too, obs (2,)) and
    # against CartPole (Discrete(2)): the observation or action column is named.
    cfg = {"input": str(RLLIB_260_PPO_PENDULUM), "postprocess_inputs": True}
    code, _, err = train(tmp_path, "PG", "CartPole-v1", cfg)
    assert code == 1
    assert "output-2026-12-07_01-09-21_worker-0_0.json:1" in err
    assert "column 'obs' has shape (4000, 3)" in err and "Traceback" not in err
    frozen = {"input": str(RLLIB_260_PPO_FROZENLAKE), "postprocess_inputs": True}
    code, _, err = train(tmp_path, "PG", "tests.envs:MultiDiscreteEnv", frozen)
    assert code == 1 and "Traceback" not in err
    assert "has shape (4003, 16)" in err


def test_help_config_lists_the_model_keys() -> None:
    code, out, _ = invoke("train", "--run", "PG", "--help-config")
    assert code == 0
    for key in ("fcnet_hiddens", "conv_filters", "conv_activation", "normalize_actions"):
        assert key in out


def test_bad_conv_filters_exit_2(tmp_path: Path) -> None:
    code, _, err = train(tmp_path, "PG", "tests.envs:ImageEnv", {"model": {"conv_filters": [16]}})
    assert code == 2 and "config key 'model.conv_filters': invalid value [16]" in err


@pytest.mark.parametrize("env", ["tests.envs:ImageEnv", "tests.envs:BoxActionEnv"])
def test_convert_to_parquet_and_back_keeps_dtype_shape_and_values(tmp_path: Path, env: str) -> None:
    out_dir = tmp_path / "out"
    code, _, err = train(tmp_path, "PG", env, {**TINY, "output": str(out_dir)})
    assert code == 0, err
    parquet, back = tmp_path / "data.parquet", tmp_path / "back"
    assert invoke("data", "convert", str(out_dir), str(parquet), "-q")[0] == 0
    assert invoke("data", "convert", str(parquet), str(back), "-q")[0] == 0
    before, after = read_all(out_dir), read_all(back)
    for col in ("obs", "new_obs", "actions", "prev_actions", "action_logp", "action_dist_inputs"):
        assert after[col].dtype == before[col].dtype, col
        assert np.array_equal(after[col], before[col]), col
    # and a learner reads the Parquet file directly
    cfg = {**TINY, "input": str(parquet), "postprocess_inputs": True}
    code, out, err = train(tmp_path, "PG", env, cfg)
    assert code == 0, err
    assert json.loads(out)["info/learner/num_grad_updates"] > 0


def test_file_whose_actions_are_out_of_the_env_range_names_file_line_row_value(
    tmp_path: Path,
) -> None:
    cfg = {"input": str(RLLIB_260_PPO_FROZENLAKE), "postprocess_inputs": True}
    code, _, err = train(tmp_path, "PG", "tests.envs:SixteenStatesTwoActions", cfg)
    assert code == 1 and "Traceback" not in err
    assert "output-2026-12-07_01-09-52_worker-0_0.json:1: column 'actions' row" in err
    assert "is outside the space's range [0, 1] of Discrete(2)" in err
