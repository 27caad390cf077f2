"""Tests for offrl/rollout.py: the vectorised Sampler and evaluate()."""

from __future__ import annotations

from collections.abc import Iterator

import gymnasium as gym
import numpy as np
import pytest
import torch

from offrl import batch as sb
from offrl.batch import SampleBatch
from offrl.errors import ConfigError
from offrl.rollout import Actor, Sampler, evaluate
from tests.envs import HORIZON, ONES_TO_TERMINATE, CountEnv
from tests.test_envs import _children_alive

torch.set_num_threads(1)

COUNT_ENV = "tests.envs:CountEnv"
CARTPOLE = "CartPole-v1"


class RandomPolicy:
    """Uniform over two actions from its own seeded generator; records the explore flags."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.explore_flags: list[bool] = []

    def compute_actions(
        self, obs: np.ndarray, *, explore: bool
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        self.explore_flags.append(explore)
        n = len(obs)
        extras = {
            sb.ACTION_PROB: np.full(n, 0.5, dtype=np.float32),
            sb.ACTION_LOGP: np.full(n, np.log(0.5), dtype=np.float32),
        }
        return self.rng.integers(0, 2, size=n), extras


class ConstPolicy:
    """Always the same action."""

    def __init__(self, action: int) -> None:
        self.action = action
        self.explore_flags: list[bool] = []

    def compute_actions(
        self, obs: np.ndarray, *, explore: bool
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        self.explore_flags.append(explore)
        return np.full(len(obs), self.action, dtype=np.int64), {}


def _sample(
    env_id: str,
    policy: Actor,
    *,
    num_envs: int,
    length: int,
    seed: int,
    fragments: int,
    horizon: int | None = None,
) -> tuple[Sampler, list[SampleBatch]]:
    sampler = Sampler(env_id, num_envs, policy, length, seed=seed, horizon=horizon)
    batches = [sampler.next() for _ in range(fragments)]
    return sampler, batches


@pytest.fixture(scope="module")
def cartpole_run() -> Iterator[tuple[Sampler, list[SampleBatch]]]:
    """Three fragments of 3 CartPole envs under a random policy (shared: read-only)."""
    sampler, batches = _sample(
        CARTPOLE, RandomPolicy(0), num_envs=3, length=40, seed=11, fragments=3
    )
    yield sampler, batches
    sampler.close()


def _count_envs(sampler: Sampler) -> list[CountEnv]:
    """The CountEnv instances a sampler steps (it wraps them in a SyncVectorEnv)."""
    assert isinstance(sampler.env, gym.vector.SyncVectorEnv)
    envs = []
    for env in sampler.env.envs:
        assert isinstance(env.unwrapped, CountEnv)
        envs.append(env.unwrapped)
    return envs


def _per_env_rows(batches: list[SampleBatch]) -> dict[int, SampleBatch]:
    """CountEnv rows of every sub-env (obs[:, 0] is the env's uid), across all fragments."""
    whole = SampleBatch.concat_samples(batches)
    uid = whole[sb.OBS][:, 0].astype(int)
    out = {}
    for u in np.unique(uid):
        out[int(u)] = whole.take(np.flatnonzero(uid == u))
    return out


# -- fragment shape ----------------------------------------------------------------


def test_fragment_has_at_least_length_times_envs_rows(
    cartpole_run: tuple[Sampler, list[SampleBatch]],
) -> None:
    sampler, batches = cartpole_run
    target = 40 * 3
    for b in batches:
        # The loop stops at the first vector step reaching the target: < num_envs extra rows.
        assert target <= b.count < target + sampler.num_envs


def test_fragment_columns_have_expected_dtypes_and_constants(
    cartpole_run: tuple[Sampler, list[SampleBatch]],
) -> None:
    _, batches = cartpole_run
    b = batches[0]
    for col in (
        sb.OBS,
        sb.NEW_OBS,
        sb.ACTIONS,
        sb.REWARDS,
        sb.DONES,
        sb.TERMINATEDS,
        sb.TRUNCATEDS,
        sb.EPS_ID,
        sb.T,
        sb.PREV_ACTIONS,
        sb.PREV_REWARDS,
        sb.INFOS,
        sb.AGENT_INDEX,
        sb.UNROLL_ID,
        sb.ACTION_PROB,
        sb.ACTION_LOGP,
    ):
        assert col in b, col
    assert b[sb.OBS].shape == (b.count, 4) and b[sb.OBS].dtype == np.float32
    assert b[sb.NEW_OBS].shape == (b.count, 4)
    assert np.all(b[sb.AGENT_INDEX] == 0)
    assert np.array_equal(b[sb.DONES], b[sb.TERMINATEDS] | b[sb.TRUNCATEDS])
    assert all(info == {} for info in b[sb.INFOS])
    assert np.allclose(b[sb.ACTION_PROB], 0.5)
    # unroll_id is constant within a fragment and differs between fragments.
    ids = [np.unique(x[sb.UNROLL_ID]) for x in batches]
    assert all(len(u) == 1 for u in ids)
    assert len({int(u[0]) for u in ids}) == len(batches)


# -- per-step invariants (CartPole) --------------------------------------------------


def test_each_episode_is_one_contiguous_block_in_time_order(
    cartpole_run: tuple[Sampler, list[SampleBatch]],
) -> None:
    _, batches = cartpole_run
    for b in batches:
        eps = b[sb.EPS_ID]
        change = np.flatnonzero(eps[1:] != eps[:-1]) + 1
        starts = np.concatenate([[0], change])
        block_ids = eps[starts]
        assert len(set(block_ids.tolist())) == len(block_ids), "an episode is split in a batch"
        for s, e in zip(starts, [*change, b.count], strict=True):
            t = b[sb.T][s:e]
            assert np.array_equal(t, np.arange(t[0], t[0] + len(t)))


def test_new_obs_is_next_obs_and_prev_columns_shift_within_episode(
    cartpole_run: tuple[Sampler, list[SampleBatch]],
) -> None:
    _, batches = cartpole_run
    checked = 0
    for b in batches:
        same = np.flatnonzero(b[sb.EPS_ID][1:] == b[sb.EPS_ID][:-1])
        assert np.array_equal(b[sb.NEW_OBS][same], b[sb.OBS][same + 1])
        assert np.array_equal(b[sb.PREV_ACTIONS][same + 1], b[sb.ACTIONS][same])
        assert np.array_equal(b[sb.PREV_REWARDS][same + 1], b[sb.REWARDS][same])
        assert not b[sb.DONES][same].any(), "a done row is followed by the same episode"
        checked += len(same)
    assert checked > 200


def test_first_step_of_episode_has_zero_prev_action_and_reward(
    cartpole_run: tuple[Sampler, list[SampleBatch]],
) -> None:
    _, batches = cartpole_run
    whole = SampleBatch.concat_samples(batches)
    first = whole[sb.T] == 0
    assert first.sum() > 3  # random CartPole episodes are short: several starts seen
    assert np.all(whole[sb.PREV_ACTIONS][first] == 0)
    assert np.all(whole[sb.PREV_REWARDS][first] == 0.0)


def test_eps_id_of_a_finished_episode_never_reappears(
    cartpole_run: tuple[Sampler, list[SampleBatch]],
) -> None:
    _, batches = cartpole_run
    whole = SampleBatch.concat_samples(batches)
    done_rows = np.flatnonzero(whole[sb.DONES])
    assert len(done_rows) > 3
    for i in done_rows:
        assert np.flatnonzero(whole[sb.EPS_ID] == whole[sb.EPS_ID][i]).max() == i


def test_cartpole_rows_equal_finished_plus_ongoing_steps() -> None:
    sampler, batches = _sample(
        CARTPOLE, RandomPolicy(1), num_envs=2, length=30, seed=5, fragments=4
    )
    try:
        episodes = sampler.pop_episodes()
        rows = sum(b.count for b in batches)
        assert rows == sum(length for _, length in episodes) + int(sampler.t.sum())
        # CartPole pays 1 per step, so the returns are the lengths.
        assert all(ret == float(length) for ret, length in episodes)
        assert len(episodes) == int(sum(b[sb.DONES].sum() for b in batches))
        assert sampler.pop_episodes() == []
    finally:
        sampler.close()


# -- exactly-once recording and per-env grouping (CountEnv) -------------------------------


def test_every_env_step_is_recorded_exactly_once() -> None:
    sampler, batches = _sample(
        COUNT_ENV, RandomPolicy(2), num_envs=3, length=7, seed=3, fragments=5
    )
    try:
        steps = sum(env.steps_taken for env in _count_envs(sampler))
        assert sum(b.count for b in batches) == steps
    finally:
        sampler.close()


def test_rows_are_grouped_per_env_and_continue_across_fragments() -> None:
    sampler, batches = _sample(
        COUNT_ENV, RandomPolicy(3), num_envs=3, length=6, seed=4, fragments=4
    )
    sampler.close()
    for b in batches:
        uid = b[sb.OBS][:, 0]
        assert np.all(np.diff(uid) >= 0), "rows of one env are not contiguous"
        assert len(np.unique(uid)) == 3
    for rows in _per_env_rows(batches).values():
        obs_t, new_t, t = rows[sb.OBS][:, 1], rows[sb.NEW_OBS][:, 1], rows[sb.T]
        assert np.array_equal(obs_t, t)  # the env's own step count matches column t
        assert np.array_equal(new_t, t + 1)
        assert np.array_equal(rows[sb.REWARDS], t + 1.0)
        # Across fragment boundaries too: after a non-done row comes t+1, after a done row t=0.
        done = rows[sb.DONES][:-1]
        assert np.array_equal(t[1:], np.where(done, 0, t[:-1] + 1))
        new_episode = rows[sb.EPS_ID][1:] != rows[sb.EPS_ID][:-1]
        assert np.array_equal(new_episode, done)


# -- terminated vs truncated ---------------------------------------------------------


def test_episodes_cut_at_the_env_horizon_are_truncated_not_terminated() -> None:
    sampler, batches = _sample(
        COUNT_ENV, ConstPolicy(0), num_envs=2, length=12, seed=0, fragments=2
    )
    try:
        whole = SampleBatch.concat_samples(batches)
        last = whole[sb.T] == HORIZON - 1
        assert last.any()
        assert np.array_equal(whole[sb.TRUNCATEDS], last)
        assert not whole[sb.TERMINATEDS].any()
        assert np.array_equal(whole[sb.DONES], last)
        expected_return = float(sum(range(1, HORIZON + 1)))
        assert sampler.pop_episodes() == [(expected_return, HORIZON)] * int(last.sum())
    finally:
        sampler.close()


def test_episodes_ended_by_the_env_are_terminated_not_truncated() -> None:
    sampler, batches = _sample(COUNT_ENV, ConstPolicy(1), num_envs=2, length=9, seed=0, fragments=2)
    try:
        whole = SampleBatch.concat_samples(batches)
        last = whole[sb.T] == ONES_TO_TERMINATE - 1
        assert np.array_equal(whole[sb.TERMINATEDS], last)
        assert not whole[sb.TRUNCATEDS].any()
        # The constant action 1 shows up as prev_action everywhere but an episode's first step.
        assert np.array_equal(whole[sb.PREV_ACTIONS], np.where(whole[sb.T] == 0, 0, 1))
        assert set(sampler.pop_episodes()) == {(6.0, ONES_TO_TERMINATE)}
    finally:
        sampler.close()


def test_horizon_option_truncates_a_custom_env() -> None:
    sampler, batches = _sample(
        COUNT_ENV, ConstPolicy(0), num_envs=2, length=6, seed=0, fragments=1, horizon=2
    )
    sampler.close()
    b = batches[0]
    assert b[sb.T].max() == 1
    assert np.array_equal(b[sb.TRUNCATEDS], b[sb.T] == 1)
    assert not b[sb.TERMINATEDS].any()


def test_horizon_option_truncates_cartpole() -> None:
    sampler, batches = _sample(
        CARTPOLE, RandomPolicy(4), num_envs=2, length=40, seed=2, fragments=1, horizon=4
    )
    sampler.close()
    b = batches[0]
    assert b[sb.T].max() <= 3
    assert b[sb.TRUNCATEDS].any()
    assert np.all(b[sb.T][b[sb.TRUNCATEDS]] == 3)


# -- seeding -------------------------------------------------------------------------


def _columns_equal(a: SampleBatch, b: SampleBatch) -> bool:
    if set(a.keys()) != set(b.keys()):
        return False
    return all(list(a[k]) == list(b[k]) if k == sb.INFOS else np.array_equal(a[k], b[k]) for k in a)


def test_same_seed_gives_identical_batches() -> None:
    runs = [
        _sample(CARTPOLE, RandomPolicy(9), num_envs=2, length=25, seed=123, fragments=2)
        for _ in range(2)
    ]
    for sampler, _ in runs:
        sampler.close()
    (_, first), (_, second) = runs
    for a, b in zip(first, second, strict=True):
        assert _columns_equal(a, b)


def test_different_seed_gives_different_batches() -> None:
    runs = [
        _sample(CARTPOLE, RandomPolicy(9), num_envs=2, length=25, seed=seed, fragments=1)
        for seed in (1, 2)
    ]
    for sampler, _ in runs:
        sampler.close()
    a, b = runs[0][1][0], runs[1][1][0]
    assert not np.array_equal(a[sb.OBS][:2], b[sb.OBS][:2])
    assert not np.array_equal(a[sb.EPS_ID][:1], b[sb.EPS_ID][:1])


# -- evaluate ------------------------------------------------------------------------


@pytest.mark.parametrize("episodes", [1, 3, 11])
def test_evaluate_returns_requested_number_of_greedy_episodes(episodes: int) -> None:
    policy = ConstPolicy(0)
    returns = evaluate(COUNT_ENV, policy, episodes, seed=0)
    assert returns == [float(sum(range(1, HORIZON + 1)))] * episodes
    assert policy.explore_flags and not any(policy.explore_flags)


def test_evaluate_respects_horizon() -> None:
    assert evaluate(COUNT_ENV, ConstPolicy(0), 4, seed=0, horizon=2) == [3.0] * 4


def test_evaluate_cartpole_episode_count_and_values() -> None:
    returns = evaluate(CARTPOLE, RandomPolicy(5), 10, seed=1)
    assert len(returns) == 10
    # CartPole pays 1 per step; a random policy survives at least a few steps, far below 500.
    assert all(r == int(r) and 1 <= r < 500 for r in returns)


def test_custom_env_spaces_are_exposed() -> None:
    sampler = Sampler(COUNT_ENV, 2, ConstPolicy(0), 3, seed=0)
    try:
        assert sampler.observation_space.shape == (2,)
        assert sampler.action_space == gym.spaces.Discrete(2)
        assert len(_count_envs(sampler)) == 2
    finally:
        sampler.close()


# -- every space: what the sampler records, what the env receives ---------------------------


class _RecordingBoxPolicy:
    """Always the recorded action [3.0, -0.25]; env_actions clips the first into [-2, 2]."""

    def __init__(self) -> None:
        self.seen: list[np.ndarray] = []

    def compute_actions(
        self, obs: np.ndarray, *, explore: bool
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        self.seen.append(obs)
        return np.tile(np.array([[3.0, -0.25]], np.float32), (len(obs), 1)), {}

    def env_actions(self, actions: np.ndarray) -> np.ndarray:
        return np.clip(actions, [-2.0, -1.0], [2.0, 1.0]).astype(np.float32)


def test_sampler_records_policy_actions_and_steps_the_env_with_env_actions() -> None:
    policy = _RecordingBoxPolicy()
    sampler = Sampler("tests.envs:BoxActionEnv", 2, policy, 8, seed=0)
    batch = sampler.next()
    received = sampler.env.envs[0].unwrapped.received
    sampler.close()
    assert batch[sb.ACTIONS].shape == (16, 2) and batch[sb.ACTIONS].dtype == np.float32
    assert np.all(batch[sb.ACTIONS] == [3.0, -0.25])
    assert all(np.array_equal(a, [2.0, -0.25]) for a in received)
    # prev_actions: zeros at t=0, then the previous recorded action, same shape and dtype
    prev = batch[sb.PREV_ACTIONS]
    assert prev.shape == (16, 2) and prev.dtype == np.float32
    assert np.all(prev[batch[sb.T] == 0] == 0) and np.all(prev[batch[sb.T] > 0] == [3.0, -0.25])


def test_sampler_preprocesses_dict_observations_and_render_path_works() -> None:
    from offrl.rollout import render_episodes

    policy = ConstPolicy(0)
    sampler = Sampler("tests.envs:DictObsEnv", 3, policy, 4, seed=0)
    batch = sampler.next()
    sampler.close()
    assert batch[sb.OBS].shape == (12, 8) and batch[sb.OBS].dtype == np.float32
    assert np.all(batch[sb.OBS][:, -2:] == [0.5, -0.5])  # "pos", last in sorted key order
    # render_episodes steps one unbatched env (the test env ignores render_mode): episode k
    # seeded seed + k, as evaluate's env k is, so a constant policy gets the same returns
    rendered = render_episodes("tests.envs:DictObsEnv", policy, 2, seed=0)
    assert rendered == evaluate("tests.envs:DictObsEnv", policy, 2, seed=0)


# -- remote_worker_envs: one process per env ---------------------------------------


def _pg(env_id: str, **keys: object) -> tuple[object, object]:
    from offrl.algos import get_algorithm
    from offrl.config import from_dict
    from offrl.envs import env_spaces

    cfg_cls, algo_cls = get_algorithm("PG")
    cfg = from_dict(cfg_cls, {"seed": 3, "model": {"fcnet_hiddens": [8]}, **keys})
    return cfg, algo_cls(cfg, *env_spaces(env_id))


def test_remote_worker_envs_is_a_bool_key_defaulting_to_false() -> None:
    from offrl.algos import get_algorithm
    from offrl.config import from_dict

    cfg_cls, _ = get_algorithm("PG")
    assert from_dict(cfg_cls, {}).remote_worker_envs is False
    assert from_dict(cfg_cls, {"remote_worker_envs": True}).remote_worker_envs is True
    for bad in ("yes", 1, None):
        with pytest.raises(ConfigError, match="'remote_worker_envs'.*allowed: a boolean"):
            from_dict(cfg_cls, {"remote_worker_envs": bad})


def test_remote_envs_sample_the_same_rows_as_envs_in_this_process() -> None:
    """PG on Acrobot with 2 envs: same seed, same policy -> the same fragments either way."""
    batches = {}
    for remote in (False, True):
        _, algo = _pg("Acrobot-v1")
        sampler = Sampler("Acrobot-v1", 2, algo, 30, seed=5, horizon=40, remote_envs=remote)
        try:
            batches[remote] = [sampler.next() for _ in range(3)]  # crosses episode ends
            episodes = sampler.pop_episodes()
        finally:
            sampler.close()
        assert isinstance(sampler.env, gym.vector.AsyncVectorEnv) is remote
        assert not any(_children_alive(sampler.env))
        assert len(episodes) >= 2  # the horizon of 40 ended episodes within 90 steps per env
    for local, remote_batch in zip(batches[False], batches[True], strict=True):
        assert sorted(local.keys()) == sorted(remote_batch.keys())
        for key in local:
            if key in (sb.EPS_ID, sb.INFOS):
                continue
            assert local[key].shape == remote_batch[key].shape, key
            assert local[key].dtype == remote_batch[key].dtype, key
            np.testing.assert_array_equal(local[key], remote_batch[key], err_msg=key)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ("RaisesInStep", "failed at step 3: ValueError: physics exploded"),
        ("ExitsInStep", "failed at step 1: SystemExit: 3"),
        ("RaisesInReset", "failed at reset: OSError: simulator not running"),
        ("RaisesInInit", "failed at construction: RuntimeError: no licence server"),
        ("WrongShape", "failed at step 1: ObservationMismatch: WrongShape.step() returned"),
    ],
)
def test_a_remote_env_failure_is_offrls_env_error_and_leaves_no_process(
    env: str, message: str
) -> None:
    from offrl.envs import make_vector_env
    from offrl.errors import OffrlRuntimeError

    env_id = f"tests.bad_envs:{env}"
    made: list[gym.vector.VectorEnv] = []

    def tracking(*args: object, **kwargs: object) -> gym.vector.VectorEnv:
        made.append(make_vector_env(*args, **kwargs))  # type: ignore[arg-type]
        return made[-1]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("offrl.rollout.make_vector_env", tracking)
        with pytest.raises(OffrlRuntimeError) as info:
            sampler = Sampler(env_id, 2, ConstPolicy(0), 5, seed=0, remote_envs=True)
            try:
                sampler.next()
            finally:
                sampler.close()
    assert str(info.value).startswith(f"env {env_id} {message}")
    for vector_env in made:  # none made when the parent's own probe env failed
        assert isinstance(vector_env, gym.vector.AsyncVectorEnv)
        assert not any(_children_alive(vector_env))


def _processes_with(marker: str) -> list[int]:
    """Pids of live processes whose command line contains ``marker``."""
    from pathlib import Path

    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and marker in (proc / "cmdline").read_text(errors="replace"):
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


def _remote_train(tmp_path: object, env: str) -> list[str]:
    import json

    marker = str(tmp_path)  # in the command line of the run and of its env processes
    config = {
        "num_envs_per_worker": 2,
        "remote_worker_envs": True,
        "train_batch_size": 60,
        "rollout_fragment_length": 10,
        "model": {"fcnet_hiddens": [8]},
        "output": f"{marker}/out",
    }
    args = ["train", "--run", "PG", "--env", env, "--stop", '{"training_iteration": 2}']
    return [*args, "--config", json.dumps(config), "-q"]


@pytest.mark.slow
def test_offrl_train_with_remote_envs_reports_a_sub_env_failure_and_exits_1(
    tmp_path: object,
) -> None:
    from tests.clitools import run_offrl

    proc = run_offrl(_remote_train(tmp_path, "tests.bad_envs:RaisesInStep"), tmp_path, 120)
    assert proc.returncode == 1, proc.stderr
    assert (
        "offrl: error: env tests.bad_envs:RaisesInStep failed at step 3: "
        "ValueError: physics exploded"
    ) in proc.stderr
    assert "Traceback" not in proc.stderr and "Worker" not in proc.stderr, proc.stderr
    assert _processes_with(str(tmp_path)) == []


@pytest.mark.slow
def test_offrl_train_with_remote_envs_completes_and_leaves_no_process(tmp_path: object) -> None:
    import json

    from tests.clitools import run_offrl

    proc = run_offrl(_remote_train(tmp_path, "Acrobot-v1"), tmp_path, 120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["training_iteration"] == 2 and result["timesteps_total"] >= 120
    assert _processes_with(str(tmp_path)) == []


@pytest.mark.slow
def test_second_ctrl_c_stops_a_run_whose_remote_env_hangs_and_leaves_no_process(
    tmp_path: object,
) -> None:
    import signal
    import time

    from tests.clitools import start_offrl

    args = _remote_train(tmp_path, "tests.bad_envs:HangsInStep")
    proc = start_offrl(args, tmp_path)  # type: ignore[arg-type]
    try:
        deadline = time.time() + 60
        while time.time() < deadline and len(_processes_with(str(tmp_path))) < 3:
            time.sleep(0.1)
        time.sleep(2.0)  # inside the hanging step() by now
        proc.send_signal(signal.SIGINT)
        time.sleep(1.0)
        assert proc.poll() is None  # the first Ctrl-C waits for the iteration, which hangs
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert _processes_with(str(tmp_path)) == []
