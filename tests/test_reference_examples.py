"""The three examples of the reference document (rllib-offline-io.rst), typed as its text
gives them with ``rllib`` replaced by ``offrl``; only paths, run lengths and the mix's
trailing comma differ (noted at each)."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner

from offrl.cli import main

# Example 1, "Training on previously saved experiences": write with PG.
WRITE = """offrl train \\
    --run=PG \\
    --env=CartPole-v0 \\
    --config='{"output": "/tmp/cartpole-out", "output_max_file_size": 5000000}' \\
    --stop='{"timesteps_total": 100000}'"""

# ... then train DQN on them, with the background simulation the text suggests.
TRAIN = """offrl train \\
    --run=DQN \\
    --env=CartPole-v0 \\
    --config='{
        "input": "/tmp/cartpole-out",
        "input_evaluation": "simulation",
        "exploration_final_eps": 0,
        "exploration_fraction": 0}'"""

# Example 3, "Mixing simulation and offline data" (the document's text has a trailing comma
# after the last source, which no JSON parser, RLlib's included, accepts; removed here).
MIX = """offrl train \\
    --run=DQN \\
    --env=CartPole-v0 \\
    --config='{
        "input": {
            "/tmp/cartpole-out": 0.4,
            "hdfs:/archive/cartpole": 0.3,
            "sampler": 0.3
        },
        "exploration_final_eps": 0,
        "exploration_fraction": 0}'"""


def _words(text: str) -> list[str]:
    """The words a POSIX shell makes of ``text`` (backslash-newline continues the line)."""
    return shlex.split(text.replace("\\\n", " "))


def _run(text: str, tmp_path: Path, *extra: str) -> tuple[dict, str]:
    args = _words(text.replace("/tmp/cartpole-out", str(tmp_path / "cartpole-out")))
    assert args[0] == "offrl"
    res = CliRunner().invoke(main, [*args[1:], "--local-dir", str(tmp_path / "results"), *extra])
    assert res.exit_code == 0, res.stderr
    return json.loads(res.stdout.splitlines()[-1]), res.stderr


@pytest.mark.slow  # ~10 s on 2 shared cores: four short training runs
def test_the_reference_documents_three_examples(tmp_path: Path) -> None:
    # 1. 2,000 steps instead of 100,000 (a unit test must stay fast)
    _, err = _run(WRITE.replace("100000", "2000"), tmp_path, "--seed", "1")
    files = sorted((tmp_path / "cartpole-out").glob("output-*_worker-0_*.json"))
    assert files and sum(len(f.read_text().splitlines()) for f in files) == 10  # 200-row records
    assert err.count("is out of date") <= 1  # gymnasium's CartPole-v0 note, once at most

    # 2. The document gives no --stop (the run goes on until Ctrl-C): one iteration here.
    result, err = _run(TRAIN, tmp_path, "--seed", "2", "--stop", '{"training_iteration": 1}')
    assert result["rows_read"] >= 1000 and result["epoch"] == 0
    assert result["episodes_total"] > 0  # the "simulation" of input_evaluation
    assert result["episode_reward_mean"] > 0
    assert "info/learner/mean_q" in result

    # 3. A local directory stands in for the HDFS archive (no Hadoop here).
    archive = tmp_path / "archive"
    archive.mkdir()
    for f in files[:3]:
        (archive / f.name).write_bytes(f.read_bytes())
    mix = MIX.replace("hdfs:/archive/cartpole", str(archive))
    # five iterations (~25 draws): with two, 10 draws of 200-row batches can miss a 0.3 source
    result, _ = _run(mix, tmp_path, "--seed", "3", "--stop", '{"training_iteration": 5}')
    fractions = {src: result[f"input/{src}/row_fraction"] for src in ("sampler", str(archive))}
    assert result[f"input/{tmp_path / 'cartpole-out'}/rows"] > 0
    assert all(0 < f < 1 for f in fractions.values())
    assert result["input/sampler/fraction"] == pytest.approx(0.3, abs=0.15)  # rows, not batches


def test_the_mix_names_hdfs_as_a_filesystem_not_a_missing_local_path(tmp_path: Path) -> None:
    """Typed literally, the mix reaches for HDFS: without Hadoop that is a clear error."""
    args = _words(MIX.replace("/tmp/cartpole-out", str(tmp_path)))
    (tmp_path / "output-x_worker-0_0.json").write_text("")
    res = CliRunner().invoke(main, [*args[1:], "--local-dir", str(tmp_path / "results")])
    assert res.exit_code == 1
    assert "hdfs" in res.stderr and "no input files found" not in res.stderr
    assert not (tmp_path / "results").exists()


def test_output_logdir_reads_back_from_the_run_directory(tmp_path: Path) -> None:
    """Data written with "output": "logdir" lies beside result.json and params.json."""
    result, _ = _run(
        """offrl train --run PG --env CartPole-v1 --config '{"output": "logdir"}' """
        """--stop '{"training_iteration": 2}'""",
        tmp_path,
    )
    logdir = result["logdir"]
    result, _ = _run(
        f"""offrl train --run DQN --env CartPole-v1 --config '{{"input": "{logdir}", """
        """"timesteps_per_iteration": 200, "learning_starts": 100}' """
        """--stop '{"training_iteration": 1}'""",
        tmp_path,
    )
    assert result["rows_read"] >= 200 and result["files"] == 1
