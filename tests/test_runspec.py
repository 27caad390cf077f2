"""``-f`` files (JSON and RLlib's tuned-example YAML) and merging them with flags."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from offrl.cli import main
from offrl.errors import ConfigError
from offrl.runspec import load_experiments, resolve_experiment

TUNED = """\
# RLlib tuned-example shape: several experiments, run one after another
cartpole-pg:
    env: CartPole-v1
    run: PG
    stop:
        training_iteration: 1
    config:
        train_batch_size: 200
        num_envs_per_worker: 2
        model: {fcnet_hiddens: [16]}
cartpole-pg-2:
    env: CartPole-v0
    run: PG
    stop:
        timesteps_total: 1e5
    config:
        lr: 5e-4
        input_evaluation: simulation
"""

FLAGS = {"run": None, "env": None, "config_text": None, "stop_text": None, "name": None}


def _write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_tuned_example_yaml_gives_every_experiment_in_order(tmp_path: Path) -> None:
    exps = load_experiments(_write(tmp_path, "t.yaml", TUNED))
    assert [e.data["name"] for e in exps] == ["cartpole-pg", "cartpole-pg-2"]
    assert exps[0].data["config"]["model"] == {"fcnet_hiddens": [16]}
    # 1e5 and 5e-4 are numbers, as JSON reads them (plain YAML 1.1 reads strings)
    assert exps[1].data["stop"] == {"timesteps_total": 100000.0}
    spec = resolve_experiment(exps[1], **FLAGS, seed=1)
    assert spec.config.lr == 5e-4
    assert spec.config.input_evaluation == ["simulation"]  # RLlib's one-name form
    assert spec.name == "cartpole-pg-2"


def test_experiment_picks_one_and_an_unknown_one_lists_them(tmp_path: Path) -> None:
    path = _write(tmp_path, "t.yml", TUNED)
    (only,) = load_experiments(path, "cartpole-pg-2")
    assert only.data["env"] == "CartPole-v0"
    with pytest.raises(ConfigError) as err:
        load_experiments(path, "cartpole-pq")
    assert "did you mean 'cartpole-pg'" in str(err.value)
    assert "cartpole-pg, cartpole-pg-2" in str(err.value)


def test_bare_yaml_and_json_mappings(tmp_path: Path) -> None:
    bare = "run: DQN\nenv: CartPole-v1\nstop: {training_iteration: 2}\n"
    (exp,) = load_experiments(_write(tmp_path, "bare.yaml", bare))
    assert exp.data == {"run": "DQN", "env": "CartPole-v1", "stop": {"training_iteration": 2}}
    tuned_json = json.dumps({"a": {"run": "PG", "env": "CartPole-v1"}})
    (exp,) = load_experiments(_write(tmp_path, "t.json", tuned_json))
    assert exp.data == {"name": "a", "run": "PG", "env": "CartPole-v1"}


def test_unknown_keys_name_their_line(tmp_path: Path) -> None:
    text = TUNED.replace("    stop:\n        timesteps_total", "    stpo:\n        timesteps_total")
    with pytest.raises(ConfigError) as err:
        load_experiments(_write(tmp_path, "t.yaml", text))
    assert "t.yaml line 14: unknown key 'stpo' (did you mean 'stop'?)" in str(err.value)
    # a config key is checked by the config, and located in the file
    text = TUNED.replace("        lr: 5e-4", "        learning_rate: 5e-4")
    exps = load_experiments(_write(tmp_path, "u.yaml", text))
    with pytest.raises(ConfigError) as err:
        resolve_experiment(exps[1], **FLAGS, seed=1)
    assert "u.yaml line 17: unknown config key 'learning_rate'" in str(err.value)
    assert "did you mean 'lr'" in str(err.value)
    # a bad value too, in a JSON file
    path = _write(
        tmp_path, "v.json", '{"run": "PG",\n "env": "CartPole-v1",\n "config": {\n  "gamma": 3}}'
    )
    with pytest.raises(ConfigError) as err:
        resolve_experiment(load_experiments(path)[0], **FLAGS, seed=1)
    assert "v.json line 4: config key 'gamma': invalid value 3" in str(err.value)


def test_invalid_yaml_names_line_and_column(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_experiments(_write(tmp_path, "bad.yaml", "run: PG\nenv: [CartPole-v1\n"))
    assert "invalid YAML at line 3" in str(err.value)
    with pytest.raises(ConfigError) as err:
        load_experiments(_write(tmp_path, "list.yaml", "- run: PG\n"))
    assert "expected a mapping" in str(err.value)


def test_cli_runs_every_experiment_of_a_yaml_file_one_after_another(tmp_path: Path) -> None:
    text = TUNED.replace("timesteps_total: 1e5", "training_iteration: 1").replace(
        "        lr: 5e-4\n        input_evaluation: simulation\n",
        "        train_batch_size: 200\n        model: {fcnet_hiddens: [16]}\n",
    )
    path = _write(tmp_path, "t.yaml", text)
    res = CliRunner().invoke(
        main, ["train", "-f", path, "--local-dir", str(tmp_path), "-q", "--seed", "1"]
    )
    assert res.exit_code == 0, res.stderr
    results = [json.loads(line) for line in res.stdout.splitlines()]
    assert [Path(r["logdir"]).parent.name for r in results] == ["cartpole-pg", "cartpole-pg-2"]
    assert Path(results[1]["logdir"]).name.startswith("PG_CartPole-v0_")
    res = CliRunner().invoke(
        main,
        ["train", "-f", path, "--experiment", "cartpole-pg-2", "--local-dir", str(tmp_path / "o")]
        + ["-q", "--seed", "1"],
    )
    assert res.exit_code == 0, res.stderr
    assert [Path(json.loads(x)["logdir"]).parent.name for x in res.stdout.splitlines()] == [
        "cartpole-pg-2"
    ]


def test_a_bad_later_experiment_stops_the_file_before_anything_runs(tmp_path: Path) -> None:
    path = _write(tmp_path, "t.yaml", TUNED.replace("lr: 5e-4", "lr: -1"))
    res = CliRunner().invoke(main, ["train", "-f", path, "--local-dir", str(tmp_path / "r")])
    assert res.exit_code == 2
    assert "line 17: config key 'lr'" in res.stderr
    assert not (tmp_path / "r").exists()


def test_the_yaml_config_is_the_json_configs_twin() -> None:
    root = Path(__file__).resolve().parents[1] / "configs"
    (from_yaml,) = load_experiments(str(root / "pg-cartpole.yaml"))
    (from_json,) = load_experiments(str(root / "pg-cartpole.json"))
    assert from_yaml.data == {"name": "cartpole-pg", **from_json.data}
    spec = resolve_experiment(from_yaml, **FLAGS, seed=1)
    assert spec.config.lambda_ == 0.95 and spec.name == "cartpole-pg"


def test_yaml_nested_by_indentation_too_deep_is_a_config_error(tmp_path: Path) -> None:
    """Indentation nests without brackets, so only the parser sees the depth."""
    lines = [" " * i + f"k{i}:" for i in range(1200)]
    path = tmp_path / "deep.yaml"
    path.write_text("\n".join(lines) + " 1\n")
    with pytest.raises(ConfigError, match="nested too deeply"):
        load_experiments(str(path))


# -- resolve(): how file values and flags merge ------------------------------------------------

NO_FLAGS = {"run": None, "env": None, "config_text": None, "stop_text": None, "name": None}
FILE = {
    "run": "PG",
    "env": "CartPole-v1",
    "config": {"lr": 0.01, "gamma": 0.9},
    "stop": {"training_iteration": 5, "timesteps_total": 1000},
    "name": "from-file",
    "seed": 7,
}


def test_resolve_takes_everything_from_the_file_without_flags() -> None:
    from offrl.runspec import resolve

    spec = resolve(FILE, **NO_FLAGS, seed=None)
    assert (spec.run, spec.env, spec.name, spec.seed) == ("PG", "CartPole-v1", "from-file", 7)
    assert spec.config.lr == 0.01 and spec.config.gamma == 0.9
    assert spec.config.seed == 7  # the seed used is in the config (params.json)
    assert spec.stop == {"training_iteration": 5, "timesteps_total": 1000}


def test_flags_win_over_the_file_and_config_keys_merge_one_by_one() -> None:
    from offrl.runspec import resolve

    spec = resolve(
        FILE,
        run="dqn",  # case-insensitive, made canonical
        env="CartPole-v0",
        config_text='{"lr": 0.002}',
        stop_text='{"timesteps_total": 50}',
        name="from-flag",
        seed=11,
    )
    assert (spec.run, spec.env, spec.name, spec.seed) == ("DQN", "CartPole-v0", "from-flag", 11)
    assert spec.config.lr == 0.002  # --config's key wins ...
    assert spec.config.gamma == 0.9  # ... and the file's other keys stay
    assert spec.stop == {"timesteps_total": 50}  # --stop replaces the file's stop whole
    assert spec.config.seed == 11


def test_seed_comes_from_the_flag_then_the_file_then_its_config_then_chance() -> None:
    from offrl.runspec import resolve

    base = {"run": "PG", "env": "CartPole-v1"}
    assert resolve({**base, "seed": 3, "config": {"seed": 4}}, **NO_FLAGS, seed=2).seed == 2
    assert resolve({**base, "seed": 3, "config": {"seed": 4}}, **NO_FLAGS, seed=None).seed == 3
    assert resolve({**base, "config": {"seed": 4}}, **NO_FLAGS, seed=None).seed == 4
    drawn = resolve(base, **NO_FLAGS, seed=None)
    assert 0 <= drawn.seed < 2**31 and drawn.config.seed == drawn.seed
    assert drawn.name == "default" and drawn.stop == {}


@pytest.mark.parametrize(
    ("data", "flags", "needle"),
    [
        ({"env": "CartPole-v1"}, {}, "missing --run"),
        ({"run": "PG"}, {}, "missing --env"),
        ({"run": "A2C", "env": "CartPole-v1"}, {}, "unknown algorithm"),
        ({"run": "PG", "env": "CartPole-v1", "config": [1]}, {}, "'config' must be a JSON object"),
        ({"run": "PG", "env": "CartPole-v1"}, {"config_text": "[1]"}, "--config"),
        ({"run": "PG", "env": "CartPole-v1"}, {"stop_text": '{"reward": 1}'}, "'reward'"),
        ({"run": "PG", "env": "CartPole-v1", "config": {"lr": -1}}, {}, "'lr'"),
        # a stop key this run never reports is refused before anything runs
        ({"run": "PG", "env": "CartPole-v1", "stop": {"epoch": 1}}, {}, "read recorded files"),
    ],
)
def test_resolve_refuses_with_a_config_error(data: dict, flags: dict, needle: str) -> None:
    from offrl.runspec import resolve

    with pytest.raises(ConfigError) as err:
        resolve(data, **{**NO_FLAGS, **flags}, seed=1)
    assert needle in str(err.value)
    assert err.value.exit_code == 2


def test_a_bad_key_given_by_flag_gets_no_file_line(tmp_path: Path) -> None:
    """The file's line is named only for keys that came from the file."""
    path = _write(tmp_path, "r.json", '{"run": "PG",\n "env": "CartPole-v1",\n "config": {}}')
    (exp,) = load_experiments(path)
    with pytest.raises(ConfigError) as err:
        resolve_experiment(exp, **{**FLAGS, "config_text": '{"gamma": 3}'}, seed=1)
    assert "config key 'gamma'" in str(err.value)
    assert "r.json" not in str(err.value)
