"""The factory that builds an InputReader (io/specs.py) from the ``input`` config key.

``make_input_reader`` handles offline inputs only: a path, directory, glob, URI or
a list of them (a :class:`~offrl.io.json_reader.JsonReader`), or ``"module:Class"``
naming a user's reader, built as ``Class(**input_config)``. For path inputs,
``input_config`` may hold ``storage_options`` (fsspec options, e.g. an S3
``endpoint_url``), ``columns`` (read only those columns of JSON files) and
``max_column_bytes`` (the most one compressed column may decode to).
``"sampler"`` and ``{source: probability}`` mixes are the trainer's business:
passing them here is a programming error (ValueError).
"""

from __future__ import annotations

from typing import Any

from offrl.config import CommonConfig
from offrl.errors import ConfigError
from offrl.imports import construct, load_class
from offrl.io.json_reader import JsonReader
from offrl.io.parquet import ParquetReader, is_parquet, resolve_parquet
from offrl.io.sources import resolve_sources
from offrl.io.specs import (
    DEFAULT_MAX_COLUMN_BYTES,
    SAMPLER,
    InputReader,
    check_file_input_config,
    file_sources,
    is_class_spec,
)


def load_class_reader(spec: str, input_config: dict[str, Any]) -> InputReader:
    """Import ``module:Class`` and build ``Class(**input_config)``; ConfigError if impossible."""
    what = f"input {spec!r}"
    cls = load_class(spec, what)
    reader = construct(cls, input_config, what, "input_config")
    class_name = spec.partition(":")[2]
    if not callable(getattr(reader, "next", None)):
        raise ConfigError(
            f"input {spec!r}: {class_name} has no next() method; an InputReader must "
            "implement next() -> SampleBatch"
        )
    return reader


def check_input_exists(config: CommonConfig) -> None:
    """OffrlRuntimeError naming what was searched when a file input matches nothing.

    Run before anything is created, so a missing input leaves no empty run directory.
    """
    storage_options = config.input_config.get("storage_options") or {}
    for source in file_sources(config.input):
        if is_parquet(source):
            resolve_parquet(source)
        else:
            resolve_sources(source, storage_options)


def make_input_reader(
    spec: str | list[str],
    *,
    config: CommonConfig,
    seed: int | None,
    worker_index: int = 0,
    num_workers: int = 1,
) -> InputReader:
    """Build the offline reader for ``spec`` (worker ``worker_index`` of ``num_workers``)."""
    if isinstance(spec, dict) or spec == SAMPLER:
        raise ValueError(
            f"make_input_reader handles offline inputs only, not {spec!r} "
            "(the trainer builds the sampler and input mixes)"
        )
    if isinstance(spec, str) and is_class_spec(spec):
        return load_class_reader(spec, dict(config.input_config))
    if is_parquet(spec):
        return ParquetReader(spec, seed=seed, worker_index=worker_index, num_workers=num_workers)
    check_file_input_config(config.input_config)
    storage_options = config.input_config.get("storage_options") or {}
    columns = config.input_config.get("columns")
    return JsonReader(
        spec,
        seed=seed,
        worker_index=worker_index,
        num_workers=num_workers,
        storage_options=storage_options,
        columns=columns,
        max_column_bytes=config.input_config.get("max_column_bytes", DEFAULT_MAX_COLUMN_BYTES),
    )
