"""build_run: a config's ``input``, ``output`` and ``input_evaluation`` turned into a Run.

In-process, with tiny configs: every run here trains one iteration of a few hundred rows.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from shared_data import RLLIB_260_DQN_CARTPOLE, RLLIB_260_PPO_PENDULUM

from offrl.algos import get_algorithm
from offrl.config import from_dict
from offrl.envs import env_spaces
from offrl.io.json_reader import JsonReader
from offrl.rollout import Sampler
from offrl.trainer import train
from offrl.wiring import build_run

ENV = "CartPole-v1"
TINY = {
    "PG": {"train_batch_size": 64, "num_envs_per_worker": 2, "model": {"fcnet_hiddens": [8]}},
    "DQN": {
        "timesteps_per_iteration": 64,
        "learning_starts": 16,
        "train_batch_size": 16,
        "model": {"fcnet_hiddens": [8]},
        "hiddens": [],
    },
}


def _algo(run: str, env: str = ENV, **config: Any) -> tuple[Any, Any]:
    config_cls, algo_cls = get_algorithm(run)
    cfg = from_dict(config_cls, {**TINY[run], "seed": 3, **config}, algo=run)
    return algo_cls(cfg, *env_spaces(env)), cfg


@pytest.fixture
def closed_samplers(monkeypatch: pytest.MonkeyPatch) -> list[Sampler]:
    """Every Sampler closed, in order (Sampler.close still runs)."""
    closed: list[Sampler] = []
    close = Sampler.close

    def recording_close(self: Sampler) -> None:
        closed.append(self)
        close(self)

    monkeypatch.setattr(Sampler, "close", recording_close)
    return closed


def test_online_run_samples_live_and_closes_its_sampler(
    tmp_path: Path, closed_samplers: list[Sampler]
) -> None:
    algo, cfg = _algo("PG")
    with build_run(algo, "PG", cfg, ENV, 3, tmp_path) as run:
        assert run.output is None and run.estimators == {} and run.simulate is None
        assert len(run.samplers) == 1
        batch, live = run.source.next()
        # one fragment of two envs: at least fragment_length * 2 rows, fewer than 2 more
        assert live
        assert 0 <= batch.count - algo.rollout_fragment_length() * 2 < 2
        assert run.source.metrics() == {}  # a sampler has no reader metrics
        result = next(train(run))
        assert result["num_env_steps_sampled"] == result["timesteps_this_iter"] >= 64
        assert "info/learner/policy_loss" in result
        sampler = run.samplers[0]
        assert closed_samplers == []
    assert closed_samplers == [sampler]
    assert run.sampler_states() is not None  # a CartPole sampler can be checkpointed


def test_offline_run_reads_the_file_checks_spaces_and_estimates(tmp_path: Path) -> None:
    algo, cfg = _algo("DQN", input=str(RLLIB_260_DQN_CARTPOLE), input_evaluation=["is", "wis"])
    with build_run(algo, "DQN", cfg, ENV, 3, tmp_path) as run:
        assert run.samplers == [] and run.simulate is None
        assert sorted(run.estimators) == ["is", "wis"]
        batch, live = run.source.next()
        assert not live and batch.count > 0
        assert batch["obs"].shape[1:] == (4,)
        result = next(train(run))
    assert result["num_env_steps_sampled"] == 0
    assert result["rows_read"] >= 64 and result["files"] == 1
    assert result["num_corrupt_lines_skipped"] == 0
    for name in ("is", "wis"):
        assert np.isfinite(result[f"off_policy_estimation/{name}/v_target"])
    assert "episode_reward_mean" not in result  # an offline run has no episodes of its own


def test_offline_run_with_simulation_steps_a_sampler_beside_the_reader(
    tmp_path: Path, closed_samplers: list[Sampler]
) -> None:
    algo, cfg = _algo("DQN", input=str(RLLIB_260_DQN_CARTPOLE), input_evaluation=["simulation"])
    with build_run(algo, "DQN", cfg, ENV, 3, tmp_path) as run:
        assert run.simulate is not None and run.estimators == {}
        result = next(train(run))
        assert result["num_env_steps_sampled"] == 0  # simulated steps are not training data
    assert len(closed_samplers) == 1


def test_offline_run_behind_a_shuffle_buffer(tmp_path: Path) -> None:
    from offrl.io.shuffle import ShuffledInput

    path = str(RLLIB_260_DQN_CARTPOLE)
    algo, cfg = _algo("DQN", input=path, shuffle_buffer_size=4)
    with build_run(algo, "DQN", cfg, ENV, 3, tmp_path) as run:
        assert isinstance(run.source.sources["offline"], ShuffledInput)
        shuffled = [run.source.next()[0]["eps_id"][0] for _ in range(8)]
    in_order = [
        b["eps_id"][0] for b, _ in zip(JsonReader(path).iter_epoch(), range(8), strict=False)
    ]
    assert shuffled != in_order  # the buffer changed the order (seed 3)


def test_mixed_run_draws_from_both_sources_and_reports_the_mix(tmp_path: Path) -> None:
    mix = {"sampler": 0.5, str(RLLIB_260_DQN_CARTPOLE): 0.5}
    algo, cfg = _algo("DQN", input=mix)
    with build_run(algo, "DQN", cfg, ENV, 3, tmp_path) as run:
        assert len(run.samplers) == 1
        lives = [run.source.next()[1] for _ in range(40)]
        metrics = run.source.metrics()
    assert 0 < sum(lives) < 40  # both sources were drawn
    assert metrics["input/sampler/batches"] == sum(lives)
    assert metrics["rows_read"] > 0  # the file reader's metrics come through


def test_output_records_every_live_step_and_is_closed_on_exit(tmp_path: Path) -> None:
    out = tmp_path / "out"
    algo, cfg = _algo("PG", output=str(out))
    with build_run(algo, "PG", cfg, ENV, 3, tmp_path) as run:
        result = next(train(run))
        writer = run.output
    assert writer is not None and writer.current_path is None  # closed on exit
    rows = sum(b.count for b in JsonReader(str(out)).iter_epoch())
    assert rows == result["num_env_steps_sampled"]
    assert result["time_output_write_s"] >= 0


def test_output_logdir_writes_into_the_run_directory(tmp_path: Path) -> None:
    algo, cfg = _algo("PG", output="logdir")
    with build_run(algo, "PG", cfg, ENV, 3, tmp_path) as run:
        next(train(run))
    files = list(tmp_path.glob("output-*_worker-0_0.json"))
    assert len(files) == 1
    first = json.loads(files[0].read_text().splitlines()[0])
    assert first["type"] == "SampleBatch"


def test_output_is_closed_when_the_run_fails(tmp_path: Path) -> None:
    out = tmp_path / "out"
    algo, cfg = _algo("PG", output=str(out))
    with (
        pytest.raises(RuntimeError, match="boom"),
        build_run(algo, "PG", cfg, ENV, 3, tmp_path) as run,
    ):
        next(train(run))
        writer = run.output
        raise RuntimeError("boom")
    assert writer.current_path is None
    for f in out.glob("*.json"):
        assert f.read_bytes().endswith(b"\n")


def test_estimators_a_box_action_space_rules_out_are_named_in_warnings(tmp_path: Path) -> None:
    path = str(RLLIB_260_PPO_PENDULUM)
    algo, cfg = _algo(
        "PG", "Pendulum-v1", input=path, postprocess_inputs=True, input_evaluation=["is", "dm"]
    )
    with build_run(algo, "PG", cfg, "Pendulum-v1", 3, tmp_path) as run:
        assert sorted(run.estimators) == ["is"]
        assert len(run.warnings) == 1 and "'dm' skipped" in run.warnings[0]
        assert "Discrete" in run.warnings[0]
        result = next(train(run))
    assert np.isfinite(result["off_policy_estimation/is/v_target"])
