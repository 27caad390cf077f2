"""offrl data convert: exact round trips, re-encodings, rotation, refusals."""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path
from typing import Any

import lz4.frame
import numpy as np
import pytest
from click.testing import CliRunner

from offrl.batch import SampleBatch
from offrl.commands.data import data
from offrl.datatools.convert import ConvertOptions, convert
from offrl.errors import ConfigError, OffrlRuntimeError
from offrl.io.codecs import NPY_MAGIC
from offrl.io.json_writer import JsonWriter
from tests.shared_data import RLLIB_FIXTURE

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

FIXTURE = RLLIB_FIXTURE


def lines_of(path: Path) -> list[dict[str, Any]]:
    files = sorted(path.iterdir()) if path.is_dir() else [path]
    return [json.loads(line) for f in files for line in f.read_text().splitlines() if line]


def payload_head(value: str) -> bytes:
    return lz4.frame.decompress(base64.b64decode(value))[:6]


def assert_bit_identical(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if k in ("type", "infos"):
            assert list(a[k]) == list(b[k]), k
            continue
        x, y = np.asarray(a[k]), np.asarray(b[k])
        assert x.dtype == y.dtype and x.shape == y.shape, k
        assert x.tobytes() == y.tobytes(), k  # bit for bit, NaN payloads included


def test_json_parquet_json_identical_rows(tmp_path: Path) -> None:
    convert([str(FIXTURE)], str(tmp_path / "a.parquet"))
    table = pq.read_table(tmp_path / "a.parquet")
    assert table.num_rows == 102  # one row per step
    assert table.schema.field("obs").type == pa.list_(pa.float32(), 4)
    assert table.schema.field("rewards").type == pa.float32()
    assert table.column("_offrl_record").to_pylist() == [0] * 56 + [1] * 26 + [2] * 20
    stats = convert(
        [str(tmp_path / "a.parquet")], str(tmp_path / "back"), ConvertOptions(compress_columns=())
    )
    assert (stats.records, stats.rows) == (3, 102)
    # Same records, same keys, same values: every float's text is the same double.
    assert lines_of(tmp_path / "back") == lines_of(FIXTURE)


def test_float32_bits_survive_parquet(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    obs = rng.standard_normal((9, 2, 3)).astype(np.float32)
    obs[0, 0, 0] = np.float32(1e-45)  # a subnormal
    cols = {
        "obs": obs,
        "actions": rng.standard_normal((9, 2)).astype(np.float32),
        "rewards": rng.standard_normal(9).astype(np.float32),
        "dones": np.array([False] * 8 + [True]),
        "eps_id": np.array([2**63 + 5] * 9, dtype=np.uint64),
        "infos": [{"k": i} for i in range(9)],
    }
    with JsonWriter(tmp_path / "src", compress_columns=["obs"]) as w:
        w.write(SampleBatch(cols))
    convert([str(tmp_path / "src")], str(tmp_path / "x.parquet"))
    assert pq.read_schema(tmp_path / "x.parquet").field("obs").type == pa.list_(
        pa.list_(pa.float32(), 3), 2
    )
    convert(
        [str(tmp_path / "x.parquet")],
        str(tmp_path / "dst"),
        ConvertOptions(compress_columns=["obs"]),
    )
    from offrl.io.decode import decode_record

    src = next((tmp_path / "src").iterdir()).read_bytes()
    dst = next((tmp_path / "dst").iterdir()).read_bytes()
    a = decode_record(src, path="src", lineno=1)
    b = decode_record(dst, path="dst", lineno=1)
    assert_bit_identical(dict(a.items()), dict(b.items()))
    assert int(b["eps_id"][0]) == 2**63 + 5


def test_plain_to_compressed_and_back(tmp_path: Path) -> None:
    convert([str(FIXTURE)], str(tmp_path / "c"), ConvertOptions(codec="offrl"))
    recs = lines_of(tmp_path / "c")
    assert isinstance(recs[0]["obs"], str) and recs[0]["obs"].startswith("BCJNG")
    assert payload_head(recs[0]["obs"]) == NPY_MAGIC
    assert isinstance(recs[0]["rewards"], list)  # only obs/new_obs are compressed
    convert([str(tmp_path / "c")], str(tmp_path / "p"), ConvertOptions(compress_columns=()))
    assert lines_of(tmp_path / "p") == lines_of(FIXTURE)


def test_offrl_codec_to_rllib_codec(tmp_path: Path) -> None:
    convert([str(FIXTURE)], str(tmp_path / "c"), ConvertOptions(codec="offrl"))
    convert([str(tmp_path / "c")], str(tmp_path / "r"), ConvertOptions(codec="rllib"))
    recs = lines_of(tmp_path / "r")
    assert payload_head(recs[1]["new_obs"])[:1] == b"\x80"  # a pickle, as RLlib writes
    convert([str(tmp_path / "r")], str(tmp_path / "p"), ConvertOptions(compress_columns=()))
    assert lines_of(tmp_path / "p") == lines_of(FIXTURE)


def test_multi_agent_to_sample_batch_and_back(tmp_path: Path) -> None:
    convert(
        [str(FIXTURE)], str(tmp_path / "ma"), ConvertOptions(compress_columns=(), multi_agent=True)
    )
    ma = lines_of(tmp_path / "ma")
    assert [r["type"] for r in ma] == ["MultiAgentBatch"] * 3
    assert [r["count"] for r in ma] == [56, 26, 20]
    convert([str(tmp_path / "ma")], str(tmp_path / "sb"), ConvertOptions(compress_columns=()))
    assert lines_of(tmp_path / "sb") == lines_of(FIXTURE)


def test_rotation(tmp_path: Path) -> None:
    stats = convert(
        [str(FIXTURE)], str(tmp_path / "r"), ConvertOptions(compress_columns=(), max_file_size=1000)
    )
    assert len(stats.outputs) == 3  # every record overshoots 1000 bytes: one file each
    assert [len(lines_of(Path(p))) for p in stats.outputs] == [1, 1, 1]
    assert sorted(stats.outputs) == stats.outputs


def test_corrupt_line_skipped_and_counted(tmp_path: Path) -> None:
    cut = tmp_path / "cut.json"
    cut.write_bytes(FIXTURE.read_bytes()[:-400])
    stats = convert([str(cut)], str(tmp_path / "o.parquet"))
    assert (stats.records, stats.rows, stats.corrupt_lines_skipped) == (2, 82, 1)


def test_existing_destination_refused(tmp_path: Path) -> None:
    dst = tmp_path / "taken.parquet"
    dst.write_bytes(b"keep me")
    with pytest.raises(ConfigError, match="already exists"):
        convert([str(FIXTURE)], str(dst))
    assert dst.read_bytes() == b"keep me"
    (tmp_path / "dir").mkdir()
    res = CliRunner().invoke(data, ["convert", str(FIXTURE), str(tmp_path / "dir")])
    assert res.exit_code == 2
    assert list((tmp_path / "dir").iterdir()) == []


def test_missing_pyarrow_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow now raises ImportError
    with pytest.raises(OffrlRuntimeError, match=r"pip install 'offrl\[parquet\]'"):
        convert([str(FIXTURE)], str(tmp_path / "a.parquet"))
    assert not (tmp_path / "a.parquet").exists()


def test_cli_convert_prints_summary(tmp_path: Path) -> None:
    res = CliRunner().invoke(data, ["convert", "-q", str(FIXTURE), str(tmp_path / "a.parquet")])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert (out["records"], out["rows"]) == (3, 102)
    assert out["outputs"] == [str(tmp_path / "a.parquet")]


def test_schema_change_fails_and_removes_partial_file(tmp_path: Path) -> None:
    recs = lines_of(FIXTURE)
    recs[1].pop("q_values")
    src = tmp_path / "mixed.json"
    src.write_text("".join(json.dumps(r) + "\n" for r in recs))
    res = CliRunner().invoke(data, ["convert", str(src), str(tmp_path / "m.parquet")])
    assert res.exit_code == 1
    assert "one Parquet file holds one schema" in res.output
    assert not (tmp_path / "m.parquet").exists()


def test_cli_compressed_to_plain(tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(
        data, ["convert", "-q", "--codec", "rllib", str(FIXTURE), str(tmp_path / "c")]
    )
    assert res.exit_code == 0, res.output
    res = runner.invoke(
        data, ["convert", "-q", "--compress-columns", "", str(tmp_path / "c"), str(tmp_path / "p")]
    )
    assert res.exit_code == 0, res.output
    assert lines_of(tmp_path / "p") == lines_of(FIXTURE)


def test_inspect_of_parquet_is_usage_error(tmp_path: Path) -> None:
    convert([str(FIXTURE)], str(tmp_path / "a.parquet"))
    res = CliRunner().invoke(data, ["inspect", str(tmp_path / "a.parquet")])
    assert res.exit_code == 2
    assert "convert Parquet to JSON first" in res.output


def test_parquet_destination_in_a_new_folder_is_created(tmp_path: Path) -> None:
    res = CliRunner().invoke(
        data, ["convert", "-q", str(FIXTURE), str(tmp_path / "new" / "deeper" / "a.parquet")]
    )
    assert res.exit_code == 0, res.output
    assert pq.read_table(tmp_path / "new" / "deeper" / "a.parquet").num_rows == 102


def test_parquet_destination_under_a_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    res = CliRunner().invoke(data, ["convert", "-q", str(FIXTURE), f"{tmp_path}/file/a.parquet"])
    assert res.exit_code == 1 and "cannot create the folder" in res.output, res.output


def test_glob_matching_parquet_and_json_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.json").write_bytes(FIXTURE.read_bytes())
    convert([str(FIXTURE)], str(src / "b.parquet"))
    res = CliRunner().invoke(data, ["convert", "-q", f"{src}/*", str(tmp_path / "out")])
    assert res.exit_code == 2, res.output
    assert "b.parquet" in res.output and "convert them separately" in res.output
    assert not (tmp_path / "out").exists()


def test_glob_matching_only_parquet_reads_it_as_parquet(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    convert([str(FIXTURE)], str(src / "b.parquet"))
    res = CliRunner().invoke(data, ["convert", "-q", f"{src}/*", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["rows"] == 102
