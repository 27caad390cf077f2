"""``offrl evaluate-offline``: estimate a checkpoint's value from recorded episodes."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from offrl.batch import SampleBatch
from offrl.commands.rollout import load_policy
from offrl.config import CommonConfig
from offrl.envs import env_spaces
from offrl.errors import ConfigError
from offrl.estimators import ESTIMATORS, estimators_for, feed_estimators, skipped_estimators
from offrl.estimators.base import episode_rows
from offrl.trainer import ESTIMATE_KEYS

TABLE_KEYS = (*ESTIMATE_KEYS, "v_behavior_undiscounted")
# One estimate() over the whole dataset: fit the FQE model fully (100 steps under-fit dm).
FQE_STEPS = 600
# dm/dr intervals: this many bootstrap resamples of the episodes, each refitting the model.
FQE_BOOTSTRAP = 20


def parse_estimators(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    for name in names:
        if name not in ESTIMATORS:
            raise ConfigError(
                f"--estimators: unknown estimator {name!r}; choose from {', '.join(ESTIMATORS)}"
            )
    if not names:
        raise ConfigError("--estimators: give at least one of " + ", ".join(ESTIMATORS))
    return names


def run_evaluate_offline(
    checkpoint: str,
    data: list[str],
    names: list[str],
    *,
    gamma: float | None,
    seed: int,
    env: str | None = None,
    bootstrap: int = FQE_BOOTSTRAP,
) -> tuple[dict[str, dict[str, float]], list[str]]:
    """(``{estimator: estimates}``, warnings) over one pass of ``data``."""
    from offrl.io.input import make_input_reader
    from offrl.seeding import Stream, int_seed

    algo, state = load_policy(checkpoint, env)
    obs_space, act_space = env_spaces(env or str(state["env"]))
    cfg: CommonConfig = algo.config
    estimators = estimators_for(
        names,
        gamma=cfg.gamma if gamma is None else gamma,
        observation_space=obs_space,
        action_space=act_space,
        seed=seed,
        fqe_config={"n_iters": FQE_STEPS, "bootstrap": 0 if bootstrap < 2 else bootstrap},
    )
    # The checkpoint's input_config is not used to read: a shared checkpoint is data and must
    # not choose the reader's storage options (an endpoint, credentials) or its limits.
    reader_cfg = dataclasses.replace(cfg, input_config={})
    reader = make_input_reader(
        data if len(data) > 1 else data[0],
        config=reader_cfg,
        seed=int_seed(seed, Stream.READER),
        worker_index=0,
        num_workers=1,
    )
    iter_epoch = getattr(reader, "iter_epoch", None)
    if not callable(iter_epoch):
        raise ConfigError(
            "evaluate-offline reads the data once: give JSON experience files (a file, "
            "directory, glob or URI); convert Parquet with `offrl data convert` first"
        )
    warnings = skipped_estimators(names, act_space)
    action_logp = getattr(algo, "action_logp", None)  # non-Discrete actions (is/wis)
    returns = EpisodeReturns()
    for batch in iter_epoch():
        warnings += feed_estimators(estimators, batch, algo.action_probs, action_logp)
        returns.add(batch)
    g = cfg.gamma if gamma is None else gamma
    undiscounted = returns.mean()
    out = {}
    for name, est in estimators.items():
        values = {**est.estimate(), "gamma": g}
        if undiscounted is not None:
            values["v_behavior_undiscounted"] = undiscounted
        out[name] = values
    return out, warnings


class EpisodeReturns:
    """Undiscounted returns of the logged episodes that ended (what ``rollout`` reports)."""

    def __init__(self) -> None:
        self._open: dict[object, float] = {}
        self.returns: list[float] = []

    def add(self, batch: SampleBatch) -> None:
        rewards = np.asarray(batch["rewards"], dtype=np.float64).reshape(-1)
        done = batch.dones_column()
        ended = np.zeros(batch.count, dtype=bool) if done is None else np.asarray(done, bool)
        # the estimators' own episode grouping (by eps_id, else runs ended by dones)
        for key, rows in episode_rows(batch, ended.reshape(-1)):
            total = self._open.pop(key, 0.0) + float(rewards[rows].sum())
            if ended[rows].any():
                self.returns.append(total)
            else:
                self._open[key] = total

    def mean(self) -> float | None:
        return sum(self.returns) / len(self.returns) if self.returns else None


def json_safe(value: Any) -> Any:
    """``value`` with NaN and infinities made ``None``, so ``json.dumps`` writes valid JSON
    (``null``); an estimate is NaN when it has no data to go on (no episodes, zero weights)."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        return json_safe(value.item())
    return value


def has_non_finite(value: Any) -> bool:
    """True when ``value`` (nested dicts and lists) holds a NaN or an infinity."""
    if isinstance(value, dict):
        return any(has_non_finite(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(has_non_finite(v) for v in value)
    return isinstance(value, (float, np.floating)) and not math.isfinite(value)


def _cell(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if key == "ci_includes_model_error":
        return "yes" if value else "no"
    return f"{value:,.0f}" if key == "num_episodes" else f"{value:,.3f}"


def table_caption(gamma: float | None) -> str:
    """What the numbers are, and how they compare with ``offrl rollout``'s returns."""
    g = "gamma" if gamma is None else f"gamma = {gamma:g}"
    example = ""
    if gamma is not None and gamma < 1:
        example = (
            f" (here a policy that lasts 500 steps of reward 1 is worth "
            f"{(1 - gamma**500) / (1 - gamma):.1f})"
        )
    return (
        f"v_* are DISCOUNTED values, sum_t {g}^t r_t per episode; `offrl rollout` reports the "
        f"UNDISCOUNTED return sum_t r_t{example}. v_behavior_undiscounted is the logged "
        "episodes' mean undiscounted return, comparable with rollout. When estimators "
        "disagree: is/wis if missing_mass is near 0 and ess is large, else dr (both need "
        "true behaviour probabilities); dm least (its model's bias is in no interval)."
    )


def estimates_table(estimates: dict[str, dict[str, Any]]) -> Table:
    """One row per quantity, one column per estimator (fits a narrow terminal)."""
    gamma = next((v.get("gamma") for v in estimates.values() if "gamma" in v), None)
    title = "off-policy estimates" + (f" (discounted, gamma = {gamma:g})" if gamma else "")
    table = Table(title=title, caption=table_caption(gamma))
    table.add_column("")
    for name in estimates:
        table.add_column(name, justify="right")
    for key in TABLE_KEYS:
        table.add_row(key, *(_cell(key, values.get(key)) for values in estimates.values()))
    return table


def print_table(estimates: dict[str, dict[str, Any]], console: Console) -> None:
    console.print(estimates_table(estimates))
