"""End-to-end runs of run_ppo.py: learning, smoke runs on Atari and MuJoCo, run-directory contents, checkpoints,
resume after a kill, and a non-finite loss."""
import dataclasses
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

import run_ppo
from algorithms import ppo
from algorithms import registry
from harness import loop
from harness.config import RunSettings, config_class
from harness.run import Run
from harness.checkpoint import Checkpointer
from conftest import ROOT, read_csv

QUIET = ["--no-progress"]


def _tb_tags(run_dir):
  from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
  acc = EventAccumulator(run_dir)
  acc.Reload()
  return acc.Tags()["scalars"], acc


def test_cartpole_learns(tmp_path):
  """A random policy scores ~22 on CartPole-v1; PPO must reach a greedy mean of 450 within 200K steps."""
  run_dir = tmp_path / "cartpole"
  assert run_ppo.main(["--env", "CartPole-v1", "--total-timesteps", "200000", "--seed", "1", "--eval-episodes", "10",
                       "--run-dir", str(run_dir)] + QUIET) == 0
  rows = read_csv(run_dir / "progress.csv")
  final_eval = float(rows[-1]["eval_return"])
  assert final_eval >= 450, f"final greedy return {final_eval}"
  # training episodes (sampled actions), last 100: they lag the greedy policy and can still hold games from a dip
  # late in the run (seed 1 measured 367 at 200K with a greedy 500), so the bar is what a random policy (~22) misses
  assert float(rows[-1]["episode_return"]) >= 200
  for col in ("global_step", "walltime", "sps", "episode_return", "eval_return", "policy_loss", "value_loss",
              "entropy", "approx_kl", "clip_frac", "explained_variance", "learning_rate", "grad_norm"):
    assert col in rows[0]
  assert [int(r["global_step"]) for r in rows] == list(range(512, 200001, 512))[: len(rows)]
  assert sum(1 for r in rows if r["eval_return"]) == 20  # every 5% of the run
  config = json.loads((run_dir / "config.json").read_text())
  assert config["num_envs"] == 4 and config["network"] == "mlp_categorical" and config["resume"] is None
  tags, acc = _tb_tags(str(run_dir))
  assert {"charts/episode_return", "charts/eval_return", "charts/approx_kl"} <= set(tags)
  assert acc.Scalars("charts/eval_return")[-1].value == pytest.approx(final_eval)
  assert len(Checkpointer(str(run_dir)).steps()) == 3  # keeps the last few


def test_pong_smoke(tmp_path):
  run_dir = tmp_path / "pong"
  assert run_ppo.main(["--total-timesteps", "2048", "--eval-episodes", "1", "--run-dir", str(run_dir)] + QUIET) == 0
  rows = read_csv(run_dir / "progress.csv")
  assert [int(r["global_step"]) for r in rows] == [1024, 2048]
  for r in rows:
    assert all(math.isfinite(float(r[k])) for k in ("loss", "policy_loss", "value_loss", "entropy", "grad_norm"))
    assert float(r["entropy"]) == pytest.approx(math.log(6), abs=0.01)  # near-uniform over Pong's 6 actions
  assert -21 <= float(rows[-1]["eval_return"]) <= -15  # an untrained greedy agent loses the whole game


def test_halfcheetah_smoke(tmp_path):
  run_dir = tmp_path / "cheetah"
  assert run_ppo.main(["--env", "HalfCheetah-v4", "--total-timesteps", "4096", "--eval-episodes", "1",
                       "--run-dir", str(run_dir)] + QUIET) == 0
  rows = read_csv(run_dir / "progress.csv")
  assert len(rows) == 2 and all(math.isfinite(float(r["loss"])) for r in rows)
  assert float(rows[-1]["learning_rate"]) == pytest.approx(3e-4 / 2, rel=1e-3)  # half-way through linear decay
  # observation statistics are part of the checkpointed state
  state, _, step = Checkpointer(str(run_dir)).restore(_template(run_dir))
  assert step == 4096 and float(state.obs_norm.count) == pytest.approx(4096 + 1e-4, rel=1e-6)
  assert float(state.ret_norm.count) > 4000


def _setup(run_dir):
  algorithm = registry.get("ppo")
  return loop.setup(algorithm, config_class(algorithm)(run=RunSettings(resume=str(run_dir))))


def _template(run_dir):
  setup = _setup(run_dir)
  return ppo.init_state(setup.config.algorithm, setup.network, setup.spec.obs_shape, jax.random.PRNGKey(0))


def test_checkpoint_round_trip_and_resume_continues(tmp_path):
  a = tmp_path / "a"
  args = ["--env", "CartPole-v1", "--total-timesteps", "4096", "--checkpoint-every", "512", "--keep-checkpoints",
          "10", "--eval-every", "0"] + QUIET
  assert run_ppo.main(args + ["--run-dir", str(a)]) == 0
  rows_a = read_csv(a / "progress.csv")
  # Cut a copy back to its 4th checkpoint, as if killed after step 2048, and resume it.
  b = tmp_path / "b"
  shutil.copytree(a, b)
  ck = Checkpointer(str(b), keep=10)
  for step in ck.steps():
    if step > 2048:
      shutil.rmtree(os.path.join(ck.directory, str(step)))
  saved, _, _ = Checkpointer(str(b), keep=10).restore(_template(b))
  setup = _setup(b)
  run = Run(setup.config, setup.spec, setup.placement, setup.resuming,
            lambda key: ppo.init_state(setup.config.algorithm, setup.network, setup.spec.obs_shape, key), [])
  assert run.start_step == 2048
  for x, y in zip(jax.tree.leaves(saved), jax.tree.leaves(run.state)):  # params, Adam moments, PRNG, counters
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  assert int(run.state.update) == 4 and int(run.state.global_step) == 2048
  run.close()
  assert run_ppo.main(["--resume", str(b)] + QUIET) == 0
  rows_b = read_csv(b / "progress.csv")
  assert [r["global_step"] for r in rows_b] == [r["global_step"] for r in rows_a]
  # the optimiser's schedule continued from update 4: same learning rate at every step
  assert [r["learning_rate"] for r in rows_b] == [r["learning_rate"] for r in rows_a]
  assert max(Checkpointer(str(b), keep=10).steps()) == 4096


def test_resume_after_kill(tmp_path):
  run_dir = tmp_path / "killed"
  cmd = [sys.executable, os.path.join(ROOT, "run_ppo.py"), "--env", "CartPole-v1", "--total-timesteps", "61440",
         "--checkpoint-every", "2048", "--eval-every", "0", "--run-dir", str(run_dir)] + QUIET
  proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  ckpt_dir = run_dir / "checkpoints"
  deadline = time.time() + 120
  while time.time() < deadline and not (ckpt_dir.exists() and any(p.name.isdigit() for p in ckpt_dir.iterdir())):
    time.sleep(0.2)
  time.sleep(0.5)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  killed_at = max(int(p.name) for p in ckpt_dir.iterdir() if p.name.isdigit())
  assert killed_at < 61440
  res = subprocess.run([sys.executable, os.path.join(ROOT, "run_ppo.py"), "--resume", str(run_dir)] + QUIET,
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert res.returncode == 0, res.stderr
  assert f"from step {killed_at}" in res.stderr
  steps = [int(r["global_step"]) for r in read_csv(run_dir / "progress.csv")]
  assert steps == list(range(512, 61441, 512))  # rows after the checkpoint were dropped, then continued


def test_non_finite_loss_stops_with_last_good_checkpoint(tmp_path, monkeypatch, capsys):
  real = ppo.make_update_fn

  def poisoned(*args, **kwargs):
    update = real(*args, **kwargs)

    def wrapped(state, traj):
      state, metrics = update(state, traj)
      bad = state.update > 3  # from the 4th update on, the loss is NaN
      metrics["loss"] = jax.numpy.where(bad, jax.numpy.nan, metrics["loss"])
      return state, metrics
    return wrapped

  algorithm = registry.get("ppo")
  monkeypatch.setitem(registry._REGISTRY, "ppo", dataclasses.replace(algorithm, make_update_fn=poisoned))
  run_dir = tmp_path / "nan"
  rc = run_ppo.main(["--env", "CartPole-v1", "--total-timesteps", "5120", "--checkpoint-every", "1024",
                     "--eval-every", "0", "--run-dir", str(run_dir)] + QUIET)
  assert rc == 1
  err = capsys.readouterr().err.strip().splitlines()
  assert any("non-finite loss at step 2048" in line and "last good checkpoint: 1024" in line for line in err)
  assert Checkpointer(str(run_dir)).steps() == [1024]


@pytest.mark.slow
def test_halfcheetah_learns(tmp_path):
  """PARL settings for 300K steps (~2 min on 2 cores): a random policy scores about -280 a game; the 1M-step run in
  benchmarks/RESULTS.md passed 1,200 greedy by 100K steps."""
  run_dir = tmp_path / "cheetah"
  assert run_ppo.main(["--env", "HalfCheetah-v4", "--total-timesteps", "300000", "--eval-every", "0",
                       "--run-dir", str(run_dir)] + QUIET) == 0
  assert float(read_csv(run_dir / "progress.csv")[-1]["episode_return"]) >= 800
