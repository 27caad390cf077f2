"""Building environments: env ids and classes, vector envs (in this process or one process
per env), and the errors an env's own code raises, reported as offrl's.

Nothing here steps an env for experience; :mod:`offrl.rollout` does, with the vector envs
built here (``NEXT_STEP`` autoreset mode).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import gymnasium as gym
import numpy as np
from gymnasium.vector.async_vector_env import AsyncState

from offrl.errors import ConfigError, OffrlError, OffrlRuntimeError
from offrl.imports import load_class
from offrl.preprocess import CheckObservations


def import_env_class(spec: str) -> Any:
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
        cls = import_env_class(env_id)
        if not (isinstance(cls, type) and issubclass(cls, gym.Env)):
            raise ConfigError(f"--env {env_id!r}: {cls!r} is not a gymnasium.Env class")
        return
    if env_id not in gym.registry:
        close = env_suggestions(env_id)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(f"--env {env_id!r}: unknown gymnasium environment id{hint}")


def _single_env_fn(env_id: str, horizon: int | None) -> Callable[[], gym.Env]:
    def make() -> gym.Env:
        if ":" in env_id:
            env: gym.Env = CheckObservations(
                env_call(env_id, "construction", import_env_class(env_id))
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
