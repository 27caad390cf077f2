"""The only place that steps environments: vectorised sampling and greedy evaluation.

Environments run as a gymnasium vector env in ``NEXT_STEP`` autoreset mode: the
step that ends an episode returns the true final observation, and the *next*
step of that env only resets it. That reset step is not an experience and
yields no row; every other vector step yields one row per env.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, cast

import gymnasium as gym
import numpy as np
from gymnasium.vector.async_vector_env import AsyncState

from offrl import batch as sb
from offrl.batch import SampleBatch
from offrl.errors import ConfigError, OffrlError, OffrlRuntimeError
from offrl.imports import load_class
from offrl.preprocess import CheckObservations, preprocessor
from offrl.seeding import Stream, generator, int_seed


class Actor(Protocol):
    def compute_actions(
        self, obs: np.ndarray, *, explore: bool
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]: ...


def _import_class(spec: str) -> Any:
    """The env class ``module:Class`` names; a failure of the module's own code is the env's."""
    try:
        return load_class(spec, f"--env {spec!r}")
    except ConfigError:
        raise
    except (Exception, SystemExit) as e:  # the module's own code failed (or called sys.exit)
        raise env_failure(spec, "import", e) from e


def env_failure(env_id: str, when: str, err: BaseException) -> OffrlRuntimeError:
    """``env X failed at <when>: <error>``; raised ``from err``, so -v shows the env's traceback."""
    text = str(err).strip()
    first = f": {text.splitlines()[0][:300]}" if text else ""
    kind = err.kind if isinstance(err, SubEnvError) else type(err).__name__
    return OffrlRuntimeError(f"env {env_id} failed at {when}: {kind}{first}")


def env_call(env_id: str, when: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` -- a call into env code -- with its failures (even sys.exit)
    reported as :func:`env_failure`."""
    try:
        return fn(*args, **kwargs)
    except OffrlError:
        raise
    except (Exception, SystemExit) as e:
        raise env_failure(env_id, when, e) from e


def check_finite_step(env_id: str, step: int, obs: np.ndarray, rew: np.ndarray) -> None:
    """OffrlRuntimeError at the first NaN or infinite reward or observation an env returned:
    offrl never trains on (or records) values that are not numbers."""
    for what, arr in (("reward", rew), ("observation", obs)):
        bad = ~np.isfinite(np.asarray(arr, dtype=np.float64))
        if bad.any():
            index = np.unravel_index(int(np.flatnonzero(bad)[0]), bad.shape)
            value = float(np.asarray(arr, dtype=np.float64)[index])
            raise OffrlRuntimeError(
                f"env {env_id} returned a non-finite {what} ({value}) at step {step} "
                f"(sub-env {int(index[0])}); offrl does not train on NaN or infinite values: "
                "fix the env, or wrap it to clip or replace them"
            )


def env_suggestions(env_id: str, n: int = 3) -> list[str]:
    """The registered env ids closest to ``env_id``."""
    import difflib

    ids = sorted(gym.registry.keys())
    close = difflib.get_close_matches(env_id, ids, n=n, cutoff=0.4)
    if not close:
        prefix = env_id.split("-")[0].lower()
        close = [i for i in ids if i.lower().startswith(prefix)][:n]
    return close


def check_env_id(env_id: str) -> None:
    """ConfigError with suggestions when ``env_id`` is neither registered nor ``module:Class``."""
    if ":" in env_id:
        cls = _import_class(env_id)
        if not (isinstance(cls, type) and issubclass(cls, gym.Env)):
            raise ConfigError(f"--env {env_id!r}: {cls!r} is not a gymnasium.Env class")
        return
    if env_id not in gym.registry:
        close = env_suggestions(env_id)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(f"--env {env_id!r}: unknown gymnasium environment id{hint}")


def checkpoint_env_id(stored: Any, override: str | None, checkpoint: str) -> str:
    """The env to run a checkpoint's policy in: ``override`` (typed on the command line) or
    the checkpoint's own env, which must be a registered gymnasium id. A checkpoint is data
    from a file: offrl never imports a module, or calls anything, because a file names it."""
    if override:
        check_env_id(override)
        return override
    if not isinstance(stored, str) or ":" in stored or stored not in gym.registry:
        raise ConfigError(
            f"checkpoint {checkpoint}: its env {str(stored)[:80]!r} is not a registered "
            "gymnasium id, and offrl never imports a module a file names; if you trust that "
            "code, pass it yourself with --env module:Class"
        )
    return stored


def restore_policy_state(
    algo: Any, state: dict[str, Any], env_id: str, config: dict[str, Any], checkpoint: str
) -> None:
    """``algo.set_state(state["algo"])``; a ConfigError naming what differs when the saved
    networks do not fit this algorithm (another env or other layer widths)."""
    try:
        algo.set_state(state["algo"])
    except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as e:
        raise ConfigError(checkpoint_mismatch(state, env_id, config, checkpoint, e)) from None


# Keys newer than some checkpoints: a checkpoint without one was trained with this value.
ABSENT_MEANS: dict[str, Any] = {"observation_filter": "NoFilter", "normalize_value_targets": False}


def checkpoint_mismatch(
    state: dict[str, Any], env_id: str, config: dict[str, Any], checkpoint: str, err: Exception
) -> str:
    """What differs between a checkpoint and the run it is loaded into, in words."""
    saved_config = state.get("config")
    saved: dict[str, Any] = saved_config if isinstance(saved_config, dict) else {}
    diffs = []
    if state.get("env") != env_id:
        diffs.append(f"it was trained on {str(state.get('env'))[:80]!r}, not {env_id!r}")
    for key in (
        "model",
        "hiddens",
        "dueling",
        "use_baseline",
        "observation_filter",
        "normalize_value_targets",
    ):
        old, new = saved.get(key, ABSENT_MEANS.get(key)), config.get(key)
        if key in config and old != new:
            diffs.append(f"its {key} is {json_short(old)}, this run's is {json_short(new)}")
    reason = "; ".join(diffs) or f"its saved state does not fit ({type(err).__name__})"
    first = str(err).strip().splitlines()[0][:200] if str(err).strip() else ""
    detail = f" [{first}]" if first and not diffs else ""
    return f"checkpoint {checkpoint} does not fit this run: {reason}{detail}"


def json_short(value: Any) -> str:
    import json

    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def _single_env_fn(env_id: str, horizon: int | None) -> Callable[[], gym.Env]:
    def make() -> gym.Env:
        if ":" in env_id:
            env: gym.Env = CheckObservations(
                env_call(env_id, "construction", _import_class(env_id))
            )
            if horizon is not None:
                env = gym.wrappers.TimeLimit(env, max_episode_steps=horizon)
            return env
        kwargs: dict[str, Any] = {} if horizon is None else {"max_episode_steps": horizon}
        return env_call(env_id, "construction", gym.make, env_id, **kwargs)

    return make


class SubEnvError(Exception):
    """An exception raised by an env in a sub-process (``remote_worker_envs``), carried back
    as text: ``kind`` is its class name; its ``__cause__`` holds the sub-process traceback."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class _RemoteTraceback(Exception):
    def __str__(self) -> str:
        return "\n" + str(self.args[0])


class _TextErrors:
    """The error queue of a sub-env process, passing errors on as text: an env's exception
    class may not unpickle (or import) in the learner, and text always does."""

    def __init__(self, queue: Any) -> None:
        self.queue = queue

    def put(self, item: tuple[int, Any, Any, str]) -> None:
        index, kind, value, trace = item
        self.queue.put((index, getattr(kind, "__name__", str(kind)), str(value), trace))


def _sub_env_worker(
    index: int,
    env_fn: Callable[[], gym.Env],
    pipe: Any,
    parent_pipe: Any,
    shared_memory: Any,
    error_queue: Any,
    autoreset_mode: Any,
    semaphore: Any,
) -> None:
    """gymnasium's sub-env process loop, plus: SIGINT is left to the learner (which closes
    the envs), SIGTERM ends the process (not the learner's handler, inherited by fork), and
    failures gymnasium's loop lets through (constructing the env, sys.exit in the env) are
    reported like any other, so none prints a traceback of its own."""
    import contextlib
    import signal
    import traceback

    from gymnasium.vector.async_vector_env import _async_worker

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    errors: Any = _TextErrors(error_queue)  # a Queue to gymnasium's loop
    try:
        env = env_fn()
        _async_worker(
            index, lambda: env, pipe, parent_pipe, shared_memory, errors, autoreset_mode, semaphore
        )
    except (Exception, SystemExit) as e:
        errors.put((index, type(e), e, traceback.format_exc()))
        with contextlib.suppress(OSError):  # the learner is gone
            pipe.send((None, False))


class ProcessVectorEnv(gym.vector.AsyncVectorEnv):
    """gymnasium's AsyncVectorEnv (one process per env) whose sub-env failures come back as
    :class:`SubEnvError` and whose close never waits on a call left pending by an error or
    Ctrl-C, and leaves no process behind."""

    def __init__(self, env_fns: list[Callable[[], gym.Env]]) -> None:
        try:
            super().__init__(
                env_fns,
                autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP,
                worker=cast(Any, _sub_env_worker),
            )
        except BaseException:
            if hasattr(self, "_state"):  # the processes started: stop them now
                self.close(terminate=True)
            raise

    def _raise_if_errors(self, successes: Any) -> None:
        if all(successes):
            return
        failed = self.num_envs - sum(successes)
        first: tuple[int, str, str, str] | None = None
        for _ in range(failed):
            index, kind, message, trace = self.error_queue.get()
            self.parent_pipes[index].close()
            self.parent_pipes[index] = None  # type: ignore[call-overload]  # as gymnasium does
            first = first or (index, kind, message, trace)
        self._state = AsyncState.DEFAULT
        assert first is not None
        err = SubEnvError(first[1], first[2])
        err.__cause__ = _RemoteTraceback(f"in sub-env {first[0]}'s process:\n{first[3]}")
        raise err

    def close_extras(self, timeout: float | None = None, terminate: bool = False) -> None:
        if self._state != AsyncState.DEFAULT:  # a step or reset still pending: don't wait on it
            terminate = True
        if not terminate:
            try:
                live = [p for p in self.parent_pipes if p is not None and not p.closed]
                for pipe in live:
                    pipe.send(("close", None))
                for pipe in live:
                    pipe.recv()
            except (OSError, EOFError):
                terminate = True
        for pipe in self.parent_pipes:
            if pipe is not None:
                pipe.close()
        for process in self.processes:
            if terminate and process.is_alive():
                process.terminate()
            process.join(5)
            if process.is_alive():  # ignored SIGTERM
                process.kill()
                process.join()


def make_vector_env(
    env_id: str, num_envs: int, horizon: int | None = None, remote: bool = False
) -> gym.vector.VectorEnv:
    """A vector env in NEXT_STEP autoreset mode; the env's own vector class when it has one,
    else, with ``remote`` and more than one env, one process per env (:class:`ProcessVectorEnv`),
    else gymnasium's SyncVectorEnv (all envs in this process)."""
    if ":" not in env_id:
        spec = gym.spec(env_id)
        if spec.vector_entry_point is not None:
            kwargs: dict[str, Any] = {}
            if horizon is not None:
                kwargs["max_episode_steps"] = horizon
            env = gym.make_vec(
                env_id, num_envs=num_envs, vectorization_mode="vector_entry_point", **kwargs
            )
            if env.metadata.get("autoreset_mode") in (None, gym.vector.AutoresetMode.NEXT_STEP):
                return env
            env.close()
    env_fns = [_single_env_fn(env_id, horizon) for _ in range(num_envs)]
    if remote and num_envs > 1:
        return env_call(env_id, "construction", ProcessVectorEnv, env_fns)
    return env_call(
        env_id,
        "construction",
        gym.vector.SyncVectorEnv,
        env_fns,
        autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP,
    )


def env_spaces(env_id: str) -> tuple[gym.Space, gym.Space]:
    """(observation_space, action_space) of one env of ``env_id``."""
    env = _single_env_fn(env_id, None)()
    try:
        return env.observation_space, env.action_space
    finally:
        env.close()


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
            env = _import_class(env_id)(render_mode="human")
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
