"""PPO hyperparameters: one frozen dataclass, every field documented (it is the `--help` text)."""
from __future__ import annotations

import dataclasses

from algorithms.config import UsageError, check_positive, check_range, fill_defaults, flag

# Per-family defaults: the reproduced PARL settings (shared/REFERENCE.md) for Atari and MuJoCo. Classic control
# follows CleanRL's CartPole settings but with lr 1e-3, which reached a greedy 500 on CartPole-v1 within 200K steps
# for each of 4 seeds, where 2.5e-4 left one seed at ~400.
FAMILY_DEFAULTS = {
    "atari": dict(total_timesteps=10_000_000, num_envs=8, num_steps=128, num_minibatches=4, update_epochs=4,
                  learning_rate=2.5e-4, clip_coef=0.1, ent_coef=0.01, normalize_obs=False, normalize_reward=False),
    "mujoco": dict(total_timesteps=1_000_000, num_envs=1, num_steps=2048, num_minibatches=32, update_epochs=10,
                   learning_rate=3e-4, clip_coef=0.2, ent_coef=0.0, normalize_obs=True, normalize_reward=True),
    "classic": dict(total_timesteps=500_000, num_envs=4, num_steps=128, num_minibatches=4, update_epochs=4,
                    learning_rate=1e-3, clip_coef=0.2, ent_coef=0.01, normalize_obs=False, normalize_reward=False),
}


@dataclasses.dataclass(frozen=True)
class PPOConfig:
  """PPO hyperparameters (Schulman et al. 2017). `None` takes the env family's default."""
  total_timesteps: int | None = None
  """Agent steps to train for, summed over envs; the learning rate decays over them (default: Atari 10M, MuJoCo
  1M, classic 500K)."""
  num_envs: int | None = None
  """Parallel training envs; a rollout is num_envs x num_steps agent steps (default: Atari 8, MuJoCo 1, classic 4)."""
  num_steps: int | None = None
  """Steps per env per rollout (default: Atari 128, MuJoCo 2048, classic 128)."""
  num_minibatches: int | None = None
  """Minibatches per epoch; must divide num_steps: minibatch m takes num_steps / num_minibatches shuffled steps of
  every env (default: Atari 4, MuJoCo 32, classic 4)."""
  update_epochs: int | None = None
  """Epochs over each rollout (default: Atari 4, MuJoCo 10, classic 4)."""
  learning_rate: float | None = None
  """Adam learning rate (default: Atari 2.5e-4, MuJoCo 3e-4, classic 1e-3)."""
  anneal_lr: bool = True
  """Decay the learning rate linearly to 0 over the run."""
  adam_eps: float = 1e-5
  """Adam epsilon."""
  gamma: float = 0.99
  """Discount factor."""
  gae_lambda: float = 0.95
  """GAE lambda."""
  clip_coef: float | None = None
  """Surrogate clipping epsilon, also used for the value clip (default: Atari 0.1, MuJoCo 0.2, classic 0.2)."""
  clip_vloss: bool = True
  """Clip the value loss around the rollout's values."""
  norm_adv: bool = True
  """Normalise advantages per minibatch."""
  ent_coef: float | None = None
  """Entropy bonus coefficient (default: Atari 0.01, MuJoCo 0.0, classic 0.01)."""
  vf_coef: float = 0.5
  """Value loss coefficient."""
  max_grad_norm: float = 0.5
  """Global gradient-norm clip."""
  normalize_obs: bool | None = None
  """Running observation normalisation, clipped to +-10 (default: on for MuJoCo only)."""
  normalize_reward: bool | None = None
  """Return-based reward scaling, clipped to +-10 (default: on for MuJoCo only)."""
  scan_unroll: int | None = None
  """Unroll factor of the epoch and minibatch scans (default: fully unrolled for conv nets on CPU, where XLA runs a
  rolled conv gradient step ~12x slower; 1 elsewhere)."""
  forward_chunks: int | None = None
  """Evaluate each minibatch in this many equal slices (same result; default: 4 for conv nets on CPU, where it runs
  ~2.5x faster; 1 elsewhere). Must divide the minibatch size."""

  def __post_init__(self):
    check_positive(self, "total_timesteps", "num_envs", "num_steps", "num_minibatches", "update_epochs",
                   "learning_rate", "adam_eps", "clip_coef", "max_grad_norm", "scan_unroll", "forward_chunks")
    check_positive(self, "ent_coef", "vf_coef", allow_zero=("ent_coef", "vf_coef"))
    check_range(self, "gamma", 0.0, 1.0)
    check_range(self, "gae_lambda", 0.0, 1.0)

  def resolve(self, family: str) -> "PPOConfig":
    """Fills family defaults and checks the invariants that need them."""
    cfg = fill_defaults(self, FAMILY_DEFAULTS[family])
    if cfg.num_steps % cfg.num_minibatches:
      raise UsageError(f"{flag('num_minibatches')} {cfg.num_minibatches} does not divide --num-steps "
                        f"{cfg.num_steps} (each minibatch takes the same number of steps from every env)")
    if cfg.forward_chunks and cfg.minibatch_size % cfg.forward_chunks:
      raise UsageError(f"--forward-chunks {cfg.forward_chunks} does not divide the minibatch size "
                        f"({cfg.minibatch_size})")
    if cfg.total_timesteps < cfg.batch_size:
      raise UsageError(f"--total-timesteps {cfg.total_timesteps} is less than one rollout "
                        f"(--num-envs x --num-steps = {cfg.batch_size})")
    return cfg

  @property
  def batch_size(self) -> int:
    """Agent steps per rollout (and per update)."""
    return self.num_envs * self.num_steps

  @property
  def steps_per_update(self) -> int:
    return self.batch_size

  @property
  def minibatch_size(self) -> int:
    return self.batch_size // self.num_minibatches

  @property
  def num_updates(self) -> int:
    return self.total_timesteps // self.batch_size
