"""Where the shared RLlib fixture lives: beside the clone (CI), or /work/shared (developers)."""

from __future__ import annotations

from pathlib import Path

_RELATIVE = Path("shared") / "data" / "rllib" / "cartpole-small.json"


def _find() -> Path:
    for root in (Path(__file__).resolve().parents[2], Path("/work")):
        if (root / _RELATIVE).exists():
            return root / _RELATIVE
    return Path(__file__).resolve().parents[2] / _RELATIVE  # missing: tests using it skip


RLLIB_FIXTURE = _find()
