"""ShuffledInput: a seeded permutation of the input, every row exactly once."""

from __future__ import annotations

import numpy as np
import pytest

from offrl.batch import SampleBatch
from offrl.errors import ConfigError
from offrl.io.shuffle import MappedInput, ShuffledInput


class NumberedReader:
    """Batches of consecutive row numbers with varying sizes; finite or cycling over epochs."""

    def __init__(self, sizes: list[int], epochs: int | None = 1) -> None:
        self.sizes, self.epochs = sizes, epochs
        self.calls = 0

    def next(self) -> SampleBatch:
        epoch, i = divmod(self.calls, len(self.sizes))
        if self.epochs is not None and epoch >= self.epochs:
            raise StopIteration
        self.calls += 1
        start = sum(self.sizes[:i])
        rows = np.arange(start, start + self.sizes[i])
        return SampleBatch(row=rows, eps=rows // 4)

    def metrics(self) -> dict[str, float]:
        return {"input/batches_read": float(self.calls)}


SIZES = [3, 5, 2, 7, 4, 1, 6, 3, 5, 4]  # 40 rows in 10 batches


def drain(reader: ShuffledInput) -> list[SampleBatch]:
    out = []
    while True:
        try:
            out.append(reader.next())
        except StopIteration:
            return out


@pytest.mark.parametrize("unit", ["batch", "row"])
@pytest.mark.parametrize("buffer_size", [1, 3, 10, 50])
def test_every_row_exactly_once(unit: str, buffer_size: int) -> None:
    shuffled = ShuffledInput(NumberedReader(SIZES), buffer_size, np.random.default_rng(0), unit)
    rows = np.concatenate([b["row"] for b in drain(shuffled)])
    assert sorted(rows.tolist()) == list(range(40))


def test_batch_unit_keeps_batches_whole_and_reorders_them() -> None:
    batches = drain(ShuffledInput(NumberedReader(SIZES), 10, np.random.default_rng(1)))
    firsts = [int(b["row"][0]) for b in batches]
    for b in batches:  # rows inside a batch stay contiguous and in order
        assert np.array_equal(b["row"], np.arange(b["row"][0], b["row"][0] + b.count))
    assert firsts != sorted(firsts)


def test_row_unit_mixes_rows_and_keeps_batch_sizes() -> None:
    batches = drain(ShuffledInput(NumberedReader(SIZES), 10, np.random.default_rng(1), "row"))
    assert sorted(b.count for b in batches) == sorted(SIZES)
    assert any(np.any(np.diff(b["row"]) != 1) for b in batches if b.count > 1)
    for b in batches:  # columns stay aligned row by row
        assert np.array_equal(b["eps"], b["row"] // 4)


def test_each_epoch_is_a_permutation_when_buffer_divides_it() -> None:
    reader = NumberedReader(SIZES, epochs=None)  # cycles forever
    shuffled = ShuffledInput(reader, 5, np.random.default_rng(2), "row")
    for _ in range(3):
        epoch = np.concatenate([shuffled.next()["row"] for _ in range(len(SIZES))])
        assert sorted(epoch.tolist()) == list(range(40))


def test_blocks_do_not_leak_rows_across_buffer_fills() -> None:
    # Output positions [kN, (k+1)N) hold exactly input batches [kN, (k+1)N).
    shuffled = ShuffledInput(NumberedReader(SIZES), 4, np.random.default_rng(3))
    out = drain(shuffled)
    for k in range(0, len(SIZES), 4):
        got = sorted(int(b["row"][0]) for b in out[k : k + 4])
        want = sorted(sum(SIZES[:i]) for i in range(k, min(k + 4, len(SIZES))))
        assert got == want


def test_reproducible_under_seed() -> None:
    def order(seed: int) -> list[int]:
        shuffled = ShuffledInput(NumberedReader(SIZES), 10, np.random.default_rng(seed), "row")
        return np.concatenate([b["row"] for b in drain(shuffled)]).tolist()

    assert order(5) == order(5)
    assert order(5) != order(6)


def test_metrics_pass_through_and_bad_config() -> None:
    reader = NumberedReader(SIZES)
    shuffled = ShuffledInput(reader, 3, np.random.default_rng(0))
    shuffled.next()
    assert shuffled.metrics() == {"input/batches_read": 3.0}
    with pytest.raises(ConfigError, match="shuffle_buffer_size is 0"):
        ShuffledInput(reader, 0, np.random.default_rng(0))
    with pytest.raises(ConfigError, match="one of batch, row"):
        ShuffledInput(reader, 2, np.random.default_rng(0), "episode")


def test_mapped_input_applies_function_before_shuffle() -> None:
    def add_double(b: SampleBatch) -> SampleBatch:
        out = b.copy()
        out["double"] = b["row"] * 2
        return out

    mapped = MappedInput(NumberedReader(SIZES), add_double)
    batches = drain(ShuffledInput(mapped, 10, np.random.default_rng(0), "row"))
    for b in batches:
        assert np.array_equal(b["double"], b["row"] * 2)
    assert mapped.metrics() == {"input/batches_read": 10.0}
