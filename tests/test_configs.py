"""Every shipped config in ``configs/`` is valid and runs: a smoke test, not a learning test.

Each config is loaded as ``offrl train -f`` loads it, its algorithm built on its env, and a
few fragments sampled and learned from (with learning starting at once, so DQN updates too).
Whether a config reaches its goal is measured in ``benchmarks/``, not here.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from offrl.algos import get_algorithm
from offrl.config import from_dict
from offrl.envs import env_spaces
from offrl.rollout import Sampler
from offrl.runspec import load_run_file

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.json"))


def _needs_box2d(env: str) -> bool:
    return env.startswith(("LunarLander", "BipedalWalker", "CarRacing"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_loads_and_learns_a_few_fragments(path: Path) -> None:
    data = load_run_file(str(path))
    env = data["env"]
    if _needs_box2d(env) and importlib.util.find_spec("Box2D") is None:
        pytest.skip("needs the box2d extra: pip install 'offrl[box2d]'")
    config = dict(data["config"])
    if "input" in config:  # offline configs read data recorded first (see their header)
        config.pop("input")
    cfg_cls, algo_cls = get_algorithm(data["run"])
    # Small sizes so the smoke test takes a moment: the config's keys stay as shipped.
    config.update(seed=0, num_envs_per_worker=min(config.get("num_envs_per_worker", 1), 4))
    if data["run"] == "DQN":
        rows = config.get("rollout_fragment_length", 4) * config["num_envs_per_worker"]
        # one update of train_batch_size per fragment
        config.update(learning_starts=0, training_intensity=config["train_batch_size"] / rows)
    else:
        config.update(train_batch_size=64, sgd_minibatch_size=32)
    cfg = from_dict(cfg_cls, config)
    obs_space, act_space = env_spaces(env)
    algo = algo_cls(cfg, obs_space, act_space)
    sampler = Sampler(env, cfg.num_envs_per_worker, algo, algo.rollout_fragment_length(), 0)
    try:
        stats: dict = {}
        for _ in range(3):
            batch = algo.postprocess(sampler.next())
            stats = algo.learn(batch, batch.count)
    finally:
        sampler.close()
    assert all(np.isfinite(v) for v in stats.values() if isinstance(v, float))
    assert stats.get("num_updates", stats.get("num_grad_updates", 0)) > 0
