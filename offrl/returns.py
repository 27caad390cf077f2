"""Pure return math on 1-D arrays of one batch (rows in time order, episodes contiguous).

Shapes: every array argument is (T,), one entry per row; episode boundaries come
from ``dones`` (the episode ended after this row) and optionally ``eps_id``.
"""

from __future__ import annotations

import numpy as np


def discounted_returns(
    rewards: np.ndarray,
    dones: np.ndarray,
    gamma: float,
    bootstrap: np.ndarray | None = None,
) -> np.ndarray:
    """G_t = r_t + gamma * G_{t+1}, restarting after every ``dones[t]``.

    ``bootstrap`` (T,) is the value added after the last row of a segment that did
    not end (a truncated episode or a fragment cut mid-episode): it is read at rows
    where ``dones`` is false and the next row starts another segment or the batch
    ends. Without it those segments bootstrap from 0 (RLlib's vanilla PG).
    """
    rewards = np.asarray(rewards, dtype=np.float64)
    dones = np.asarray(dones, dtype=bool)
    n = len(rewards)
    out = np.empty(n, dtype=np.float64)
    running = 0.0
    for t in range(n - 1, -1, -1):
        if dones[t]:
            running = 0.0
        elif t == n - 1 and bootstrap is not None:
            running = float(bootstrap[t])
        running = rewards[t] + gamma * running
        out[t] = running
    return out


def discounted_returns_by_episode(
    rewards: np.ndarray,
    dones: np.ndarray,
    eps_id: np.ndarray,
    gamma: float,
    bootstrap: np.ndarray | None = None,
) -> np.ndarray:
    """:func:`discounted_returns` where a change of ``eps_id`` also ends a segment.

    A segment that ends by an ``eps_id`` change without ``dones`` (a fragment cut)
    bootstraps from ``bootstrap`` at its last row (0 without it).
    """
    n = len(rewards)
    out = np.empty(n, dtype=np.float64)
    cuts = np.flatnonzero(np.asarray(eps_id)[1:] != np.asarray(eps_id)[:-1]) + 1
    for start, end in zip([0, *cuts.tolist()], [*cuts.tolist(), n], strict=True):
        boot = None if bootstrap is None else np.asarray(bootstrap)[start:end]
        out[start:end] = discounted_returns(rewards[start:end], dones[start:end], gamma, boot)
    return out


def n_step_targets(
    rewards: np.ndarray,
    terminateds: np.ndarray,
    segment_end: np.ndarray,
    gamma: float,
    n: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n-step returns for TD learning.

    For row t, with k = the number of rows from t up to and including the first
    row that is terminated or ends its segment, capped at n::

        R_t = sum_{i<k} gamma^i r_{t+i}
        next_index_t = t + k - 1        # row whose new_obs is bootstrapped from
        discount_t = gamma^k if not terminateds[next_index_t] else 0

    ``segment_end[t]`` marks the last row of an episode part in the batch
    (truncated, fragment cut or episode end): n-step sums never cross it.
    Returns ``(R, next_index, discount)``, shapes (T,), (T,) int64, (T,).
    """
    rewards = np.asarray(rewards, dtype=np.float64)
    term = np.asarray(terminateds, dtype=bool)
    stop = term | np.asarray(segment_end, dtype=bool)
    size = len(rewards)
    ret = np.zeros(size, dtype=np.float64)
    next_index = np.empty(size, dtype=np.int64)
    discount = np.empty(size, dtype=np.float64)
    for t in range(size):
        acc, k = 0.0, 0
        while True:
            acc += gamma**k * rewards[t + k]
            k += 1
            if stop[t + k - 1] or k == n or t + k == size:
                break
        ret[t] = acc
        next_index[t] = t + k - 1
        discount[t] = 0.0 if term[t + k - 1] else gamma**k
    return ret, next_index, discount
