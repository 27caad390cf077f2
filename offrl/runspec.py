"""What to run, from flags and ``-f`` files (JSON or YAML): parsing and merging, pure functions."""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from offrl.algos import canonical_name, get_config_class
from offrl.config import CommonConfig, from_dict, suggest
from offrl.envs import check_env_id
from offrl.errors import ConfigError
from offrl.trainer import check_stop_reachable, validate_stop

FILE_KEYS = (
    "run",
    "env",
    "config",
    "stop",
    "name",
    "local_dir",
    "checkpoint_freq",
    "checkpoint_at_end",
    "seed",
)


def parse_json(text: str, what: str) -> Any:
    """Parse JSON; a ConfigError pointing at the line, column and character on failure."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        line = text.splitlines()[e.lineno - 1] if text.splitlines() else ""
        pointer = f"\n    {line}\n    {' ' * (e.colno - 1)}^" if len(line) <= 200 else ""
        raise ConfigError(
            f"{what}: invalid JSON at line {e.lineno} column {e.colno} (char {e.pos}): "
            f"{e.msg}{pointer}"
        ) from None


def parse_json_object(text: str, what: str) -> dict[str, Any]:
    value = parse_json(text, what)
    if not isinstance(value, dict):
        raise ConfigError(f"{what}: expected a JSON object {{...}}, got {json.dumps(value)[:80]}")
    return value


# YAML 1.1 (PyYAML) reads 1e5 as a string; JSON and YAML 1.2 read it as a number.
_FLOAT_RE = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)


def _yaml_loader() -> type:
    import yaml

    class Loader(yaml.SafeLoader):
        """safe_load, with ``1e5`` read as a number as JSON reads it."""

    Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_RE, list("-+0123456789."))
    return Loader


Lines = dict[tuple[str, ...], int]


def _key_lines(text: str) -> Lines:
    """``key path -> line number`` (1-based) of every mapping key in a YAML/JSON text."""
    import yaml

    try:
        root = yaml.compose(text, Loader=_yaml_loader())
    except (yaml.YAMLError, RecursionError):
        return {}
    lines: Lines = {}

    def walk(node: Any, prefix: tuple[str, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                path = (*prefix, str(key.value))
                lines.setdefault(path, key.start_mark.line + 1)
                walk(value, path)

    walk(root, ())
    return lines


def _parse_file(path: str, text: str) -> Any:
    """A ``.json`` file as JSON; any other as YAML (a ``yaml.safe_load``, which reads JSON too)."""
    if path.endswith(".json"):
        return parse_json(text, f"-f {path}")
    import yaml

    try:
        return yaml.load(text, Loader=_yaml_loader())  # noqa: S506 - a SafeLoader subclass
    except RecursionError:  # block-style nesting, which the bracket count cannot see
        raise ConfigError(f"-f {path}: nested too deeply; no config is") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError(f"-f {path}: invalid YAML{where}: {problem}") from None


@dataclass
class Experiment:
    """One experiment of a ``-f`` file: its keys, and where each key is in the file."""

    data: dict[str, Any]
    path: str = ""
    lines: Lines = field(default_factory=dict)
    prefix: tuple[str, ...] = ()  # the experiment's name in a tuned-example file

    def where(self, *keys: str) -> str:
        """``FILE line N`` for the key path ``keys``, or ``FILE`` when it is not known."""
        line = self.lines.get((*self.prefix, *keys))
        return f"-f {self.path} line {line}" if line else f"-f {self.path}"


def _check_keys(exp: Experiment) -> None:
    for key, value in exp.data.items():
        if key not in FILE_KEYS:
            raise ConfigError(
                f"{exp.where(key)}: unknown key {key!r}{suggest(key, list(FILE_KEYS))}; "
                f"allowed: {', '.join(FILE_KEYS)}"
            )
        if key in ("config", "stop") and value is not None and not isinstance(value, dict):
            raise ConfigError(
                f"{exp.where(key)}: {key!r} must be a mapping of keys to values, "
                f"got {json.dumps(value, default=str)[:80]}"
            )


def load_experiments(path: str, experiment: str | None = None) -> list[Experiment]:
    """The experiments of a ``-f`` file, in file order (or the one named ``experiment``).

    A file is either one bare experiment ``{run, env, config, stop, ...}`` or, as
    RLlib's tuned examples are, ``{name: {run, env, config, stop, ...}, ...}``.
    Unknown keys are rejected with their line.
    """
    p = Path(path).expanduser()
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"-f {path}: cannot read the file: {e.strerror}") from None
    data = _parse_file(path, text)
    if not isinstance(data, dict):
        raise ConfigError(
            f"-f {path}: expected a mapping {{run, env, config, stop}} or experiments "
            f"{{name: {{run, env, ...}}}}, got {json.dumps(data, default=str)[:80]}"
        )
    lines = _key_lines(text)
    if not data or any(key in FILE_KEYS for key in data):
        experiments = [Experiment(dict(data), path, lines)]
    elif all(isinstance(v, dict) for v in data.values()):
        experiments = [
            Experiment({"name": name, **spec}, path, lines, (str(name),))
            for name, spec in data.items()
        ]
    else:
        key = next(k for k, v in data.items() if not isinstance(v, dict))
        raise ConfigError(
            f"-f {path} line {lines.get((str(key),), '?')}: unknown key {key!r}"
            f"{suggest(str(key), list(FILE_KEYS))}; a file holds run, env, config, stop ... "
            "or experiments name: {run: ..., env: ..., ...}"
        )
    if experiment is not None:
        chosen = [e for e in experiments if e.prefix == (experiment,)]
        if not chosen:
            names = [e.prefix[0] for e in experiments if e.prefix]
            listing = ", ".join(names) or "none (the file is one bare experiment)"
            raise ConfigError(
                f"--experiment {experiment!r}: no such experiment in {path}"
                f"{suggest(experiment, names)}; experiments: {listing}"
            )
        experiments = chosen
    for exp in experiments:
        _check_keys(exp)
    return experiments


def load_run_file(path: str) -> dict[str, Any]:
    """The keys of a ``-f`` file holding one experiment."""
    experiments = load_experiments(path)
    if len(experiments) > 1:
        names = ", ".join(e.prefix[0] for e in experiments)
        raise ConfigError(f"-f {path} holds several experiments ({names}); pick one")
    return experiments[0].data


_QUOTED = re.compile(r"'([^']+)'")


def locate_error(err: ConfigError, exp: Experiment, flag_keys: set[str]) -> ConfigError:
    """``err`` with the file and line of the first key it names, when that key is the file's.

    Keys also given by a flag (``flag_keys``) are the flag's: no line is added.
    """
    if not exp.path:
        return err
    for token in _QUOTED.findall(str(err)):
        parts = tuple(token.split("."))
        if parts[0] in flag_keys:
            continue
        for section in ("config", "stop"):
            if (*exp.prefix, section, *parts) in exp.lines:
                return ConfigError(f"{exp.where(section, *parts)}: {err}")
    return err


@dataclass
class RunSpec:
    """A fully resolved run: algorithm, env, typed config, stop criteria, seed."""

    run: str
    env: str
    config: CommonConfig
    stop: dict[str, Any]
    seed: int
    name: str
    extra: dict[str, Any] = field(default_factory=dict)


def resolve(
    file_data: dict[str, Any],
    *,
    run: str | None,
    env: str | None,
    config_text: str | None,
    stop_text: str | None,
    name: str | None,
    seed: int | None,
) -> RunSpec:
    """Merge ``-f`` file values and flags (flags win; ``--config`` keys override file keys)."""
    run = run or file_data.get("run")
    env = env or file_data.get("env")
    if not run:
        raise ConfigError("missing --run (PG or DQN), on the command line or in the -f file")
    if not env:
        raise ConfigError("missing --env (e.g. CartPole-v1), on the command line or in the -f file")
    run = canonical_name(str(run))
    check_env_id(str(env))
    config = file_data.get("config") or {}
    if not isinstance(config, dict):  # checked before dict(), which would raise TypeError
        raise ConfigError("-f file: 'config' must be a JSON object")
    config = dict(config)
    if config_text:
        config.update(parse_json_object(config_text, "--config"))
    stop = dict(file_data.get("stop") or {})
    if stop_text:
        stop = parse_json_object(stop_text, "--stop")
    validate_stop(stop)
    if seed is None:
        seed = file_data.get("seed", config.get("seed"))
    if seed is None:
        seed = secrets.randbelow(2**31)
    config["seed"] = seed
    config_cls = get_config_class(run)
    cfg = from_dict(config_cls, config, algo=run)
    check_stop_reachable(stop, run, cfg)
    return RunSpec(
        run=run,
        env=str(env),
        config=cfg,
        stop=stop,
        seed=int(seed),
        name=str(name or file_data.get("name") or "default"),
    )


def _flag_keys(text: str | None) -> set[str]:
    if not text:
        return set()
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return set()
    return set(value) if isinstance(value, dict) else set()


def resolve_experiment(
    exp: Experiment,
    *,
    run: str | None,
    env: str | None,
    config_text: str | None,
    stop_text: str | None,
    name: str | None,
    seed: int | None,
) -> RunSpec:
    """:func:`resolve` for one experiment of a ``-f`` file; errors name the file's line."""
    try:
        return resolve(
            exp.data,
            run=run,
            env=env,
            config_text=config_text,
            stop_text=stop_text,
            name=name,
            seed=seed,
        )
    except ConfigError as e:
        raise locate_error(e, exp, _flag_keys(config_text) | _flag_keys(stop_text)) from None
