"""The only place that steps environments for experience or returns: vectorised sampling
and greedy evaluation, in the envs :mod:`offrl.envs` builds.

Environments run as a gymnasium vector env in ``NEXT_STEP`` autoreset mode: the
step that ends an episode returns the true final observation, and the *next*
step of that env only resets it. That reset step is not an experience and
yields no row; every other vector step yields one row per env.
"""

from __future__ import annotations

from typing import Any, Protocol

import gymnasium as gym
import numpy as np

from offrl import batch as sb
from offrl.batch import SampleBatch
from offrl.envs import check_finite_step, env_call, import_env_class, make_vector_env
from offrl.preprocess import preprocessor
from offrl.seeding import Stream, generator, int_seed


class Actor(Protocol):
    def compute_actions(
        self, obs: np.ndarray, *, explore: bool
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]: ...


# Vector envs whose whole state is these arrays plus their np_random (CartPole's) can be
# checkpointed mid-episode; for any other env a resumed run starts fresh episodes.
_VECTOR_ENV_ARRAYS = ("state", "steps", "prev_done")


def _vector_env_state(env: Any) -> dict[str, Any] | None:
    if not all(isinstance(getattr(env, a, None), np.ndarray) for a in _VECTOR_ENV_ARRAYS):
        return None
    state: dict[str, Any] = {a: _tensor(getattr(env, a)) for a in _VECTOR_ENV_ARRAYS}
    state["np_random"] = env.np_random.bit_generator.state
    return state


def _set_vector_env_state(env: Any, state: dict[str, Any]) -> None:
    for a in _VECTOR_ENV_ARRAYS:
        setattr(env, a, state[a].numpy().copy())
    env.np_random.bit_generator.state = state["np_random"]


def _tensor(arr: np.ndarray) -> Any:
    """A torch copy of ``arr``: checkpoints load with weights_only=True, which takes tensors."""
    import torch

    return torch.from_numpy(np.array(arr, copy=True))


def _to_env(policy: Actor, actions: np.ndarray) -> np.ndarray:
    """What the env receives for the recorded ``actions`` (a Gaussian's are clipped)."""
    convert = getattr(policy, "env_actions", None)
    return actions if convert is None else convert(actions)


def _zero_actions(space: gym.Space, n: int) -> np.ndarray:
    """``prev_actions`` at t=0: zeros shaped and typed like the space's recorded actions."""
    if isinstance(space, gym.spaces.Box):
        return np.zeros((n, *space.shape), dtype=np.float32)
    return np.zeros((n, *(space.shape or ())), dtype=np.int64)


class Sampler:
    """Steps ``num_envs`` envs with ``policy`` and returns fragments as SampleBatches.

    Rows come grouped per env (each env's rows contiguous, in time order), so an
    episode's steps are contiguous within a fragment, as in RLlib's files.
    """

    def __init__(
        self,
        env_id: str,
        num_envs: int,
        policy: Actor,
        fragment_length: int,
        seed: int,
        horizon: int | None = None,
        remote_envs: bool = False,
    ) -> None:
        self.env = make_vector_env(env_id, num_envs, horizon, remote_envs)
        try:
            self._start(env_id, num_envs, policy, fragment_length, seed)
        except BaseException:
            self.env.close()
            raise

    def _start(
        self, env_id: str, num_envs: int, policy: Actor, fragment_length: int, seed: int
    ) -> None:
        self.env_id = env_id
        self.env_steps = 0  # vector steps taken, for error messages
        self.num_envs = num_envs
        self.policy = policy
        self.fragment_length = fragment_length
        self.rng = generator(seed, Stream.ACTIONS)
        self.preprocess = preprocessor(self.env.single_observation_space)
        reset_seed = int_seed(seed, Stream.ENV_RESET)
        obs, _ = env_call(env_id, "reset", self.env.reset, seed=reset_seed)
        self.obs = env_call(env_id, "reset", self.preprocess, obs, num_envs)
        self.autoreset = np.zeros(num_envs, dtype=bool)
        self.eps_id = self._new_ids(num_envs)
        self.t = np.zeros(num_envs, dtype=np.int64)
        self.prev_action = _zero_actions(self.env.single_action_space, num_envs)
        self.prev_reward = np.zeros(num_envs, dtype=np.float32)
        self.ep_return = np.zeros(num_envs, dtype=np.float64)
        self.unroll_id = 0
        self._episodes: list[tuple[float, int]] = []

    @property
    def observation_space(self) -> gym.Space:
        return self.env.single_observation_space

    @property
    def action_space(self) -> gym.Space:
        return self.env.single_action_space

    def _new_ids(self, n: int) -> np.ndarray:
        # Random 63-bit ids, as RLlib's are random: unique across workers and restarts.
        return self.rng.integers(0, 2**63 - 1, size=n, dtype=np.int64)

    def get_state(self) -> dict[str, Any] | None:
        """Everything needed to continue sampling exactly, or None when the env cannot
        be saved (only vector envs exposing their arrays, like CartPole's, can)."""
        env_state = _vector_env_state(self.env)
        if env_state is None:
            return None
        arrays = ("obs", "autoreset", "eps_id", "t", "prev_action", "prev_reward", "ep_return")
        return {
            "env": env_state,
            **{name: _tensor(getattr(self, name)) for name in arrays},
            "unroll_id": self.unroll_id,
            "rng": self.rng.bit_generator.state,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`get_state` (same env id and number of envs)."""
        _set_vector_env_state(self.env, state["env"])
        for name in ("obs", "autoreset", "eps_id", "t", "prev_action", "prev_reward", "ep_return"):
            setattr(self, name, state[name].numpy().copy())
        self.unroll_id = int(state["unroll_id"])
        self.rng.bit_generator.state = state["rng"]

    def pop_episodes(self) -> list[tuple[float, int]]:
        """(return, length) of every episode finished since the last call."""
        out, self._episodes = self._episodes, []
        return out

    def next(self) -> SampleBatch:
        """One fragment: at least ``fragment_length * num_envs`` rows (fewer than
        ``num_envs`` more), stepping on past the reset steps that yield no row."""
        n = self.num_envs
        target = self.fragment_length * n
        cols: dict[str, list[np.ndarray]] = {}
        valid_steps: list[np.ndarray] = []
        rows = 0
        while rows < target:
            actions, extras = self.policy.compute_actions(self.obs, explore=True)
            self.env_steps += 1
            step = f"step {self.env_steps}"
            env_actions = _to_env(self.policy, actions)
            next_obs, rew, term, trunc, _ = env_call(self.env_id, step, self.env.step, env_actions)
            next_obs = env_call(self.env_id, step, self.preprocess, next_obs, n)
            rew = np.asarray(rew, dtype=np.float32)
            check_finite_step(self.env_id, self.env_steps, next_obs, rew)
            term = np.asarray(term, dtype=bool)
            trunc = np.asarray(trunc, dtype=bool)
            valid = ~self.autoreset
            valid_steps.append(valid)
            rows += int(valid.sum())
            step_cols = {
                sb.OBS: self.obs,
                sb.NEW_OBS: next_obs,
                sb.ACTIONS: np.asarray(actions),
                sb.REWARDS: rew,
                sb.TERMINATEDS: term,
                sb.TRUNCATEDS: trunc,
                sb.EPS_ID: self.eps_id.copy(),
                sb.T: self.t.copy(),
                sb.PREV_ACTIONS: self.prev_action.copy(),
                sb.PREV_REWARDS: self.prev_reward.copy(),
                **extras,
            }
            for name, value in step_cols.items():
                cols.setdefault(name, []).append(value)
            self._advance(valid, next_obs, actions, rew, term | trunc)
        self.unroll_id += 1
        return self._to_batch(cols, np.stack(valid_steps))

    def _advance(
        self,
        valid: np.ndarray,
        next_obs: np.ndarray,
        actions: np.ndarray,
        rew: np.ndarray,
        done: np.ndarray,
    ) -> None:
        """Update per-env episode state after one vector step."""
        done = done & valid
        self.ep_return += np.where(valid, rew, 0.0)
        self.t += valid
        keep = (
            valid if np.ndim(actions) == 1 else valid.reshape(-1, *([1] * (np.ndim(actions) - 1)))
        )
        self.prev_action = np.where(keep, actions, 0).astype(self.prev_action.dtype)
        self.prev_reward = np.where(valid, rew, 0.0).astype(np.float32)
        for i in np.flatnonzero(done):
            self._episodes.append((float(self.ep_return[i]), int(self.t[i])))
        if done.any():
            self.ep_return[done] = 0.0
            self.t[done] = 0
            self.eps_id[done] = self._new_ids(int(done.sum()))
        # Envs that were just reset start fresh too (their reset step gave no row).
        self.autoreset = done
        self.obs = next_obs

    def _to_batch(self, cols: dict[str, list[np.ndarray]], valid: np.ndarray) -> SampleBatch:
        # (steps, envs, ...) -> (envs, steps, ...) so each env's rows are contiguous.
        mask = valid.T.reshape(-1)
        out: dict[str, np.ndarray] = {}
        for name, values in cols.items():
            arr = np.stack(values)
            arr = np.swapaxes(arr, 0, 1).reshape(-1, *arr.shape[2:])
            out[name] = arr[mask]
        rows = int(mask.sum())
        out[sb.DONES] = out[sb.TERMINATEDS] | out[sb.TRUNCATEDS]
        out[sb.AGENT_INDEX] = np.zeros(rows, dtype=np.int64)
        out[sb.UNROLL_ID] = np.full(rows, self.unroll_id, dtype=np.int64)
        infos = np.empty(rows, dtype=object)
        for i in range(rows):
            infos[i] = {}
        out[sb.INFOS] = infos
        return SampleBatch(out)

    def close(self) -> None:
        self.env.close()


def evaluate(
    env_id: str, policy: Actor, num_episodes: int, seed: int, horizon: int | None = None
) -> list[float]:
    """Returns of ``num_episodes`` greedy (explore=False) episodes."""
    num_envs = min(num_episodes, 8)
    env = make_vector_env(env_id, num_envs, horizon)
    steps = 0
    try:
        preprocess = preprocessor(env.single_observation_space)
        obs, _ = env_call(env_id, "reset", env.reset, seed=seed)
        obs = env_call(env_id, "reset", preprocess, obs, num_envs)
        ret = np.zeros(num_envs)
        started = num_envs
        active = np.ones(num_envs, dtype=bool)
        autoreset = np.zeros(num_envs, dtype=bool)
        returns: list[float] = []
        while active.any():
            actions, _ = policy.compute_actions(obs, explore=False)
            steps += 1
            env_actions = _to_env(policy, actions)
            obs, rew, term, trunc, _ = env_call(env_id, f"step {steps}", env.step, env_actions)
            obs = env_call(env_id, f"step {steps}", preprocess, obs, num_envs)
            check_finite_step(env_id, steps, obs, np.asarray(rew))
            live = active & ~autoreset
            ret += np.where(live, rew, 0.0)
            done = live & (np.asarray(term) | np.asarray(trunc))
            for i in np.flatnonzero(done):
                returns.append(float(ret[i]))
                ret[i] = 0.0
                if started < num_episodes:
                    started += 1
                else:
                    active[i] = False
            autoreset = np.asarray(term) | np.asarray(trunc)
        return returns[:num_episodes]
    finally:
        env.close()


def render_episodes(
    env_id: str, policy: Actor, num_episodes: int, seed: int, horizon: int | None = None
) -> list[float]:
    """Greedy episodes in one env with ``render_mode="human"`` (needs a display and pygame)."""
    from offrl.errors import OffrlRuntimeError

    try:
        if ":" in env_id:
            env = import_env_class(env_id)(render_mode="human")
        else:
            kwargs: dict[str, Any] = {} if horizon is None else {"max_episode_steps": horizon}
            env = gym.make(env_id, render_mode="human", **kwargs)
    except (gym.error.DependencyNotInstalled, TypeError) as e:
        raise OffrlRuntimeError(f"--render: cannot render {env_id}: {e}") from None
    returns: list[float] = []
    preprocess = preprocessor(env.observation_space)
    try:
        for k in range(num_episodes):
            obs, _ = env.reset(seed=seed + k)
            total, done = 0.0, False
            while not done:
                actions, _ = policy.compute_actions(preprocess.one(obs), explore=False)
                obs, rew, term, trunc, _ = env.step(_to_env(policy, actions)[0])
                total += float(rew)
                done = bool(term or trunc)
            returns.append(total)
    except gym.error.DependencyNotInstalled as e:
        raise OffrlRuntimeError(f"--render: {e}") from None
    finally:
        env.close()
    return returns
