"""The one place where learner functions are lifted over agents and devices.

`lift` turns a function written for one agent, `fn(state, batch) -> (state, metrics)`, into the compiled update the
trainers call. Moving between `vmap`, `pmap` and `shard_map` touches only this module.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp


def split_axis(x: jax.Array, num_agents: int, axis: int) -> jax.Array:
  """[..., K * N (at `axis`), ...] -> [K, ..., N, ...]: agent j's rows j * N ... (j + 1) * N - 1 moved to a new axis 0."""
  shape = x.shape[:axis] + (num_agents, x.shape[axis] // num_agents) + x.shape[axis + 1:]
  return jnp.moveaxis(x.reshape(shape), axis, 0)


def lift(fn: Callable, *, num_agents: int = 1, split: Callable | None = None) -> Callable:
  """jit(fn); with `num_agents` K > 1 (several seeds in one process), vmapped over a leading agent axis of the state.

  The batch then comes as the acting loop collected it, all agents' envs side by side; `split(batch, K)` gives it a
  leading agent axis inside the jit, so the host never copies it. Metrics come back with a leading agent axis.
  """
  if num_agents > 1:
    vmapped = jax.vmap(fn)
    fn = lambda state, batch: vmapped(state, split(batch, num_agents))  # noqa: E731
  # NOTE: buffer donation lets XLA update parameters in place on accelerators; XLA:CPU ignores it with a warning.
  donate = (0,) if jax.default_backend() != "cpu" else ()
  return jax.jit(fn, donate_argnums=donate)
