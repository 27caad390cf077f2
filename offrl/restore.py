"""Restoring a policy from a checkpoint: the env it runs in, and, when its saved networks
do not fit the run, what differs, in words."""

from __future__ import annotations

from typing import Any

import gymnasium as gym

from offrl.envs import check_env_id
from offrl.errors import ConfigError


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
