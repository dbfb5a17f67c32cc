"""The one place where learner functions are lifted over agents and devices.

`lift` turns a function written for one agent, `fn(state, batch) -> (state, metrics)`, into the compiled update the
trainers call: vmapped over several agents (seeds), or data-parallel with `shard_map` over learner devices, local or
of every process of a `jax.distributed` group (state replicated, batch sharded). Learners reduce across devices only
through `all_sum`, `all_sum_flat`, `all_gather` and `value_and_grad` below, so moving between `shard_map`, `pmap` or
another engine touches only this module.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from jax.sharding import Mesh, NamedSharding, PartitionSpec

AXIS = "data"  # the mesh axis learner devices share


def env_axis(path) -> int:
  """The env axis of a trajectory leaf at `path`: time-major fields are [T, N, ...], `last_obs` is [N, ...]."""
  return 0 if path[-1].name == "last_obs" else 1


def split_axis(x: jax.Array, num_agents: int, axis: int) -> jax.Array:
  """[..., K * N (at `axis`), ...] -> [K, ..., N, ...]: agent j's rows j * N ... (j + 1) * N - 1 moved to a new axis 0."""
  shape = x.shape[:axis] + (num_agents, x.shape[axis] // num_agents) + x.shape[axis + 1:]
  return jnp.moveaxis(x.reshape(shape), axis, 0)


def all_sum(tree, axis_name: str | None):
  """Sums a pytree (gradients, summed losses, counts) over the learner devices; identity on one device."""
  return tree if axis_name is None else jax.lax.psum(tree, axis_name)


def all_gather(x: jax.Array, axis_name: str | None) -> jax.Array:
  """Joins every device's slice of a per-env array [N / D, ...] into the whole [N, ...]; identity on one device.

  NOTE: a sum of zero-padded slices rather than `lax.all_gather`, whose result shard_map types as per-device
  ("varying"), so it could not be returned as replicated state; adding zeros is exact.
  """
  if axis_name is None:
    return x
  whole = jnp.zeros((x.shape[0] * jax.lax.axis_size(axis_name),) + x.shape[1:], x.dtype)
  return jax.lax.psum(jax.lax.dynamic_update_slice_in_dim(whole, x, shard_offset(x.shape[0], axis_name), 0),
                      axis_name)


def shard_offset(size: int, axis_name: str | None) -> jax.Array | int:
  """Global index of this device's first env when each device holds `size` envs; 0 on one device."""
  return 0 if axis_name is None else jax.lax.axis_index(axis_name) * size


def value_and_grad(loss_fn: Callable, axis_name: str | None, reduce_aux: bool = False) -> Callable:
  """`jax.value_and_grad(loss_fn, has_aux=True)` whose loss (a sum over this device's samples, or its share of a
  mean) and gradients are summed over the learner devices; with `reduce_aux`, the aux metrics too (shares).

  Everything reduced goes through one flattened all-reduce: on CPU collectives (gloo between hosts, forced host
  devices) the latency of each collective, not its size, is what costs.
  NOTE: under `shard_map` the gradient of replicated parameters would be summed over devices implicitly; casting
  them to per-device values first keeps every device's gradient its own, so the one reduction is this one.
  """
  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

  def wrapped(params, *args):
    if axis_name is None:
      return grad_fn(params, *args)
    (loss, aux), grads = grad_fn(jax.lax.pcast(params, axis_name, to="varying"), *args)
    if reduce_aux:
      loss, grads, aux = all_sum_flat((loss, grads, aux), axis_name)
    else:
      loss, grads = all_sum_flat((loss, grads), axis_name)
    return (loss, aux), grads

  return wrapped


def all_sum_flat(tree, axis_name: str | None):
  """`all_sum` of a pytree of float arrays as one collective over their concatenation."""
  if axis_name is None:
    return tree
  flat, unravel = ravel_pytree(tree)
  return unravel(jax.lax.psum(flat, axis_name))


def learner_devices(count: int) -> list:
  """The learner's devices in this process: the first `count` local devices of JAX's default backend (the
  accelerator when there is one). The rule is written here alone; the harness places acting around it."""
  local = jax.local_devices()
  if count > len(local):
    raise ValueError(f"{count} learner devices asked for, {len(local)} present")
  return local[:count]


def learner_mesh(devices: int) -> Mesh:
  """The first `devices` local devices of every process (process 0's first, so device k holds the k-th slice)."""
  learner_devices(devices)
  by_process: dict[int, list] = {}
  for d in jax.devices():
    by_process.setdefault(d.process_index, []).append(d)
  return Mesh(np.array([d for p in sorted(by_process) for d in by_process[p][:devices]]), (AXIS,))


def local_copy(tree):
  """This process's copy of replicated outputs of a multi-process update (plain arrays pass through)."""
  def one(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      return x.addressable_data(0)
    return x
  return jax.tree.map(one, tree)


def lift(fn: Callable, *, num_agents: int = 1, split: Callable | None = None, devices: int = 1,
         batch_axis: Callable | None = None, donate: bool = True) -> Callable:
  """jit(fn); vmapped over agents when `num_agents` K > 1; data-parallel over `devices` D > 1 local devices.

  Agents: the batch comes as the acting loop collected it, all agents' envs side by side; `split(batch, K)` gives it
  a leading agent axis inside the jit, so the host never copies it. Metrics come back with a leading agent axis.

  Devices: `fn` must have been built to reduce over `AXIS` (gradients through `value_and_grad`); each batch leaf
  is split into D equal parts along `batch_axis(path)` (its env axis), the state is replicated, and the outputs are
  the (identical) replicated results. With several processes (jax.distributed) the mesh holds D devices of every
  process, each process passes its own part of the batch, and `local_copy` reads the outputs.

  Placement: the state is put on the learner device(s) (`learner_devices`) at every call, so leaves that arrive
  from the acting device (PPO's observation statistics and acting key) never pull the update onto it; the outputs
  live there too. Arrays already in place are not copied.

  Donation: the state passed in is donated (XLA updates it in place, on every backend: XLA:CPU honours donation
  too), so after a call its arrays are deleted. Nothing else may hold them: parameters published to actors are
  copies (`envs.actors.ParamStore`). `donate=False` is for benchmarks that measure what donation saves.
  """
  donate = (0,) if donate else ()
  if num_agents > 1 and devices > 1:
    raise ValueError("several agents and several learner devices together are not supported")
  if num_agents > 1:
    vmapped = jax.vmap(fn)
    fn = lambda state, batch: vmapped(state, split(batch, num_agents))  # noqa: E731
  processes = jax.process_count()
  if devices == 1 and processes == 1:
    device, update = learner_devices(1)[0], jax.jit(fn, donate_argnums=donate)
    return lambda state, batch: update(jax.device_put(state, device), batch)
  mesh = learner_mesh(devices)
  replicated = NamedSharding(mesh, PartitionSpec())
  compiled = {}

  def global_state(x):
    if processes == 1:
      return jax.device_put(x, replicated)
    if isinstance(x, jax.Array) and x.sharding == replicated:
      return x
    # NOTE: jax.device_put would compare the value across processes on every call; it is the same by construction.
    return jax.make_array_from_process_local_data(replicated, np.asarray(x))

  def call(state, batch):
    treedef = jax.tree.structure(batch)
    if treedef not in compiled:
      specs = jax.tree_util.tree_map_with_path(lambda p, _: PartitionSpec(*[None] * batch_axis(p), AXIS), batch)
      compiled[treedef] = (specs, jax.jit(jax.shard_map(fn, mesh=mesh, in_specs=(PartitionSpec(), specs),
                                                        out_specs=PartitionSpec()), donate_argnums=donate))
    specs, update = compiled[treedef]
    if processes > 1:  # this process's part of the batch, to its devices of the global mesh
      batch = jax.tree.map(lambda x, s: jax.make_array_from_process_local_data(NamedSharding(mesh, s), x),
                           batch, specs)
    return update(jax.tree.map(global_state, state), batch)

  return call
