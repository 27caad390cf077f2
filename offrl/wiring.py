"""Build a :class:`~offrl.trainer.Run` from a resolved config: the one place that
turns ``input``, ``output``, ``num_workers`` and ``input_evaluation`` settings into
objects (samplers, readers, worker sets, the writer, estimators), and closes them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from offrl.algos.base import Algorithm
from offrl.batch_sources import SAMPLER, OfflineSource, SamplerSource, TrainingSource
from offrl.config import CommonConfig
from offrl.envs import env_spaces
from offrl.rollout import Sampler
from offrl.seeding import Stream, generator, int_seed
from offrl.trainer import Run


def _offline_reader(
    spec: Any, cfg: CommonConfig, seed: int, obs_space: Any, act_space: Any, where: str
) -> OfflineSource:
    from offrl.io.input import make_input_reader

    reader_seed = int_seed(seed, Stream.READER)
    reader = make_input_reader(spec, config=cfg, seed=reader_seed, worker_index=0, num_workers=1)
    # Check spaces before shuffling, so an error can name the record's file and line.
    return _shuffled(OfflineSource(reader, obs_space, act_space, where), cfg, seed)


def _shuffled(reader: Any, cfg: CommonConfig, seed: int) -> Any:
    """``reader`` behind a shuffle buffer when ``shuffle_buffer_size`` asks for one."""
    if not cfg.shuffle_buffer_size:
        return reader
    from offrl.io.shuffle import ShuffledInput

    return ShuffledInput(reader, cfg.shuffle_buffer_size, generator(seed, Stream.SHUFFLE))


def _input_plan(spec: Any) -> tuple[dict[str, Any], dict[str, float] | None]:
    """``input`` -> ({name: source spec}, probabilities or None)."""
    if isinstance(spec, dict):
        from offrl.io.specs import normalize_mix

        probs = normalize_mix(spec)
        return {name: name for name in probs}, probs
    if spec == SAMPLER:
        return {SAMPLER: SAMPLER}, None
    return {"offline": spec}, None


def _worker_set(
    algo_name: str,
    cfg: CommonConfig,
    env_id: str,
    seed: int,
    logdir: Path,
    spec: Any,
    ray_address: str | None,
) -> Any:
    """N rollout worker processes (or Ray actors) for one input source."""
    if cfg.framework == "ray" or ray_address:
        from offrl.workers.ray import RayWorkerSet

        return RayWorkerSet(
            algo_name,
            cfg,
            env_id,
            seed,
            logdir,
            cfg.num_workers,
            address=ray_address,
            input_spec=spec,
        )
    from offrl.workers import WorkerSet

    return WorkerSet(algo_name, cfg, env_id, seed, logdir, cfg.num_workers, input_spec=spec)


@contextlib.contextmanager
def build_run(
    algo: Algorithm,
    algo_name: str,
    cfg: CommonConfig,
    env_id: str,
    seed: int,
    logdir: Path,
    ray_address: str | None = None,
) -> Iterator[Run]:
    """A ready Run; on exit every sampler and worker is closed and every output file complete.

    With ``num_workers`` > 0 the workers sample (and write ``output``) or read their
    shard of the input; the learner only learns.
    """
    obs_space, act_space = env_spaces(env_id)
    specs, probs = _input_plan(cfg.input)
    episode_sources: list[Any] = []  # anything with pop_episodes()
    worker_sets: list[Any] = []
    sources: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        for name, spec in specs.items():
            if cfg.num_workers > 0:
                from offrl.workers import WorkerSource

                ws = _worker_set(algo_name, cfg, env_id, seed, logdir, spec, ray_address)
                stack.callback(ws.close)
                worker_sets.append(ws)
                src = WorkerSource(ws, algo)
                if spec == SAMPLER:
                    episode_sources.append(ws)
                    sources[name] = src
                else:
                    checked = OfflineSource(src, obs_space, act_space, f"input {name!r}")
                    sources[name] = _shuffled(checked, cfg, seed)
            elif spec == SAMPLER:
                sampler = Sampler(
                    env_id,
                    cfg.num_envs_per_worker,
                    algo,
                    algo.rollout_fragment_length(),
                    int_seed(seed, Stream.SAMPLER),
                    cfg.horizon,
                    remote_envs=cfg.remote_worker_envs,
                )
                stack.callback(sampler.close)
                episode_sources.append(sampler)
                sources[name] = SamplerSource(sampler)
            else:
                sources[name] = _offline_reader(
                    spec, cfg, seed, obs_space, act_space, f"input {name!r}"
                )
        simulate = None
        if "simulation" in cfg.input_evaluation and SAMPLER not in specs:
            sim = Sampler(
                env_id,
                cfg.num_envs_per_worker,
                algo,
                algo.rollout_fragment_length(),
                int_seed(seed, Stream.SIMULATION),
                cfg.horizon,
                remote_envs=cfg.remote_worker_envs,
            )
            stack.callback(sim.close)
            episode_sources.append(sim)

            def simulate() -> None:
                # Act as many env steps as the learner consumed rows, so the simulated
                # episodes keep pace with training (one fragment is only a few steps).
                rows = 0
                while rows < algo.steps_per_iteration():
                    rows += sim.next().count

        output = None
        if cfg.output is not None and cfg.num_workers == 0:
            from offrl.io.output import close_output, make_output_writer

            output = make_output_writer(cfg.output, logdir=logdir, worker_index=0, config=cfg)
            stack.callback(close_output, output)
        estimators = _estimators(cfg, act_space, obs_space, seed)

        def pop_episodes() -> list[tuple[float, int]]:
            return [ep for s in episode_sources for ep in s.pop_episodes()]

        local_samplers = [s for s in episode_sources if isinstance(s, Sampler)]
        run = Run(
            algo=algo,
            config=cfg,
            env_id=env_id,
            seed=seed,
            source=TrainingSource(sources, probs, generator(seed, Stream.INPUT_MIX)),
            pop_episodes=pop_episodes,
            output=output,
            estimators=estimators,
            simulate=simulate,
            samplers=local_samplers,
        )
        if cfg.input_evaluation:
            from offrl.estimators import skipped_estimators

            run.warnings.extend(skipped_estimators(cfg.input_evaluation, act_space))
        run.warning_sources.extend(worker_sets)  # their start-up and restart warnings
        yield run


def _estimators(cfg: CommonConfig, act_space: Any, obs_space: Any, seed: int) -> dict[str, Any]:
    if not any(n != "simulation" for n in cfg.input_evaluation):
        return {}
    from offrl.estimators import estimators_for

    return estimators_for(
        cfg.input_evaluation,
        gamma=cfg.gamma,
        observation_space=obs_space,
        action_space=act_space,
        seed=seed,
    )
