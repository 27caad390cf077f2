"""Helpers that write the experience-file variants of FORMAT.md the way RLlib writes them.

RLlib's compressed columns are ``base64(lz4.frame.compress(pickle.dumps(arr)))``;
numpy-1.x-era pickles name ``numpy.core.*`` where numpy 2 writes ``numpy._core.*``.
Pickles are only ever *written* here (from our own arrays); reading goes through
offrl's restricted unpickler.
"""

from __future__ import annotations

import base64
import io
import json
import pickle
import struct
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import lz4.frame
import numpy as np

# numpy 2 module names and their numpy 1.x spelling.
_RENAMES = (
    (b"numpy._core.multiarray", b"numpy.core.multiarray"),
    (b"numpy._core.numeric", b"numpy.core.numeric"),
)


def b64_lz4(payload: bytes) -> str:
    """``payload`` as RLlib stores it: LZ4 frame, then base64 text (starts with BCJNG)."""
    return base64.b64encode(lz4.frame.compress(payload)).decode("ascii")


def _rename_protocol2(payload: bytes) -> bytes:
    # Protocol 2 names globals with the GLOBAL opcode: "c<module>\n<name>\n", no length prefix.
    for new, old in _RENAMES:
        payload = payload.replace(b"c" + new + b"\n", b"c" + old + b"\n")
    return payload


def _rename_protocol4(payload: bytes) -> bytes:
    # Protocol 4+ names modules with SHORT_BINUNICODE (0x8c, 1-byte length) inside a FRAME
    # (0x95, 8-byte length): both prefixes must shrink with the text.
    if payload[2:3] != b"\x95":
        raise ValueError("expected a single-frame pickle")
    body = payload[11:]
    for new, old in _RENAMES:
        body = body.replace(b"\x8c" + bytes([len(new)]) + new, b"\x8c" + bytes([len(old)]) + old)
    frame_len = struct.unpack("<Q", payload[3:11])[0] - (len(payload) - 11 - len(body))
    return payload[:3] + struct.pack("<Q", frame_len) + body


def rllib_pickle_payload(arr: np.ndarray, protocol: int, *, numpy_core: bool = False) -> bytes:
    """``pickle.dumps(arr, protocol)``, optionally rewritten to numpy-1.x module names."""
    payload = pickle.dumps(arr, protocol=protocol)
    if not numpy_core:
        return payload
    renamed = _rename_protocol2(payload) if protocol <= 3 else _rename_protocol4(payload)
    if b"numpy.core." not in renamed or b"numpy._core" in renamed:
        raise ValueError("renaming to numpy.core failed")
    return renamed


def rllib_column(
    arr: np.ndarray, protocol: int = 5, *, wrap: bool = False, numpy_core: bool = False
) -> str:
    """A whole column in RLlib's pickle codec; ``wrap`` gives the ``"b'...'"`` repr form."""
    text = b64_lz4(rllib_pickle_payload(arr, protocol, numpy_core=numpy_core))
    return f"b'{text}'" if wrap else text


def rllib_rows(arr: np.ndarray, protocol: int = 5, *, wrap: bool = False) -> list[str]:
    """A column compressed per row: one RLlib string per row."""
    return [rllib_column(row, protocol, wrap=wrap) for row in arr]


def cartpole_columns(n: int = 5, *, eps_id: int = 7, seed: int = 0) -> dict[str, Any]:
    """Plain-list CartPole columns of one finished episode of ``n`` steps."""
    rng = np.random.default_rng(seed)
    obs = rng.normal(0, 0.1, size=(n + 1, 4)).astype(np.float32)
    return {
        "obs": obs[:-1].tolist(),
        "new_obs": obs[1:].tolist(),
        "actions": rng.integers(0, 2, n).tolist(),
        "rewards": [1.0] * n,
        "dones": [False] * (n - 1) + [True],
        "eps_id": [eps_id] * n,
        "t": list(range(n)),
        "infos": [{} for _ in range(n)],
    }


def sample_batch_record(columns: dict[str, Any]) -> dict[str, Any]:
    """A ``"type": "SampleBatch"`` record."""
    return {"type": "SampleBatch", **columns}


def multi_agent_record(columns: dict[str, Any], policy: str = "default_policy") -> dict[str, Any]:
    """A MultiAgentBatch record as RLlib 2.x writes single-agent data."""
    n = len(columns["rewards"])
    return {"type": "MultiAgentBatch", "count": n, "policy_batches": {policy: columns}}


def line(record: dict[str, Any]) -> bytes:
    """One JSON line (Python's json writes NaN/Infinity tokens, like RLlib)."""
    return (json.dumps(record) + "\n").encode()


def write_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> Path:
    """Write records one per line; returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(line(r) for r in records))
    return path


def npy_column(arr: np.ndarray) -> str:
    """``arr`` in offrl's npy codec exactly as given: a 0-d array stays 0-d.

    (``encode_column(arr, "offrl")`` writes ``np.ascontiguousarray(arr)``, which is at
    least 1-D, so it cannot write a 0-d payload.)
    """
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return b64_lz4(buf.getvalue())


def zero_d_columns() -> dict[str, str]:
    """Compressed columns whose payload is a 0-d array (a scalar, not per-step values)."""
    return {
        "pickle-float32": rllib_column(np.array(1.0, np.float32)),
        "pickle-bool": rllib_column(np.array(True)),
        "pickle-protocol-2-float64": rllib_column(np.array(2.5), protocol=2),
        "npy-float32": npy_column(np.array(1.0, np.float32)),
        "npy-int64": npy_column(np.array(3, np.int64)),
    }
