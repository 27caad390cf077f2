"""Error types that carry what the user must change.

Only ``cli.py`` turns them into exit codes: ``ConfigError`` -> 2 (usage/config),
``DataFormatError`` and ``OffrlRuntimeError`` -> 1 (runtime failure).
"""

from __future__ import annotations


class OffrlError(Exception):
    """Base class of every error offrl reports to the user without a traceback."""

    exit_code: int = 1
    detail: str = ""  # more for -v (e.g. a rollout worker's traceback)


class ConfigError(OffrlError):
    """A flag, config key or value the user gave is wrong (exit code 2)."""

    exit_code = 2


class OffrlRuntimeError(OffrlError):
    """The run cannot go on: missing input, unwritable output, a failed worker (exit code 1)."""

    exit_code = 1


class DataFormatError(OffrlError):
    """An experience file breaks the format contract at a given file and line (exit code 1)."""

    exit_code = 1

    def __init__(self, path: str, line: int | None, reason: str) -> None:
        self.path = str(path)
        self.line = line
        self.reason = reason
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {reason}")


class StopNow(BaseException):
    """A second SIGINT/SIGTERM: unwinds at once (every ``with`` and ``finally`` closes its
    files on the way out); the CLI then exits 128 + the signal's number. A BaseException,
    so that no ``except Exception`` on the way swallows it."""

    def __init__(self, signum: int, name: str) -> None:
        super().__init__(name)
        self.signum = signum
