"""Run logging: progress.csv (appended across resumes), TensorBoard events, optional W&B, and a progress bar."""
from __future__ import annotations

import csv
import math
import os
import sys

from tqdm import tqdm

from harness.cli import UsageError

PROGRESS = "progress.csv"


def _truncate_after(path: str, step: int) -> list[str] | None:
  """Drops rows logged after `step` (work lost since the last checkpoint); returns the header."""
  if not os.path.isfile(path):
    return None
  with open(path, newline="") as f:
    rows = list(csv.reader(f))
  if not rows:
    return None
  header, body = rows[0], rows[1:]
  i = header.index("global_step")
  body = [r for r in body if r and int(float(r[i])) <= step]
  with open(path, "w", newline="") as f:
    csv.writer(f).writerows([header] + body)
  return header


class RunLogger:
  """Writes one row per logging interval to every sink. Host-side; values must already be Python scalars."""

  def __init__(self, run_dir: str, fieldnames: list[str], *, total_steps: int, start_step: int, config: dict,
               track: bool = False, wandb_project: str = "jaxpod", progress: bool = True):
    from tensorboardX import SummaryWriter
    path = os.path.join(run_dir, PROGRESS)
    header = _truncate_after(path, start_step)
    self.fieldnames = header or fieldnames
    self._file = open(path, "a", newline="")
    self._csv = csv.DictWriter(self._file, fieldnames=self.fieldnames, extrasaction="ignore")
    if header is None:
      self._csv.writeheader()
    self._tb = SummaryWriter(run_dir, purge_step=start_step if start_step else None)
    self._wandb = None
    if track:
      try:
        import wandb
      except ImportError:
        raise UsageError("--track needs Weights & Biases: pip install '.[wandb]'") from None
      self._wandb = wandb.init(project=wandb_project, config=config, dir=run_dir, resume="allow",
                               id=os.path.basename(os.path.abspath(run_dir)))
    self._bar = tqdm(total=total_steps, initial=start_step, unit="step", unit_scale=True, dynamic_ncols=True,
                     disable=not progress, file=sys.stderr, smoothing=0.1)

  def log(self, row: dict) -> None:
    step = int(row["global_step"])
    self._csv.writerow({k: ("" if v is None else v) for k, v in row.items()})
    self._file.flush()
    scalars = {k: float(v) for k, v in row.items() if k != "global_step" and v is not None}
    for k, v in scalars.items():
      if math.isfinite(v):
        self._tb.add_scalar(f"charts/{k}", v, step)
    if self._wandb is not None:
      self._wandb.log(scalars, step=step)
    self._bar.update(step - self._bar.n)
    post = {"sps": f"{row.get('sps', 0):.0f}"}
    if row.get("episode_return") is not None and math.isfinite(row["episode_return"]):
      post["return"] = f"{row['episode_return']:.1f}"
    self._bar.set_postfix(post, refresh=False)

  def close(self) -> None:
    self._bar.close()
    self._tb.close()
    self._file.close()
    if self._wandb is not None:
      self._wandb.finish()
