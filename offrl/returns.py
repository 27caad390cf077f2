"""Pure return math on 1-D arrays of one batch (rows in time order, episodes contiguous).

Shapes: every array argument is (T,), one entry per row; where episodes (or their
parts) end is given as boolean masks (``terminateds``, ``segment_end``).
"""

from __future__ import annotations

import numpy as np


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
    idx = np.arange(size)
    # First stopping row at or after t (the batch's last row stops everything).
    stops_at = np.where(stop, idx, size - 1)
    first_stop = np.minimum.accumulate(stops_at[::-1])[::-1] if size else stops_at
    next_index = np.minimum(idx + n - 1, first_stop).astype(np.int64)
    k = next_index - idx + 1
    ret = np.zeros(size, dtype=np.float64)
    for i in range(n):  # n is small: n vectorised passes, not T python steps
        ret += np.where(i < k, gamma**i * rewards[np.minimum(idx + i, size - 1)], 0.0)
    discount = np.where(term[next_index], 0.0, gamma ** k.astype(np.float64)) if size else ret
    return ret, next_index, discount


def segment_discounted_sums(
    x: np.ndarray,
    segment_end: np.ndarray,
    discount: float,
    bootstrap: np.ndarray | None = None,
) -> np.ndarray:
    """Vectorised y_t = x_t + discount * y_{t+1} within segments, y after a segment = bootstrap.

    Shapes: ``x``, ``segment_end``, ``bootstrap`` (T,). ``segment_end[t]`` marks the last
    row of a segment (the last row of the batch always ends one); at such a row the
    recursion continues from ``bootstrap[t]`` (0 without it). With ``x`` = rewards and
    ``discount`` = gamma this is the discounted return; with ``x`` = TD errors and
    ``discount`` = gamma * lambda it is GAE. Returns float64 (T,).
    """
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    if n == 0:
        return np.zeros(0, dtype=np.float64)
    end = np.asarray(segment_end, dtype=bool).copy()
    end[-1] = True
    boot = np.zeros(n) if bootstrap is None else np.asarray(bootstrap, dtype=np.float64)
    ends = np.flatnonzero(end)
    lengths = np.diff(ends, prepend=-1)
    longest = int(lengths.max())
    # Few long segments (offline files of whole episodes): a scalar loop over Python
    # floats beats `longest` vector steps; many short ones (live fragments): vectorise.
    if longest * 16 > n:
        return _scalar_segment_sums(x.tolist(), end.tolist(), boot.tolist(), discount)
    seg = np.repeat(np.arange(len(ends)), lengths)
    back = np.repeat(ends, lengths) - np.arange(n)  # distance from the segment's last row
    xs = np.zeros((longest, len(ends)))
    xs[back, seg] = x
    ys = np.empty_like(xs)
    prev = boot[ends]
    for k in range(longest):
        np.multiply(prev, discount, out=ys[k])
        ys[k] += xs[k]
        prev = ys[k]
    return ys[back, seg]


def _scalar_segment_sums(
    x: list[float], end: list[bool], boot: list[float], discount: float
) -> np.ndarray:
    """Reference loop of :func:`segment_discounted_sums` on Python lists."""
    out = [0.0] * len(x)
    running = 0.0
    for t in range(len(x) - 1, -1, -1):
        if end[t]:
            running = boot[t]
        running = x[t] + discount * running
        out[t] = running
    return np.asarray(out, dtype=np.float64)
