"""Tests for offrl/results.py: run directories, result.json / progress.csv, checkpoints."""

from __future__ import annotations

import csv
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from offrl.errors import ConfigError, OffrlRuntimeError
from offrl.results import (
    CHECKPOINT_FILE,
    ResultLogger,
    clean_result,
    default_local_dir,
    load_checkpoint,
    make_run_dir,
    save_checkpoint,
)

# 2024-03-05 06:07:08 local time, whatever the machine's time zone.
NOW = time.mktime((2024, 3, 5, 6, 7, 8, 0, 0, -1))
STAMP = "2024-03-05_06-07-08"


# -- run directories ------------------------------------------------------------------


def test_run_dir_is_name_run_env_timestamp(tmp_path: Path) -> None:
    path = make_run_dir(tmp_path, "exp", "PG", "CartPole-v1", now=NOW)
    assert path == tmp_path / "exp" / f"PG_CartPole-v1_{STAMP}"
    assert path.is_dir() and not any(path.iterdir())


def test_run_dir_parts_are_made_safe(tmp_path: Path) -> None:
    path = make_run_dir(tmp_path, "my exp/1", "DQN", "tests.envs:CountEnv", now=NOW)
    assert path == tmp_path / "my_exp_1" / f"DQN_tests.envs_CountEnv_{STAMP}"


def test_runs_in_the_same_second_get_distinct_dirs(tmp_path: Path) -> None:
    paths = [make_run_dir(tmp_path, "exp", "PG", "CartPole-v1", now=NOW) for _ in range(3)]
    base = f"PG_CartPole-v1_{STAMP}"
    assert [p.name for p in paths] == [base, f"{base}_1", f"{base}_2"]
    assert all(p.is_dir() for p in paths)


def test_run_dir_uses_the_current_time_by_default(tmp_path: Path) -> None:
    before = time.strftime("%Y-%m-%d", time.localtime())
    path = make_run_dir(tmp_path, "exp", "PG", "CartPole-v1")
    after = time.strftime("%Y-%m-%d", time.localtime())
    assert path.name.startswith("PG_CartPole-v1_")
    assert before in path.name or after in path.name


def test_run_dir_under_a_file_is_a_runtime_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    with pytest.raises(OffrlRuntimeError, match="--local-dir"):
        make_run_dir(blocker, "exp", "PG", "CartPole-v1", now=NOW)


def test_default_local_dir_honours_the_env_var(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OFFRL_RESULTS_DIR", str(tmp_path / "r"))
    assert default_local_dir() == tmp_path / "r"
    monkeypatch.delenv("OFFRL_RESULTS_DIR")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_local_dir() == tmp_path / "offrl_results"


# -- result.json and progress.csv ------------------------------------------------------


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        return list(reader.fieldnames or []), rows


def _log_all(logdir: Path, results: list[dict[str, Any]]) -> None:
    with ResultLogger(logdir) as logger:
        for r in results:
            logger.log(r)


def test_result_json_has_one_object_per_line(tmp_path: Path) -> None:
    results = [
        {"training_iteration": 1, "timesteps_total": 200, "episode_reward_mean": 12.5},
        {"training_iteration": 2, "timesteps_total": 400, "episode_reward_mean": 20.0},
    ]
    _log_all(tmp_path, results)
    lines = (tmp_path / "result.json").read_text().splitlines()
    assert [json.loads(line) for line in lines] == results


def test_progress_csv_header_grows_and_old_rows_line_up(tmp_path: Path) -> None:
    _log_all(
        tmp_path,
        [
            {"training_iteration": 1, "timesteps_total": 200},
            {"training_iteration": 2, "timesteps_total": 400},
            {"training_iteration": 3, "timesteps_total": 600, "info/learner/loss": 0.5},
            {"training_iteration": 4, "timesteps_total": 800, "info/learner/loss": 0.25},
            {"training_iteration": 5, "info/learner/loss": 0.125, "evaluation/reward": 9},
        ],
    )
    header, rows = _read_csv(tmp_path / "progress.csv")
    assert header == [
        "training_iteration",
        "timesteps_total",
        "info/learner/loss",
        "evaluation/reward",
    ]
    assert [r["training_iteration"] for r in rows] == ["1", "2", "3", "4", "5"]
    assert [r["timesteps_total"] for r in rows] == ["200", "400", "600", "800", ""]
    assert [r["info/learner/loss"] for r in rows] == ["", "", "0.5", "0.25", "0.125"]
    assert [r["evaluation/reward"] for r in rows] == ["", "", "", "", "9"]
    assert not (tmp_path / "progress.csv.tmp").exists()
    # Exactly one header line: appends after a rewrite must not repeat it.
    text = (tmp_path / "progress.csv").read_text()
    assert text.count("training_iteration") == 1


def test_progress_csv_reads_with_pandas(tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    _log_all(
        tmp_path,
        [
            {"training_iteration": 1, "episode_reward_mean": 10.0},
            {"training_iteration": 2, "episode_reward_mean": 11.0, "mean_q": 1.5},
        ],
    )
    df = pd.read_csv(tmp_path / "progress.csv")
    assert list(df.columns) == ["training_iteration", "episode_reward_mean", "mean_q"]
    assert df["episode_reward_mean"].tolist() == [10.0, 11.0]
    assert math.isnan(df["mean_q"][0]) and df["mean_q"][1] == 1.5


def test_progress_csv_quotes_text_with_commas(tmp_path: Path) -> None:
    _log_all(tmp_path, [{"training_iteration": 1, "note": 'a,b "c"\nd'}])
    _, rows = _read_csv(tmp_path / "progress.csv")
    assert rows == [{"training_iteration": "1", "note": 'a,b "c"\nd'}]


def test_nan_and_inf_become_null_and_numpy_scalars_plain(tmp_path: Path) -> None:
    result = {
        "training_iteration": np.int64(1),
        "episode_reward_mean": math.nan,
        "episode_reward_max": np.float32("nan"),
        "mean_q": math.inf,
        "min_q": np.float64(-2.5),
        "done": np.bool_(False),
    }
    _log_all(tmp_path, [result])
    text = (tmp_path / "result.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    row = json.loads(text)
    assert row == {
        "training_iteration": 1,
        "episode_reward_mean": None,
        "episode_reward_max": None,
        "mean_q": None,
        "min_q": -2.5,
        "done": False,
    }
    assert type(row["training_iteration"]) is int
    _, rows = _read_csv(tmp_path / "progress.csv")
    assert rows[0]["episode_reward_mean"] == "" and rows[0]["min_q"] == "-2.5"


def test_clean_result_does_not_change_its_input() -> None:
    result = {"a": math.nan, "b": 1}
    assert clean_result(result) == {"a": None, "b": 1}
    assert math.isnan(result["a"])


def test_result_json_is_appended_by_a_second_logger(tmp_path: Path) -> None:
    _log_all(tmp_path, [{"training_iteration": 1}])
    _log_all(tmp_path, [{"training_iteration": 2}])
    lines = (tmp_path / "result.json").read_text().splitlines()
    assert [json.loads(line)["training_iteration"] for line in lines] == [1, 2]


def test_result_json_is_flushed_after_each_log(tmp_path: Path) -> None:
    logger = ResultLogger(tmp_path)
    try:
        logger.log({"training_iteration": 1})
        # Another reader (tail -f, TensorBoard-like tools) sees the line before close.
        assert json.loads((tmp_path / "result.json").read_text()) == {"training_iteration": 1}
    finally:
        logger.close()


def test_params_json_is_written_sorted_and_never_overwritten(tmp_path: Path) -> None:
    with ResultLogger(tmp_path) as logger:
        logger.write_params({"lr": 0.01, "gamma": 0.99, "model": {"fcnet_hiddens": [8]}})
        first = (tmp_path / "params.json").read_text()
        with pytest.raises(FileExistsError):
            logger.write_params({"lr": 1.0})
    assert (tmp_path / "params.json").read_text() == first
    assert json.loads(first) == {"lr": 0.01, "gamma": 0.99, "model": {"fcnet_hiddens": [8]}}
    assert first.index('"gamma"') < first.index('"lr"') < first.index('"model"')


def test_params_json_of_another_logger_is_not_overwritten(tmp_path: Path) -> None:
    (tmp_path / "params.json").write_text('{"keep": true}\n')
    with ResultLogger(tmp_path) as logger, pytest.raises(FileExistsError):
        logger.write_params({"lr": 1.0})
    assert json.loads((tmp_path / "params.json").read_text()) == {"keep": True}


# -- checkpoints ----------------------------------------------------------------------


def _state() -> dict[str, Any]:
    net = torch.nn.Linear(3, 2)
    rng = np.random.default_rng(5)
    return {
        "run": "DQN",
        "config": {"lr": 0.001, "model": {"fcnet_hiddens": [8]}},
        "algo": {
            "online": net.state_dict(),
            "counters": {"num_updates": 7},
            "explore_rng": rng.bit_generator.state,  # holds 128-bit ints
            "buffer": {"columns": {"obs": torch.arange(6.0).reshape(3, 2)}},
        },
        "counters": {"training_iteration": 3, "recent_returns": [1.0, 2.5]},
    }


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    state = _state()
    path = save_checkpoint(tmp_path, 3, state)
    assert path == tmp_path / "checkpoint_000003"
    assert sorted(p.name for p in path.iterdir()) == [CHECKPOINT_FILE]  # no temp file left
    for where in (path, path / CHECKPOINT_FILE, str(path)):
        loaded = load_checkpoint(where)
        assert loaded["format"] == 1
        assert loaded["run"] == "DQN" and loaded["config"] == state["config"]
        assert loaded["counters"] == state["counters"]
        online = loaded["algo"]["online"]
        for k, v in state["algo"]["online"].items():
            assert torch.equal(online[k], v)
        assert loaded["algo"]["explore_rng"] == state["algo"]["explore_rng"]
        assert torch.equal(
            loaded["algo"]["buffer"]["columns"]["obs"], torch.arange(6.0).reshape(3, 2)
        )


def test_checkpoint_restores_an_rng_exactly(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    rng.random(10)
    path = save_checkpoint(tmp_path, 1, {"rng": rng.bit_generator.state})
    expected = rng.random(5)
    restored = np.random.default_rng()
    restored.bit_generator.state = load_checkpoint(path)["rng"]
    assert np.array_equal(restored.random(5), expected)


def test_checkpoint_of_the_same_iteration_is_replaced(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, 2, {"v": 1})
    path = save_checkpoint(tmp_path, 2, {"v": 2})
    assert load_checkpoint(path)["v"] == 2


@pytest.mark.parametrize("name", ["nope", "checkpoint_000001"])
def test_missing_checkpoint_is_a_config_error(tmp_path: Path, name: str) -> None:
    (tmp_path / "checkpoint_000001").mkdir()  # a directory without state.pt
    with pytest.raises(ConfigError, match="not found") as exc:
        load_checkpoint(tmp_path / name)
    assert name in str(exc.value) and CHECKPOINT_FILE in str(exc.value)


def test_garbage_checkpoint_is_a_runtime_error(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint_000001"
    path.mkdir()
    (path / CHECKPOINT_FILE).write_bytes(b"this is not a torch file\x00\x01")
    with pytest.raises(OffrlRuntimeError, match="corrupt or unreadable") as exc:
        load_checkpoint(path)
    assert str(path / CHECKPOINT_FILE) in str(exc.value)


def test_truncated_checkpoint_is_a_runtime_error(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path, 1, _state())
    file = path / CHECKPOINT_FILE
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2])
    with pytest.raises(OffrlRuntimeError, match="corrupt or unreadable"):
        load_checkpoint(path)


def test_empty_checkpoint_file_is_a_runtime_error(tmp_path: Path) -> None:
    (tmp_path / CHECKPOINT_FILE).write_bytes(b"")
    with pytest.raises(OffrlRuntimeError):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize("content", [{"a": 1}, {"format": 99}, [1, 2, 3]])
def test_torch_file_that_is_not_an_offrl_checkpoint(tmp_path: Path, content: Any) -> None:
    torch.save(content, tmp_path / CHECKPOINT_FILE)
    with pytest.raises(OffrlRuntimeError, match="not an offrl checkpoint"):
        load_checkpoint(tmp_path)


class _Touch:
    """Pickles into a call that creates a file: proof of code execution on load."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))


def test_checkpoint_with_code_is_refused_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    torch.save({"format": 1, "evil": _Touch(marker)}, tmp_path / CHECKPOINT_FILE)
    with pytest.raises(OffrlRuntimeError):
        load_checkpoint(tmp_path)
    assert not marker.exists()


def test_a_run_directory_resolves_to_its_latest_checkpoint(tmp_path: Path) -> None:
    from offrl.results import resolve_checkpoint

    for it in (2, 10, 9):
        save_checkpoint(tmp_path, it, {"v": it})
    (tmp_path / "checkpoint_000011").mkdir()  # unfinished: no state.pt
    assert resolve_checkpoint(tmp_path) == tmp_path / "checkpoint_000010"
    assert load_checkpoint(tmp_path)["v"] == 10
    assert resolve_checkpoint(tmp_path / "checkpoint_000002") == tmp_path / "checkpoint_000002"


def test_a_run_directory_without_checkpoints_lists_what_it_holds(tmp_path: Path) -> None:
    (tmp_path / "result.json").write_text("")
    (tmp_path / "params.json").write_text("{}")
    with pytest.raises(ConfigError) as err:
        load_checkpoint(tmp_path)
    msg = str(err.value)
    assert "holds params.json, result.json" in msg and "--checkpoint-at-end" in msg
