"""Two real jax.distributed processes on 127.0.0.1 (CPU collectives over gloo) train one agent.

They end a run with identical parameters (checked across processes by the trainer), a killed process makes the
other stop with a clear error within a bounded time, and the group resumes from process 0's last checkpoint.
"""
import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from conftest import ROOT


def _port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _start(script, args, run_dir, tmp_path, tag, port=None):
  port = port or _port()
  procs = []
  for i in range(2):
    log = open(tmp_path / f"{tag}{i}.log", "w")
    procs.append(subprocess.Popen(
        [sys.executable, os.path.join(ROOT, script), *args, "--coordinator-address", f"127.0.0.1:{port}",
         "--num-processes", "2", "--process-id", str(i), "--heartbeat-timeout", "10", "--no-progress"]
        + ([] if "--resume" in args else ["--run-dir", str(run_dir)]),
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT))
  return procs


def _wait(procs, timeout):
  deadline = time.time() + timeout
  try:
    for p in procs:
      p.wait(timeout=max(deadline - time.time(), 1))
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  return [p.returncode for p in procs]


def _rows(run_dir):
  path = run_dir / "progress.csv"
  return list(csv.DictReader(open(path))) if path.exists() else []


@pytest.mark.parametrize("script, args", [
    ("run_ppo.py", ["--env", "CartPole-v1", "--num-envs", "4", "--total-timesteps", "6144"]),
    ("run_impala.py", ["--env", "CartPole-v1", "--num-actors", "2", "--envs-per-actor", "4", "--batch-trajectories", "8",
                       "--total-timesteps", "9600"]),
], ids=["ppo", "impala"])
def test_two_processes_train_one_agent(tmp_path, script, args):
  run_dir = tmp_path / "run"
  codes = _wait(_start(script, args + ["--eval-episodes", "2"], run_dir, tmp_path, "p"), timeout=400)
  logs = [open(tmp_path / f"p{i}.log").read() for i in range(2)]
  assert codes == [0, 0], logs[0][-2000:] + logs[1][-2000:]
  assert "checked: parameters identical on all 2 processes" in logs[0]
  assert json.load(open(run_dir / "result.json"))["total_timesteps"] == int(args[-1])
  assert int(_rows(run_dir)[-1]["global_step"]) == int(args[-1])  # both processes' envs count
  assert "done:" not in logs[1]  # process 1 writes nothing


def test_killed_process_stops_the_other_and_the_group_resumes(tmp_path):
  run_dir = tmp_path / "run"
  args = ["--env", "CartPole-v1", "--num-envs", "4", "--total-timesteps", "40960", "--checkpoint-every", "1024",
          "--eval-every", "0"]
  procs = _start("run_ppo.py", args, run_dir, tmp_path, "a")
  deadline = time.time() + 300
  while len(_rows(run_dir)) < 3 and procs[0].poll() is None and time.time() < deadline:
    time.sleep(0.1)
  assert procs[0].poll() is None, open(tmp_path / "a0.log").read()[-3000:]
  procs[1].send_signal(signal.SIGKILL)
  killed = time.time()
  codes = _wait(procs, timeout=120)
  waited = time.time() - killed
  log = open(tmp_path / "a0.log").read()
  assert codes[0] == 1, log[-3000:]
  assert waited < 30, f"process 0 took {waited:.0f} s to stop"
  assert "error: process 0 lost another process of the group" in log and f"--resume {run_dir}" in log
  steps = sorted(int(d) for d in os.listdir(run_dir / "checkpoints") if d.isdigit())
  assert steps and steps[-1] < 40960
  codes = _wait(_start("run_ppo.py", ["--resume", str(run_dir)], run_dir, tmp_path, "b"), timeout=400)
  log = open(tmp_path / "b0.log").read()
  assert codes == [0, 0], log[-3000:] + open(tmp_path / "b1.log").read()[-2000:]
  assert f"resuming {run_dir} from step {steps[-1]}" in log
  assert "checked: parameters identical on all 2 processes" in log
  assert int(_rows(run_dir)[-1]["global_step"]) == 40960


def test_distributed_bad_flags(tmp_path):
  run = lambda *a: subprocess.run([sys.executable, os.path.join(ROOT, "run_ppo.py"), "--env", "CartPole-v1", *a],  # noqa: E731
                                  cwd=ROOT, capture_output=True, text=True, timeout=120)
  r = run("--num-processes", "2", "--process-id", "0", "--run-dir", str(tmp_path / "a"))
  assert r.returncode == 2 and "need --coordinator-address" in r.stderr
  r = run("--coordinator-address", "127.0.0.1:1", "--num-processes", "2", "--run-dir", str(tmp_path / "b"))
  assert r.returncode == 2 and "needs --num-processes and --process-id" in r.stderr
  r = run("--coordinator-address", "127.0.0.1:1", "--num-processes", "2", "--process-id", "2")
  assert r.returncode == 2 and r.stderr.strip() == "error: --process-id 2 must lie in [0, 1] for --num-processes 2"


def test_slurm_job_step_is_detected(tmp_path):
  """No flags: two tasks of a (simulated) SLURM job step find each other from SLURM's variables."""
  port, procs = _port(), []
  for i in range(2):
    env = dict(os.environ, SLURM_JOB_ID="4242", SLURM_STEP_NODELIST="localhost", SLURM_NTASKS="2",
               SLURM_PROCID=str(i), SLURM_LOCALID="0", JAX_COORDINATOR_PORT=str(port))
    log = open(tmp_path / f"s{i}.log", "w")
    procs.append(subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "run_ppo.py"), "--env", "CartPole-v1", "--num-envs", "4",
         "--total-timesteps", "2048", "--eval-every", "0", "--run-dir", str(tmp_path / "run"), "--no-progress"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT))
  codes = _wait(procs, timeout=300)
  log = open(tmp_path / "s0.log").read()
  assert codes == [0, 0], log[-3000:]
  assert "checked: parameters identical on all 2 processes" in log
