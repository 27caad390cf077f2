"""Direct method and doubly robust estimates on a chain MDP whose values are known."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from offrl.batch import SampleBatch
from offrl.estimators import MissingBehaviourProbs, make_estimators
from offrl.estimators.direct import dr_episode_value

torch.set_num_threads(1)

LENGTH, GAMMA = 5, 0.9
HORIZON_SUM = (1 - GAMMA**LENGTH) / (1 - GAMMA)  # sum_{t<5} 0.9^t = 4.0951


def chain_data(n_episodes: int, p_behaviour: float, seed: int) -> SampleBatch:
    """Countdown MDP: obs = [steps left / 5], reward = action (0/1), terminated after 5 steps.

    Under a policy taking action 1 with probability p everywhere, V = p * 4.0951.
    """
    rng = np.random.default_rng(seed)
    n = n_episodes * LENGTH
    actions = (rng.random(n) < p_behaviour).astype(np.int64)
    steps_left = np.tile(np.arange(LENGTH, 0, -1), n_episodes)
    return SampleBatch(
        obs=(steps_left / LENGTH)[:, None].astype(np.float32),
        new_obs=((steps_left - 1) / LENGTH)[:, None].astype(np.float32),
        actions=actions,
        rewards=actions.astype(np.float64),
        terminateds=steps_left == 1,
        truncateds=np.zeros(n, dtype=bool),
        eps_id=np.repeat(np.arange(n_episodes) * 7919, LENGTH),
        t=np.tile(np.arange(LENGTH), n_episodes),
        action_prob=np.where(actions == 1, p_behaviour, 1 - p_behaviour),
    )


def constant_policy(p: float):  # noqa: ANN201 - returns a TargetProbs callable
    return lambda obs: np.tile([1 - p, p], (len(obs), 1))


def estimates(p_target: float, names: list[str], seed: int = 0) -> dict[str, dict]:
    ests = make_estimators(names, gamma=GAMMA, action_space_n=2, obs_dim=1, seed=seed,
                           fqe_config={"n_iters": 300, "lr": 3e-3, "batch_size": 128})  # fmt: skip
    data = chain_data(200, 0.5, seed=1)
    for start in range(0, data.count, 64):  # fragments of 64 rows cut episodes
        for est in ests:
            est.process(data.slice(start, start + 64), constant_policy(p_target))
    return {name: est.estimate() for name, est in zip(names, ests, strict=True)}


def test_dr_episode_value_by_hand() -> None:
    r = np.array([1.0, 2.0])
    rho = np.array([2.0, 1.0])  # step ratios 2, 0.5
    q = np.array([0.5, 1.5])
    v = np.array([1.0, 1.0])
    # gamma 0.5: t0: 2*(1-0.5) + 1*1 = 2;  t1: 1*(2-1.5) + 2*1 = 2.5;  V = 2 + 0.5*2.5 = 3.25
    assert dr_episode_value(r, rho, q, v, 0.5) == pytest.approx(3.25)
    # with a zero model DR is per-decision IS: 2*1 + 0.5*1*2 = 3
    assert dr_episode_value(r, rho, np.zeros(2), np.zeros(2), 0.5) == pytest.approx(3.0)


def test_on_policy_gain_is_one_for_every_estimator() -> None:
    out = estimates(0.5, ["is", "wis", "dm", "dr"])
    assert out["is"]["v_gain"] == pytest.approx(1.0, abs=1e-9)
    assert out["wis"]["v_gain"] == pytest.approx(1.0, abs=1e-9)
    # DR with all ratios 1 is the return plus mean_t(V^ - Q^) model residuals that
    # average out over logged actions; DM relies on the fit alone. 300 steps bring both
    # within 0.2 % of the truth here (measured: dm 1.0008, dr 1.0002), so 3 % is a wide margin
    # for other seeds and torch versions while still failing on a broken model or formula.
    assert out["dr"]["v_gain"] == pytest.approx(1.0, abs=0.03)
    assert out["dm"]["v_gain"] == pytest.approx(1.0, abs=0.03)
    # dm and dr share one episode store: each batch is counted once, not once per estimator
    assert out["dm"]["num_episodes"] == out["dr"]["num_episodes"] == 200


def test_off_policy_chain_recovers_the_true_value() -> None:
    true_value = 0.8 * HORIZON_SUM  # 3.2761
    out = estimates(0.8, ["dm", "dr", "wis"])
    # dm/dr measured within 0.2 % of the truth; wis is unbiased but noisy on 200 episodes
    for name, tol in (("dm", 0.03), ("dr", 0.03), ("wis", 0.06)):
        assert out[name]["v_target"] == pytest.approx(true_value, rel=tol), name
        assert out[name]["v_behavior"] == pytest.approx(0.5 * HORIZON_SUM, rel=0.1)
    assert out["wis"]["v_target_ci_low"] < true_value < out["wis"]["v_target_ci_high"]
    # Here rewards are deterministic given the action, so with a near-exact model DR's
    # per-episode values barely vary and its CI is very narrow (it does not include the
    # model's bias): only its closeness is checked.
    assert out["dr"]["v_target"] == pytest.approx(true_value, rel=0.005)


def test_dm_runs_without_behaviour_probs_and_dr_does_not() -> None:
    data = chain_data(10, 0.5, seed=2)
    del data["action_prob"]
    dm, dr = make_estimators(["dm", "dr"], gamma=GAMMA, action_space_n=2, obs_dim=1, seed=0,
                             fqe_config={"n_iters": 5})  # fmt: skip
    dm.process(data, constant_policy(0.5))
    assert dm.estimate()["num_episodes"] == 10
    with pytest.raises(MissingBehaviourProbs):
        dr.process(data, constant_policy(0.5))


def test_estimate_is_incremental_and_reproducible() -> None:
    def run(seed: int) -> tuple[float, float]:
        (dm,) = make_estimators(["dm"], gamma=GAMMA, action_space_n=2, obs_dim=1, seed=seed,
                                fqe_config={"n_iters": 10})  # fmt: skip
        dm.process(chain_data(20, 0.5, seed=3), constant_policy(0.5))
        first = dm.estimate()["v_target"]
        return first, dm.estimate()["v_target"]

    a, b = run(0), run(0)
    assert a == b
    assert a[0] != a[1]  # the second call trained the model further
