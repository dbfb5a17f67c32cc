"""Actor threads for IMPALA-style training (Sebulba: actors on CPU threads, learner on the device).

Each actor owns its envpool (through a `Rollout`) and acts with the newest parameters the learner has published;
its trajectories, tagged with the parameter version they were acted with, go to the learner through one bounded
queue. Host-side and stateful by design.

NOTE: the queue is bounded (one slot per actor by default), so an actor blocks once the queue is full. An update
takes `batch_trajectories / envs_per_actor` actor outputs, and an output waits behind at most the queued ones and the
other actors' next, so the policy lag stays within about `(queue_size + actors) * envs_per_actor /
batch_trajectories` learner updates (2 with the 4 x 5 envs of 2 cores, ~16 with PARL's 32 x 5 on a learner slower
than its actors); the learner logs the measured lag per batch.
"""
from __future__ import annotations

import queue
import threading
import time
from typing import Any, Callable

import jax


class ActorError(RuntimeError):
  """An actor thread failed; the message names the actor and the original error."""


def stuck_error(last_output: list, timeout: float, where: str = "", silent: str = "no output yet") -> TimeoutError:
  """The error for a learner that waited `timeout` seconds for a trajectory: names every actor whose last output
  (`last_output[i]`, a time, or None for none yet: `silent`) is older than that. Local threads and Ray actors alike."""
  now = time.time()
  stuck = [f"actor {i} ({silent if t is None else f'last output {now - t:.0f} s ago'})"
           for i, t in enumerate(last_output) if t is None or now - t > timeout]
  return TimeoutError(f"no trajectory for {timeout:.0f} s{where}; stuck: {', '.join(stuck) or 'none'}")


class ParamStore:
  """The newest parameters and their version: written by the learner, read by every actor.

  NOTE: `publish` keeps a copy on the acting device, never the learner's arrays: the update donates its state, so
  an actor still acting with the learner's own buffers would find them deleted.
  """

  def __init__(self, params, version: int, device):
    self._device = device
    self._lock = threading.Lock()
    self.syncs = 0  # times an actor picked up a newer version
    self.publish(params, version)

  def publish(self, params, version: int) -> None:
    params = jax.tree.map(self._copy, params)
    with self._lock:
      self._params, self._version = params, version

  def _copy(self, x):
    # NOTE: from an array on several devices (a replicated learner state) `device_put(..., may_alias=False)` still
    # hands back the shard already on the target device (jax 0.10.2, measured); copy one shard instead.
    if isinstance(x, jax.Array) and len(x.sharding.device_set) > 1:
      x = x.addressable_data(0)
    return jax.device_put(x, self._device, may_alias=False)

  def get(self, seen_version: int = -1) -> tuple[Any, int]:
    with self._lock:
      if self._version != seen_version:
        self.syncs += 1
      return self._params, self._version


class ActorPool:
  """Runs `num_actors` threads; `make_actor(i)` builds actor i's `(rollout, carry)` inside its thread."""

  def __init__(self, make_actor: Callable[[int], tuple[Any, Any]], num_actors: int, store: ParamStore,
               queue_size: int):
    self.store, self.num_actors = store, num_actors
    self.queue: queue.Queue = queue.Queue(maxsize=queue_size)
    self._make_actor = make_actor
    self._stop = threading.Event()
    self._errors: queue.Queue = queue.Queue()
    self.last_output = [None] * num_actors  # time of each actor's last trajectory
    self._threads = [threading.Thread(target=self._run, args=(i,), name=f"actor-{i}", daemon=True)
                     for i in range(num_actors)]

  def start(self) -> "ActorPool":
    self.started = time.time()
    for t in self._threads:
      t.start()
    return self

  def _run(self, i: int) -> None:
    rollout = None
    try:
      rollout, carry = self._make_actor(i)
      version = -1
      while not self._stop.is_set():
        params, version = self.store.get(version)
        traj, carry = rollout.collect(params, carry)
        self.last_output[i] = time.time()
        while not self._stop.is_set():
          try:
            self.queue.put((traj, version, i), timeout=0.1)
            break
          except queue.Full:
            continue
    except BaseException as e:  # noqa: BLE001  (reported to the learner, which re-raises)
      self._errors.put((i, e))
      self._stop.set()
    finally:
      if rollout is not None:
        rollout.close()

  def _raise_if_failed(self) -> None:
    if not self._errors.empty():
      i, e = self._errors.get()
      raise ActorError(f"actor {i} failed: {type(e).__name__}: {e}") from e

  def get(self, timeout: float, poll: Callable[[], None] = lambda: None) -> tuple[Any, int, int]:
    """Next (trajectory, parameter version, actor id). Raises ActorError if an actor failed, TimeoutError naming the
    stuck actors if nothing arrives within `timeout` seconds. Calls `poll` every 0.1 s, outside the queue's lock."""
    deadline = time.time() + timeout
    while True:
      poll()
      self._raise_if_failed()
      try:
        return self.queue.get(timeout=0.1)
      except queue.Empty:
        if time.time() > deadline:
          raise stuck_error(self.last_output, timeout)

  def qsize(self) -> int:
    """Trajectories waiting for the learner."""
    return self.queue.qsize()

  def stop(self, timeout: float = 10.0) -> None:
    """Stops every actor and waits for them (each finishes its current rollout, then closes its envs)."""
    self._stop.set()
    deadline = time.time() + timeout
    for t in self._threads:
      while t.is_alive() and time.time() < deadline:
        try:  # unblock actors waiting on a full queue
          self.queue.get_nowait()
        except queue.Empty:
          pass
        t.join(timeout=0.05)
