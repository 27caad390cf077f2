"""``offrl evaluate-offline``: estimate a checkpoint's value from recorded episodes."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from offrl.algos.base import discrete_n, obs_dim
from offrl.commands.rollout import load_policy
from offrl.config import CommonConfig
from offrl.errors import ConfigError
from offrl.estimators import ESTIMATORS, MissingBehaviourProbs, make_estimators
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
)


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
    estimators = {
        e.name: e
        for e in make_estimators(
            names,
            gamma=cfg.gamma if gamma is None else gamma,
            action_space_n=discrete_n(act_space, "off-policy estimation"),
            obs_dim=obs_dim(obs_space),
            seed=seed,
        )
    }
    reader = make_input_reader(
        data if len(data) > 1 else data[0], config=cfg, seed=seed, worker_index=0, num_workers=1
    )
    warnings: list[str] = []
    for batch in reader.iter_epoch():
        for name in list(estimators):
            try:
                estimators[name].process(batch, algo.action_probs)
            except MissingBehaviourProbs as e:
                warnings.append(str(e))
                del estimators[name]
    return {name: est.estimate() for name, est in estimators.items()}, warnings


def estimates_table(estimates: dict[str, dict[str, Any]]) -> Table:
    table = Table(title="off-policy estimates")
    table.add_column("estimator")
    for key in TABLE_KEYS:
        table.add_column(key, justify="right")
    for name, values in estimates.items():
        cells = []
        for key in TABLE_KEYS:
            v = values.get(key)
            cells.append(
                "-" if v is None else (f"{v:,.0f}" if key == "num_episodes" else f"{v:,.3f}")
            )
        table.add_row(name, *cells)
    return table


def print_table(estimates: dict[str, dict[str, Any]], console: Console) -> None:
    console.print(estimates_table(estimates))
