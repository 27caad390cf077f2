"""JsonWriter against a real S3 protocol server (moto's server mode on 127.0.0.1)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from offrl.batch import SampleBatch
from offrl.config import CommonConfig, from_dict
from offrl.io import json_writer
from offrl.io.json_writer import JsonWriter
from offrl.io.output import close_output, make_output_writer

moto_server = pytest.importorskip("moto.server", reason="moto[server] is not installed")
s3fs = pytest.importorskip("s3fs", reason="s3fs is not installed")

BUCKET = "offrl-test"


@pytest.fixture(scope="module")
def storage_options() -> Iterator[dict[str, Any]]:
    """fsspec options for a fresh moto S3 server on a free local port, with one bucket."""
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    options = {
        "key": "testing",
        "secret": "testing",
        "skip_instance_cache": True,
        "client_kwargs": {"endpoint_url": f"http://{host}:{port}", "region_name": "eu-west-1"},
    }
    s3fs.S3FileSystem(**options).mkdir(BUCKET)
    try:
        yield options
    finally:
        server.stop()


def batch(tag: int) -> SampleBatch:
    return SampleBatch(
        obs=np.full((3, 4), tag, dtype=np.float32),
        actions=np.array([0, 1, 0]),
        t=np.full(3, tag),
    )


def read_tags(fs: Any, path: str) -> list[int]:
    data = fs.cat(path)
    assert data.endswith(b"\n")
    return [json.loads(line)["t"][0] for line in data.splitlines()]


def test_s3_rotation_and_same_second_writers(
    storage_options: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    stamp = "2026-01-02_03-04-05"
    monkeypatch.setattr(json_writer, "local_stamp", lambda now=None: stamp)
    url = f"s3://{BUCKET}/runs/a"
    a = JsonWriter(url, max_file_size=1, storage_options=storage_options)
    b = JsonWriter(url, max_file_size=1, storage_options=storage_options)
    with a, b:
        a.write(batch(1))
        a.write(batch(2))  # rotates: file 0 is closed, so uploaded
        b.write(batch(3))
    fs = s3fs.S3FileSystem(**storage_options)
    names = sorted(p.rsplit("/", 1)[-1] for p in fs.ls(f"{BUCKET}/runs/a", detail=False))
    # the second writer's name carries "-1" after the time: never a look-alike rotation
    assert a.paths == [f"{url}/output-{stamp}_worker-0_{i}.json" for i in range(2)]
    assert b.paths == [f"{url}/output-{stamp}-1_worker-0_0.json"]
    assert names == sorted(p.rsplit("/", 1)[-1] for p in (*a.paths, *b.paths))
    assert [read_tags(fs, p) for p in (*a.paths, *b.paths)] == [[1], [2], [3]]


def test_s3_through_make_output_writer(storage_options: dict[str, Any], tmp_path: Path) -> None:
    cfg = from_dict(CommonConfig, {"output_config": {"storage_options": storage_options}})
    url = f"s3://{BUCKET}/runs/b"
    writer = make_output_writer(url, logdir=tmp_path, worker_index=1, config=cfg)
    assert writer is not None
    writer.write(batch(7))
    writer.write(batch(8))
    close_output(writer)
    fs = s3fs.S3FileSystem(**storage_options)
    (path,) = fs.ls(f"{BUCKET}/runs/b", detail=False)
    assert "_worker-1_0.json" in path
    assert read_tags(fs, path) == [7, 8]
