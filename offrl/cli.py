"""offrl's command line: parse, build, run, report. No RL math here.

Exit codes: 0 success, 1 runtime failure, 2 usage or config error,
130 interrupted by Ctrl-C (SIGINT), 143 stopped by SIGTERM.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from offrl import __version__
from offrl.commands.exits import handle_errors
from offrl.config import MAXIMA

MAX_SEED = MAXIMA["seed"]
MAX_EPISODES = 100_000
MAX_BOOTSTRAP = 1_000  # dm/dr refits per evaluation: each is a model fit

TRAIN_EXAMPLES = """
\b
Examples:
  offrl train --run PG --env CartPole-v1 --stop '{"timesteps_total": 100000}'
  offrl train --run PG --env CartPole-v0 \\
      --config '{"output": "/tmp/cartpole-out", "output_max_file_size": 5000000}' \\
      --stop '{"timesteps_total": 100000}'
  offrl train --run DQN --env CartPole-v0 \\
      --config '{"input": "/tmp/cartpole-out", "exploration_final_eps": 0}'
  offrl train -f configs/dqn-cartpole.json --seed 1 --checkpoint-at-end
"""


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="offrl")
def main() -> None:
    """offrl: reinforcement learning from recorded experiences, in the style of `rllib train`."""


@main.command(epilog=TRAIN_EXAMPLES)
@click.option("--run", "--algo", "run", help="Algorithm: PG or DQN.")
@click.option("--env", help="Gymnasium env id (CartPole-v1) or module:Class.")
@click.option("--config", "config_text", metavar="JSON", help="Config keys as a JSON object.")
@click.option(
    "--stop",
    "stop_text",
    metavar="JSON",
    help='Stop when ANY result key reaches its value, e.g. {"timesteps_total": 1e5}.',
)
@click.option(
    "-f",
    "run_file",
    metavar="FILE",
    help="JSON or YAML file with run/env/config/stop/name, or RLlib tuned-example "
    "experiments name: {run, env, stop, config} (run one after another); flags override it.",
)
@click.option(
    "--experiment",
    metavar="NAME",
    help="Run only this experiment of the -f file.",
)
@click.option(
    "--local-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Results root [default: $OFFRL_RESULTS_DIR or ~/offrl_results].",
)
@click.option("--name", help="Experiment name: results go to <local-dir>/<name>/.")
@click.option(
    "--seed", type=click.IntRange(min=0, max=MAX_SEED), help="Seed (envs, exploration, init)."
)
@click.option(
    "--checkpoint-freq",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Write a checkpoint every N iterations (0: never).",
)
@click.option("--checkpoint-at-end", is_flag=True, help="Write a checkpoint when the run ends.")
@click.option("--restore", metavar="CHECKPOINT", help="Continue from a checkpoint directory.")
@click.option(
    "--ray-address",
    metavar="auto|HOST:PORT",
    help="Run the rollout workers (num_workers) as Ray actors on this cluster "
    "(needs pip install 'offrl[ray]').",
)
@click.option("--help-config", is_flag=True, help="List every config key of --run and exit.")
@click.option("-v", "--verbose", is_flag=True, help="Learner stats on screen; tracebacks.")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but the final result.")
@handle_errors
def train(**opts: Any) -> None:
    """Train a policy (online, offline from recorded files, or mixed)."""
    from offrl.commands.train import run_train

    sys.exit(run_train(**opts))


@main.command()
@click.argument("checkpoint")
@click.option(
    "--episodes", type=click.IntRange(min=1, max=MAX_EPISODES), default=10, show_default=True
)
@click.option(
    "--env",
    help="Run in this env instead of the checkpoint's (needed for a module:Class env: "
    "a checkpoint never makes offrl import a module).",
)
@click.option("--seed", type=click.IntRange(min=0, max=MAX_SEED), default=0, show_default=True)
@click.option("--render", is_flag=True, help="Render episodes (render_mode='human').")
@click.option("-v", "--verbose", is_flag=True)
@handle_errors
def rollout(
    checkpoint: str, episodes: int, env: str | None, seed: int, render: bool, verbose: bool
) -> None:
    """Evaluate a checkpoint greedily; print mean, min, max return as JSON.

    CHECKPOINT is a checkpoint_<iter> directory, or a run directory (its latest checkpoint).
    """
    from offrl.commands.rollout import run_rollout

    result = run_rollout(checkpoint, episodes=episodes, env=env, seed=seed, render=render)
    click.echo(json.dumps(result))


@main.command("evaluate-offline")
@click.argument("checkpoint")
@click.option(
    "--input",
    "data",
    multiple=True,
    required=True,
    help="Recorded experiences: file, directory, glob or URI (repeatable).",
)
@click.option(
    "--estimators",
    default="is,wis,dm,dr",
    show_default=True,
    help="Comma-separated estimators: is, wis, dm, dr.",
)
@click.option("--gamma", type=click.FloatRange(0, 1), help="Discount [default: the checkpoint's].")
@click.option(
    "--env",
    help="The checkpoint's env, when it is a module:Class (a checkpoint never makes offrl "
    "import a module).",
)
@click.option("--seed", type=click.IntRange(min=0, max=MAX_SEED), default=0, show_default=True)
@click.option(
    "--bootstrap",
    type=click.IntRange(min=0, max=MAX_BOOTSTRAP),
    default=20,
    show_default=True,
    help="dm/dr intervals: resamples of the episodes, each refitting the model "
    "(0: a normal interval that leaves out the model's error).",
)
@click.option("-q", "--quiet", is_flag=True, help="No table on stderr, only the JSON.")
@click.option("-v", "--verbose", is_flag=True)
@handle_errors
def evaluate_offline(
    checkpoint: str,
    data: tuple[str, ...],
    estimators: str,
    gamma: float | None,
    env: str | None,
    seed: int,
    bootstrap: int,
    quiet: bool,
    verbose: bool,
) -> None:
    """Estimate a checkpoint's value from recorded episodes (no env steps).

    Prints the estimates as one JSON object on stdout and a table on stderr.
    """
    from offrl.commands.evaluate import (
        has_non_finite,
        json_safe,
        parse_estimators,
        print_table,
        run_evaluate_offline,
    )
    from offrl.progress import make_console

    names = parse_estimators(estimators)
    result, warnings = run_evaluate_offline(
        checkpoint, list(data), names, gamma=gamma, seed=seed, env=env, bootstrap=bootstrap
    )
    console = make_console()
    for w in warnings:
        console.print(f"offrl: warning: {w}", style="yellow", markup=False)
    if not quiet:
        print_table(result, console)
    out = json_safe({"checkpoint": checkpoint, "off_policy_estimation": result})
    if has_non_finite(result):  # NaN or Infinity became null
        console.print(
            "offrl: note: null in the JSON is an estimate that is not a number "
            "(NaN: no usable episodes or weights for it)",
            style="yellow",
            markup=False,
        )
    click.echo(json.dumps(out, allow_nan=False))


def _register_subcommands() -> None:
    from offrl.commands.data import data
    from offrl.commands.plot import plot

    main.add_command(data)
    main.add_command(plot)


_register_subcommands()

if __name__ == "__main__":
    main()
