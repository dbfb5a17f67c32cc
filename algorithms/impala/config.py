"""IMPALA hyperparameters: one frozen dataclass, every field documented (it is the `--help` text)."""
from __future__ import annotations

import dataclasses

from algorithms.config import UsageError, check_positive, check_range, fill_defaults

# The IMPALA paper's Atari settings (shared/REFERENCE.md), the actor layout (harness) scaled to one machine. Classic
# control: lr 1e-2, which took CartPole-v1 to a greedy 500 (training 477-493) within 400K steps for 4 of 4 seeds,
# where 6e-4 reached ~70 (summed losses on +1-per-step rewards hit the grad-norm clip of 40 at every update).
FAMILY_DEFAULTS = {
    "atari": dict(total_timesteps=10_000_000, learning_rate=6e-4, ent_coef=0.01),
    "mujoco": dict(total_timesteps=1_000_000, learning_rate=6e-4, ent_coef=0.0),
    "classic": dict(total_timesteps=400_000, learning_rate=1e-2, ent_coef=0.01),
}


@dataclasses.dataclass(frozen=True)
class ImpalaConfig:
  """IMPALA hyperparameters (Espeholt et al. 2018): V-trace actor-critic. `None` takes the env family's default."""
  total_timesteps: int | None = None
  """Agent steps to train for; the learning rate decays over them (default: Atari 10M, MuJoCo 1M, classic 400K)."""
  unroll_length: int = 20
  """Agent steps per trajectory (each trajectory carries unroll + 1 observations)."""
  batch_trajectories: int = 32
  """Trajectories per learner update (an update takes unroll-length x batch-trajectories agent steps)."""
  learning_rate: float | None = None
  """RMSProp learning rate, decayed linearly to 0 (default 6e-4; classic control 1e-2)."""
  anneal_lr: bool = True
  """Decay the learning rate linearly to 0 over the run."""
  rmsprop_decay: float = 0.99
  """RMSProp decay of the squared-gradient average."""
  rmsprop_eps: float = 0.01
  """RMSProp epsilon, added inside the square root as in the paper's TensorFlow optimiser."""
  max_grad_norm: float = 40.0
  """Global gradient-norm clip."""
  gamma: float = 0.99
  """Discount factor."""
  baseline_coef: float = 0.5
  """Coefficient of the baseline loss 0.5 * sum (v_s - V(x_s))^2."""
  ent_coef: float | None = None
  """Entropy bonus coefficient (default: 0.01; 0 for MuJoCo)."""
  rho_bar: float = 1.0
  """V-trace truncation of the importance weights in the targets (and the policy gradient)."""
  c_bar: float = 1.0
  """V-trace truncation of the trace coefficients."""
  vtrace_lambda: float = 1.0
  """V-trace lambda mixing the traces (1 = the paper's default)."""
  forward_chunks: int | None = None
  """Evaluate each batch in this many equal slices (same result; default 4 for conv nets on CPU)."""

  def __post_init__(self):
    check_positive(self, "total_timesteps", "unroll_length", "batch_trajectories", "learning_rate",
                   "rmsprop_decay", "rmsprop_eps", "max_grad_norm", "forward_chunks", "rho_bar", "c_bar")
    check_positive(self, "ent_coef", "baseline_coef", allow_zero=("ent_coef", "baseline_coef"))
    check_range(self, "gamma", 0.0, 1.0)
    check_range(self, "vtrace_lambda", 0.0, 1.0)

  def resolve(self, family: str) -> "ImpalaConfig":
    cfg = fill_defaults(self, FAMILY_DEFAULTS[family])
    if cfg.total_timesteps < cfg.steps_per_update:
      raise UsageError(f"--total-timesteps {cfg.total_timesteps} is less than one update "
                        f"(--unroll-length x --batch-trajectories = {cfg.steps_per_update})")
    return cfg

  @property
  def steps_per_update(self) -> int:
    return self.unroll_length * self.batch_trajectories

  @property
  def num_updates(self) -> int:
    return self.total_timesteps // self.steps_per_update
