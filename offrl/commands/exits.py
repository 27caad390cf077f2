"""How every command ends on a failure: one message on stderr and the exit code.

Exit codes: 1 runtime failure, 2 usage or config error, 130 interrupted by Ctrl-C,
128 + signal number when a second signal stopped a run at once.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable
from functools import wraps
from typing import Any

import click

from offrl.errors import OffrlError, StopNow


def _fail(err: OffrlError, verbose: bool) -> None:
    if verbose:
        traceback.print_exc()
        detail = getattr(err, "detail", "")  # e.g. the traceback inside a rollout worker
        if detail:
            click.echo(detail, err=True)
    click.echo(f"offrl: error: {err}", err=True)
    sys.exit(err.exit_code)


def handle_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn offrl's errors into a message and an exit code; tracebacks only with -v."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        verbose = bool(kwargs.get("verbose"))
        try:
            return func(*args, **kwargs)
        except OffrlError as e:
            _fail(e, verbose)
        except KeyboardInterrupt:
            click.echo("offrl: interrupted", err=True)
            sys.exit(130)
        except StopNow as e:
            click.echo(f"offrl: stopped at once by a second {e}", err=True)
            sys.exit(128 + e.signum)

    return wrapper
