"""Settings shared by every trainer: environment, run directory, logging, checkpoints, evaluation.

Algorithm configs inherit from `RunConfig`. Fields left `None` take the env family's default when the config is
resolved against an env (`resolve`), so `config.json` always records concrete values.
"""
from __future__ import annotations

import dataclasses
from typing import Any


class ConfigError(ValueError):
  """A flag value or combination the user must change; the message names the flag."""


def flag(name: str) -> str:
  return "--" + name.replace("_", "-")


def check_positive(config: Any, *names: str, allow_zero: tuple[str, ...] = ()) -> None:
  for name in names:
    value = getattr(config, name)
    if value is None:
      continue
    if isinstance(value, bool) or not isinstance(value, (int, float)):
      continue
    if value < 0 or (value == 0 and name not in allow_zero):
      kind = "non-negative" if name in allow_zero else "positive"
      raise ConfigError(f"{flag(name)} must be {kind}, got {value}")


def check_range(config: Any, name: str, low: float, high: float) -> None:
  value = getattr(config, name)
  if value is not None and not low <= value <= high:
    raise ConfigError(f"{flag(name)} must lie in [{low}, {high}], got {value}")


@dataclasses.dataclass(frozen=True)
class RunConfig:
  env: str = "Pong-v5"
  """Env id: Atari `<Game>-v5` or `<Game>NoFrameskip-v4`, MuJoCo `-v4`/`-v5` (gym `-v2`/`-v3` map to `-v4`), or a
  classic control task such as `CartPole-v1`."""
  seed: int = 1
  """Seed for the envs and the agent's PRNG."""
  total_timesteps: int | None = None
  """Agent steps to train for, summed over envs (default per family: Atari 10M, MuJoCo 1M, classic 500K)."""
  num_envs: int | None = None
  """Parallel training envs in the envpool (default per family: Atari 8, MuJoCo 1, classic 4)."""
  network: str | None = None
  """Registered network name (default: nature_cnn for images, mlp for continuous, mlp_categorical for discrete)."""
  run_dir: str | None = None
  """Run directory (default: runs/<env>__<algo>__seed<seed>__<time>). An existing one needs --resume or --overwrite."""
  resume: str | None = None
  """Continue the run in this directory from its last checkpoint, with its saved config."""
  overwrite: bool = False
  """Delete an existing --run-dir and start afresh."""
  checkpoint_every: int | None = None
  """Agent steps between orbax checkpoints (default: 5% of the run)."""
  keep_checkpoints: int = 3
  """Number of most recent checkpoints kept."""
  eval_every: int | None = None
  """Agent steps between greedy evaluations on separate envs (default: 5% of the run; 0 disables)."""
  eval_episodes: int = 3
  """Whole games per greedy evaluation."""
  track: bool = False
  """Log to Weights & Biases as well (pip install .[wandb])."""
  wandb_project: str = "jaxpod"
  """Weights & Biases project, with --track."""
  progress: bool = True
  """Show a progress bar on stderr."""
  learner_devices: int = 1
  """Local devices the learner update is data-parallel over (shard_map: the batch split between them on its env
  axis, gradients summed across them; the same update as on one device). Must divide the envs (PPO) or
  --batch-size (IMPALA)."""
  coordinator_address: str | None = None
  """Train with several processes (hosts) as one group (jax.distributed): HOST:PORT where process 0 serves the
  coordinator (also JAX_COORDINATOR_ADDRESS; detected under a SLURM job step with several tasks). The envs, actors
  and learner devices of every process together make the run; process 0 writes logs and checkpoints."""
  num_processes: int | None = None
  """Processes in the group, with --coordinator-address (also JAX_NUM_PROCESSES)."""
  process_id: int | None = None
  """This process's index in [0, num_processes), with --coordinator-address (also JAX_PROCESS_ID)."""
  heartbeat_timeout: float = 60.0
  """Seconds after which a silent process of the group is declared dead and the others stop."""
  ray_address: str | None = None
  """Run the actors (IMPALA) or environment workers (PPO) as Ray actors on this cluster: HOST:PORT of `ray start
  --head`, `auto` (the cluster this machine belongs to) or `local` (a one-machine cluster started here). Needs
  `pip install '.[ray]'`."""
  actor_cpus: float = 1.0
  """CPUs each Ray actor reserves on the cluster, with --ray-address."""
  queue_timeout: float = 120.0
  """Seconds the learner waits for a trajectory before it reports the stuck actors and stops."""
  actor_device: str | None = None
  """JAX device the policy acts on: a platform (`cpu`, `gpu`) or `platform:index` such as `cpu:1`; `cpu` keeps a GPU
  for the learner (default: JAX's default device, the first learner device)."""

  def __post_init__(self):
    check_positive(self, "total_timesteps", "num_envs", "checkpoint_every", "keep_checkpoints", "eval_episodes",
                   "learner_devices")
    check_positive(self, "eval_every", allow_zero=("eval_every",))
    check_positive(self, "actor_cpus", "queue_timeout", "num_processes", "heartbeat_timeout")
    if self.ray_address is not None and self.actor_device is not None:
      raise ConfigError("--actor-device applies to local actors; Ray actors act on their own CPUs: drop one")
    if self.resume is not None and self.overwrite:
      raise ConfigError("--resume and --overwrite exclude each other: drop one")
