"""Actors and PPO environment workers on a real Ray cluster started on loopback by the test (`ray start --head`).

A worker process is killed with SIGKILL mid-run: Ray restarts it, the lost rollout is collected again, the event is
logged and the run finishes.
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


def _train_and_kill_one_worker(script, args, run_dir, log_path, timeout=600):
  """Starts a run, waits until both workers reported and a row was logged, SIGKILLs worker 1, waits for the end."""
  with open(log_path, "w") as log:
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, script), *args, "--run-dir", str(run_dir),
                             "--no-progress"], cwd=ROOT, stderr=log, stdout=log)
    deadline, killed = time.time() + timeout, None
    try:
      while proc.poll() is None and time.time() < deadline:
        text = open(log_path).read()
        pids = dict(re.findall(r"ray: actor (\d) runs on node \S+ \(pid (\d+)\)", text))
        if killed is None and "1" in pids and "0" in pids and _rows(run_dir):
          killed = int(pids["1"])
          os.kill(killed, signal.SIGKILL)
        time.sleep(0.2)
      assert proc.poll() is not None, "run did not finish"
    finally:
      if proc.poll() is None:
        proc.kill()
  text = open(log_path).read()
  assert killed is not None, f"the run ended before a worker could be killed:\n{text[-3000:]}"
  return proc.returncode, text, killed


@pytest.mark.parametrize("script, args", [
    ("run_impala.py", ["--env", "CartPole-v1", "--num-actors", "2", "--envs-per-actor", "8", "--batch-trajectories", "16",
                       "--total-timesteps", "48000"]),
    ("run_ppo.py", ["--env", "CartPole-v1", "--num-env-workers", "2", "--num-envs", "4", "--num-steps", "128",
                    "--total-timesteps", "24576"]),
], ids=["impala", "ppo"])
def test_ray_workers_survive_a_killed_worker(cluster, tmp_path, script, args):
  run_dir = tmp_path / "run"
  rc, text, killed = _train_and_kill_one_worker(
      script, args + ["--ray-address", cluster, "--eval-episodes", "2"], run_dir, tmp_path / "log.txt")
  assert rc == 0, text[-3000:]
  assert re.search(rf"warning: Ray actor 1 \(pid {killed} on \S+\) died .*Ray restarts it", text), text[-3000:]
  restarted = [int(p) for p in re.findall(r"ray: actor 1 runs on node \S+ \(pid (\d+)\)", text)]
  assert restarted[0] == killed and len(restarted) >= 2 and restarted[-1] != killed, text[-3000:]
  rows = _rows(run_dir)
  assert int(float(rows[-1]["actor_restarts"])) >= 1
  assert int(rows[-1]["episodes"]) > 20  # games played by the remote workers reach the run's statistics
  assert np.isfinite(float(rows[-1]["episode_return"]))
  assert (run_dir / "result.json").is_file()


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
  second node (its own raylet, on loopback) joins, without restarting training."""
  from ray.cluster_utils import Cluster
  cluster = Cluster(initialize_head=True, head_node_args=dict(num_cpus=1, include_dashboard=False))
  run_dir, log_path = tmp_path / "run", tmp_path / "log.txt"
  try:
    with open(log_path, "w") as log:
      proc = subprocess.Popen(
          [sys.executable, os.path.join(ROOT, "run_impala.py"), "--env", "CartPole-v1", "--num-actors", "2",
           "--envs-per-actor", "8", "--batch-trajectories", "8", "--total-timesteps", "64000", "--eval-every", "0",
           "--ray-address", cluster.address, "--run-dir", str(run_dir), "--no-progress"],
          cwd=ROOT, stdout=log, stderr=log)
      deadline, placed_before = time.time() + 300, None
      while proc.poll() is None and time.time() < deadline:
        if placed_before is None and len(_rows(run_dir)) >= 5:  # training goes on with the one placed actor
          placed_before = set(re.findall(r"ray: actor (\d) runs", open(log_path).read()))
          cluster.add_node(num_cpus=1)
        time.sleep(0.2)
      proc.wait(timeout=max(deadline - time.time(), 1))
  finally:
    if proc.poll() is None:
      proc.kill()
    cluster.shutdown()
  text = open(log_path).read()
  assert proc.returncode == 0 and placed_before is not None, text[-3000:]
  assert len(placed_before) == 1, text[-3000:]  # Ray places either actor first; the other has no CPU left
  assert set(re.findall(r"ray: actor (\d) runs on node \S+ \(pid \d+\)", text)) == {"0", "1"}, text[-3000:]
  assert (run_dir / "result.json").is_file()
