"""Checkpoints, env modules, configs and run files are untrusted input too.

A checkpoint is a file people download and share, a config may come from anywhere: none
of them may make offrl run code, allocate beyond its bounds, loop without end or print a
traceback. Each case runs the real command line in process (CliRunner) unless it needs a
separate process (signals, rollout workers). docs/reliability.md lists the cases.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner

from offrl.algos import algorithm_names, get_config_class
from offrl.cli import main
from offrl.config import MAXIMA, from_dict
from offrl.errors import ConfigError

PWNED = "pwned"  # the file (in the test's tmp_path) a pickle payload would create
TINY_PG = {"train_batch_size": 50, "model": {"fcnet_hiddens": [8]}}


def invoke(*args: str) -> tuple[int, str, str]:
    res = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return res.exit_code, res.stdout, res.stderr


def train(
    tmp: Path, *extra: str, env: str = "CartPole-v1", config: dict | None = None
) -> list[str]:
    return [
        "train",
        "--run",
        "PG",
        "--env",
        env,
        "--local-dir",
        str(tmp),
        "--config",
        json.dumps(TINY_PG if config is None else config),
        "--stop",
        '{"training_iteration": 1}',
        "-q",
        *extra,
    ]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real one-iteration PG CartPole-v1 checkpoint (hidden layer of 8)."""
    tmp = tmp_path_factory.mktemp("ckpt")
    code, out, err = invoke(*train(tmp, "--checkpoint-at-end"))
    assert code == 0, err
    return Path(json.loads(out)["logdir"]) / "checkpoint_000001"


def edited(checkpoint: Path, tmp: Path, edit: Any) -> str:
    """A copy of ``checkpoint`` whose state dict went through ``edit`` (in place)."""
    state = torch.load(checkpoint / "state.pt", weights_only=True)
    edit(state)
    out = tmp / "checkpoint_000001"
    out.mkdir()
    torch.save(state, out / "state.pt")
    return str(out)


# -- 1. a checkpoint is data: it never makes offrl import a module or call anything ---------


@pytest.mark.parametrize("env", ["this:x", "code:interact", "gymnasium.envs:CartPoleEnv"])
@pytest.mark.parametrize("command", ["rollout", "evaluate-offline"])
def test_checkpoint_env_naming_a_module_is_refused_and_not_imported(
    checkpoint: Path, tmp_path: Path, env: str, command: str
) -> None:
    ck = edited(checkpoint, tmp_path, lambda s: s.update(env=env))
    sys.modules.pop("this", None)
    sys.modules.pop("code", None)
    args = [command, ck] + (["--input", str(tmp_path)] if command != "rollout" else [])
    code, out, err = invoke(*args)
    assert code == 2, err
    assert "not a registered gymnasium id" in err and env in err and "--env" in err
    assert "this" not in sys.modules and "code" not in sys.modules
    assert out == "" and "Traceback" not in err


def test_checkpoint_env_module_runs_only_with_env_on_the_command_line(
    checkpoint: Path, tmp_path: Path
) -> None:
    ck = edited(checkpoint, tmp_path, lambda s: s.update(env="gymnasium.envs:CartPoleEnv"))
    code, out, err = invoke("rollout", ck, "--episodes", "1", "--env", "CartPole-v1")
    assert code == 0, err
    assert json.loads(out)["env"] == "CartPole-v1"


class Evil:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.path}",))


def test_pickled_object_in_checkpoint_is_refused_without_torchs_unsafe_advice(
    tmp_path: Path,
) -> None:
    ck = tmp_path / "checkpoint_000001"
    ck.mkdir()
    evil = Evil(tmp_path / PWNED)
    torch.save({"format": 1, "run": "PG", "env": "CartPole-v1", "evil": evil}, ck / "state.pt")
    for args in (["rollout", str(ck)], train(tmp_path, "--restore", str(ck))):
        code, _, err = invoke(*args)
        assert code == 1, err
        assert "refused" in err and "can run code" in err and "posix.system" in err
        assert "weights_only" not in err  # torch's advice to load it unsafely is not repeated
        assert not (tmp_path / PWNED).exists()


@pytest.mark.parametrize("key", ["algo", "run", "config", "env"])
def test_checkpoint_without_an_entry_names_it(checkpoint: Path, tmp_path: Path, key: str) -> None:
    ck = edited(checkpoint, tmp_path, lambda s: s.pop(key))
    code, _, err = invoke("rollout", ck)
    assert code == 1, err
    assert f"no {key!r} entry" in err and "Traceback" not in err


# -- 2. every size a config or checkpoint can set is bounded --------------------------------


def _integer_sizes(cls: type) -> list[str]:
    out = []
    for f in dataclasses.fields(cls):
        types = f.metadata["types"]
        if (int in types or f.name == "training_intensity") and bool not in types:
            out.append(f.name)
    return out


def test_every_integer_config_key_has_a_maximum() -> None:
    for name in algorithm_names():
        missing = [k for k in _integer_sizes(get_config_class(name)) if k not in MAXIMA]
        assert not missing, f"{name}: keys without a bound in config.MAXIMA: {missing}"


@pytest.mark.parametrize("algo", ["PG", "DQN"])
def test_each_bound_is_enforced_at_its_value_plus_one(algo: str) -> None:
    cls = get_config_class(algo)
    for key in _integer_sizes(cls):
        from_dict(cls, {key: MAXIMA[key]})  # the bound itself is allowed
        with pytest.raises(ConfigError, match=rf"'{key}'.*{MAXIMA[key]:,}"):
            from_dict(cls, {key: MAXIMA[key] + 1})


@pytest.mark.parametrize(
    ("algo", "key"),
    [
        ("PG", "train_batch_size"),
        ("PG", "seed"),
        ("PG", "num_threads"),
        ("PG", "num_workers"),
        ("PG", "num_envs_per_worker"),
        ("PG", "rollout_fragment_length"),
        ("DQN", "n_step"),
        ("DQN", "buffer_size"),
        ("DQN", "timesteps_per_iteration"),
        ("DQN", "training_intensity"),
    ],
)
def test_two_to_the_70_exits_2_naming_key_and_bound(tmp_path: Path, algo: str, key: str) -> None:
    args = train(tmp_path, config={key: 2**70})
    args[2] = algo
    code, _, err = invoke(*args)
    assert code == 2, err
    assert f"'{key}'" in err and f"{MAXIMA[key]:,}" in err and "Traceback" not in err
    assert not list(tmp_path.iterdir())  # refused before a run directory exists


@pytest.mark.parametrize(
    ("config", "needle"),
    [
        ({"model": {"fcnet_hiddens": [999_999_999]}}, "'model.fcnet_hiddens'"),
        ({"model": {"fcnet_hiddens": [8] * 17}}, "17 layers"),
        ({"rollout_fragment_length": 100_000, "num_envs_per_worker": 11}, "1,100,000 rows"),
    ],
)
def test_layer_widths_layers_and_fragment_rows_are_bounded(
    tmp_path: Path, config: dict, needle: str
) -> None:
    code, _, err = invoke(*train(tmp_path, config=config))
    assert code == 2 and needle in err, err


def test_checkpoint_config_is_bounded_before_anything_is_built(
    checkpoint: Path, tmp_path: Path
) -> None:
    ck = edited(checkpoint, tmp_path, lambda s: s["config"]["model"].update(fcnet_hiddens=[10**9]))
    code, _, err = invoke("rollout", ck)
    assert code == 2, err
    assert "'model.fcnet_hiddens'" in err and "16,384" in err


def test_help_config_lists_the_bounds() -> None:
    code, out, _ = invoke("train", "--run", "DQN", "--help-config")
    assert code == 0
    assert f"buffer_size = 50000 (max {MAXIMA['buffer_size']:,})" in out
    assert "16,384" in out and "at most 16 layers" in out


def test_seed_flags_are_bounded(checkpoint: Path, tmp_path: Path) -> None:
    code, _, err = invoke("rollout", str(checkpoint), "--seed", str(2**70))
    assert code == 2 and "--seed" in err
    code, _, err = invoke(*train(tmp_path, "--seed", str(2**40)))
    assert code == 2 and "--seed" in err


# -- 4. stop values, run files and nesting -------------------------------------------------


@pytest.mark.parametrize("stop", ['{"timesteps_total": NaN}', '{"timesteps_total": Infinity}'])
def test_non_finite_stop_threshold_exits_2(tmp_path: Path, stop: str) -> None:
    args = train(tmp_path)
    args[args.index("--stop") + 1] = stop
    code, _, err = invoke(*args)
    assert code == 2 and "timesteps_total" in err and "never stop" in err, err


def test_run_file_that_is_not_a_regular_file_is_refused() -> None:
    code, _, err = invoke("train", "-f", "/dev/zero")
    assert code == 2 and "/dev/zero" in err and "not a regular file" in err


def test_huge_run_file_is_refused_without_reading_it(tmp_path: Path) -> None:
    big = tmp_path / "big.json"
    with open(big, "wb") as f:
        f.truncate(3 << 30)  # a sparse 3 GB file
    code, _, err = invoke("train", "-f", str(big))
    assert code == 2 and "big.json" in err and "1,048,576" in err


def test_binary_run_file_is_refused(tmp_path: Path) -> None:
    binary = tmp_path / "run.json"
    binary.write_bytes(b'{"run": "PG"}\n\xff\xfe\x00garbage')
    code, _, err = invoke("train", "-f", str(binary))
    assert code == 2 and "run.json" in err and "not a text file" in err, err


@pytest.mark.parametrize("where", ["--config", "--stop", "-f"])
def test_deeply_nested_json_exits_2(tmp_path: Path, where: str) -> None:
    deep = "[" * 5000 + "]" * 5000
    if where == "-f":
        path = tmp_path / "deep.json"
        path.write_text('{"config": {"model": ' + deep + "}}")
        args = ["train", "-f", str(path)]
    else:
        args = train(tmp_path)
        args[args.index(where) + 1] = '{"x": ' + deep + "}"
    code, _, err = invoke(*args)
    assert code == 2 and "nested more than 64 levels" in err and where in err, err


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    from offrl.commands.train import json_depth

    assert json_depth('{"a": "[[[[[[[[{{{{", "b": [[1]]}') == 3
    assert json_depth('{"a": "\\"[[[["}') == 1


# -- 6. checkpoints that do not fit the run: name what differs ------------------------------


def test_restore_with_other_layer_widths_names_them(checkpoint: Path, tmp_path: Path) -> None:
    config = {**TINY_PG, "model": {"fcnet_hiddens": [16]}}
    code, _, err = invoke(*train(tmp_path, "--restore", str(checkpoint), config=config))
    assert code == 2, err
    assert "does not fit" in err and "[8]" in err and "[16]" in err and "Traceback" not in err


def test_rollout_in_another_env_names_both_envs(checkpoint: Path) -> None:
    code, _, err = invoke("rollout", str(checkpoint), "--env", "Acrobot-v1")
    assert code == 2, err
    assert "'CartPole-v1', not 'Acrobot-v1'" in err and "Traceback" not in err


def test_restore_in_another_env_names_both_envs(checkpoint: Path, tmp_path: Path) -> None:
    code, _, err = invoke(*train(tmp_path, "--restore", str(checkpoint), env="Acrobot-v1"))
    assert code == 2, err
    assert "'CartPole-v1', not 'Acrobot-v1'" in err


# -- 7. env failures: "env X failed at <when>", exit 1, the env's traceback only with -v ----


@pytest.mark.parametrize(
    ("env", "needles"),
    [
        ("tests.env_raises_on_import:Env", ["failed at import", "cannot be imported"]),
        ("tests.env_exits_on_import:Env", ["failed at import", "SystemExit"]),
        ("tests.bad_envs:RaisesInInit", ["failed at construction", "no licence server"]),
        ("tests.bad_envs:RaisesInReset", ["failed at reset", "simulator not running"]),
        ("tests.bad_envs:RaisesInStep", ["failed at step 3", "physics exploded"]),
        ("tests.bad_envs:ExitsInStep", ["failed at step 1", "SystemExit"]),
        ("tests.bad_envs:FourValues", ["failed at step 1", "ValueError"]),
        ("tests.bad_envs:WrongShape", ["failed at step 1"]),
        ("tests.bad_envs:NaNReward", ["non-finite reward (nan) at step 3"]),
        ("tests.bad_envs:InfObservation", ["non-finite observation (inf) at step 3"]),
    ],
)
def test_env_failure_is_named_with_exit_1(tmp_path: Path, env: str, needles: list[str]) -> None:
    for mod in ("tests.env_raises_on_import", "tests.env_exits_on_import"):
        sys.modules.pop(mod, None)
    code, out, err = invoke(*train(tmp_path, env=env))
    assert code == 1, err
    assert f"env {env}" in err and all(n in err for n in needles), err
    assert "Traceback" not in err and out == ""


def test_env_traceback_is_shown_with_verbose(tmp_path: Path) -> None:
    code, _, err = invoke(*train(tmp_path, "-v", env="tests.bad_envs:RaisesInStep"))
    assert code == 1
    assert "Traceback" in err and "bad_envs.py" in err and "physics exploded" in err


def test_rollout_in_an_env_of_other_spaces_says_it_does_not_fit(checkpoint: Path) -> None:
    code, _, err = invoke("rollout", str(checkpoint), "--env", "tests.bad_envs:NaNReward")
    assert code == 2 and "does not fit" in err and "Traceback" not in err, err


class Zeros:
    def compute_actions(self, obs: Any, *, explore: bool) -> tuple[Any, dict]:
        import numpy as np

        return np.zeros(len(obs), dtype=np.int64), {}


def test_non_finite_reward_in_evaluation_episodes_is_named() -> None:
    from offrl.errors import OffrlRuntimeError
    from offrl.rollout import evaluate

    with pytest.raises(OffrlRuntimeError, match="non-finite reward .nan. at step 3"):
        evaluate("tests.bad_envs:NaNReward", Zeros(), 2, seed=0)


@pytest.mark.slow
def test_env_failure_in_a_rollout_worker_is_named(tmp_path: Path) -> None:
    from tests.clitools import run_offrl

    config = {**TINY_PG, "num_workers": 1}
    args = train(tmp_path, env="tests.bad_envs:RaisesInStep", config=config)
    proc = run_offrl(args, tmp_path, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert "rollout worker 1 failed" in proc.stderr
    assert "env tests.bad_envs:RaisesInStep failed at step 3" in proc.stderr
    assert "Traceback" not in proc.stderr


# -- 9. evaluate-offline writes JSON, never bare NaN ----------------------------------------


def test_evaluate_offline_prints_null_for_nan(monkeypatch: pytest.MonkeyPatch) -> None:
    import offrl.commands.evaluate as ev

    def fake(*args: Any, **kwargs: Any) -> tuple[dict, list[str]]:
        return {"is": {"v_target": float("nan"), "v_behavior": 1.5, "ess": float("inf")}}, []

    monkeypatch.setattr(ev, "run_evaluate_offline", fake)
    code, out, err = invoke("evaluate-offline", "ck", "--input", "x", "-q")
    assert code == 0, err

    def refuse(token: str) -> None:
        raise AssertionError(f"not JSON: {token}")

    parsed = json.loads(out, parse_constant=refuse)
    assert parsed["off_policy_estimation"]["is"] == {
        "v_target": None,
        "v_behavior": 1.5,
        "ess": None,
    }
    assert "null" in err and "NaN" in err  # the note says why


# -- 3. signals: the first stops after the iteration, a second stops at once ----------------


@pytest.mark.slow
@pytest.mark.parametrize(
    ("sig", "code", "hint"),
    [
        (15, 143, "send SIGTERM (or SIGINT) again to stop at once"),
        (2, 130, "Ctrl-C again to stop at once"),
    ],
)
def test_second_signal_stops_a_run_whose_env_hangs(
    tmp_path: Path, sig: int, code: int, hint: str
) -> None:
    import time

    from tests.clitools import start_offrl

    args = train(tmp_path, env="tests.bad_envs:HangsInStep", config={**TINY_PG, "output": "logdir"})
    args.remove("-q")
    proc = start_offrl(args, tmp_path)
    try:
        deadline = time.time() + 60
        while time.time() < deadline and not list(tmp_path.glob("default/*/params.json")):
            time.sleep(0.1)
        time.sleep(1.0)  # inside the hanging step() by now
        proc.send_signal(sig)
        time.sleep(1.0)
        assert proc.poll() is None  # the first signal waits for the iteration, which hangs
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == code, err
    assert hint in err and "stopped at once" in err and "Traceback" not in err
    logdir = next(tmp_path.glob("default/*"))
    assert json.loads((logdir / "params.json").read_text())["env"] == "tests.bad_envs:HangsInStep"


def test_a_signal_ends_the_iteration_at_the_next_batch() -> None:
    import numpy as np

    from offrl.batch import SampleBatch
    from offrl.trainer import Run, _feed

    class Algo:
        def steps_per_iteration(self) -> int:
            return 1000

        def postprocess(self, batch: SampleBatch) -> SampleBatch:
            return batch

        def learn(self, batch: SampleBatch, t: int) -> dict[str, float]:
            return {}

    class Source:
        taken = 0

        def next(self) -> tuple[SampleBatch, bool]:
            Source.taken += 1
            return SampleBatch({"rewards": np.zeros(10, dtype=np.float32)}), False

    from offrl.algos.configs import PGConfig

    run = Run(Algo(), PGConfig(), "CartPole-v1", 0, Source(), list)  # type: ignore[arg-type]
    run.stop_requested = lambda: Source.taken >= 2  # the signal arrives after two batches
    _, rows, _, _ = _feed(run)
    assert rows == 20 and Source.taken == 2


@pytest.mark.parametrize(
    ("key", "value"),
    [("checkpoint_freq", "often"), ("checkpoint_freq", 2**70), ("local_dir", 7)],
)
def test_run_file_options_of_the_wrong_type_exit_2(tmp_path: Path, key: str, value: Any) -> None:
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"run": "PG", "env": "CartPole-v1", key: value}))
    code, _, err = invoke("train", "-f", str(path))
    assert code == 2 and f"'{key}'" in err and "Traceback" not in err, err


def test_readme_lists_every_bound() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    bounds = readme.split("### Bounds", 1)[1].split("\n## ", 1)[0]
    for key, bound in MAXIMA.items():
        assert f"| `{key}` | {bound:,} |" in bounds, key


def test_restore_with_unreadable_sampler_state_is_named(checkpoint: Path, tmp_path: Path) -> None:
    def garble(state: dict) -> None:
        state["samplers"] = [{"env": {"state": "not a tensor"}}]

    ck = edited(checkpoint, tmp_path, garble)
    code, _, err = invoke(*train(tmp_path, "--restore", ck))
    assert code == 1, err
    assert "episodes in progress are unreadable" in err and "Traceback" not in err


def test_evaluate_offline_adds_no_note_when_every_estimate_is_a_number(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import offrl.commands.evaluate as ev

    def fake(*args: Any, **kwargs: Any) -> tuple[dict, list[str]]:
        return {"is": {"v_target": 1.0, "v_target_std_err": None}}, []

    monkeypatch.setattr(ev, "run_evaluate_offline", fake)
    code, out, err = invoke("evaluate-offline", "ck", "--input", "x", "-q")
    assert code == 0 and "note" not in err
    assert json.loads(out)["off_policy_estimation"]["is"]["v_target"] == 1.0
