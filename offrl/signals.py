"""Ctrl-C and SIGTERM during a run: the first stops it cleanly, a second stops it at once."""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from offrl.errors import StopNow


class StopFlag:
    """Set by the first SIGINT/SIGTERM: the run stops cleanly after the current iteration."""

    def __init__(self) -> None:
        self.signum: int | None = None

    @property
    def exit_code(self) -> int:
        return 0 if self.signum is None else 128 + self.signum

    def is_set(self) -> bool:
        return self.signum is not None


def first_signal_message(signum: int) -> str:
    """What the first signal does, and how to stop at once (true for either signal)."""
    name = signal.Signals(signum).name
    again = "Ctrl-C again" if signum == signal.SIGINT else "send SIGTERM (or SIGINT) again"
    return f"{name}: stopping after this iteration ({again} to stop at once)"


@contextmanager
def graceful_signals(flag: StopFlag, on_first: Callable[[str], None]) -> Iterator[None]:
    """First Ctrl-C/SIGTERM sets ``flag``; a second one of either stops at once (StopNow)."""

    def handler(signum: int, _frame: Any) -> None:
        if flag.signum is not None:
            raise StopNow(signum, signal.Signals(signum).name)
        flag.signum = signum
        on_first(first_signal_message(signum))

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
