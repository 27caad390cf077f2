"""What to run, from flags and ``-f`` files: parsing and merging, pure functions only."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from offrl.algos import canonical_name, get_config_class
from offrl.config import CommonConfig, from_dict, suggest
from offrl.errors import ConfigError
from offrl.rollout import check_env_id
from offrl.trainer import validate_stop

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


def load_run_file(path: str) -> dict[str, Any]:
    """The JSON object of a ``-f`` file; unknown top-level keys are rejected."""
    p = Path(path).expanduser()
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"-f {path}: cannot read the file: {e.strerror}") from None
    data = parse_json_object(text, f"-f {path}")
    for key in data:
        if key not in FILE_KEYS:
            raise ConfigError(
                f"-f {path}: unknown key {key!r}{suggest(key, list(FILE_KEYS))}; "
                f"allowed: {', '.join(FILE_KEYS)}"
            )
    return data


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
    config = dict(file_data.get("config") or {})
    if not isinstance(config, dict):
        raise ConfigError("-f file: 'config' must be a JSON object")
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
    return RunSpec(
        run=run,
        env=str(env),
        config=cfg,
        stop=stop,
        seed=int(seed),
        name=str(name or file_data.get("name") or "default"),
    )
