"""observation_filter "MeanStdFilter": running statistics on hand-computed numbers, the
config key, checkpoints, acting weights, and a run end to end (files keep raw observations)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from offrl import batch as sb
from offrl.algos.dqn import DQN, DQNConfig
from offrl.algos.obsfilter import MeanStdFilter
from offrl.algos.pg import PG, PGConfig
from offrl.cli import main
from offrl.commands.rollout import load_policy
from offrl.config import from_dict
from offrl.errors import ConfigError
from offrl.io.json_reader import JsonReader
from offrl.restore import restore_policy_state
from offrl.results import load_run_checkpoint
from offrl.workers import acting_weights, load_acting_weights

OBS_SPACE = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)
ACT_SPACE = gym.spaces.Discrete(2)
FILTER = {"observation_filter": "MeanStdFilter"}


def invoke(*args: str) -> tuple[int, str, str]:
    res = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return res.exit_code, res.stdout, res.stderr


# -- the statistics ----------------------------------------------------------------------


def test_two_batches_give_the_hand_computed_mean_and_sample_variance() -> None:
    f = MeanStdFilter(2)
    f.update(np.array([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0]]))
    f.update(np.array([[4.0, 40.0], [5.0, 50.0]]))
    # mean of 1..5 is 3; squared deviations 4+1+0+1+4 = 10 over 5 - 1 rows: 2.5
    assert f.count == 5
    np.testing.assert_allclose(f.mean, [3.0, 30.0], rtol=1e-15)
    np.testing.assert_allclose(f.std, np.sqrt([2.5, 250.0]), rtol=1e-15)


def test_merge_order_and_batch_sizes_do_not_change_the_statistics() -> None:
    x = np.random.default_rng(0).normal(5.0, 3.0, size=(40, 3))
    whole, pieces, reverse = MeanStdFilter(3), MeanStdFilter(3), MeanStdFilter(3)
    whole.update(x)
    for part in (x[:1], x[1:7], x[7:8], x[8:]):
        pieces.update(part)
    for part in (x[25:], x[3:25], x[:3]):
        reverse.update(part)
    for f in (whole, pieces, reverse):
        assert f.count == 40
        np.testing.assert_allclose(f.mean, x.mean(axis=0), rtol=1e-12)
        np.testing.assert_allclose(f.std, x.std(axis=0, ddof=1), rtol=1e-12)


def test_fewer_than_two_rows_is_the_identity() -> None:
    f = MeanStdFilter(2)
    x = np.array([[100.0, -3.0]], np.float32)
    assert f(x) is x
    f.update(np.array([[7.0, 8.0]]))
    f.update(np.zeros((0, 2)))  # an empty batch changes nothing
    assert f.count == 1
    np.testing.assert_array_equal(f.std, [1.0, 1.0])
    np.testing.assert_array_equal(f(x), x)


def test_filter_standardises_and_clips_at_10() -> None:
    f = MeanStdFilter(2)
    f.update(np.array([[0.0, 1.0], [2.0, 1.0]]))  # mean (1, 1), std (sqrt 2, 0)
    out = f(np.array([[1.0 + np.sqrt(2.0), 1.0], [100.0, 1.5], [-100.0, 0.5]], np.float32))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[0], [1.0, 0.0], atol=1e-6)  # a constant column maps to 0
    np.testing.assert_array_equal(out[1:], [[10.0, 10.0], [-10.0, -10.0]])


def test_state_is_plain_python_loadable_with_weights_only() -> None:
    f = MeanStdFilter(2)
    f.update(np.array([[1.0, 2.0], [3.0, 5.0], [4.0, 4.0]]))
    raw = io.BytesIO()
    torch.save({"obs_filter": f.state()}, raw)
    raw.seek(0)
    g = MeanStdFilter(2)
    g.load_state(torch.load(raw, weights_only=True)["obs_filter"])
    assert g.count == 3
    np.testing.assert_array_equal(g.mean, f.mean)
    np.testing.assert_array_equal(g.std, f.std)
    g.load_state(None)  # a checkpoint from before the filter: the identity
    assert g.count == 0
    with pytest.raises(ValueError, match="width"):
        MeanStdFilter(3).load_state(f.state())
    for bad in ({"m2": [-1.0, 0.0]}, {"mean": [float("nan"), 0.0]}, {"count": -2}):
        with pytest.raises(ValueError, match="statistics invalid"):
            g.load_state(f.state() | bad)


# -- the config key ------------------------------------------------------------------------


def test_unknown_filter_exits_2_naming_key_value_and_choices() -> None:
    code, _, err = invoke(
        "train", "--run", "PG", "--env", "CartPole-v1", "--config", '{"observation_filter": "Mean"}'
    )
    assert code == 2
    assert "'observation_filter'" in err and '"Mean"' in err
    assert '"NoFilter"' in err and '"MeanStdFilter"' in err
    assert "Traceback" not in err


def test_rllib_alias_builds_a_filter_and_help_config_lists_the_key() -> None:
    cfg = from_dict(PGConfig, {"observation_filter": "ConcurrentMeanStdFilter"})
    assert PG(cfg, OBS_SPACE, ACT_SPACE).obs_filter is not None
    assert PG(from_dict(PGConfig, {}), OBS_SPACE, ACT_SPACE).obs_filter is None
    code, out, _ = invoke("train", "--run", "DQN", "--help-config")
    assert code == 0
    assert 'observation_filter = "NoFilter"' in out and "MeanStdFilter" in out


@pytest.mark.parametrize("run", ["PG", "DQN"])
def test_filter_on_image_observations_exits_2(tmp_path: Path, run: str) -> None:
    code, _, err = invoke(
        "train", "--run", run, "--env", "tests.envs:ImageEnv", "--local-dir", str(tmp_path),
        "--config", json.dumps(FILTER), "--stop", '{"training_iteration": 1}',
    )  # fmt: skip
    assert code == 2
    assert "'observation_filter'" in err and "1/255" in err and "Traceback" not in err


# -- checkpoints and acting weights ------------------------------------------------------


def _pg(**config: object) -> PG:
    cfg = from_dict(PGConfig, {"seed": 0, "model": {"fcnet_hiddens": [8]}, **config})
    return PG(cfg, OBS_SPACE, ACT_SPACE)


def _dqn(**config: object) -> DQN:
    cfg = from_dict(DQNConfig, {"seed": 0, "model": {"fcnet_hiddens": [8]}, **config})
    return DQN(cfg, OBS_SPACE, ACT_SPACE)


def _obs(n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).normal([50.0, -4.0], [20.0, 0.5], (n, 2)).astype(np.float32)


@pytest.mark.parametrize("make", [_pg, _dqn])
def test_checkpoint_without_statistics_loads_as_the_identity(make: object) -> None:
    old = make()  # type: ignore[operator]
    state = old.get_state()
    assert "obs_filter" not in state  # NoFilter checkpoints are what they were
    new = make(**FILTER)  # type: ignore[operator]
    new.obs_filter.update(_obs(10))
    new.set_state(state)
    assert new.obs_filter.count == 0
    x = _obs(5, seed=2)
    np.testing.assert_array_equal(new.action_probs(x), old.action_probs(x))


def test_filtered_checkpoint_into_an_unfiltered_run_is_a_config_error() -> None:
    algo = _pg(**FILTER)
    algo.obs_filter.update(_obs(10))
    state = {"algo": algo.get_state(), "env": "X-v0", "config": {}}
    with pytest.raises(ConfigError, match='"observation_filter": "MeanStdFilter"'):
        restore_policy_state(_pg(), state, "X-v0", {}, "ckpt")


@pytest.mark.parametrize("make", [_pg, _dqn])
def test_a_worker_acts_with_the_drivers_statistics(make: object) -> None:
    driver, worker = make(**FILTER), make(**FILTER)  # type: ignore[operator]
    driver.obs_filter.update(_obs(30))
    x = _obs(20, seed=3)

    def dist_inputs(algo: PG | DQN) -> np.ndarray:  # logits or Q values
        return algo.compute_actions(x, explore=False)[1][sb.ACTION_DIST_INPUTS]

    assert not np.array_equal(dist_inputs(worker), dist_inputs(driver))
    load_acting_weights(worker, acting_weights(driver))
    assert worker.obs_filter.state() == driver.obs_filter.state()
    np.testing.assert_array_equal(dist_inputs(worker), dist_inputs(driver))


# -- a run end to end --------------------------------------------------------------------

TINY_PG = {"train_batch_size": 100, "model": {"fcnet_hiddens": [16]}, "seed": 4, **FILTER}


def _records(path: Path) -> list:
    files = sorted(str(p) for p in path.glob("*.json"))
    with JsonReader(files, shuffle_files=False) as reader:
        return list(reader.iter_epoch())


def _check_recorded_run(tmp_path: Path, num_workers: int) -> None:
    """Train PG on CartPole with the filter, writing experiences, then check: the file holds
    the env's own observations; each batch was sampled with the statistics of the batches
    learned before it; the checkpoint and `offrl rollout` carry the final statistics."""
    out, results = tmp_path / "out", tmp_path / "results"
    config = {**TINY_PG, "output": str(out), "num_workers": num_workers}
    code, stdout, err = invoke(
        "train", "--run", "PG", "--env", "CartPole-v1", "--local-dir", str(results),
        "--config", json.dumps(config), "--stop", '{"training_iteration": 3}',
        "--checkpoint-at-end",
    )  # fmt: skip
    assert code == 0, err
    records = _records(out)
    assert sum(r.count for r in records) == 300
    # Raw observations: CartPole's dynamics from each recorded obs give the recorded new_obs.
    env = gym.make("CartPole-v1").unwrapped
    env.reset(seed=0)
    for r in records:
        for obs, action, new_obs in zip(r[sb.OBS], r[sb.ACTIONS], r[sb.NEW_OBS], strict=True):
            env.state, env.steps_beyond_terminated = obs.astype(np.float64), None
            np.testing.assert_allclose(env.step(int(action))[0], new_obs, atol=1e-5)
    # The policy that sampled batch k is a fresh learner after batches 0..k-1.
    replay = PG(from_dict(PGConfig, TINY_PG), *_spaces())
    for r in records:
        np.testing.assert_allclose(
            r[sb.ACTION_DIST_INPUTS], replay._logits(r[sb.OBS]), rtol=1e-5, atol=1e-6
        )
        replay.learn(replay.postprocess(r), 0)
    checkpoint = next(results.rglob("checkpoint_*"))
    stored = load_run_checkpoint(checkpoint)["algo"]["obs_filter"]
    assert stored == replay.obs_filter.state() and stored["count"] == 300
    policy, _ = load_policy(str(checkpoint))
    assert policy.obs_filter.state() == stored
    code, _, err = invoke("rollout", str(checkpoint), "--episodes", "2")
    assert code == 0, err


def _spaces() -> tuple[gym.Space, gym.Space]:
    env = gym.make("CartPole-v1")
    return env.observation_space, env.action_space


def test_recorded_run_keeps_raw_obs_and_the_checkpoint_the_statistics(tmp_path: Path) -> None:
    _check_recorded_run(tmp_path, num_workers=0)


@pytest.mark.slow
def test_a_worker_process_samples_with_the_drivers_statistics(tmp_path: Path) -> None:
    _check_recorded_run(tmp_path, num_workers=1)


def test_offline_training_folds_in_the_batches_read(tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = ["train", "--run", "PG", "--env", "CartPole-v1", "--local-dir", str(tmp_path / "r")]
    online = {"train_batch_size": 100, "model": {"fcnet_hiddens": [8]}, "output": str(out)}
    code, _, err = invoke(
        *args, "--config", json.dumps(online), "--stop", '{"training_iteration": 2}'
    )
    assert code == 0, err
    offline = {"train_batch_size": 100, "model": {"fcnet_hiddens": [8]}, **FILTER}
    offline |= {"input": str(out), "postprocess_inputs": True}
    code, stdout, err = invoke(
        *args, "--name", "offline", "--config", json.dumps(offline),
        "--stop", '{"training_iteration": 2}', "--checkpoint-at-end",
    )  # fmt: skip
    assert code == 0, err
    learned = json.loads(stdout.strip().splitlines()[-1])["timesteps_total"]
    checkpoint = next((tmp_path / "r" / "offline").rglob("checkpoint_*"))
    stats = load_run_checkpoint(checkpoint)["algo"]["obs_filter"]
    rows = np.concatenate([r[sb.OBS] for r in _records(out)]).astype(np.float64)
    assert stats["count"] == learned == len(rows) == 200
    np.testing.assert_allclose(stats["mean"], rows.mean(axis=0), rtol=1e-9, atol=1e-12)
