"""``offrl data validate``: check every rule of FORMAT.md, reporting (file, line, rule).

Rules (the names reported): ``json`` (a line that is not JSON), ``record`` (record
type, decodable columns), ``codec`` (a compressed column that cannot be decoded),
``required`` (obs, actions, rewards, dones/terminateds), ``lengths`` (equal column
lengths), ``finite`` (no NaN/inf in float columns), ``prob_range`` (action_prob in
[0, 1]), ``logp`` (action_logp == log(action_prob)), ``t_sequence`` (t counts up by
one within an episode, never negative), ``dones`` (dones only on an episode's last
step; dones == terminateds | truncateds), ``new_obs`` (new_obs[t] == obs[t+1]
within an episode), ``spaces`` (obs and actions fit the env's spaces).
Episodes are followed across records and files, in sorted file order.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from offrl.batch import (
    ACTION_LOGP,
    ACTION_PROB,
    ACTIONS,
    DONES,
    EPS_ID,
    NEW_OBS,
    OBS,
    REWARDS,
    TERMINATEDS,
    TRUNCATEDS,
    SampleBatch,
    T,
)
from offrl.datatools import ProgressFn, Record, iter_records
from offrl.errors import DataFormatError
from offrl.io.codecs import CodecError, decode_column
from offrl.io.decode import decode_columns
from offrl.io.sources import resolve_sources

LOGP_RTOL = 1e-4
LOGP_ATOL = 1e-6


@dataclass(frozen=True)
class Problem:
    """One broken rule at one place."""

    path: str
    line: int | None
    rule: str
    message: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line is not None else self.path
        return f"{where}: [{self.rule}] {self.message}"


@dataclass
class _Tail:
    """The last row seen of an episode, to check continuity into the next record."""

    t: int | None
    done: bool
    new_obs: np.ndarray | None


def _rows(mask: np.ndarray, limit: int = 5) -> str:
    idx = np.flatnonzero(mask)
    shown = ", ".join(str(i) for i in idx[:limit])
    return f"row {shown}" + (f" (+{len(idx) - limit} more)" if len(idx) > limit else "")


# -- raw-level rules (before the decoder normalises the record) ----------------------------


def predecode(raw: Mapping[str, Any], path: str, line: int) -> tuple[dict[str, Any], list[Problem]]:
    """Compressed columns decoded to arrays; problems for codec, required and lengths rules."""
    cols: dict[str, Any] = {}
    problems = []
    for name, value in raw.items():
        if value is None or name == "seq_lens":
            continue
        try:
            cols[name] = decode_column(value)
        except CodecError as e:
            problems.append(Problem(path, line, "codec", f"column {name!r}: {e}"))
    missing = [c for c in (OBS, ACTIONS, REWARDS) if c not in raw]
    if DONES not in raw and TERMINATEDS not in raw:
        missing.append("dones (or terminateds)")
    if missing:
        problems.append(Problem(path, line, "required", f"missing column(s) {missing}"))
    # np.ndim: a compressed column may decode to a 0-d array, which has no len().
    lengths = {n: len(v) for n, v in cols.items() if isinstance(v, list) or np.ndim(v) > 0}
    if len(set(lengths.values())) > 1:
        problems.append(Problem(path, line, "lengths", f"columns have different lengths {lengths}"))
    return cols, problems


# -- batch-level rules -------------------------------------------------------------------


def check_values(batch: SampleBatch, raw: Mapping[str, Any], path: str, line: int) -> list[Problem]:
    """finite, prob_range, logp and dones-consistency rules on one decoded record."""
    out = []
    for name, arr in batch.items():
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            bad = ~np.isfinite(arr.reshape(len(arr), -1)).all(axis=1)
            out.append(
                Problem(path, line, "finite", f"column {name!r} has NaN/inf at {_rows(bad)}")
            )
    prob = batch.get(ACTION_PROB)
    if prob is not None:
        bad = (prob < 0) | (prob > 1)
        if bad.any():
            out.append(
                Problem(path, line, "prob_range", f"action_prob outside [0, 1] at {_rows(bad)}")
            )
    logp = batch.get(ACTION_LOGP)
    if prob is not None and logp is not None:
        expected = np.exp(logp.astype(np.float64))
        bad = ~np.isclose(expected, prob.astype(np.float64), rtol=LOGP_RTOL, atol=LOGP_ATOL)
        if bad.any():
            out.append(
                Problem(path, line, "logp", f"exp(action_logp) != action_prob at {_rows(bad)}")
            )
    if {DONES, TERMINATEDS, TRUNCATEDS} <= raw.keys():
        bad = batch[DONES] != (batch[TERMINATEDS] | batch[TRUNCATEDS])
        if bad.any():
            out.append(
                Problem(path, line, "dones", f"dones != terminateds | truncateds at {_rows(bad)}")
            )
    return out


def check_spaces(
    batch: SampleBatch, obs_space: Any, act_space: Any, path: str, line: int
) -> list[Problem]:
    """Observations and actions conform to the env's spaces (shape, one-hots, action range:
    ``offrl/spaces.py``, the reader's own checks), and Box observations to its bounds."""
    from offrl.spaces import space_problems

    out = [
        Problem(path, line, "spaces", p)
        for p in space_problems(batch, obs_space, act_space, rewards=False)
    ]
    if out or not hasattr(obs_space, "low"):  # not a Box: no bounds to check
        return out
    shape = tuple(obs_space.shape)
    for name in (OBS, NEW_OBS):
        arr = batch.get(name)
        if arr is None or not len(arr):
            continue
        low = np.broadcast_to(obs_space.low, shape).reshape(-1)
        high = np.broadcast_to(obs_space.high, shape).reshape(-1)
        flat = arr.reshape(len(arr), -1)
        bad = ((flat < low) | (flat > high)).any(axis=1)
        if bad.any():
            out.append(
                Problem(
                    path,
                    line,
                    "spaces",
                    f"{name} outside the observation space bounds at {_rows(bad)}",
                )
            )
    return out


class EpisodeTracker:
    """Checks t sequence, dones placement and new_obs continuity across records."""

    def __init__(self) -> None:
        self.tails: dict[int, _Tail] = {}
        self.warned_behaviour = False  # the behaviour_prob warning is given once

    def check(self, batch: SampleBatch, path: str, line: int) -> list[Problem]:
        """The episode rules for one record, continuing episodes seen in earlier records."""
        out = []
        done = batch.dones_column()
        t = batch.get(T)
        eps = batch.get(EPS_ID)
        has_next_obs = NEW_OBS in batch and "new_obs_valid" not in batch
        if t is not None and (t < 0).any():
            out.append(Problem(path, line, "t_sequence", f"negative t at {_rows(t < 0)}"))
        if eps is not None and len(batch) > 1:
            same = eps[1:] == eps[:-1]
            if done is not None and (done[:-1] & same).any():
                out.append(
                    Problem(
                        path,
                        line,
                        "dones",
                        "a done step is followed by a step of "
                        f"the same episode at {_rows(done[:-1] & same)}",
                    )
                )
            if t is not None:
                bad = same & (t[1:] != t[:-1] + 1)
                if bad.any():
                    out.append(
                        Problem(
                            path,
                            line,
                            "t_sequence",
                            "t does not count up by one "
                            f"within an episode at {_rows(np.r_[False, bad])}",
                        )
                    )
            if has_next_obs:
                cont = same & ~done[:-1] if done is not None else same
                diff = (batch[NEW_OBS][:-1] != batch[OBS][1:]).reshape(len(batch) - 1, -1)
                bad = cont & diff.any(axis=1)
                if bad.any():
                    out.append(
                        Problem(
                            path,
                            line,
                            "new_obs",
                            f"new_obs[t] != obs[t+1] within an episode at {_rows(bad)}",
                        )
                    )
        if eps is not None:
            out += self._across(batch, done, path, line, has_next_obs)
        return out

    def _across(
        self, batch: SampleBatch, done: np.ndarray | None, path: str, line: int, has_next_obs: bool
    ) -> list[Problem]:
        """Rules at the seam between this record's first rows and earlier records."""
        out = []
        eps, t = batch[EPS_ID], batch.get(T)
        seen_here: set[int] = set()
        for start, end in batch.episode_bounds():
            key = int(eps[start])
            # Seams inside this record were checked row by row already.
            tail = self.tails.get(key) if key not in seen_here else None
            seen_here.add(key)
            if tail is not None:
                if tail.done:
                    out.append(
                        Problem(
                            path,
                            line,
                            "dones",
                            f"episode {key} continues at row "
                            f"{start} after a step marked done in an earlier record",
                        )
                    )
                elif t is not None and tail.t is not None and int(t[start]) != tail.t + 1:
                    out.append(
                        Problem(
                            path,
                            line,
                            "t_sequence",
                            f"episode {key} continues at "
                            f"row {start} with t={int(t[start])}, expected {tail.t + 1}",
                        )
                    )
                elif (
                    has_next_obs
                    and tail.new_obs is not None
                    and not np.array_equal(tail.new_obs, batch[OBS][start])
                ):
                    out.append(
                        Problem(
                            path,
                            line,
                            "new_obs",
                            f"episode {key}: obs at row {start} != new_obs of its previous step",
                        )
                    )
            self.tails[key] = _Tail(
                t=int(t[end - 1]) if t is not None else None,
                done=bool(done[end - 1]) if done is not None else False,
                new_obs=batch[NEW_OBS][end - 1].copy() if has_next_obs else None,
            )
        return out


def check_record(
    rec: Record, tracker: EpisodeTracker, spaces: tuple[Any, Any] | None
) -> list[Problem]:
    """Every rule for one record (the record's raw columns, then its decoded batch)."""
    if rec.error is not None:
        rule = "json" if rec.corrupt else "record"
        return [Problem(rec.path, rec.lineno, rule, rec.error.reason)]
    cols, problems = predecode(rec.raw, rec.path, rec.lineno)
    if problems:
        return problems  # the decoder would stop at the same place
    try:
        batch = decode_columns(cols, path=rec.path, lineno=rec.lineno)
    except DataFormatError as e:
        return [Problem(rec.path, rec.lineno, "record", e.reason)]
    problems = check_values(batch, rec.raw, rec.path, rec.lineno)
    if not tracker.warned_behaviour and (w := behaviour_warning(batch, rec.path, rec.lineno)):
        tracker.warned_behaviour = True  # once per run of validate
        problems.append(w)
    problems += tracker.check(batch, rec.path, rec.lineno)
    if spaces is not None:
        problems += check_spaces(batch, *spaces, rec.path, rec.lineno)
    return problems


# Rules that are warnings: the file is valid, but some use of it will mislead.
WARNING_RULES = frozenset({"behaviour_prob"})


def behaviour_warning(batch: SampleBatch, path: str, line: int) -> Problem | None:
    """A ``behaviour_prob`` warning when the batch's behaviour probabilities are degenerate
    (see :func:`offrl.estimators.base.degenerate_behaviour`)."""
    from offrl.estimators.base import behaviour_probs, degenerate_behaviour, degenerate_warning

    probs = behaviour_probs(batch)
    if probs is None or "obs" not in batch or "actions" not in batch:
        return None
    why = degenerate_behaviour(batch["obs"], batch["actions"], probs)
    return None if why is None else Problem(path, line, "behaviour_prob", degenerate_warning(why))


def validate_paths(
    paths: list[str], spaces: tuple[Any, Any] | None = None, on_bytes: ProgressFn | None = None
) -> Iterator[Problem]:
    """Every problem in ``paths`` (files, dirs, globs), streaming, in file and line order."""
    tracker = EpisodeTracker()
    files = resolve_sources(paths)
    with_records: set[str] = set()
    for rec in iter_records(files, decode=False, on_bytes=on_bytes):
        with_records.add(rec.path)
        yield from check_record(rec, tracker, spaces)
    for path in files:
        if path not in with_records:
            yield Problem(path, None, "record", "the file holds no JSON record (it is empty)")
