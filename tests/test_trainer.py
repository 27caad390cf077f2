"""The training loop's pieces: estimates per iteration, stop keys."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from shared_data import RLLIB_260_DQN_CARTPOLE

from offrl.config import CommonConfig
from offrl.estimators import estimators_for, feed_estimators
from offrl.io.input import make_input_reader
from offrl.trainer import _estimates


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
