"""Actors and PPO environment workers on a real Ray cluster started on loopback by the test (`ray start --head`).

A worker process is killed with SIGKILL mid-run: Ray restarts it, the lost rollout is collected again, the event is
logged and training goes on. The runs are open-ended (far more steps than a test takes) and are stopped with SIGTERM
once they showed what the test waits for, so a fast machine cannot finish one before the event it tests.
"""
import csv
import os
import re
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import ROOT

pytest.importorskip("ray")
RAY = os.path.join(os.path.dirname(sys.executable), "ray")


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster():
  port = _free_port()
  env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
  subprocess.run([RAY, "start", "--head", f"--port={port}", "--num-cpus=4", "--include-dashboard=false",
                  "--node-ip-address=127.0.0.1", "--disable-usage-stats"], check=True, env=env, timeout=180,
                 capture_output=True)
  yield f"127.0.0.1:{port}"
  subprocess.run([RAY, "stop", "--force"], env=env, timeout=120, capture_output=True)


def _rows(run_dir):
  path = os.path.join(run_dir, "progress.csv")
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return list(csv.DictReader(f))


def _log_and_rows(log_path, run_dir):
  return open(log_path).read(), _rows(run_dir)


def _stop(proc, log_path):
  """SIGTERMs a run that has shown what a test waited for; returns its log after the one-line stop it must end with."""
  proc.send_signal(signal.SIGTERM)
  proc.wait(timeout=120)
  text = open(log_path).read()
  assert proc.returncode == 128 + signal.SIGTERM, text[-3000:]
  assert re.search(r"stopped by SIGTERM: checkpoint at step \d+; continue with --resume", text), text[-3000:]
  assert "Traceback" not in text, text[-3000:]
  return text


def _ran_on_after(rows, step):
  """Steps logged after `step`, each larger than the one before (training went on, never restarted)."""
  steps = [int(r["global_step"]) for r in rows]
  assert steps == sorted(set(steps)), steps
  return [s for s in steps if s > step]


def _actors(text):
  return re.findall(r"ray: actor (\d) runs on node \S+ \(pid (\d+)\)", text)


def _train_and_kill_one_worker(script, args, run_dir, log_path, timeout=600):
  """Starts an open-ended run; once both workers reported and a row was logged, SIGKILLs worker 1; once Ray restarted
  it and three more rows were logged, stops the run with SIGTERM. Returns the log, the killed pid and the last step
  logged before the kill.

  The run has far more steps than it takes (no race with its end on a fast machine)."""
  with open(log_path, "w") as log:
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, script), *args, "--total-timesteps", "100000000",
                             "--run-dir", str(run_dir), "--no-progress"], cwd=ROOT, stderr=log, stdout=log)
  deadline, killed, killed_at = time.time() + timeout, None, None
  try:
    while proc.poll() is None and time.time() < deadline:
      text, rows = _log_and_rows(log_path, run_dir)
      pids = dict(_actors(text))
      if killed is None and "1" in pids and "0" in pids and rows:
        killed, killed_at = int(pids["1"]), int(rows[-1]["global_step"])
        os.kill(killed, signal.SIGKILL)
      elif killed is not None:
        restarted = [int(p) for i, p in _actors(text) if i == "1" and int(p) != killed]
        if restarted and len(_ran_on_after(rows, killed_at)) >= 3 and int(float(rows[-1]["actor_restarts"])) >= 1:
          return _stop(proc, log_path), killed, killed_at
      time.sleep(0.2)
    text = open(log_path).read()
    assert proc.poll() is None, f"the run ended by itself:\n{text[-3000:]}"
    assert killed is not None, f"no row with both workers running within {timeout} s:\n{text[-3000:]}"
    raise AssertionError(f"no restart of worker 1 and three rows after it within {timeout} s:\n{text[-3000:]}")
  finally:
    if proc.poll() is None:
      proc.kill()


@pytest.mark.parametrize("script, args", [
    ("run_impala.py", ["--env", "CartPole-v1", "--num-actors", "2", "--envs-per-actor", "8", "--batch-trajectories", "16"]),
    ("run_ppo.py", ["--env", "CartPole-v1", "--num-env-workers", "2", "--num-envs", "4", "--num-steps", "128"]),
], ids=["impala", "ppo"])
def test_ray_workers_survive_a_killed_worker(cluster, tmp_path, script, args):
  run_dir = tmp_path / "run"
  text, killed, killed_at = _train_and_kill_one_worker(
      script, args + ["--ray-address", cluster, "--eval-episodes", "2"], run_dir, tmp_path / "log.txt")
  assert re.search(rf"warning: Ray actor 1 \(pid {killed} on \S+\) died .*Ray restarts it", text), text[-3000:]
  restarted = [int(p) for i, p in _actors(text) if i == "1"]
  assert restarted[0] == killed and restarted[-1] != killed, text[-3000:]
  rows = _rows(run_dir)
  assert len(_ran_on_after(rows, killed_at)) >= 3
  assert int(float(rows[-1]["actor_restarts"])) >= 1
  assert int(rows[-1]["episodes"]) > 20  # games played by the remote workers reach the run's statistics
  assert np.isfinite(float(rows[-1]["episode_return"]))
  assert (run_dir / "checkpoints").is_dir()


def test_ray_bad_inputs(tmp_path):
  r = subprocess.run([sys.executable, os.path.join(ROOT, "run_ppo.py"), "--env", "CartPole-v1", "--num-env-workers", "2",
                      "--run-dir", str(tmp_path / "a")], cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert r.returncode == 2 and r.stderr.strip().startswith("error: --num-env-workers > 1 needs --ray-address")
  r = subprocess.run([sys.executable, os.path.join(ROOT, "run_ppo.py"), "--env", "CartPole-v1", "--num-env-workers", "3",
                      "--ray-address", "127.0.0.1:1", "--run-dir", str(tmp_path / "b")], cwd=ROOT,
                     capture_output=True, text=True, timeout=120)
  assert r.returncode == 2 and r.stderr.strip() == "error: --num-env-workers 3 does not divide --num-envs 4"
  r = subprocess.run([sys.executable, os.path.join(ROOT, "run_impala.py"), "--env", "CartPole-v1", "--ray-address",
                      f"127.0.0.1:{_free_port()}", "--run-dir", str(tmp_path / "c")], cwd=ROOT, capture_output=True,
                     text=True, timeout=300)
  assert r.returncode == 2 and "cannot join a Ray cluster there" in r.stderr, r.stderr[-2000:]
  assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "c").exists()


def test_ray_actors_start_when_a_machine_joins(tmp_path):
  """The cluster first has CPUs for one of two actors: training goes on with it, and the second actor starts when a
  second node (its own raylet, on loopback) joins, without restarting training. The run has far more steps than it
  takes: it is stopped with SIGTERM once three rows were logged after the second actor started."""
  from ray.cluster_utils import Cluster
  cluster = Cluster(initialize_head=True, head_node_args=dict(num_cpus=1, include_dashboard=False))
  run_dir, log_path = tmp_path / "run", tmp_path / "log.txt"
  with open(log_path, "w") as log:
    proc = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "run_impala.py"), "--env", "CartPole-v1", "--num-actors", "2",
         "--envs-per-actor", "8", "--batch-trajectories", "8", "--total-timesteps", "100000000", "--eval-every", "0",
         "--ray-address", cluster.address, "--run-dir", str(run_dir), "--no-progress"],
        cwd=ROOT, stdout=log, stderr=log)
  deadline, placed_before, joined_at, text = time.time() + 300, None, None, ""
  try:
    while proc.poll() is None and time.time() < deadline:
      text, rows = _log_and_rows(log_path, run_dir)
      if placed_before is None and len(rows) >= 5:  # training goes on with the one placed actor
        placed_before = {i for i, _ in _actors(text)}
        cluster.add_node(num_cpus=1)
      elif placed_before is not None and joined_at is None and len({i for i, _ in _actors(text)}) == 2:
        joined_at = int(rows[-1]["global_step"])
      elif joined_at is not None and len(_ran_on_after(rows, joined_at)) >= 3:
        text = _stop(proc, log_path)
        break
      time.sleep(0.2)
  finally:
    if proc.poll() is None:
      proc.kill()
    cluster.shutdown()
  assert placed_before is not None and joined_at is not None, text[-3000:]
  assert len(placed_before) == 1, text[-3000:]  # Ray places either actor first; the other has no CPU left
  assert {i for i, _ in _actors(text)} == {"0", "1"}, text[-3000:]
  assert len(_ran_on_after(_rows(run_dir), joined_at)) >= 3
