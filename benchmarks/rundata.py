"""Reading run directories back for plots and reports: one `AgentRun` per trained agent (a multi-seed run directory
holds one per seed, under seed<S>/)."""
from __future__ import annotations

import csv
import dataclasses
import json
import math
import os

import numpy as np



class RunDataError(ValueError):
  """A path that is not a readable run directory; the message names it."""


@dataclasses.dataclass
class AgentRun:
  run_dir: str
  env: str
  algo: str
  seed: int
  config: dict
  result: dict | None      # result.json of a finished run (None while running or interrupted)
  steps: np.ndarray        # global_step per logged row
  walltime: np.ndarray
  sps: np.ndarray
  train_return: np.ndarray  # mean of the last 100 training games (NaN before the first ends)
  eval_steps: np.ndarray    # rows with a greedy evaluation
  eval_walltime: np.ndarray
  eval_return: np.ndarray

  @property
  def label(self) -> str:
    name = os.path.basename(os.path.normpath(self.run_dir))
    return name if int(self.config.get("num_seeds", 1)) == 1 else f"{name} seed {self.seed}"

  @property
  def finished(self) -> bool:
    return self.result is not None


def _float(value) -> float:
  try:
    return float(value)
  except (TypeError, ValueError):
    return math.nan


def _column(rows: list[dict], name: str) -> np.ndarray:
  return np.array([_float(r.get(name)) for r in rows], np.float64)


def load(run_dir: str) -> list[AgentRun]:
  """The agents of one run directory, in seed order."""
  cfg_path = os.path.join(run_dir, "config.json")
  if not os.path.isfile(cfg_path):
    raise RunDataError(f"{run_dir} is not a run directory (no config.json)")
  try:
    with open(cfg_path) as f:
      config = json.load(f)
  except (OSError, ValueError) as e:
    raise RunDataError(f"{run_dir}: unreadable config.json ({e})") from None
  result = None
  try:
    with open(os.path.join(run_dir, "result.json")) as f:
      result = json.load(f)
  except (OSError, ValueError):
    pass  # still running, interrupted, or cut short
  algo = config.get("algorithm") or "unknown"
  k, num_envs = int(config.get("num_seeds", 1)), int(config.get("num_envs", 0))
  seeds = [config["seed"] + j * num_envs for j in range(k)]
  agents = []
  for seed in seeds:
    path = os.path.join(run_dir, "progress.csv") if k == 1 else os.path.join(run_dir, f"seed{seed}", "progress.csv")
    rows = []
    if os.path.isfile(path):
      with open(path, newline="") as f:
        rows = [r for r in csv.DictReader(f) if not math.isnan(_float(r.get("global_step")))]
      rows = rows[:-1] if rows and None in rows[-1].values() else rows  # a row still being written
    steps, wall = _column(rows, "global_step"), _column(rows, "walltime")
    ev = _column(rows, "eval_return")
    has_eval = ~np.isnan(ev)
    agents.append(AgentRun(run_dir=run_dir, env=config["env"], algo=algo, seed=seed, config=config, result=result,
                           steps=steps, walltime=wall, sps=_column(rows, "sps"),
                           train_return=_column(rows, "episode_return"), eval_steps=steps[has_eval],
                           eval_walltime=wall[has_eval], eval_return=ev[has_eval]))
  return agents


def load_all(paths: list[str]) -> list[AgentRun]:
  return [agent for path in paths for agent in load(path)]


def find_run_dirs(root: str) -> list[str]:
  """Run directories directly under `root` (those holding config.json), sorted."""
  if not os.path.isdir(root):
    return []
  return sorted(os.path.join(root, d) for d in os.listdir(root)
                if os.path.isfile(os.path.join(root, d, "config.json")))
