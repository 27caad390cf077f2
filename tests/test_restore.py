"""Tests for offrl/restore.py: what differs between a checkpoint and the run it is loaded
into."""

from __future__ import annotations

import pytest

# -- checkpoint_mismatch: what differs, in words ---------------------------------------------


@pytest.mark.parametrize(
    ("saved", "config", "expected"),
    [
        # a checkpoint from before the key was trained without a filter
        ({}, {"observation_filter": "MeanStdFilter"}, 'its observation_filter is "NoFilter"'),
        ({"normalize_value_targets": True}, {"normalize_value_targets": False}, "true, this"),
        ({"model": {"fcnet_hiddens": [8]}}, {"model": {"fcnet_hiddens": [16]}}, "its model is"),
    ],
)
def test_checkpoint_mismatch_names_the_key_that_differs(
    saved: dict, config: dict, expected: str
) -> None:
    from offrl.restore import checkpoint_mismatch

    state = {"env": "CartPole-v1", "config": saved}
    msg = checkpoint_mismatch(state, "CartPole-v1", config, "ck", ValueError("size mismatch"))
    assert msg.startswith("checkpoint ck does not fit this run: ") and expected in msg


def test_checkpoint_mismatch_without_a_known_difference_quotes_the_error() -> None:
    from offrl.restore import checkpoint_mismatch

    config = {"observation_filter": "NoFilter", "normalize_value_targets": False}
    msg = checkpoint_mismatch({"env": "E", "config": {}}, "E", config, "ck", ValueError("boom"))
    assert msg.endswith("its saved state does not fit (ValueError) [boom]")
