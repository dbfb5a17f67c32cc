"""Trajectory sources: where the learner's batches come from, behind one interface (`TrajectorySource`).

- `Rollouts` (an algorithm's source "rollouts"; PPO, A2C): synchronous on-policy rollouts, every env stepping
  `num_steps` with the current parameters, from a local envpool (`envs.rollout.Rollout`) or Ray env workers
  (`harness.remote.RayRollout`), which share `collect(params, carry)`.
- `ActorQueue` (source "actors"; IMPALA): actor threads (`envs.actors.ActorPool`) or Ray actors
  (`harness.remote.RayActorPool`), which share `get(timeout)`, act with the newest parameters published to them and
  fill a bounded queue; a batch is the next trajectories from it.

Both call `poll` at every safe point of their wait for a batch (between env steps, between queue polls); it raises to
abandon the batch (the run's stop signal: `harness.loop.Shutdown.poll`).

Host-side and stateful by design.
"""
from __future__ import annotations

from typing import Any, Callable, Protocol

import jax
import numpy as np

from algorithms.parallel import local_copy
from envs.actors import ParamStore
from envs.rollout import Trajectory, concat_trajectories
from harness import distributed


def columns(source: str, ray: bool) -> tuple[str, ...]:
  """The progress.csv columns a source of this kind ("rollouts" or "actors") adds to the update's metrics."""
  own = () if source == "rollouts" else ("queue_size", "param_syncs", "policy_lag", "policy_lag_max")
  return own + (("actor_restarts",) if ray else ())


class TrajectorySource(Protocol):
  """Where the loop's batches come from; `columns` names the progress.csv columns its `next` adds."""

  def next(self, state) -> tuple[Any, Trajectory, dict]:
    """(the state to update, its batch, this source's metrics). A rollout source hands back the state with what
    acting changed (observation statistics, acting key); a queue source hands it back as it was."""

  def published(self, state) -> None:
    """Called with every new state after its update (a queue source publishes its parameters to the actors)."""

  def close(self) -> None:
    """Stops the workers and closes the envs; called once, also after an error."""


class Rollouts:
  """Synchronous rollouts with the state's parameters on the acting device."""

  def __init__(self, rollout, device, normalize_obs: bool, ray: bool, poll: Callable[[], None]):
    self.rollout, self.device, self.normalize_obs, self.ray, self.poll = rollout, device, normalize_obs, ray, poll

  def next(self, state):
    P, p = jax.process_count(), jax.process_index()
    params, obs_norm, key = local_copy((state.params, state.obs_norm, state.actor_key))
    if P > 1:  # each process samples its own actions
      key = jax.random.fold_in(key, p)
    # NOTE: no copy when acting on the learner device; the rollout ends before the update donates the state.
    inputs = jax.device_put((params, (obs_norm, key)), self.device)
    traj, (new_norm, new_key) = self.rollout.collect(*inputs, poll=self.poll)
    if P > 1:  # the same state on every process: all processes' observations, the next acting key
      new_norm = distributed.merge_stats(inputs[1][0], new_norm) if self.normalize_obs else inputs[1][0]
      new_key = jax.random.split(local_copy(state.actor_key))[0]
    metrics = {"actor_restarts": self.rollout.restarts} if self.ray else {}
    return state.replace(obs_norm=new_norm, actor_key=new_key), traj, metrics

  def published(self, state) -> None:
    pass

  def close(self) -> None:
    self.rollout.close()


class ActorQueue:
  """Batches of `batch` trajectories (this process's share) from actors that act with published parameters.

  NOTE: the policy lag of a trajectory is the number of parameter versions published since the one it was acted
  with; the bounded queue keeps it within about `(queue_size + actors) * envs_per_actor / batch_trajectories`
  (`envs.actors`).
  """
  def __init__(self, make_pool, store: ParamStore, batch: int, timeout: float, version: int, ray: bool,
               poll: Callable[[], None]):
    self.store, self.batch, self.timeout, self.version, self.ray, self.poll = store, batch, timeout, version, ray, poll
    self.pool = make_pool(store).start()

  def next(self, state):
    items, n = [], 0
    while n < self.batch:
      traj, version, _ = self.pool.get(self.timeout, self.poll)
      items.append((traj, version))
      n += traj.rewards.shape[1]
    lags = [self.version - v for _, v in items]
    metrics = dict(queue_size=self.pool.qsize(), param_syncs=self.store.syncs, policy_lag=float(np.mean(lags)),
                   policy_lag_max=max(lags))
    if self.ray:
      metrics["actor_restarts"] = self.pool.restarts
    return state, concat_trajectories([t for t, _ in items]), metrics

  def published(self, state) -> None:
    self.version += 1
    self.store.publish(local_copy(state.params), self.version)

  def close(self) -> None:
    self.pool.stop()  # no actor thread outlives the run, and none writes to the tracker while it is saved
