"""The typed config of each algorithm: RLlib's key names and defaults, with help text.

Kept apart from the learners so that checking a config (and reporting a mistake)
never needs to import torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from offrl.config import CommonConfig, check_widths, opt


@dataclass
class PGConfig(CommonConfig):
    """PG keys: RLlib's (lr 4e-4, train_batch_size 200) plus switches that help it learn."""

    lr: float = opt(4e-4, "learning rate (Adam)", types=(float,), gt=0.0)
    train_batch_size: int = opt(
        200,
        "rows per learner update; one sampled fragment of all envs is one batch",
        types=(int,),
        ge=1,
    )
    use_baseline: bool = opt(
        False,
        "learn a value network V(s) and use advantage = return - V(s) (or GAE)",
        types=(bool,),
    )
    vf_loss_coeff: float = opt(
        1.0,
        "weight of the value loss 0.5 * (V(s) - value_target)^2 (with use_baseline)",
        types=(float,),
        ge=0.0,
    )
    lambda_: float = opt(
        1.0,
        "GAE lambda with use_baseline (RLlib key 'lambda'); 1.0 = return - V(s)",
        types=(float,),
        ge=0.0,
        le=1.0,
    )
    normalize_advantages: bool = opt(
        False, "scale advantages to mean 0, std 1 per batch before the policy loss", types=(bool,)
    )
    normalize_value_targets: bool = opt(
        False,
        "with use_baseline: the value network learns value_target / s, s the running RMS of "
        "every value target learned; when s changes its last layer is rescaled so that V(s) "
        "stays the same (PopArt's output preservation). For returns far from unit scale",
        types=(bool,),
    )
    entropy_coeff: float = opt(
        0.0, "weight of the entropy bonus subtracted from the loss", types=(float,), ge=0.0
    )
    grad_clip: float | None = opt(
        None,
        "clip the global gradient norm to this value (null: no clipping)",
        types=(float, type(None)),
        gt=0.0,
    )
    num_sgd_iter: int = opt(
        1,
        "passes over each train batch (more than 1 reuses slightly stale data)",
        types=(int,),
        ge=1,
    )
    kl_target: float | None = opt(
        None,
        "stop a batch's gradient steps once the mean KL(policy before || now) exceeds this "
        "(a cheap trust region against collapse; null: never stop early)",
        types=(float, type(None)),
        gt=0.0,
    )
    sgd_minibatch_size: int | None = opt(
        None,
        "rows per gradient step within a pass (null: the whole batch, one step)",
        types=(int, type(None)),
        ge=1,
    )
    normalize_actions: bool = opt(
        True,
        "Box actions: the Gaussian acts in [-1, 1], mapped to the space's bounds before the "
        "env (RLlib's default; files then hold the normalized actions, as RLlib's do)",
        types=(bool,),
    )


@dataclass
class DQNConfig(CommonConfig):
    """DQN keys, RLlib's names and defaults, plus a few that make learning fast and stable."""

    rollout_fragment_length: int = opt(
        4, "env steps per env between learner updates", types=(int,), ge=1
    )
    lr: float = opt(5e-4, "Adam learning rate (see lr_schedule)", types=(float,), gt=0.0)
    train_batch_size: int = opt(32, "transitions replayed per update", types=(int,), ge=1)
    double_q: bool = opt(
        True,
        "pick the next action with the online net, value it with the target net",
        types=(bool,),
    )
    dueling: bool = opt(True, "separate value and advantage heads", types=(bool,))
    hiddens: list = opt([256], "hidden widths of the Q heads after the model trunk", types=(list,))
    n_step: int = opt(1, "n-step returns (computed in postprocessing)", types=(int,), ge=1)
    buffer_size: int = opt(50000, "replay buffer capacity in transitions", types=(int,), ge=1)
    prioritized_replay: bool = opt(
        True, "replay transitions in proportion to TD error", types=(bool,)
    )
    prioritized_replay_alpha: float = opt(0.6, "priority exponent", types=(float,), ge=0.0)
    prioritized_replay_beta: float = opt(
        0.4, "initial importance-weight exponent", types=(float,), ge=0.0, le=1.0
    )
    final_prioritized_replay_beta: float = opt(
        0.4, "importance-weight exponent after annealing", types=(float,), ge=0.0, le=1.0
    )
    prioritized_replay_beta_annealing_timesteps: int = opt(
        20000, "timesteps over which beta goes linearly to its final value", types=(int,), ge=1
    )
    prioritized_replay_eps: float = opt(
        1e-6, "added to |TD error| so no priority is zero", types=(float,), gt=0.0
    )
    learning_starts: int = opt(
        1000, "transitions stored before the first update", types=(int,), ge=0
    )
    target_network_update_freq: int = opt(
        500, "timesteps between target-network updates (0: after every update)", types=(int,), ge=0
    )
    tau: float = opt(
        1.0,
        "target update: target <- tau*online + (1-tau)*target (1.0: hard copy)",
        types=(float,),
        gt=0.0,
        le=1.0,
    )
    timesteps_per_iteration: int = opt(
        1000, "rows fed to the learner per training iteration", types=(int,), ge=1
    )
    exploration_initial_eps: float = opt(
        1.0, "epsilon at timestep 0", types=(float,), ge=0.0, le=1.0
    )
    exploration_final_eps: float = opt(
        0.02, "epsilon after the exploration phase", types=(float,), ge=0.0, le=1.0
    )
    exploration_fraction: float = opt(
        0.1,
        "fraction of schedule_max_timesteps over which epsilon decays linearly",
        types=(float,),
        ge=0.0,
        le=1.0,
    )
    schedule_max_timesteps: int = opt(
        100000, "timesteps the exploration schedule spans", types=(int,), ge=1
    )
    grad_norm_clipping: float | None = opt(
        40.0,
        "clip the global gradient norm to this (null: no clipping)",
        types=(float, type(None)),
        gt=0.0,
    )
    adam_epsilon: float = opt(1e-8, "Adam epsilon", types=(float,), gt=0.0)
    training_intensity: float | None = opt(
        None,
        "replayed / sampled rows (null: one update of train_batch_size per "
        "rollout_fragment_length * num_envs_per_worker sampled rows)",
        types=(float, type(None)),
        gt=0.0,
    )
    store_buffer_in_checkpoints: bool = opt(
        False,
        "include the replay buffer in checkpoints (then a restored run continues identically)",
        types=(bool,),
    )

    def validate(self) -> None:
        """The common checks, and the Q head's widths (ConfigError)."""
        super().validate()
        check_widths("hiddens", self.hiddens)


def scheduled_lr(lr: float, schedule: list | None, t: int) -> float:
    """Learning rate at timestep ``t``: ``schedule`` interpolated, or the constant ``lr``."""
    if schedule is None:
        return lr
    times = [p[0] for p in schedule]
    values = [p[1] for p in schedule]
    return float(np.interp(t, times, values))
