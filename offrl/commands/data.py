"""``offrl data inspect|validate|convert``: thin commands over :mod:`offrl.datatools`.

Results go to stdout (a rich table, or JSON with ``--json``); progress bars and
messages go to stderr. Exit codes: 0 ok, 1 data/runtime problems, 2 usage.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click
from rich.table import Table

from offrl.commands.exits import handle_errors
from offrl.errors import ConfigError
from offrl.progress import byte_progress, make_console

_MAX_PROBLEMS_SHOWN = 200


def json_files(paths: tuple[str, ...]) -> list[str]:
    """The JSON files named by ``paths``; Parquet input is a usage error here."""
    from offrl.datatools.convert import source_files
    from offrl.io.parquet import is_parquet

    if any(is_parquet(p) for p in paths):
        raise ConfigError(
            "inspect and validate read JSON experience files; convert Parquet to JSON first "
            "(offrl data convert FILE.parquet DIR)"
        )
    return source_files(list(paths))


def _counts(counts: dict[str, int]) -> str:
    """``{"SampleBatch": 250}`` as ``250 SampleBatch`` (no Python dict on screen)."""
    return ", ".join(f"{n:,} {name}" for name, n in counts.items()) or "none"


def _show_progress(quiet: bool) -> bool:
    return not quiet and sys.stderr.isatty()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def data() -> None:
    """Look at, check and convert experience files."""


# -- inspect ------------------------------------------------------------------------------


def _fmt_stats(stats: dict[str, float] | None) -> str:
    if not stats:
        return "-"
    return (
        f"mean {stats['mean']:.2f}  min {stats['min']:.2f}  p50 {stats['p50']:.2f}  "
        f"max {stats['max']:.2f}"
    )


def summary_tables(s: dict[str, Any]) -> list[Table]:
    """The inspect summary as rich tables (overview, then columns)."""
    over = Table(title="dataset", show_header=False)
    over.add_column("key", style="bold")
    over.add_column("value")
    rows = [
        ("files", f"{s['files']} ({s['bytes']:,} bytes)"),
        ("lines / records", f"{s['lines']:,} / {s['records']:,} ({_counts(s['record_types'])})"),
        ("corrupt lines", str(s["corrupt_lines"])),
        ("rows (steps)", f"{s['rows']:,}  ({s['bytes_per_row'] or '-'} bytes/row)"),
        (
            "episodes",
            f"{s['episodes']} ({s['episodes_complete']} complete, {s['episodes_partial']} partial)",
        ),
        ("episode return", _fmt_stats(s["episode_return"])),
        ("episode length", _fmt_stats(s["episode_length"])),
        (
            "actions",
            json.dumps(s["actions"]["histogram"])
            if s["actions"]["histogram"]
            else s["actions"]["kind"],
        ),
        (
            "behaviour probs",
            f"action_prob {s['behaviour_probabilities']['action_prob_rows']:,} "
            f"rows, action_logp {s['behaviour_probabilities']['action_logp_rows']:,}"
            f" rows",
        ),
        ("compressed", ", ".join(s["compressed"]) or "none"),
        ("variants", ", ".join(s["variants"])),
    ]
    for key, value in rows:
        over.add_row(key, value)
    cols = Table(title="columns")
    for name in ("column", "dtype", "shape", "stored as"):
        cols.add_column(name)
    for name, info in s["columns"].items():
        cols.add_row(name, info["dtype"], str(tuple(info["shape"])), ", ".join(info["codecs"]))
    return [over, cols]


@data.command()
@click.argument("paths", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@handle_errors
def inspect(paths: tuple[str, ...], as_json: bool, quiet: bool) -> None:
    """Summarise experience files: rows, episodes, returns, columns, actions."""
    from offrl.datatools.convert import total_bytes
    from offrl.datatools.inspect import inspect_paths

    files = json_files(paths)
    with byte_progress("inspect", total_bytes(files), _show_progress(quiet)) as on_bytes:
        summary = inspect_paths(files, on_bytes=on_bytes)
    if as_json:
        click.echo(json.dumps(summary))
    else:
        out = make_console(sys.stdout)
        for table in summary_tables(summary):
            out.print(table)
        for problem in summary["bad_records"]:
            out.print(f"[red]unreadable record:[/red] {problem}", markup=True)
    if summary["bad_records"]:  # records that break the format: readers stop there
        click.echo(f"offrl: {len(summary['bad_records'])} unreadable record(s)", err=True)
        sys.exit(1)


# -- validate -----------------------------------------------------------------------------


@data.command()
@click.argument("paths", nargs=-1, required=True)
@click.option("--env", help="Also check obs/actions against this env's spaces (gymnasium id).")
@click.option("--json", "as_json", is_flag=True, help="Print problems as JSON lines.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@handle_errors
def validate(paths: tuple[str, ...], env: str | None, as_json: bool, quiet: bool) -> None:
    """Check files against every rule of the format; exit 1 listing (file, line, rule)."""
    from offrl.datatools.convert import total_bytes
    from offrl.datatools.validate import WARNING_RULES, validate_paths

    spaces = None
    if env:
        from offrl.envs import check_env_id, env_spaces

        check_env_id(env)
        spaces = env_spaces(env)
    files = json_files(paths)
    count = 0
    with byte_progress("validate", total_bytes(files), _show_progress(quiet)) as on_bytes:
        for problem in validate_paths(files, spaces, on_bytes=on_bytes):
            if problem.rule in WARNING_RULES:  # valid data that misleads some estimators
                click.echo(f"offrl: warning: {problem}", err=True)
                continue
            count += 1
            if count <= _MAX_PROBLEMS_SHOWN:
                click.echo(json.dumps(problem.__dict__) if as_json else str(problem))
    if count:
        hidden = (
            f" ({count - _MAX_PROBLEMS_SHOWN} not shown)" if count > _MAX_PROBLEMS_SHOWN else ""
        )
        click.echo(f"offrl: {count} problem(s) in {len(files)} file(s){hidden}", err=True)
        sys.exit(1)
    click.echo(f"offrl: {len(files)} file(s) valid", err=True)


# -- convert ------------------------------------------------------------------------------


def _columns_option(text: str) -> tuple[str, ...]:
    return tuple(c.strip() for c in text.split(",") if c.strip())


@data.command()
@click.argument("src", nargs=-1, required=True)
@click.argument("dst", nargs=1)
@click.option(
    "--compress-columns",
    default="obs,new_obs",
    show_default=True,
    help="JSON output: comma-separated columns to compress; '' for plain lists.",
)
@click.option(
    "--codec",
    type=click.Choice(["offrl", "rllib"]),
    default="rllib",
    show_default=True,
    help="JSON output: codec of compressed columns (rllib: RLlib's own, a numpy pickle; "
    "offrl: npy, no pickle).",
)
@click.option("--multi-agent", is_flag=True, help="JSON output: RLlib 2.x MultiAgentBatch records.")
@click.option(
    "--max-file-size",
    type=click.IntRange(min=1),
    default=64 * 1024 * 1024,
    show_default=True,
    help="JSON output: rotate files at this many bytes.",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@handle_errors
def convert(
    src: tuple[str, ...],
    dst: str,
    compress_columns: str,
    codec: str,
    multi_agent: bool,
    max_file_size: int,
    quiet: bool,
) -> None:
    """Convert SRC... into DST: JSON <-> Parquet, or JSON re-encoding.

    DST must not exist: a file ending in .parquet, or else a directory for JSON files
    (rotated at --max-file-size). SRC: JSON files/dirs/globs, or .parquet files.
    """
    from offrl.datatools.convert import ConvertOptions, check_destination, source_files, total_bytes
    from offrl.datatools.convert import convert as run_convert

    check_destination(dst)
    opts = ConvertOptions(
        compress_columns=_columns_option(compress_columns),
        codec=codec,  # type: ignore[arg-type]
        multi_agent=multi_agent,
        max_file_size=max_file_size,
    )
    files = source_files(list(src))
    with byte_progress("convert", total_bytes(files), _show_progress(quiet)) as on_bytes:
        stats = run_convert(list(src), dst, opts, on_bytes=on_bytes)
    click.echo(
        json.dumps(
            {
                "records": stats.records,
                "rows": stats.rows,
                "corrupt_lines_skipped": stats.corrupt_lines_skipped,
                "outputs": stats.outputs,
            }
        )
    )
