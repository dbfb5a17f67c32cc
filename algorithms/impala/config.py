"""IMPALA hyperparameters: one frozen dataclass, every field documented (it is the `--help` text)."""
from __future__ import annotations

import dataclasses
import math
from typing import Literal

from algorithms.config import UsageError, check_positive, check_range, fill_defaults

# Atari has two settings (`--preset`):
# - "parl", the default: PARL's IMPALA example (examples/IMPALA/impala_config.py and atari_model.py;
#   shared/REFERENCE.md), which trains Pong to 18-19 in 7-10 minutes: 42x42 frames, its small network (parl_atari),
#   5 envs per actor, trajectories of 50 steps, batches of 20 trajectories (1,000 agent steps), Adam (0.9, 0.999,
#   1e-8), lr 1e-3, 5e-4 from learner update 20,000 and 1e-4 from 40,000 (step changes at PARL's update counts:
#   its PiecewiseScheduler gives update k the value of the last boundary <= k); entropy 0.01, baseline 0.5, losses
#   summed, rho_bar = c_bar = 1, gamma 0.99, clip 40 (the fields' own defaults where they agree). The steps come at
#   20M and 40M agent steps: a default 10M-step run (10,000 updates) trains at 1e-3 throughout.
# - "paper": the IMPALA paper's Atari setting (Espeholt et al. 2018): 84x84 frames, Nature CNN, unroll 20 x batch 32,
#   RMSProp (decay 0.99, eps 0.01, momentum 0), lr 6e-4 decayed linearly to 0, 2 actors x 16 envs.
# Classic control and MuJoCo take the paper's optimiser whatever the preset. Classic control: lr 1e-2, which took
# CartPole-v1 to a greedy 500 (training 477-493) within 400K steps for 4 of 4 seeds, where 6e-4 reached ~70 (summed
# losses on +1-per-step rewards hit the grad-norm clip of 40 at every update).
PAPER = dict(unroll_length=20, batch_trajectories=32, optimizer="rmsprop", lr_schedule="linear")
PRESETS = {
    "parl": {"atari": dict(total_timesteps=10_000_000, unroll_length=50, batch_trajectories=20, optimizer="adam",
                           learning_rate=1e-3, lr_schedule="piecewise", ent_coef=0.01)},
    "paper": {"atari": dict(PAPER, total_timesteps=10_000_000, learning_rate=6e-4, ent_coef=0.01)},
}
FAMILY_DEFAULTS = {
    "mujoco": dict(PAPER, total_timesteps=1_000_000, learning_rate=6e-4, ent_coef=0.0),
    "classic": dict(PAPER, total_timesteps=400_000, learning_rate=1e-2, ent_coef=0.01),
}
# What each setting sets outside the algorithm's hyperparameters (`ImpalaConfig.run_defaults`): PARL's actors step 5
# envs each and their number comes from the machine (harness.config.default_num_actors); the paper preset, MuJoCo
# and classic control keep 2 actors x 16 envs.
RUN_DEFAULTS = {
    "parl": dict(frame_size=42, network="parl_atari", envs_per_actor=5),
    "paper": dict(frame_size=84, network="nature_cnn", envs_per_actor=16, num_actors=2),
    "other": dict(envs_per_actor=16, num_actors=2),
}


@dataclasses.dataclass(frozen=True)
class ImpalaConfig:
  """IMPALA hyperparameters (Espeholt et al. 2018): V-trace actor-critic.

  `None` takes the preset's (Atari) or the env family's default."""
  preset: Literal["parl", "paper"] = "parl"
  """Atari defaults. `parl`: PARL's IMPALA example (42x42, parl_atari, 5 envs per actor, 50 x 20, Adam 1e-3).
  `paper`: the IMPALA paper's (84x84, nature_cnn, 2 actors x 16 envs, 20 x 32, RMSProp 6e-4). Flags override them."""
  total_timesteps: int | None = None
  """Agent steps to train for (default: Atari 10M, MuJoCo 1M, classic 400K)."""
  unroll_length: int | None = None
  """Agent steps per trajectory (each trajectory carries unroll + 1 observations; default 50 parl, 20 paper)."""
  batch_trajectories: int | None = None
  """Trajectories per learner update (an update takes unroll-length x batch-trajectories agent steps; default 20
  parl, 32 paper)."""
  optimizer: Literal["adam", "rmsprop"] | None = None
  """Optimiser (default: adam for parl, rmsprop for paper, MuJoCo and classic control)."""
  learning_rate: float | None = None
  """Initial learning rate (default: 1e-3 parl, 6e-4 paper and MuJoCo, 1e-2 classic control)."""
  lr_schedule: Literal["linear", "piecewise", "constant"] | None = None
  """`linear` decays to 0 over the run (paper); `piecewise` steps to --lr-values at learner updates
  --lr-boundaries (parl); `constant`."""
  lr_boundaries: tuple[int, ...] = (20_000, 40_000)
  """Learner updates at which a piecewise learning rate changes (PARL's 20,000 and 40,000)."""
  lr_values: tuple[float, ...] = (5e-4, 1e-4)
  """The piecewise learning rate from each boundary on (PARL's 5e-4 and 1e-4)."""
  adam_b1: float = 0.9
  """Adam's first-moment decay."""
  adam_b2: float = 0.999
  """Adam's second-moment decay."""
  adam_eps: float = 1e-8
  """Adam's epsilon."""
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
                   "rmsprop_decay", "rmsprop_eps", "adam_eps", "max_grad_norm", "forward_chunks", "rho_bar", "c_bar")
    check_range(self, "adam_b1", 0.0, 1.0)
    check_range(self, "adam_b2", 0.0, 1.0)
    if len(self.lr_boundaries) != len(self.lr_values):
      raise UsageError(f"--lr-boundaries and --lr-values pair up: got {len(self.lr_boundaries)} boundaries and "
                        f"{len(self.lr_values)} values")
    if list(self.lr_boundaries) != sorted(set(self.lr_boundaries)) or any(b <= 0 for b in self.lr_boundaries):
      raise UsageError(f"--lr-boundaries must be positive and increasing, got {' '.join(map(str, self.lr_boundaries))}")
    if any(not math.isfinite(v) or v <= 0 for v in self.lr_values):
      raise UsageError(f"--lr-values must be positive, got {' '.join(map(str, self.lr_values))}")
    check_positive(self, "ent_coef", "baseline_coef", allow_zero=("ent_coef", "baseline_coef"))
    check_range(self, "gamma", 0.0, 1.0)
    check_range(self, "vtrace_lambda", 0.0, 1.0)

  def resolve(self, family: str) -> "ImpalaConfig":
    cfg = fill_defaults(self, PRESETS[self.preset][family] if family == "atari" else FAMILY_DEFAULTS[family])
    if cfg.total_timesteps < cfg.steps_per_update:
      raise UsageError(f"--total-timesteps {cfg.total_timesteps} is less than one update "
                        f"(--unroll-length x --batch-trajectories = {cfg.steps_per_update})")
    frames = (cfg.unroll_length + 1) * cfg.batch_trajectories  # what the learner's forward pass slices
    if cfg.forward_chunks and frames % cfg.forward_chunks:
      raise UsageError(f"--forward-chunks {cfg.forward_chunks} does not divide a batch's frames "
                        f"((--unroll-length + 1) x --batch-trajectories = {frames})")
    return cfg

  @staticmethod
  def upgrade(fields: dict) -> dict:
    """A config.json written before the presets (no "preset" field) ran the paper's setting at 84x84, with
    `anneal_lr` where `lr_schedule` is now: the same run, in today's fields."""
    if "preset" in fields:
      return fields
    fields = dict(fields, preset="paper", optimizer="rmsprop")
    fields["lr_schedule"] = "linear" if fields.pop("anneal_lr", True) else "constant"
    if "frame_size" not in fields and fields.get("network") in ("nature_cnn", "impala_resnet", "parl_atari"):
      fields["frame_size"] = 84
    return fields

  def run_defaults(self, family: str) -> dict:
    """What this setting sets outside the hyperparameters, for run settings left None (frame size, network, actor
    layout): the Atari preset's, or MuJoCo's and classic control's actor layout."""
    return RUN_DEFAULTS[self.preset if family == "atari" else "other"]

  @property
  def steps_per_update(self) -> int:
    return self.unroll_length * self.batch_trajectories

  @property
  def num_updates(self) -> int:
    return self.total_timesteps // self.steps_per_update
