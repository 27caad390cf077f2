"""Every test writes results under its own temporary directory, never ~/offrl_results."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _results_in_tmp(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """``OFFRL_RESULTS_DIR`` points at a fresh temporary directory for each test, so a run
    started without ``--local-dir`` (in-process, or a subprocess inheriting the environment)
    never writes into the user's home."""
    results: Path = tmp_path_factory.mktemp("offrl_results")
    monkeypatch.setenv("OFFRL_RESULTS_DIR", str(results))
    return results
