"""XLA settings applied by the entry points before JAX starts its backend.

NOTE: XLA:CPU's concurrency-optimised scheduler runs independent kernels of one computation on several threads.
For the acting step (a tiny MLP plus normaliser statistics, ~40 kernels) the thread hand-offs cost more than the
work: on a 2-core machine one call takes ~105 us with it and ~35 us without. Conv updates gain ~10% from it, so it
stays on for image observations. Users who set the flag themselves keep theirs.

NOTE: JAX takes 75% of an accelerator's memory when its backend starts, so a second JAX process on the same GPU
(`evaluate.py` beside a running run, `benchmarks.run --jobs 2`) could not allocate. Unless the user set
XLA_PYTHON_CLIENT_PREALLOCATE, memory is taken as it is needed.
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
  os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
  flags = os.environ.get("XLA_FLAGS", "")
  if not image_obs and "concurrency_optimized_scheduler" not in flags:
    os.environ["XLA_FLAGS"] = (flags + " " + CPU_FLAGS).strip()


def start_cpu_backend(threads: int) -> None:
  """Starts XLA:CPU with its thread pools sized for `threads` cores rather than for every core of the machine
  (Ray workers, which reserve `--actor-cpus` each). Call before the first JAX computation.

  NOTE: XLA sizes its pools from the CPU affinity of the thread that starts the backend (as under `taskset`), and
  threads keep the mask they were created with. So the mask is narrowed while the backend starts, then every thread
  of the process gets the whole mask back: the pools stay small, and no thread stays pinned. Measured on a 2-core
  machine: 17 threads after start-up with both cores, 13 with one.
  """
  import jax
  import jax._src.xla_bridge as xb
  if xb.backends_are_initialized() or not hasattr(os, "sched_setaffinity"):
    return
  allowed = os.sched_getaffinity(0)
  os.sched_setaffinity(0, sorted(allowed)[:max(threads, 1)])
  try:
    jax.devices()
  finally:
    for task in os.listdir("/proc/self/task"):
      try:
        os.sched_setaffinity(int(task), allowed)
      except OSError:  # a thread that ended meanwhile
        pass
