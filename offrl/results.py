"""The run directory: params.json, result.json, progress.csv, checkpoints.

Layout (RLlib's): ``<local-dir>/<name>/<RUN>_<env>_<timestamp>[_<k>]/`` holding
``params.json`` (resolved config), ``result.json`` (one JSON object per
iteration), ``progress.csv`` (header grows when new keys appear), TensorBoard
event files and ``checkpoint_<iter>/state.pt``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from offrl.errors import ConfigError, OffrlRuntimeError
from offrl.tensorboard import TensorBoardWriter

CHECKPOINT_FILE = "state.pt"
CHECKPOINT_FORMAT = 1


def default_local_dir() -> Path:
    """``$OFFRL_RESULTS_DIR`` or ``~/offrl_results``."""
    return Path(os.environ.get("OFFRL_RESULTS_DIR", "~/offrl_results")).expanduser()


def _safe(part: str) -> str:
    """A single, harmless path component ("..", "." and separators cannot escape)."""
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "_", part)
    return "_" + cleaned if cleaned.strip(".") == "" else cleaned


def make_run_dir(local_dir: Path, name: str, run: str, env: str, now: float | None = None) -> Path:
    """Create a new, unique run directory (``_1``, ``_2``... when the name is taken)."""
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S", time.localtime(now))
    parent = Path(local_dir).expanduser() / _safe(name)
    base = f"{_safe(run)}_{_safe(env)}_{stamp}"
    try:
        parent.mkdir(parents=True, exist_ok=True)
        for k in range(10_000):
            path = parent / (base if k == 0 else f"{base}_{k}")
            try:
                path.mkdir()  # atomic: a second run in the same second gets the next suffix
                return path
            except FileExistsError:
                continue
    except OSError as e:
        raise OffrlRuntimeError(
            f"cannot create the results directory under {parent}: {e.strerror}; "
            "choose another --local-dir"
        ) from None
    raise OffrlRuntimeError(f"too many runs named {base} in {parent}")


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item"):
        return _jsonable(value.item())
    return value


def clean_result(result: Mapping[str, Any]) -> dict[str, Any]:
    """A result with numpy scalars made plain and NaN/inf made null (valid JSON)."""
    return {k: _jsonable(v) for k, v in result.items()}


class ResultLogger:
    """Appends each iteration's result to result.json and progress.csv (a context manager)."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self._json = open(logdir / "result.json", "a", encoding="utf-8")  # noqa: SIM115
        self._header: list[str] = []
        self._rows: list[dict[str, Any]] = []
        self._tb = TensorBoardWriter(logdir)

    def write_params(self, params: Mapping[str, Any]) -> None:
        with open(self.logdir / "params.json", "x", encoding="utf-8") as f:
            json.dump(params, f, indent=2, sort_keys=True)
            f.write("\n")

    def log(self, result: Mapping[str, Any]) -> None:
        row = clean_result(result)
        self._json.write(json.dumps(row) + "\n")
        self._json.flush()
        self._tb.add_scalars(
            row, step=int(row.get("timesteps_total") or row.get("training_iteration") or 0)
        )
        self._rows.append(row)
        new_keys = [k for k in row if k not in self._header]
        if new_keys or not self._header:
            self._header += new_keys
            self._rewrite_csv()
        else:
            with open(self.logdir / "progress.csv", "a", newline="", encoding="utf-8") as f:
                csv.DictWriter(f, self._header).writerow(row)

    def _rewrite_csv(self) -> None:
        # The header grew: rewrite the whole file (atomically) so every row lines up with it.
        buf = io.StringIO()
        writer = csv.DictWriter(buf, self._header)
        writer.writeheader()
        writer.writerows(self._rows)
        tmp = self.logdir / "progress.csv.tmp"
        tmp.write_text(buf.getvalue(), encoding="utf-8")
        os.replace(tmp, self.logdir / "progress.csv")

    def close(self) -> None:
        self._json.close()
        self._tb.close()

    def __enter__(self) -> ResultLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def save_checkpoint(logdir: Path, iteration: int, state: Mapping[str, Any]) -> Path:
    """Write ``checkpoint_<iteration>/state.pt`` (via a temp file, so it is never half-written)."""
    import torch

    path = logdir / f"checkpoint_{iteration:06d}"
    path.mkdir(exist_ok=True)
    tmp = path / (CHECKPOINT_FILE + ".tmp")
    torch.save({"format": CHECKPOINT_FORMAT, **state}, tmp)
    os.replace(tmp, path / CHECKPOINT_FILE)
    return path


_CHECKPOINT_RE = re.compile(r"^checkpoint_(\d+)$")


def resolve_checkpoint(path: str | Path) -> Path:
    """``path`` itself (a checkpoint directory or its state.pt), or for a run directory its
    latest ``checkpoint_<iter>``. A run directory without one is a ConfigError listing
    what it holds and how to write a checkpoint."""
    p = Path(path).expanduser()
    if not p.is_dir() or (p / CHECKPOINT_FILE).exists():
        return p
    found = sorted(
        (int(m[1]), child)
        for child in p.iterdir()
        if (m := _CHECKPOINT_RE.match(child.name)) and (child / CHECKPOINT_FILE).exists()
    )
    if found:
        return found[-1][1]
    names = sorted(child.name + ("/" if child.is_dir() else "") for child in p.iterdir())
    shown = ", ".join(names[:12]) + (f" ... ({len(names)} entries)" if len(names) > 12 else "")
    raise ConfigError(
        f"checkpoint not found in {str(path)!r}: it holds {shown or 'nothing'}. Give a "
        f"checkpoint_<iter> directory (holding {CHECKPOINT_FILE}) or a run directory with "
        "one; train with --checkpoint-at-end or --checkpoint-freq N to write them"
    )


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint directory (or its state.pt, or a run directory's latest checkpoint);
    errors say what is wrong with it."""
    import torch

    p = resolve_checkpoint(path)
    file = p / CHECKPOINT_FILE if p.is_dir() else p
    if not file.exists():
        raise ConfigError(
            f"checkpoint {str(path)!r} not found (expected a checkpoint_<iter> directory "
            f"holding {CHECKPOINT_FILE})"
        )
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a corrupt file; all mean the same
        raise OffrlRuntimeError(load_failure_message(str(file), str(e))) from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise OffrlRuntimeError(f"checkpoint {str(file)!r} is not an offrl checkpoint")
    return state


def load_run_checkpoint(path: str | Path) -> dict[str, Any]:
    """:func:`load_checkpoint` of a training run's checkpoint, with every entry it needs."""
    state = load_checkpoint(path)
    check_checkpoint_entries(state, str(path))
    return state


# What every offrl checkpoint holds, and of which type (a checkpoint is data from a file).
CHECKPOINT_ENTRIES = {"run": str, "env": str, "config": dict, "algo": dict}


def check_checkpoint_entries(state: Mapping[str, Any], where: str) -> None:
    """OffrlRuntimeError naming the first entry that is missing or of the wrong type."""
    for key, kind in CHECKPOINT_ENTRIES.items():
        if key not in state:
            raise OffrlRuntimeError(
                f"checkpoint {where!r} has no {key!r} entry; it is incomplete or not written "
                "by offrl train"
            )
        if not isinstance(state[key], kind):
            raise OffrlRuntimeError(
                f"checkpoint {where!r}: entry {key!r} is a {type(state[key]).__name__}, "
                f"not a {kind.__name__}"
            )


def load_failure_message(file: str, torch_message: str) -> str:
    """Why torch.load failed, in offrl's words: torch's own text advises retrying with
    ``weights_only=False``, which would run whatever code the file holds, so it is not
    repeated."""
    found = re.search(r"GLOBAL ([\w.]+)", torch_message)
    if found:
        return (
            f"checkpoint {file!r} holds Python objects, not only tensors and plain data "
            f"(it names {found.group(1)}); offrl refused to load it, since unpickling such a "
            "file can run code. Use checkpoints written by offrl train"
        )
    detail = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", torch_message)
    if detail:
        reason = detail.group(1)
    elif "weights_only" in torch_message:
        reason = "not a checkpoint torch can read as data"
    else:
        reason = torch_message.strip().splitlines()[0] if torch_message.strip() else ""
    return f"checkpoint {file!r} is corrupt or unreadable: {reason[:300]}"
