"""Run directories: `config.json`, `progress.csv`, TensorBoard events, `checkpoints/`.

An existing run directory is never overwritten unless `--overwrite` is given; `--resume` reopens one.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time

from harness.cli import UsageError

CONFIG = "config.json"


def default_run_dir(env: str, algo: str, seed: int) -> str:
  return os.path.join("runs", f"{env}__{algo}__seed{seed}__{time.strftime('%Y%m%d-%H%M%S')}")


def check_new_run_dir(path: str, overwrite: bool) -> None:
  """Raises UsageError if `path` holds anything and --overwrite is not given. Writes nothing."""
  if os.path.exists(path) and (not os.path.isdir(path) or os.listdir(path)) and not overwrite:
    raise UsageError(f"run directory {path} already exists: pass --resume {path} to continue it, "
                     f"--overwrite to replace it, or another --run-dir")


def create_run_dir(path: str, config, overwrite: bool) -> None:
  if overwrite and os.path.exists(path):
    shutil.rmtree(path)
  os.makedirs(path, exist_ok=True)
  with open(os.path.join(path, CONFIG), "w") as f:
    json.dump(dataclasses.asdict(config), f, indent=2, sort_keys=True)


def algo_of(fields: dict) -> str | None:
  """'ppo' or 'impala' from a config.json's fields (None if neither): the trainers' configs differ in these."""
  if "unroll_length" in fields:
    return "impala"
  return "ppo" if "num_steps" in fields else None


def read_fields(path: str, flag: str = "--resume") -> dict:
  """A run directory's config.json as a dict; UsageError (naming `flag`) if `path` is not a run directory."""
  cfg_path = os.path.join(path, CONFIG)
  if not os.path.isdir(path):
    raise UsageError(f"{flag} {path}: no such run directory")
  if not os.path.isfile(cfg_path):
    raise UsageError(f"{flag} {path}: not a run directory (no {CONFIG})")
  try:
    with open(cfg_path) as f:
      data = json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise UsageError(f"{flag} {path}: unreadable {CONFIG} ({e})") from None
  return data


def load_config(path: str, config_cls: type, flag: str = "--resume", fields: dict | None = None):
  """Reads a run directory's config.json (or its already read `fields`) into `config_cls`; UsageError if it is not
  a run directory of that kind."""
  data = read_fields(path, flag) if fields is None else fields
  names = {f.name for f in dataclasses.fields(config_cls)}
  unknown = sorted(set(data) - names)
  if unknown:
    raise UsageError(f"{flag} {path}: {CONFIG} is not a {config_cls.__name__} (unknown fields {unknown})")
  return config_cls(**data)
