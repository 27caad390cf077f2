"""``offrl rollout``: evaluate a checkpoint greedily."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from offrl.algos import get_algorithm
from offrl.config import from_dict
from offrl.envs import env_spaces
from offrl.restore import checkpoint_env_id, restore_policy_state
from offrl.results import load_run_checkpoint, resolve_checkpoint
from offrl.rollout import evaluate, render_episodes


def load_policy(checkpoint: str, env: str | None = None) -> tuple[Any, dict[str, Any]]:
    """The algorithm saved in ``checkpoint``, restored for ``env`` (default: the checkpoint's,
    which must be a registered id), and the checkpoint's state dict."""
    state = load_run_checkpoint(checkpoint)
    env_id = checkpoint_env_id(state["env"], env, checkpoint)
    config_cls, algo_cls = get_algorithm(str(state["run"]))
    cfg = from_dict(config_cls, state["config"], algo=str(state["run"]))
    torch.set_num_threads(cfg.num_threads)
    obs_space, act_space = env_spaces(env_id)
    algo = algo_cls(cfg, obs_space, act_space)
    restore_policy_state(algo, state, env_id, cfg.to_dict(), checkpoint)
    return algo, state


def run_rollout(
    checkpoint: str, *, episodes: int, env: str | None, seed: int, render: bool
) -> dict[str, Any]:
    """Mean/min/max greedy return of ``episodes`` episodes as a JSON-able dict."""
    algo, state = load_policy(checkpoint, env)
    env_id = env or str(state["env"])
    horizon = state["config"].get("horizon")
    if render:
        returns = render_episodes(env_id, algo, episodes, seed, horizon)
    else:
        returns = evaluate(env_id, algo, episodes, seed, horizon)
    r = np.asarray(returns)
    return {
        "checkpoint": str(resolve_checkpoint(checkpoint)),
        "env": env_id,
        "episodes": len(returns),
        "episode_reward_mean": float(r.mean()),
        "episode_reward_min": float(r.min()),
        "episode_reward_max": float(r.max()),
    }
