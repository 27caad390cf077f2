"""`offrl evaluate-offline`: estimates of a checkpoint's value from recorded episodes."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from examples.saving_experiences import main as save_experiences
from offrl.cli import main


def test_evaluate_offline_prints_estimates(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert save_experiences(["--out", str(data), "--episodes", "30", "--seed", "0"]) == 0
    runner = CliRunner()
    res = runner.invoke(
        main,
        [
            "train",
            "--run",
            "PG",
            "--env",
            "CartPole-v1",
            "--local-dir",
            str(tmp_path),
            "-q",
            "--config",
            '{"train_batch_size": 200, "model": {"fcnet_hiddens": [16]}}',
            "--stop",
            '{"training_iteration": 1}',
            "--checkpoint-at-end",
        ],
    )
    assert res.exit_code == 0, res.stderr
    ckpt = Path(json.loads(res.stdout)["logdir"]) / "checkpoint_000001"
    res = runner.invoke(
        main,
        ["evaluate-offline", str(ckpt), "--input", str(data), "--estimators", "is,wis,dm,dr"]
        + ["--bootstrap", "3"],  # the default 20 costs ~6 s here
    )
    assert res.exit_code == 0, res.stderr
    out = json.loads(res.stdout)["off_policy_estimation"]
    assert set(out) == {"is", "wis", "dm", "dr"}
    for est in out.values():
        assert est["num_episodes"] == 30
        # a uniform-random behaviour policy on CartPole: ~22 steps, gamma 0.99
        assert 10 < est["v_behavior"] < 40
        assert est["v_target"] > 0
        assert est["gamma"] == 0.99
        # the undiscounted mean return of the logged episodes is larger than the discounted
        assert est["v_behavior"] < est["v_behavior_undiscounted"] < 1.5 * est["v_behavior"]
    # dm/dr intervals come from a bootstrap that refits the model, and say so
    for name in ("dm", "dr"):
        est = out[name]
        assert est["ci_includes_model_error"] == 1.0
        assert est["v_target_ci_low"] < est["v_target_ci_high"]
    table = " ".join(res.stderr.split())
    assert "v_target" in table  # the table on stderr
    assert "discounted, gamma = 0.99" in table and "UNDISCOUNTED" in table
    assert "worth 99.3" in table


def test_evaluate_offline_rejects_unknown_estimator(tmp_path: Path) -> None:
    res = CliRunner().invoke(
        main, ["evaluate-offline", str(tmp_path), "--input", "x", "--estimators", "is,magic"]
    )
    assert res.exit_code == 2 and "magic" in res.stderr


def test_offline_run_with_simulation_reports_true_returns(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert save_experiences(["--out", str(data), "--episodes", "20", "--seed", "1"]) == 0
    config = {
        "input": str(data),
        "input_evaluation": ["simulation"],
        "timesteps_per_iteration": 300,
        "model": {"fcnet_hiddens": [16]},
        "hiddens": [],
    }
    res = CliRunner().invoke(
        main,
        [
            "train",
            "--run",
            "DQN",
            "--env",
            "CartPole-v1",
            "--local-dir",
            str(tmp_path),
            "-q",
            "--config",
            json.dumps(config),
            "--stop",
            '{"training_iteration": 1}',
        ],
    )
    assert res.exit_code == 0, res.stderr
    result = json.loads(res.stdout)
    # the background env acted as many steps as the learner read rows: whole episodes ended
    assert result["episodes_this_iter"] >= 3
    assert result["episode_reward_min"] <= result["episode_reward_mean"] <= 500


def test_checkpoint_input_config_does_not_steer_the_reader(tmp_path: Path) -> None:
    """A checkpoint is data: its input_config (storage options, limits) is not used to read
    the files given on the command line. Here it holds a 1-byte column limit that would
    refuse every compressed column of the data."""
    data = tmp_path / "data"
    assert save_experiences(["--out", str(data), "--episodes", "5", "--seed", "0"]) == 0
    runner = CliRunner()
    config = {
        "train_batch_size": 200,
        "model": {"fcnet_hiddens": [8]},
        "input_config": {"max_column_bytes": 1},
    }
    res = runner.invoke(
        main,
        ["train", "--run", "PG", "--env", "CartPole-v1", "--local-dir", str(tmp_path), "-q"]
        + ["--config", json.dumps(config), "--stop", '{"training_iteration": 1}']
        + ["--checkpoint-at-end"],
    )
    assert res.exit_code == 0, res.stderr
    ckpt = Path(json.loads(res.stdout)["logdir"]) / "checkpoint_000001"
    res = runner.invoke(main, ["evaluate-offline", str(ckpt), "--input", str(data), "-q"])
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout)["off_policy_estimation"]["is"]["num_episodes"] == 5


def test_episode_returns_join_episodes_across_batches() -> None:
    """Hand-computed: episode 7 spans both batches (1 + 2 + 4), episode 9 ends in the first
    (10), episode 8 never ends and is left out."""
    import numpy as np

    from offrl.batch import SampleBatch
    from offrl.commands.evaluate import EpisodeReturns

    returns = EpisodeReturns()
    returns.add(
        SampleBatch(
            {
                "rewards": np.array([1.0, 10.0, 2.0], np.float32),
                "eps_id": np.array([7, 9, 7]),
                "dones": np.array([False, True, False]),
            }
        )
    )
    returns.add(
        SampleBatch(
            {
                "rewards": np.array([4.0, 5.0], np.float32),
                "eps_id": np.array([7, 8]),
                "dones": np.array([True, False]),
            }
        )
    )
    assert sorted(returns.returns) == [7.0, 10.0] and returns.mean() == 8.5
    # without eps_id, episodes are runs ended by dones, continued across batches
    plain = EpisodeReturns()
    plain.add(SampleBatch({"rewards": np.array([1.0, 2.0, 3.0]), "dones": np.array([0, 1, 0])}))
    plain.add(SampleBatch({"rewards": np.array([4.0]), "dones": np.array([1])}))
    assert plain.returns == [3.0, 7.0]
