"""Everything the terminal shows: a rich live table on a terminal, plain lines when piped.

All of it goes to stderr; stdout carries only the final result (one JSON object).
"""

from __future__ import annotations

import math
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TextIO

from rich.console import Console
from rich.live import Live
from rich.progress import (
    BarColumn,
    DownloadColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.progress import Progress as ByteBar
from rich.table import Table

# Stop keys whose progress can be extrapolated to an ETA.
_ETA_KEYS = ("timesteps_total", "training_iteration", "time_total_s")
# Result keys shown with -v (learner stats, evaluation, estimates).
_DETAIL = ("info/learner/", "evaluation/", "off_policy_estimation/")


def show_each_warning_once() -> None:
    """Print each distinct warning (category and text) at most once in this process.

    Python's own "once" is forgotten whenever a module adds a warnings filter (importing
    torch does), so gymnasium's CartPole-v0 deprecation was printed for every env made.
    """
    original = warnings.showwarning
    if getattr(original, "offrl_once", False):
        return
    seen: set[tuple[type, str]] = set()

    def show(message: Any, category: type, *args: Any, **kwargs: Any) -> None:
        key = (category, str(message))
        if key not in seen:
            seen.add(key)
            original(message, category, *args, **kwargs)

    show.offrl_once = True  # type: ignore[attr-defined]
    warnings.showwarning = show


def make_console(stream: TextIO | None = None) -> Console:
    """A rich console on stderr (colour only on a terminal)."""
    return Console(file=stream or sys.stderr, highlight=False, soft_wrap=True)


@contextmanager
def byte_progress(
    description: str, total: int | None, show: bool
) -> Iterator[Callable[[int], None] | None]:
    """A progress bar on stderr advanced by bytes read (``offrl data``); None when not shown."""
    if not show:
        yield None
        return
    with ByteBar(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=make_console(),
        transient=True,
    ) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)


def eta_seconds(result: Mapping[str, Any], stop: Mapping[str, Any]) -> float | None:
    """Seconds until the first ETA-able stop key is reached, from the pace so far."""
    elapsed = float(result.get("time_total_s", 0.0))
    best: float | None = None
    for key in _ETA_KEYS:
        if key not in stop or key not in result:
            continue
        done, target = float(result[key]), float(stop[key])
        if done <= 0:
            continue
        remaining = max(target - done, 0.0) * elapsed / done
        best = remaining if best is None else min(best, remaining)
    return best


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        if value != 0 and abs(value) < 0.01:
            return f"{value:.3g}"  # a learning rate of 5e-4 is not "0.00"
        return f"{value:,.2f}" if abs(value) < 1e6 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _fmt_time(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def summary_fields(result: Mapping[str, Any], stop: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(label, text) pairs shown for one result: episode returns and env steps/s when the run
    samples an env, else (offline) what it has: rows read, epoch, the learner's loss and Q, the
    estimates, and the episodes of ``simulation`` when it runs."""
    reads_data = "rows_read" in result or "epoch" in result
    if reads_data and not result.get("num_env_steps_per_s"):
        return offline_fields(result, stop)
    return [
        ("iter", _fmt(result.get("training_iteration"))),
        ("timesteps", _fmt(result.get("timesteps_total"))),
        ("reward mean", _fmt(result.get("episode_reward_mean"))),
        ("min", _fmt(result.get("episode_reward_min"))),
        ("max", _fmt(result.get("episode_reward_max"))),
        ("steps/s", _fmt(result.get("num_env_steps_per_s"))),
        ("time", _fmt_time(result.get("time_total_s"))),
        ("ETA", _fmt_time(eta_seconds(result, stop))),
    ]


def offline_fields(result: Mapping[str, Any], stop: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The fields of an offline run (no episodes of its own)."""
    rows_per_s = None
    if result.get("time_this_iter_s"):
        rows_per_s = float(result.get("timesteps_this_iter", 0)) / result["time_this_iter_s"]
    loss = result.get("info/learner/loss", result.get("info/learner/total_loss"))
    fields = [
        ("iter", _fmt(result.get("training_iteration"))),
        ("rows", _fmt(result.get("timesteps_total"))),
        ("epoch", _fmt(result.get("epoch"))),
        ("loss", _fmt(loss)),
        ("mean Q", _fmt(result.get("info/learner/mean_q"))),
    ]
    if "episode_reward_mean" in result:  # the simulation estimator's episodes
        fields.append(("sim reward mean", _fmt(result["episode_reward_mean"])))
    for key, value in result.items():
        if key.startswith("off_policy_estimation/") and key.endswith("/v_target"):
            fields.append((key.split("/")[1] + " v_target", _fmt(value)))
    return fields + [
        ("rows/s", _fmt(rows_per_s)),
        ("time", _fmt_time(result.get("time_total_s"))),
        ("ETA", _fmt_time(eta_seconds(result, stop))),
    ]


NO_STOP_NOTE = (
    "offrl: no --stop given: the run goes on until Ctrl-C "
    """(e.g. --stop '{"training_iteration": 100}' to end it)"""
)


class Progress:
    """Shows run progress; ``quiet`` shows nothing, ``verbose`` adds learner stats."""

    def __init__(
        self,
        console: Console,
        stop: Mapping[str, Any],
        *,
        quiet: bool = False,
        verbose: bool = False,
    ) -> None:
        self.console = console
        self.stop = dict(stop)
        self.quiet = quiet
        self.verbose = verbose
        self._live: Live | None = None

    def __enter__(self) -> Progress:
        if not self.stop:
            self.message(NO_STOP_NOTE, style="yellow")  # said once, before the first result
        if not self.quiet and self.console.is_terminal:
            self._live = Live(Table(), console=self.console, refresh_per_second=4, transient=False)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)
            self._live = None

    def message(self, text: str, *, style: str = "") -> None:
        """A line of text (warnings, where results go)."""
        if not self.quiet:
            self.console.print(text, style=style or None, markup=False)

    def update(self, result: Mapping[str, Any]) -> None:
        if self.quiet:
            return
        fields = summary_fields(result, self.stop)
        if self._live is not None:
            self._live.update(self._table(result, fields))
        else:
            if self.verbose:
                fields = fields + [(k, _fmt(v)) for k, v in result.items() if k.startswith(_DETAIL)]
            self.console.print("  ".join(f"{k}={v}" for k, v in fields), markup=False)

    def _table(self, result: Mapping[str, Any], fields: list[tuple[str, str]]) -> Table:
        table = Table(title="offrl train", expand=False)
        for label, _ in fields:
            table.add_column(label, justify="right")
        table.add_row(*(text for _, text in fields))
        if self.verbose:
            extra = Table(show_header=False, box=None)
            for key, value in result.items():
                if key.startswith(_DETAIL):
                    extra.add_row(key, _fmt(value))
            grid = Table.grid()
            grid.add_row(table)
            grid.add_row(extra)
            return grid
        return table
