"""The ``output`` config key: build the OutputWriter a run records its experiences with.

``output`` is ``None`` (record nothing), ``"logdir"`` (the run's results
directory), a path or URI (a :class:`JsonWriter`), or ``"module:Class"`` naming
the user's own writer, constructed as ``Class(**output_config)``.
"""

from __future__ import annotations

from pathlib import Path

from offrl.config import CommonConfig
from offrl.errors import ConfigError
from offrl.imports import construct, load_class
from offrl.io.json_writer import JsonWriter, prepare_local_dir
from offrl.io.sources import local_path, needs_fsspec
from offrl.io.specs import OutputWriter, is_class_spec

# Keys of output_config the built-in JsonWriter understands.
_JSON_WRITER_KEYS = frozenset({"storage_options"})


def load_writer_class(ref: str) -> type:
    """Import ``"module:Class"``; ConfigError when it does not import or has no ``write``."""
    cls = load_class(ref, f"output {ref!r}")
    if not callable(getattr(cls, "write", None)):
        raise ConfigError(
            f"output {ref!r}: {ref.partition(':')[2]} has no write(batch) method; an "
            "OutputWriter must define write(self, batch)"
        )
    return cls  # type: ignore[no-any-return]


def _json_writer(path: str | Path, worker_index: int, config: CommonConfig) -> JsonWriter:
    unknown = sorted(set(config.output_config) - _JSON_WRITER_KEYS)
    if unknown:
        raise ConfigError(
            f"output_config keys {unknown} are not understood by the built-in JSON writer; "
            "allowed: storage_options (fsspec options for URIs)"
        )
    storage_options = config.output_config.get("storage_options")
    if storage_options is not None and not isinstance(storage_options, dict):
        raise ConfigError(
            f"output_config.storage_options: invalid value {storage_options!r}; "
            "allowed: an object of fsspec options"
        )
    return JsonWriter(
        path,
        max_file_size=config.output_max_file_size,
        compress_columns=config.output_compress_columns,
        codec=config.output_codec,  # type: ignore[arg-type]
        multi_agent=config.output_multi_agent,
        worker_index=worker_index,
        storage_options=storage_options,
    )


def make_output_writer(
    output: str | None, *, logdir: Path, worker_index: int, config: CommonConfig
) -> OutputWriter | None:
    """The writer for config key ``output`` (None when nothing is recorded).

    Call :func:`close_output` on the result when the run ends (also on errors).
    """
    if output is None:
        return None
    if not isinstance(output, str) or not output:
        raise ConfigError(
            f"config key 'output': invalid value {output!r}; allowed: null, 'logdir', "
            "a path or URI, or 'module:Class'"
        )
    if output == "logdir":
        return _json_writer(logdir, worker_index, config)
    if is_class_spec(output):
        what = f"output {output!r}"
        writer: OutputWriter = construct(
            load_writer_class(output), dict(config.output_config), what, "output_config"
        )
        return writer
    return _json_writer(output, worker_index, config)


def check_output_writable(config: CommonConfig) -> None:
    """OffrlRuntimeError when a local ``output`` directory cannot be created or written.

    Run before the run directory exists, so an unwritable output leaves nothing behind
    (the output directory itself is created here, as the writer would).
    """
    output = config.output
    if not isinstance(output, str) or output == "logdir" or is_class_spec(output):
        return
    if not needs_fsspec(output):
        prepare_local_dir(Path(local_path(output)))


def close_output(writer: object | None) -> None:
    """Close ``writer`` if it has a ``close()`` (user writers may not)."""
    close = getattr(writer, "close", None)
    if callable(close):
        close()
