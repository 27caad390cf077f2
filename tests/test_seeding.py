"""Named random streams: reproducible, distinct, and the children SeedSequence.spawn makes."""

from __future__ import annotations

import numpy as np

from offrl.seeding import Stream, generator, int_seed, seed_sequence


def test_a_stream_is_the_spawned_child_of_the_run_seed() -> None:
    children = np.random.SeedSequence(7).spawn(int(Stream.SHUFFLE) + 1)
    expected = children[Stream.SHUFFLE].generate_state(4)
    assert np.array_equal(seed_sequence(7, Stream.SHUFFLE).generate_state(4), expected)


def test_streams_are_reproducible_and_distinct() -> None:
    draws = {s: generator(3, s).integers(2**62, size=4).tolist() for s in Stream}
    assert draws[Stream.LEARNER] == generator(3, Stream.LEARNER).integers(2**62, size=4).tolist()
    assert len({tuple(d) for d in draws.values()}) == len(Stream)
    assert draws[Stream.LEARNER] != draws[Stream.SHUFFLE]  # once both were [seed, 11]


def test_keys_split_a_stream_and_seeds_split_the_tree() -> None:
    workers = {int_seed(5, Stream.WORKER, i, 0) for i in range(1, 9)}
    assert len(workers) == 8
    assert int_seed(5, Stream.WORKER, 1, 1) not in workers  # a restarted worker is new
    assert int_seed(6, Stream.WORKER, 1, 0) not in workers
    assert 0 <= int_seed(5, Stream.MODEL_INIT) < 2**32
