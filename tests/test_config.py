"""Tests for offrl/config.py: from_dict's key, type and range checks, aliases, model and columns."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from offrl.algos.dqn import DQNConfig
from offrl.algos.pg import PGConfig
from offrl.config import ALIASES, CommonConfig, field_meta, from_dict, suggest
from offrl.errors import ConfigError


def _error(cls: type[CommonConfig], data: Any, **kwargs: Any) -> str:
    with pytest.raises(ConfigError) as exc:
        from_dict(cls, data, **kwargs)
    assert exc.value.exit_code == 2
    return str(exc.value)


# -- defaults --------------------------------------------------------------------------


def test_empty_dict_gives_the_defaults() -> None:
    cfg = from_dict(CommonConfig, {})
    assert cfg == CommonConfig()
    assert cfg.input == "sampler" and cfg.output is None
    assert cfg.output_compress_columns == ["obs", "new_obs"]


def test_algorithm_defaults_are_rllibs() -> None:
    pg, dqn = from_dict(PGConfig, {}), from_dict(DQNConfig, {})
    assert (pg.lr, pg.train_batch_size) == (4e-4, 200)
    assert (dqn.lr, dqn.train_batch_size, dqn.n_step) == (5e-4, 32, 1)
    assert dqn.double_q and dqn.dueling


def test_list_and_dict_defaults_are_not_shared_between_configs() -> None:
    a, b = from_dict(CommonConfig, {}), from_dict(CommonConfig, {})
    a.model["fcnet_hiddens"].append(7)
    a.output_compress_columns.append("rewards")
    assert b.model["fcnet_hiddens"] == [256, 256]
    assert b.output_compress_columns == ["obs", "new_obs"]
    assert CommonConfig().model["fcnet_hiddens"] == [256, 256]


def test_values_given_are_kept_and_to_dict_is_json_ready() -> None:
    cfg = from_dict(PGConfig, {"lr": 0.01, "train_batch_size": 400, "use_baseline": True})
    assert (cfg.lr, cfg.train_batch_size, cfg.use_baseline) == (0.01, 400, True)
    d = json.loads(json.dumps(cfg.to_dict()))
    assert d["lr"] == 0.01 and d["train_batch_size"] == 400 and d["use_baseline"] is True


def test_every_field_has_help_and_types() -> None:
    for cls in (CommonConfig, PGConfig, DQNConfig):
        for key, meta in field_meta(cls).items():
            assert meta["help"].strip(), key
            assert meta["types"], key


# -- unknown keys ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "key", "closest"),
    [
        (CommonConfig, "gama", "gamma"),
        (CommonConfig, "train_batch_sise", "train_batch_size"),
        (CommonConfig, "num_worker", "num_workers"),
        (PGConfig, "use_baselines", "use_baseline"),
        (DQNConfig, "n_steps", "n_step"),
        (DQNConfig, "prioritised_replay", "prioritized_replay"),
    ],
)
def test_unknown_key_names_it_and_suggests_the_closest(
    cls: type[CommonConfig], key: str, closest: str
) -> None:
    msg = _error(cls, {key: 1})
    assert f"unknown config key {key!r}" in msg
    assert f"did you mean {closest!r}?" in msg


def test_unknown_key_names_the_algorithm() -> None:
    msg = _error(DQNConfig, {"use_baseline": True}, algo="DQN")
    assert "'use_baseline' for DQN" in msg


def test_unknown_key_without_close_match_has_no_suggestion() -> None:
    msg = _error(CommonConfig, {"zzqqxxjj": 1})
    assert "'zzqqxxjj'" in msg and "did you mean" not in msg


def test_unknown_key_is_reported_even_with_valid_keys_around_it() -> None:
    assert "'bufer_size'" in _error(DQNConfig, {"lr": 0.001, "bufer_size": 10, "gamma": 0.9})


def test_suggest_is_empty_for_no_candidates() -> None:
    assert suggest("anything", []) == ""
    assert suggest("gamm", ["gamma", "lr"]) == " (did you mean 'gamma'?)"


def test_config_that_is_not_an_object_is_rejected() -> None:
    assert "must be a JSON object" in _error(CommonConfig, [["lr", 0.1]])
    assert "must be a JSON object" in _error(CommonConfig, "lr=0.1")


# -- types -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value", "allowed"),
    [
        ("lr", "0.1", "a number"),
        ("train_batch_size", 1.5, "an integer"),
        ("train_batch_size", 200.0, "an integer"),
        ("num_workers", None, "an integer"),
        ("postprocess_inputs", "yes", "a boolean"),
        ("input_evaluation", 3, "a list"),
        ("model", [64, 64], "an object"),
        ("output", 3, "a string or null"),
        ("seed", "1", "an integer or null"),
    ],
)
def test_wrong_type_names_key_value_and_allowed(key: str, value: Any, allowed: str) -> None:
    msg = _error(CommonConfig, {key: value})
    assert f"config key {key!r}" in msg
    assert f"invalid value {json.dumps(value)}" in msg
    assert f"allowed: {allowed}" in msg


@pytest.mark.parametrize(
    ("key", "value"),
    [("num_workers", True), ("train_batch_size", False), ("lr", True), ("seed", True)],
)
def test_booleans_are_not_numbers(key: str, value: bool) -> None:
    assert f"invalid value {json.dumps(value)}" in _error(CommonConfig, {key: value})


@pytest.mark.parametrize("value", [1, 0])
def test_integers_are_not_booleans(value: int) -> None:
    assert "allowed: a boolean" in _error(CommonConfig, {"postprocess_inputs": value})


def test_integers_are_accepted_for_float_keys() -> None:
    cfg = from_dict(CommonConfig, {"gamma": 1, "lr": 1})
    assert cfg.gamma == 1 and cfg.lr == 1


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_floats_are_rejected(value: float) -> None:
    msg = _error(CommonConfig, {"lr": value})
    assert "config key 'lr'" in msg
    assert json.dumps(value) in msg  # NaN / Infinity / -Infinity


def test_nan_is_rejected_even_where_null_is_allowed() -> None:
    assert "'grad_norm_clipping'" in _error(DQNConfig, {"grad_norm_clipping": math.nan})
    assert "'grad_clip'" in _error(PGConfig, {"grad_clip": math.inf})


def test_nan_from_json_text_is_rejected() -> None:
    # Python's json module parses the non-standard NaN literal; it must not slip through.
    assert "invalid value NaN" in _error(CommonConfig, json.loads('{"gamma": NaN}'))


# -- ranges ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value", "rule"),
    [
        ("lr", -0.1, "> 0"),
        ("lr", 0, "> 0"),
        ("train_batch_size", 0, ">= 1"),
        ("gamma", 2, "<= 1"),
        ("gamma", -0.5, ">= 0"),
        ("num_workers", -1, ">= 0"),
        ("seed", -1, ">= 0"),
        ("evaluation_interval", 0, ">= 1"),
        ("output_max_file_size", 0, ">= 1"),
    ],
)
def test_out_of_range_names_key_value_and_bound(key: str, value: Any, rule: str) -> None:
    msg = _error(CommonConfig, {key: value})
    assert f"config key {key!r}: invalid value {json.dumps(value)}" in msg
    assert rule in msg


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("gamma", 0),
        ("gamma", 1.0),
        ("num_workers", 0),
        ("train_batch_size", 1),
        ("seed", 0),
        ("seed", None),
    ],
)
def test_boundary_values_are_accepted(key: str, value: Any) -> None:
    assert getattr(from_dict(CommonConfig, {key: value}), key) == value


def test_choices_are_listed() -> None:
    msg = _error(CommonConfig, {"output_codec": "zip"})
    assert 'allowed: one of "offrl", "rllib"' in msg
    assert from_dict(CommonConfig, {"output_codec": "rllib"}).output_codec == "rllib"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("n_step", 0),
        ("exploration_final_eps", 1.5),
        ("tau", 0),
        ("buffer_size", 0),
        ("prioritized_replay_beta", -0.1),
        ("learning_starts", -1),
    ],
)
def test_dqn_ranges(key: str, value: Any) -> None:
    assert f"config key {key!r}" in _error(DQNConfig, {key: value}, algo="DQN")


def test_dqn_validate_rejects_bad_hiddens_and_schedules() -> None:
    with pytest.raises(ConfigError, match="'hiddens'"):
        DQNConfig(hiddens=[64, 0]).validate()
    with pytest.raises(ConfigError, match="'lr_schedule'"):
        DQNConfig(lr_schedule=[[100, 1e-3], [0, 1e-4]]).validate()
    with pytest.raises(ConfigError, match="'hiddens'"):
        from_dict(DQNConfig, {"hiddens": [64, 0]})
    from_dict(DQNConfig, {"lr_schedule": [[0, 1e-3], [100, 1e-4]]}).validate()


# -- aliases ---------------------------------------------------------------------------


def test_sample_batch_size_is_an_alias_of_rollout_fragment_length() -> None:
    cfg = from_dict(CommonConfig, {"sample_batch_size": 50})
    assert cfg.rollout_fragment_length == 50
    assert "sample_batch_size" not in cfg.to_dict()
    assert ALIASES["sample_batch_size"] == "rollout_fragment_length"


def test_alias_values_are_checked() -> None:
    assert "invalid value 0" in _error(CommonConfig, {"sample_batch_size": 0})


def test_lambda_is_an_alias_for_pg() -> None:
    cfg = from_dict(PGConfig, {"lambda": 0.95})
    assert cfg.lambda_ == 0.95
    assert from_dict(PGConfig, {"lambda_": 0.9}).lambda_ == 0.9


def test_lambda_is_unknown_for_dqn_and_named_as_typed() -> None:
    msg = _error(DQNConfig, {"lambda": 0.95}, algo="DQN")
    assert "unknown config key 'lambda' for DQN" in msg


def test_alias_range_error_names_the_key_the_user_typed() -> None:
    msg = _error(PGConfig, {"lambda": 1.5})
    assert "'lambda'" in msg


def test_alias_and_canonical_key_together_are_rejected() -> None:
    msg = _error(CommonConfig, {"sample_batch_size": 10, "rollout_fragment_length": 20})
    assert "rollout_fragment_length" in msg


# -- model -----------------------------------------------------------------------------


def test_model_accepts_valid_hiddens_and_activation() -> None:
    cfg = from_dict(
        CommonConfig, {"model": {"fcnet_hiddens": [32, 16], "fcnet_activation": "relu"}}
    )
    assert cfg.model == {"fcnet_hiddens": [32, 16], "fcnet_activation": "relu"}
    # A partial model dict keeps the defaults of the keys it does not name.
    assert from_dict(CommonConfig, {"model": {}}).model == CommonConfig().model
    assert from_dict(CommonConfig, {"model": {"fcnet_hiddens": [8]}}).model == {
        "fcnet_hiddens": [8],
        "fcnet_activation": "tanh",
    }


def test_model_unknown_key_is_named_with_suggestion() -> None:
    msg = _error(CommonConfig, {"model": {"fcnet_hidens": [8]}})
    assert "'model.fcnet_hidens'" in msg and "did you mean 'fcnet_hiddens'?" in msg


@pytest.mark.parametrize("hiddens", [[64, 0], [-1], [True], [1.5], 64, "64,64"])
def test_model_bad_hiddens(hiddens: Any) -> None:
    msg = _error(CommonConfig, {"model": {"fcnet_hiddens": hiddens}})
    assert "'model.fcnet_hiddens'" in msg and "a list of positive integers" in msg
    assert json.dumps(hiddens) in msg


def test_model_bad_activation_lists_the_allowed_ones() -> None:
    msg = _error(CommonConfig, {"model": {"fcnet_activation": "Relu"}})
    assert "'model.fcnet_activation'" in msg and '"Relu"' in msg
    assert "tanh" in msg and "relu" in msg


# -- output_compress_columns -----------------------------------------------------------


def test_compress_columns_accepts_known_columns_and_empty_list() -> None:
    assert from_dict(CommonConfig, {"output_compress_columns": []}).output_compress_columns == []
    cfg = from_dict(CommonConfig, {"output_compress_columns": ["obs", "actions"]})
    assert cfg.output_compress_columns == ["obs", "actions"]


def test_compress_columns_unknown_column_is_named_with_suggestion() -> None:
    msg = _error(CommonConfig, {"output_compress_columns": ["obs", "rewardz"]})
    assert "'output_compress_columns'" in msg
    assert '"rewardz"' in msg and "did you mean 'rewards'?" in msg


def test_compress_columns_non_string_is_rejected() -> None:
    assert "unknown column 1" in _error(CommonConfig, {"output_compress_columns": [1]})


# -- input_config of file inputs ----------------------------------------------------------

FILE_INPUTS = [
    "/data/x.json",
    "s3://bucket/prefix/*.json",
    ["/data/a.json"],
    {"sampler": 0.5, "/data/x.json": 0.5},
]
NOT_FILE_INPUTS = ["sampler", "pkg.mod:Reader", {"sampler": 0.5, "pkg.mod:Reader": 0.5}]
BAD_FILE_INPUT_CONFIGS = [
    ({"columns": "obs"}, "input_config.columns", "'obs'"),
    ({"columns": ["obs", 3]}, "input_config.columns", "['obs', 3]"),
    ({"columns": {"obs": True}}, "input_config.columns", "{'obs': True}"),
    ({"storage_options": "anon"}, "input_config.storage_options", "'anon'"),
    ({"storage_options": [1]}, "input_config.storage_options", "[1]"),
]


@pytest.mark.parametrize("cls", [CommonConfig, PGConfig, DQNConfig])
@pytest.mark.parametrize("spec", FILE_INPUTS, ids=repr)
@pytest.mark.parametrize(("input_config", "key", "shown"), BAD_FILE_INPUT_CONFIGS, ids=repr)
def test_file_input_config_of_the_wrong_type_is_rejected(
    cls: type[CommonConfig], spec: Any, input_config: dict, key: str, shown: str
) -> None:
    message = _error(cls, {"input": spec, "input_config": input_config})
    assert f"{key} must be" in message and shown in message


@pytest.mark.parametrize("spec", NOT_FILE_INPUTS, ids=repr)
@pytest.mark.parametrize(("input_config", "key", "shown"), BAD_FILE_INPUT_CONFIGS, ids=repr)
def test_input_config_of_other_inputs_is_not_checked_as_a_file_readers(
    spec: Any, input_config: dict, key: str, shown: str
) -> None:
    # A "module:Class" reader is built as Class(**input_config): any columns= it takes.
    cfg = from_dict(CommonConfig, {"input": spec, "input_config": input_config})
    assert cfg.input_config == input_config


@pytest.mark.parametrize("spec", FILE_INPUTS, ids=repr)
def test_file_input_config_of_the_right_types_is_kept(spec: Any) -> None:
    input_config = {"columns": ["obs", "q_values"], "storage_options": {"anon": True}}
    cfg = from_dict(CommonConfig, {"input": spec, "input_config": input_config})
    assert cfg.input_config == input_config
    for nulls in ({"columns": None}, {"storage_options": None}, {}):
        assert from_dict(CommonConfig, {"input": spec, "input_config": nulls}).input_config == nulls


def test_validate_checks_the_file_input_config_of_a_config_built_directly() -> None:
    cfg = CommonConfig(input="/data/x.json", input_config={"columns": "obs"})
    with pytest.raises(ConfigError, match=r"input_config\.columns must be a list"):
        cfg.validate()
    CommonConfig(input="pkg.mod:Reader", input_config={"columns": "obs"}).validate()


def test_input_evaluation_one_name_is_a_list_of_one() -> None:
    """The reference document's own example: ``"input_evaluation": "simulation"``."""
    cfg = from_dict(CommonConfig, {"input_evaluation": "simulation"})
    assert cfg.input_evaluation == ["simulation"]
    with pytest.raises(ConfigError, match="unknown estimator 'simulaton'"):
        from_dict(CommonConfig, {"input_evaluation": "simulaton"})


def test_users_see_lambda_not_lambda_() -> None:
    from offrl.algos.configs import PGConfig

    cfg = from_dict(PGConfig, {"lambda": 0.9})
    shown = cfg.to_dict()
    assert shown["lambda"] == 0.9 and "lambda_" not in shown
    assert from_dict(PGConfig, shown).lambda_ == 0.9  # params.json reads back


def test_a_mix_is_checked_with_the_config() -> None:
    """Wrong probabilities are a config error (exit 2), found before any source is read."""
    with pytest.raises(ConfigError, match="sum to 0.7"):
        from_dict(CommonConfig, {"input": {"sampler": 0.4, "/no/such/dir": 0.3}})
