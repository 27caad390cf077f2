"""offrl data validate: clean data passes; each FORMAT.md rule broken once is reported once."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from offrl.batch import SampleBatch
from offrl.commands.data import data
from offrl.datatools.validate import Problem, validate_paths
from offrl.envs import env_spaces
from offrl.io.json_writer import JsonWriter
from tests.shared_data import RLLIB_FIXTURE

FIXTURE = RLLIB_FIXTURE


def records() -> list[dict[str, Any]]:
    return [json.loads(line) for line in FIXTURE.read_text().splitlines() if line.strip()]


def write_records(path: Path, recs: list[dict[str, Any]]) -> Path:
    # json.dumps writes NaN as the NaN token, as RLlib's files do.
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return path


def broken(tmp_path: Path, edit: Callable[[list[dict[str, Any]]], None]) -> list[Problem]:
    recs = records()
    edit(recs)
    return list(validate_paths([str(write_records(tmp_path / "broken.json", recs))]))


def only(problems: list[Problem], rule: str, line: int) -> Problem:
    assert [(p.rule, p.line) for p in problems] == [(rule, line)], problems
    return problems[0]


def test_fixture_is_clean_also_against_cartpole() -> None:
    assert list(validate_paths([str(FIXTURE)])) == []
    assert list(validate_paths([str(FIXTURE)], env_spaces("CartPole-v1"))) == []


def test_own_compressed_output_is_clean(tmp_path: Path) -> None:
    recs = records()
    with JsonWriter(tmp_path / "out", codec="offrl") as w:
        for r in recs:
            cols = {k: v for k, v in r.items() if k != "type"}
            w.write(SampleBatch({k: np.asarray(v) if k != "infos" else v for k, v in cols.items()}))
    assert list(validate_paths([str(tmp_path / "out")])) == []


def test_rule_json_truncated_line(tmp_path: Path) -> None:
    text = FIXTURE.read_bytes()
    cut = tmp_path / "cut.json"
    cut.write_bytes(text[:-300])
    only(list(validate_paths([str(cut)])), "json", 3)


def test_rule_record_type(tmp_path: Path) -> None:
    p = only(broken(tmp_path, lambda rs: rs[1].update(type="Episode")), "record", 2)
    assert "Episode" in p.message


def test_rule_codec(tmp_path: Path) -> None:
    only(broken(tmp_path, lambda rs: rs[0].update(obs="BCJNGnot-base64!")), "codec", 1)


def test_rule_required(tmp_path: Path) -> None:
    p = only(broken(tmp_path, lambda rs: rs[2].pop("rewards")), "required", 3)
    assert "rewards" in p.message


def test_rule_lengths(tmp_path: Path) -> None:
    p = only(broken(tmp_path, lambda rs: rs[1]["rewards"].pop()), "lengths", 2)
    assert "'rewards': 25" in p.message


def test_rule_finite(tmp_path: Path) -> None:
    def edit(rs: list[dict[str, Any]]) -> None:
        rs[0]["rewards"][4] = math.nan

    p = only(broken(tmp_path, edit), "finite", 1)
    assert "'rewards'" in p.message and "row 4" in p.message


def test_rule_prob_range(tmp_path: Path) -> None:
    def edit(rs: list[dict[str, Any]]) -> None:
        rs[2]["action_prob"][5] = 1.5

    assert "row 5" in only(broken(tmp_path, edit), "prob_range", 3).message


def test_rule_logp(tmp_path: Path) -> None:
    def edit(rs: list[dict[str, Any]]) -> None:
        for r in rs:
            r["action_logp"] = [math.log(p) for p in r["action_prob"]]
        rs[1]["action_logp"][3] = math.log(0.9)

    assert "row 3" in only(broken(tmp_path, edit), "logp", 2).message


def test_rule_t_sequence(tmp_path: Path) -> None:
    def edit(rs: list[dict[str, Any]]) -> None:
        rs[0]["t"][10] = 42

    only(broken(tmp_path, edit), "t_sequence", 1)


def test_rule_dones_mid_episode(tmp_path: Path) -> None:
    def edit(rs: list[dict[str, Any]]) -> None:
        rs[0]["dones"][10] = True

    assert "row 10" in only(broken(tmp_path, edit), "dones", 1).message


def test_rule_dones_across_records(tmp_path: Path) -> None:
    # Record 2 reuses record 1's episode id although record 1 ended it with done.
    def edit(rs: list[dict[str, Any]]) -> None:
        rs[1]["eps_id"] = rs[0]["eps_id"][:1] * len(rs[1]["eps_id"])

    only(broken(tmp_path, edit), "dones", 2)


def test_rule_new_obs(tmp_path: Path) -> None:
    def edit(rs: list[dict[str, Any]]) -> None:
        rs[2]["new_obs"][7][0] += 1.0

    assert "row 7" in only(broken(tmp_path, edit), "new_obs", 3).message


def test_rule_spaces(tmp_path: Path) -> None:
    recs = records()
    recs[1]["actions"][3] = 2
    path = write_records(tmp_path / "acts.json", recs)
    p = only(list(validate_paths([str(path)], env_spaces("CartPole-v1"))), "spaces", 2)
    assert "Discrete(2)" in p.message and "row 3" in p.message
    recs = records()
    recs[0]["obs"] = [row[:3] for row in recs[0]["obs"]]
    recs[0]["new_obs"] = [row[:3] for row in recs[0]["new_obs"]]
    path = write_records(tmp_path / "shape.json", recs)
    problems = list(validate_paths([str(path)], env_spaces("CartPole-v1")))
    assert {(p.rule, p.line) for p in problems} == {("spaces", 1)}
    assert "(4,)" in problems[0].message and "(3,)" in problems[0].message


@pytest.mark.parametrize("env_flag", [[], ["--env", "CartPole-v1"]])
def test_cli_exit_0_when_clean(env_flag: list[str]) -> None:
    res = CliRunner().invoke(data, ["validate", *env_flag, str(FIXTURE)])
    assert res.exit_code == 0, res.output
    assert "1 file(s) valid" in res.output


def test_cli_exit_1_lists_file_line_rule(tmp_path: Path) -> None:
    recs = records()
    recs[2]["action_prob"][0] = -0.1
    recs[0]["t"][3] = 7
    path = write_records(tmp_path / "bad.json", recs)
    res = CliRunner().invoke(data, ["validate", str(path)])
    assert res.exit_code == 1
    lines = [line for line in res.output.splitlines() if line.startswith(str(path))]
    assert lines[0].startswith(f"{path}:1: [t_sequence]")
    assert lines[1].startswith(f"{path}:3: [prob_range]")
    assert "2 problem(s)" in res.output


def test_cli_unknown_env_is_usage_error() -> None:
    res = CliRunner().invoke(data, ["validate", "--env", "CartPoleX-v9", str(FIXTURE)])
    assert res.exit_code == 2


def split_first_record(recs: list[dict[str, Any]], at: int) -> list[dict[str, Any]]:
    first = recs[0]
    head = {k: v if k == "type" else v[:at] for k, v in first.items()}
    tail = {k: v if k == "type" else v[at:] for k, v in first.items()}
    return [head, tail, *recs[1:]]


def test_episode_followed_across_records(tmp_path: Path) -> None:
    recs = split_first_record(records(), 30)
    assert list(validate_paths([str(write_records(tmp_path / "ok.json", recs))])) == []
    recs[1]["obs"][0][2] += 0.5  # breaks new_obs[29] == obs[30] at the seam only
    recs[1]["t"] = [t + 1 for t in recs[1]["t"]]  # ...and t jumps from 29 to 31
    problems = list(validate_paths([str(write_records(tmp_path / "bad.json", recs))]))
    assert [(p.rule, p.line) for p in problems] == [("t_sequence", 2)]
    recs[1]["t"] = [t - 1 for t in recs[1]["t"]]
    problems = list(validate_paths([str(write_records(tmp_path / "bad2.json", recs))]))
    assert [(p.rule, p.line) for p in problems] == [("new_obs", 2)]


def test_empty_file_is_a_problem(tmp_path: Path) -> None:
    (tmp_path / "empty.json").write_text("\n")
    problems = list(validate_paths([str(tmp_path / "empty.json")]))
    assert [(p.rule, p.line) for p in problems] == [("record", None)]
    assert "empty" in problems[0].message


def test_degenerate_behaviour_probabilities_warn_but_do_not_fail() -> None:
    """RLlib's DQN writes action_prob 1.0 on every row although it explored."""
    from shared_data import RLLIB_260_DQN_CARTPOLE

    from offrl.cli import main

    res = CliRunner().invoke(main, ["data", "validate", "-q", str(RLLIB_260_DQN_CARTPOLE)])
    assert res.exit_code == 0, res.output
    assert res.stderr.count("[behaviour_prob]") == 1
    assert "every action_prob is 1.0" in res.stderr and "is, wis, dr" in res.stderr
