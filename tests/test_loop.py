"""The one training loop: any registered algorithm through `python -m harness`, the header a new user sees, and
preemption (SIGTERM saves a checkpoint and the run resumes from it, alone or in a jax.distributed group)."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from conftest import ROOT, read_csv
from harness import loop

QUIET = ["--no-progress"]


def test_a2c_learns_cartpole(tmp_path, capsys):
  """The "Adding an algorithm" example (algorithms/a2c/, one registration line) trains through the same loop: a
  random policy scores ~22 a game; 100K steps must bring the training return (last 100 games) to 150."""
  run_dir = tmp_path / "a2c"
  handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
  assert loop.main("a2c", ["--env", "CartPole-v1", "--total-timesteps", "100000", "--eval-episodes", "3",
                           "--run-dir", str(run_dir)] + QUIET) == 0
  assert {s: signal.getsignal(s) for s in handlers} == handlers  # the run's stop handlers are gone with it
  rows = read_csv(run_dir / "progress.csv")
  assert float(rows[-1]["episode_return"]) >= 150, rows[-1]["episode_return"]
  assert json.loads((run_dir / "config.json").read_text())["algorithm"] == "a2c"
  out = capsys.readouterr().out.splitlines()
  assert out[0].startswith("jaxpod a2c on CartPole-v1, network mlp_categorical, 100,000 agent steps")
  assert out[1].startswith("  learner on cpu:0, acting on cpu:0")
  assert out[2] == f"  run directory {run_dir}; watch it with: tensorboard --logdir {run_dir}"


def test_header_names_what_an_alias_maps_to(tmp_path):
  from algorithms import registry
  from harness.config import EnvSettings, RunSettings, config_class
  ppo = registry.get("ppo")
  config = config_class(ppo)(environment=EnvSettings(env="PongNoFrameskip-v4"), run=RunSettings(run_dir=str(tmp_path)))
  lines = loop.header(loop.setup(ppo, config)).splitlines()
  assert lines[0] == "jaxpod ppo on PongNoFrameskip-v4 (as Pong-v5), 84x84 frames, network nature_cnn, 10,000,000 agent steps"


def test_harness_main_names_the_algorithms():
  r = subprocess.run([sys.executable, "-m", "harness", "nope"], cwd=ROOT, capture_output=True, text=True,
                     timeout=120)
  assert r.returncode == 2 and r.stdout == ""
  assert r.stderr.strip() == "error: unknown algorithm 'nope'; algorithms: a2c, impala, ppo"


def _wait_rows(path, rows, timeout=120):
  deadline = time.time() + timeout
  while time.time() < deadline and not (path.exists() and len(path.read_text().splitlines()) > rows):
    time.sleep(0.2)


@pytest.mark.parametrize("script, args", [
    ("run_ppo.py", ["--env", "CartPole-v1", "--total-timesteps", "20480"]),
    ("run_impala.py", ["--env", "CartPole-v1", "--total-timesteps", "32000"]),
], ids=["ppo", "impala"])
def test_sigterm_saves_a_checkpoint_and_the_run_resumes(tmp_path, script, args):
  """What SLURM, Kubernetes, `docker stop` and Ray send before they kill: a checkpoint of the last update, one line,
  exit 143; `--resume` then finishes the run with every step logged once."""
  run_dir = tmp_path / "r"
  cmd = [sys.executable, os.path.join(ROOT, script), *args, "--eval-every", "0", "--checkpoint-every", "1000000"]
  proc = subprocess.Popen(cmd + ["--run-dir", str(run_dir)] + QUIET, cwd=ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONFAULTHANDLER="1"))
  _wait_rows(run_dir / "progress.csv", 3)
  proc.send_signal(signal.SIGTERM)
  try:
    _, err = proc.communicate(timeout=60)
  except subprocess.TimeoutExpired:  # say where it hangs: SIGABRT makes faulthandler print every thread's stack
    proc.send_signal(signal.SIGABRT)
    _, err = proc.communicate()
    pytest.fail(f"no exit within 60 s of SIGTERM; stacks:\n{err[-6000:]}")
  assert proc.returncode == 143, err[-2000:]
  last = int(read_csv(run_dir / "progress.csv")[-1]["global_step"])
  assert err.strip().splitlines()[-1] == (f"stopped by SIGTERM: checkpoint at step {last}; continue with --resume "
                                          f"{run_dir}")
  from harness.checkpoint import Checkpointer
  assert Checkpointer(str(run_dir), create=False).steps() == [last]
  r = subprocess.run([sys.executable, os.path.join(ROOT, script), "--resume", str(run_dir)] + QUIET, cwd=ROOT,
                     capture_output=True, text=True, timeout=300)
  assert r.returncode == 0, r.stderr[-2000:]
  steps = [int(row["global_step"]) for row in read_csv(run_dir / "progress.csv")]
  assert steps == sorted(set(steps)) and steps[-1] == int(args[-1]) and last in steps


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_while_setting_up_ends_in_one_line(tmp_path, signum):
  """Sent as soon as the header is out (state init, compilation: before any update): exit 128 + signum, no
  traceback, one line saying what to do; a checkpoint only if an update finished first."""
  run_dir = tmp_path / "r"
  cmd = [sys.executable, os.path.join(ROOT, "run_ppo.py"), "--env", "CartPole-v1", "--total-timesteps", "20480",
         "--eval-every", "0", "--run-dir", str(run_dir)] + QUIET
  proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  for line in proc.stdout:
    if "compiling the first update" in line:
      break
  proc.send_signal(signum)
  _, err = proc.communicate(timeout=60)
  assert proc.returncode == 128 + signum, err[-2000:]
  assert "Traceback" not in err, err[-2000:]
  what = "interrupted" if signum == signal.SIGINT else f"stopped by {signal.Signals(signum).name}"
  rows = read_csv(run_dir / "progress.csv") if (run_dir / "progress.csv").exists() else []
  if rows:  # the first update beat the signal: its checkpoint
    expected = [f"{what}: checkpoint at step {rows[-1]['global_step']}; continue with --resume {run_dir}"]
  else:
    expected = [f"{what} {when}: nothing trained yet; start again with --overwrite --run-dir {run_dir}"
                for when in ("while setting up", "before the first update")]
  assert err.strip().splitlines()[-1] in expected, err[-2000:]


def test_sigterm_stops_a_process_group_at_one_step(tmp_path):
  """Two jax.distributed processes on loopback; SIGTERM to process 1 alone: JAX's preemption service tells both at
  which update to stop, process 0 saves that step, and both exit 143."""
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  run_dir = tmp_path / "group"
  procs = []
  for i in range(2):
    procs.append(subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "run_ppo.py"), "--env", "CartPole-v1", "--num-envs", "4",
         "--total-timesteps", "102400", "--eval-every", "0", "--checkpoint-every", "1000000", "--run-dir",
         str(run_dir), "--coordinator-address", f"127.0.0.1:{port}", "--num-processes", "2", "--process-id", str(i),
         "--heartbeat-timeout", "20"] + QUIET, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
  try:
    _wait_rows(run_dir / "progress.csv", 3, timeout=180)
    procs[1].send_signal(signal.SIGTERM)
    outs = [p.communicate(timeout=120) for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  assert [p.returncode for p in procs] == [143, 143], [o[1][-1500:] for o in outs]
  last = int(read_csv(run_dir / "progress.csv")[-1]["global_step"])
  assert f"stopped by SIGTERM: checkpoint at step {last}" in outs[0][1]
  from harness.checkpoint import Checkpointer
  assert Checkpointer(str(run_dir), create=False).steps() == [last]
