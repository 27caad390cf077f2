"""Ctrl-C and SIGTERM during a run (offrl/signals.py): the first stops cleanly, a second
stops at once, even when an env blocks in native code or a rollout worker hangs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from offrl.errors import StopNow
from offrl.signals import StopFlag, graceful_signals, stopping_at_once
from tests.clitools import start_offrl

TINY_PG = {"train_batch_size": 50, "model": {"fcnet_hiddens": [8]}}


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


# -- in this process -----------------------------------------------------------------------


def test_first_signal_sets_the_flag_and_nothing_leaks() -> None:
    threads, fds = threading.active_count(), _open_fds()
    old_wakeup = signal.set_wakeup_fd(-1)
    signal.set_wakeup_fd(old_wakeup)
    flag, said = StopFlag(), []
    with graceful_signals(flag, said.append):
        assert threading.active_count() == threads + 1  # the watchdog
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)  # the handler runs between bytecodes
        assert flag.signum == signal.SIGTERM and flag.exit_code == 143
    assert said == [
        "SIGTERM: stopping after this iteration (send SIGTERM (or SIGINT) again to stop at once)"
    ]
    assert threading.active_count() == threads and _open_fds() == fds
    assert signal.set_wakeup_fd(old_wakeup) == old_wakeup  # the previous wakeup fd is back
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_second_signal_raises_stop_now_and_a_prompt_unwind_is_no_hard_exit() -> None:
    overdue: list[int] = []
    with (
        pytest.raises(StopNow) as stop,
        graceful_signals(StopFlag(), lambda _: None, grace=0.2, on_overdue=overdue.append),
    ):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(1.0)  # interrupted by StopNow
    assert stop.value.signum == signal.SIGINT
    time.sleep(0.4)  # past the grace: the watchdog was stopped with the context
    assert overdue == []


def test_watchdog_gives_up_on_a_main_thread_that_does_not_unwind_in_time() -> None:
    overdue: list[int] = []
    with graceful_signals(StopFlag(), lambda _: None, grace=0.2, on_overdue=overdue.append):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)
        with pytest.raises(StopNow):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1.0)
        deadline = time.monotonic() + 5.0  # the run "stuck" past the grace
        while not overdue and time.monotonic() < deadline:
            time.sleep(0.05)
    assert overdue == [signal.SIGTERM]


def test_a_child_forked_during_the_run_does_not_report_its_signals_to_the_watchdog() -> None:
    with graceful_signals(StopFlag(), lambda _: None):
        pid = os.fork()
        if pid == 0:  # the child: its wakeup fd must be unset
            os._exit(0 if signal.set_wakeup_fd(-1) == -1 else 1)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_stopping_at_once_only_while_a_stop_now_or_ctrl_c_unwinds() -> None:
    assert not stopping_at_once()
    for exc in (StopNow(15, "SIGTERM"), KeyboardInterrupt()):
        try:
            raise exc
        except BaseException:
            assert stopping_at_once()
    try:
        raise ValueError("a worker failed")
    except ValueError:
        assert not stopping_at_once()


def test_worker_set_closed_by_a_stop_now_terminates_workers_at_once(tmp_path: Path) -> None:
    from offrl.algos import get_algorithm
    from offrl.config import from_dict
    from offrl.workers import WorkerSet

    cls, _ = get_algorithm("PG")
    cfg = from_dict(cls, {**TINY_PG, "train_batch_size": 20, "output": str(tmp_path)})
    ws = WorkerSet("PG", cfg, "CartPole-v1", 0, tmp_path, 1)
    proc = ws._handles[0].process
    with pytest.raises(StopNow), ws:
        ws.next()  # the worker wrote one fragment and waits for the next request
        start = time.monotonic()
        raise StopNow(signal.SIGTERM, "SIGTERM")
    assert time.monotonic() - start < 2.0
    assert proc.exitcode == 128 + signal.SIGTERM  # terminated, not asked to finish
    files = sorted(tmp_path.glob("output-*.json"))
    assert len(files) == 1
    text = files[0].read_text()
    assert text.endswith("\n") and all(json.loads(line) for line in text.splitlines())


# -- a real `offrl train` process ------------------------------------------------------------


def _descendants(pid: int) -> list[int]:
    """Pids of every live process below ``pid`` (from /proc/*/stat)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z":
            parents[int(entry.name)] = int(fields[1])
    found, frontier = [], [pid]
    while frontier:
        kids = [p for p, pp in parents.items() if pp in frontier]
        found += kids
        frontier = kids
    return found


def _alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _start_train(tmp_path: Path, env: str, config: dict) -> subprocess.Popen:
    """``offrl train`` in a session of its own, so that a test can signal its whole process
    group as a terminal's Ctrl-C does."""
    args = ["train", "--run", "PG", "--env", env, "--local-dir", str(tmp_path)]
    args += ["--config", json.dumps(config), "--stop", '{"training_iteration": 1}']
    return start_offrl(args, tmp_path, new_session=True)


def _wait_for(check: object, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not check():  # type: ignore[operator]
        time.sleep(0.1)


def _two_signals(proc: subprocess.Popen, send: object) -> tuple[float, str]:
    """Send a signal, check the run goes on, send another; (seconds from the second signal to
    the exit, stderr)."""
    send()  # type: ignore[operator]
    time.sleep(1.0)
    assert proc.poll() is None  # the first signal waits for the iteration, which hangs
    start = time.monotonic()
    send()  # type: ignore[operator]
    _, err = proc.communicate(timeout=60)
    return time.monotonic() - start, err


@pytest.mark.slow
@pytest.mark.parametrize("env", ["HangsInStep", "BlocksInNativeCode"])
def test_second_ctrl_c_stops_hung_rollout_workers_at_once(tmp_path: Path, env: str) -> None:
    """The terminal's Ctrl-C reaches the workers too; they leave it to the learner, which on
    the second one terminates them (SIGKILL for the one stuck in C) instead of waiting 10 s."""
    config = {**TINY_PG, "num_workers": 1, "output": "logdir"}
    proc = _start_train(tmp_path, f"tests.bad_envs:{env}", config)
    try:
        _wait_for(lambda: len(_descendants(proc.pid)) >= 2)  # the forkserver and the worker
        workers = _descendants(proc.pid)
        time.sleep(3.0)  # the worker is inside the hanging step() by now
        elapsed, err = _two_signals(proc, lambda: os.killpg(proc.pid, signal.SIGINT))
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert elapsed < 6.0, f"{elapsed:.1f} s after the second Ctrl-C"
    assert "stopped at once by a second SIGINT" in err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    _wait_for(lambda: not any(_alive(p) for p in workers), 10.0)
    assert [p for p in workers if _alive(p)] == []
    logdir = next(tmp_path.glob("default/*"))
    assert json.loads((logdir / "params.json").read_text())["num_workers"] == 1
    assert (logdir / "result.json").read_text() == ""  # no iteration ended, no cut line


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_second_signal_ends_a_run_stuck_in_native_code(tmp_path: Path, sig: int, code: int) -> None:
    """The env blocks the main thread in C, so Python's handler never runs: the watchdog
    exits the process 5 s after the second signal, saying so."""
    from offrl.signals import HARD_EXIT_GRACE_S

    proc = _start_train(tmp_path, "tests.bad_envs:BlocksInNativeCode", TINY_PG)
    try:
        _wait_for(lambda: list(tmp_path.glob("default/*/params.json")))
        time.sleep(3.0)  # inside the blocking step() by now
        elapsed, err = _two_signals(proc, lambda: proc.send_signal(sig))
    finally:
        proc.kill()
    assert proc.returncode == code, err
    assert HARD_EXIT_GRACE_S <= elapsed < HARD_EXIT_GRACE_S + 4.0, f"{elapsed:.1f} s"
    name = signal.Signals(sig).name
    assert f"did not stop within 5 s of the second {name}" in err
    assert "Traceback" not in err


@pytest.mark.slow
def test_ctrl_c_during_a_patient_close_stops_the_workers_at_once(tmp_path: Path) -> None:
    from offrl.algos import get_algorithm
    from offrl.config import from_dict
    from offrl.workers import WorkerSet

    cls, _ = get_algorithm("PG")
    cfg = from_dict(cls, TINY_PG)
    ws = WorkerSet("PG", cfg, "tests.bad_envs:HangsInStep", 0, tmp_path, 1)
    proc = ws._handles[0].process
    ws._request(0)  # the worker is now inside the hanging step()
    time.sleep(1.0)
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
    start = time.monotonic()
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        ws.close()  # waits up to 10 s for the fragment, until the Ctrl-C
    assert time.monotonic() - start < 2.5
    # SIGTERM ended it, not SIGKILL: its finally blocks ran (inside step() SystemExit is
    # reported as an env failure, hence 1)
    assert proc.exitcode == 1
