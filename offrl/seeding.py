"""Every random stream of a run, derived from one seed and named here, once.

A stream is the child ``spawn_key=(stream, *key)`` of ``numpy.random.SeedSequence(seed)``:
the same as ``SeedSequence(seed).spawn(...)[stream]`` further split by ``key`` (a worker
index, an iteration ...). Two components therefore share a stream only if they name
the same :class:`Stream` with the same key; add a member below for a new component.
"""

from __future__ import annotations

import enum

import numpy as np


class Stream(enum.IntEnum):
    """The random streams of offrl; the value is the stream's branch of the seed's tree."""

    MODEL_INIT = 1  # torch initialisation of the learner's networks
    LEARNER = 2  # the learner's own draws (PG's minibatch order)
    EXPLORATION = 3  # DQN's epsilon-greedy draws
    REPLAY = 4  # DQN's replay-buffer sampling
    SHUFFLE = 5  # shuffle_buffer_size: the order rows of the input come out in
    INPUT_MIX = 6  # which source of an input mix each batch is drawn from
    READER = 7  # a reader's file order; the reader splits it by worker index
    SAMPLER = 8  # the training process's own sampler (input "sampler", no workers)
    SIMULATION = 9  # the sampler behind the "simulation" estimator
    WORKER = 10  # a rollout worker (key: worker index, restart); the root of its own tree
    ACTIONS = 11  # inside a sampler: its stochastic action draws
    ENV_RESET = 12  # inside a sampler: the seed of its vector env's first reset
    EVALUATION = 13  # evaluation episodes (key: training iteration)
    ESTIMATOR = 14  # an off-policy estimator (key: its position in input_evaluation)
    BOOTSTRAP = 15  # dm/dr bootstrap resamples (key: fit, 0) and refits (key: fit, b + 1)
    TORCH_GLOBAL = 16  # torch's global generator in the training process


def seed_sequence(seed: int, stream: Stream, *key: int) -> np.random.SeedSequence:
    """The SeedSequence of ``stream`` (split by ``key``) under the root ``seed``."""
    return np.random.SeedSequence(seed, spawn_key=(int(stream), *key))


def generator(seed: int, stream: Stream, *key: int) -> np.random.Generator:
    """A numpy Generator drawing from ``stream``."""
    return np.random.default_rng(seed_sequence(seed, stream, *key))


def int_seed(seed: int, stream: Stream, *key: int) -> int:
    """A 32-bit integer seed for ``stream``, for APIs that take an int (torch, env.reset)."""
    return int(seed_sequence(seed, stream, *key).generate_state(1)[0])
