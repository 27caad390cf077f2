"""resolve_sources and open_source on real local files and fsspec's memory filesystem."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import fsspec
import pytest

from offrl.errors import OffrlRuntimeError
from offrl.io.sources import _spans, open_source, open_source_spans, resolve_sources


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    for rel in ["b.json", "a.json", "c.jsonl", "notes.txt", "sub/d.json", "sub/deep/e.json"]:
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text('{"type": "SampleBatch", "x": 1}\n')
    return tmp_path


def test_single_file(tree: Path) -> None:
    assert resolve_sources(str(tree / "a.json")) == [str(tree / "a.json")]


def test_directory_takes_json_and_jsonl_sorted_not_recursive(tree: Path) -> None:
    assert resolve_sources(str(tree)) == [str(tree / n) for n in ("a.json", "b.json", "c.jsonl")]


def test_directory_skips_files_that_are_not_experiences(tree: Path) -> None:
    """A run directory written with "output": "logdir" holds result.json and params.json
    beside the experience files; reading it used to fail on them."""
    (tree / "result.json").write_text('{"type": "SampleBatch"}\n')  # skipped by its name
    (tree / "params.json").write_text('{\n  "lr": 0.1\n}\n')
    (tree / "stats.json").write_text('{"training_iteration": 1}\n')  # JSON, not a record
    (tree / "list.json").write_text("[1, 2]\n")
    (tree / "cut.json").write_text('{"type": "Sample')  # a first line cut by a crash: kept
    (tree / "empty.json").write_text("")  # the reader reports it
    got = [Path(p).name for p in resolve_sources(str(tree))]
    assert got == ["a.json", "b.json", "c.jsonl", "cut.json", "empty.json"]
    # files named explicitly, or by a glob, are always read
    assert resolve_sources(str(tree / "stats.json")) == [str(tree / "stats.json")]


def test_glob_and_recursive_glob(tree: Path) -> None:
    assert resolve_sources(str(tree / "*.json")) == [str(tree / "a.json"), str(tree / "b.json")]
    assert resolve_sources(str(tree / "**" / "*.json")) == [
        str(tree / p) for p in ("a.json", "b.json", "sub/d.json", "sub/deep/e.json")
    ]


def test_list_keeps_order_and_drops_duplicates(tree: Path) -> None:
    got = resolve_sources([str(tree / "sub"), str(tree / "a.json"), str(tree / "sub/d.json")])
    assert got == [str(tree / "sub/d.json"), str(tree / "a.json")]


def test_tilde_expansion(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tree))
    assert resolve_sources("~/sub") == [str(tree / "sub/d.json")]


def test_file_uri(tree: Path) -> None:
    assert resolve_sources(f"file://{tree}/b.json") == [f"{tree}/b.json"]


@pytest.mark.parametrize("spec", ["missing.json", "nodir/", "*.nothing", "sub/**/*.parquet"])
def test_nothing_matched_names_what_was_searched(tree: Path, spec: str) -> None:
    with pytest.raises(OffrlRuntimeError) as e:
        resolve_sources(str(tree / spec))
    assert str(tree / spec).rstrip("/") in str(e.value)
    assert "no input files found" in str(e.value)


def test_empty_list_is_an_error() -> None:
    with pytest.raises(OffrlRuntimeError, match="empty list"):
        resolve_sources([])


@pytest.fixture
def memfs() -> Iterator[fsspec.AbstractFileSystem]:
    fs = fsspec.filesystem("memory")
    root = "/offrl-test-sources"
    for rel in ["x/2.json", "x/1.json", "x/skip.csv", "x/y/3.jsonl"]:
        fs.pipe(f"{root}/{rel}", b'{"type": "SampleBatch"}\nsecond\n')
    yield fs
    fs.rm(root, recursive=True)


def test_memory_uri_dir_file_and_globs(memfs: fsspec.AbstractFileSystem) -> None:
    base = "memory:///offrl-test-sources/x"
    assert resolve_sources(base) == [f"{base}/1.json", f"{base}/2.json"]
    assert resolve_sources(f"{base}/2.json") == [f"{base}/2.json"]
    assert resolve_sources(f"{base}/*.json") == [f"{base}/1.json", f"{base}/2.json"]
    assert resolve_sources(f"{base}/**/*.json*") == [
        f"{base}/1.json",
        f"{base}/2.json",
        f"{base}/y/3.jsonl",
    ]


def test_memory_uri_nothing_matched(memfs: fsspec.AbstractFileSystem) -> None:
    with pytest.raises(OffrlRuntimeError, match="memory:///offrl-test-sources/nope"):
        resolve_sources("memory:///offrl-test-sources/nope")


def test_open_source_streams_lines_local_and_uri(
    tree: Path, memfs: fsspec.AbstractFileSystem
) -> None:
    (tree / "two.json").write_bytes(b"one\ntwo\nthree-no-newline")
    assert list(open_source(str(tree / "two.json"))) == [b"one\n", b"two\n", b"three-no-newline"]
    lines = list(open_source("memory:///offrl-test-sources/x/1.json"))
    assert lines == [b'{"type": "SampleBatch"}\n', b"second\n"]


def _lines(handle: io.BytesIO, size: int) -> list[bytes]:
    return [buf[start:stop] for buf, start, stop in _spans(handle, size)]


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 64])
def test_lines_across_read_boundaries(size: int) -> None:
    text = b"one\n\ntwo-longer-than-a-read\nx\n" + b"y" * 20 + b"\nlast-no-newline"
    assert _lines(io.BytesIO(text), size) == text.splitlines(keepends=True)
    assert _lines(io.BytesIO(text + b"\n"), size) == (text + b"\n").splitlines(True)
    assert _lines(io.BytesIO(b""), size) == []
    assert _lines(io.BytesIO(b"\n\n"), size) == [b"\n", b"\n"]


@pytest.mark.parametrize("size", [1, 4, 64])
def test_spans_are_slices_of_bytes_reads(size: int) -> None:
    """Every span is (bytes, start, stop) inside one read (or a joined line), in order."""
    text = b"ab\ncd\n" + b"e" * 10 + b"\nf"
    spans = list(_spans(io.BytesIO(text), size))
    for buf, start, stop in spans:
        assert type(buf) is bytes and 0 <= start < stop <= len(buf)
    assert b"".join(buf[start:stop] for buf, start, stop in spans) == text


def test_open_source_spans_give_open_source_lines(tree: Path) -> None:
    (tree / "two.json").write_bytes(b"one\ntwo\nthree-no-newline")
    spans = open_source_spans(str(tree / "two.json"))
    assert [buf[start:stop] for buf, start, stop in spans] == list(
        open_source(str(tree / "two.json"))
    )


def test_lines_keep_carriage_returns_like_readline(tmp_path: Path) -> None:
    text = b'{"a": 1}\r\n{"b":\r 2}\n'  # a lone \r is JSON whitespace, not a line end
    (tmp_path / "cr.json").write_bytes(text)
    assert list(open_source(str(tmp_path / "cr.json"))) == io.BytesIO(text).readlines()


def test_open_source_missing_file_is_runtime_error(tmp_path: Path) -> None:
    with pytest.raises(OffrlRuntimeError, match="cannot open input file"):
        next(open_source(str(tmp_path / "gone.json")))


def test_open_source_closes_file_when_iterator_closed(tree: Path) -> None:
    it = open_source(str(tree / "a.json"))
    next(it)
    frame = it.gi_frame
    handle = frame.f_locals["handle"]
    it.close()
    assert handle.closed


# -- what is a URI: one rule for reading and writing ---------------------------------------


@pytest.mark.parametrize(
    ("spec", "protocol"),
    [
        ("s3://bucket/cartpole", "s3"),
        ("hdfs:/archive/cartpole", "hdfs"),  # the reference document's mixing example
        ("hdfs://namenode:8020/archive", "hdfs"),
        ("gs://b/x/**.json", "gs"),
        ("abfs://container/x", "abfs"),
        ("memory://x", "memory"),
        ("simplecache::s3://b/k", "simplecache"),
        ("file:///tmp/x", "file"),
        ("file:/tmp/x", "file"),
        ("/tmp/cartpole-out", None),
        ("data/2025/*.json", None),
        ("C:/data/x.json", None),  # a Windows drive
        ("mypkg.readers:MyReader", None),  # a module:Class input
    ],
)
def test_uri_protocol(spec: str, protocol: str | None) -> None:
    from offrl.io.sources import is_uri, uri_protocol

    assert uri_protocol(spec) == protocol
    assert is_uri(spec) is (protocol is not None)


def test_fsspec_url_gives_the_double_slash_form() -> None:
    from offrl.io.sources import fsspec_url

    assert fsspec_url("hdfs:/archive/cartpole") == "hdfs:///archive/cartpole"
    assert fsspec_url("s3://b/k") == "s3://b/k"
    assert fsspec_url("simplecache::s3://b/k") == "simplecache::s3://b/k"


def test_hdfs_input_is_a_uri_not_a_missing_local_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(OffrlRuntimeError) as err:
        resolve_sources("hdfs:/archive/cartpole")
    msg = str(err.value)
    assert "no input files found" not in msg and "hdfs needs" in msg and len(msg) < 600
    assert "pyarrow and local java libraries required for HDFS" in msg


def test_a_protocol_whose_implementation_is_missing_says_what_to_install() -> None:
    pytest.importorskip("fsspec")
    try:
        import gcsfs  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("gcsfs is installed here")
    with pytest.raises(OffrlRuntimeError) as err:
        resolve_sources("gs://bucket/cartpole")
    assert "the 'gs' filesystem is not installed" in str(err.value)
    assert "gcsfs" in str(err.value)


def test_writer_takes_the_same_uri_rule(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``hdfs:/x`` as output goes to HDFS, not to a local directory named ``hdfs:``."""
    from offrl.io.json_writer import JsonWriter

    monkeypatch.chdir(tmp_path)
    with pytest.raises(OffrlRuntimeError) as err:
        JsonWriter("hdfs:/archive/out")
    assert "hdfs needs" in str(err.value)
    assert list(tmp_path.iterdir()) == []
