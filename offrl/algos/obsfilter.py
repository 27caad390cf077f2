"""Running observation normalisation: RLlib's ``observation_filter: "MeanStdFilter"``.

The learners keep one :class:`MeanStdFilter` as part of the policy: their networks see
``clip((x - mean) / (std + 1e-8), -10, 10)`` of the preprocessed flat observation ``x``.
Unlike RLlib, which updates the statistics while sampling and writes filtered
observations into its output files, offrl folds a batch's observations in at the end of
``learn`` (after the gradient steps) and filters only at the network input: experience
files keep the unfiltered observations, and the statistics change between updates only.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from offrl.errors import ConfigError
from offrl.preprocess import flat_size, is_image

CLIP = 10.0
EPS = 1e-8


class MeanStdFilter:
    """Running mean and sample variance of flat observations (N, dim), in float64.

    ``update`` merges a batch with Chan et al.'s parallel formula, so the statistics do
    not depend on how the rows were split into batches. With fewer than 2 rows seen the
    filter is the identity (mean 0, std 1, no clipping).
    """

    def __init__(self, dim: int, what: str = "observation filter") -> None:
        self.dim, self.what = dim, what
        self.count = 0
        self.mean = np.zeros(dim)
        self.m2 = np.zeros(dim)
        self._cache()

    @property
    def std(self) -> np.ndarray:
        """Sample standard deviation sqrt(M2 / (count - 1)) (dim,); ones while count < 2."""
        if self.count < 2:
            return np.ones(self.dim)
        return np.sqrt(self.m2 / (self.count - 1))

    def update(self, x: np.ndarray) -> None:
        """Fold the rows of ``x`` (N, ...) into the statistics (Chan et al. 1979):
        delta = mean_b - mean, mean += delta * n_b / n, M2 += M2_b + delta^2 * n_a * n_b / n."""
        x = np.asarray(x, dtype=np.float64).reshape(-1, self.dim)
        n_b = len(x)
        if n_b == 0:
            return
        mean_b = x.mean(axis=0)
        m2_b = np.square(x - mean_b).sum(axis=0)
        n = self.count + n_b
        delta = mean_b - self.mean
        self.mean = self.mean + delta * (n_b / n)
        self.m2 = self.m2 + m2_b + np.square(delta) * (self.count * n_b / n)
        self.count = n
        self._cache()

    def _cache(self) -> None:
        """float32 mean and denominator, so that filtering costs one subtract and one divide."""
        self._mean32 = self.mean.astype(np.float32)
        self._den32 = (self.std + EPS).astype(np.float32)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """``clip((x - mean) / (std + 1e-8), -10, 10)`` as float32 (N, dim); ``x`` itself
        while count < 2."""
        if self.count < 2:
            return x
        out = (np.asarray(x, dtype=np.float32) - self._mean32) / self._den32
        return np.clip(out, -CLIP, CLIP, out=out)

    @property
    def rms(self) -> np.ndarray:
        """Root mean square of every row seen, sqrt(mean^2 + M2 / count) (dim,); ones if none."""
        if self.count == 0:
            return np.ones(self.dim)
        return np.sqrt(np.square(self.mean) + self.m2 / self.count)

    def state(self) -> dict[str, Any]:
        """Plain python numbers and lists: checkpoints load with ``weights_only=True``."""
        return {"count": self.count, "mean": self.mean.tolist(), "m2": self.m2.tolist()}

    def load_state(self, state: dict[str, Any] | None) -> None:
        """Restore :meth:`state`; ``None`` (a checkpoint from before the filter) resets it."""
        if state is None:
            state = MeanStdFilter(self.dim, self.what).state()
        mean = np.asarray(state["mean"], dtype=np.float64)
        m2 = np.asarray(state["m2"], dtype=np.float64)
        if mean.shape != (self.dim,) or m2.shape != (self.dim,):
            raise ValueError(
                f"{self.what} statistics of width {mean.shape}; this policy expects {self.dim}"
            )
        count = int(state["count"])
        if count < 0 or not (np.isfinite(mean).all() and np.isfinite(m2).all() and (m2 >= 0).all()):
            raise ValueError(
                f"{self.what} statistics invalid: need count >= 0, finite mean and M2 >= 0"
            )
        self.count, self.mean, self.m2 = count, mean, m2
        self._cache()


def make_filter(name: str, observation_space: gym.Space) -> MeanStdFilter | None:
    """The learner's filter for config ``observation_filter`` (None for NoFilter); the
    config has checked the name (``offrl.config.OBSERVATION_FILTERS``)."""
    if name == "NoFilter":
        return None
    if is_image(observation_space):
        raise ConfigError(
            f"config key 'observation_filter': {name} is for flat observations, and this env's "
            f"are images {observation_space}, which offrl already scales by 1/255; "
            'remove the key or set it to "NoFilter"'
        )
    return MeanStdFilter(flat_size(observation_space))


def load_filter_state(
    obs_filter: MeanStdFilter | None,
    state: dict[str, Any] | None,
    setting: str = '"observation_filter": "MeanStdFilter", this run has "NoFilter"',
) -> None:
    """Restore a learner's statistics from a checkpoint or from acting weights.

    A state without statistics (older offrl) resets them to the identity; statistics for a
    policy without them are a mismatch (its networks were trained on normalised inputs or
    targets, ``setting`` says which), reported as a ValueError that checkpoint loading
    turns into words.
    """
    if obs_filter is not None:
        obs_filter.load_state(state)
    elif state is not None:
        raise ValueError(f"this checkpoint was trained with {setting}")
