"""PG: post-processing on hand-made batches and the RLlib fixture, loss, actions, state."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from offrl import batch as sb
from offrl.algos.obsfilter import MeanStdFilter
from offrl.algos.pg import PG, PGConfig
from offrl.batch import SampleBatch
from offrl.config import from_dict
from offrl.errors import ConfigError, OffrlRuntimeError
from tests.shared_data import RLLIB_FIXTURE

FIXTURE = RLLIB_FIXTURE

OBS_SPACE = gym.spaces.Box(-np.inf, np.inf, (4,), np.float32)
ACT_SPACE = gym.spaces.Discrete(2)
F, T = False, True


def make_pg(**config: object) -> PG:
    cfg = from_dict(PGConfig, {"seed": 0, "model": {"fcnet_hiddens": [8, 8]}, **config})
    return PG(cfg, OBS_SPACE, ACT_SPACE)


def fix_logits(algo: PG, logits: list[float]) -> None:
    """Make the policy output ``logits`` for every observation."""
    with torch.no_grad():
        algo.model.pi[-1].weight.zero_()
        algo.model.pi[-1].bias.copy_(torch.tensor(logits))


def fix_value(algo: PG, value: float) -> None:
    """Make V(s) == value for every observation."""
    assert algo.model.vf is not None
    with torch.no_grad():
        algo.model.vf[-1].weight.zero_()
        algo.model.vf[-1].bias.fill_(value)


def three_segment_batch() -> SampleBatch:
    """Rows 0-2 terminate, rows 3-4 are truncated, rows 5-6 are cut by the batch end."""
    return SampleBatch(
        obs=np.zeros((7, 4), np.float32),
        new_obs=np.ones((7, 4), np.float32),
        actions=np.zeros(7, np.int64),
        rewards=np.ones(7, np.float32),
        terminateds=np.array([F, F, T, F, F, F, F]),
        truncateds=np.array([F, F, F, F, T, F, F]),
        dones=np.array([F, F, T, F, T, F, F]),
        eps_id=np.array([1, 1, 1, 2, 2, 3, 3]),
    )


# -- post-processing --------------------------------------------------------------------


def test_no_baseline_returns_never_bootstrap() -> None:
    out = make_pg(gamma=0.5).postprocess(three_segment_batch())
    np.testing.assert_allclose(out[sb.ADVANTAGES], [1.75, 1.5, 1.0, 1.5, 1.0, 1.5, 1.0])
    np.testing.assert_allclose(out[sb.VALUE_TARGETS], out[sb.ADVANTAGES])
    assert sb.VF_PREDS not in out


def test_baseline_bootstraps_truncated_and_cut_not_terminated() -> None:
    algo = make_pg(gamma=0.5, use_baseline=True)
    fix_value(algo, 1.0)
    out = algo.postprocess(three_segment_batch())
    # returns with V(new_obs) = 1 added after truncated/cut segments, minus V(obs) = 1
    returns = np.array([1.75, 1.5, 1.0, 1.75, 1.5, 1.75, 1.5])
    np.testing.assert_allclose(out[sb.VALUE_TARGETS], returns)
    np.testing.assert_allclose(out[sb.ADVANTAGES], returns - 1.0)
    np.testing.assert_allclose(out[sb.VF_PREDS], np.ones(7))


def test_gae_lambda_zero_is_one_step_td_error() -> None:
    algo = make_pg(gamma=0.5, use_baseline=True, lambda_=0.0)
    fix_value(algo, 1.0)
    out = algo.postprocess(three_segment_batch())
    # delta = r + .5 * V' - V = .5, except at the terminal row: 1 + 0 - 1 = 0
    np.testing.assert_allclose(out[sb.ADVANTAGES], [0.5, 0.5, 0.0, 0.5, 0.5, 0.5, 0.5])


def test_unknown_new_obs_bootstraps_zero() -> None:
    algo = make_pg(gamma=0.5, use_baseline=True)
    fix_value(algo, 1.0)
    batch = three_segment_batch()
    batch["new_obs_valid"] = np.array([T, T, T, T, T, T, F])
    out = algo.postprocess(batch)
    np.testing.assert_allclose(out[sb.VALUE_TARGETS][5:], [1.5, 1.0])


def test_dones_only_counts_as_terminated() -> None:
    algo = make_pg(gamma=0.5, use_baseline=True)
    fix_value(algo, 1.0)
    batch = SampleBatch(
        obs=np.zeros((2, 4), np.float32),
        actions=np.zeros(2, np.int64),
        rewards=np.ones(2),
        dones=np.array([F, T]),
    )
    np.testing.assert_allclose(algo.postprocess(batch)[sb.VALUE_TARGETS], [1.5, 1.0])


def load_fixture() -> list[dict]:
    return [json.loads(line) for line in FIXTURE.read_text().splitlines() if line.strip()]


def test_rllib_fixture_discounted_returns() -> None:
    records = load_fixture()
    cols = {
        k: np.concatenate([np.asarray(r[k]) for r in records])
        for k in ("obs", "new_obs", "actions", "rewards", "dones", "eps_id")
    }
    batch = SampleBatch(cols)
    assert batch.count == 102
    out = make_pg(gamma=0.99).postprocess(batch)
    start = 0
    for rec in records:
        length = len(rec["rewards"])  # CartPole pays 1 per step, every episode terminates
        ret = out[sb.ADVANTAGES][start : start + length]
        assert ret[0] == pytest.approx((1 - 0.99**length) / (1 - 0.99), rel=1e-6)
        assert ret[-1] == pytest.approx(1.0)
        start += length


def test_episode_split_across_records_bootstraps_from_value() -> None:
    rec = load_fixture()[0]
    full = SampleBatch(
        {k: np.asarray(rec[k]) for k in ("obs", "new_obs", "actions", "rewards", "dones", "eps_id")}
    )
    algo = make_pg(gamma=0.9, use_baseline=True)
    fix_value(algo, 3.0)
    head = algo.postprocess(full.slice(0, 30))  # record cut mid-episode
    # last row of the cut part: 1 + .9 * V(new_obs) = 1 + 2.7
    assert head[sb.VALUE_TARGETS][-1] == pytest.approx(3.7)
    assert algo.postprocess(full)[sb.VALUE_TARGETS][-1] == pytest.approx(1.0)


# -- loss ------------------------------------------------------------------------------


def test_loss_on_hand_made_batch() -> None:
    algo = make_pg(use_baseline=True, entropy_coeff=0.1, vf_loss_coeff=2.0)
    fix_logits(algo, [0.0, math.log(3.0)])  # probs [.25, .75]
    fix_value(algo, 1.0)
    batch = SampleBatch(
        obs=np.zeros((3, 4), np.float32),
        actions=np.array([0, 1, 1]),
        advantages=np.array([1.0, 2.0, 3.0], np.float32),
        value_targets=np.array([1.0, 2.0, 3.0], np.float32),
    )
    losses = algo.learn(batch, 3)  # one full-batch step: the stats are before it
    policy = -(math.log(0.25) * 1 + math.log(0.75) * 2 + math.log(0.75) * 3) / 3
    entropy = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    vf = 0.5 * (0 + 1 + 4) / 3
    assert losses["policy_loss"] == pytest.approx(policy, rel=1e-6)
    assert losses["entropy"] == pytest.approx(entropy, rel=1e-6)
    assert losses["vf_loss"] == pytest.approx(vf, rel=1e-6)
    assert losses["total_loss"] == pytest.approx(policy - 0.1 * entropy + 2 * vf, rel=1e-6)
    assert losses["num_grad_updates"] == 1.0


def test_learn_without_advantages_raises_config_error() -> None:
    batch = SampleBatch(
        obs=np.zeros((3, 4), np.float32),
        actions=np.zeros(3, np.int64),
        rewards=np.ones(3),
        dones=np.array([F, F, T]),
    )
    with pytest.raises(ConfigError, match='"postprocess_inputs": true'):
        make_pg().learn(batch, 0)


def test_learn_moves_probability_towards_positive_advantage() -> None:
    algo = make_pg(lr=0.01)
    batch = algo.postprocess(
        SampleBatch(
            obs=np.zeros((4, 4), np.float32),
            actions=np.array([1, 1, 1, 1]),
            rewards=np.ones(4),
            dones=np.array([F, F, F, T]),
        )
    )
    before = algo.action_probs(np.zeros((1, 4), np.float32))[0, 1]
    stats = algo.learn(batch, 4)
    after = algo.action_probs(np.zeros((1, 4), np.float32))[0, 1]
    assert after > before + 0.01
    assert {"policy_loss", "entropy", "cur_lr", "grad_gnorm"} <= set(stats)


def test_kl_target_stops_the_batch_after_the_policy_moved() -> None:
    rng = np.random.default_rng(5)
    batch = SampleBatch(
        obs=rng.normal(size=(8, 4)).astype(np.float32),
        actions=rng.integers(0, 2, 8),
        rewards=rng.normal(size=8),
        dones=np.array([F] * 7 + [T]),
    )
    free = make_pg(lr=0.1, sgd_minibatch_size=2)
    free.learn(free.postprocess(batch), 8)
    assert free.num_grad_updates == 4
    guarded = make_pg(lr=0.1, sgd_minibatch_size=2, kl_target=1e-9)
    stats = guarded.learn(guarded.postprocess(batch), 8)
    # step 1 starts at KL 0 and moves the policy; step 2 sees KL > target and stops
    assert guarded.num_grad_updates == 1
    assert stats["stopped_early"] == 0.5 and stats["kl"] > 0


# -- acting ----------------------------------------------------------------------------


@pytest.mark.parametrize("use_baseline", [False, True])
def test_action_prob_consistency(use_baseline: bool) -> None:
    algo = make_pg(use_baseline=use_baseline)
    obs = np.random.default_rng(1).normal(size=(64, 4)).astype(np.float32)
    actions, extras = algo.compute_actions(obs, explore=True)
    np.testing.assert_allclose(np.exp(extras[sb.ACTION_LOGP]), extras[sb.ACTION_PROB], rtol=1e-6)
    probs = algo.action_probs(obs)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(extras[sb.ACTION_PROB], probs[np.arange(64), actions], rtol=1e-5)
    assert extras[sb.ACTION_DIST_INPUTS].shape == (64, 2)
    # V(s) is computed once per batch in postprocess(), not per step while acting.
    assert sb.VF_PREDS not in extras


def test_sampling_frequencies_and_greedy() -> None:
    algo = make_pg()
    fix_logits(algo, [0.0, math.log(3.0)])
    obs = np.zeros((20000, 4), np.float32)
    actions, extras = algo.compute_actions(obs, explore=True)
    assert abs(actions.mean() - 0.75) < 0.015
    np.testing.assert_allclose(
        extras[sb.ACTION_PROB], np.where(actions == 1, 0.75, 0.25), rtol=1e-5
    )
    greedy, _ = algo.compute_actions(obs[:5], explore=False)
    np.testing.assert_array_equal(greedy, [1] * 5)


def test_fragment_length_covers_train_batch() -> None:
    algo = make_pg(train_batch_size=1000, num_envs_per_worker=64)
    assert algo.rollout_fragment_length() == 16  # ceil(1000 / 64)
    assert algo.steps_per_iteration() == 1000


def test_config_rejects_bad_lambda() -> None:
    with pytest.raises(ConfigError, match="lambda_"):
        from_dict(PGConfig, {"lambda_": 1.5})


# -- checkpoints -----------------------------------------------------------------------


def test_state_round_trip_continues_identically(tmp_path: Path) -> None:
    cfg = {"use_baseline": True, "sgd_minibatch_size": 2, "num_sgd_iter": 2}
    rng = np.random.default_rng(3)
    batch = SampleBatch(
        obs=rng.normal(size=(6, 4)).astype(np.float32),
        new_obs=rng.normal(size=(6, 4)).astype(np.float32),
        actions=rng.integers(0, 2, 6),
        rewards=np.ones(6),
        terminateds=np.array([F, F, T, F, F, F]),
        eps_id=np.array([1] * 3 + [2] * 3),
    )
    a = make_pg(**cfg)
    a.learn(a.postprocess(batch), 6)
    torch.save(a.get_state(), tmp_path / "state.pt")
    b = make_pg(**cfg, seed=99)
    b.set_state(torch.load(tmp_path / "state.pt", weights_only=True))
    obs = rng.normal(size=(32, 4)).astype(np.float32)
    for algo_a, algo_b in [(a, b)] * 2:
        acts_a, ex_a = algo_a.compute_actions(obs, explore=True)
        acts_b, ex_b = algo_b.compute_actions(obs, explore=True)
        np.testing.assert_array_equal(acts_a, acts_b)
        np.testing.assert_array_equal(ex_a[sb.ACTION_LOGP], ex_b[sb.ACTION_LOGP])
        stats_a = algo_a.learn(algo_a.postprocess(batch), 12)
        stats_b = algo_b.learn(algo_b.postprocess(batch), 12)
        assert stats_a == stats_b
    for pa, pb in zip(a.model.parameters(), b.model.parameters(), strict=True):
        assert torch.equal(pa, pb)


# -- learning --------------------------------------------------------------------------


@pytest.mark.slow
def test_learns_cartpole_quickly() -> None:
    from offrl.rollout import Sampler

    spec = json.loads(
        (Path(__file__).resolve().parents[1] / "configs" / "pg-cartpole.json").read_text()
    )
    cfg = from_dict(PGConfig, {**spec["config"], "seed": 1})
    env = gym.make("CartPole-v1")
    algo = PG(cfg, env.observation_space, env.action_space)
    sampler = Sampler(
        "CartPole-v1", cfg.num_envs_per_worker, algo, algo.rollout_fragment_length(), seed=1
    )
    returns: list[float] = []
    steps = 0
    while steps < 150_000:
        batch = sampler.next()
        algo.learn(algo.postprocess(batch), steps)
        steps += batch.count
        returns += [r for r, _ in sampler.pop_episodes()]
        if len(returns) >= 50 and np.mean(returns[-50:]) >= 200:
            break
    sampler.close()
    first = np.mean(returns[:50])
    assert first < 60  # a random policy lasts ~22 steps
    assert np.mean(returns[-50:]) >= 200, f"last-50 mean {np.mean(returns[-50:])} at {steps}"


def test_offline_fixture_records_train_the_value_baseline() -> None:
    algo = make_pg(use_baseline=True, lr=0.01, postprocess_inputs=True)
    batches = [
        SampleBatch(
            {
                k: np.asarray(rec[k])
                for k in ("obs", "new_obs", "actions", "rewards", "dones", "eps_id")
            }
        )
        for rec in load_fixture()
    ]
    first = algo.learn(algo.postprocess(batches[0]), 0)["vf_loss"]
    for step in range(60):
        last = algo.learn(algo.postprocess(batches[step % 3]), step)["vf_loss"]
    assert last < first / 2


# -- batches ---------------------------------------------------------------------------


def random_batch(n: int, seed: int) -> SampleBatch:
    rng = np.random.default_rng(seed)
    return SampleBatch(
        obs=rng.normal(size=(n, 4)).astype(np.float32),
        new_obs=rng.normal(size=(n, 4)).astype(np.float32),
        actions=rng.integers(0, 2, n),
        rewards=np.ones(n, np.float32),
        dones=np.arange(n) % 25 == 24,
        eps_id=np.arange(n) // 25,
    )


def test_lr_schedule_sets_the_learning_rate_from_timesteps() -> None:
    algo = make_pg(lr_schedule=[[0, 0.01], [1000, 0.001]], use_baseline=True)
    assert algo.learn(algo.postprocess(random_batch(64, 0)), 500)["cur_lr"] == pytest.approx(0.0055)
    assert algo.learn(algo.postprocess(random_batch(64, 1)), 5000)["cur_lr"] == pytest.approx(0.001)
    with pytest.raises(ConfigError, match="lr_schedule"):
        from_dict(PGConfig, {"lr_schedule": [[100, 0.1], [0, 0.2]]})


# -- Box (Gaussian) and MultiDiscrete actions ---------------------------------------------

BOX_ACT = gym.spaces.Box(np.array([-2.0, -1.0], np.float32), np.array([2.0, 1.0], np.float32))


def make_gaussian_pg(numpy_backend: bool = True, **config: object) -> PG:
    cfg = from_dict(PGConfig, {"seed": 0, "model": {"fcnet_hiddens": [8]}, **config})
    obs_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    return PG(cfg, obs_space, BOX_ACT, numpy_backend=numpy_backend)


def test_gaussian_records_the_unclipped_sample_and_the_env_gets_it_clipped() -> None:
    from offrl.algos.dists import DiagGaussian
    from offrl.rollout import Sampler

    algo = make_gaussian_pg(train_batch_size=400)
    with torch.no_grad():
        algo.model.log_std.fill_(1.0)  # std e: many samples fall outside [-1, 1]
    sampler = Sampler("tests.envs:BoxActionEnv", 1, algo, algo.rollout_fragment_length(), 0)
    batch = sampler.next()
    received = np.array(sampler.env.envs[0].unwrapped.received)
    sampler.close()
    actions = batch[sb.ACTIONS]
    assert actions.shape == (400, 2) and actions.dtype == np.float32
    assert (np.abs(actions) > 1.0).any()  # recorded as sampled, not clipped
    # normalize_actions (default): [-1, 1] -> [low, high], then clipped into the bounds
    expected = np.clip(BOX_ACT.low + (actions + 1.0) * (BOX_ACT.high - BOX_ACT.low) / 2, -2, 2)
    expected = np.clip(expected, BOX_ACT.low, BOX_ACT.high)
    assert np.allclose(received, expected, atol=1e-6)
    dist = DiagGaussian((2,))
    logp = dist.logp_np(batch[sb.ACTION_DIST_INPUTS], actions)
    assert np.allclose(batch[sb.ACTION_LOGP], logp, atol=1e-5)
    assert np.allclose(batch[sb.ACTION_DIST_INPUTS][:, 2:], 1.0)  # the log-stds


def test_gaussian_greedy_action_is_the_mean() -> None:
    algo = make_gaussian_pg()
    obs = np.array([[0.5, -0.5], [1.0, 1.0]], np.float32)
    actions, extras = algo.compute_actions(obs, explore=False)
    assert np.array_equal(actions, extras[sb.ACTION_DIST_INPUTS][:, :2])


def test_gaussian_step_moves_the_mean_toward_positive_advantage_actions() -> None:
    algo = make_gaussian_pg(lr=0.01)
    obs = np.zeros((2, 2), np.float32)
    before = algo.compute_actions(obs[:1], explore=False)[0][0]
    batch = SampleBatch(
        obs=obs,
        actions=np.array([[1.0, -1.0], [1.0, -1.0]], np.float32),
        advantages=np.array([1.0, 1.0], np.float32),
    )
    for _ in range(20):
        algo.learn(batch, 0)
    after = algo.compute_actions(obs[:1], explore=False)[0][0]
    assert after[0] > before[0] + 0.05 and after[1] < before[1] - 0.05
    # and its state round-trips, log-std included
    state = algo.get_state()
    other = make_gaussian_pg(lr=0.01)
    other.set_state(state)
    assert np.array_equal(
        other.compute_actions(obs, explore=False)[0], algo.compute_actions(obs, explore=False)[0]
    )
    assert torch.equal(other.model.log_std, algo.model.log_std)


@pytest.mark.parametrize("numpy_backend", [True, False])
def test_a_collapsing_gaussian_stops_with_what_to_change_and_finite_parameters(
    numpy_backend: bool,
) -> None:
    # Many passes over one batch: the Gaussian shrinks onto the positive-advantage actions,
    # its log-std without bound, until the loss or gradient overflows (once NaN parameters).
    cfg = {"lr": 0.5, "num_sgd_iter": 100}
    batch = SampleBatch(
        obs=np.zeros((4, 2), np.float32),
        actions=np.array([[0.5, 0.0], [0.5, 0.0], [0.4, 0.1], [0.6, -0.1]], np.float32),
        advantages=np.array([1.0, 1.0, -1.0, -1.0], np.float32),
    )
    algo = make_gaussian_pg(numpy_backend, **cfg)
    with pytest.raises(OffrlRuntimeError, match=r"log-std is down to .*Set \"kl_target\""):
        algo.learn(batch, 4)
    assert np.isfinite(algo.nets.flat).all()
    guarded = make_gaussian_pg(numpy_backend, **cfg, kl_target=0.02)
    assert guarded.learn(batch, 4)["stopped_early"] > 0
    assert np.isfinite(guarded.nets.flat).all()


def test_multidiscrete_actions_and_their_logp() -> None:
    cfg = from_dict(PGConfig, {"seed": 0, "model": {"fcnet_hiddens": [8]}})
    algo = PG(cfg, OBS_SPACE, gym.spaces.MultiDiscrete([2, 3]))
    obs = np.zeros((5, 4), np.float32)
    actions, extras = algo.compute_actions(obs, explore=True)
    assert actions.shape == (5, 2) and actions.dtype == np.int64
    assert (actions[:, 0] < 2).all() and (actions[:, 1] < 3).all()
    assert extras[sb.ACTION_DIST_INPUTS].shape == (5, 5)
    assert np.allclose(extras[sb.ACTION_LOGP], algo.action_logp(obs, actions))
    # near-uniform initial policy: log(1/2) + log(1/3)
    assert np.allclose(extras[sb.ACTION_LOGP], math.log(1 / 6), atol=0.05)
    batch = SampleBatch(obs=obs, actions=actions, advantages=np.ones(5, np.float32))
    assert algo.learn(batch, 0)["num_grad_updates"] == 1.0
    with pytest.raises(ConfigError, match="action probabilities need Discrete actions"):
        algo.action_probs(obs)


def test_discrete_with_start_acts_and_learns_in_the_spaces_values() -> None:
    cfg = {"seed": 0, "model": {"fcnet_hiddens": [8]}, "use_baseline": False}
    shifted = PG(from_dict(PGConfig, cfg), OBS_SPACE, gym.spaces.Discrete(3, start=-1))
    plain = PG(from_dict(PGConfig, cfg), OBS_SPACE, gym.spaces.Discrete(3))
    obs = np.random.default_rng(5).normal(size=(64, 4)).astype(np.float32)
    actions, extras = shifted.compute_actions(obs, explore=True)
    assert set(np.unique(actions)) == {-1, 0, 1}
    probs = shifted.action_probs(obs)  # column k is the action k - 1
    np.testing.assert_allclose(extras[sb.ACTION_PROB], probs[np.arange(64), actions + 1], rtol=1e-5)
    np.testing.assert_allclose(shifted.action_logp(obs, actions), extras[sb.ACTION_LOGP])
    fix_logits(shifted, [0.0, 0.0, 1.0])
    greedy, _ = shifted.compute_actions(obs[:3], explore=False)
    assert greedy.tolist() == [1, 1, 1]
    # The same update as the start-free policy on the same choices.
    adv = np.random.default_rng(6).normal(size=64).astype(np.float32)
    fix_logits(plain, [0.0, 0.0, 1.0])
    shifted.learn(SampleBatch(obs=obs, actions=actions, advantages=adv), 0)
    plain.learn(SampleBatch(obs=obs, actions=actions + 1, advantages=adv), 0)
    np.testing.assert_array_equal(shifted.nets.flat, plain.nets.flat)
    with pytest.raises(OffrlRuntimeError, match="action 2 is not one of the policy's actions"):
        shifted.learn(SampleBatch(obs=obs[:1], actions=np.array([2]), advantages=adv[:1]), 0)


@pytest.mark.parametrize("numpy_backend", [True, False])
def test_gaussian_means_stay_in_the_normalised_bounds(numpy_backend: bool) -> None:
    # With normalize_actions (default) the policy acts in [-1, 1]: a tanh bounds the means,
    # however far the network's output goes (both backends, acting and learning alike).
    algo = make_gaussian_pg(numpy_backend)
    head = algo.model.pi[-2]
    with torch.no_grad():
        head.bias.copy_(torch.tensor([30.0, -0.5]))
    obs = np.array([[0.5, -0.5], [1.0, 1.0]], np.float32)
    means = algo.compute_actions(obs, explore=False)[1][sb.ACTION_DIST_INPUTS][:, :2]
    assert means[:, 0] == pytest.approx([1.0, 1.0]) and (means[:, 0] <= 1.0).all()
    with torch.no_grad():
        raw = algo.model.pi[:-1](torch.from_numpy(obs)).numpy()
    assert np.allclose(means, np.tanh(raw), atol=1e-6)
    # without normalize_actions the means are the network's outputs, unbounded
    free = make_gaussian_pg(numpy_backend, normalize_actions=False)
    assert isinstance(free.model.pi[-1], torch.nn.Linear)


# -- observation filter -----------------------------------------------------------------


def _filter_batch(seed: int, n: int = 12) -> SampleBatch:
    rng = np.random.default_rng(seed)
    return SampleBatch(
        obs=rng.normal([5.0, -2.0, 0.0, 30.0], [3.0, 0.1, 1.0, 10.0], (n, 4)).astype(np.float32),
        actions=rng.integers(0, 2, n),
        rewards=rng.normal(size=n).astype(np.float32),
        terminateds=np.arange(n) % 5 == 4,
        truncateds=np.zeros(n, dtype=bool),
        dones=np.arange(n) % 5 == 4,
        eps_id=np.arange(n) // 5,
    )


def test_observation_filter_learns_a_batch_with_the_statistics_before_it() -> None:
    # PG with the filter == PG without it fed observations normalised by hand with the
    # statistics of the batches learned before (none for the first: the identity).
    filtered = make_pg(observation_filter="MeanStdFilter", use_baseline=True)
    plain = make_pg(use_baseline=True)
    assert plain.obs_filter is None and "obs_filter" not in plain.get_state()
    by_hand = MeanStdFilter(4)
    batches = [_filter_batch(seed) for seed in (1, 2, 3)]
    for b in batches:
        normalised = SampleBatch({**b.columns, sb.OBS: by_hand(b[sb.OBS])})
        filtered.learn(filtered.postprocess(b), 0)
        plain.learn(plain.postprocess(normalised), 0)
        by_hand.update(b[sb.OBS])
        np.testing.assert_array_equal(filtered.nets.flat, plain.nets.flat)
    assert filtered.obs_filter is not None
    assert filtered.obs_filter.state() == by_hand.state()
    rows = np.concatenate([b[sb.OBS] for b in batches]).astype(np.float64)
    assert filtered.obs_filter.count == len(rows)
    np.testing.assert_allclose(filtered.obs_filter.mean, rows.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(filtered.obs_filter.std, rows.std(axis=0, ddof=1), rtol=1e-12)


def test_observation_filter_statistics_survive_a_checkpoint() -> None:
    first = make_pg(observation_filter="MeanStdFilter")
    for seed in (1, 2):
        first.learn(first.postprocess(_filter_batch(seed)), 0)
    raw = io.BytesIO()
    torch.save(first.get_state(), raw)
    raw.seek(0)
    second = make_pg(observation_filter="MeanStdFilter")
    second.set_state(torch.load(raw, weights_only=True))
    assert second.obs_filter is not None and first.obs_filter is not None
    assert second.obs_filter.state() == first.obs_filter.state()
    obs = _filter_batch(9)[sb.OBS]
    np.testing.assert_array_equal(second.action_probs(obs), first.action_probs(obs))


# -- normalize_value_targets: the value net learns V / s, s the RMS of the targets --------


@pytest.mark.parametrize("numpy_backend", [True, False])
def test_folding_value_targets_keeps_v_and_scales_by_their_rms(numpy_backend: bool) -> None:
    cfg = {"seed": 0, "model": {"fcnet_hiddens": [8, 8]}, "use_baseline": True}
    algo = PG(
        from_dict(PGConfig, {**cfg, "normalize_value_targets": True}),
        OBS_SPACE,
        ACT_SPACE,
        numpy_backend=numpy_backend,
    )
    obs = _filter_batch(4)[sb.OBS]
    before = algo._values(obs)
    scaled = algo._fold_value_targets(np.array([3.0, -4.0], dtype=np.float32))
    # s = sqrt((9 + 16) / 2) = 3.5355...; V(obs) is kept by rescaling the last layer
    assert algo._vf_scale() == pytest.approx(math.sqrt(12.5), rel=1e-12)
    np.testing.assert_allclose(scaled, [3 / math.sqrt(12.5), -4 / math.sqrt(12.5)], rtol=1e-6)
    np.testing.assert_allclose(algo._values(obs), before, rtol=1e-5, atol=1e-7)
    algo._fold_value_targets(np.array([5.0, 5.0], dtype=np.float32))  # (9+16+25+25)/4
    assert algo._vf_scale() == pytest.approx(math.sqrt(75 / 4), rel=1e-12)
    np.testing.assert_allclose(algo._values(obs), before, rtol=1e-5, atol=1e-7)


def test_normalised_value_targets_learn_as_plain_pg_on_targets_over_s() -> None:
    # One learn() with normalize_value_targets == plain PG whose value head was divided by
    # s by hand and which learns value_targets / s, s the RMS of this batch's targets.
    normed = make_pg(use_baseline=True, normalize_value_targets=True)
    plain = make_pg(use_baseline=True)
    assert "value_scale" not in plain.get_state()
    batch = normed.postprocess(_filter_batch(5))
    vt = np.asarray(batch[sb.VALUE_TARGETS], dtype=np.float64)
    s = math.sqrt(float(np.mean(vt**2)))
    assert plain.model.vf is not None
    with torch.no_grad():
        plain.model.vf[-1].weight.div_(s)
        plain.model.vf[-1].bias.div_(s)
    by_hand = SampleBatch({**batch.columns, sb.VALUE_TARGETS: (vt / s).astype(np.float32)})
    normed.learn(batch, 0)
    plain.learn(by_hand, 0)
    np.testing.assert_allclose(normed.nets.flat, plain.nets.flat, rtol=1e-5, atol=1e-7)
    assert normed._vf_scale() == pytest.approx(s, rel=1e-6)


def test_value_target_scale_survives_a_checkpoint_and_a_mismatch_is_named() -> None:
    first = make_pg(use_baseline=True, normalize_value_targets=True)
    first.learn(first.postprocess(_filter_batch(6)), 0)
    raw = io.BytesIO()
    torch.save(first.get_state(), raw)
    raw.seek(0)
    state = torch.load(raw, weights_only=True)
    second = make_pg(use_baseline=True, normalize_value_targets=True)
    second.set_state(state)
    assert second._vf_scale() == first._vf_scale() != 1.0
    obs = _filter_batch(7)[sb.OBS]
    np.testing.assert_array_equal(second._values(obs), first._values(obs))
    with pytest.raises(ValueError, match="normalize_value_targets"):
        make_pg(use_baseline=True).set_state(state)
    older = {k: v for k, v in state.items() if k != "value_scale"}
    third = make_pg(use_baseline=True, normalize_value_targets=True)
    third.set_state(older)  # a checkpoint from before the key: s = 1
    assert third._vf_scale() == 1.0
