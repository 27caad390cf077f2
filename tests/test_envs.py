"""Tests for offrl/envs.py: env-id checks and the vector envs (in this process or one
process per env)."""

from __future__ import annotations

import gymnasium as gym
import pytest

from offrl.envs import check_env_id, env_suggestions
from offrl.errors import ConfigError

COUNT_ENV = "tests.envs:CountEnv"
CARTPOLE = "CartPole-v1"


# -- env ids ---------------------------------------------------------------------------


def test_check_env_id_accepts_registered_ids_and_env_classes() -> None:
    check_env_id(CARTPOLE)
    check_env_id(COUNT_ENV)


def test_check_env_id_suggests_close_registered_ids() -> None:
    assert "CartPole-v1" in env_suggestions("CartPol-v1")
    with pytest.raises(ConfigError, match="did you mean") as exc:
        check_env_id("CartPol-v1")
    assert "CartPole-v1" in str(exc.value)
    assert "'CartPol-v1'" in str(exc.value)


def test_check_env_id_without_close_match_has_no_suggestion() -> None:
    with pytest.raises(ConfigError) as exc:
        check_env_id("Qzxqzxqzx-v9")
    assert "did you mean" not in str(exc.value)
    assert "unknown gymnasium environment id" in str(exc.value)


@pytest.mark.parametrize(
    ("env_id", "needle"),
    [
        ("tests.envs:Missing", "has no 'Missing'"),
        ("no_such_module_offrl_xyz:Env", "no_such_module_offrl_xyz"),
        ("tests.envs:NotAnEnv", "is not a gymnasium.Env class"),
        ("tests.envs:HORIZON", "is not a gymnasium.Env class"),
    ],
)
def test_check_env_id_module_class_errors(env_id: str, needle: str) -> None:
    with pytest.raises(ConfigError, match="--env") as exc:
        check_env_id(env_id)
    assert needle in str(exc.value)


# -- remote_worker_envs: one process per env ---------------------------------------


def _children_alive(env: gym.vector.VectorEnv) -> list[bool]:
    return [p.is_alive() for p in getattr(env, "processes", [])]


@pytest.mark.parametrize(
    ("env_id", "num_envs", "remote", "process_based"),
    [
        ("Acrobot-v1", 2, True, True),
        (COUNT_ENV, 2, True, True),
        ("Acrobot-v1", 2, False, False),  # not asked
        ("Acrobot-v1", 1, True, False),  # one env: nothing to run side by side
        (CARTPOLE, 2, True, False),  # CartPole's own vector class steps all envs at once
    ],
)
def test_make_vector_env_uses_processes_only_when_asked_and_without_a_vector_class(
    env_id: str, num_envs: int, remote: bool, process_based: bool
) -> None:
    from offrl.envs import make_vector_env

    env = make_vector_env(env_id, num_envs, remote=remote)
    try:
        assert isinstance(env, gym.vector.AsyncVectorEnv) is process_based
        assert env.metadata["autoreset_mode"] == gym.vector.AutoresetMode.NEXT_STEP
        assert env.num_envs == num_envs
    finally:
        env.close()
    assert not any(_children_alive(env))
