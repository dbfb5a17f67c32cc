"""The one training loop every algorithm runs in: set-up, the update loop, and how a run ends.

    python -m harness ppo --env CartPole-v1      # run_ppo.py and run_impala.py are this with their algorithm

`train` parses nothing: it takes an algorithm from `algorithms.registry` and its composed config
(`harness.config`), checks everything a user can get wrong before anything is written, prints a header, then loops:
next batch from the trajectory source, update, logs / evaluation / checkpoints at their intervals. A run ends in one
of these ways, each written once here: finished (result.json), stopped by Ctrl-C or SIGTERM (a checkpoint, one
line, exit 130 / 143), a non-finite loss (no bad state kept, exit 1), a failed or stuck actor (one line, exit 1), a
lost process of the group (one line, exit 1), a full disk (one line, exit 1).
"""
from __future__ import annotations

import contextlib
import dataclasses
import signal
import sys
import threading
import time
from typing import Any

import jax
from jax.experimental import multihost_utils

import networks
from algorithms import acting, normalize
from algorithms.parallel import AXIS, env_axis, lift, local_copy
from algorithms import registry
from algorithms.registry import Algorithm
from envs import UnknownEnvError
from envs.actors import ActorError, ActorPool, ParamStore
from envs.rollout import make_rollout
from harness import distributed, placement, remote, rundir, xla
from harness.checkpoint import DiskFullError
from harness.cli import UsageError, main_guard, parse
from harness.config import RESUME_KEEPS, ActorSettings, parse_type, resolve_against_env
from harness.run import BASE_COLUMNS, NOTHING_TRAINED, Run, stopped
from harness.sources import ActorQueue, Rollouts, columns


class Interrupted(Exception):
  """Ctrl-C or SIGTERM (or the group's preemption notice) asked the run to stop with a checkpoint."""

  def __init__(self, signum: int):
    super().__init__(signal.Signals(signum).name)
    self.signum = signum


class Shutdown:
  """SIGINT (Ctrl-C) and SIGTERM (`benchmarks.run`'s budget; what SLURM, Kubernetes, `docker stop` and Ray send
  before they kill) both stop the run with a checkpoint.

  NOTE: a Python signal handler runs in the main thread between any two bytecodes, so an exception it raises can
  land inside `with lock:` after the lock is taken and before the block that releases it is entered; the lock then
  stays held (one raised inside the learner's `queue.get` left the actors' queue locked, and `ActorPool.stop` waited
  for it forever). So inside `deferred()`, the training loop's body, the handler only keeps the signal, and it is
  raised at safe points: `poll()`, which the trajectory source calls while it waits for a batch (between env steps,
  every 0.1 s of a queue wait, every second of a Ray wait), and the block's end. The update never polls: it donates
  its input state, so an exception between its call and the new state's assignment would leave no state to save,
  and one before its row is logged would leave a checkpoint ahead of the log; a signal kept there is raised after
  the update's evaluation and checkpoint, if due. Outside the block (setting up) the handler raises at once. In a
  process group JAX's preemption service owns SIGTERM and tells every process at which update to stop (`check`), so
  all save the same step. Once the run is ending (a signal raised, a batch failed, the last update done), a further
  signal is dropped: a second Ctrl-C must not cut the stop's checkpoint short or land inside the actors' `stop`.
  `restore()` gives the process its previous handlers back when `train` returns.
  """

  def __init__(self, group: bool):
    self.group, self.signum, self._deferring, self._ending = group, None, False, False
    self.training = False  # set when the training loop takes over the handling of `Interrupted`
    self._previous = {}
    if threading.current_thread() is threading.main_thread():
      # NOTE: also re-enables SIGINT, which a background process of a non-interactive shell inherits as ignored.
      for signum in (signal.SIGINT,) if group else (signal.SIGINT, signal.SIGTERM):
        self._previous[signum] = signal.signal(signum, self._handle)

  def _handle(self, signum, frame) -> None:
    if self._ending:
      return
    if not self._deferring:
      self._ending = True
      raise Interrupted(signum)
    self.signum = signum

  def end(self) -> None:
    """The run is ending: a kept signal and every later one are dropped."""
    self._ending, self.signum = True, None

  def restore(self) -> None:
    for signum, handler in self._previous.items():
      if handler is not None:  # None: a handler installed outside Python, which Python cannot reinstall
        signal.signal(signum, handler)
    self._previous = {}

  @contextlib.contextmanager
  def deferred(self):
    self._deferring = True
    try:
      yield
    finally:
      self._deferring = False
    self.poll()  # the block's end is a safe point too

  def poll(self) -> None:
    """A safe point inside `deferred()`: raises the kept signal now."""
    if self.signum is not None:
      signum, self.signum, self._ending = self.signum, None, True
      raise Interrupted(signum)

  def check(self, index: int) -> None:
    if self.group and multihost_utils.reached_preemption_sync_point(index):
      self._ending = True
      raise Interrupted(signal.SIGTERM)


@dataclasses.dataclass
class Setup:
  algorithm: Algorithm
  config: Any
  spec: Any
  network: Any
  resuming: bool
  placement: Any
  ray: Any = None  # the `ray` module, connected, with --ray-address


def setup(algorithm: Algorithm, config) -> Setup:
  """Validates everything a user can get wrong before anything is written, and sets XLA's flags for the env."""
  resuming = config.run.resume is not None
  if resuming:
    changed = config.changed_flags()
    if changed:
      raise UsageError(f"--resume continues with the run's saved config: drop {', '.join(changed)}")
    saved = rundir.load_config(config.run.resume, type(config))
    flat = config.flat()
    config = saved.replace(run_dir=config.run.resume, overwrite=False, **{k: flat[k] for k in RESUME_KEEPS})
  try:
    config, spec = resolve_against_env(config)
  except UnknownEnvError as e:
    raise UsageError(str(e)) from None
  try:
    network = networks.make_network(config.environment.network, discrete=spec.discrete, image_obs=spec.image_obs,
                                    action_dim=spec.action_dim)
  except networks.NetworkError as e:
    raise UsageError(str(e)) from None
  xla.configure(spec.image_obs)  # before the first JAX computation
  distributed.initialize(config.scale_out)
  P, scale = jax.process_count(), config.scale_out
  if P > 1 and scale.ray_address:
    raise UsageError("several processes (--coordinator-address) run their own actors and envs: drop --ray-address")
  if P > 1 and config.num_seeds > 1:
    raise UsageError("several processes (--coordinator-address) train one seed: drop --num-seeds")
  if isinstance(config.source, ActorSettings):
    distributed.check_split("--num-actors", config.source.num_actors)
    distributed.check_split("--batch-trajectories", config.algorithm.batch_trajectories,
                            config.source.envs_per_actor, "--envs-per-actor")
    distributed.check_split("--batch-trajectories", config.algorithm.batch_trajectories, scale.learner_devices,
                            "--learner-devices")
  else:
    distributed.check_split("--num-envs", config.num_envs, scale.learner_devices, "--learner-devices")
  where = placement.place(scale.actor_device, spec.image_obs, scale.learner_devices)
  if not resuming and distributed.is_main():
    rundir.check_new_run_dir(config.run.run_dir, config.run.overwrite)
  ray = remote.connect(scale.ray_address) if scale.ray_address else None  # a bad address exits before the run dir
  return Setup(algorithm, config, spec, network, resuming, where, ray)


def header(s: Setup) -> str:
  """What a newcomer needs before the first (slow) compilation: what runs where, and where it goes."""
  cfg = s.config
  env = cfg.environment.env if cfg.environment.env == s.spec.env_id else f"{cfg.environment.env} (as {s.spec.env_id})"
  where = s.placement.describe()
  processes = f", {jax.process_count()} processes" if jax.process_count() > 1 else ""
  seeds = f", {cfg.num_seeds} seeds" if cfg.num_seeds > 1 else ""
  size = cfg.environment.frame_size
  frames = f", {size}x{size} frames" if size else ""
  return "\n".join([
      f"jaxpod {s.algorithm.name} on {env}{frames}, network {cfg.environment.network}, "
      f"{cfg.total_timesteps:,} agent steps"
      f"{seeds}{processes}",
      f"  learner on {', '.join(where['learner_devices'])}, acting on "
      f"{'Ray workers' if s.ray else where['actor_device']} ({jax.default_backend()} backend)",
      f"  run directory {cfg.run.run_dir}{' (resumed)' if s.resuming else ''}; watch it with: "
      f"tensorboard --logdir {cfg.run.run_dir}",
      "  compiling the first update (a few seconds to a minute)..."])


def segment_seed(cfg, start_step: int) -> int:
  """The first env seed of a run segment starting at `start_step`: a resumed run's envs start new games."""
  return cfg.environment.seed + start_step


def _rollout_source(s: Setup, run: Run, start_step: int, poll) -> Rollouts:
  cfg, spec = s.config, s.spec
  normalize_obs = cfg.normalize_obs
  K, P, p = cfg.num_seeds, jax.process_count(), jax.process_index()
  seed = segment_seed(cfg, start_step)
  if s.ray:
    W = cfg.source.num_env_workers
    args = remote.worker_args(spec, cfg.environment.network, W, cfg.num_envs // W, cfg.algorithm.num_steps, seed,
                              remote.key_seed(cfg.environment.seed, start_step), normalize_obs)
    rollout = remote.RayRollout(s.ray, args, run.tracker, cfg.scale_out.actor_cpus, normalize_obs,
                                cfg.scale_out.queue_timeout)
  else:
    # NOTE: envpool seeds env i with `seed + i`, so agent j's envs get the seeds a single run with seed
    # `seed + j * num_envs` would use (config.agent_seeds).
    n = K * cfg.num_envs // P  # this process's envs: [p * n, (p + 1) * n) of the group's
    act_fn = acting.make_act_fn(s.network, spec.discrete, normalize_obs, num_agents=K)
    rollout = make_rollout(spec, n, cfg.algorithm.num_steps, cfg.source.env_groups, seed + p * n, act_fn,
                           run.tracker, tracker_offset=p * n, obs_device=s.placement.frames_device(spec.image_obs))
  return Rollouts(rollout, s.placement.actor, normalize_obs, ray=s.ray is not None, poll=poll)


def actor_keys(key, start_step: int, first: int, count: int) -> list:
  """The acting PRNG keys of actors [first, first + count) for a run segment starting at `start_step`. The update
  never advances the state's key, so the step folded in keeps a resumed run from replaying the action sampling of its
  first segment (Ray workers: `remote.key_seed`)."""
  segment = jax.random.fold_in(key, start_step)
  return [jax.random.fold_in(segment, first + i) for i in range(count)]


def _actor_source(s: Setup, run: Run, state, start_step: int, poll) -> ActorQueue:
  cfg, spec, device = s.config, s.spec, s.placement.actor
  P, p = jax.process_count(), jax.process_index()
  A, E = cfg.source.num_actors // P, cfg.source.envs_per_actor  # this process's actors: [p * A, (p + 1) * A)
  version = int(local_copy(state.update))
  # NOTE: made before the actors start: the first update donates `state`, so no thread may read it later.
  keys = [jax.device_put(k, device) for k in actor_keys(state.key, start_step, p * A, A)]
  act_fn = acting.make_act_fn(s.network, spec.discrete, normalize_obs=False)
  no_norm = normalize.init(())
  seed = segment_seed(cfg, start_step)

  def make_actor(i: int):
    rollout = make_rollout(spec, E, cfg.algorithm.unroll_length, 1, seed + (p * A + i) * E, act_fn, run.tracker,
                           tracker_offset=(p * A + i) * E)
    return rollout, (no_norm, keys[i])

  def make_pool(store):
    if s.ray:
      args = remote.worker_args(spec, cfg.environment.network, cfg.source.num_actors, E, cfg.algorithm.unroll_length,
                                seed, remote.key_seed(cfg.environment.seed, start_step), normalize_obs=False)
      return remote.RayActorPool(s.ray, args, store, run.tracker, cfg.scale_out.actor_cpus)
    return ActorPool(make_actor, A, store, cfg.source.queue_size)

  store = ParamStore(local_copy(state.params), version, device)
  return ActorQueue(make_pool, store, cfg.algorithm.batch_trajectories // P, cfg.scale_out.queue_timeout, version,
                    ray=s.ray is not None, poll=poll)


def train(algorithm: Algorithm, config) -> int:
  """Trains `algorithm` with `config` (its composed config); returns the exit code."""
  try:
    s = setup(algorithm, config)
  except KeyboardInterrupt:  # Ctrl-C before the handlers below exist: nothing is written before `setup` returns
    then = (f"continue with --resume {config.run.resume}" if config.run.resume is not None
            else "nothing written; run the same command again")
    print(f"interrupted while setting up: {then}", file=sys.stderr)
    return 128 + signal.SIGINT
  shutdown = Shutdown(group=jax.process_count() > 1)
  try:
    return _train(s, shutdown)
  except Interrupted as e:
    if shutdown.training:
      raise  # NOTE: only a signal landing in one of the loop's error handlers gets here; the error goes with it
    return stopped_setting_up(s, e.signum)
  finally:
    shutdown.restore()


def stopped_setting_up(s: Setup, signum: int) -> int:
  """A signal after `setup` and before the training loop (state init, the run directory's sinks): nothing was trained,
  so nothing is saved; one line says how to go on."""
  run_dir = s.config.run.run_dir
  then = (f"nothing trained since the last checkpoint; continue with --resume {run_dir}" if s.resuming
          else f"{NOTHING_TRAINED} {run_dir}")
  if distributed.is_main():
    print(f"{stopped(signum)} while setting up: {then}", file=sys.stderr)
  return 128 + signum


def _train(s: Setup, shutdown: Shutdown) -> int:
  algorithm, cfg, spec = s.algorithm, s.config, s.spec
  P = jax.process_count()
  if distributed.is_main():
    print(header(s), flush=True)
  K = cfg.num_seeds
  init = lambda key: algorithm.init_state(cfg.algorithm, s.network, spec.obs_shape, key)  # noqa: E731
  fieldnames = BASE_COLUMNS + list(algorithm.metrics) + ["learn_time"] + list(columns(algorithm.source, bool(s.ray)))
  run = Run(cfg, spec, s.placement, s.resuming, init, fieldnames)
  state, start_step = run.state, run.start_step
  devices = cfg.scale_out.learner_devices
  update_fn = lift(algorithm.make_update_fn(cfg.algorithm, s.network, spec.discrete, spec.image_obs,
                                            axis_name=AXIS if devices * P > 1 else None),
                   num_agents=K, split=algorithm.split_agents, devices=devices, batch_axis=env_axis)
  normalize_obs = cfg.normalize_obs
  greedy_fn = acting.make_greedy_fn(s.network, spec.discrete, normalize_obs)
  no_norm = normalize.init(())

  def policy(j: int):  # agent j's greedy policy, reading the latest state
    agent = local_copy(state) if K == 1 else jax.tree.map(lambda x: x[j], state)
    return lambda obs: greedy_fn(agent.params, getattr(agent, "obs_norm", no_norm), obs)

  steps_per_update = cfg.algorithm.steps_per_update
  source = None

  def close_source() -> None:
    nonlocal source
    if source is not None:
      source.close()
      source = None

  shutdown.training = True
  try:
    source = (_rollout_source(s, run, start_step, shutdown.poll) if algorithm.source == "rollouts"
              else _actor_source(s, run, state, start_step, shutdown.poll))
    for index in range(start_step // steps_per_update, cfg.algorithm.num_updates):  # the update's index
      # A signal ends the wait for the batch at the source's next poll; one during the update waits for the update,
      # its log row, evaluation and checkpoint: all or none.
      with shutdown.deferred():
        state_in, batch, metrics = source.next(state)
        t0 = time.perf_counter()
        new_state, update_metrics = update_fn(state_in, batch)
        update_metrics = jax.device_get(local_copy(update_metrics))
        step = (index + 1) * steps_per_update
        if run.non_finite(update_metrics):
          shutdown.end()  # the run ends here, with no state to save: a signal changes nothing
          return run.stop_non_finite(step, update_metrics)
        state = new_state
        metrics = dict(update_metrics, learn_time=time.perf_counter() - t0, **metrics)
        source.published(state)
        run.step(step, state, metrics, policy, final=index == cfg.algorithm.num_updates - 1)
      shutdown.check(index)
  except Interrupted as e:  # the handler or poll has ended the run: a second signal is dropped
    close_source()  # before the checkpoint, so no actor writes to the tracker while it is saved
    run.interrupted(state, e.signum)
    return 128 + e.signum
  except (ActorError, TimeoutError, DiskFullError) as e:
    shutdown.end()
    run.close()
    print(f"error: {e}", file=sys.stderr)
    return 1
  except Exception as e:
    shutdown.end()
    if distributed.lost(e):
      close_source()
      distributed.stop_lost(e, run)
    raise
  finally:
    close_source()  # also when the learner itself raises: no actor thread outlives the run
    shutdown.end()
  run.finish()
  return 0


@main_guard
def main(name: str, argv: list[str] | None = None) -> int:
  """Parses `argv` (default: sys.argv[1:]) into the algorithm's composed config and trains."""
  algorithm = registry.get(name)
  config = parse(parse_type(algorithm), argv, description(algorithm))
  return train(algorithm, config)


def description(algorithm: Algorithm) -> str:
  return (f"Train {algorithm.name} ({(algorithm.config.__doc__ or '').strip().splitlines()[0]}) on envpool. Writes "
          "config.json, progress.csv, TensorBoard events and orbax checkpoints to the run directory; --resume RUN_DIR "
          "continues a stopped run from its last checkpoint.")
