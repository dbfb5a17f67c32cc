"""IMPALA end to end: loss gradients, learning through the real actor threads and queue, an Atari smoke run,
shutdown on a failing actor, stuck-actor reports, checkpoint and resume, bad input."""
import math
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import networks
import run_impala
from algorithms import acting, impala, normalize
from algorithms.impala import ImpalaConfig
from conftest import read_csv
from envs import EpisodeTracker, resolve_env
from envs.actors import ActorError, ActorPool, ParamStore
from envs.rollout import make_rollout

QUIET = ["--no-progress"]


def test_loss_gradients_are_finite_and_nonzero():
  spec = resolve_env("Pong-v5")
  cfg = ImpalaConfig(batch_trajectories=16).resolve("atari")
  net = networks.make_network("nature_cnn", discrete=True, image_obs=True, action_dim=spec.action_dim)
  state = impala.init_state(cfg, net, spec.obs_shape, jax.random.PRNGKey(0))
  tracker = EpisodeTracker(4)
  rollout = make_rollout(spec, 4, 5, 1, 0, acting.make_act_fn(net, True, False), tracker)
  traj, _ = rollout.collect(state.params, (normalize.init(()), jax.random.PRNGKey(1)))
  rollout.close()
  traj.rewards[:] = np.random.default_rng(0).choice([-1.0, 0.0, 1.0], size=traj.rewards.shape)
  update = jax.jit(impala.make_update_fn(cfg, net, True, True))
  new_state, metrics = update(state, traj)
  assert all(math.isfinite(float(v)) for v in metrics.values())
  assert float(metrics["grad_norm"]) > 0
  assert float(metrics["kl"]) == pytest.approx(0.0, abs=1e-5)  # acted with the same parameters: on-policy
  assert int(new_state.update) == 1 and int(new_state.global_step) == 20


def test_cartpole_learns_through_actor_threads(tmp_path):
  """A random policy scores ~22; the learner fed by 2 actor threads must reach a training mean of 400."""
  run_dir = tmp_path / "impala"
  assert run_impala.main(["--env", "CartPole-v1", "--seed", "1", "--eval-episodes", "5", "--run-dir",
                          str(run_dir)] + QUIET) == 0
  rows = read_csv(run_dir / "progress.csv")
  assert float(rows[-1]["episode_return"]) >= 400, rows[-1]["episode_return"]
  assert float(rows[-1]["eval_return"]) >= 400
  lags = [float(r["policy_lag"]) for r in rows]
  assert max(float(r["policy_lag_max"]) for r in rows) <= 3  # bounded by the queue
  assert np.mean(lags) > 0  # actors do run ahead of the learner
  for col in ("episode_return_max", "episode_return_min", "episode_length_max", "queue_size", "param_syncs", "kl",
              "learn_time", "learning_rate", "sps"):
    assert rows[-1][col] != ""


def test_pong_smoke(tmp_path):
  run_dir = tmp_path / "pong"
  assert run_impala.main(["--total-timesteps", "1280", "--eval-every", "0", "--run-dir", str(run_dir)] + QUIET) == 0
  rows = read_csv(run_dir / "progress.csv")
  assert [int(r["global_step"]) for r in rows] == [640, 1280]
  assert all(math.isfinite(float(r["loss"])) and float(r["entropy"]) > 1.7 for r in rows)


def _pool(act_fn, num_actors=2):
  spec = resolve_env("CartPole-v1")
  tracker = EpisodeTracker(4 * num_actors)
  net = networks.make_network("mlp_categorical", discrete=True, image_obs=False, action_dim=2)
  params = net.init(jax.random.PRNGKey(0), jnp.zeros((1, 4)))

  def make_actor(i):
    return make_rollout(spec, 4, 10, 1, i * 4, act_fn(net), tracker, tracker_offset=4 * i), \
        (normalize.init(()), jax.random.PRNGKey(i))
  return ActorPool(make_actor, num_actors, ParamStore(params, 0, jax.devices()[0]), queue_size=num_actors)


def test_failing_actor_stops_the_run_quickly():
  calls = {"n": 0}

  def failing(net):
    act = acting.make_act_fn(net, True, False)

    def f(params, carry, obs):
      calls["n"] += 1
      if calls["n"] > 25:
        raise ValueError("injected failure")
      return act(params, carry, obs)
    return f

  pool = _pool(failing).start()
  t0 = time.time()
  with pytest.raises(ActorError, match="injected failure"):
    for _ in range(100):
      pool.get(timeout=30)
  pool.stop(timeout=5)
  assert time.time() - t0 < 10
  assert not any(t.is_alive() for t in pool._threads)


def test_stuck_actor_is_named():
  """Actor 1 blocks from the start; actor 0 delivers one trajectory and then blocks: the learner's next wait times
  out and names both, with what each last did."""
  release = threading.Event()

  def stalling(net):
    act = acting.make_act_fn(net, True, False)
    steps = {"actor-0": 0}

    def f(params, carry, obs):
      name = threading.current_thread().name
      if name == "actor-1" or steps.get(name, 0) >= 10:  # actor 0: one 10-step rollout, then stall
        release.wait()
      steps[name] = steps.get(name, 0) + 1
      return act(params, carry, obs)
    return f

  pool = _pool(stalling).start()
  try:
    _, _, actor = pool.get(timeout=30)
    assert actor == 0
    t0 = time.time()
    with pytest.raises(TimeoutError, match=r"stuck: actor 0 \(last output \d+ s ago\), actor 1 \(no output yet\)$"):
      pool.get(timeout=1.5)
    assert time.time() - t0 < 5
  finally:
    release.set()
    pool.stop(timeout=10)


def test_checkpoint_and_resume(tmp_path):
  run_dir = tmp_path / "resume"
  args = ["--env", "CartPole-v1", "--total-timesteps", "6400", "--checkpoint-every", "1280", "--keep-checkpoints", "10",
          "--eval-every", "0"]
  assert run_impala.main(args + ["--run-dir", str(run_dir)] + QUIET) == 0
  from harness.checkpoint import Checkpointer
  ck = Checkpointer(str(run_dir), keep=10)
  import shutil
  for step in ck.steps():
    if step > 2560:
      shutil.rmtree(f"{ck.directory}/{step}")
  assert run_impala.main(["--resume", str(run_dir)] + QUIET) == 0
  steps = [int(r["global_step"]) for r in read_csv(run_dir / "progress.csv")]
  assert steps == list(range(640, 6401, 640))
  assert max(Checkpointer(str(run_dir)).steps()) == 6400


@pytest.mark.parametrize("argv, match", [
    (["--env", "CartPole-v1", "--batch-trajectories", "20"], "--batch-trajectories 20 is not a multiple of --envs-per-actor"),
    (["--env", "CartPole-v1", "--num-envs", "8"], "unknown flag --num-envs"),  # actors x envs per actor
    (["--env", "CartPole-v1", "--unroll-length", "0"], "--unroll-length must be positive"),
    (["--env", "Breakout"], "unknown env id"),
])
def test_bad_input(argv, match, capsys, tmp_path):
  with pytest.raises(SystemExit) as exc:
    run_impala.main(argv + ["--run-dir", str(tmp_path / "r")] + QUIET)
  assert exc.value.code == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and match in err[0], err


def test_too_many_actors_warns(capsys):
  from algorithms import registry
  from harness.config import ActorSettings, config_class
  config_class(registry.get("impala"))(source=ActorSettings(num_actors=64, envs_per_actor=1)).resolve("classic", "mlp")
  assert "warning: --num-actors 64" in capsys.readouterr().err


def test_actors_and_learner_on_different_devices(tmp_path):
  """Two forced host devices: the learner on cpu:0, the actors on cpu:1 (parameters are copied over on publish)."""
  import os
  import subprocess
  import sys
  from conftest import ROOT
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
  code = ("import jax, run_impala, envs.actors as a\n"
          "seen = []\n"
          "orig = a.ParamStore.publish\n"
          "def publish(self, params, version):\n"
          "  orig(self, params, version); seen.append({d.id for x in jax.tree.leaves(self._params) for d in x.devices()})\n"
          "a.ParamStore.publish = publish\n"
          f"rc = run_impala.main(['--env', 'CartPole-v1', '--total-timesteps', '1280', '--eval-every', '0', "
          f"'--actor-device', 'cpu:1', '--no-progress', '--run-dir', r'{tmp_path / 'r'}'])\n"
          "assert rc == 0 and len(jax.devices()) == 2 and seen and all(s == {1} for s in seen), seen\n")
  res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert res.returncode == 0, res.stderr[-2000:]


def test_ctrl_c_saves_a_checkpoint(tmp_path):
  import os
  import signal
  import subprocess
  import sys
  from conftest import ROOT
  run_dir = tmp_path / "interrupted"
  proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "run_impala.py"), "--env", "CartPole-v1",
                           "--total-timesteps", "4000000", "--eval-every", "0", "--no-progress", "--run-dir",
                           str(run_dir)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  deadline = time.time() + 120
  while time.time() < deadline and not ((run_dir / "progress.csv").exists()
                                        and len((run_dir / "progress.csv").read_text().splitlines()) > 3):
    time.sleep(0.2)
  proc.send_signal(signal.SIGINT)
  _, err = proc.communicate(timeout=60)
  assert proc.returncode == 130, err[-2000:]
  assert "interrupted: checkpoint at step" in err
  from harness.checkpoint import Checkpointer
  steps = Checkpointer(str(run_dir)).steps()
  last_logged = int(read_csv(run_dir / "progress.csv")[-1]["global_step"])
  assert steps and max(steps) == last_logged
