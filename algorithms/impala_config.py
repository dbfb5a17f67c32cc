"""IMPALA configuration: one frozen dataclass, every field documented (it is the `--help` text)."""
from __future__ import annotations

import dataclasses
import os
import sys

from algorithms.config import ConfigError, RunConfig, check_positive, check_range, flag

# The IMPALA paper's Atari settings (shared/REFERENCE.md), with the actor layout scaled to one machine. Classic
# control: lr 1e-2, which took CartPole-v1 to a greedy 500 (training 477-493) within 400K steps for 4 of 4 seeds,
# where 6e-4 reached ~70 (summed losses on +1-per-step rewards hit the grad-norm clip of 40 at every update).
FAMILY_DEFAULTS = {
    "atari": dict(total_timesteps=10_000_000, learning_rate=6e-4, ent_coef=0.01),
    "mujoco": dict(total_timesteps=1_000_000, learning_rate=6e-4, ent_coef=0.0),
    "classic": dict(total_timesteps=400_000, learning_rate=1e-2, ent_coef=0.01),
}


@dataclasses.dataclass(frozen=True)
class ImpalaConfig(RunConfig):
  """IMPALA with V-trace (Espeholt et al. 2018): CPU actor threads feed a learner through a bounded queue."""
  num_actors: int = 2
  """Actor threads (Ray actors with --ray-address), each stepping its own envpool with the latest parameters it
  has. On Ray, actors the cluster cannot place yet start when machines join."""
  envs_per_actor: int = 16
  """Envs in each actor's envpool; each env yields one trajectory per unroll."""
  unroll_length: int = 20
  """Agent steps per trajectory (each trajectory carries unroll + 1 observations)."""
  batch_size: int = 32
  """Trajectories per learner update; a multiple of --envs-per-actor."""
  queue_size: int | None = None
  """Bounded queue of actor outputs (default: one slot per actor); bounds the policy lag."""
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
    super().__post_init__()
    check_positive(self, "num_actors", "envs_per_actor", "unroll_length", "batch_size", "queue_size",
                   "learning_rate", "rmsprop_decay", "rmsprop_eps", "max_grad_norm",
                   "forward_chunks", "rho_bar", "c_bar")
    if self.batch_size % self.learner_devices:
      raise ConfigError(f"--learner-devices {self.learner_devices} does not divide --batch-size {self.batch_size}")
    check_positive(self, "ent_coef", "baseline_coef", allow_zero=("ent_coef", "baseline_coef"))
    check_range(self, "gamma", 0.0, 1.0)
    check_range(self, "vtrace_lambda", 0.0, 1.0)

  def resolve(self, family: str, network: str) -> "ImpalaConfig":
    total_envs = self.num_actors * self.envs_per_actor
    if self.num_envs is not None and self.num_envs != total_envs:
      raise ConfigError(f"--num-envs {self.num_envs} differs from --num-actors x --envs-per-actor = {total_envs}: "
                        "set those two instead")
    if self.batch_size % self.envs_per_actor:
      raise ConfigError(f"--batch-size {self.batch_size} is not a multiple of --envs-per-actor "
                        f"{self.envs_per_actor}")
    fill = {k: v for k, v in FAMILY_DEFAULTS[family].items() if getattr(self, k) is None}
    fill.update(num_envs=total_envs, network=self.network or network, queue_size=self.queue_size or self.num_actors)
    cfg = dataclasses.replace(self, **fill)
    if cfg.total_timesteps < cfg.steps_per_update:
      raise ConfigError(f"--total-timesteps {cfg.total_timesteps} is less than one update "
                        f"(--unroll-length x --batch-size = {cfg.steps_per_update})")
    cores = os.cpu_count() or 1
    if cfg.num_actors > 4 * cores:
      print(f"warning: {flag('num_actors')} {cfg.num_actors} threads on {cores} cores will mostly wait for each "
            "other; fewer actors with more --envs-per-actor usually run faster", file=sys.stderr)
    return cfg

  @property
  def steps_per_update(self) -> int:
    return self.unroll_length * self.batch_size

  @property
  def num_updates(self) -> int:
    return self.total_timesteps // self.steps_per_update
