"""Typed run configuration with RLlib's key names.

Every key is a dataclass field made with :func:`opt`, which carries its help
text and the rule its value must follow. :func:`from_dict` builds a config
from the user's JSON object, rejecting unknown keys (with the closest valid
key as a suggestion) and values of the wrong type or range.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from offrl.errors import ConfigError
from offrl.io.specs import check_file_input_config, normalize_mix, reads_files

C = TypeVar("C", bound="CommonConfig")

_TYPE_NAMES = {
    bool: "a boolean",
    int: "an integer",
    float: "a number",
    str: "a string",
    list: "a list",
    dict: "an object",
    type(None): "null",
}

# What input_evaluation may name: "simulation" plus the off-policy estimators.
ESTIMATOR_NAMES = ("simulation", "is", "wis", "dm", "dr")

# Aliases accepted for RLlib users; the canonical key is what params.json records.
ALIASES = {"sample_batch_size": "rollout_fragment_length", "lambda": "lambda_"}
# Field names that are not the key users see (a Python keyword): shown as RLlib's key.
USER_KEYS = {"lambda_": "lambda"}


def user_key(name: str) -> str:
    """The key users see for field ``name`` (``lambda_`` -> ``lambda``)."""
    return USER_KEYS.get(name, name)


def _one_or_list(value: Any) -> Any:
    """RLlib took ``"input_evaluation": "simulation"`` (its docs' own example) as a list of one."""
    return [value] if isinstance(value, str) else value


# Values normalised before their check, as RLlib normalised them.
_NORMALIZE = {"input_evaluation": _one_or_list}


# The largest value of every size a config -- or a checkpoint's config -- can set, checked
# before anything is built: no file can make offrl allocate, loop or spawn beyond these.
# `offrl train --help-config` and the README's config reference list them.
MAXIMA: dict[str, int] = {
    "num_workers": 128,
    "num_envs_per_worker": 1024,
    "rollout_fragment_length": 100_000,
    "train_batch_size": 1_000_000,
    "seed": 2**32 - 1,
    "evaluation_interval": 1_000_000_000,
    "evaluation_num_episodes": 100_000,
    "horizon": 1_000_000_000,
    "num_threads": 256,
    "shuffle_buffer_size": 100_000,
    "output_max_file_size": 2**40,
    "num_sgd_iter": 1_000,
    "sgd_minibatch_size": 1_000_000,
    "n_step": 1_000,
    "buffer_size": 10_000_000,
    "learning_starts": 10**12,
    "target_network_update_freq": 10**12,
    "prioritized_replay_beta_annealing_timesteps": 10**12,
    "schedule_max_timesteps": 10**12,
    "timesteps_per_iteration": 1_000_000,
    "training_intensity": 10_000,
    # widths of each hidden layer (model.fcnet_hiddens, DQN's hiddens) and layers per list
    "layer_width": 16_384,
    "layers": 16,
    # rows of one sampled fragment: rollout_fragment_length * num_envs_per_worker
    "fragment_rows": 1_000_000,
}


def check_maximum(key: str, value: Any, bound_key: str | None = None) -> None:
    """ConfigError naming ``key`` and its bound when a number exceeds ``MAXIMA``."""
    bound = MAXIMA.get(bound_key or key)
    if bound is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    if value > bound:
        shown = str(value) if len(str(value)) <= 30 else f"{str(value)[:27]}..."
        raise ConfigError(
            f"config key {key!r}: {shown} is above offrl's maximum {bound:,}; "
            "see `offrl train --help-config` for every bound"
        )


def check_widths(key: str, hiddens: Any) -> None:
    """ConfigError unless ``hiddens`` is a list of at most ``layers`` positive widths within
    ``layer_width``."""
    if not isinstance(hiddens, list) or not all(
        isinstance(h, int) and not isinstance(h, bool) and h > 0 for h in hiddens
    ):
        raise ConfigError(
            f"config key {key!r}: invalid value {_short_json(hiddens)}; "
            "allowed: a list of positive integers"
        )
    if len(hiddens) > MAXIMA["layers"]:
        raise ConfigError(
            f"config key {key!r}: {len(hiddens)} layers is above offrl's maximum {MAXIMA['layers']}"
        )
    for width in hiddens:
        check_maximum(key, width, "layer_width")


def _short_json(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."


def opt(
    default: Any,
    help: str,
    *,
    types: tuple[type, ...],
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    choices: tuple[Any, ...] | None = None,
) -> Any:
    """A config field: default, help text and the rule a value must follow."""
    meta = {"help": help, "types": types, "ge": ge, "gt": gt, "le": le, "lt": lt}
    meta["choices"] = choices
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: json.loads(json.dumps(default)), metadata=meta)
    return field(default=default, metadata=meta)


def _type_ok(value: Any, types: tuple[type, ...]) -> bool:
    if isinstance(value, bool):
        return bool in types
    if isinstance(value, int) and float in types:
        return True
    return isinstance(value, types)


def _allowed_text(meta: Mapping[str, Any]) -> str:
    if meta["choices"]:
        return "one of " + ", ".join(json.dumps(c) for c in meta["choices"])
    kind = " or ".join(_TYPE_NAMES.get(t, t.__name__) for t in meta["types"])
    bounds = [
        f"{sym} {meta[key]:g}"
        for key, sym in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="))
        if meta[key] is not None
    ]
    return f"{kind} {' and '.join(bounds)}" if bounds else kind


def check_value(key: str, value: Any, meta: Mapping[str, Any]) -> None:
    """Raise ConfigError naming key, value and what is allowed when ``value`` breaks the rule."""
    bad = not _type_ok(value, meta["types"])
    if not bad and isinstance(value, (int, float)) and not isinstance(value, bool):
        if isinstance(value, float) and not math.isfinite(value):
            bad = True
        for k, ok in (
            ("gt", lambda b: value > b),
            ("ge", lambda b: value >= b),
            ("lt", lambda b: value < b),
            ("le", lambda b: value <= b),
        ):
            if meta[k] is not None and not ok(meta[k]):
                bad = True
    if not bad and meta["choices"] and value not in meta["choices"]:
        bad = True
    if bad:
        raise ConfigError(
            f"config key {key!r}: invalid value {json.dumps(value)}; allowed: {_allowed_text(meta)}"
        )


# Names users bring from other libraries, mapped to ours (only used for suggestions).
_SYNONYMS = {
    "learning_rate": "lr",
    "batch_size": "train_batch_size",
    "discount": "gamma",
    "num_envs": "num_envs_per_worker",
    "n_envs": "num_envs_per_worker",
    "target_update_interval": "target_network_update_freq",
    "exploration_final_epsilon": "exploration_final_eps",
    "ent_coef": "entropy_coeff",
    "max_grad_norm": "grad_norm_clipping",
    # result keys (stop criteria)
    "reward": "episode_reward_mean",
    "return": "episode_reward_mean",
    "mean_reward": "episode_reward_mean",
    "episode_return_mean": "episode_reward_mean",
    "timesteps": "timesteps_total",
    "iterations": "training_iteration",
}


def suggest(word: str, candidates: list[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest candidate, or an empty string."""
    if _SYNONYMS.get(word) in candidates:
        return f" (did you mean {_SYNONYMS[word]!r}?)"
    close = difflib.get_close_matches(word, candidates, n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_lr_schedule(schedule: list | None) -> None:
    """ConfigError unless ``schedule`` is None or [[timestep, lr], ...] with rising timesteps."""
    if schedule is None:
        return
    ok = all(
        isinstance(p, list) and len(p) == 2 and all(isinstance(v, (int, float)) for v in p)
        for p in schedule
    )
    times = [p[0] for p in schedule] if ok else []
    if not ok or not times or times != sorted(times):
        raise ConfigError(
            f"config key 'lr_schedule': invalid value {schedule}; "
            "allowed: a list of [timestep, lr] pairs with increasing timesteps"
        )


# RLlib's observation_filter values offrl takes (ConcurrentMeanStdFilter = MeanStdFilter).
OBSERVATION_FILTERS = ("NoFilter", "MeanStdFilter", "ConcurrentMeanStdFilter")


@dataclass
class CommonConfig:
    """Keys every algorithm understands (PRODUCT.md, "Config keys")."""

    # -- sampling -----------------------------------------------------------
    num_workers: int = opt(
        0, "parallel rollout worker processes (0: sample in the learner)", types=(int,), ge=0
    )
    num_envs_per_worker: int = opt(
        1, "environments each worker steps as one vector", types=(int,), ge=1
    )
    remote_worker_envs: bool = opt(
        False,
        "with num_envs_per_worker > 1, step each env in its own process (gymnasium's "
        "AsyncVectorEnv) when sampling in the learner (num_workers 0); pays off only for "
        "envs whose step() is expensive; envs with a vectorised implementation (CartPole) "
        "keep it",
        types=(bool,),
    )
    rollout_fragment_length: int = opt(
        200,
        "env steps per env in one sampled fragment (alias: sample_batch_size)",
        types=(int,),
        ge=1,
    )
    gamma: float = opt(0.99, "discount factor", types=(float,), ge=0.0, le=1.0)
    lr: float = opt(4e-4, "learning rate", types=(float,), gt=0.0)
    lr_schedule: list | None = opt(
        None,
        "piecewise-linear [[timestep, lr], ...] replacing lr; "
        "a late decay steadies the final policy",
        types=(list, type(None)),
    )
    train_batch_size: int = opt(200, "rows per learner update", types=(int,), ge=1)
    seed: int | None = opt(
        None, "seed for envs, exploration and network init (--seed)", types=(int, type(None)), ge=0
    )
    model: dict = opt(
        {"fcnet_hiddens": [256, 256], "fcnet_activation": "tanh"},
        "network: fcnet_hiddens (list of widths), fcnet_activation (tanh, relu, elu, linear); "
        "image observations (Box of rank 3) first pass conv_filters ([[out_channels, [kh, kw], "
        "stride], ...], default [[16, [4, 4], 2], [32, [4, 4], 2], [64, [3, 3], 2]]) with "
        "conv_activation (default relu)",
        types=(dict,),
    )
    observation_filter: str = opt(
        "NoFilter",
        "'MeanStdFilter': the policy's networks see observations normalised by running "
        "statistics, clip((x - mean) / (std + 1e-8), -10, 10), updated after each learner "
        "step from the batch learned and stored in checkpoints; flat observations only "
        "(images are scaled by 1/255 already); experience files keep the unfiltered "
        "observations. 'NoFilter': none ('ConcurrentMeanStdFilter' is an alias of MeanStdFilter)",
        types=(str,),
        choices=OBSERVATION_FILTERS,
    )
    evaluation_interval: int | None = opt(
        None,
        "every N iterations, run evaluation_num_episodes greedy episodes in the env",
        types=(int, type(None)),
        ge=1,
    )
    evaluation_num_episodes: int = opt(10, "episodes per evaluation", types=(int,), ge=1)
    horizon: int | None = opt(
        None, "cut episodes after this many steps (truncation)", types=(int, type(None)), ge=1
    )
    num_threads: int = opt(
        1, "CPU threads of the learner (torch and numpy's BLAS)", types=(int,), ge=1
    )
    # -- input / output -------------------------------------------------------
    input: Any = opt(
        "sampler",
        "'sampler', a path/dir/glob/URI or list of them, a dict "
        "{source: probability}, or 'module:Class' (an InputReader)",
        types=(str, list, dict),
    )
    input_config: dict = opt(
        {},
        "keyword arguments for a 'module:Class' input reader; for files: storage_options "
        "(fsspec), columns (read only these columns) and max_column_bytes (the most one "
        "compressed column may decode to; default 256 MiB)",
        types=(dict,),
    )
    input_evaluation: list = opt(
        [],
        "off-policy estimators: simulation, is, wis, dm, dr (a list; one name alone is a "
        "list of one)",
        types=(list,),
    )
    postprocess_inputs: bool = opt(
        False, "run the learner's post-processing on offline batches", types=(bool,)
    )
    shuffle_buffer_size: int = opt(
        0, "shuffle input through a buffer of this many batches", types=(int,), ge=0
    )
    output: str | None = opt(
        None,
        "null, 'logdir', a path or URI, or 'module:Class' (an OutputWriter)",
        types=(str, type(None)),
    )
    output_config: dict = opt(
        {}, "keyword arguments for a 'module:Class' output writer", types=(dict,)
    )
    output_compress_columns: list = opt(
        ["obs", "new_obs"], "columns stored compressed ([] for plain lists)", types=(list,)
    )
    output_max_file_size: int = opt(
        64 * 1024 * 1024, "bytes after which a new file starts", types=(int,), ge=1
    )
    output_codec: str = opt(
        "rllib",
        "compressed-column codec: 'rllib' (RLlib's own: numpy pickle, read by RLlib's "
        "JsonReader) or 'offrl' (npy, no pickle, for pipelines that never touch RLlib)",
        types=(str,),
        choices=("offrl", "rllib"),
    )
    output_multi_agent: bool = opt(
        False, "write records as MultiAgentBatch/default_policy (RLlib 2.x style)", types=(bool,)
    )
    recreate_failed_workers: bool = opt(False, "restart a rollout worker that died", types=(bool,))
    framework: str = opt(
        "torch",
        "execution backend: 'torch' (local) or 'ray'",
        types=(str,),
        choices=("torch", "ray"),
    )

    def to_dict(self) -> dict[str, Any]:
        """Every key with its value, under the names users see (``lambda``, not ``lambda_``)."""
        return {user_key(k): v for k, v in dataclasses.asdict(self).items()}

    def validate(self) -> None:
        """Checks beyond one value's type and range; algorithm configs extend it (ConfigError)."""
        check_lr_schedule(self.lr_schedule)
        if reads_files(self.input):  # before any run directory exists
            check_file_input_config(self.input_config)
        if isinstance(self.input, dict):  # a mix's probabilities, before its sources are read
            normalize_mix(self.input)
        for name in self.input_evaluation:
            if name not in ESTIMATOR_NAMES:
                raise ConfigError(
                    f"config key 'input_evaluation': unknown estimator {name!r}"
                    f"{suggest(str(name), list(ESTIMATOR_NAMES))}; allowed: "
                    + ", ".join(ESTIMATOR_NAMES)
                )


def field_meta(cls: type[CommonConfig]) -> dict[str, Mapping[str, Any]]:
    """``field name -> metadata`` for every config key of ``cls``."""
    return {f.name: f.metadata for f in dataclasses.fields(cls)}


def from_dict(cls: type[C], data: Mapping[str, Any], *, algo: str = "") -> C:
    """Build ``cls`` from a user dict: unknown keys and bad values raise ConfigError."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"config must be a JSON object, got {json.dumps(data)}")
    metas = field_meta(cls)
    values: dict[str, Any] = {}
    for raw_key, value in data.items():
        key = ALIASES.get(raw_key, raw_key)
        if key not in metas:
            who = f" for {algo}" if algo else ""
            raise ConfigError(
                f"unknown config key {raw_key!r}{who}{suggest(raw_key, sorted(metas))}; "
                "see `offrl train --help-config` for every key"
            )
        if key in values:
            raise ConfigError(
                f"config keys {raw_key!r} and {key!r} set the same value; give only one"
            )
        value = _NORMALIZE.get(key, lambda v: v)(value)
        check_value(raw_key, value, metas[key])  # name the key as the user typed it
        check_maximum(raw_key, value, key)
        values[key] = value
    cfg = cls(**values)
    _check_fragment_rows(cfg)
    _check_model(cfg.model)
    # A partial model dict keeps the defaults of the keys it does not name.
    cfg.model = {**cls().model, **cfg.model}
    cfg.validate()
    _check_columns(cfg.output_compress_columns)
    return cfg


def _check_fragment_rows(cfg: CommonConfig) -> None:
    rows = cfg.rollout_fragment_length * cfg.num_envs_per_worker
    if rows > MAXIMA["fragment_rows"]:
        raise ConfigError(
            f"config keys 'rollout_fragment_length' * 'num_envs_per_worker' = {rows:,} rows "
            f"per fragment is above offrl's maximum {MAXIMA['fragment_rows']:,}"
        )


_ACTIVATIONS = ("tanh", "relu", "elu", "linear", "swish", "silu")


def _check_model(model: Mapping[str, Any]) -> None:
    allowed = {"fcnet_hiddens", "fcnet_activation", "conv_filters", "conv_activation"}
    for key in model:
        if key not in allowed:
            raise ConfigError(f"unknown config key 'model.{key}'{suggest(key, sorted(allowed))}")
    check_widths("model.fcnet_hiddens", model.get("fcnet_hiddens", [256, 256]))
    act = model.get("fcnet_activation", "tanh")
    if act not in _ACTIVATIONS:
        raise ConfigError(
            f"config key 'model.fcnet_activation': invalid value {json.dumps(act)}; "
            f"allowed: one of {', '.join(_ACTIVATIONS)}"
        )
    _check_conv_model(model)


def _check_conv_model(model: Mapping[str, Any]) -> None:
    """conv_filters: [[out_channels, [kh, kw], stride], ...] (null: default); conv_activation."""
    filters = model.get("conv_filters")
    ok = filters is None or (isinstance(filters, list) and len(filters) > 0)
    for f in filters if isinstance(filters, list) else []:
        ok = ok and isinstance(f, list) and len(f) == 3 and isinstance(f[1], list)
        ok = ok and all(
            isinstance(v, int) and not isinstance(v, bool) and v > 0
            for v in ([f[0], f[2], *f[1]] if ok else [])
        )
        ok = ok and len(f[1]) == 2
    if not ok:
        raise ConfigError(
            f"config key 'model.conv_filters': invalid value {json.dumps(filters)}; allowed: "
            "a non-empty list of [out_channels, [kernel_h, kernel_w], stride], positive integers"
        )
    act = model.get("conv_activation", "relu")
    if act not in _ACTIVATIONS:
        raise ConfigError(
            f"config key 'model.conv_activation': invalid value {json.dumps(act)}; "
            f"allowed: one of {', '.join(_ACTIVATIONS)}"
        )


def _check_columns(columns: list[Any]) -> None:
    from offrl.batch import KNOWN_COLUMNS

    for col in columns:
        if col == "infos":
            raise ConfigError(
                "config key 'output_compress_columns': 'infos' holds dicts and cannot be "
                "compressed; remove it"
            )
        if not isinstance(col, str) or col not in KNOWN_COLUMNS:
            raise ConfigError(
                f"config key 'output_compress_columns': unknown column {json.dumps(col)}"
                f"{suggest(str(col), sorted(KNOWN_COLUMNS))}; allowed: "
                + ", ".join(sorted(KNOWN_COLUMNS))
            )
