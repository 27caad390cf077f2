"""Where the trainer's batches come from: a sampler, a checked reader, or a mix of them.

:class:`TrainingSource` is what :class:`~offrl.trainer.Run` draws from: ``next()``
returns ``(batch, live)``, ``live`` meaning sampled now (so only live batches are
written to ``output``). ``offrl/wiring.py`` builds these from the ``input`` setting.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from offrl.batch import SampleBatch
from offrl.io.specs import SAMPLER
from offrl.rollout import Sampler


class SamplerSource:
    """Live experience from a :class:`Sampler`."""

    def __init__(self, sampler: Sampler) -> None:
        self.sampler = sampler

    def next(self) -> SampleBatch:
        return self.sampler.next()


class OfflineSource:
    """Batches from an InputReader, checked against the env's spaces."""

    def __init__(self, reader: Any, observation_space: Any, action_space: Any, where: str) -> None:
        from offrl.spaces import check_batch_spaces

        self.reader = reader
        self._check = check_batch_spaces
        self.spaces = (observation_space, action_space)
        self.where = where

    def next(self) -> SampleBatch:
        batch = self.reader.next()
        position = getattr(self.reader, "position", None)
        where = f"{position[0]}:{position[1]}" if position else self.where
        return self._check(batch, *self.spaces, where=where)  # integer obs made one-hot

    def metrics(self) -> dict[str, Any]:
        metrics = getattr(self.reader, "metrics", None)
        return dict(metrics()) if callable(metrics) else {}


class TrainingSource:
    """The trainer's view: ``next() -> (batch, live)`` over one source or a mix of sources."""

    def __init__(
        self,
        sources: Mapping[str, Any],
        probs: Mapping[str, float] | None,
        rng: np.random.Generator,
    ) -> None:
        self.sources = dict(sources)
        self.mixed = None
        if probs is not None:
            from offrl.io.mixed import MixedInput

            self.mixed = MixedInput(self.sources, probs, rng)
        self.only = next(iter(self.sources)) if len(self.sources) == 1 else None

    def next(self) -> tuple[SampleBatch, bool]:
        if self.mixed is not None:
            batch = self.mixed.next()
            return batch, self.mixed.last_source == SAMPLER
        assert self.only is not None  # one source when not mixed (built below)
        return self.sources[self.only].next(), self.only == SAMPLER

    def metrics(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for src in self.sources.values():
            metrics = getattr(src, "metrics", None)
            if callable(metrics) and not isinstance(src, SamplerSource):
                out.update(metrics())
        if self.mixed is not None:
            out.update(self.mixed.metrics())
        return out
