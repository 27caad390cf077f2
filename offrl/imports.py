"""Loading the user's own classes named as ``"package.module:ClassName"``."""

from __future__ import annotations

import importlib
from typing import Any

from offrl.errors import ConfigError


def load_class(spec: str, what: str) -> Any:
    """The object ``module:Name`` names; a ConfigError starting with ``what`` if missing."""
    module_name, _, name = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigError(
            f"{what}: cannot import module {module_name!r} ({e}); check the name and that "
            "it is installed or on PYTHONPATH"
        ) from None
    obj = getattr(module, name, None)
    if obj is None:
        raise ConfigError(f"{what}: module {module_name!r} has no {name!r}")
    return obj


def construct(cls: Any, kwargs: dict[str, Any], what: str, config_key: str) -> Any:
    """``cls(**kwargs)``; a ConfigError naming ``config_key`` when the arguments do not fit."""
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ConfigError(
            f"{what}: cannot construct {getattr(cls, '__name__', cls)}(**{config_key}) with "
            f"{config_key}={kwargs!r}: {e}"
        ) from None
