"""Tests for offrl/progress.py: ETA, field formatting, plain-line / live / quiet output."""

from __future__ import annotations

import io
import math
import sys
from typing import Any

import pytest
from rich.console import Console

from offrl.progress import Progress, eta_seconds, make_console, summary_fields

RESULT: dict[str, Any] = {
    "training_iteration": 3,
    "timesteps_total": 1500,
    "episode_reward_mean": 22.456,
    "episode_reward_min": 9.0,
    "episode_reward_max": 1234567.0,
    "num_env_steps_per_s": math.nan,
    "time_total_s": 30.0,
    "info/learner/policy_loss": 0.5,
}
STOP = {"timesteps_total": 3000}
PLAIN_LINE = (
    "iter=3  timesteps=1,500  reward mean=22.46  min=9.00  max=1,234,567  steps/s=-  "
    "time=0:30  ETA=0:30"
)


def _plain_console() -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return make_console(buf), buf


def _terminal_console() -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, force_terminal=True, width=200, highlight=False), buf


# -- eta_seconds --------------------------------------------------------------------


def test_eta_extrapolates_timesteps_from_the_pace_so_far() -> None:
    # 250 steps in 10 s -> 750 more steps take 30 s.
    result = {"timesteps_total": 250, "time_total_s": 10.0}
    assert eta_seconds(result, {"timesteps_total": 1000}) == pytest.approx(30.0)


def test_eta_for_iterations_and_time() -> None:
    result = {"training_iteration": 2, "time_total_s": 10.0}
    assert eta_seconds(result, {"training_iteration": 5}) == pytest.approx(15.0)
    assert eta_seconds(result, {"time_total_s": 60}) == pytest.approx(50.0)


def test_eta_is_the_soonest_of_several_stop_keys() -> None:
    # Any stop key ends the run (RLlib's rule), so the earliest one gives the ETA.
    result = {"training_iteration": 2, "timesteps_total": 250, "time_total_s": 10.0}
    stop = {"timesteps_total": 1000, "training_iteration": 4}
    assert eta_seconds(result, stop) == pytest.approx(10.0)


def test_eta_is_zero_once_a_target_is_passed() -> None:
    result = {"timesteps_total": 1200, "time_total_s": 10.0}
    assert eta_seconds(result, {"timesteps_total": 1000}) == 0.0


def test_eta_is_none_when_it_cannot_be_extrapolated() -> None:
    result = {"timesteps_total": 0, "time_total_s": 5.0, "episode_reward_mean": 50.0}
    assert eta_seconds(result, {"timesteps_total": 1000}) is None  # no progress yet
    assert eta_seconds(result, {"episode_reward_mean": 195}) is None  # not a pace-able key
    assert eta_seconds(result, {}) is None
    assert eta_seconds({"time_total_s": 5.0}, {"training_iteration": 3}) is None


# -- summary_fields -------------------------------------------------------------------


def test_summary_fields_labels_and_formatting() -> None:
    assert summary_fields(RESULT, STOP) == [
        ("iter", "3"),
        ("timesteps", "1,500"),
        ("reward mean", "22.46"),
        ("min", "9.00"),
        ("max", "1,234,567"),
        ("steps/s", "-"),
        ("time", "0:30"),
        ("ETA", "0:30"),
    ]


def test_summary_fields_of_an_empty_result_are_dashes() -> None:
    assert [text for _, text in summary_fields({}, {})] == ["-"] * 8


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.0, "0:00"),
        (59.4, "0:59"),
        (59.6, "1:00"),
        (61.0, "1:01"),
        (3725.0, "1:02:05"),
        (36000.0, "10:00:00"),
    ],
)
def test_time_is_formatted_as_clock(seconds: float, text: str) -> None:
    fields = dict(summary_fields({"time_total_s": seconds}, {}))
    assert fields["time"] == text


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, "-"),
        (math.nan, "-"),
        (-3.14159, "-3.14"),
        (999999.994, "999,999.99"),
        (2_500_000.4, "2,500,000"),
        (12345678, "12,345,678"),
        (0, "0"),
        ("x", "x"),
    ],
)
def test_values_are_formatted_for_reading(value: Any, text: str) -> None:
    assert dict(summary_fields({"episode_reward_mean": value}, {}))["reward mean"] == text


def test_eta_field_uses_the_stop_conditions() -> None:
    result = {"timesteps_total": 100, "time_total_s": 60.0}
    assert dict(summary_fields(result, {"timesteps_total": 6100}))["ETA"] == "1:00:00"
    assert dict(summary_fields(result, {}))["ETA"] == "-"


# -- Progress output ------------------------------------------------------------------


def test_make_console_writes_to_stderr_by_default() -> None:
    assert make_console().file is sys.stderr


def test_plain_console_prints_one_line_per_result() -> None:
    console, buf = _plain_console()
    assert not console.is_terminal
    with Progress(console, STOP) as progress:
        progress.update(RESULT)
        progress.update({**RESULT, "training_iteration": 4, "timesteps_total": 3000})
    lines = buf.getvalue().splitlines()
    assert lines[0] == PLAIN_LINE  # longer than 80 columns, still one line
    assert lines[1].startswith("iter=4  timesteps=3,000  ")
    assert lines[1].endswith("ETA=0:00")
    assert len(lines) == 2
    assert "\x1b[" not in buf.getvalue()  # no colour codes when piped


def test_message_is_printed_verbatim() -> None:
    console, buf = _plain_console()
    with Progress(console, STOP) as progress:
        progress.message("results in /tmp/[bold]x[/bold]", style="yellow")
    assert buf.getvalue() == "results in /tmp/[bold]x[/bold]\n"


def test_quiet_prints_nothing() -> None:
    for console, buf in (_plain_console(), _terminal_console()):
        with Progress(console, STOP, quiet=True) as progress:
            progress.message("hello")
            progress.update(RESULT)
        assert buf.getvalue() == ""


def test_terminal_console_shows_a_live_table() -> None:
    console, buf = _terminal_console()
    with Progress(console, STOP) as progress:
        progress.update(RESULT)
    out = buf.getvalue()
    assert "offrl train" in out
    for _, text in summary_fields(RESULT, STOP):
        assert text in out
    assert "reward mean" in out
    assert "info/learner/policy_loss" not in out


def test_terminal_verbose_adds_learner_stats() -> None:
    console, buf = _terminal_console()
    with Progress(console, STOP, verbose=True) as progress:
        progress.update({**RESULT, "evaluation/episode_reward_mean": 33.0, "other": 1})
    out = buf.getvalue()
    assert "info/learner/policy_loss" in out and "0.50" in out
    assert "evaluation/episode_reward_mean" in out
    assert "other" not in out


def test_plain_verbose_adds_learner_stats() -> None:
    console, buf = _plain_console()
    with Progress(console, STOP, verbose=True) as progress:
        progress.update(RESULT)
    assert "info/learner/policy_loss" in buf.getvalue()


def test_small_values_are_not_rounded_to_zero() -> None:
    """-v printed ``cur_lr 0.00`` for a learning rate of 5e-4."""
    console, buf = _plain_console()
    with Progress(console, STOP, verbose=True) as progress:
        progress.update({**RESULT, "info/learner/cur_lr": 5e-4, "info/learner/x": -2.5e-7})
    assert "info/learner/cur_lr=0.0005" in buf.getvalue()
    assert "info/learner/x=-2.5e-07" in buf.getvalue()


OFFLINE = {
    "training_iteration": 2,
    "timesteps_total": 20000,
    "timesteps_this_iter": 10000,
    "time_this_iter_s": 4.0,
    "time_total_s": 8.0,
    "epoch": 1,
    "rows_read": 20000,
    "info/learner/loss": 0.25,
    "info/learner/mean_q": 41.5,
    "off_policy_estimation/is/v_target": 30.25,
    "off_policy_estimation/dm/v_target": 52.0,
    "episodes_total": 0,
}


def test_an_offline_run_shows_what_it_has_not_empty_rewards() -> None:
    fields = dict(summary_fields(OFFLINE, {"timesteps_total": 40000}))
    assert "reward mean" not in fields
    assert fields["rows"] == "20,000" and fields["epoch"] == "1"
    assert fields["loss"] == "0.25" and fields["mean Q"] == "41.50"
    assert fields["is v_target"] == "30.25" and fields["dm v_target"] == "52.00"
    assert fields["rows/s"] == "2,500.00" and fields["ETA"] == "0:08"
    # with simulation an offline run has episode returns: shown beside its rows, not env steps/s
    with_sim = dict(summary_fields({**OFFLINE, "episode_reward_mean": 9.0}, {}))
    assert with_sim["sim reward mean"] == "9.00" and with_sim["rows/s"] == "2,500.00"
    assert "steps/s" not in with_sim
    # a mixed run samples an env too: its env steps/s are shown
    mixed = {**OFFLINE, "episode_reward_mean": 9.0, "num_env_steps_per_s": 300.0}
    assert dict(summary_fields(mixed, {}))["steps/s"] == "300.00"


def test_no_stop_says_once_that_the_run_goes_on_until_ctrl_c() -> None:
    console, buf = _plain_console()
    with Progress(console, {}) as progress:
        progress.update(RESULT)
        progress.update(RESULT)
    assert buf.getvalue().count("until Ctrl-C") == 1
    console, buf = _plain_console()
    with Progress(console, STOP) as progress:
        progress.update(RESULT)
    assert "until Ctrl-C" not in buf.getvalue()


def test_each_warning_is_shown_once_even_when_filters_change() -> None:
    """Importing torch adds filters, which made Python forget it had shown gymnasium's
    CartPole-v0 deprecation: it was printed twice."""
    import warnings

    from offrl.progress import show_each_warning_once

    shown: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = lambda message, *a, **k: shown.append(str(message))
        show_each_warning_once()
        show_each_warning_once()  # installing twice wraps once
        for _ in range(2):
            warnings.warn("CartPole-v0 is out of date", DeprecationWarning, stacklevel=1)
            warnings.filterwarnings("ignore", message="unrelated")  # a filter change
        warnings.warn("another one", UserWarning, stacklevel=1)
    assert shown == ["CartPole-v0 is out of date", "another one"]
