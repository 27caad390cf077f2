"""The training loop: ``train(run)`` yields one result dict per iteration.

A :class:`Run` holds everything a run is made of (algorithm, experience source,
output writer, estimators, counters); ``offrl/wiring.py`` builds it from the
config. The caller (the CLI) drives the generator, logs each result, checks
:func:`should_stop` and writes checkpoints.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from offrl.batch import SampleBatch
from offrl.config import CommonConfig, suggest
from offrl.errors import ConfigError
from offrl.rollout import evaluate
from offrl.seeding import Stream, int_seed

if TYPE_CHECKING:  # the protocol module imports torch; the stop checks must not
    from offrl.algos.base import Algorithm

EPISODE_WINDOW = 100  # episode stats are over the last 100 episodes, like RLlib

# Keys of every result, online or offline.
ALWAYS_KEYS = frozenset(
    {
        "training_iteration",
        "timesteps_total",
        "timesteps_this_iter",
        "time_total_s",
        "time_this_iter_s",
        "num_env_steps_sampled",
        "num_env_steps_per_s",
    }
)
# Keys of runs that have episodes: online (sampler) runs, and offline ones with "simulation".
EPISODE_KEYS = frozenset(
    {
        "episodes_total",
        "episodes_this_iter",
        "episode_reward_mean",
        "episode_reward_min",
        "episode_reward_max",
        "episode_len_mean",
    }
)
# episode_reward_* an offline run takes from its evaluation when evaluation_interval is set
EVALUATION_KEYS = frozenset({"episode_reward_mean", "episode_reward_min", "episode_reward_max"})
# Keys of runs that read recorded files (the readers' metrics).
READER_KEYS = frozenset(
    {
        "epoch",
        "rows_read",
        "bytes_read",
        "files",
        "num_corrupt_lines_skipped",
        "num_rows_new_obs_rebuilt",
        "num_rows_new_obs_invalid",
    }
)
KNOWN_RESULT_KEYS = (
    ALWAYS_KEYS | EPISODE_KEYS | READER_KEYS | {"time_output_write_s", "num_worker_restarts"}
)
RESULT_PREFIXES = (
    "info/learner/",
    "evaluation/",
    "off_policy_estimation/",
    "input/",
)
# What each learner reports under info/learner/ (tests/test_trainer.py checks these lists
# against real runs).
LEARNER_STATS = {
    "PG": frozenset(
        {
            "policy_loss",
            "entropy",
            "vf_loss",
            "total_loss",
            "grad_gnorm",
            "kl",
            "cur_lr",
            "num_grad_updates",
            "stopped_early",
        }
    ),
    "DQN": frozenset(
        {
            "mean_q",
            "min_q",
            "max_q",
            "mean_td_error",
            "loss",
            "cur_lr",
            "epsilon",
            "num_updates",
            "num_target_updates",
            "buffer_size",
        }
    ),
}
# What every estimator reports, in the order the evaluate-offline table shows it (the
# off_policy_estimation/<name>/<key> result keys; `offrl evaluate-offline` adds its own).
ESTIMATE_KEYS = (
    "v_behavior",
    "v_target",
    "v_gain",
    "v_delta",
    "v_target_std_err",
    "v_target_ci_low",
    "v_target_ci_high",
    "ci_includes_model_error",
    "num_episodes",
    "ess",
    "missing_mass",
)
MIX_KEYS = frozenset({"fraction", "row_fraction", "rows", "batches", "batch_fraction"})


def validate_stop(stop: Mapping[str, Any]) -> None:
    """Reject stop criteria no result can ever reach (before training starts)."""
    if not isinstance(stop, Mapping):
        raise ConfigError("--stop must be a JSON object of result key -> threshold")
    for key, value in stop.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"--stop {key!r}: threshold {value!r} must be a number")
        if key not in KNOWN_RESULT_KEYS and not key.startswith(RESULT_PREFIXES):
            raise ConfigError(
                f"--stop: unknown result key {key!r}{suggest(key, sorted(KNOWN_RESULT_KEYS))}; "
                f"known keys: {', '.join(sorted(KNOWN_RESULT_KEYS))}, and keys under "
                f"{', '.join(RESULT_PREFIXES)}"
            )


def _unknown(word: str, known: Collection[str], what: str) -> str:
    return f"{what} reports no {word!r}{suggest(word, sorted(known))}; it reports: " + ", ".join(
        sorted(known)
    )


def stop_problem(key: str, run: str, cfg: CommonConfig) -> str | None:
    """Why this run (algorithm ``run``, config ``cfg``) never reports ``key``, with the fix;
    None when it does."""
    from offrl.io.specs import SAMPLER, reads_files

    spec = cfg.input
    sampled = spec == SAMPLER or (isinstance(spec, dict) and SAMPLER in spec)
    simulated = "simulation" in cfg.input_evaluation
    if key in EPISODE_KEYS and not (sampled or simulated):
        if key in EVALUATION_KEYS and cfg.evaluation_interval:
            return None  # filled from the evaluation's returns
        fix = 'add "input_evaluation": ["simulation"] to the config'
        if key in EVALUATION_KEYS:
            fix += ' (or "evaluation_interval": N)'
        return (
            f"an offline run has no episodes of its own, so it never reports {key!r}; {fix}, "
            "or stop on a key it has (training_iteration, timesteps_total, epoch)"
        )
    if key in READER_KEYS and not reads_files(spec):
        return f"only runs that read recorded files report {key!r} (this one has no file input)"
    if key == "time_output_write_s" and (cfg.output is None or cfg.num_workers > 0):
        return "only runs with an 'output' written by the learner (num_workers 0) report it"
    if key == "num_worker_restarts" and cfg.num_workers == 0:
        return 'only runs with rollout workers report it; set "num_workers": N'
    rest = key.partition("/")[2]
    if key.startswith("evaluation/"):
        if not cfg.evaluation_interval:
            return (
                f"{key!r} comes from evaluation, which this run never does; set "
                '"evaluation_interval": N in the config'
            )
        if rest not in EVALUATION_KEYS:
            return _unknown(rest, EVALUATION_KEYS, "evaluation (evaluation/)")
    if key.startswith("info/learner/"):
        stat = key[len("info/learner/") :]
        if stat not in LEARNER_STATS.get(run, frozenset({stat})):
            return _unknown(stat, LEARNER_STATS[run], f"{run}'s learner (info/learner/)")
    if key.startswith("off_policy_estimation/"):
        name, _, sub = rest.partition("/")
        names = [n for n in cfg.input_evaluation if n != "simulation"]
        if name not in names:
            return (
                f"{key!r} needs the estimator {name!r}, which this run does not run; add it to "
                f'"input_evaluation" (now {names})'
            )
        if sub not in ESTIMATE_KEYS:
            return _unknown(sub, ESTIMATE_KEYS, f"estimator {name!r}")
    if key.startswith("input/"):
        source, _, sub = rest.rpartition("/")
        if not isinstance(spec, dict) or source not in spec:
            mix = sorted(spec) if isinstance(spec, dict) else []
            return (
                f"{key!r} is reported only for a source of an input mix "
                f"{{source: probability}}; this run's mix sources: {mix or 'none'}"
            )
        if sub not in MIX_KEYS:
            return _unknown(sub, MIX_KEYS, f"input source {source!r}")
    return None


def check_stop_reachable(stop: Mapping[str, Any], run: str, cfg: CommonConfig) -> None:
    """ConfigError (exit 2) naming a stop key this run will never report, why, and the fix:
    such a run would never end."""
    for key in stop:
        why = stop_problem(key, run, cfg)
        if why is not None:
            raise ConfigError(f"--stop {key!r}: {why}")


def should_stop(result: Mapping[str, Any], stop: Mapping[str, Any]) -> bool:
    """True when ANY stop key's result value has reached its threshold (RLlib's rule)."""
    for key, threshold in stop.items():
        value = result.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= threshold:
            return True
    return False


class Source(Protocol):
    """Where experiences come from: returns a batch and whether it was sampled live."""

    def next(self) -> tuple[SampleBatch, bool]: ...

    def metrics(self) -> dict[str, Any]: ...


class Estimator(Protocol):
    def process(self, batch: SampleBatch, target_probs: Any) -> None: ...

    def estimate(self) -> dict[str, float]: ...

    def reset(self) -> None: ...


@dataclass
class Counters:
    """Progress counters saved in checkpoints so a restored run continues counting."""

    training_iteration: int = 0
    timesteps_total: int = 0
    episodes_total: int = 0
    num_env_steps_sampled: int = 0
    time_total_s: float = 0.0
    recent_returns: deque[float] = field(default_factory=lambda: deque(maxlen=EPISODE_WINDOW))
    recent_lengths: deque[int] = field(default_factory=lambda: deque(maxlen=EPISODE_WINDOW))

    def state(self) -> dict[str, Any]:
        return {
            "training_iteration": self.training_iteration,
            "timesteps_total": self.timesteps_total,
            "episodes_total": self.episodes_total,
            "num_env_steps_sampled": self.num_env_steps_sampled,
            "time_total_s": self.time_total_s,
            "recent_returns": list(self.recent_returns),
            "recent_lengths": list(self.recent_lengths),
        }

    @staticmethod
    def from_state(state: Mapping[str, Any]) -> Counters:
        c = Counters(
            training_iteration=int(state["training_iteration"]),
            timesteps_total=int(state["timesteps_total"]),
            episodes_total=int(state["episodes_total"]),
            num_env_steps_sampled=int(state.get("num_env_steps_sampled", 0)),
            time_total_s=float(state["time_total_s"]),
        )
        c.recent_returns.extend(float(x) for x in state.get("recent_returns", []))
        c.recent_lengths.extend(int(x) for x in state.get("recent_lengths", []))
        return c


@dataclass
class Run:
    """Everything one training run is made of."""

    algo: Algorithm
    config: CommonConfig
    env_id: str
    seed: int
    source: Source
    pop_episodes: Any  # () -> list[(return, length)] of live or simulated episodes
    output: Any = None  # an OutputWriter, or None
    estimators: dict[str, Estimator] = field(default_factory=dict)
    simulate: Any = None  # () -> None: steps the "simulation" sampler one fragment
    counters: Counters = field(default_factory=Counters)
    warnings: list[str] = field(default_factory=list)  # for the user: see take_warnings
    warning_sources: list[Any] = field(default_factory=list)  # worker sets, with .warnings
    samplers: list[Any] = field(default_factory=list)  # local samplers, for checkpoints
    stop_requested: Any = None  # () -> bool: True once a signal asked the run to stop

    def take_warnings(self) -> list[str]:
        """Warnings for the user since the last call: the run's own, then its worker sets'."""
        out = list(self.warnings)
        self.warnings.clear()
        for source in self.warning_sources:
            out.extend(source.warnings)
            source.warnings.clear()
        return out

    def sampler_states(self) -> list[Any] | None:
        """States of every local sampler, or None when one of them cannot be saved."""
        states = [s.get_state() for s in self.samplers]
        return None if any(st is None for st in states) else states

    def restore_samplers(self, states: list[Any] | None) -> bool:
        """Continue the samplers from a checkpoint; False when that is not possible."""
        if not states or len(states) != len(self.samplers):
            return False
        for sampler, state in zip(self.samplers, states, strict=True):
            sampler.set_state(state)
        return True


def episode_stats(returns: Any, lengths: Any) -> dict[str, float]:
    """Mean/min/max return and mean length; empty dict when there are no episodes."""
    if not returns:
        return {}
    r = np.asarray(returns, dtype=np.float64)
    return {
        "episode_reward_mean": float(r.mean()),
        "episode_reward_min": float(r.min()),
        "episode_reward_max": float(r.max()),
        "episode_len_mean": float(np.mean(lengths)),
    }


def _feed(run: Run) -> tuple[dict[str, float], int, int, float]:
    """One iteration's batches into the learner: (stats, rows, live env steps, write time)."""
    algo, cfg, counters = run.algo, run.config, run.counters
    stats: dict[str, float] = {}
    rows = sampled = 0
    write_s = 0.0
    while rows < algo.steps_per_iteration():
        if rows and run.stop_requested is not None and run.stop_requested():
            break  # a signal came: end this iteration with what it has learned so far
        batch, live = run.source.next()
        if live:
            sampled += batch.count
            if run.output is not None:
                start = time.perf_counter()
                run.output.write(batch)
                write_s += time.perf_counter() - start
        elif run.estimators:
            _estimate_batch(run, batch)
        if live or cfg.postprocess_inputs:
            batch = algo.postprocess(batch)
        counters.timesteps_total += batch.count
        stats = algo.learn(batch, counters.timesteps_total)
        rows += batch.count
    return stats, rows, sampled, write_s


def _estimate_batch(run: Run, batch: SampleBatch) -> None:
    """Feed an offline batch to every estimator; drop (with a warning) those that cannot run."""
    from offrl.estimators import feed_estimators

    action_logp = getattr(run.algo, "action_logp", None)  # non-Discrete actions (is/wis)
    run.warnings.extend(feed_estimators(run.estimators, batch, run.algo.action_probs, action_logp))


def _estimates(run: Run) -> dict[str, float]:
    """This iteration's estimates; the policy changes between iterations, so each
    iteration estimates over the episodes it read (all of them, not per batch)."""
    out: dict[str, float] = {}
    for name, est in run.estimators.items():
        for key, value in est.estimate().items():
            out[f"off_policy_estimation/{name}/{key}"] = value
    # Reset only after every estimate: dm and dr share their episodes, and resetting
    # after dm's estimate left dr none ("num_episodes": 0) in the same iteration.
    for est in run.estimators.values():
        est.reset()
    return out


def _evaluate(run: Run) -> dict[str, float]:
    cfg = run.config
    it = run.counters.training_iteration
    if not cfg.evaluation_interval or it % cfg.evaluation_interval:
        return {}
    returns = evaluate(
        run.env_id,
        run.algo,
        cfg.evaluation_num_episodes,
        seed=int_seed(run.seed, Stream.EVALUATION, it),
        horizon=cfg.horizon,
    )
    stats = episode_stats(returns, [0] * len(returns))
    stats.pop("episode_len_mean", None)
    return {f"evaluation/{k}": v for k, v in stats.items()}


def train(run: Run) -> Iterator[dict[str, Any]]:
    """Train forever, yielding one result per iteration; the caller decides when to stop."""
    counters = run.counters
    while True:
        start = time.perf_counter()
        stats, rows, sampled, write_s = _feed(run)
        if run.simulate is not None:
            run.simulate()
        episodes = run.pop_episodes()
        for ret, length in episodes:
            counters.recent_returns.append(ret)
            counters.recent_lengths.append(length)
        counters.episodes_total += len(episodes)
        counters.num_env_steps_sampled += sampled
        counters.training_iteration += 1
        result: dict[str, Any] = {}
        result.update(_evaluate(run))
        elapsed = time.perf_counter() - start
        counters.time_total_s += elapsed
        result.update(
            training_iteration=counters.training_iteration,
            timesteps_total=counters.timesteps_total,
            timesteps_this_iter=rows,
            time_this_iter_s=elapsed,
            time_total_s=counters.time_total_s,
            episodes_total=counters.episodes_total,
            episodes_this_iter=len(episodes),
            num_env_steps_sampled=counters.num_env_steps_sampled,
            num_env_steps_per_s=sampled / elapsed if elapsed > 0 else 0.0,
        )
        if run.output is not None:
            result["time_output_write_s"] = write_s  # of time_this_iter_s
        live_stats = episode_stats(counters.recent_returns, counters.recent_lengths)
        if not live_stats and "evaluation/episode_reward_mean" in result:
            # Offline run: the only true returns are the evaluation's.
            live_stats = {
                k: result[f"evaluation/{k}"]
                for k in ("episode_reward_mean", "episode_reward_min", "episode_reward_max")
            }
        result.update(live_stats)
        result.update(run.source.metrics())
        result.update(_estimates(run))
        result.update({f"info/learner/{k}": v for k, v in stats.items()})
        yield result
