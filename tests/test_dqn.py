"""DQN: TD math on hand-computed numbers, n-step transitions, schedules, policy, checkpoints."""

from __future__ import annotations

import io
import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from offrl import batch as sb
from offrl.algos.dqn import (
    DQN,
    N_STEP_DISCOUNTS,
    N_STEP_NEW_OBS,
    N_STEP_RETURNS,
    TD_VALID,
    DQNConfig,
    epsilon_at,
    huber,
    lr_at,
    td_targets,
    transitions,
)
from offrl.algos.obsfilter import MeanStdFilter
from offrl.algos.qnet import NumpyQ, TorchQ
from offrl.batch import SampleBatch
from offrl.config import from_dict
from offrl.errors import ConfigError, OffrlRuntimeError
from offrl.rollout import Sampler
from tests.envs import HORIZON
from tests.shared_data import RLLIB_FIXTURE

ROOT = Path(__file__).resolve().parent.parent
OBS_SPACE = gym.spaces.Box(-10.0, 10.0, (4,), dtype=np.float32)
ACT_SPACE = gym.spaces.Discrete(2)
SPACES = (OBS_SPACE, ACT_SPACE)
COUNT_ENV = "tests.envs:CountEnv"


def make_batch(n: int, **cols: object) -> SampleBatch:
    """A CartPole-shaped batch of ``n`` rows; new_obs[t] = t + 1 identifies rows."""
    base = {
        "obs": np.arange(n, dtype=np.float32)[:, None].repeat(4, 1),
        "new_obs": np.arange(1, n + 1, dtype=np.float32)[:, None].repeat(4, 1),
        "actions": np.arange(n) % 2,
        "rewards": np.ones(n, dtype=np.float32),
        "terminateds": np.zeros(n, dtype=bool),
        "truncateds": np.zeros(n, dtype=bool),
        "eps_id": np.zeros(n, dtype=np.int64),
    }
    base.update(cols)
    base["dones"] = np.asarray(base["terminateds"]) | np.asarray(base["truncateds"])
    return SampleBatch(base)


class RandomActions:
    """Uniform 0/1 actions from a seeded generator (a sampler policy)."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def compute_actions(
        self, obs: np.ndarray, *, explore: bool
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        return self.rng.integers(0, 2, size=len(obs)), {}


def small_config(**overrides: object) -> DQNConfig:
    base: dict[str, object] = {
        "seed": 3,
        "model": {"fcnet_hiddens": [16], "fcnet_activation": "relu"},
        "hiddens": [8],
        "learning_starts": 8,
        "train_batch_size": 4,
    }
    return DQNConfig(**{**base, **overrides})  # type: ignore[arg-type]


# -- TD math -------------------------------------------------------------------------


def test_double_q_target_values_the_online_argmax_with_the_target_net() -> None:
    returns = np.array([1.0, 1.0], np.float32)
    discounts = np.array([0.99, 0.0], np.float32)
    q_next_online = np.array([[2.0, 1.0], [0.0, 3.0]], np.float32)
    q_next_target = np.array([[10.0, 20.0], [5.0, 7.0]], np.float32)
    double = td_targets(returns, discounts, q_next_online, q_next_target, double_q=True)
    # Row 0: online picks action 0, target values it 10 -> 1 + 0.99 * 10.
    # Row 1: terminated (discount 0) -> just the return.
    np.testing.assert_allclose(double, [10.9, 1.0], rtol=1e-6)
    single = td_targets(returns, discounts, q_next_online, q_next_target, double_q=False)
    np.testing.assert_allclose(single, [20.8, 1.0], rtol=1e-6)


def test_huber_is_quadratic_inside_delta_and_linear_outside() -> None:
    got = huber(np.array([0.5, -2.0, 3.0, 0.0], np.float32))
    np.testing.assert_allclose(got, [0.125, 1.5, 2.5, 0.0])


# -- n-step transitions --------------------------------------------------------------


def test_terminated_episode_does_not_bootstrap_but_truncated_does() -> None:
    term = transitions(make_batch(3, terminateds=np.array([0, 0, 1], bool)), 0.9, 1)
    np.testing.assert_allclose(term[N_STEP_DISCOUNTS], [0.9, 0.9, 0.0])
    trunc = transitions(make_batch(3, truncateds=np.array([0, 0, 1], bool)), 0.9, 1)
    np.testing.assert_allclose(trunc[N_STEP_DISCOUNTS], [0.9, 0.9, 0.9])
    # The truncated row bootstraps from its own true next obs.
    assert trunc[N_STEP_NEW_OBS][2, 0] == 3.0
    np.testing.assert_allclose(trunc[N_STEP_RETURNS], [1.0, 1.0, 1.0])


def test_n_step_returns_stop_at_terminals_and_episode_changes() -> None:
    batch = make_batch(
        5,
        rewards=np.array([1.0, 2.0, 3.0, 4.0, 5.0], np.float32),
        eps_id=np.array([7, 7, 8, 8, 8]),
        terminateds=np.array([0, 0, 0, 1, 0], bool),
    )
    out = transitions(batch, 0.5, 2)
    # Row 0: 1 + .5*2, bootstraps from new_obs[1] (=2) with .25.
    # Row 1: last row of episode 7 (cut, not done): 2, new_obs[1] with .5.
    # Row 2: 3 + .5*4, window ends on a terminal -> discount 0.
    # Row 3: terminal -> 4, discount 0.  Row 4: 5, cut at batch end -> .5.
    np.testing.assert_allclose(out[N_STEP_RETURNS], [2.0, 2.0, 5.0, 4.0, 5.0])
    np.testing.assert_allclose(out[N_STEP_DISCOUNTS], [0.25, 0.5, 0.0, 0.0, 0.5])
    assert out[N_STEP_NEW_OBS][:, 0].tolist() == [2.0, 2.0, 4.0, 4.0, 5.0]
    assert out[TD_VALID].all()


def test_unknown_new_obs_rows_are_dropped_and_not_bootstrapped_across() -> None:
    valid = np.array([True, True, False, True])
    out = transitions(make_batch(4, new_obs_valid=valid), 0.5, 3)
    assert out[TD_VALID].tolist() == [True, True, False, True]
    # Row 0's window stops at row 1, the last row whose new_obs is known.
    np.testing.assert_allclose(out[N_STEP_RETURNS][:2], [1.5, 1.0])
    assert out[N_STEP_NEW_OBS][:2, 0].tolist() == [2.0, 2.0]


def test_old_files_with_only_dones_treat_them_as_terminated() -> None:
    batch = make_batch(2, terminateds=np.array([0, 1], bool))
    del batch["terminateds"], batch["truncateds"]
    out = transitions(batch, 0.9, 1)
    np.testing.assert_allclose(out[N_STEP_DISCOUNTS], [0.9, 0.0])


def test_vectorised_fragments_give_each_env_the_transitions_it_would_have_alone() -> None:
    # CountEnv's obs is [env uid, t] and step t's reward is t + 1, so every n-step target
    # can be checked by hand; 3 envs, fragments of 4 steps per env, episodes of 1-5 steps
    # (terminated by three 1 actions, truncated at HORIZON) that run across fragments.
    gamma, n_step = 0.5, 3
    sampler = Sampler(COUNT_ENV, 3, RandomActions(5), 4, seed=2)
    try:
        batches = [sampler.next() for _ in range(12)]
    finally:
        sampler.close()
    for batch in batches:
        out = transitions(batch, gamma, n_step)
        uid, t = batch[sb.OBS][:, 0], batch[sb.OBS][:, 1]
        nxt_uid, nxt_t = out[N_STEP_NEW_OBS][:, 0], out[N_STEP_NEW_OBS][:, 1]
        assert out[TD_VALID].all()
        assert (nxt_uid == uid).all()  # never bootstraps from another env's obs
        k = nxt_t - t  # steps in the window; a reset obs (t = 0) would make it <= 0
        assert ((k >= 1) & (k <= n_step)).all()
        expect = sum(np.where(i < k, gamma**i * (t + 1 + i), 0.0) for i in range(n_step))
        np.testing.assert_allclose(out[N_STEP_RETURNS], expect, rtol=1e-6)
        last = np.flatnonzero(batch[sb.TRUNCATEDS])
        assert (batch[sb.NEW_OBS][last, 1] == HORIZON).all()  # the final obs, not the reset one
        # Only a window ending on a terminated row has no bootstrap; truncated ones have one.
        ends_terminated = batch[sb.TERMINATEDS][np.arange(batch.count) + k.astype(int) - 1]
        expect_discount = np.where(ends_terminated, 0.0, gamma**k)
        np.testing.assert_allclose(out[N_STEP_DISCOUNTS], expect_discount, rtol=1e-6)
        # The same rows as one env's batch (the 1-env layout) give the same transitions.
        for u in np.unique(uid):
            rows = np.flatnonzero(uid == u)
            alone = transitions(batch.take(rows), gamma, n_step)
            for name, col in alone.items():
                np.testing.assert_array_equal(out[name][rows], col, err_msg=name)
    whole = SampleBatch.concat_samples(batches)
    assert whole[sb.TRUNCATEDS].any() and whole[sb.TERMINATEDS].any()


def test_learn_without_postprocess_uses_one_step_targets_and_skips_invalid_rows() -> None:
    algo = DQN(small_config(n_step=3), OBS_SPACE, ACT_SPACE)
    valid = np.array([True] * 9 + [False])
    algo.learn(make_batch(10, new_obs_valid=valid), 10)
    assert len(algo.buffer) == 9
    np.testing.assert_allclose(algo.buffer.columns[N_STEP_RETURNS][:9], 1.0)


# -- schedules and the policy ----------------------------------------------------------


def test_epsilon_decays_linearly_then_stays() -> None:
    cfg = DQNConfig()  # 1.0 -> 0.02 over 0.1 * 100000 steps
    assert epsilon_at(cfg, 0) == 1.0
    assert epsilon_at(cfg, 5000) == pytest.approx(0.51)
    assert epsilon_at(cfg, 10000) == pytest.approx(0.02)
    assert epsilon_at(cfg, 90000) == pytest.approx(0.02)


def test_lr_schedule_interpolates_between_points() -> None:
    cfg = DQNConfig(lr_schedule=[[0, 1e-3], [1000, 1e-4]])
    assert lr_at(cfg, 500) == pytest.approx(5.5e-4)
    assert lr_at(cfg, 5000) == pytest.approx(1e-4)
    assert lr_at(DQNConfig(), 5000) == 5e-4


def test_action_prob_is_epsilon_greedy() -> None:
    algo = DQN(small_config(), OBS_SPACE, ACT_SPACE)
    algo.counters["num_steps_sampled"] = 5000  # epsilon 0.51
    obs = np.random.default_rng(0).normal(size=(400, 4)).astype(np.float32)
    actions, extra = algo.compute_actions(obs, explore=True)
    greedy = extra["q_values"].argmax(axis=1)
    expected = np.where(actions == greedy, 1 - 0.51 + 0.51 / 2, 0.51 / 2)
    np.testing.assert_allclose(extra["action_prob"], expected, rtol=1e-6)
    np.testing.assert_allclose(extra["action_logp"], np.log(expected), rtol=1e-5)
    assert 0.15 < np.mean(actions != greedy) < 0.35  # eps / n = 0.255 expected
    assert extra["action_dist_inputs"].shape == (400, 2)
    np.testing.assert_allclose(algo.action_probs(obs).sum(axis=1), 1.0, rtol=1e-6)


def test_greedy_actions_have_probability_one() -> None:
    algo = DQN(small_config(), OBS_SPACE, ACT_SPACE)
    obs = np.random.default_rng(1).normal(size=(50, 4)).astype(np.float32)
    actions, extra = algo.compute_actions(obs, explore=False)
    assert actions.tolist() == extra["q_values"].argmax(axis=1).tolist()
    assert np.all(extra["action_prob"] == 1.0) and np.all(extra["action_logp"] == 0.0)


# -- learning and checkpoints -----------------------------------------------------------


def feed(algo: DQN, batches: list[SampleBatch]) -> list[dict[str, float]]:
    return [algo.learn(algo.postprocess(b), 0) for b in batches]


def test_learn_reports_stats_and_counts_updates_at_the_configured_intensity() -> None:
    cfg = small_config(training_intensity=2.0, target_network_update_freq=8, learning_starts=9)
    algo = DQN(cfg, OBS_SPACE, ACT_SPACE)
    stats = feed(algo, [make_batch(8, eps_id=np.full(8, i)) for i in range(4)])
    # 32 rows at intensity 2 = 64 replayed rows = 16 updates of 4, minus the first
    # batch (before learning_starts): 12.
    assert algo.counters["num_updates"] == 12
    last = stats[-1]
    for key in (
        "mean_q",
        "min_q",
        "max_q",
        "mean_td_error",
        "loss",
        "cur_lr",
        "epsilon",
        "num_target_updates",
        "num_updates",
    ):
        assert np.isfinite(last[key]), key
    assert last["min_q"] <= last["mean_q"] <= last["max_q"]
    assert last["num_target_updates"] == 3  # after 16, 24 and 32 sampled rows


def test_restored_algorithm_continues_identically() -> None:
    cfg = small_config(store_buffer_in_checkpoints=True, prioritized_replay=True)
    batches = [
        make_batch(8, eps_id=np.full(8, i), rewards=np.full(8, i, np.float32)) for i in range(6)
    ]
    first = DQN(cfg, OBS_SPACE, ACT_SPACE)
    feed(first, batches[:3])
    raw = io.BytesIO()
    torch.save(first.get_state(), raw)
    raw.seek(0)
    second = DQN(small_config(store_buffer_in_checkpoints=True), OBS_SPACE, ACT_SPACE)
    second.set_state(torch.load(raw, weights_only=True))
    a, b = feed(first, batches[3:]), feed(second, batches[3:])
    assert a == b
    obs = np.random.default_rng(2).normal(size=(16, 4)).astype(np.float32)
    np.testing.assert_array_equal(
        first.compute_actions(obs, explore=True)[0], second.compute_actions(obs, explore=True)[0]
    )
    for p, q in zip(first.online.parameters(), second.online.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_same_seed_same_network_different_seed_different() -> None:
    a, b = DQN(small_config(), OBS_SPACE, ACT_SPACE), DQN(small_config(), OBS_SPACE, ACT_SPACE)
    c = DQN(DQNConfig(seed=4, model={"fcnet_hiddens": [16]}, hiddens=[8]), OBS_SPACE, ACT_SPACE)
    obs = np.ones((1, 4), np.float32)
    assert a.q_values(obs).tolist() == b.q_values(obs).tolist()
    assert a.q_values(obs).tolist() != c.q_values(obs).tolist()


def test_config_rejects_bad_values_with_key_and_rule() -> None:
    with pytest.raises(ConfigError, match="prioritized_replay_alpha"):
        from_dict(DQNConfig, {"prioritized_replay_alhpa": 0.5}, algo="DQN")
    with pytest.raises(ConfigError, match="'n_step'.*>= 1"):
        from_dict(DQNConfig, {"n_step": 0}, algo="DQN")
    with pytest.raises(ConfigError, match="hiddens"):
        DQN(DQNConfig(hiddens=[0]), OBS_SPACE, ACT_SPACE)
    with pytest.raises(ConfigError, match="lr_schedule"):
        DQN(DQNConfig(lr_schedule=[[100, 1e-3], [0, 1e-4]]), OBS_SPACE, ACT_SPACE)
    with pytest.raises(ConfigError, match="Discrete"):
        DQN(DQNConfig(), OBS_SPACE, gym.spaces.Box(-1, 1, (2,)))


def test_shipped_run_files_are_valid_configs() -> None:
    for name in ("dqn-cartpole.json", "dqn-offline-cartpole.json"):
        run = json.loads((ROOT / "configs" / name).read_text())
        assert run["run"] == "DQN" and run["env"] == "CartPole-v1"
        from_dict(DQNConfig, run["config"], algo="DQN")


@pytest.mark.slow
def test_dqn_learns_cartpole_quickly() -> None:
    from offrl.rollout import Sampler, evaluate

    run = json.loads((ROOT / "configs" / "dqn-cartpole.json").read_text())
    cfg = from_dict(DQNConfig, {**run["config"], "seed": 0}, algo="DQN")
    algo = DQN(cfg, OBS_SPACE, ACT_SPACE)
    sampler = Sampler("CartPole-v1", cfg.num_envs_per_worker, algo, cfg.rollout_fragment_length, 0)
    steps = 0
    while steps < 12_000:
        batch = algo.postprocess(sampler.next())
        steps += batch.count
        algo.learn(batch, steps)
    sampler.close()
    returns = evaluate("CartPole-v1", algo, 5, seed=123)
    # A random policy averages ~22; a learning DQN is far above it by now.
    assert np.mean(returns) > 100, returns


def test_offline_batches_from_the_rllib_fixture_fill_replay_with_true_terminals() -> None:
    from offrl.io.json_reader import JsonReader

    reader = JsonReader(str(RLLIB_FIXTURE), seed=0)
    algo = DQN(small_config(n_step=3, learning_starts=200), OBS_SPACE, ACT_SPACE)
    batches = [reader.next() for _ in range(3)]
    assert sum(b.count for b in batches) == 102
    for batch in batches:
        algo.learn(algo.postprocess(batch), 0)
    assert len(algo.buffer) == 102
    discounts = algo.buffer.columns[N_STEP_DISCOUNTS][:102]
    # Each of the 3 episodes ends terminated, so in each the last 3 rows reach the terminal
    # within their 3-step window and never bootstrap; every other row bootstraps at gamma^3.
    assert int((discounts == 0).sum()) == 9
    np.testing.assert_allclose(discounts[discounts > 0], 0.99**3, rtol=1e-6)


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"dueling": False, "double_q": False},
        {"model": {"fcnet_hiddens": [16, 8], "fcnet_activation": "tanh"}, "hiddens": []},
        {"prioritized_replay": True, "grad_norm_clipping": 0.01},
    ],
)
def test_numpy_update_equals_the_autograd_update(overrides: dict[str, object]) -> None:
    batches = [
        make_batch(8, eps_id=np.full(8, i), rewards=np.full(8, i, np.float32)) for i in range(6)
    ]
    fast = DQN(small_config(**overrides), OBS_SPACE, ACT_SPACE)
    slow = DQN(small_config(**overrides), OBS_SPACE, ACT_SPACE)
    assert isinstance(fast.nets, NumpyQ)
    slow.nets = TorchQ(slow.online, slow.target, slow.config.adam_epsilon)  # autograd
    a, b = feed(fast, batches), feed(slow, batches)
    assert a[-1]["num_updates"] == b[-1]["num_updates"] > 0
    for key in ("mean_q", "loss", "mean_td_error"):
        assert a[-1][key] == pytest.approx(b[-1][key], rel=1e-4, abs=1e-5)
    assert not np.array_equal(
        fast.nets.flat, DQN(small_config(**overrides), OBS_SPACE, ACT_SPACE).nets.flat
    )
    for p, q in zip(fast.online.parameters(), slow.online.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)
    for p, q in zip(fast.target.parameters(), slow.target.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)


def test_numpy_and_autograd_backends_write_the_same_gradient() -> None:
    algo = DQN(small_config(grad_norm_clipping=None), OBS_SPACE, ACT_SPACE)
    numpy_nets = algo.nets
    torch_nets = TorchQ(algo.online, algo.target, 1e-8)  # re-views the same weights
    assert isinstance(numpy_nets, NumpyQ)
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(6, 4)).astype(np.float32)
    grad_q = rng.normal(size=(4, 2)).astype(np.float32)  # the first 4 rows only
    np.testing.assert_allclose(numpy_nets.q(obs), torch_nets.q(obs), rtol=1e-5, atol=1e-6)
    numpy_nets.forward(obs)
    numpy_nets.backward(grad_q)
    torch_nets.forward(obs)
    torch_nets.backward(grad_q)
    assert np.abs(torch_nets.grad).max() > 0
    np.testing.assert_allclose(numpy_nets.grad, torch_nets.grad, rtol=1e-5, atol=1e-6)


def test_unsupported_activation_falls_back_to_autograd_and_still_learns() -> None:
    algo = DQN(
        small_config(model={"fcnet_hiddens": [16], "fcnet_activation": "elu"}), OBS_SPACE, ACT_SPACE
    )
    assert type(algo.nets) is TorchQ
    before = [p.clone() for p in algo.online.parameters()]
    stats = feed(algo, [make_batch(8, eps_id=np.full(8, i)) for i in range(3)])
    assert stats[-1]["num_updates"] > 0
    assert any(not torch.equal(p, q) for p, q in zip(before, algo.online.parameters(), strict=True))


def test_one_checkpoint_format_restores_into_either_backend() -> None:
    batches = [make_batch(8, eps_id=np.full(8, i)) for i in range(4)]
    fast = DQN(small_config(store_buffer_in_checkpoints=True), OBS_SPACE, ACT_SPACE)
    feed(fast, batches[:3])
    state = fast.get_state()
    slow = DQN(small_config(store_buffer_in_checkpoints=True), OBS_SPACE, ACT_SPACE)
    slow.nets = TorchQ(slow.online, slow.target, slow.config.adam_epsilon)
    slow.set_state(state)
    assert slow.nets.adam.step_count == fast.nets.adam.step_count > 0
    a, b = feed(fast, batches[3:]), feed(slow, batches[3:])
    assert a[-1]["loss"] == pytest.approx(b[-1]["loss"], rel=1e-4)
    np.testing.assert_allclose(fast.nets.flat, slow.nets.flat, rtol=1e-4, atol=1e-5)


def test_checkpoint_with_a_torch_adam_state_still_restores() -> None:
    """Checkpoints written before the backends hold ``torch.optim.Adam``'s state dict."""
    algo = DQN(small_config(), OBS_SPACE, ACT_SPACE)
    params = list(algo.online.parameters())
    old = torch.optim.Adam([p.detach().clone().requires_grad_() for p in params], lr=0.1)
    for p in old.param_groups[0]["params"]:
        p.grad = torch.full_like(p, 0.5)
    old.step()
    old.step()
    state = algo.get_state()
    state["optimizer"] = old.state_dict()
    algo.set_state(state)
    assert algo.nets.adam.step_count == 2
    # After two steps of a constant gradient g: m = g (1 - 0.9^2), v = g^2 (1 - 0.999^2).
    np.testing.assert_allclose(algo.nets.adam.exp_avg, 0.5 * (1 - 0.9**2), rtol=1e-5)
    np.testing.assert_allclose(algo.nets.adam.exp_avg_sq, 0.25 * (1 - 0.999**2), rtol=1e-4)


def test_image_observations_stay_uint8_in_replay() -> None:
    from offrl.envs import env_spaces
    from offrl.rollout import Sampler

    obs_space, act_space = env_spaces("tests.envs:ImageEnv")
    cfg = from_dict(DQNConfig, {"seed": 0, "learning_starts": 16, "model": {"fcnet_hiddens": [8]}})
    algo = DQN(cfg, obs_space, act_space)
    sampler = Sampler("tests.envs:ImageEnv", 2, algo, 8, 0)
    stats = algo.learn(algo.postprocess(sampler.next()), 0)
    sampler.close()
    assert algo.buffer.columns["obs"].dtype == np.uint8
    assert algo.buffer.columns["n_step_new_obs"].dtype == np.uint8
    assert algo.buffer.columns["obs"].shape[1:] == (10 * 12 * 3,)
    assert stats["num_updates"] > 0 and np.isfinite(stats["loss"])


# -- a Discrete action space with a start ------------------------------------------------


def test_discrete_with_start_acts_in_the_spaces_values_and_replays_q_columns() -> None:
    space = gym.spaces.Discrete(3, start=-1)  # actions -1, 0, 1
    shifted = DQN(small_config(), OBS_SPACE, space)
    plain = DQN(small_config(), OBS_SPACE, gym.spaces.Discrete(3))
    obs = np.random.default_rng(2).normal(size=(300, 4)).astype(np.float32)
    greedy, extra = shifted.compute_actions(obs, explore=False)
    np.testing.assert_array_equal(greedy, extra["q_values"].argmax(axis=1) - 1)
    shifted.counters["num_steps_sampled"] = 5000  # epsilon 0.51
    actions, extra = shifted.compute_actions(obs, explore=True)
    assert set(np.unique(actions)) == {-1, 0, 1}
    is_greedy = actions == extra["q_values"].argmax(axis=1) - 1
    expected = np.where(is_greedy, 1 - 0.51 + 0.51 / 3, 0.51 / 3)
    np.testing.assert_allclose(extra["action_prob"], expected, rtol=1e-6)
    probs = shifted.action_probs(obs)  # column k is the action k - 1
    np.testing.assert_allclose(probs[np.arange(300), actions + 1], expected, rtol=1e-6)
    # Learning: replay holds Q columns, and the update equals the start-free one.
    shifted.counters["num_steps_sampled"] = 0
    acts = np.array([-1, 0, 1, 1, 0, -1, 0, 1])
    feed(shifted, [make_batch(8, actions=acts, eps_id=np.full(8, i)) for i in range(3)])
    feed(plain, [make_batch(8, actions=acts + 1, eps_id=np.full(8, i)) for i in range(3)])
    assert shifted.counters["num_updates"] > 0
    assert set(np.unique(shifted.buffer.columns["actions"])) == {0, 1, 2}
    np.testing.assert_array_equal(shifted.nets.flat, plain.nets.flat)
    with pytest.raises(
        OffrlRuntimeError, match=r"action 2 is not one of the policy's actions -1..1"
    ):
        feed(shifted, [make_batch(4, actions=np.array([0, 1, 2, 0]))])


# -- observation filter -----------------------------------------------------------------


def _filter_batch(seed: int, n: int = 8) -> SampleBatch:
    rng = np.random.default_rng(seed)
    obs = rng.normal([5.0, -2.0, 0.0, 3.0], [3.0, 0.1, 1.0, 2.0], (n + 1, 4)).astype(np.float32)
    return make_batch(n, obs=obs[:-1], new_obs=obs[1:], eps_id=np.full(n, seed))


def test_observation_filter_folds_in_new_rows_after_the_updates() -> None:
    # learning_starts 9: batch 1 (8 rows) only fills replay; batch 2's updates replay rows of
    # both batches, filtered with batch 1's statistics -- the same updates as an unfiltered
    # DQN given both batches normalised by hand with those statistics.
    filtered = DQN(small_config(learning_starts=9, observation_filter="MeanStdFilter"), *SPACES)
    plain = DQN(small_config(learning_starts=9), *SPACES)
    assert plain.obs_filter is None and "obs_filter" not in plain.get_state()
    b1, b2 = _filter_batch(1), _filter_batch(2)
    by_hand = MeanStdFilter(4)
    by_hand.update(b1[sb.OBS])
    cols = (sb.OBS, sb.NEW_OBS)
    normalised = [SampleBatch({**x.columns, **{c: by_hand(x[c]) for c in cols}}) for x in (b1, b2)]
    assert feed(filtered, [b1, b2]) == feed(plain, normalised)
    assert filtered.counters["num_updates"] > 0
    np.testing.assert_array_equal(filtered.nets.flat, plain.nets.flat)
    # Statistics of the new rows' obs only: not replayed rows, not new_obs.
    assert filtered.obs_filter is not None
    rows = np.concatenate([b1[sb.OBS], b2[sb.OBS]]).astype(np.float64)
    assert filtered.obs_filter.count == 16
    np.testing.assert_allclose(filtered.obs_filter.mean, rows.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(filtered.obs_filter.std, rows.std(axis=0, ddof=1), rtol=1e-12)


def test_observation_filter_statistics_survive_a_checkpoint() -> None:
    cfg = small_config(observation_filter="MeanStdFilter", store_buffer_in_checkpoints=True)
    first = DQN(cfg, *SPACES)
    feed(first, [_filter_batch(1), _filter_batch(2)])
    raw = io.BytesIO()
    torch.save(first.get_state(), raw)
    raw.seek(0)
    second = DQN(cfg, *SPACES)
    second.set_state(torch.load(raw, weights_only=True))
    assert first.obs_filter is not None and second.obs_filter is not None
    assert second.obs_filter.state() == first.obs_filter.state()
    obs = _filter_batch(9)[sb.OBS]
    np.testing.assert_array_equal(second.q_values(obs), first.q_values(obs))
    assert feed(first, [_filter_batch(3)]) == feed(second, [_filter_batch(3)])
