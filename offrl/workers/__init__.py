"""Parallel rollout workers: N processes sample (or read) for one learner.

``core`` is what runs inside a worker process; ``local`` is the learner's view of
N local processes (``WorkerSet``); ``offrl/workers/ray.py`` runs the same core as
Ray actors.
"""

from offrl.workers.core import (
    _BUNDLE_RECORDS,
    SAMPLER,
    Fragment,
    RolloutWorker,
    WorkerFailure,
    WorkerSpec,
    acting_weights,
    describe_exit,
    load_acting_weights,
    merge_metrics,
    sync_fragment_length,
    worker_context,
    worker_main,
    worker_seed,
    worker_specs,
)
from offrl.workers.local import WorkerSet, WorkerSource

__all__ = [
    "_BUNDLE_RECORDS",
    "SAMPLER",
    "Fragment",
    "RolloutWorker",
    "WorkerFailure",
    "WorkerSet",
    "WorkerSource",
    "WorkerSpec",
    "acting_weights",
    "describe_exit",
    "load_acting_weights",
    "merge_metrics",
    "sync_fragment_length",
    "worker_context",
    "worker_main",
    "worker_seed",
    "worker_specs",
]
