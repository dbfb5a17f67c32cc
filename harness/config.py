"""The config a run parses: an algorithm's hyperparameters beside the run settings, by composition.

`config_class(algorithm)` builds it from five groups, each a frozen dataclass whose field docstrings are `--help`:

    environment  EnvSettings                      env id, seed, network
    algorithm    the algorithm's own config       hyperparameters (algorithms/<name>/)
    source       RolloutSettings | ActorSettings  how trajectories are made: synchronous rollouts or actors
    run          RunSettings                      run directory, checkpoints, evaluation, logging
    scale_out    ScaleSettings                    devices, process groups, Ray

Flags are flat (`--learning-rate`, `--run-dir`): field names are unique across the groups, and `--help` lists the
flags group by group. `config.json` holds the resolved values flat, beside the algorithm's name ("algorithm").
"""
from __future__ import annotations

import dataclasses
import os
import sys
from typing import Any

import tyro

from algorithms.config import UsageError, check_finite, check_positive, flag
import networks
from envs.registry import DEFAULT_FRAME_SIZE, resolve_env
from harness import distributed, rundir


@dataclasses.dataclass(frozen=True)
class EnvSettings:
  """Environment."""
  env: str = "Pong-v5"
  """Env id: Atari `<Game>-v5` or `<Game>NoFrameskip-v4`, MuJoCo `-v4`/`-v5` (gym `-v2`/`-v3` map to `-v4`), or a
  classic control task such as `CartPole-v1`."""
  seed: int = 1
  """Seed for the envs and the agent's PRNG."""
  network: str | None = None
  """Registered network name (default: nature_cnn for images (IMPALA's parl preset: parl_atari), mlp for
  continuous, mlp_categorical for discrete)."""
  frame_size: int | None = None
  """Atari frames' height and width in pixels, resized by envpool (default 84; IMPALA's parl preset 42)."""

  def __post_init__(self):
    check_positive(self, "frame_size")


@dataclasses.dataclass(frozen=True)
class RolloutSettings:
  """Synchronous rollouts: every env steps num_steps with the latest parameters, then the learner updates."""
  env_groups: int = 1
  """Split the envs into this many envpools and pipeline them, so the policy runs on one group while the others
  simulate. Must divide num_envs. On 2 CPU cores it does not pay (Pong rollout 0.50 s with 1 group, 0.53-0.66 s with
  2: benchmarks/RESULTS.md); with spare cores or an accelerator it can."""
  num_seeds: int = 1
  """Train this many independent agents in one process (own parameters, optimiser and normaliser state, PRNG and
  logs), over one envpool of num_seeds x num_envs envs, the update vmapped over agents. Agent j uses seed
  `seed + j * num_envs` (its envs are envpool's envs j * num_envs ... with those seeds), so it repeats the
  single-seed run with that seed; logs go to RUN_DIR/seed<S>/."""
  num_env_workers: int = 1
  """With --ray-address: environment workers (Ray actors), each stepping num_envs / num_env_workers envs with the
  policy and returning whole rollouts. Must divide num_envs; locally one envpool steps all envs (see
  --env-groups)."""

  def __post_init__(self):
    check_positive(self, "env_groups", "num_seeds", "num_env_workers")


@dataclasses.dataclass(frozen=True)
class ActorSettings:
  """Actors: threads (or Ray actors) each stepping its own envpool with the newest parameters it has, feeding the
  learner through a bounded queue."""
  num_actors: int | None = None
  """Actor threads (Ray actors with --ray-address), each stepping its own envpool with the latest parameters it
  has; the whole group's with several processes (default: two per core each process may run on,
  `default_num_actors`; 2 for IMPALA's paper preset, MuJoCo and classic control). With --ray-address give the
  count the cluster should run: the default counts this machine's cores. On Ray, actors the cluster cannot place yet
  start when machines join."""
  envs_per_actor: int | None = None
  """Envs in each actor's envpool; each env yields one trajectory per unroll (default 16; IMPALA's parl preset 5).
  --batch-trajectories must be a multiple of it."""
  queue_size: int | None = None
  """Bounded queue of actor outputs (default: one slot per actor); bounds the policy lag."""

  def __post_init__(self):
    check_positive(self, "num_actors", "envs_per_actor", "queue_size")


@dataclasses.dataclass(frozen=True)
class RunSettings:
  """Run directory, checkpoints, evaluation and logging."""
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

  def __post_init__(self):
    check_positive(self, "checkpoint_every", "keep_checkpoints", "eval_episodes")
    check_positive(self, "eval_every", allow_zero=("eval_every",))
    if self.resume is not None and self.overwrite:
      raise UsageError("--resume and --overwrite exclude each other: drop one")


@dataclasses.dataclass(frozen=True)
class ScaleSettings:
  """Devices, process groups (jax.distributed) and Ray clusters."""
  learner_devices: int = 1
  """Local devices the learner update is data-parallel over (shard_map: the batch split between them on its env
  axis, gradients summed across them; the same update as on one device). Must divide --num-envs (rollouts) or
  --batch-trajectories (actors)."""
  actor_device: str | None = None
  """JAX device the policy acts on: a platform (`cpu`, `gpu`) or `platform:index` such as `cpu:1` (default: the
  CPU for vector observations, the accelerator for images, outside the learner's devices when one is spare)."""
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
  """Run the actors or environment workers as Ray actors on this cluster: HOST:PORT of `ray start --head`, `auto`
  (the cluster this machine belongs to) or `local` (a one-machine cluster started here). Needs
  `pip install '.[ray]'`."""
  actor_cpus: float = 1.0
  """CPUs each Ray actor reserves on the cluster, with --ray-address."""
  queue_timeout: float = 120.0
  """Seconds the learner waits for a trajectory before it reports the stuck actors and stops."""

  def __post_init__(self):
    check_positive(self, "learner_devices", "actor_cpus", "queue_timeout", "num_processes", "heartbeat_timeout")
    if self.ray_address is not None and self.actor_device is not None:
      raise UsageError("--actor-device applies to local actors; Ray actors act on their own CPUs: drop one")


def available_cores() -> int:
  """The cores this process may run on (its CPU affinity: a container's or SLURM's share, not the machine's)."""
  return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


DEFAULT_ENVS_PER_ACTOR = 16  # for algorithms that imply no actor layout


def default_num_actors(cores: int) -> int:
  """Actor threads for a process that may run on `cores` cores: two per core, so that one actor's policy step (or
  its wait for the learner's queue) overlaps another's emulator step. On 2 cores that is 4 actors x 5 envs = 20
  envs, one learner batch of PARL's setting per round of the actors; on the 16 cores of a GPU machine, 32 actors x 5
  envs, PARL's own layout. Measured on 2 cores (`benchmarks.throughput --setting impala --num-actors 2
  --num-actors 4 --num-actors 8`, PARL setting): 1,686, 1,735 and 1,534 training steps/s."""
  return 2 * cores


def resolve_against_env(config):
  """(`config` resolved against its env, the env's spec at the resolved frame size). The env's family and kind of
  observations decide the defaults; a setting of another frame size (IMPALA's parl preset: 42) then decides the
  spec. Raises envs.UnknownEnvError for an unknown env id."""
  spec = resolve_env(config.environment.env)
  config = config.resolve(spec.family, networks.default_network(spec.discrete, spec.image_obs))
  if config.environment.frame_size != spec.frame_size:
    spec = resolve_env(config.environment.env, frame_size=config.environment.frame_size, notify=False)
  return config, spec


GROUPS = ("environment", "algorithm", "source", "run", "scale_out")
# what may differ between the launches of one run: where it runs and how it is watched
RESUME_KEEPS = ("resume", "progress", "track", "coordinator_address", "num_processes", "process_id",
                "heartbeat_timeout", "ray_address", "actor_cpus", "queue_timeout")


class TrainConfig:
  """Methods of every composed config (`config_class`); its groups are fields named as in GROUPS."""
  ALGORITHM = ""  # the algorithm's registered name

  def __post_init__(self):
    check_finite(self)
    src, scale = self.source, self.scale_out
    if isinstance(src, RolloutSettings):
      if src.num_env_workers > 1 and scale.ray_address is None:
        raise UsageError("--num-env-workers > 1 needs --ray-address (locally one envpool steps all envs; see "
                          "--env-groups)")
      if scale.ray_address is not None and (src.num_seeds > 1 or src.env_groups > 1):
        raise UsageError("--ray-address runs one seed with one env group per worker: drop --num-seeds / "
                          "--env-groups")
      if src.num_seeds > 1 and self.run.track:
        raise UsageError("--track logs one W&B run per process: drop --track or use --num-seeds 1")
      if src.num_seeds > 1 and scale.learner_devices > 1:
        raise UsageError("--num-seeds > 1 and --learner-devices > 1 exclude each other: drop one")
      if src.num_seeds > 1 and src.env_groups > 1:
        raise UsageError("--env-groups > 1 and --num-seeds > 1 exclude each other: drop one")

  # -- sizes every part of the harness reads ------------------------------------------------------------------
  @property
  def num_envs(self) -> int:
    """Training envs of one agent (rollouts), or of all actors together."""
    if isinstance(self.source, ActorSettings):
      return self.source.num_actors * self.source.envs_per_actor
    return self.algorithm.num_envs

  @property
  def num_seeds(self) -> int:
    return getattr(self.source, "num_seeds", 1)

  @property
  def agent_seeds(self) -> list[int]:
    return [self.environment.seed + j * self.num_envs for j in range(self.num_seeds)]

  @property
  def total_timesteps(self) -> int:
    return self.algorithm.total_timesteps

  @property
  def normalize_obs(self) -> bool:
    """Whether the agent normalises observations (PPO's --normalize-obs; other algorithms never do)."""
    return bool(getattr(self.algorithm, "normalize_obs", False))

  # -- resolving against an env ---------------------------------------------------------------------------------
  def resolve(self, family: str, network: str):
    """Family defaults, the algorithm's run defaults (IMPALA's Atari presets: frame size, network, actor layout),
    the default `network`, run directory and cadences filled in; the invariants that need them checked. The result
    is what config.json records."""
    algo = self.algorithm.resolve(family)
    implied = algo.run_defaults(family) if hasattr(algo, "run_defaults") else {}
    if family != "atari" and self.environment.frame_size is not None:
      raise UsageError(f"--frame-size applies to Atari envs; {self.environment.env} is {family}: drop it")
    env = dataclasses.replace(
        self.environment, network=self.environment.network or implied.get("network", network),
        frame_size=(self.environment.frame_size or implied.get("frame_size", DEFAULT_FRAME_SIZE)
                    if family == "atari" else None))
    src, scale = self.source, self.scale_out
    if isinstance(src, RolloutSettings):
      for name, count in (("--learner-devices", scale.learner_devices), ("--num-env-workers", src.num_env_workers),
                          ("--env-groups", src.env_groups)):
        if algo.num_envs % count:
          raise UsageError(f"{name} {count} does not divide --num-envs {algo.num_envs}")
    else:
      cores = available_cores()
      src = dataclasses.replace(src, envs_per_actor=src.envs_per_actor or implied.get("envs_per_actor",
                                                                                      DEFAULT_ENVS_PER_ACTOR))
      # NOTE: --num-actors counts the whole process group's actors
      src = dataclasses.replace(src, num_actors=src.num_actors or implied.get("num_actors")
                                or default_num_actors(cores) * distributed.group_size(scale))
      if algo.batch_trajectories % src.envs_per_actor:
        raise UsageError(f"--batch-trajectories {algo.batch_trajectories} is not a multiple of --envs-per-actor "
                          f"{src.envs_per_actor}")
      if algo.batch_trajectories % scale.learner_devices:
        raise UsageError(f"--learner-devices {scale.learner_devices} does not divide --batch-trajectories "
                          f"{algo.batch_trajectories}")
      if src.num_actors > 4 * cores:
        print(f"warning: --num-actors {src.num_actors} threads on {cores} cores will mostly wait for each other; "
              "fewer actors with more --envs-per-actor usually run faster", file=sys.stderr)
      src = dataclasses.replace(src, queue_size=src.queue_size or src.num_actors)
    five_percent = max(algo.total_timesteps // 20, 1)
    run = dataclasses.replace(
        self.run, checkpoint_every=self.run.checkpoint_every or five_percent,
        eval_every=self.run.eval_every if self.run.eval_every is not None else five_percent,
        run_dir=self.run.run_dir or rundir.default_run_dir(env.env, self.ALGORITHM, env.seed))
    return dataclasses.replace(self, environment=env, algorithm=algo, source=src, run=run)

  # -- config.json ----------------------------------------------------------------------------------------------
  def flat(self) -> dict:
    """{"algorithm": name, every field of every group: value}."""
    out: dict[str, Any] = {"algorithm": self.ALGORITHM}
    for group in GROUPS:
      out.update(dataclasses.asdict(getattr(self, group)))
    return out

  @classmethod
  def from_flat(cls, data: dict):
    """The inverse of `flat` (JSON lists back to tuples; a config.json of an earlier jaxpod brought up to date by
    the algorithm config's `upgrade`, when it has one); ValueError naming fields this config does not have."""
    data = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k != "algorithm"}
    algorithm_config = next(type(f.default) for f in dataclasses.fields(cls) if f.name == "algorithm")
    if hasattr(algorithm_config, "upgrade"):
      data = algorithm_config.upgrade(data)
    groups, known = {}, set()
    for f in dataclasses.fields(cls):
      names = {g.name for g in dataclasses.fields(f.default)}
      known |= names
      groups[f.name] = dataclasses.replace(f.default, **{k: v for k, v in data.items() if k in names})
    unknown = sorted(set(data) - known)
    if unknown:
      raise ValueError(f"unknown fields {unknown}")
    return cls(**groups)

  def changed_flags(self) -> list[str]:
    """Flags set to other than their defaults, except those a resumed launch may change (RESUME_KEEPS)."""
    default = type(self)().flat()
    return [flag(k) for k, v in self.flat().items() if k not in RESUME_KEEPS and default.get(k) != v]

  def replace(self, **fields):
    """A copy with flat field values replaced, each in its group."""
    return type(self).from_flat({**self.flat(), **fields})


_CLASSES: dict[str, type] = {}


def config_class(algorithm) -> type:
  """The composed, tyro-parsable config of a registered `algorithms.registry.Algorithm`."""
  if algorithm.name not in _CLASSES:
    source = RolloutSettings if algorithm.source == "rollouts" else ActorSettings
    fields = [("environment", EnvSettings, dataclasses.field(default=EnvSettings())),
              ("algorithm", algorithm.config, dataclasses.field(default=algorithm.config())),
              ("source", source, dataclasses.field(default=source())),
              ("run", RunSettings, dataclasses.field(default=RunSettings())),
              ("scale_out", ScaleSettings, dataclasses.field(default=ScaleSettings()))]
    cls = dataclasses.make_dataclass(f"{algorithm.name.upper()}TrainConfig", fields, bases=(TrainConfig,),
                                     frozen=True, namespace={"ALGORITHM": algorithm.name})
    cls.__doc__ = (algorithm.config.__doc__ or algorithm.name).strip().splitlines()[0]
    _CLASSES[algorithm.name] = cls
  return _CLASSES[algorithm.name]


def parse_type(algorithm) -> Any:
  """What `tyro.cli` parses: the composed config with flat flags."""
  return tyro.conf.OmitArgPrefixes[config_class(algorithm)]
