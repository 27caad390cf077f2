"""Replay buffers for off-policy learners: uniform, and prioritized with a sum tree.

Both store named columns (numpy arrays, first dimension = row) in a ring of
``capacity`` rows and are vectorised: adding or sampling a batch is a handful of
numpy operations, never a Python loop over rows.

Prioritized replay (Schaul et al. 2016): row i is drawn with probability
``P(i) = p_i^alpha / sum_j p_j^alpha`` and weighted by
``w_i = (N * P(i))^-beta / max_j w_j = (p_i^alpha / min_j p_j^alpha)^-beta``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch


class SumTree:
    """Binary tree whose every node holds the sum of its two children; leaves are priorities.

    The tree lives in one array of length ``2 * P`` (P = capacity rounded up to a
    power of two): node k has children 2k and 2k+1, leaf i sits at ``P + i``.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.leaf_base = 1 << max(0, (capacity - 1).bit_length())
        self.depth = self.leaf_base.bit_length() - 1
        self.nodes = np.zeros(2 * self.leaf_base, dtype=np.float64)

    @property
    def total(self) -> float:
        """Sum of every leaf."""
        return float(self.nodes[1])

    @property
    def leaves(self) -> np.ndarray:
        """The priorities, shape (capacity,) (a view)."""
        return self.nodes[self.leaf_base : self.leaf_base + self.capacity]

    def update(self, index: np.ndarray, values: np.ndarray) -> None:
        """Set leaves ``index`` (K,) to ``values`` (K,) and refresh their ancestors."""
        node = np.asarray(index, dtype=np.int64) + self.leaf_base
        self.nodes[node] = values  # with duplicate indices the last value wins
        for _ in range(self.depth):
            # Duplicate parents just compute the same sum twice: cheaper than np.unique.
            node >>= 1
            self.nodes[node] = self.nodes[2 * node] + self.nodes[2 * node + 1]

    def find(self, prefix: np.ndarray) -> np.ndarray:
        """Leaf i (K,) per prefix sum u (K,) with sum(leaves[:i]) <= u < sum(leaves[:i+1])."""
        u = np.array(prefix, dtype=np.float64)
        node = np.ones(len(u), dtype=np.int64)
        for _ in range(self.depth):
            left = self.nodes[2 * node]
            go_right = u >= left
            u -= np.where(go_right, left, 0.0)
            node = 2 * node + go_right
        return node - self.leaf_base


class ReplayBuffer:
    """Uniform replay: a ring of ``capacity`` rows of named columns."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.columns: dict[str, np.ndarray] = {}
        self.size = 0
        self.pos = 0

    def __len__(self) -> int:
        return self.size

    def add(self, rows: Mapping[str, np.ndarray]) -> np.ndarray:
        """Append rows (every column (K, ...)); returns the K slots written, oldest overwritten."""
        count = len(next(iter(rows.values())))
        if not self.columns:
            self.columns = {
                name: np.zeros((self.capacity, *np.shape(v)[1:]), dtype=np.asarray(v).dtype)
                for name, v in rows.items()
            }
        if count > self.capacity:  # only the newest rows fit
            rows = {name: np.asarray(v)[-self.capacity :] for name, v in rows.items()}
            count = self.capacity
        slots = (self.pos + np.arange(count)) % self.capacity
        for name, store in self.columns.items():
            store[slots] = rows[name]
        self.pos = int((self.pos + count) % self.capacity)
        self.size = min(self.size + count, self.capacity)
        return slots

    def sample(
        self, n: int, rng: np.random.Generator, beta: float = 0.0
    ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
        """``n`` rows drawn uniformly with replacement: (columns, slots, weights of 1)."""
        slots = rng.integers(0, self.size, size=n)
        return self._gather(slots), slots, np.ones(n, dtype=np.float32)

    def update_priorities(self, slots: np.ndarray, td_errors: np.ndarray) -> None:
        """Uniform replay has no priorities; kept so learners need not branch."""

    def _gather(self, slots: np.ndarray) -> dict[str, np.ndarray]:
        return {name: store[slots] for name, store in self.columns.items()}

    def get_state(self) -> dict[str, Any]:
        """Stored rows and ring position as tensors (loadable with ``weights_only=True``)."""
        return {
            "size": self.size,
            "pos": self.pos,
            "columns": {
                name: torch.from_numpy(store[: self.size].copy())
                for name, store in self.columns.items()
            },
        }

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`get_state` returned."""
        self.size, self.pos = int(state["size"]), int(state["pos"])
        self.columns = {}
        for name, saved in state["columns"].items():
            arr = saved.numpy()
            store = np.zeros((self.capacity, *arr.shape[1:]), dtype=arr.dtype)
            store[: len(arr)] = arr
            self.columns[name] = store


class PrioritizedReplayBuffer(ReplayBuffer):
    """Proportional prioritized replay; new rows get the highest priority seen so far."""

    def __init__(self, capacity: int, alpha: float, eps: float) -> None:
        super().__init__(capacity)
        self.alpha = alpha
        self.eps = eps
        self.tree = SumTree(capacity)
        self.max_priority = 1.0  # already raised to alpha

    def add(self, rows: Mapping[str, np.ndarray]) -> np.ndarray:
        slots = super().add(rows)
        self.tree.update(slots, np.full(len(slots), self.max_priority))
        return slots

    def sample(
        self, n: int, rng: np.random.Generator, beta: float = 0.0
    ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
        """``n`` rows drawn in proportion to priority: (columns, slots, importance weights).

        Stratified: the i-th draw is uniform in the i-th of n equal slices of the
        total priority, which covers the distribution with less variance.
        """
        total = self.tree.total
        prefix = (np.arange(n) + rng.random(n)) * (total / n)
        # Rounding can push a prefix onto an empty padding leaf: clamp to stored rows.
        slots = np.minimum(self.tree.find(np.minimum(prefix, total * (1 - 1e-12))), self.size - 1)
        leaves = self.tree.leaves[: self.size]
        prio = leaves[slots]
        weights = (prio / leaves.min()) ** -beta
        return self._gather(slots), slots, weights.astype(np.float32)

    def update_priorities(self, slots: np.ndarray, td_errors: np.ndarray) -> None:
        """Set priorities of ``slots`` to ``(|td_error| + eps) ** alpha``."""
        prio = (np.abs(td_errors).astype(np.float64) + self.eps) ** self.alpha
        self.tree.update(slots, prio)
        self.max_priority = max(self.max_priority, float(prio.max()))

    def get_state(self) -> dict[str, Any]:
        state = super().get_state()
        state["priorities"] = torch.from_numpy(self.tree.leaves[: self.size].copy())
        state["max_priority"] = self.max_priority
        return state

    def set_state(self, state: Mapping[str, Any]) -> None:
        super().set_state(state)
        self.tree = SumTree(self.capacity)
        self.tree.update(np.arange(self.size), state["priorities"].numpy())
        self.max_priority = float(state["max_priority"])
