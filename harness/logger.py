"""Run logging: progress.csv (appended across resumes), TensorBoard events, optional W&B, and a progress bar.

Every row reaches the disk before `log` returns, so a full disk (or quota) surfaces there as DiskFullError, one
line saying how to go on, and not later in a background thread.
"""
from __future__ import annotations

import contextlib
import csv
import math
import os
import sys
import time
import uuid

from tqdm import tqdm

from harness.checkpoint import DiskFullError, disk_full
from harness.cli import UsageError

PROGRESS = "progress.csv"


def _truncate_after(path: str, step: int) -> list[str] | None:
  """Drops the rows logged after `step` (work lost since the last checkpoint) and a last row cut short by a full
  disk or a kill; returns the header (None if there is none yet). Cuts the file where those rows begin: that needs
  no free space, and a failure midway loses nothing."""
  if not os.path.isfile(path):
    return None
  with open(path, "r+b") as f:
    first = f.readline()
    header = next(csv.reader([first.decode(errors="replace")]), []) if first.endswith(b"\n") else []
    if "global_step" not in header:
      f.truncate(0)
      return None
    keep, i = f.tell(), header.index("global_step")
    for line in iter(f.readline, b""):
      row = next(csv.reader([line.decode(errors="replace")]), [])
      try:
        if not line.endswith(b"\n") or len(row) != len(header) or int(float(row[i])) > step:
          break
      except ValueError:  # a row garbled by a failed write
        break
      keep = f.tell()
    f.truncate(keep)
  return header


class _Events:
  """A TensorBoard event file written synchronously: one flush per row, so a failed write raises in the caller.

  NOTE: tensorboardX's SummaryWriter writes from a thread of its own; a full disk kills that thread with a traceback
  on stderr, and once its queue fills `add_scalar` blocks forever."""

  def __init__(self, logdir: str, purge_step: int | None):
    from tensorboardX.event_file_writer import EventsWriter  # writes the file-version record first
    from tensorboardX.proto.event_pb2 import Event, SessionLog
    from tensorboardX.summary import scalar
    self._event, self._scalar = Event, scalar
    # NOTE: tensorboardX names the file by the second and the host and opens it with "wb": without a suffix of its
    # own, a second writer within the same second (a quick resume) would wipe the first one's events.
    self._writer = EventsWriter(os.path.join(logdir, "events"), filename_suffix=f".{uuid.uuid4().hex[:8]}")
    if purge_step:  # as SummaryWriter(purge_step=...): TensorBoard hides earlier files' events from this step on
      self._writer.write_event(Event(wall_time=time.time(), step=purge_step, file_version="brain.Event:2"))
      self._writer.write_event(Event(wall_time=time.time(), step=purge_step,
                                     session_log=SessionLog(status=SessionLog.START)))
    self._writer.flush()

  def scalars(self, values: dict[str, float], step: int) -> None:
    now = time.time()
    for tag, value in values.items():
      self._writer.write_event(self._event(wall_time=now, step=step, summary=self._scalar(tag, value)))
    self._writer.flush()

  def close(self) -> None:
    self._writer.close()


class RunLogger:
  """Writes one row per logging interval to every sink. Host-side; values must already be Python scalars.

  A full disk or quota raises DiskFullError (from the constructor, `log` or `close`) naming the file, the run's last
  complete checkpoint and `--resume`; after one, `close` releases the files without raising again."""

  def __init__(self, run_dir: str, fieldnames: list[str], *, total_steps: int, start_step: int, config: dict,
               track: bool = False, wandb_project: str = "jaxpod", progress: bool = True,
               run_root: str | None = None):
    """`run_root`: the run directory (`--resume` takes it, its checkpoints/ are reported) when `run_dir` is an
    agent's RUN_DIR/seed<S> (default: `run_dir`)."""
    self._run_root, self._full = run_root or run_dir, False
    self._file = self._tb = self._wandb = self._bar = None
    self._path = os.path.join(run_dir, PROGRESS)
    self._events = os.path.join(run_dir, "events.out.tfevents.*")
    try:
      with self._disk_full(self._path):
        header = _truncate_after(self._path, start_step)
        self.fieldnames = header or fieldnames
        self._file = open(self._path, "a", newline="")
        self._csv = csv.DictWriter(self._file, fieldnames=self.fieldnames, extrasaction="ignore")
        if header is None:
          self._csv.writeheader()
          self._file.flush()
      with self._disk_full(self._events):
        # the row at start_step was logged before its checkpoint: it stays, as in progress.csv
        self._tb = _Events(run_dir, purge_step=start_step + 1 if start_step else None)
    except BaseException:
      with contextlib.suppress(Exception):
        self.close()
      raise
    if track:
      try:
        import wandb
      except ImportError:
        raise UsageError("--track needs Weights & Biases: pip install '.[wandb]'") from None
      self._wandb = wandb.init(project=wandb_project, config=config, dir=run_dir, resume="allow",
                               id=os.path.basename(os.path.abspath(run_dir)))
    self._bar = tqdm(total=total_steps, initial=start_step, unit="step", unit_scale=True, dynamic_ncols=True,
                     disable=not progress, file=sys.stderr, smoothing=0.1)

  @contextlib.contextmanager
  def _disk_full(self, writing: str):
    try:
      yield
    except Exception as e:
      full = disk_full(e, writing, self._run_root)
      if full is None:
        raise
      self._full = True
      raise full from None

  def log(self, row: dict) -> None:
    step = int(row["global_step"])
    scalars = {k: float(v) for k, v in row.items() if k != "global_step" and v is not None}
    with self._disk_full(self._path):
      self._csv.writerow({k: ("" if v is None else v) for k, v in row.items()})
      self._file.flush()
    with self._disk_full(self._events):
      self._tb.scalars({f"charts/{k}": v for k, v in scalars.items() if math.isfinite(v)}, step)
    if self._wandb is not None:
      self._wandb.log(scalars, step=step)
    self._bar.update(step - self._bar.n)
    post = {"sps": f"{row.get('sps', 0):.0f}"}
    if row.get("episode_return") is not None and math.isfinite(row["episode_return"]):
      post["return"] = f"{row['episode_return']:.1f}"
    self._bar.set_postfix(post, refresh=False)

  def close(self) -> None:
    """Closes every sink, even when one fails; DiskFullError if their last writes find the disk full (unless an
    earlier one was already reported)."""
    reported, failed = self._full, None
    for sink, writing in ((self._tb, self._events), (self._file, self._path)):
      if sink is None:
        continue
      try:
        with self._disk_full(writing):
          sink.close()  # NOTE: a file whose last flush fails is closed all the same
      except Exception as e:
        failed = failed or e
    self._tb = self._file = None
    if self._bar is not None:
      self._bar.close()
    if self._wandb is not None:
      self._wandb.finish()
      self._wandb = None
    if failed is not None and not (reported and isinstance(failed, DiskFullError)):
      raise failed
