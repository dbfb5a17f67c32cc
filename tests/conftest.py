import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


@pytest.fixture
def run_ppo_cli():
  """Runs `python run_ppo.py ARGS` in a fresh interpreter; returns CompletedProcess (text)."""
  def run(*args, timeout=300):
    return subprocess.run([sys.executable, os.path.join(ROOT, "run_ppo.py"), *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)
  return run


def read_csv(path):
  import csv
  with open(path, newline="") as f:
    return list(csv.DictReader(f))
