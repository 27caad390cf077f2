"""Algorithm registry: ``"PG"`` / ``"DQN"`` -> (config class, algorithm class)."""

from __future__ import annotations

import importlib
from typing import Any

from offrl.errors import ConfigError

# name -> (module, config class, algorithm class); imported lazily so `offrl --help` and
# config errors stay fast (config classes live in offrl.algos.configs, which needs no torch).
_REGISTRY: dict[str, tuple[str, str, str]] = {
    "PG": ("offrl.algos.pg", "PGConfig", "PG"),
    "DQN": ("offrl.algos.dqn", "DQNConfig", "DQN"),
}


def algorithm_names() -> list[str]:
    return sorted(_REGISTRY)


def canonical_name(name: str) -> str:
    """``"dqn"`` -> ``"DQN"``; a ConfigError listing the choices for an unknown name."""
    for known in _REGISTRY:
        if known.lower() == name.lower():
            return known
    raise ConfigError(f"--run {name!r}: unknown algorithm; choose one of {', '.join(_REGISTRY)}")


def get_config_class(name: str) -> Any:
    """The config dataclass of algorithm ``name`` (imports no torch)."""
    from offrl.algos import configs

    return getattr(configs, _REGISTRY[canonical_name(name)][1])


def get_algorithm(name: str) -> tuple[Any, Any]:
    """(config class, algorithm class) of algorithm ``name``."""
    module, config_cls, algo_cls = _REGISTRY[canonical_name(name)]
    mod = importlib.import_module(module)
    return getattr(mod, config_cls), getattr(mod, algo_cls)
