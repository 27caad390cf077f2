"""MixedInput: probability checks, achieved proportions, provenance of each batch."""

from __future__ import annotations

import math

import numpy as np
import pytest

from offrl.batch import SampleBatch
from offrl.errors import ConfigError
from offrl.io.mixed import MixedInput
from offrl.io.specs import normalize_mix


class ConstReader:
    """Returns batches of ``rows`` rows whose obs all equal ``tag``."""

    def __init__(self, tag: int, rows: int) -> None:
        self.tag, self.rows = tag, rows

    def next(self) -> SampleBatch:
        return SampleBatch(obs=np.full(self.rows, self.tag), rewards=np.zeros(self.rows))


def test_normalize_accepts_exact_and_rounded_sums() -> None:
    assert normalize_mix({"a": 0.5, "b": 0.5}) == {"a": 0.5, "b": 0.5}
    out = normalize_mix({"a": 1 / 3 + 5e-7, "b": 1 / 3, "c": 1 / 3})  # sum = 1 + 5e-7
    assert math.isclose(sum(out.values()), 1.0, abs_tol=1e-15)
    assert out["a"] > out["b"]


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ({"a": 0.4, "b": 0.3}, "sum to 0.7; they must sum to 1"),
        ({"a": 0.7, "b": 0.7}, "sum to 1.4"),
        ({"a": 1.0 + 2e-6}, "sum to 1"),
        ({"a": 0.0, "b": 1.0}, "'a' is 0.0; it must be > 0"),
        ({"a": -0.5, "b": 1.5}, "'a' is -0.5"),
        ({"a": "0.5", "b": 0.5}, "'a' is '0.5'; it must be a number"),
        ({"a": True}, "'a' is True"),
        ({"a": float("nan")}, "'a' is nan"),
        ({}, "empty"),
    ],
)
def test_normalize_rejects_bad_specs(spec: dict, needle: str) -> None:
    with pytest.raises(ConfigError, match=None) as err:
        normalize_mix(spec)
    assert needle in str(err.value)
    assert err.value.exit_code == 2


def test_proportions_within_binomial_bounds() -> None:
    probs = {"data": 0.4, "s3": 0.3, "sampler": 0.3}
    readers = {"data": ConstReader(0, 10), "s3": ConstReader(1, 10), "sampler": ConstReader(2, 10)}
    mixed = MixedInput(readers, probs, np.random.default_rng(7))
    draws = 20_000
    counts = dict.fromkeys(probs, 0)
    for _ in range(draws):
        batch = mixed.next()
        src = mixed.last_source
        assert src is not None
        counts[src] += 1
        # last_source must name the reader the batch really came from
        assert int(batch["obs"][0]) == {"data": 0, "s3": 1, "sampler": 2}[src]
    for name, p in probs.items():
        sd = math.sqrt(draws * p * (1 - p))  # binomial standard deviation, ~65-69 draws
        assert abs(counts[name] - draws * p) < 4 * sd, (name, counts[name])
    m = mixed.metrics()
    assert m["input/data/batch_fraction"] == counts["data"] / draws
    assert m["input/sampler/rows"] == counts["sampler"] * 10
    assert m["input/s3/batches"] == counts["s3"]
    assert m["input/s3/row_fraction"] == pytest.approx(counts["s3"] / draws)
    assert m["input/s3/fraction"] == m["input/s3/row_fraction"]


def test_rows_not_batches_follow_the_probabilities() -> None:
    """The reference document's mix: 40 % of the *experiences* from the sampler, whose
    fragments are 4 rows, against recorded lines of 50 rows (drawing per batch gave the
    sampler ~5 % of the rows)."""
    probs = {"sampler": 0.4, "data": 0.6}
    readers = {"sampler": ConstReader(2, 4), "data": ConstReader(0, 50)}
    mixed = MixedInput(readers, probs, np.random.default_rng(3))
    rows = dict.fromkeys(probs, 0)
    while sum(rows.values()) < 200_000:
        batch = mixed.next()
        rows[str(mixed.last_source)] += batch.count
    m = mixed.metrics()
    assert m["input/sampler/row_fraction"] == pytest.approx(0.4, abs=0.02)
    assert m["input/data/fraction"] == pytest.approx(0.6, abs=0.02)
    assert m["input/sampler/row_fraction"] == rows["sampler"] / sum(rows.values())
    # many more sampler batches than data batches: ~8.3 sampler batches per data batch
    assert m["input/sampler/batch_fraction"] > 0.85


def test_same_seed_same_sequence_and_other_seed_differs() -> None:
    def sources(seed: int) -> list[str | None]:
        readers = {"a": ConstReader(0, 1), "b": ConstReader(1, 1)}
        mixed = MixedInput(readers, {"a": 0.5, "b": 0.5}, np.random.default_rng(seed))
        out = []
        for _ in range(200):
            mixed.next()
            out.append(mixed.last_source)
        return out

    assert sources(3) == sources(3)
    assert sources(3) != sources(4)


def test_single_source_and_name_mismatch() -> None:
    mixed = MixedInput({"only": ConstReader(5, 3)}, {"only": 1.0}, np.random.default_rng(0))
    assert mixed.last_source is None
    assert mixed.next().count == 3
    assert mixed.last_source == "only"
    assert mixed.metrics() == {
        "input/only/fraction": 1.0,
        "input/only/row_fraction": 1.0,
        "input/only/rows": 3.0,
        "input/only/batches": 1.0,
        "input/only/batch_fraction": 1.0,
    }
    with pytest.raises(ConfigError, match="different sources"):
        MixedInput({"a": ConstReader(0, 1)}, {"b": 1.0}, np.random.default_rng(0))
