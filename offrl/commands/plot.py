"""``offrl plot``: learning curves of run directories to a PNG (logic in :mod:`offrl.plot`)."""

from __future__ import annotations

import json

import click

from offrl.commands.exits import handle_errors


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("results_dirs", nargs=-1, required=True)
@click.option("--x", "x_key", default="timesteps_total", show_default=True, help="Result key on x.")
@click.option(
    "--y", "y_key", default="episode_reward_mean", show_default=True, help="Result key on y."
)
@click.option("-o", "--output", required=True, help="PNG file to write.")
@handle_errors
def plot(results_dirs: tuple[str, ...], x_key: str, y_key: str, output: str) -> None:
    """Plot learning curves: mean and min-max band over runs of the same experiment."""
    from offrl.plot import plot_runs

    def warn(message: str) -> None:
        click.echo(f"offrl: warning: {message}", err=True)

    groups = plot_runs(list(results_dirs), output, x_key=x_key, y_key=y_key, warn=warn)
    summary = {"output": output, "curves": [{"name": g.group, "runs": g.runs} for g in groups]}
    click.echo(json.dumps(summary))
