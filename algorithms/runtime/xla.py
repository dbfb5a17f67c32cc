"""XLA settings applied by the entry points before JAX starts its backend.

NOTE: XLA:CPU's concurrency-optimised scheduler runs independent kernels of one computation on several threads.
For the acting step (a tiny MLP plus normaliser statistics, ~40 kernels) the thread hand-offs cost more than the
work: on a 2-core machine one call takes ~105 us with it and ~35 us without. Conv updates gain ~10% from it, so it
stays on for image observations. Users who set the flag themselves keep theirs.
"""
from __future__ import annotations

import os

CPU_FLAGS = "--xla_cpu_enable_concurrency_optimized_scheduler=false"


def configure(image_obs: bool) -> None:
  """Call before the first JAX computation: XLA reads XLA_FLAGS once, when the backend starts, so a later call (a
  second run in one process, as in the tests) changes nothing."""
  import jax._src.xla_bridge as xb
  if xb.backends_are_initialized():
    return
  flags = os.environ.get("XLA_FLAGS", "")
  if not image_obs and "concurrency_optimized_scheduler" not in flags:
    os.environ["XLA_FLAGS"] = (flags + " " + CPU_FLAGS).strip()
