"""Ctrl-C and SIGTERM during a run: the first stops it cleanly, a second stops it at once.

The second signal raises :class:`StopNow` from Python's handler, which runs only between
bytecodes of the main thread. An env blocked in native code (a simulator's socket read, a C
extension's loop) never gets there, so a watchdog thread also sees every signal, through
``signal.set_wakeup_fd``, and ends the process itself when the run has not unwound
``HARD_EXIT_GRACE_S`` after the second one.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from offrl.errors import StopNow

HARD_EXIT_GRACE_S = 5.0  # after the second signal, how long the run may take to unwind
STOP_GRACE_S = 2.0  # how long a worker process gets after SIGTERM before SIGKILL
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


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


def stopping_at_once() -> bool:
    """True while a second signal (StopNow) or a Ctrl-C (KeyboardInterrupt) unwinds the run:
    whatever closes now (worker sets) should not wait for work in progress."""
    return isinstance(sys.exc_info()[1], (StopNow, KeyboardInterrupt))


def hard_exit(signum: int) -> None:
    """The run did not unwind in time: say so, stop the worker processes, exit now."""
    name = signal.Signals(signum).name
    line = (
        f"offrl: error: the run did not stop within {HARD_EXIT_GRACE_S:g} s of the second "
        f"{name} (stuck in native code?); exiting without cleanup: output, result and "
        "progress files may lack their last lines\n"
    )
    show_cursor = "\x1b[?25h\n" if os.isatty(2) else ""  # the live table hid it
    # os.write, not sys.stderr: the stuck main thread may hold the stream's lock.
    with contextlib.suppress(OSError):
        os.write(2, (show_cursor + line).encode())
    _stop_children()
    os._exit(128 + signum)


def _stop_children() -> None:
    """This process's worker processes: one stuck in its env would outlive us."""
    terminate_processes(multiprocessing.active_children())


def terminate_processes(processes: list[multiprocessing.process.BaseProcess]) -> None:
    """SIGTERM (a worker's finally blocks still close its files), then SIGKILL to those
    still running ``STOP_GRACE_S`` later; each round waits at most ``STOP_GRACE_S`` in all."""
    for stop in ("terminate", "kill"):
        lingering = [p for p in processes if p.exitcode is None]
        for p in lingering:
            getattr(p, stop)()
        grace_end = time.monotonic() + STOP_GRACE_S
        for p in lingering:
            p.join(max(0.0, grace_end - time.monotonic()))


class _Watchdog:
    """A thread that reads signal numbers from the wakeup fd; ``on_overdue(signum)`` when the
    context is still open ``grace`` seconds after the second SIGINT/SIGTERM."""

    def __init__(self, grace: float, on_overdue: Callable[[int], None]) -> None:
        self._grace, self._on_overdue = grace, on_overdue
        self._closed = threading.Event()
        self._read, self._write = socket.socketpair()
        self._write.setblocking(False)  # the C signal handler must never block
        self._previous = signal.set_wakeup_fd(self._write.fileno(), warn_on_full_buffer=False)
        self._thread = threading.Thread(target=self._watch, name="offrl-signals", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        seen = 0
        while not self._closed.is_set():
            data = self._read.recv(64)
            if self._previous != -1:  # the previous owner of the wakeup fd still hears them
                with contextlib.suppress(OSError):
                    os.write(self._previous, data)
            seen += sum(1 for signum in data if signum in _STOP_SIGNALS)
            if seen >= 2 and not self._closed.is_set():
                signum = next(s for s in reversed(data) if s in _STOP_SIGNALS)
                if not self._closed.wait(self._grace):
                    self._on_overdue(signum)
                return

    def close(self) -> None:
        signal.set_wakeup_fd(self._previous)
        self._closed.set()
        with contextlib.suppress(OSError):
            self._write.send(b"\0")  # wakes the thread's recv; 0 is no signal
        self._thread.join()
        self._read.close()
        self._write.close()


def _no_wakeup_fd_in_child() -> None:
    # A child forked while the watchdog runs would otherwise write its own signals to our
    # socket, and one Ctrl-C to the process group would count twice.
    if _watching:
        with contextlib.suppress(ValueError):
            signal.set_wakeup_fd(-1)


_watching = False
if hasattr(os, "register_at_fork"):  # POSIX only
    os.register_at_fork(after_in_child=_no_wakeup_fd_in_child)


@contextmanager
def graceful_signals(
    flag: StopFlag,
    on_first: Callable[[str], None],
    *,
    grace: float = HARD_EXIT_GRACE_S,
    on_overdue: Callable[[int], None] = hard_exit,
) -> Iterator[None]:
    """First Ctrl-C/SIGTERM sets ``flag``; a second one of either stops at once (StopNow),
    or, when the run has not left this context ``grace`` seconds later, ``on_overdue``
    (by default :func:`hard_exit`). Main thread only."""
    global _watching

    def handler(signum: int, _frame: Any) -> None:
        if flag.signum is not None:
            raise StopNow(signum, signal.Signals(signum).name)
        flag.signum = signum
        on_first(first_signal_message(signum))

    old = {s: signal.signal(s, handler) for s in _STOP_SIGNALS}
    try:
        watchdog = _Watchdog(grace, on_overdue)
        _watching = True
        try:
            yield
        finally:
            _watching = False
            watchdog.close()
    finally:
        for s, h in old.items():
            signal.signal(s, h)
