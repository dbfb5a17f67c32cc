"""orbax checkpoints of a training-state pytree plus a small JSON of host-side progress (episode window, timers).

A checkpoint is written synchronously and atomically by orbax (a temporary directory renamed when complete), so a
kill loses at most the work since the last one and never leaves a half-written latest step behind.
"""
from __future__ import annotations

import os

import jax
import numpy as np
import orbax.checkpoint as ocp

from algorithms.parallel import local_copy
from harness.cli import UsageError, first_line

DIR = "checkpoints"


class Checkpointer:
  def __init__(self, run_dir: str, keep: int = 3, create: bool = True):
    """`create=False` opens for reading only: a missing directory then simply holds no checkpoints."""
    self.directory = os.path.abspath(os.path.join(run_dir, DIR))
    self._manager = None
    if create or os.path.isdir(self.directory):
      extra = {}
      if jax.process_count() > 1:  # process 0 alone saves and restores (the state is replicated on every process)
        if create:
          os.makedirs(self.directory, exist_ok=True)
        create = False  # NOTE: orbax refuses to create the directory itself when only some processes take part
        extra["multiprocessing_options"] = ocp.options.MultiprocessingOptions(primary_host=0, active_processes={0})
      options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=create, enable_async_checkpointing=False,
                                             **extra)
      self._manager = ocp.CheckpointManager(self.directory, options=options)

  def save(self, step: int, state, meta: dict) -> None:
    state = jax.device_get(local_copy(state))
    self._manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                     meta=ocp.args.JsonSave(meta)), force=True)
    self._manager.wait_until_finished()

  def steps(self) -> list[int]:
    return list(self._manager.all_steps()) if self._manager else []

  def restore(self, template, step: int | None = None):
    """Restores (state, meta) shaped like `template`. UsageError when missing, corrupt or incompatible."""
    if step is None:
      step = self._manager.latest_step() if self._manager else None
    if step is None:
      raise UsageError(f"no checkpoint in {self.directory}")
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype), template)
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract),
                                                                     meta=ocp.args.JsonRestore()))
    except Exception as e:  # orbax raises many types for unreadable or mismatched trees
      raise UsageError(f"checkpoint {step} in {self.directory} is corrupt or incompatible with this config: "
                       f"{first_line(e)}") from None
    state = restored["state"]
    want, got = jax.tree_util.tree_flatten_with_path(abstract)[0], jax.tree_util.tree_flatten_with_path(state)[0]
    for (path, a), (_, b) in zip(want, got):
      if tuple(a.shape) != tuple(np.shape(b)):
        raise UsageError(f"checkpoint {step} in {self.directory} does not fit this config: "
                         f"{jax.tree_util.keystr(path)} has shape {np.shape(b)}, expected {tuple(a.shape)}")
    return state, restored["meta"], step

  def close(self) -> None:
    if self._manager:
      self._manager.close()
