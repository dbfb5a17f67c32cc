"""The one place where learner functions are lifted over agents and devices.

`lift` turns a function written for one agent, `fn(state, batch) -> (state, metrics)`, into the compiled update the
trainers call. Moving between `vmap`, `pmap` and `shard_map` touches only this module.
"""
from __future__ import annotations

from typing import Callable

import jax


def lift(fn: Callable, *, num_agents: int = 1) -> Callable:
  """jit(fn), vmapped over a leading agent axis when `num_agents > 1` (several seeds in one process)."""
  if num_agents > 1:
    fn = jax.vmap(fn)
  # NOTE: buffer donation lets XLA update parameters in place on accelerators; XLA:CPU ignores it with a warning.
  donate = (0,) if jax.default_backend() != "cpu" else ()
  return jax.jit(fn, donate_argnums=donate)
