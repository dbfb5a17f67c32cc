"""Run directories: `config.json`, `progress.csv`, TensorBoard events, `checkpoints/`.

An existing run directory is never overwritten unless `--overwrite` is given; `--resume` reopens one.
"""
from __future__ import annotations

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
  """Makes the directory and writes `config.json`: the resolved config, flat, with the algorithm's name."""
  if overwrite and os.path.exists(path):
    shutil.rmtree(path)
  os.makedirs(path, exist_ok=True)
  with open(os.path.join(path, CONFIG), "w") as f:
    json.dump(config.flat(), f, indent=2, sort_keys=True)


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
  """Reads a run directory's config.json (or its already read `fields`) into `config_cls`, a composed config
  (`harness.config.config_class`); UsageError if it is not a run directory of that algorithm."""
  data = read_fields(path, flag) if fields is None else fields
  if data.get("algorithm") != config_cls.ALGORITHM:
    raise UsageError(f"{flag} {path}: {CONFIG} is a run of {data.get('algorithm') or 'an older jaxpod'}, not of "
                     f"{config_cls.ALGORITHM}")
  try:
    return config_cls.from_flat(data)
  except (ValueError, TypeError) as e:
    raise UsageError(f"{flag} {path}: {CONFIG} does not fit {config_cls.ALGORITHM}'s config ({e})") from None
