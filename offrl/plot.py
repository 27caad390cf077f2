"""Learning curves from run directories: one line per experiment, spread across its runs.

A run directory holds ``result.json`` (one JSON object per iteration) or, failing
that, ``progress.csv``. A directory without either is searched one level down
for run directories (an experiment directory ``<local-dir>/<name>/``). Runs are
grouped by experiment name (the run directory's parent name); each group is
drawn as the mean over its runs, on the union of their x values within the range
all runs cover, with a band from the minimum to the maximum run.
matplotlib is optional (``pip install 'offrl[plot]'``).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from offrl.errors import ConfigError, OffrlRuntimeError


@dataclass
class Curve:
    """One run's (x, y) points, sorted by x, and the experiment it belongs to."""

    run_dir: Path
    group: str
    x: np.ndarray
    y: np.ndarray


@dataclass
class GroupCurve:
    """An experiment's mean curve and its min/max band over runs."""

    group: str
    runs: int
    x: np.ndarray
    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray


def _number(value: Any) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return math.nan
    return out


def read_rows(run_dir: Path) -> list[dict[str, Any]]:
    """The results of one run: result.json lines, else progress.csv rows."""
    try:
        return _read_rows(run_dir)
    except UnicodeDecodeError as e:
        raise OffrlRuntimeError(
            f"{run_dir}: its results are not text (byte {e.start} is not UTF-8); "
            "give a run directory written by 'offrl train'"
        ) from None
    except csv.Error as e:
        raise OffrlRuntimeError(f"{run_dir / 'progress.csv'}: not a valid CSV file ({e})") from None


def _read_rows(run_dir: Path) -> list[dict[str, Any]]:
    result_json = run_dir / "result.json"
    if result_json.is_file():
        rows = []
        with open(result_json, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except (json.JSONDecodeError, RecursionError) as e:
                    # A run killed mid-write leaves a partial last line: use what came before.
                    if lineno > 1 and not f.readline():
                        break
                    raise OffrlRuntimeError(
                        f"{result_json}:{lineno}: not valid JSON ({e})"
                    ) from None
                if not isinstance(row, dict):
                    raise OffrlRuntimeError(f"{result_json}:{lineno}: not a JSON object")
                rows.append(row)
        return rows
    with open(run_dir / "progress.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def is_run_dir(path: Path) -> bool:
    """True for a directory holding result.json or progress.csv."""
    return (path / "result.json").is_file() or (path / "progress.csv").is_file()


def find_runs(paths: Sequence[str | Path]) -> list[Path]:
    """Run directories named by ``paths`` (each a run dir or a dir of run dirs)."""
    runs: list[Path] = []
    for item in paths:
        p = Path(item).expanduser()
        found = (
            [p] if is_run_dir(p) else sorted(d for d in p.glob("*") if d.is_dir() and is_run_dir(d))
        )
        if not found:
            raise ConfigError(
                f"{item}: no result.json or progress.csv in it or in its subdirectories; "
                "give a run directory written by 'offrl train'"
            )
        runs += [r for r in found if r not in runs]
    return runs


def load_curve(run_dir: Path, x_key: str, y_key: str) -> Curve:
    """``(x, y)`` points of one run; rows missing either key are skipped."""
    rows = read_rows(run_dir)
    if rows and not any(x_key in r for r in rows):
        raise ConfigError(f"{run_dir}: no {x_key!r} in its results; keys: {sorted(rows[0])}")
    if rows and not any(y_key in r for r in rows):
        raise ConfigError(f"{run_dir}: no {y_key!r} in its results; keys: {sorted(rows[0])}")
    pts = np.array([(_number(r.get(x_key)), _number(r.get(y_key))) for r in rows]).reshape(-1, 2)
    pts = pts[np.isfinite(pts).all(axis=1)]
    pts = pts[np.argsort(pts[:, 0], kind="stable")]
    return Curve(run_dir, run_dir.resolve().parent.name, pts[:, 0], pts[:, 1])


def usable_curves(
    run_dirs: Sequence[Path], x_key: str, y_key: str, warn: Callable[[str], None]
) -> list[Curve]:
    """The curves of runs that have points; each run skipped is reported through ``warn``.

    OffrlRuntimeError when no run is left to plot, saying why for each."""
    curves: list[Curve] = []
    reasons: list[str] = []
    for run_dir in run_dirs:
        rows = read_rows(run_dir)
        missing = [k for k in (x_key, y_key) if not any(k in r for r in rows)]
        if not rows:
            reason = f"{run_dir}: no results (the run failed or stopped before its first result)"
        elif missing:
            keys = ", ".join(sorted({k for r in rows for k in r}))
            reason = f"{run_dir}: no {' or '.join(map(repr, missing))} in its results; keys: {keys}"
        else:
            curve = load_curve(run_dir, x_key, y_key)
            if len(curve.x):
                curves.append(curve)
                continue
            reason = f"{run_dir}: no finite pair of {x_key!r} and {y_key!r} in its results"
        reasons.append(reason)
        warn(f"skipped {reason}")
    if not curves:
        raise OffrlRuntimeError(
            "nothing to plot: " + "; ".join(reasons) + "; choose other keys with --x/--y"
        )
    return curves


def run_title(run_dirs: Sequence[Path]) -> str:
    """``"PG on CartPole-v1"`` (every algorithm and env, from the runs' params.json)."""
    algos: list[str] = []
    envs: list[str] = []
    for run_dir in run_dirs:
        try:
            params = json.loads((run_dir / "params.json").read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError):
            continue
        if not isinstance(params, dict):
            continue
        for value, seen in ((params.get("run"), algos), (params.get("env"), envs)):
            if isinstance(value, str) and value not in seen:
                seen.append(value)
    if not algos and not envs:
        return ""
    return f"{', '.join(algos) or '?'} on {', '.join(envs) or '?'}"


def check_output(out: Path) -> None:
    """ConfigError unless ``out`` is a new .png file; its folder is created if missing."""
    if out.suffix.lower() != ".png":
        raise ConfigError(f"-o {out}: the output must be a .png file")
    if os.path.lexists(out):
        raise ConfigError(f"-o {out}: the file exists; give a new file (plot never overwrites)")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OffrlRuntimeError(
            f"-o {out}: cannot create the folder {str(out.parent)!r}: {e.strerror or e}"
        ) from None


def aggregate(curves: Sequence[Curve]) -> GroupCurve:
    """Mean and min/max of runs of one group, interpolated on their shared x range.

    With x_i the points of run i, the grid is the union of all x_i within
    [max_i min(x_i), min_i max(x_i)]; each run is linearly interpolated onto it.
    """
    usable = [c for c in curves if len(c.x)]
    if not usable:
        return GroupCurve(curves[0].group, 0, *(np.empty(0),) * 4)
    lo = max(float(c.x[0]) for c in usable)
    hi = min(float(c.x[-1]) for c in usable)
    grid = np.unique(np.concatenate([c.x for c in usable]))
    grid = grid[(grid >= lo) & (grid <= hi)]
    ys = np.stack([np.interp(grid, c.x, c.y) for c in usable])
    return GroupCurve(usable[0].group, len(usable), grid, ys.mean(0), ys.min(0), ys.max(0))


def group_curves(curves: Sequence[Curve]) -> list[GroupCurve]:
    """One aggregated curve per experiment name, in first-seen order."""
    groups: dict[str, list[Curve]] = {}
    for c in curves:
        groups.setdefault(c.group, []).append(c)
    return [aggregate(cs) for cs in groups.values()]


def require_matplotlib() -> None:
    """ConfigError naming the extra when matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise OffrlRuntimeError(
            "plotting needs matplotlib, which is not installed: run pip install 'offrl[plot]'"
        ) from None


def render(
    groups: Sequence[GroupCurve], x_key: str, y_key: str, out: Path, title: str = ""
) -> None:
    """Draw the mean lines and min/max bands and save a PNG to the new file ``out``."""
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # A bare Figure (no pyplot): no global figure registry, no GUI backend.
    fig = Figure(figsize=(7, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for i, g in enumerate(groups):
        color = f"C{i % 10}"
        ax.plot(g.x, g.mean, color=color, label=f"{g.group} ({g.runs} run{'s' * (g.runs > 1)})")
        if g.runs > 1:
            ax.fill_between(g.x, g.low, g.high, color=color, alpha=0.2, linewidth=0)
    ax.set_xlabel(x_key)
    ax.set_ylabel(y_key)
    subtitle = "mean over runs; shaded: min to max"
    ax.set_title(f"{title}\n{subtitle}" if title else subtitle, fontsize=10)
    ax.grid(alpha=0.3)
    if groups:
        ax.legend(loc="best")
    fig.tight_layout()
    image = io.BytesIO()
    fig.savefig(image, format="png")
    try:
        with open(out, "xb") as f:  # never overwrites, even a file made since the check
            f.write(image.getvalue())
    except FileExistsError:
        raise ConfigError(f"-o {out}: the file exists; give a new file") from None
    except OSError as e:
        raise OffrlRuntimeError(f"-o {out}: cannot write the file: {e.strerror or e}") from None


def plot_runs(
    paths: Sequence[str | Path],
    out: str | Path,
    *,
    x_key: str = "timesteps_total",
    y_key: str = "episode_reward_mean",
    warn: Callable[[str], None] | None = None,
) -> list[GroupCurve]:
    """Plot the runs under ``paths`` into the new PNG ``out``; returns the curves drawn.

    Runs without points of ``x_key``/``y_key`` are skipped (each reported to ``warn``)."""
    out_path = Path(out).expanduser()
    check_output(out_path)
    runs = find_runs(paths)
    curves = usable_curves(runs, x_key, y_key, warn or (lambda _: None))
    groups = group_curves(curves)
    render(groups, x_key, y_key, out_path, run_title([c.run_dir for c in curves]))
    return groups
