"""``offrl evaluate-offline``: estimate a checkpoint's value from recorded episodes."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from offrl.commands.rollout import load_policy
from offrl.config import CommonConfig
from offrl.errors import ConfigError
from offrl.estimators import ESTIMATORS, estimators_for, feed_estimators, skipped_estimators
from offrl.rollout import env_spaces

TABLE_KEYS = (
    "v_behavior",
    "v_target",
    "v_gain",
    "v_delta",
    "v_target_std_err",
    "v_target_ci_low",
    "v_target_ci_high",
    "num_episodes",
    "ess",
    "missing_mass",
)
# One estimate() over the whole dataset: fit the FQE model fully (100 steps under-fit dm).
FQE_STEPS = 600


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
    checkpoint: str, data: list[str], names: list[str], *, gamma: float | None, seed: int
) -> tuple[dict[str, dict[str, float]], list[str]]:
    """(``{estimator: estimates}``, warnings) over one pass of ``data``."""
    from offrl.io.input import make_input_reader

    algo, state = load_policy(checkpoint)
    obs_space, act_space = env_spaces(str(state["env"]))
    cfg: CommonConfig = algo.config
    estimators = estimators_for(
        names,
        gamma=cfg.gamma if gamma is None else gamma,
        observation_space=obs_space,
        action_space=act_space,
        seed=seed,
        fqe_config={"n_iters": FQE_STEPS},
    )
    reader = make_input_reader(
        data if len(data) > 1 else data[0], config=cfg, seed=seed, worker_index=0, num_workers=1
    )
    iter_epoch = getattr(reader, "iter_epoch", None)
    if not callable(iter_epoch):
        raise ConfigError(
            "evaluate-offline reads the data once: give JSON experience files (a file, "
            "directory, glob or URI); convert Parquet with `offrl data convert` first"
        )
    warnings = skipped_estimators(names, act_space)
    action_logp = getattr(algo, "action_logp", None)  # non-Discrete actions (is/wis)
    for batch in iter_epoch():
        warnings += feed_estimators(estimators, batch, algo.action_probs, action_logp)
    return {name: est.estimate() for name, est in estimators.items()}, warnings


def _cell(key: str, value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if key == "num_episodes" else f"{value:,.3f}"


def estimates_table(estimates: dict[str, dict[str, Any]]) -> Table:
    """One row per quantity, one column per estimator (fits a narrow terminal)."""
    table = Table(title="off-policy estimates")
    table.add_column("")
    for name in estimates:
        table.add_column(name, justify="right")
    for key in TABLE_KEYS:
        table.add_row(key, *(_cell(key, values.get(key)) for values in estimates.values()))
    return table


def print_table(estimates: dict[str, dict[str, Any]], console: Console) -> None:
    console.print(estimates_table(estimates))
