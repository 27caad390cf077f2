"""``offrl data inspect``: summarise a dataset in one streaming pass.

The summary holds counts (files, lines, records, rows, complete and partial
episodes), return and length statistics, every column's dtype / per-row shape /
storage codec, the action histogram, behaviour-probability coverage and which
RLlib variants were seen. Memory grows with the number of episodes, not rows.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from offrl.batch import (
    ACTION_LOGP,
    ACTION_PROB,
    ACTIONS,
    DONES,
    EPS_ID,
    REWARDS,
    TERMINATEDS,
    SampleBatch,
)
from offrl.datatools import MULTI_AGENT_BATCH, ProgressFn, Record, iter_records
from offrl.io.codecs import NPY_MAGIC, CodecError, decompress_string, is_compressed

_MAX_HISTOGRAM_BINS = 64
DERIVED = "derived by reader"  # a column the file lacks, e.g. terminateds from dones
_PERCENTILES = (5, 25, 50, 75, 95)


def _payload_head(value: str) -> bytes:
    """The first bytes inside a ``BCJNG...`` string's LZ4 frame (b"" if unreadable)."""
    try:
        return bytes(decompress_string(value)[:8])  # bounded: never what a header claims
    except CodecError:
        return b""


def column_codec(value: Any) -> str:
    """How a raw column value is stored: ``plain`` or which compressed encoding."""
    per_row = isinstance(value, list) and bool(value) and is_compressed(value[0])
    text = value[0] if per_row else value
    if not is_compressed(text):
        return "plain"
    head = _payload_head(text)
    if head.startswith(NPY_MAGIC):
        codec = "offrl-npy"
    elif head[:1] == b"\x80":
        codec = "rllib-pickle"
    elif head:
        codec = "pyarrow-serialize(2019, unreadable)"
    else:
        codec = "corrupt"
    if text.startswith(("b'", 'b"')):
        codec += "(bytes-repr)"
    return codec + (",per-row" if per_row else "")


@dataclass
class _Episode:
    ret: float = 0.0
    length: int = 0
    done: bool = False


@dataclass
class Inspector:
    """Accumulates a dataset summary record by record (feed it with :meth:`add`)."""

    files: dict[str, int] = field(default_factory=dict)  # path -> bytes of its lines
    lines: int = 0
    corrupt_lines: int = 0
    bad_records: list[str] = field(default_factory=list)
    rows: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    variants: set[str] = field(default_factory=set)
    columns: dict[str, dict[str, Any]] = field(default_factory=dict)
    actions: Counter[Any] = field(default_factory=Counter)
    continuous_actions: bool = False
    prob_rows: int = 0
    logp_rows: int = 0
    episodes: dict[Any, _Episode] = field(default_factory=dict)
    _anon: int = 0  # key of the current episode in data without eps_id
    _codec_seen: set[tuple[str, str]] = field(default_factory=set)

    def add(self, rec: Record) -> None:
        """Fold one record into the summary."""
        self.files[rec.path] = self.files.get(rec.path, 0) + rec.nbytes
        self.lines += 1
        if rec.error is not None:
            if rec.corrupt:
                self.corrupt_lines += 1
            else:
                self.bad_records.append(str(rec.error))
            return
        if rec.batch is None:  # read with decode=False: nothing to count
            return
        self.kinds[rec.kind] += 1
        self._note_variants(rec)
        self._note_columns(rec.path, rec.raw, rec.batch)
        self._note_steps(rec.batch)

    def _note_variants(self, rec: Record) -> None:
        if rec.kind == MULTI_AGENT_BATCH:
            self.variants.add("MultiAgentBatch/default_policy (RLlib 2.x)")
        else:
            self.variants.add("SampleBatch")
        if TERMINATEDS in rec.raw:
            self.variants.add("terminateds/truncateds (RLlib 2.3+)")
        elif DONES in rec.raw:
            self.variants.add("dones (pre-gymnasium)")

    def _note_columns(self, path: str, raw: Mapping[str, Any], batch: SampleBatch) -> None:
        for name, arr in batch.items():
            info = self.columns.get(name)
            if info is None:
                info = {"dtype": str(arr.dtype), "shape": list(arr.shape[1:]), "codecs": []}
                self.columns[name] = info
            if name not in raw:
                info["codecs"] = [DERIVED]
                continue
            # Decompressing a payload head costs: look once per file and column.
            if (path, name) not in self._codec_seen:
                self._codec_seen.add((path, name))
                codec = column_codec(raw[name])
                if codec not in info["codecs"]:
                    info["codecs"].append(codec)

    def _note_steps(self, batch: SampleBatch) -> None:
        n = batch.count
        self.rows += n
        if ACTION_PROB in batch:
            self.prob_rows += n
        if ACTION_LOGP in batch:
            self.logp_rows += n
        actions = batch[ACTIONS]
        if actions.dtype.kind in "iu" and actions.ndim == 1:
            self.actions.update(actions.tolist())
        else:
            self.continuous_actions = True
        done = batch.dones_column()
        rewards = batch[REWARDS].astype(np.float64)
        for start, end in batch.episode_bounds():
            key = self._episode_key(batch, start)
            ep = self.episodes.setdefault(key, _Episode())
            ep.ret += float(rewards[start:end].sum())
            ep.length += end - start
            ep.done = bool(done[end - 1]) if done is not None else False
            if EPS_ID not in batch and ep.done:
                self._anon += 1

    def _episode_key(self, batch: SampleBatch, start: int) -> Any:
        if EPS_ID in batch:
            return int(batch[EPS_ID][start])
        # Without ids an unfinished segment continues into the next record.
        return ("anon", self._anon)

    def summary(self) -> dict[str, Any]:
        """The summary as a JSON-ready dict."""
        complete = [e for e in self.episodes.values() if e.done]
        total_bytes = sum(self.files.values())
        return {
            "files": len(self.files),
            "paths": sorted(self.files),
            "bytes": total_bytes,
            "lines": self.lines,
            "corrupt_lines": self.corrupt_lines,
            "bad_records": self.bad_records,
            "records": sum(self.kinds.values()),
            "record_types": dict(self.kinds),
            "rows": self.rows,
            "bytes_per_row": round(total_bytes / self.rows, 1) if self.rows else None,
            "episodes": len(self.episodes),
            "episodes_complete": len(complete),
            "episodes_partial": len(self.episodes) - len(complete),
            "episode_return": stats([e.ret for e in complete]),
            "episode_length": stats([float(e.length) for e in complete]),
            "columns": self.columns,
            "actions": self._action_summary(),
            "behaviour_probabilities": {
                "action_prob_rows": self.prob_rows,
                "action_logp_rows": self.logp_rows,
                "coverage": round(max(self.prob_rows, self.logp_rows) / self.rows, 4)
                if self.rows
                else 0.0,
            },
            "compressed": sorted(
                n
                for n, c in self.columns.items()
                if any(x not in ("plain", DERIVED) for x in c["codecs"])
            ),
            "variants": sorted(self.variants),
        }

    def _action_summary(self) -> dict[str, Any]:
        if self.continuous_actions or len(self.actions) > _MAX_HISTOGRAM_BINS:
            return {"kind": "continuous or many-valued", "histogram": None}
        return {
            "kind": "discrete",
            "histogram": {str(k): v for k, v in sorted(self.actions.items())},
        }


def stats(values: list[float]) -> dict[str, float] | None:
    """mean/min/max and percentiles of ``values``; None when empty."""
    if not values:
        return None
    arr = np.asarray(values, dtype=np.float64)
    out = {"mean": float(arr.mean()), "min": float(arr.min()), "max": float(arr.max())}
    for p, v in zip(_PERCENTILES, np.percentile(arr, _PERCENTILES), strict=True):
        out[f"p{p}"] = float(v)
    return out


def inspect_paths(paths: list[str], on_bytes: ProgressFn | None = None) -> dict[str, Any]:
    """Summarise every record of ``paths`` (files, dirs, globs) in one streaming pass."""
    inspector = Inspector()
    for rec in iter_records(paths, on_bytes=on_bytes):
        inspector.add(rec)
    return inspector.summary()
