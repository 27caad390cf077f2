"""examples/saving_experiences.py end to end: its files load back identically."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from offrl.io.decode import decode_record
from offrl.io.encode import encode_record
from tests.shared_data import RLLIB_FIXTURE

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = RLLIB_FIXTURE


@pytest.fixture(scope="module")
def example() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "saving_experiences", ROOT / "examples" / "saving_experiences.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_written_episodes_load_back_identically(example: ModuleType, tmp_path: Path) -> None:
    assert example.main(["--out", str(tmp_path), "--episodes", "3", "--seed", "5"]) == 0
    (path,) = tmp_path.glob("output-*_worker-0_0.json")
    lines = path.read_bytes().splitlines()
    expected = list(example.collect_episodes(3, 5))
    assert len(lines) == 3
    for lineno, (line, want) in enumerate(zip(lines, expected, strict=True), 1):
        assert json.loads(line)["obs"].startswith("BCJNG")  # compressed by default
        got = decode_record(line, path=str(path), lineno=lineno)
        assert sorted(got.keys()) == sorted(want.keys())
        for name, arr in want.items():
            if name == "infos":
                assert list(got[name]) == list(arr)
            else:
                assert got[name].dtype == arr.dtype, name
                assert got[name].tobytes() == arr.tobytes(), name


def test_episodes_are_consistent_and_seeded(example: ModuleType) -> None:
    episodes = list(example.collect_episodes(3, 11))
    again = list(example.collect_episodes(3, 11))
    for ep, ep2 in zip(episodes, again, strict=True):
        assert ep["obs"].tobytes() == ep2["obs"].tobytes()
        n = ep.count
        assert ep["t"].tolist() == list(range(n))
        assert len(set(ep["eps_id"].tolist())) == 1
        assert np.array_equal(ep["new_obs"][:-1], ep["obs"][1:])
        assert ep["dones"].tolist() == [False] * (n - 1) + [True]
        assert ep["prev_actions"][0] == 0 and np.array_equal(
            ep["prev_actions"][1:], ep["actions"][:-1]
        )
        assert np.allclose(np.exp(ep["action_logp"]), ep["action_prob"])
    assert len({int(ep["eps_id"][0]) for ep in episodes}) == 3
    assert any(int(ep["eps_id"][0]) > 2**53 for ep in episodes)


def _element_type(value: list[Any]) -> Any:
    first = value[0]
    return ["list", type(first[0]).__name__] if isinstance(first, list) else type(first).__name__


def test_our_columns_have_the_rllib_fixture_json_types(example: ModuleType) -> None:
    fixture = json.loads(FIXTURE.read_bytes().splitlines()[0])
    ours = json.loads(encode_record(next(example.collect_episodes(1, 0)), compress_columns=()))
    ours_only = set(ours) - set(fixture)
    fixture_only = set(fixture) - set(ours)
    assert ours_only == {"terminateds", "truncateds", "action_logp"}  # gymnasium-era extras
    assert fixture_only == {"weights", "q_values"}  # DQN's own extras
    for name in set(ours) & set(fixture) - {"type"}:
        assert _element_type(ours[name]) == _element_type(fixture[name]), name
