"""Running the real `offrl` command as a subprocess, for tests that need a separate process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

OFFRL = [sys.executable, "-m", "offrl.cli"]


def offrl_env(results: Path) -> dict[str, str]:
    """The environment with OFFRL_RESULTS_DIR pointing at ``results``."""
    return {**os.environ, "OFFRL_RESULTS_DIR": str(results)}


def run_offrl(args: list[str], results: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``offrl ARGS`` to completion with text stdout/stderr captured, no stdin."""
    return subprocess.run(
        [*OFFRL, *args],
        capture_output=True,
        text=True,
        env=offrl_env(results),
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def start_offrl(args: list[str], results: Path, new_session: bool = False) -> subprocess.Popen:
    """Start ``offrl ARGS`` in the background with text pipes for stdout/stderr; with
    ``new_session`` in a process group of its own (to signal it as a terminal's Ctrl-C does)."""
    return subprocess.Popen(
        [*OFFRL, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=offrl_env(results),
        stdin=subprocess.DEVNULL,
        start_new_session=new_session,
    )


def invoke_offrl(args: list[str], results: Path) -> subprocess.CompletedProcess:
    """Run ``offrl ARGS`` in this process through click's CliRunner, with the same result
    shape as :func:`run_offrl` (returncode, stdout, stderr).

    An exception that escapes the command (a traceback the user would see) fails the
    test instead of being caught.
    """
    from click.testing import CliRunner

    from offrl.cli import main

    res = CliRunner().invoke(
        main, args, env={"OFFRL_RESULTS_DIR": str(results)}, catch_exceptions=False
    )
    return subprocess.CompletedProcess(args, res.exit_code, res.stdout, res.stderr)
