"""Parquet writer and ParquetReader (Parquet as ``input``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from offrl.batch import MultiAgentBatch, SampleBatch
from offrl.errors import DataFormatError, OffrlRuntimeError

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from offrl.io.parquet import (  # noqa: E402  (needs pyarrow, checked above)
    ParquetReader,
    ParquetWriter,
    batch_to_table,
    column_to_numpy,
    is_parquet,
    iter_parquet_records,
    resolve_parquet,
)


def batch(n: int, eps: int, *, start: float = 0.0) -> SampleBatch:
    return SampleBatch(
        obs=np.arange(n * 2, dtype=np.float32).reshape(n, 2) + start,
        actions=np.arange(n, dtype=np.int64) % 2,
        rewards=np.full(n, 0.5, dtype=np.float32),
        dones=np.arange(n) == n - 1,
        eps_id=np.full(n, eps, dtype=np.int64),
        t=np.arange(n, dtype=np.int64),
        infos=[{"i": i} for i in range(n)],
    )


def write(path: Path, batches: list[SampleBatch], **kw: int) -> Path:
    with ParquetWriter(path, **kw) as w:
        for b in batches:
            w.write(b)
    return path


def test_column_round_trip_shapes_and_dtypes() -> None:
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    table = batch_to_table(SampleBatch(img=arr, flag=np.array([True, False])))
    assert table.schema.field("img").type == pa.list_(pa.list_(pa.uint8(), 4), 3)
    back = column_to_numpy(table.schema.field("img"), table.column("img").combine_chunks())
    assert back.dtype == np.uint8 and np.array_equal(back, arr)
    sliced = table.column("img").combine_chunks().slice(1, 1)  # offsets must be honoured
    assert np.array_equal(column_to_numpy(table.schema.field("img"), sliced), arr[1:])


def test_records_stream_across_read_chunks(tmp_path: Path) -> None:
    sizes = [5, 3, 9, 1]
    path = write(
        tmp_path / "a.parquet", [batch(n, i) for i, n in enumerate(sizes)], row_group_rows=4
    )
    # 4-row reads split most records across chunks; records must come back whole.
    recs = list(iter_parquet_records(str(path), read_rows=4))
    assert [len(r["obs"]) for r in recs] == sizes
    assert [int(r["eps_id"][0]) for r in recs] == [0, 1, 2, 3]
    assert recs[2]["infos"][8] == {"i": 8}
    assert pq.ParquetFile(path).metadata.num_row_groups > 1


def test_reader_normalises_and_loops_epochs(tmp_path: Path) -> None:
    path = write(tmp_path / "a.parquet", [batch(3, 1), batch(2, 2)])
    reader = ParquetReader(str(path), seed=0)
    got = [reader.next() for _ in range(5)]
    assert [b.count for b in got] == [3, 2, 3, 2, 3]
    assert "terminateds" in got[0] and got[0]["terminateds"].tolist() == [False, False, True]
    assert "new_obs_valid" in got[0]  # new_obs rebuilt from the next obs, as for JSON
    assert np.array_equal(got[0]["new_obs"][0], got[0]["obs"][1])
    assert got[0]["obs"].dtype == np.float32
    assert reader.metrics()["epoch"] == 2


def test_reader_seeded_order_and_shards(tmp_path: Path) -> None:
    for i in range(4):
        write(tmp_path / f"f{i}.parquet", [batch(2, i)])

    def order(seed: int, worker: int = 0, workers: int = 1) -> list[int]:
        r = ParquetReader(str(tmp_path), seed=seed, worker_index=worker, num_workers=workers)
        return [int(r.next()["eps_id"][0]) for _ in range(len(r.shard))]

    assert order(3) == order(3)
    assert sorted(order(3)) == [0, 1, 2, 3]
    assert sorted(order(1, 0, 2)) == [0, 2] and sorted(order(1, 1, 2)) == [1, 3]


def test_foreign_parquet_served_in_blocks(tmp_path: Path) -> None:
    table = pa.table(
        {
            "obs": pa.FixedSizeListArray.from_arrays(pa.array(np.zeros(14, np.float32)), 2),
            "actions": pa.array(np.zeros(7, np.int64)),
            "rewards": pa.array(np.ones(7, np.float32)),
            "dones": pa.array([False] * 7),
        }
    )
    pq.write_table(table, tmp_path / "pandas.parquet")
    reader = ParquetReader(str(tmp_path / "pandas.parquet"), batch_rows=3, shuffle_files=False)
    assert [reader.next().count for _ in range(4)] == [3, 3, 1, 3]


def test_writer_refuses_existing_and_unwraps_multi_agent(tmp_path: Path) -> None:
    path = tmp_path / "a.parquet"
    path.write_bytes(b"x")
    with pytest.raises(OffrlRuntimeError, match="already exists"):
        ParquetWriter(path)
    assert path.read_bytes() == b"x"
    out = write(tmp_path / "b.parquet", [MultiAgentBatch.wrap_single(batch(4, 1))])
    assert pq.read_table(out).num_rows == 4


def test_empty_writer_gives_valid_file(tmp_path: Path) -> None:
    write(tmp_path / "e.parquet", [])
    assert pq.read_table(tmp_path / "e.parquet").num_rows == 0


def test_corrupt_parquet_is_data_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"PAR1 not really")
    with pytest.raises(DataFormatError, match="not a readable Parquet file"):
        ParquetReader(str(bad)).next()


def test_resolve_and_is_parquet(tmp_path: Path) -> None:
    with pytest.raises(OffrlRuntimeError, match=r"no Parquet files found"):
        resolve_parquet(str(tmp_path))
    write(tmp_path / "b.parquet", [batch(1, 1)])
    write(tmp_path / "a.parquet", [batch(1, 1)])
    assert resolve_parquet(str(tmp_path)) == [
        str(tmp_path / "a.parquet"),
        str(tmp_path / "b.parquet"),
    ]
    assert is_parquet("data/x.parquet") and is_parquet(["a.parquet", "b.parquet"])
    assert not is_parquet("data/") and not is_parquet(["a.parquet", "b.json"])
    assert not is_parquet(json.loads('{"a.parquet": 1.0}'))


def test_more_workers_than_files_split_records(tmp_path: Path) -> None:
    write(tmp_path / "one.parquet", [batch(2, i) for i in range(4)])
    seen = []
    for worker in range(2):
        r = ParquetReader(str(tmp_path), seed=0, worker_index=worker, num_workers=2)
        seen.append([int(r.next()["eps_id"][0]) for _ in range(2)])
    assert seen == [[0, 2], [1, 3]]  # every record read once per epoch overall


def _flip_last_byte_of_column(path: Path, column: int) -> None:
    meta = pq.ParquetFile(path).metadata.row_group(0).column(column)
    start = meta.dictionary_page_offset or meta.data_page_offset
    data = bytearray(path.read_bytes())
    data[start + meta.total_compressed_size - 1] ^= 0x01  # inside the last page's data
    path.write_bytes(bytes(data))


def test_flipped_byte_in_a_data_page_is_caught_by_its_checksum(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    obs = rng.standard_normal((200, 4)).astype(np.float32)
    rows = SampleBatch(obs=obs, actions=np.zeros(200, np.int64), rewards=np.ones(200, np.float32))
    path = write(tmp_path / "a.parquet", [rows])
    _flip_last_byte_of_column(path, 0)
    # Without checksums the flip is silent: pyarrow reads different observations.
    changed = np.stack(pq.read_table(path).column("obs").to_pylist())
    assert not np.array_equal(changed, obs)
    with pytest.raises(DataFormatError, match="a.parquet: corrupt Parquet data .*CRC"):
        list(iter_parquet_records(str(path)))
    with pytest.raises(DataFormatError, match="CRC"):
        ParquetReader(str(path)).next()


def test_infos_marked_json_holding_invalid_json_is_a_data_error(tmp_path: Path) -> None:
    table = batch_to_table(batch(3, 1))
    i = table.schema.get_field_index("infos")
    bad = pa.array(['{"i": 0}', "{not json", '{"i": 2}'], type=pa.string())
    table = table.set_column(i, table.schema.field("infos"), bad)
    pq.write_table(table, tmp_path / "infos.parquet")
    with pytest.raises(DataFormatError, match="infos.parquet: column 'infos' is marked JSON"):
        ParquetReader(str(tmp_path / "infos.parquet")).next()


def test_null_observation_rows_are_a_data_error(tmp_path: Path) -> None:
    obs = pa.array([[0.0, 1.0], None, [2.0, 3.0]], type=pa.list_(pa.float32(), 2))
    table = pa.table({"obs": obs, "actions": pa.array([0, 1, 0]), "rewards": pa.array([1.0] * 3)})
    pq.write_table(table, tmp_path / "nulls.parquet")
    with pytest.raises(DataFormatError, match="nulls.parquet: column 'obs' has 1 null rows"):
        ParquetReader(str(tmp_path / "nulls.parquet")).next()


def test_a_huge_record_is_served_in_bounded_pieces(tmp_path: Path) -> None:
    path = write(tmp_path / "big.parquet", [batch(50, 1), batch(3, 2)], row_group_rows=8)
    recs = list(iter_parquet_records(str(path), read_rows=8, batch_rows=8))
    assert [len(r["obs"]) for r in recs] == [8, 8, 8, 8, 8, 8, 2, 3]
    assert np.array_equal(np.concatenate([r["t"] for r in recs[:7]]), np.arange(50))
