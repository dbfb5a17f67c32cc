"""orbax checkpoints of a training-state pytree plus a small JSON of host-side progress (episode window, timers).

A checkpoint is written synchronously and atomically by orbax (a temporary directory renamed when complete), so a
kill loses at most the work since the last one and never leaves a half-written latest step behind. A full disk
(or quota) while writing one, or a log, ends the run with DiskFullError: one line naming the last complete
checkpoint and how to go on.
"""
from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import shutil
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp

from algorithms.parallel import local_copy
from harness.cli import UsageError, first_line

DIR = "checkpoints"
_NO_SPACE = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded"}


class DiskFullError(Exception):
  """The disk or the quota filled while the run wrote a checkpoint or a log. Its text is the whole report (the run
  directory, the last complete checkpoint, `--resume`); the training loop prints it after `error: ` and exits 1."""


def no_space(error: BaseException) -> str | None:
  """"no space left on device" or "disk quota exceeded" if `error`, or an exception it was raised from, is that
  OSError; else None. orbax passes tensorstore's write errors on as ValueError whose text carries the OS error
  ("... No space left on device [os_error_code='28']"), so the text is read too."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if isinstance(error, OSError) and error.errno in _NO_SPACE:
      return _NO_SPACE[error.errno]
    text = str(error)
    code = re.search(r"os_error_code='?(\d+)", text)
    if code and int(code.group(1)) in _NO_SPACE:
      return _NO_SPACE[int(code.group(1))]
    for number, reason in _NO_SPACE.items():
      if os.strerror(number) in text:
        return reason
    error = error.__cause__ or error.__context__
  return None


def complete_steps(run_dir: str) -> list[int]:
  """The steps of RUN_DIR's finalized checkpoints (orbax's temporary directories of unfinished saves left out)."""
  directory = os.path.join(run_dir, DIR)
  return sorted(ocp.path.step.checkpoint_steps(directory)) if os.path.isdir(directory) else []


def disk_full(error: BaseException, writing: str, run_dir: str) -> DiskFullError | None:
  """DiskFullError for a failed write of `writing` in the run RUN_DIR if `error` is a full disk or quota, else None."""
  reason = no_space(error)
  if reason is None:
    return None
  run_dir = os.path.abspath(run_dir)
  steps = complete_steps(run_dir)
  if not steps:  # --resume would find nothing to continue from
    return DiskFullError(f"{reason} writing {writing} (no complete checkpoint yet); free space and start the run "
                         f"again (--overwrite replaces {run_dir})")
  return DiskFullError(f"{reason} writing {writing} (last complete checkpoint: step {steps[-1]}); free space and "
                       f"continue with --resume {run_dir}")


@contextlib.contextmanager
def _orbax_quiet():
  """Holds back the ERROR lines orbax logs through absl on its way to an exception that we report in one line.

  NOTE: orbax logs an `ERROR:absl:` line for every checkpoint metadata file it cannot read, when the manager opens
  the directory and again on restore."""
  logger = logging.getLogger("absl")
  level = logger.level
  logger.setLevel(logging.CRITICAL)
  try:
    yield
  finally:
    logger.setLevel(level)


class _SaveEchoes(logging.Filter):
  """Keeps the echoes of a save that failed for a full disk off stderr: it is reported once, in one line.

  NOTE: when one write of a save fails, orbax abandons the save's asyncio loop while tensorstore completes the
  others. Each of their callbacks then reports "Event loop is closed" as an unraisable exception (while orbax
  unwinds), and asyncio logs each task whose error nobody awaited when it is garbage-collected (at exit): tens of
  tracebacks in all. Hooked in on the first save; it drops them during saves, and for good once a save failed for
  a full disk (the run is ending)."""
  saving = failed = installed = False

  @classmethod
  def install(cls) -> None:
    if cls.installed:
      return
    cls.installed = True
    logging.getLogger("asyncio").addFilter(cls())
    hook = sys.unraisablehook
    sys.unraisablehook = lambda unraisable: None if cls._echo(unraisable.exc_value) else hook(unraisable)

  @classmethod
  def _echo(cls, error: BaseException | None) -> bool:
    if not (cls.saving or cls.failed) or error is None:
      return False
    return (isinstance(error, RuntimeError) and str(error) == "Event loop is closed") or no_space(error) is not None

  def filter(self, record: logging.LogRecord) -> bool:
    return not (record.exc_info and self._echo(record.exc_info[1]))


class Checkpointer:
  def __init__(self, run_dir: str, keep: int = 3, create: bool = True):
    """`create=False` opens for reading only: a missing directory then simply holds no checkpoints."""
    self.run_dir = os.path.abspath(run_dir)
    self.directory = os.path.join(self.run_dir, DIR)
    self._manager = None
    if create or os.path.isdir(self.directory):
      extra, make_dir, writer = {}, False, create
      if jax.process_count() > 1:  # process 0 alone saves and restores (the state is replicated on every process)
        make_dir, create = create, False  # NOTE: orbax refuses to create it itself when only some processes take part
        extra["multiprocessing_options"] = ocp.options.MultiprocessingOptions(primary_host=0, active_processes={0})
      # a writer (the run itself) removes the temporary directories of saves that never finished (a kill, a full
      # disk); a reader (evaluate.py) must not: the run may be writing one now
      self._options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=create, enable_async_checkpointing=False,
                                                   cleanup_tmp_directories=writer, **extra)
      try:
        if make_dir:
          os.makedirs(self.directory, exist_ok=True)
        self._open()
      except Exception as e:
        full = disk_full(e, self.directory, self.run_dir)
        if full is None:
          raise
        raise full from None

  def _open(self) -> None:
    with _orbax_quiet():
      self._manager = ocp.CheckpointManager(self.directory, options=self._options)

  def save(self, step: int, state, meta: dict) -> None:
    """Writes checkpoint `step`; DiskFullError when the disk or quota fills, the earlier checkpoints intact and what
    the unfinished save wrote removed."""
    state = jax.device_get(local_copy(state))
    _SaveEchoes.install()
    _SaveEchoes.saving = True
    try:
      with _orbax_quiet():
        self._manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                         meta=ocp.args.JsonSave(meta)), force=True)
        self._manager.wait_until_finished()
    except Exception as e:
      if no_space(e) is None:
        raise
      _SaveEchoes.failed, error = True, e
    else:
      return
    finally:
      _SaveEchoes.saving = False
    with contextlib.suppress(Exception), _orbax_quiet():
      self._manager.close()
    self._remove_unfinished()
    with contextlib.suppress(Exception):
      self._open()  # a fresh manager: steps() and restore() see the directory as it now is
    raise disk_full(error, self.directory, self.run_dir) from None

  def _remove_unfinished(self) -> None:
    """Deletes orbax's temporary directories of unfinished saves: on a full disk they hold the space the user is
    asked to free, and nothing reads them.

    NOTE: tensorstore may still be completing the failed save's other writes, which recreate files and directories
    under it, so this deletes until nothing is left (or gives up after about a second: the next manager that opens
    the directory to write removes what remains)."""
    for _ in range(50):
      unfinished = [name for name in os.listdir(self.directory) if ".orbax-checkpoint-tmp" in name]
      if not unfinished:
        return
      for name in unfinished:
        shutil.rmtree(os.path.join(self.directory, name), ignore_errors=True)
      time.sleep(0.02)

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
      with _orbax_quiet():
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
      with _orbax_quiet():
        self._manager.close()
