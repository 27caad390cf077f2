"""The contract every registered algorithm keeps, run over each one and a few spaces.

Build it, learn one batch, checkpoint it (``get_state`` through a checkpoint file), restore
into a fresh instance that then acts identically, and act (``compute_actions`` with and
without exploration: shapes, dtypes, values inside the action space). An algorithm that
cannot handle a space says so with a ConfigError when it is built.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch

from offrl.algos import algorithm_names, get_algorithm
from offrl.config import from_dict
from offrl.envs import env_spaces
from offrl.errors import ConfigError
from offrl.results import load_checkpoint, save_checkpoint
from offrl.rollout import Sampler

# env -> what it exercises; the tests.envs ones are small, fast and deterministic
ENVS = {
    "CartPole-v1": "Box obs, Discrete actions",
    "tests.envs:ImageEnv": "uint8 image obs (conv encoder)",
    "tests.envs:SixteenStatesTwoActions": "Discrete obs (one-hot)",
    "tests.envs:BoxActionEnv": "Box actions",
    "tests.envs:MultiDiscreteEnv": "MultiDiscrete obs and actions",
    "tests.envs:DiscreteStartEnv": "Discrete(3, start=-1) actions",
    "tests.envs:MultiDiscreteStartEnv": "MultiDiscrete actions with a start",
}
TINY: dict[str, dict[str, Any]] = {
    "PG": {"train_batch_size": 32, "model": {"fcnet_hiddens": [8]}},
    "DQN": {
        "learning_starts": 8,
        "train_batch_size": 8,
        "rollout_fragment_length": 16,
        "timesteps_per_iteration": 32,
        "buffer_size": 1000,
        "model": {"fcnet_hiddens": [8]},
        "hiddens": [8],
    },
}
CASES = [(algo, env) for algo in algorithm_names() for env in ENVS]
NUM_ENVS = 2


def test_every_registered_algorithm_has_a_tiny_config() -> None:
    assert sorted(TINY) == algorithm_names()


def _config(algo: str, seed: int) -> Any:
    config_cls, _ = get_algorithm(algo)
    return from_dict(config_cls, {**TINY[algo], "seed": seed}, algo=algo)


def _build(algo: str, env: str, seed: int = 1) -> Any:
    _, algo_cls = get_algorithm(algo)
    return algo_cls(_config(algo, seed), *env_spaces(env))


def _supports(algo: str, env: str) -> bool:
    try:
        _build(algo, env)
    except ConfigError:
        return False
    return True


def _sample(algo: Any, env: str) -> Any:
    sampler = Sampler(env, NUM_ENVS, algo, algo.rollout_fragment_length(), 1, None)
    try:
        return sampler.next()
    finally:
        sampler.close()


def _arrays(state: Any, prefix: str = "") -> Iterator[tuple[str, np.ndarray]]:
    """Every tensor or array in a nested state, by path."""
    if isinstance(state, dict):
        for key, value in state.items():
            yield from _arrays(value, f"{prefix}/{key}")
    elif isinstance(state, (list, tuple)):
        for i, value in enumerate(state):
            yield from _arrays(value, f"{prefix}/{i}")
    elif isinstance(state, torch.Tensor):
        yield prefix, state.detach().cpu().numpy().copy()
    elif isinstance(state, np.ndarray):
        yield prefix, state.copy()


def _weights(algo: Any) -> dict[str, np.ndarray]:
    return {k: v for k, v in _arrays(algo.get_state()) if v.dtype.kind == "f"}


@pytest.mark.parametrize(("algo", "env"), CASES)
def test_build_or_refuse_the_space_clearly(algo: str, env: str) -> None:
    _, act_space = env_spaces(env)
    if algo == "DQN" and not isinstance(act_space, gym.spaces.Discrete):
        with pytest.raises(ConfigError, match="needs a Discrete action space") as err:
            _build(algo, env)
        assert err.value.exit_code == 2
        return
    built = _build(algo, env)
    assert built.rollout_fragment_length() >= 1 and built.steps_per_iteration() >= 1


@pytest.mark.parametrize(("algo", "env"), CASES)
def test_learn_one_batch_changes_weights_and_reports_finite_stats(algo: str, env: str) -> None:
    if not _supports(algo, env):
        pytest.skip(f"{algo} refuses {env}'s spaces (checked above)")
    learner = _build(algo, env)
    batch = learner.postprocess(_sample(learner, env))
    before = _weights(learner)
    stats = learner.learn(batch, batch.count)
    assert stats, "learn() reports its stats"
    for key, value in stats.items():
        assert isinstance(value, (int, float)) and np.isfinite(value), (key, value)
    after = _weights(learner)
    assert before.keys() <= after.keys()  # (torch.optim.Adam adds its moments at step 1)
    changed = [k for k in before if not np.array_equal(before[k], after[k])]
    assert changed, "one batch of learning changed no weight"
    for key in changed:
        assert np.isfinite(after[key]).all(), key


@pytest.mark.parametrize(("algo", "env"), CASES)
def test_checkpoint_restores_into_a_fresh_instance_that_acts_identically(
    algo: str, env: str, tmp_path: Path
) -> None:
    if not _supports(algo, env):
        pytest.skip(f"{algo} refuses {env}'s spaces (checked above)")
    learner = _build(algo, env, seed=1)
    batch = learner.postprocess(_sample(learner, env))
    learner.learn(batch, batch.count)
    obs = batch["obs"][:16]
    # a checkpoint file, read back as offrl reads checkpoints (weights_only: data only)
    path = save_checkpoint(tmp_path, 1, learner.get_state())
    state = load_checkpoint(path)
    fresh = _build(algo, env, seed=2)  # another seed: only the checkpoint can make it equal
    assert not all(
        np.array_equal(a, b)
        for a, b in zip(_weights(fresh).values(), _weights(learner).values(), strict=True)
    )
    fresh.set_state(state)
    for key, value in _weights(learner).items():
        np.testing.assert_array_equal(_weights(fresh)[key], value, err_msg=key)
    greedy, _ = learner.compute_actions(obs, explore=False)
    np.testing.assert_array_equal(fresh.compute_actions(obs, explore=False)[0], greedy)
    # exploration RNG states are in the checkpoint too: the next sampled actions agree
    explored, extras = learner.compute_actions(obs, explore=True)
    explored_fresh, extras_fresh = fresh.compute_actions(obs, explore=True)
    np.testing.assert_array_equal(explored_fresh, explored)
    np.testing.assert_allclose(extras_fresh["action_logp"], extras["action_logp"], rtol=1e-6)


@pytest.mark.parametrize(("algo", "env"), CASES)
@pytest.mark.parametrize("explore", [True, False], ids=["explore", "greedy"])
def test_compute_actions_shapes_dtypes_and_space(algo: str, env: str, explore: bool) -> None:
    if not _supports(algo, env):
        pytest.skip(f"{algo} refuses {env}'s spaces (checked above)")
    learner = _build(algo, env)
    _, act_space = env_spaces(env)
    obs = _sample(learner, env)["obs"][:7]
    actions, extras = learner.compute_actions(obs, explore=explore)
    n = len(obs)
    assert isinstance(actions, np.ndarray)
    if isinstance(act_space, gym.spaces.Discrete):
        assert actions.shape == (n,) and actions.dtype.kind == "i"
    elif isinstance(act_space, gym.spaces.MultiDiscrete):
        assert actions.shape == (n, *act_space.shape) and actions.dtype.kind == "i"
    else:
        assert actions.shape == (n, *act_space.shape) and actions.dtype.kind == "f"
    to_env = getattr(learner, "env_actions", None)
    env_actions = to_env(actions) if callable(to_env) else actions
    for a in env_actions:
        assert act_space.contains(np.asarray(a, dtype=act_space.dtype)), a
    assert extras["action_prob"].shape == (n,) and extras["action_logp"].shape == (n,)
    assert extras["action_dist_inputs"].ndim == 2 and len(extras["action_dist_inputs"]) == n
    for name in ("action_prob", "action_logp", "action_dist_inputs"):
        assert np.isfinite(extras[name]).all(), name
    np.testing.assert_allclose(
        np.exp(extras["action_logp"]), extras["action_prob"], rtol=1e-5, atol=1e-7
    )
    if not explore:  # greedy acting is deterministic
        np.testing.assert_array_equal(learner.compute_actions(obs, explore=False)[0], actions)
    if isinstance(act_space, gym.spaces.Discrete):
        probs = learner.action_probs(obs)
        assert probs.shape == (n, act_space.n)
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
        if not explore and algo == "PG":  # PG's greedy action is its distribution's mode
            # column k of action_probs is the action start + k
            np.testing.assert_array_equal(actions, probs.argmax(axis=1) + act_space.start)
