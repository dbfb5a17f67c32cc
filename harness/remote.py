"""Actors on a Ray cluster, the counterpart of PARL's `xparl start` / `xparl connect`.

With `--ray-address`, each actor (IMPALA) or environment worker (PPO) is a Ray actor on the cluster's CPUs: it owns
an envpool and a CPU copy of the policy and returns whole rollouts, so one remote call carries `num_steps` steps of
all its envs. Parameters go out through Ray's object store (one `ray.put` per parameter version), trajectories and
finished games come back. Actors are created with `max_restarts=-1`: a worker whose process dies is restarted by Ray
(a fresh envpool with the same seeds), the lost rollout is asked for again, and the event is logged. Actors that
do not fit on the cluster yet stay pending and start when a machine joins (`ray start --address ...`).

`RayActorPool` has the interface of `envs.actors.ActorPool` (IMPALA); `RayRollout` that of `envs.rollout.Rollout`
(PPO). Host-side and stateful by design.
"""
from __future__ import annotations

import os
import socket
import sys
import time
from typing import Any, Callable

import jax

from algorithms import normalize
from harness.cli import UsageError, first_line
from envs.actors import ActorError, stuck_error
from envs.rollout import concat_trajectories

NAMESPACE = "jaxpod"


def connect(address: str):
  """Joins the Ray cluster at `address` (HOST:PORT, `auto`, or `local` for a one-machine cluster started here)."""
  try:
    import ray
  except ImportError:
    raise UsageError("--ray-address needs Ray: pip install '.[ray]'") from None
  # NOTE: actors act on CPU; on a GPU machine they must not each take the accelerator's memory.
  runtime_env = {"env_vars": {"JAX_PLATFORMS": "cpu"}}
  host, _, port = address.rpartition(":")
  if host and port.isdigit():  # NOTE: ray.init retries an address where nothing listens for minutes
    try:
      socket.create_connection((host, int(port)), timeout=10).close()
    except OSError as e:
      raise UsageError(f"--ray-address {address}: cannot join a Ray cluster there ({e.strerror or e}); start one "
                       f"with `ray start --head --port {port}`") from None
  try:
    if address == "local":
      ray.init(namespace=NAMESPACE, runtime_env=runtime_env, include_dashboard=False, logging_level="WARNING")
    else:
      ray.init(address=address, namespace=NAMESPACE, runtime_env=runtime_env, logging_level="WARNING")
  except Exception as e:  # noqa: BLE001  (ray raises ConnectionError, ValueError, RuntimeError, ...)
    raise UsageError(f"--ray-address {address}: cannot join a Ray cluster there ({first_line(e)})") from None
  return ray


class Worker:
  """One Ray actor: an envpool of `num_envs` envs stepped with a CPU copy of the policy, `num_steps` per call."""

  def __init__(self, env_id: str, frame_size: int | None, network: str, normalize_obs: bool, num_envs: int,
               num_steps: int, seed: int, key_seed: int, threads: int = 1):
    import networks
    from algorithms import acting
    from harness import xla
    from envs import EpisodeTracker, resolve_env
    from envs.rollout import make_rollout

    spec = resolve_env(env_id, frame_size=frame_size, notify=False)
    xla.configure(spec.image_obs)
    xla.start_cpu_backend(threads)  # the CPUs this actor reserved, not every core of its machine
    net = networks.make_network(network, discrete=spec.discrete, image_obs=spec.image_obs,
                                action_dim=spec.action_dim)
    act_fn = acting.make_act_fn(net, spec.discrete, normalize_obs)
    self.finished: list = []
    tracker = EpisodeTracker(num_envs, window=1)
    update = tracker.update
    tracker.update = lambda *a, **k: self.finished.extend(update(*a, **k))  # keeps every game that ends
    self.rollout = make_rollout(spec, num_envs, num_steps, 1, seed, act_fn, tracker)
    self.key = jax.random.PRNGKey(key_seed)
    self.no_norm = normalize.init(() if spec.image_obs else spec.obs_shape)
    import ray
    self.where = dict(pid=os.getpid(), node=ray.util.get_node_ip_address())

  def collect(self, params, obs_norm):
    """One rollout with `params` (and observation statistics, or None) -> (trajectory, statistics after it, games
    that ended [(env, return, length)], {pid, node})."""
    params, norm = jax.device_put((params, self.no_norm if obs_norm is None else obs_norm))
    traj, (norm, self.key) = self.rollout.collect(params, (norm, self.key))
    finished, self.finished = self.finished, []
    return traj, jax.device_get(norm), finished, self.where


class _Workers:
  """Ray actor handles, their in-flight calls, restarts and the games they report into the run's tracker."""

  def __init__(self, ray, spec_args: list[dict], envs_per_worker: int, tracker, cpus: float):
    self.ray, self.tracker, self.n = ray, tracker, envs_per_worker
    remote = ray.remote(num_cpus=cpus, max_restarts=-1, max_task_retries=0)(Worker)
    self.handles = [remote.remote(**kw, threads=max(1, round(cpus))) for kw in spec_args]
    self.pending: dict = {}  # ObjectRef -> (worker, call arguments, caller's tag)
    self.where: list[dict | None] = [None] * len(self.handles)
    self.restarts = 0
    self.down = [False] * len(self.handles)  # died and not yet back
    self.last_output: list[float | None] = [None] * len(self.handles)

  def submit(self, i: int, params_ref, obs_norm, tag: Any = None) -> None:
    self.pending[self.handles[i].collect.remote(params_ref, obs_norm)] = (i, (params_ref, obs_norm), tag)

  def next(self, timeout: float, poll: Callable[[], None]) -> tuple[int, Any, Any]:
    """The next finished call as (worker, (trajectory, statistics), tag); a call lost with its worker is made again
    (Ray restarts the worker). Calls `poll` at least every second."""
    ray = self.ray
    deadline = time.time() + timeout
    while True:
      poll()
      ready, _ = ray.wait(list(self.pending), num_returns=1, timeout=max(min(deadline - time.time(), 1.0), 0.0))
      if not ready:
        if time.time() > deadline:
          raise stuck_error(self.last_output, timeout, " from the Ray actors", "not placed or no output yet")
        continue
      ref = ready[0]
      i, args, tag = self.pending.pop(ref)
      try:
        traj, norm, finished, where = ray.get(ref)
      except ray.exceptions.RayActorError as e:
        if not self.down[i]:  # NOTE: calls made while Ray is restarting the actor fail too; one death, one event
          self.down[i] = True
          self.restarts += 1
          print(f"warning: Ray actor {i} {self._where(i)}died ({first_line(e, 160)}); Ray restarts it and its "
                "rollout is collected again", file=sys.stderr, flush=True)
        time.sleep(0.5)
        self.submit(i, *args, tag)
        continue
      except ray.exceptions.RayTaskError as e:
        raise ActorError(f"Ray actor {i} failed: {str(e).strip().splitlines()[-1][:300]}") from None
      self.down[i] = False
      if self.where[i] != where:
        print(f"ray: actor {i} runs on node {where['node']} (pid {where['pid']})", file=sys.stderr, flush=True)
        self.where[i] = where
      self.last_output[i] = time.time()
      self.tracker.record([(env + i * self.n, ret, length) for env, ret, length in finished])
      return i, (traj, norm), tag

  def _where(self, i: int) -> str:
    w = self.where[i]
    return "" if w is None else f"(pid {w['pid']} on {w['node']}) "

  def ready_count(self) -> int:
    ready, _ = self.ray.wait(list(self.pending), num_returns=len(self.pending), timeout=0)
    return len(ready)

  def stop(self) -> None:
    for h in self.handles:
      try:
        self.ray.kill(h, no_restart=True)
      except Exception:  # noqa: BLE001  (already gone)
        pass
    self.handles, self.pending = [], {}


def key_seed(seed: int, start_step: int) -> int:
  """Seed of worker 0's acting PRNG (worker w uses this + w): differs between runs and between resumptions."""
  return (seed * 1_000_003 + start_step) % (2**31 - 1)


def worker_args(spec, network: str, num_workers: int, envs_per_worker: int, num_steps: int, first_seed: int,
                key_seed: int, normalize_obs: bool) -> list[dict]:
  """Worker w steps envs [w * n, (w + 1) * n) of the run, with the env seeds a local envpool would give them."""
  return [dict(env_id=spec.env_id, frame_size=spec.frame_size, network=network, normalize_obs=normalize_obs,
               num_envs=envs_per_worker, num_steps=num_steps, seed=first_seed + w * envs_per_worker,
               key_seed=key_seed + w)
          for w in range(num_workers)]


class RayActorPool:
  """IMPALA's actors on Ray, with `envs.actors.ActorPool`'s interface: every actor always has one rollout in flight,
  acted with the newest parameters when it was asked for; finished rollouts wait in Ray's object store."""

  def __init__(self, ray, args: list[dict], store, tracker, cpus: float):
    self.ray, self.store = ray, store
    self.workers = _Workers(ray, args, args[0]["num_envs"], tracker, cpus)
    self.num_actors = len(args)
    self._seen = [-1] * self.num_actors  # the parameter version each actor last acted with
    self._ref, self._ref_version = None, None

  def _submit(self, i: int) -> None:
    params, version = self.store.get(self._seen[i])  # counts the actor's parameter syncs
    if version != self._ref_version:  # one object-store copy per version, shared by every actor
      self._ref, self._ref_version = self.ray.put(jax.device_get(params)), version
    self._seen[i] = version
    self.workers.submit(i, self._ref, None, tag=version)

  def start(self) -> "RayActorPool":
    for i in range(self.num_actors):
      self._submit(i)
    return self

  def get(self, timeout: float, poll: Callable[[], None] = lambda: None) -> tuple[Any, int, int]:
    """Next (trajectory, parameter version, actor id); the actor is at once given its next rollout."""
    i, (traj, _), version = self.workers.next(timeout, poll)
    self._submit(i)
    return traj, version, i

  def qsize(self) -> int:
    return self.workers.ready_count()

  @property
  def restarts(self) -> int:
    return self.workers.restarts

  def stop(self, timeout: float = 10.0) -> None:
    self.workers.stop()


class RayRollout:
  """PPO's environment workers on Ray, with `envs.rollout.Rollout`'s interface: `collect` asks every worker for a
  rollout with the same parameters and joins them on the env axis (worker w's envs in columns w * n ...).

  Observation statistics: every worker starts from the learner's and updates them with its own observations as it
  acts (as the local rollout does); the learner then takes in all workers' observations (`normalize.merge`).
  """

  def __init__(self, ray, args: list[dict], tracker, cpus: float, normalize_obs: bool, timeout: float):
    self.ray, self.normalize_obs, self.timeout = ray, normalize_obs, timeout
    self.workers = _Workers(ray, args, args[0]["num_envs"], tracker, cpus)
    self.num_workers = len(args)

  def collect(self, params, carry, poll: Callable[[], None] = lambda: None) -> tuple[Any, Any]:
    obs_norm, key = carry
    ref = self.ray.put(jax.device_get(params))
    base = jax.device_get(obs_norm) if self.normalize_obs else None
    for i in range(self.num_workers):
      self.workers.submit(i, ref, base)
    results: dict[int, tuple] = {}
    while len(results) < self.num_workers:
      i, result, _ = self.workers.next(self.timeout, poll)
      results[i] = result
    trajs = [results[i][0] for i in range(self.num_workers)]
    if self.normalize_obs:
      obs_norm = normalize.merge(base, [results[i][1] for i in range(self.num_workers)])
    return concat_trajectories(trajs), (obs_norm, key)

  @property
  def restarts(self) -> int:
    return self.workers.restarts

  def close(self) -> None:
    self.workers.stop()

