"""The training loop's pieces: estimates per iteration, stop keys."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from shared_data import RLLIB_260_DQN_CARTPOLE

from offrl.batch import SampleBatch
from offrl.config import CommonConfig
from offrl.estimators import estimators_for, feed_estimators
from offrl.io.input import make_input_reader
from offrl.trainer import Run, _estimates


def _uniform(obs: np.ndarray) -> np.ndarray:
    return np.full((len(obs), 2), 0.5)


def test_dm_and_dr_both_estimate_in_the_same_iteration() -> None:
    """RLlib's DQN files, one iteration's batches: dr reported num_episodes 0 because dm's
    reset (right after dm's estimate) emptied the episodes dm and dr share."""
    import gymnasium as gym

    env = gym.make("CartPole-v1")
    estimators = estimators_for(
        ["is", "dm", "dr"],
        gamma=0.99,
        observation_space=env.observation_space,
        action_space=env.action_space,
        seed=0,
        fqe_config={"n_iters": 2},
    )
    reader = make_input_reader(
        str(RLLIB_260_DQN_CARTPOLE), config=CommonConfig(), seed=0, worker_index=0, num_workers=1
    )
    for _ in range(2):
        for batch in reader.iter_epoch():
            for warning in feed_estimators(estimators, batch, _uniform):
                assert "every action_prob is 1.0" in warning  # no estimator is dropped
        out = _estimates(SimpleNamespace(estimators=estimators))
        n = out["off_policy_estimation/is/num_episodes"]
        assert n > 0
        assert out["off_policy_estimation/dm/num_episodes"] == n
        assert out["off_policy_estimation/dr/num_episodes"] == n
        assert "off_policy_estimation/dr/v_target" in out


@pytest.mark.parametrize("order", [["dr", "dm"], ["dm", "dr"]])
def test_estimates_then_reset_in_either_order(order: list[str]) -> None:
    import gymnasium as gym

    env = gym.make("CartPole-v1")
    estimators = estimators_for(
        order,
        gamma=0.9,
        observation_space=env.observation_space,
        action_space=env.action_space,
        seed=0,
        fqe_config={"n_iters": 2},
    )
    reader = make_input_reader(
        str(RLLIB_260_DQN_CARTPOLE), config=CommonConfig(), seed=0, worker_index=0, num_workers=1
    )
    for batch in reader.iter_epoch():
        feed_estimators(estimators, batch, _uniform)
    out = _estimates(SimpleNamespace(estimators=estimators))
    assert out["off_policy_estimation/dm/num_episodes"] > 0
    assert out["off_policy_estimation/dr/num_episodes"] > 0
    # after the iteration both start empty
    again = _estimates(SimpleNamespace(estimators=estimators))
    assert again["off_policy_estimation/dr/num_episodes"] == 0


# -- stop keys a run will never report ------------------------------------------------------


def _cfg(run: str, **keys: object) -> CommonConfig:
    from offrl.algos import get_config_class
    from offrl.config import from_dict

    return from_dict(get_config_class(run), keys, algo=run)


@pytest.mark.parametrize(
    ("run", "key", "config", "needles"),
    [
        ("PG", "evaluation/episode_reward_mean", {}, ['"evaluation_interval": N']),
        (
            "DQN",
            "episode_reward_mean",
            {"input": "/data"},
            ["offline run has no episodes", '"input_evaluation": ["simulation"]'],
        ),
        ("DQN", "episodes_total", {"input": "/data"}, ["offline run has no episodes"]),
        ("PG", "info/learner/foo", {}, ["PG's learner", "reports no 'foo'", "policy_loss"]),
        ("DQN", "info/learner/mean_qq", {}, ["did you mean 'mean_q'"]),
        ("DQN", "off_policy_estimation/dr/v_target", {"input": "/d"}, ["add it to"]),
        (
            "DQN",
            "off_policy_estimation/is/v_targt",
            {"input": "/d", "input_evaluation": ["is"]},
            ["did you mean 'v_target'"],
        ),
        ("PG", "input/sampler/fraction", {}, ["input mix"]),
        ("PG", "epoch", {}, ["read recorded files"]),
        ("PG", "time_output_write_s", {}, ["'output'"]),
        ("PG", "num_worker_restarts", {}, ['"num_workers": N']),
    ],
)
def test_stop_keys_the_run_never_reports_are_refused(
    run: str, key: str, config: dict, needles: list[str]
) -> None:
    from offrl.errors import ConfigError
    from offrl.trainer import check_stop_reachable

    with pytest.raises(ConfigError) as err:
        check_stop_reachable({key: 1}, run, _cfg(run, **config))
    assert err.value.exit_code == 2
    for needle in needles:
        assert needle in str(err.value)


@pytest.mark.parametrize(
    ("run", "key", "config"),
    [
        ("PG", "episode_reward_mean", {}),
        ("DQN", "episode_reward_mean", {"input": "/d", "input_evaluation": "simulation"}),
        ("DQN", "episode_reward_max", {"input": "/d", "evaluation_interval": 1}),
        ("DQN", "evaluation/episode_reward_mean", {"evaluation_interval": 2}),
        ("DQN", "info/learner/mean_q", {}),
        ("PG", "info/learner/vf_loss", {"use_baseline": True}),
        ("DQN", "off_policy_estimation/dr/v_target", {"input": "/d", "input_evaluation": ["dr"]}),
        ("DQN", "input/sampler/row_fraction", {"input": {"sampler": 0.5, "/d": 0.5}}),
        ("DQN", "epoch", {"input": "/d"}),
        ("DQN", "training_iteration", {"input": "/d"}),
    ],
)
def test_stop_keys_the_run_reports_are_accepted(run: str, key: str, config: dict) -> None:
    from offrl.trainer import stop_problem

    assert stop_problem(key, run, _cfg(run, **config)) is None


def test_reward_suggests_episode_reward_mean() -> None:
    from offrl.errors import ConfigError
    from offrl.trainer import validate_stop

    with pytest.raises(ConfigError, match="did you mean 'episode_reward_mean'"):
        validate_stop({"reward": 100})


@pytest.mark.slow
@pytest.mark.parametrize("run", ["PG", "DQN"])
def test_learner_stats_lists_match_what_learners_report(run: str, tmp_path: Path) -> None:
    """LEARNER_STATS must list every info/learner/ key real runs produce."""
    from click.testing import CliRunner

    from offrl.cli import main
    from offrl.trainer import LEARNER_STATS

    configs = {
        "PG": [{"use_baseline": True}, {"kl_target": 0.01}],
        "DQN": [{"learning_starts": 10, "timesteps_per_iteration": 100}],
    }
    seen: set[str] = set()
    for extra in configs[run]:
        config = {"train_batch_size": 200, "model": {"fcnet_hiddens": [16]}, **extra}
        res = CliRunner().invoke(
            main,
            ["train", "--run", run, "--env", "CartPole-v1", "--local-dir", str(tmp_path)]
            + ["-q", "--config", json.dumps(config), "--stop", '{"training_iteration": 2}'],
        )
        assert res.exit_code == 0, res.stderr
        seen |= {k[len("info/learner/") :] for k in json.loads(res.stdout) if "learner/" in k}
    assert seen <= LEARNER_STATS[run]
    assert len(seen) >= len(LEARNER_STATS[run]) - 1  # all but at most one rare key seen


# -- should_stop and validate_stop ------------------------------------------------------------


@pytest.mark.parametrize(
    ("result", "stop", "expected"),
    [
        ({"timesteps_total": 999}, {"timesteps_total": 1000}, False),
        ({"timesteps_total": 1000}, {"timesteps_total": 1000}, True),  # reached counts
        ({"timesteps_total": 5, "episode_reward_mean": 476.0}, {"timesteps_total": 10**6}, False),
        # ANY key reaching its threshold stops (RLlib's rule)
        (
            {"timesteps_total": 5, "episode_reward_mean": 476.0},
            {"timesteps_total": 10**6, "episode_reward_mean": 475},
            True,
        ),
        ({"training_iteration": 3}, {"episode_reward_mean": 475}, False),  # key not reported
        ({"x/flag": True}, {"x/flag": 1}, False),  # a bool is not a number here
        ({"epoch": None}, {"epoch": 1}, False),
        ({"info/learner/loss": -1.5}, {"info/learner/loss": -2.0}, True),
        ({"training_iteration": 1}, {}, False),  # no stop criteria: never stops
    ],
)
def test_should_stop(result: dict, stop: dict, expected: bool) -> None:
    from offrl.trainer import should_stop

    assert should_stop(result, stop) is expected


@pytest.mark.parametrize(
    ("stop", "needle"),
    [
        ([("timesteps_total", 1)], "must be a JSON object"),
        ({"timesteps_total": "100"}, "threshold '100' must be a number"),
        ({"timesteps_total": True}, "threshold True must be a number"),
        ({"timestep_total": 100}, "did you mean 'timesteps_total'"),
        ({"learner/loss": 1}, "keys under info/learner/"),
    ],
)
def test_validate_stop_refuses(stop: object, needle: str) -> None:
    from offrl.errors import ConfigError
    from offrl.trainer import validate_stop

    with pytest.raises(ConfigError) as err:
        validate_stop(stop)  # type: ignore[arg-type]
    assert needle in str(err.value)
    assert err.value.exit_code == 2


def test_validate_stop_accepts_known_keys_and_prefixes() -> None:
    from offrl.trainer import KNOWN_RESULT_KEYS, validate_stop

    validate_stop({})
    validate_stop({key: 1 for key in KNOWN_RESULT_KEYS})
    validate_stop(
        {
            "info/learner/anything": 0.5,
            "evaluation/episode_reward_mean": 10,
            "off_policy_estimation/is/v_target": 1.0,
            "input/sampler/fraction": 0.5,
        }
    )


# -- the train() generator over a fake source and algorithm -----------------------------------


class FakeAlgo:
    """Counts what the trainer asks of it; learns nothing."""

    def __init__(self, per_iteration: int) -> None:
        self.per_iteration = per_iteration
        self.learned: list[tuple[int, int, bool]] = []  # (rows, timesteps_total, postprocessed)

    def steps_per_iteration(self) -> int:
        return self.per_iteration

    def postprocess(self, batch: SampleBatch) -> SampleBatch:
        out = batch.copy()
        out["advantages"] = np.ones(batch.count, dtype=np.float32)
        return out

    def learn(self, batch: SampleBatch, timesteps_total: int) -> dict[str, float]:
        self.learned.append((batch.count, timesteps_total, "advantages" in batch))
        return {"loss": float(len(self.learned))}

    def action_probs(self, obs: np.ndarray) -> np.ndarray:
        return _uniform(obs)


class FakeSource:
    """Batches of ``rows`` rows; ``live`` says whether they count as sampled env steps."""

    def __init__(self, rows: int, live: bool) -> None:
        self.rows, self.live, self.calls = rows, live, 0

    def next(self) -> tuple[SampleBatch, bool]:
        self.calls += 1
        n = self.rows
        batch = SampleBatch(
            obs=np.zeros((n, 4), dtype=np.float32),
            actions=np.zeros(n, dtype=np.int64),
            rewards=np.ones(n, dtype=np.float32),
        )
        return batch, self.live

    def metrics(self) -> dict[str, int]:
        return {"rows_read": self.calls * self.rows}


class FakeWriter:
    def __init__(self) -> None:
        self.rows: list[int] = []

    def write(self, batch: SampleBatch) -> None:
        self.rows.append(batch.count)


def _run(
    source: FakeSource,
    algo: FakeAlgo,
    *,
    episodes: Sequence[tuple[float, int]] = (),
    config: CommonConfig | None = None,
    **fields: Any,
) -> Run:
    """A Run over the fakes; ``pop_episodes`` hands out ``episodes`` one per iteration."""
    queue = list(episodes)

    def pop_episodes() -> list[tuple[float, int]]:
        out = queue[:1]
        del queue[:1]
        return out

    return Run(
        algo=algo,  # type: ignore[arg-type]
        config=config or CommonConfig(),
        env_id="CartPole-v1",
        seed=0,
        source=source,
        pop_episodes=pop_episodes,
        **fields,
    )


def test_train_yields_one_result_per_iteration_with_counters() -> None:
    from offrl.trainer import ALWAYS_KEYS, train

    algo = FakeAlgo(per_iteration=25)
    writer = FakeWriter()
    run = _run(FakeSource(10, live=True), algo, output=writer, episodes=[(10.0, 10), (30.0, 20)])
    results = train(run)
    first, second, third = next(results), next(results), next(results)
    # 25 rows asked, batches of 10: three batches (30 rows) per iteration
    assert [r["timesteps_this_iter"] for r in (first, second, third)] == [30, 30, 30]
    assert [r["timesteps_total"] for r in (first, second, third)] == [30, 60, 90]
    assert [r["training_iteration"] for r in (first, second, third)] == [1, 2, 3]
    assert third["num_env_steps_sampled"] == 90  # live rows are sampled env steps
    # learn() sees the running total after each batch; live batches are postprocessed
    assert algo.learned[:4] == [(10, 10, True), (10, 20, True), (10, 30, True), (10, 40, True)]
    assert writer.rows == [10] * 9  # every live batch written once
    assert "time_output_write_s" in first
    assert set(first) >= ALWAYS_KEYS
    # episodes: one per iteration from pop_episodes, stats over the window
    assert first["episode_reward_mean"] == 10.0 and first["episodes_this_iter"] == 1
    assert second["episode_reward_mean"] == 20.0 and second["episode_reward_max"] == 30.0
    assert second["episode_len_mean"] == 15.0 and second["episodes_total"] == 2
    assert third["episodes_this_iter"] == 0 and third["episodes_total"] == 2
    assert third["info/learner/loss"] == 9.0  # the last learn()'s stats
    assert third["rows_read"] == 90  # the source's metrics
    assert third["time_total_s"] >= third["time_this_iter_s"] >= 0


def test_train_offline_batches_are_not_sampled_steps_nor_postprocessed() -> None:
    from offrl.trainer import train

    algo = FakeAlgo(per_iteration=20)
    run = _run(FakeSource(20, live=False), algo, output=FakeWriter())
    result = next(train(run))
    assert result["timesteps_total"] == 20 and result["num_env_steps_sampled"] == 0
    assert result["num_env_steps_per_s"] == 0.0
    assert run.output.rows == []  # recorded data is not written again
    assert algo.learned == [(20, 20, False)]
    assert "episode_reward_mean" not in result  # no episodes, no made-up returns
    # postprocess_inputs: offline batches go through postprocess too
    algo = FakeAlgo(per_iteration=20)
    cfg = CommonConfig(postprocess_inputs=True)
    next(train(_run(FakeSource(20, live=False), algo, config=cfg)))
    assert algo.learned == [(20, 20, True)]


def test_train_ends_the_iteration_at_the_next_batch_once_a_stop_is_requested() -> None:
    from offrl.trainer import train

    algo = FakeAlgo(per_iteration=1000)
    requested = {"stop": False}
    source = FakeSource(10, live=True)
    run = _run(source, algo, stop_requested=lambda: requested["stop"])
    requested["stop"] = True
    result = next(train(run))
    assert result["timesteps_this_iter"] == 10  # one batch, then the iteration ends
    assert source.calls == 1


def test_train_continues_counters_restored_from_a_checkpoint() -> None:
    from offrl.trainer import Counters, train

    counters = Counters(training_iteration=7, timesteps_total=700, episodes_total=3)
    counters.recent_returns.extend([1.0, 2.0, 3.0])
    counters.recent_lengths.extend([1, 2, 3])
    restored = Counters.from_state(json.loads(json.dumps(counters.state())))
    assert restored.state() == counters.state()
    run = _run(FakeSource(10, live=True), FakeAlgo(10), counters=restored)
    result = next(train(run))
    assert result["training_iteration"] == 8
    assert result["timesteps_total"] == 710
    assert result["episode_reward_mean"] == 2.0  # the restored window
