"""Batches of experience: columns of equal length held as numpy arrays.

``SampleBatch`` is the unit every part of offrl passes around: the rollout
produces it, writers store it, readers return it, learners consume it.
Column names are RLlib's (see FORMAT.md), exposed as constants below.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np

# Column-name constants (FORMAT.md, "Columns").
OBS = "obs"
NEW_OBS = "new_obs"
ACTIONS = "actions"
REWARDS = "rewards"
DONES = "dones"
TERMINATEDS = "terminateds"
TRUNCATEDS = "truncateds"
EPS_ID = "eps_id"
T = "t"
AGENT_INDEX = "agent_index"
UNROLL_ID = "unroll_id"
PREV_ACTIONS = "prev_actions"
PREV_REWARDS = "prev_rewards"
INFOS = "infos"
ACTION_PROB = "action_prob"
ACTION_LOGP = "action_logp"
ACTION_DIST_INPUTS = "action_dist_inputs"
Q_VALUES = "q_values"
WEIGHTS = "weights"
ADVANTAGES = "advantages"
VALUE_TARGETS = "value_targets"
VF_PREDS = "vf_preds"

# Added by the reader (never by RLlib): False on rows whose new_obs the file did not hold
# (the learner must not bootstrap from them; see io/decode.py).
NEW_OBS_VALID = "new_obs_valid"

DEFAULT_POLICY_ID = "default_policy"

KNOWN_COLUMNS = frozenset(
    {
        OBS,
        NEW_OBS,
        ACTIONS,
        REWARDS,
        DONES,
        TERMINATEDS,
        TRUNCATEDS,
        EPS_ID,
        T,
        AGENT_INDEX,
        UNROLL_ID,
        PREV_ACTIONS,
        PREV_REWARDS,
        INFOS,
        ACTION_PROB,
        ACTION_LOGP,
        ACTION_DIST_INPUTS,
        Q_VALUES,
        WEIGHTS,
        ADVANTAGES,
        VALUE_TARGETS,
        VF_PREDS,
    }
)


def _as_column(name: str, value: Any) -> np.ndarray:
    """Turn one column value into a numpy array; ``infos`` stays an object array of dicts."""
    if isinstance(value, np.ndarray):
        return value
    if name == INFOS:
        arr = np.empty(len(value), dtype=object)
        arr[:] = list(value)
        return arr
    return np.asarray(value)


class SampleBatch:
    """A batch of steps: named columns, every one a numpy array with the same first dimension.

    Behaves like a read-mostly mapping ``column -> np.ndarray``; ``len(batch)`` and
    ``batch.count`` are the number of rows (steps).
    """

    __slots__ = ("_cols",)

    def __init__(self, columns: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        source = {**columns, **kwargs} if columns and kwargs else columns or kwargs
        # Readers build one batch per ~100 rows: no per-column function call for arrays.
        cols: dict[str, np.ndarray] = {
            name: value if type(value) is np.ndarray else _as_column(name, value)
            for name, value in source.items()
        }
        if len(set(map(len, cols.values()))) > 1:
            lengths = {name: len(arr) for name, arr in cols.items()}
            raise ValueError(f"SampleBatch columns have different lengths: {lengths}")
        self._cols = cols

    @classmethod
    def from_checked(cls, columns: dict[str, np.ndarray]) -> SampleBatch:
        """A batch holding ``columns`` as they are: numpy arrays of equal length (the
        caller has checked; readers use this to skip the constructor's checks)."""
        batch = cls.__new__(cls)
        batch._cols = columns
        return batch

    # -- mapping protocol -------------------------------------------------
    def __getitem__(self, name: str) -> np.ndarray:
        return self._cols[name]

    def __setitem__(self, name: str, value: Any) -> None:
        arr = _as_column(name, value)
        if self._cols and len(arr) != self.count:
            raise ValueError(f"column {name!r} has {len(arr)} rows, batch has {self.count}")
        self._cols[name] = arr

    def __delitem__(self, name: str) -> None:
        del self._cols[name]

    def __contains__(self, name: object) -> bool:
        return name in self._cols

    def __iter__(self) -> Iterator[str]:
        return iter(self._cols)

    def __len__(self) -> int:
        return self.count

    def __repr__(self) -> str:
        return f"SampleBatch({self.count} rows: {', '.join(self._cols)})"

    def keys(self) -> Iterable[str]:
        return self._cols.keys()

    def items(self) -> Iterable[tuple[str, np.ndarray]]:
        return self._cols.items()

    def get(self, name: str, default: Any = None) -> Any:
        return self._cols.get(name, default)

    @property
    def columns(self) -> dict[str, np.ndarray]:
        """The underlying ``name -> array`` dict (not a copy)."""
        return self._cols

    @property
    def count(self) -> int:
        """Number of rows (env steps) in the batch."""
        for arr in self._cols.values():
            return len(arr)
        return 0

    # -- row operations ---------------------------------------------------
    def copy(self) -> SampleBatch:
        return SampleBatch({k: v.copy() for k, v in self._cols.items()})

    def slice(self, start: int, end: int) -> SampleBatch:
        """Rows ``start:end`` as a new batch (views, not copies)."""
        return SampleBatch({k: v[start:end] for k, v in self._cols.items()})

    def take(self, indices: np.ndarray) -> SampleBatch:
        """Rows at ``indices`` (a copy)."""
        return SampleBatch({k: v[indices] for k, v in self._cols.items()})

    @staticmethod
    def concat_samples(batches: Iterable[SampleBatch]) -> SampleBatch:
        """Concatenate batches row-wise; every batch must have the same columns."""
        batches = [b for b in batches if b.count > 0]
        if not batches:
            return SampleBatch()
        names = list(batches[0].keys())
        for b in batches[1:]:
            if set(b.keys()) != set(names):
                raise ValueError(
                    f"cannot concatenate batches with columns {sorted(names)} "
                    f"and {sorted(b.keys())}"
                )
        return SampleBatch({n: np.concatenate([b[n] for b in batches]) for n in names})

    def concat(self, other: SampleBatch) -> SampleBatch:
        return SampleBatch.concat_samples([self, other])

    def episode_bounds(self) -> list[tuple[int, int]]:
        """``[(start, end), ...]`` row ranges of consecutive rows sharing an episode.

        A new episode starts where ``eps_id`` changes or after a row whose ``dones``
        is true. Without ``eps_id`` only ``dones`` splits.
        """
        n = self.count
        if n == 0:
            return []
        starts = np.zeros(n, dtype=bool)
        starts[0] = True
        if EPS_ID in self._cols:
            eps = self._cols[EPS_ID]
            starts[1:] |= eps[1:] != eps[:-1]
        done = self.dones_column()
        if done is not None:
            starts[1:] |= done[:-1]
        idx = np.flatnonzero(starts).tolist()
        return list(zip(idx, idx[1:] + [n], strict=True))

    def split_by_episode(self) -> list[SampleBatch]:
        """One batch per (part of an) episode, in row order."""
        return [self.slice(s, e) for s, e in self.episode_bounds()]

    def dones_column(self) -> np.ndarray | None:
        """``dones`` if present, else ``terminateds | truncateds``, else None."""
        if DONES in self._cols:
            return self._cols[DONES].astype(bool, copy=False)
        if TERMINATEDS in self._cols:
            done = self._cols[TERMINATEDS].astype(bool)
            if TRUNCATEDS in self._cols:
                done = done | self._cols[TRUNCATEDS].astype(bool)
            return done
        return None


class MultiAgentBatch:
    """Batches keyed by policy id, as RLlib 2.x writes even for single-agent runs.

    ``count`` is the number of env steps the batch covers.
    """

    __slots__ = ("policy_batches", "count")

    def __init__(self, policy_batches: Mapping[str, SampleBatch], count: int) -> None:
        self.policy_batches: dict[str, SampleBatch] = dict(policy_batches)
        self.count = int(count)

    @staticmethod
    def wrap_single(batch: SampleBatch) -> MultiAgentBatch:
        """The single-agent batch under ``default_policy``."""
        return MultiAgentBatch({DEFAULT_POLICY_ID: batch}, batch.count)

    def as_single_agent(self) -> SampleBatch:
        """The batch of the only policy; a ValueError if there are several."""
        if len(self.policy_batches) != 1:
            raise ValueError(
                f"expected one policy, found {sorted(self.policy_batches)}; "
                "offrl trains single-agent policies only"
            )
        return next(iter(self.policy_batches.values()))

    def __repr__(self) -> str:
        return f"MultiAgentBatch(count={self.count}, policies={sorted(self.policy_batches)})"
