"""Step-wise IS and WIS over whole episodes, on hand-computed numbers and the RLlib fixture."""

from __future__ import annotations

import json

import numpy as np
import pytest

from offrl.batch import SampleBatch
from offrl.errors import OffrlRuntimeError
from offrl.estimators import MissingBehaviourProbs, make_estimators
from offrl.estimators.base import EpisodeCollector
from offrl.estimators.importance import (
    ImportanceSampling,
    WeightedImportanceSampling,
    cumulative_ratios,
    missing_mass,
    reward_range,
)
from offrl.estimators.stats import Z95
from tests.shared_data import RLLIB_FIXTURE

FIXTURE = RLLIB_FIXTURE
GAMMA = 0.5

# Target policy: a table indexed by the (integer) state stored in obs[:, 0].
TABLE = np.array([[0.8, 0.2], [0.25, 0.75], [0.5, 0.5], [0.1, 0.9], [0.6, 0.4]])


def table_probs(obs: np.ndarray) -> np.ndarray:
    return TABLE[obs[:, 0].astype(int)]


def two_episodes() -> SampleBatch:
    """Episode A (eps 11): states 0,1, actions 0,1, rewards 1,2, b = .5,.5, terminated.
    Episode B (eps 22): states 2,3,4, actions 1,1,0, rewards 1,1,1, b = .5,.6,.8, terminated."""
    return SampleBatch(
        obs=np.array([[0], [1], [2], [3], [4]], dtype=np.float32),
        actions=np.array([0, 1, 1, 1, 0]),
        rewards=np.array([1.0, 2.0, 1.0, 1.0, 1.0]),
        dones=np.array([False, True, False, False, True]),
        eps_id=np.array([11, 11, 22, 22, 22]),
        t=np.array([0, 1, 0, 1, 2]),
        action_prob=np.array([0.5, 0.5, 0.5, 0.6, 0.8]),
    )


# pi(logged): A 0.8, 0.75 -> step ratios 1.6, 1.5 -> rho_{0:t} = 1.6, 2.4
#             B 0.5, 0.9, 0.6 -> step ratios 1.0, 1.5, 0.75 -> rho_{0:t} = 1.0, 1.5, 1.125
# IS per episode: A = 1.6*1 + .5*2.4*2 = 4.0;  B = 1 + .5*1.5 + .25*1.125 = 2.03125
IS_VALUE = (4.0 + 2.03125) / 2  # 3.015625
IS_SE = abs(4.0 - 2.03125) / 2  # std(ddof=1)/sqrt(2) of two values = |a-b|/2 = 0.984375
# behaviour: A = 1 + .5*2 = 2;  B = 1 + .5 + .25 = 1.75
V_BEHAVIOR = (2.0 + 1.75) / 2  # 1.875
# WIS: rho padded with its last value: A 1.6, 2.4, 2.4; B 1.0, 1.5, 1.125
#   w_t = 1.3, 1.95, 1.7625;  mean(rho r)_t = 1.3, (4.8+1.5)/2 = 3.15, (0+1.125)/2 = 0.5625
#   V = 1.3/1.3 + .5*3.15/1.95 + .25*.5625/1.7625 = 1 + 0.8076923 + 0.0797872 = 1.8874795
WIS_VALUE = 1 + 0.5 * 3.15 / 1.95 + 0.25 * 0.5625 / 1.7625
# delta method: V_t = 1, 1.6153846, 0.3191489
#   psi_A = .5*(4.8 - 1.6153846*2.4)/1.95 + .25*(0 - .3191489*2.4)/1.7625 = 0.1280399
#   psi_B = -0.1280399 (psi sums to 0);  se = sqrt(2 * 0.1280399^2 / (2*1)) = 0.1280399
WIS_SE = 0.1280399


def run(est: ImportanceSampling | WeightedImportanceSampling, batches: list[SampleBatch]) -> dict:
    for b in batches:
        est.process(b, table_probs)
    return est.estimate()


def test_cumulative_ratios_by_hand() -> None:
    got = cumulative_ratios(np.array([0.5, 0.9, 0.6]), np.array([0.5, 0.6, 0.8]))
    assert np.allclose(got, [1.0, 1.5, 1.125])


def test_is_two_episodes_by_hand() -> None:
    out = run(ImportanceSampling(gamma=GAMMA, seed=0), [two_episodes()])
    assert out["num_episodes"] == 2
    assert out["v_target"] == pytest.approx(IS_VALUE)
    assert out["v_behavior"] == pytest.approx(V_BEHAVIOR)
    assert out["v_gain"] == pytest.approx(IS_VALUE / V_BEHAVIOR)
    assert out["v_delta"] == pytest.approx(IS_VALUE - V_BEHAVIOR)
    assert out["v_target_std_err"] == pytest.approx(IS_SE)
    assert out["v_target_ci_low"] == pytest.approx(IS_VALUE - Z95 * IS_SE)
    assert out["v_target_ci_high"] == pytest.approx(IS_VALUE + Z95 * IS_SE)
    # ESS of final weights 2.4, 1.125: 3.525^2 / (5.76 + 1.265625) = 12.425625 / 7.025625
    assert out["ess"] == pytest.approx(12.425625 / 7.025625)


def test_wis_two_episodes_by_hand() -> None:
    out = run(WeightedImportanceSampling(gamma=GAMMA, seed=0), [two_episodes()])
    assert out["v_target"] == pytest.approx(WIS_VALUE)
    assert out["v_target"] == pytest.approx(1.8874795, abs=1e-7)
    assert out["v_target_std_err"] == pytest.approx(WIS_SE, abs=1e-7)
    assert out["v_behavior"] == pytest.approx(V_BEHAVIOR)


def test_well_covered_data_has_no_missing_mass() -> None:
    # w_t = 1.3, 1.95, 1.7625 (above): every step shows at least the target's mass
    for cls in (ImportanceSampling, WeightedImportanceSampling):
        out = run(cls(gamma=GAMMA, seed=0), [two_episodes()])
        assert out["missing_mass"] == 0.0
        se = out["v_target_std_err"]
        assert out["v_target_ci_low"] == pytest.approx(out["v_target"] - Z95 * se)
        assert out["v_target_ci_high"] == pytest.approx(out["v_target"] + Z95 * se)


def sparse_episodes() -> SampleBatch:
    """Episode C (eps 1): states 2,0, actions 0,1, rewards 1,1, b = .5,.8, terminated.
    Episode D (eps 2): state 4, action 1, reward 2, b = .8, terminated."""
    return SampleBatch(
        obs=np.array([[2], [0], [4]], dtype=np.float32),
        actions=np.array([0, 1, 1]),
        rewards=np.array([1.0, 1.0, 2.0]),
        dones=np.array([False, True, True]),
        eps_id=np.array([1, 1, 2]),
        t=np.array([0, 1, 0]),
        action_prob=np.array([0.5, 0.8, 0.8]),
    )


# pi(logged): C 0.5, 0.2 -> rho = 1.0, 0.25;  D 0.4 -> rho = 0.5 (padded: 0.5, 0.5)
#   w_t = 0.75, 0.375 -> missing mass m_t = 0.25, 0.625;  A_t = mean(rho r)_t = 1.0, 0.125
#   reward range: logged 1..2, and 0 (D ended first) -> [0, 2]
#   shown + m [0, 2]:  t0 [1.0, 1.5],  t1 [0.125, 1.375]
#   -> discounted bounds 1.0 + .5*.125 = 1.0625 and 1.5 + .5*1.375 = 2.1875
#   missing_mass = (0.25 + .5*.625) / 1.5 = 0.375
# WIS: V_t = 4/3, 1/3 -> V = 1.5;  psi_C = -4/9 + .5*4/9 = -2/9, psi_D = +2/9 -> se = 2/9
# IS: per episode C = 1 + .5*.25 = 1.125, D = 1.0 -> V = 1.0625, se = 0.0625
@pytest.mark.parametrize(
    ("cls", "value", "se"),
    [(WeightedImportanceSampling, 1.5, 2 / 9), (ImportanceSampling, 1.0625, 0.0625)],
)
def test_interval_is_widened_by_the_missing_mass_by_hand(
    cls: type, value: float, se: float
) -> None:
    out = run(cls(gamma=GAMMA, seed=0), [sparse_episodes()])
    assert out["v_target"] == pytest.approx(value)
    assert out["v_target_std_err"] == pytest.approx(se)
    assert out["missing_mass"] == pytest.approx(0.375)
    assert out["v_target_ci_low"] == pytest.approx(1.0625 - Z95 * se)
    assert out["v_target_ci_high"] == pytest.approx(2.1875 + Z95 * se)


def test_missing_mass_and_reward_range_by_hand() -> None:
    den = np.array([[1.0, 0.25], [0.5, 0.5], [3.0, 3.0]])
    assert np.array_equal(missing_mass(den), [0.0, 0.0])  # w = 1.5, 1.25: nothing missing
    assert np.allclose(missing_mass(den[:2]), [0.25, 0.625])
    assert reward_range([np.array([1.0, 3.0]), np.array([2.0, 2.0])]) == (1.0, 3.0)
    assert reward_range([np.array([1.0, 3.0]), np.array([2.0])]) == (0.0, 3.0)  # absorbing 0
    assert reward_range([np.array([-2.0]), np.array([-1.0, -1.0])]) == (-2.0, 0.0)


def chain_data(n: int, horizon: int, seed: int) -> SampleBatch:
    """A chain of ``horizon`` steps: action 1 earns 1 until action 0 is taken once, then
    every reward is 0. The behaviour picks each action with 0.5; the target always
    picks 1 (true value with gamma 1: ``horizon``)."""
    rng = np.random.default_rng(seed)
    cols: dict[str, list] = {k: [] for k in ("actions", "rewards", "dones", "eps_id", "t")}
    for ep in range(n):
        fallen = False
        for t in range(horizon):
            a = int(rng.random() < 0.5)
            fallen |= a == 0
            values = (a, 0.0 if fallen else 1.0, t == horizon - 1, ep, t)
            for k, v in zip(cols, values, strict=True):
                cols[k].append(v)
    rows = len(cols["actions"])
    return SampleBatch({**cols, "obs": np.zeros((rows, 1), np.float32),
                        "action_prob": np.full(rows, 0.5)})  # fmt: skip


def always_on(obs: np.ndarray) -> np.ndarray:
    return np.tile([0.0, 1.0], (len(obs), 1))


@pytest.mark.parametrize("cls", [ImportanceSampling, WeightedImportanceSampling])
def test_interval_covers_a_target_the_data_barely_shows(cls: type) -> None:
    # 100 episodes of a 30-step chain: the target's path survives the behaviour's coin
    # flips with probability 2^-t, so beyond ~7 steps no episode shows it. The estimate
    # falls far short of the truth (30) and the sampling interval alone misses it; the
    # missing mass (~3/4 of the target's probability) widens the interval to cover it.
    est = cls(gamma=1.0, seed=0)
    est.process(chain_data(100, 30, seed=3), always_on)
    out = est.estimate()
    assert out["v_target"] < 10
    se = out["v_target_std_err"]
    assert out["v_target"] + Z95 * se < 30  # the unwidened interval would miss
    assert out["missing_mass"] > 0.7
    assert out["v_target_ci_low"] <= out["v_target"] <= 30 <= out["v_target_ci_high"]


def test_wis_normalises_over_the_dataset_not_per_batch() -> None:
    whole = two_episodes()
    one_per_batch = [whole.slice(0, 2), whole.slice(2, 5)]
    out = run(WeightedImportanceSampling(gamma=GAMMA, seed=0), one_per_batch)
    # Per-batch WIS of a single episode gives back its behaviour return (2 and 1.75,
    # mean 1.875); the dataset-wide estimate is the hand-computed 1.8874795.
    assert out["v_target"] == pytest.approx(WIS_VALUE)


@pytest.mark.parametrize("cls", [ImportanceSampling, WeightedImportanceSampling])
def test_episodes_split_and_interleaved_across_batches(cls: type) -> None:
    whole = two_episodes()
    expected = run(cls(gamma=GAMMA, seed=0), [whole])
    # rows A0 B0 | B1 A1 | B2: every episode cut, rows of both interleaved
    order = [[0, 2], [3, 1], [4]]
    split = run(cls(gamma=GAMMA, seed=0), [whole.take(np.array(o)) for o in order])
    assert split == pytest.approx(expected)
    # parts arriving out of time order (a batch-level shuffle) are put back by t
    late = run(cls(gamma=GAMMA, seed=0), [whole.take(np.array(o)) for o in [[4], [3, 1], [0, 2]]])
    assert late == pytest.approx(expected)


def test_split_without_eps_id_or_t_is_joined_by_dones() -> None:
    whole = two_episodes()
    del whole["eps_id"], whole["t"]
    parts = [whole.slice(0, 1), whole.slice(1, 3), whole.slice(3, 5)]
    out = run(ImportanceSampling(gamma=GAMMA, seed=0), parts)
    assert out["num_episodes"] == 2
    assert out["v_target"] == pytest.approx(IS_VALUE)


def test_incomplete_episode_stays_pending() -> None:
    est = ImportanceSampling(gamma=GAMMA, seed=0)
    est.process(two_episodes().slice(0, 4), table_probs)  # B lacks its last row
    assert est.estimate()["num_episodes"] == 1
    assert est.collector.num_pending == 1
    est.process(two_episodes().slice(4, 5), table_probs)
    assert est.estimate()["v_target"] == pytest.approx(IS_VALUE)
    est.reset()
    assert est.estimate() == {"num_episodes": 0.0}


def test_pending_episodes_are_bounded() -> None:
    col = EpisodeCollector(keep_states=False, seed=0, max_pending=3)
    for eps in range(5):  # five unfinished episodes, one row each
        b = SampleBatch(obs=np.zeros((1, 1)), actions=[0], rewards=[1.0], dones=[False],
                        eps_id=[eps], action_prob=[0.5])  # fmt: skip
        col.add(b, table_probs)
    assert col.num_pending == 3 and col.dropped == 2


def test_action_logp_is_used_when_action_prob_is_missing() -> None:
    batch = two_episodes()
    batch["action_logp"] = np.log(batch["action_prob"])
    del batch["action_prob"]
    out = run(ImportanceSampling(gamma=GAMMA, seed=0), [batch])
    assert out["v_target"] == pytest.approx(IS_VALUE)


@pytest.mark.parametrize("name", ["is", "wis", "dr"])
def test_missing_behaviour_probs_raise_the_skip_signal(name: str) -> None:
    batch = two_episodes()
    del batch["action_prob"]
    (est,) = make_estimators([name], gamma=GAMMA, action_space_n=2, obs_dim=1, seed=0)
    with pytest.raises(MissingBehaviourProbs) as err:
        est.process(batch, table_probs)
    assert err.value.estimator == name
    assert "action_prob" in str(err.value) and "'dm'" in str(err.value)
    assert est.estimate() == {"num_episodes": 0.0}  # nothing half-processed


def test_zero_behaviour_probability_is_a_clear_error() -> None:
    batch = two_episodes()
    batch["action_prob"] = np.array([0.5, 0.0, 0.5, 0.6, 0.8])
    est = ImportanceSampling(gamma=GAMMA, seed=0)
    est.process(batch, table_probs)
    with pytest.raises(OffrlRuntimeError, match="action_prob > 0"):
        est.estimate()


def load_fixture() -> list[SampleBatch]:
    with FIXTURE.open() as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [SampleBatch({k: v for k, v in r.items() if k != "type"}) for r in rows]


def test_on_policy_fixture_gives_gain_one() -> None:
    batches = load_fixture()
    # Target = behaviour: map each logged obs to probs that give the logged action its
    # logged action_prob, so every ratio is exactly 1.
    lookup = {}
    for b in batches:
        for o, a, p in zip(b["obs"], b["actions"], b["action_prob"], strict=True):
            probs = np.array([1 - p, p]) if a == 1 else np.array([p, 1 - p])
            lookup[np.asarray(o, dtype=np.float32).tobytes()] = probs

    def behaviour(obs: np.ndarray) -> np.ndarray:
        return np.stack([lookup[o.tobytes()] for o in obs.astype(np.float32)])

    for name in ("is", "wis"):
        (est,) = make_estimators([name], gamma=0.99, action_space_n=2, obs_dim=4, seed=0)
        for b in batches:
            est.process(b, behaviour)
        out = est.estimate()
        assert out["num_episodes"] == 3
        assert out["v_gain"] == pytest.approx(1.0, abs=1e-6)
        returns = [sum(0.99**t for t in range(b.count)) for b in batches]  # reward 1 per step
        assert out["v_behavior"] == pytest.approx(np.mean(returns))


@pytest.mark.parametrize("name", ["is", "wis"])
def test_fixture_cut_into_fragments_matches_whole_episodes(name: str) -> None:
    def uniform(obs: np.ndarray) -> np.ndarray:
        return np.full((len(obs), 2), 0.5)

    def run_on(batches: list[SampleBatch]) -> dict:
        (est,) = make_estimators([name], gamma=0.99, action_space_n=2, obs_dim=4, seed=0)
        for b in batches:
            est.process(b, uniform)
        return est.estimate()

    episodes = load_fixture()
    joined = SampleBatch.concat_samples(episodes)
    # 7-row fragments across the three real episodes (rows 102): every episode is cut
    cut = [joined.slice(s, s + 7) for s in range(0, joined.count, 7)]
    whole, split = run_on(episodes), run_on(cut)
    assert whole["num_episodes"] == split["num_episodes"] == 3
    assert split == pytest.approx(whole)
    assert whole["v_target"] != pytest.approx(whole["v_behavior"])  # truly off-policy


def test_huge_eps_ids_in_an_object_column_are_joined() -> None:
    batch = two_episodes()
    ids = np.empty(5, dtype=object)
    ids[:] = [2**70, 2**70, 2**70 + 1, 2**70 + 1, 2**70 + 1]
    batch["eps_id"] = ids
    out = run(ImportanceSampling(gamma=GAMMA, seed=0), [batch.slice(0, 3), batch.slice(3, 5)])
    assert out["v_target"] == pytest.approx(IS_VALUE)


# -- degenerate behaviour probabilities ------------------------------------------------------


def test_degenerate_behaviour_all_ones_with_different_actions() -> None:
    from offrl.estimators.base import degenerate_behaviour

    obs = np.arange(8, dtype=np.float32).reshape(4, 2)
    why = degenerate_behaviour(obs, np.array([0, 1, 1, 0]), np.ones(4))
    assert why is not None and "every action_prob is 1.0" in why
    # a greedy policy that never explored logs one action: 1.0 is then right
    assert degenerate_behaviour(obs, np.array([1, 1, 1, 1]), np.ones(4)) is None
    assert degenerate_behaviour(obs, np.array([0, 1, 1, 0]), np.full(4, 0.5)) is None


def test_degenerate_behaviour_same_state_probabilities_over_one() -> None:
    from offrl.estimators.base import degenerate_behaviour

    obs = np.array([[0.0, 1.0], [0.0, 1.0], [2.0, 3.0]], dtype=np.float32)
    # state [0, 1]: action 0 with 0.7 and action 1 with 0.6 -> 1.3 > 1
    why = degenerate_behaviour(obs, np.array([0, 1, 0]), np.array([0.7, 0.6, 0.9]))
    assert why is not None and "sum to 1.3 > 1" in why
    assert degenerate_behaviour(obs, np.array([0, 1, 0]), np.array([0.7, 0.3, 0.9])) is None
    # the same action twice in one state is not a contradiction
    assert degenerate_behaviour(obs, np.array([0, 0, 1]), np.array([0.7, 0.7, 0.9])) is None


def test_rllib_dqn_files_warn_once_naming_the_broken_estimators() -> None:
    """RLlib's DQN writes action_prob 1.0 on every row although it explored."""
    import gymnasium as gym
    from shared_data import RLLIB_260_DQN_CARTPOLE

    from offrl.config import CommonConfig
    from offrl.estimators import estimators_for, feed_estimators
    from offrl.io.input import make_input_reader

    env = gym.make("CartPole-v1")
    estimators = estimators_for(
        ["is", "wis"],
        gamma=0.99,
        observation_space=env.observation_space,
        action_space=env.action_space,
        seed=0,
    )
    reader = make_input_reader(
        str(RLLIB_260_DQN_CARTPOLE), config=CommonConfig(), seed=0, worker_index=0, num_workers=1
    )
    warnings: list[str] = []
    for batch in reader.iter_epoch():
        warnings += feed_estimators(estimators, batch, lambda o: np.full((len(o), 2), 0.5))
    assert len(warnings) == 1
    assert "every action_prob is 1.0" in warnings[0]
    assert "is, wis, dr" in warnings[0] and "dm does not use them" in warnings[0]
