"""Reading s3:// inputs from a local S3-compatible server (moto) on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from rllib_variants import cartpole_columns, line, sample_batch_record

pytest.importorskip("s3fs")
moto_server = pytest.importorskip("moto.server")

from offrl.config import CommonConfig  # noqa: E402
from offrl.errors import OffrlRuntimeError  # noqa: E402
from offrl.io.input import make_input_reader  # noqa: E402
from offrl.io.json_reader import JsonReader  # noqa: E402

BUCKET = "offrl-experiences"


@pytest.fixture(scope="module")
def s3(monkeypatch_module: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """A moto S3 server with two experience files; yields fsspec storage options."""
    import s3fs

    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch_module.setenv(key, "testing")
    monkeypatch_module.setenv("AWS_DEFAULT_REGION", "us-east-1")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    options = {"client_kwargs": {"endpoint_url": f"http://{host}:{port}"}, "anon": False}
    try:
        fs = s3fs.S3FileSystem(**options)
        fs.mkdir(BUCKET)
        fs.pipe(
            f"{BUCKET}/run/part-0.json", line(sample_batch_record(cartpole_columns(3, eps_id=1)))
        )
        fs.pipe(
            f"{BUCKET}/run/part-1.json", line(sample_batch_record(cartpole_columns(4, eps_id=2)))
        )
        fs.pipe(f"{BUCKET}/run/readme.txt", b"not data")
        yield options
    finally:
        server.stop()


@pytest.fixture(scope="module")
def monkeypatch_module() -> Iterator[pytest.MonkeyPatch]:
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def test_s3_directory_is_read_every_row(s3: dict[str, Any]) -> None:
    reader = JsonReader(f"s3://{BUCKET}/run", seed=0, storage_options=s3)
    assert reader.files == [f"s3://{BUCKET}/run/part-0.json", f"s3://{BUCKET}/run/part-1.json"]
    assert sorted(int(b["eps_id"][0]) for b in reader.iter_epoch()) == [1, 2]
    assert reader.metrics()["rows_read"] == 7


def test_s3_glob_through_factory(s3: dict[str, Any]) -> None:
    config = CommonConfig(input_config={"storage_options": s3})
    reader = make_input_reader(f"s3://{BUCKET}/**/part-1.json", config=config, seed=1)
    assert reader.next().count == 4


def test_s3_nothing_matched(s3: dict[str, Any]) -> None:
    with pytest.raises(OffrlRuntimeError, match=f"s3://{BUCKET}/missing"):
        JsonReader(f"s3://{BUCKET}/missing", storage_options=s3)
