"""``offrl train``: resolve the run, build it, drive the training loop, report."""

from __future__ import annotations

import json
import math
import re
import stat
from pathlib import Path
from typing import Any

import click

from offrl.algos import get_algorithm, get_config_class
from offrl.config import MAXIMA, field_meta, user_key
from offrl.envs import env_spaces
from offrl.errors import ConfigError, OffrlRuntimeError
from offrl.io.input import check_input_exists
from offrl.io.output import check_output_writable
from offrl.progress import Progress, make_console, show_each_warning_once
from offrl.restore import restore_policy_state
from offrl.results import (
    ResultLogger,
    clean_result,
    default_local_dir,
    load_run_checkpoint,
    make_run_dir,
    save_checkpoint,
)
from offrl.runspec import Experiment, RunSpec, load_experiments, resolve_experiment
from offrl.seeding import Stream, int_seed
from offrl.signals import StopFlag, graceful_signals
from offrl.trainer import Counters, Run, should_stop, train


def print_config_help(run: str | None) -> None:
    """Every config key of ``run`` with its default and help text."""
    from offrl.algos import algorithm_names, canonical_name

    names = [canonical_name(run)] if run else algorithm_names()
    for name in names:
        config_cls = get_config_class(name)
        click.echo(f"{name} config keys:")
        defaults = config_cls().to_dict()
        for field_name, meta in field_meta(config_cls).items():
            key = user_key(field_name)
            bound = MAXIMA.get(field_name)
            limit = f" (max {bound:,})" if bound is not None else ""
            click.echo(f"  {key} = {json.dumps(defaults[key])}{limit}\n      {meta['help']}")
    click.echo(
        f"Bounds: every hidden-layer width (model.fcnet_hiddens, hiddens) at most "
        f"{MAXIMA['layer_width']:,}, at most {MAXIMA['layers']} layers; "
        f"rollout_fragment_length * num_envs_per_worker at most {MAXIMA['fragment_rows']:,}."
    )


def _checkpoint_state(spec: RunSpec, run: Run) -> dict[str, Any]:
    import torch

    return {
        "run": spec.run,
        "env": spec.env,
        "config": spec.config.to_dict(),
        "algo": run.algo.get_state(),
        "counters": run.counters.state(),
        # episodes in progress, so a resumed run continues exactly (None: env not savable)
        "samplers": run.sampler_states(),
        "torch_rng": torch.get_rng_state(),
    }


def _restore(path: str, spec: RunSpec, algo: Any) -> tuple[Counters, dict[str, Any]]:
    import torch

    state = load_run_checkpoint(path)
    if state.get("run") != spec.run:
        raise ConfigError(
            f"--restore {path}: the checkpoint is from {state.get('run')}, not {spec.run}; "
            f"use --run {state.get('run')}"
        )
    restore_policy_state(algo, state, spec.env, spec.config.to_dict(), f"--restore {path}")
    try:
        if "torch_rng" in state:
            torch.set_rng_state(state["torch_rng"])
        return Counters.from_state(state["counters"]), state
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise OffrlRuntimeError(
            f"--restore {path}: the checkpoint's counters or RNG state are unreadable "
            f"({type(e).__name__}: {str(e)[:200]})"
        ) from None


def _restore_samplers(run: Run, restored: dict[str, Any], path: str) -> bool:
    """``run.restore_samplers`` from a checkpoint (data from a file: any entry may be wrong)."""
    try:
        return run.restore_samplers(restored.get("samplers"))
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError, IndexError) as e:
        raise OffrlRuntimeError(
            f"--restore {path}: the checkpoint's episodes in progress are unreadable "
            f"({type(e).__name__}: {str(e)[:200]})"
        ) from None


# A -f file is a small text file: anything bigger, not a regular file (/dev/zero, a FIFO)
# or not UTF-8 is refused before it is parsed; so is JSON nested deeper than any config.
MAX_RUN_FILE_BYTES = 1 << 20
MAX_JSON_DEPTH = 64
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)


def json_depth(text: str) -> int:
    """How deeply ``[`` and ``{`` nest in ``text`` (brackets inside strings do not count)."""
    depth = deepest = 0
    for ch in re.findall(r"[\[\]{}]", _JSON_STRING.sub("", text)):
        depth += 1 if ch in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


def check_json_depth(text: str, what: str) -> None:
    if json_depth(text) > MAX_JSON_DEPTH:
        raise ConfigError(f"{what}: nested more than {MAX_JSON_DEPTH} levels deep; no config is")


def check_run_file(path: str) -> None:
    """ConfigError when the ``-f`` file is not a small UTF-8 text file of sane nesting."""
    p = Path(path).expanduser()
    try:
        info = p.stat()
    except OSError:
        return  # load_run_file says why it cannot be read
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"-f {path}: not a regular file; give a JSON run file")
    if info.st_size > MAX_RUN_FILE_BYTES:
        raise ConfigError(
            f"-f {path}: {info.st_size:,} bytes is larger than a run file can be "
            f"({MAX_RUN_FILE_BYTES:,} bytes at most)"
        )
    try:
        with open(p, "rb") as f:
            raw = f.read(MAX_RUN_FILE_BYTES + 1)
    except OSError as e:
        raise ConfigError(f"-f {path}: cannot read the file: {e.strerror}") from None
    if len(raw) > MAX_RUN_FILE_BYTES:
        raise ConfigError(f"-f {path}: larger than {MAX_RUN_FILE_BYTES:,} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"-f {path}: not a text file (byte {e.start} is not UTF-8); give a JSON run file"
        ) from None
    check_json_depth(text, f"-f {path}")


def check_file_options(file_data: dict[str, Any], run_file: str | None) -> None:
    """ConfigError for a ``-f`` file's local_dir, checkpoint_freq or checkpoint_at_end of the
    wrong type (the file is parsed JSON: anything can be there)."""
    rules = {
        "local_dir": (str, "a string"),
        "checkpoint_freq": (int, "an integer from 0 to 1,000,000,000"),
        "checkpoint_at_end": (bool, "true or false"),
    }
    for key, (kind, allowed) in rules.items():
        if key not in file_data:
            continue
        value = file_data[key]
        ok = isinstance(value, kind) and (kind is bool or not isinstance(value, bool))
        if ok and kind is int:
            ok = 0 <= value <= 1_000_000_000
        if not ok:
            raise ConfigError(
                f"-f {run_file}: {key!r} is {json.dumps(value)[:60]}; allowed: {allowed}"
            )


def check_stop_finite(stop: dict[str, Any]) -> None:
    """ConfigError for a NaN or infinite --stop threshold (NaN is never reached)."""
    for key, value in stop.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(
                f"--stop {key!r}: threshold {value} is not a finite number, so the run "
                "would never stop; give a number"
            )


def run_train(
    run: str | None,
    env: str | None,
    config_text: str | None,
    stop_text: str | None,
    run_file: str | None,
    local_dir: Path | None,
    name: str | None,
    seed: int | None,
    checkpoint_freq: int,
    checkpoint_at_end: bool,
    restore: str | None,
    help_config: bool,
    verbose: bool,
    quiet: bool,
    ray_address: str | None = None,
    experiment: str | None = None,
) -> int:
    """Run the training (every experiment of a ``-f`` file, one after another); the exit code.

    Every experiment is resolved and checked before the first one starts.
    """
    if help_config:
        print_config_help(run)
        return 0
    show_each_warning_once()
    for text, what in ((config_text, "--config"), (stop_text, "--stop")):
        if text:
            check_json_depth(text, what)
    if run_file:
        check_run_file(run_file)
    experiments = load_experiments(run_file, experiment) if run_file else [Experiment({})]
    specs = [
        resolve_experiment(
            exp,
            run=run,
            env=env,
            config_text=config_text,
            stop_text=stop_text,
            name=name,
            seed=seed,
        )
        for exp in experiments
    ]
    for exp, spec in zip(experiments, specs, strict=True):
        check_stop_finite(spec.stop)
        check_file_options(exp.data, run_file)
    code = 0
    for exp, spec in zip(experiments, specs, strict=True):
        code = _train_one(
            spec,
            exp.data,
            local_dir,
            checkpoint_freq,
            checkpoint_at_end,
            restore,
            verbose,
            quiet,
            ray_address,
        )
        if code:
            break
    return code


def _train_one(
    spec: RunSpec,
    file_data: dict[str, Any],
    local_dir: Path | None,
    checkpoint_freq: int,
    checkpoint_at_end: bool,
    restore: str | None,
    verbose: bool,
    quiet: bool,
    ray_address: str | None,
) -> int:
    """Run one training; returns the process exit code."""
    local = Path(local_dir or file_data.get("local_dir") or default_local_dir())
    checkpoint_freq = checkpoint_freq or int(file_data.get("checkpoint_freq", 0))
    checkpoint_at_end = checkpoint_at_end or bool(file_data.get("checkpoint_at_end", False))

    import torch  # only now: a config mistake is reported without loading torch

    from offrl.wiring import build_run

    torch.manual_seed(int_seed(spec.seed, Stream.TORCH_GLOBAL))
    torch.set_num_threads(spec.config.num_threads)
    config_cls, algo_cls = get_algorithm(spec.run)
    obs_space, act_space = env_spaces(spec.env)
    algo = algo_cls(spec.config, obs_space, act_space)
    counters, restored = _restore(restore, spec, algo) if restore else (Counters(), None)

    console = make_console()
    check_input_exists(spec.config)  # config errors before the run directory exists
    check_output_writable(spec.config)
    logdir = make_run_dir(local, spec.name, spec.run, spec.env)
    params = {
        "run": spec.run,
        "env": spec.env,
        "stop": spec.stop,
        **spec.config.to_dict(),
    }
    flag = StopFlag()
    result: dict[str, Any] = {}
    with (
        ResultLogger(logdir) as logger,
        Progress(console, spec.stop, quiet=quiet, verbose=verbose) as progress,
    ):
        logger.write_params(params)
        progress.message(f"offrl: {spec.run} on {spec.env}, seed {spec.seed}; results in {logdir}")
        with (
            build_run(
                algo, spec.run, spec.config, spec.env, spec.seed, logdir, ray_address
            ) as the_run,
            graceful_signals(flag, lambda m: progress.message(m, style="yellow")),
        ):
            the_run.counters = counters
            the_run.stop_requested = flag.is_set  # cut the iteration short after a signal
            if (
                restored is not None
                and the_run.samplers
                and not _restore_samplers(the_run, restored, str(restore))
            ):
                progress.message(
                    "offrl: the checkpoint holds no env state for this setup: "
                    "episodes in progress start anew",
                    style="yellow",
                )
            for result in train(the_run):
                for warning in the_run.take_warnings():
                    progress.message(f"offrl: warning: {warning}", style="yellow")
                logger.log(result)
                progress.update(result)
                it = result["training_iteration"]
                if checkpoint_freq and it % checkpoint_freq == 0:
                    save_checkpoint(logdir, it, _checkpoint_state(spec, the_run))
                if should_stop(result, spec.stop) or flag.signum is not None:
                    break
            if checkpoint_at_end and result:
                path = save_checkpoint(
                    logdir, result["training_iteration"], _checkpoint_state(spec, the_run)
                )
                progress.message(f"offrl: checkpoint written to {path}")
    final = clean_result(result)
    final["logdir"] = str(logdir)
    click.echo(json.dumps(final))
    return flag.exit_code
