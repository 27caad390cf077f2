"""offrl data inspect: counts and statistics on RLlib's fixture, our own output, broken files."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from offrl.batch import SampleBatch
from offrl.commands.data import data
from offrl.datatools.inspect import column_codec, inspect_paths, stats
from offrl.io.codecs import encode_column
from offrl.io.json_writer import JsonWriter
from tests.shared_data import RLLIB_FIXTURE

FIXTURE = RLLIB_FIXTURE


def fixture_records() -> list[dict]:
    return [json.loads(line) for line in FIXTURE.read_text().splitlines() if line.strip()]


def steps_batch(eps: list[int], dones: list[bool], rewards: list[float]) -> SampleBatch:
    n = len(eps)
    t, prev = [], None
    for e in eps:
        t.append(t[-1] + 1 if prev == e else 0)
        prev = e
    return SampleBatch(
        obs=np.arange(n * 2, dtype=np.float32).reshape(n, 2),
        new_obs=np.arange(2, n * 2 + 2, dtype=np.float32).reshape(n, 2),
        actions=np.array([0, 1, 2][:1] * n, dtype=np.int64),
        rewards=np.array(rewards, dtype=np.float32),
        dones=np.array(dones),
        eps_id=np.array(eps, dtype=np.int64),
        t=np.array(t, dtype=np.int64),
    )


def test_fixture_counts_exactly() -> None:
    s = inspect_paths([str(FIXTURE)])
    records = fixture_records()
    assert (s["files"], s["lines"], s["records"], s["rows"]) == (1, 3, 3, 102)
    assert (s["episodes"], s["episodes_complete"], s["episodes_partial"]) == (3, 3, 0)
    # Every CartPole step pays 1: returns equal lengths 56, 26, 20.
    assert s["episode_return"]["max"] == 56.0
    assert s["episode_return"]["min"] == 20.0
    assert s["episode_return"]["mean"] == pytest.approx(34.0)
    assert s["episode_length"]["p50"] == 26.0
    actions = [a for r in records for a in r["actions"]]
    assert s["actions"]["histogram"] == {"0": actions.count(0), "1": actions.count(1)}
    assert s["behaviour_probabilities"]["action_prob_rows"] == 102
    assert s["behaviour_probabilities"]["action_logp_rows"] == 0
    assert s["columns"]["obs"] == {"dtype": "float32", "shape": [4], "codecs": ["plain"]}
    assert s["columns"]["q_values"]["shape"] == [2]
    assert s["columns"]["terminateds"]["codecs"] == ["derived by reader"]
    assert s["compressed"] == []
    assert s["bytes_per_row"] == pytest.approx(FIXTURE.stat().st_size / 102, abs=0.1)
    assert "dones (pre-gymnasium)" in s["variants"]


def test_stats_hand_computed() -> None:
    out = stats([1.0, 2.0, 3.0, 4.0])
    assert out is not None
    assert (out["mean"], out["min"], out["max"], out["p50"]) == (2.5, 1.0, 4.0, 2.5)
    assert out["p25"] == pytest.approx(1.75)
    assert stats([]) is None


def test_cli_json_and_table() -> None:
    runner = CliRunner()
    res = runner.invoke(data, ["inspect", "--json", str(FIXTURE)])
    assert res.exit_code == 0, res.output
    s = json.loads(res.output)
    assert (s["rows"], s["episodes"]) == (102, 3)
    res = runner.invoke(data, ["inspect", str(FIXTURE)])
    assert res.exit_code == 0
    assert "3 (3 complete, 0 partial)" in res.output
    assert "102" in res.output


def test_missing_input_exit_1(tmp_path: Path) -> None:
    res = CliRunner().invoke(data, ["inspect", str(tmp_path / "nothing.json")])
    assert res.exit_code == 1
    assert "no input files found" in res.output


def test_own_output_partial_episode_and_codecs(tmp_path: Path) -> None:
    # Episode 7 spans two records and ends; episode 9 never ends (partial).
    with JsonWriter(tmp_path / "out", codec="offrl") as w:
        w.write(steps_batch([7, 7, 7], [False] * 3, [1, 2, 3]))
        w.write(steps_batch([7, 9, 9], [True, False, False], [4, 10, 20]))
    s = inspect_paths([str(tmp_path / "out")])
    assert (s["records"], s["rows"]) == (2, 6)
    assert (s["episodes_complete"], s["episodes_partial"]) == (1, 1)
    assert s["episode_return"]["mean"] == 10.0  # 1 + 2 + 3 + 4, the complete one only
    assert s["episode_length"]["mean"] == 4.0
    assert s["columns"]["obs"]["codecs"] == ["offrl-npy"]
    assert s["compressed"] == ["new_obs", "obs"]


def test_codec_names() -> None:
    arr = np.ones((3, 2), dtype=np.float32)
    assert column_codec(encode_column(arr, "offrl")) == "offrl-npy"
    assert column_codec(encode_column(arr, "rllib")) == "rllib-pickle"
    assert column_codec("b'" + encode_column(arr, "rllib") + "'") == "rllib-pickle(bytes-repr)"
    per_row = [encode_column(row, "offrl") for row in arr]
    assert column_codec(per_row) == "offrl-npy,per-row"
    assert column_codec([[1.0, 2.0]]) == "plain"


def test_multi_agent_and_terminateds_variants(tmp_path: Path) -> None:
    batch = steps_batch([1, 1], [False, True], [1, 1])
    del batch["dones"]
    batch["terminateds"] = np.array([False, True])
    batch["truncateds"] = np.array([False, False])
    with JsonWriter(tmp_path / "ma", multi_agent=True, compress_columns=[]) as w:
        w.write(batch)
    s = inspect_paths([str(tmp_path / "ma")])
    assert s["record_types"] == {"MultiAgentBatch": 1}
    assert "MultiAgentBatch/default_policy (RLlib 2.x)" in s["variants"]
    assert "terminateds/truncateds (RLlib 2.3+)" in s["variants"]
    assert s["episodes_complete"] == 1


def test_truncated_copy_counts_corrupt_line(tmp_path: Path) -> None:
    text = FIXTURE.read_bytes()
    cut = tmp_path / "cut.json"
    cut.write_bytes(text[: len(text) - 500])  # the third line loses its end
    s = inspect_paths([str(cut)])
    assert s["corrupt_lines"] == 1
    assert (s["records"], s["rows"], s["episodes"]) == (2, 82, 2)


def test_without_eps_id_episodes_split_by_dones(tmp_path: Path) -> None:
    path = tmp_path / "noid.json"
    rec = {
        "type": "SampleBatch",
        "obs": [[0.0]] * 5,
        "actions": [0] * 5,
        "rewards": [1, 1, 1, 1, 1],
        "dones": [False, True, False, False, True],
    }
    tail = {
        **rec,
        "obs": [[0.0]] * 2,
        "actions": [0, 0],
        "rewards": [5, 5],
        "dones": [False, False],
    }
    path.write_text(json.dumps(rec) + "\n" + json.dumps(tail) + "\n")
    s = inspect_paths([str(path)])
    assert (s["episodes_complete"], s["episodes_partial"]) == (2, 1)
    assert s["episode_return"]["max"] == 3.0


def test_table_prints_no_python_dict(tmp_path: Path) -> None:
    res = CliRunner().invoke(data, ["inspect", str(RLLIB_FIXTURE)])
    assert res.exit_code == 0, res.output
    assert "{'" not in res.output
    assert " (3 SampleBatch)" in res.output


def test_a_run_directory_is_inspected_without_its_result_files(tmp_path: Path) -> None:
    """``"output": "logdir"`` puts experiences beside result.json/params.json."""
    with JsonWriter(tmp_path) as w:
        w.write(
            SampleBatch(
                obs=np.zeros((3, 4), np.float32),
                actions=np.zeros(3, np.int64),
                rewards=np.ones(3, np.float32),
                dones=np.array([False, False, True]),
                eps_id=np.zeros(3, np.int64),
                t=np.arange(3),
            )
        )
    (tmp_path / "result.json").write_text('{"training_iteration": 1}\n' * 261)
    (tmp_path / "params.json").write_text('{\n  "lr": 0.1\n}\n')
    res = CliRunner().invoke(data, ["inspect", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "warning" not in res.output.lower()
    assert re.search(r"rows \(steps\)\s+│ 3 ", res.output), res.output
