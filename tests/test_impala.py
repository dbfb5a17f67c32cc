"""IMPALA end to end: loss gradients, learning through the real actor threads and queue, an Atari smoke run,
shutdown on a failing actor, stuck-actor reports, checkpoint and resume, bad input."""
import json
import math
import os
import signal
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


def test_parl_setting_is_the_atari_default():
  """run_impala.py's Atari default is PARL's IMPALA example (shared/REFERENCE.md): 42x42 frames, its network, 5 envs
  per actor, unroll 50 x batch 20, Adam 1e-3 with clip 40; the actor count comes from the cores."""
  from algorithms import registry
  from harness.config import available_cores, config_class
  cfg = config_class(registry.get("impala"))().resolve("atari", "nature_cnn")
  hp = cfg.algorithm
  assert (cfg.environment.frame_size, cfg.environment.network) == (42, "parl_atari")
  assert (cfg.source.envs_per_actor, cfg.source.num_actors) == (5, 2 * available_cores())
  assert (hp.unroll_length, hp.batch_trajectories, hp.steps_per_update) == (50, 20, 1000)
  assert (hp.optimizer, hp.adam_b1, hp.adam_b2, hp.adam_eps, hp.max_grad_norm) == ("adam", 0.9, 0.999, 1e-8, 40.0)
  assert (hp.ent_coef, hp.baseline_coef, hp.rho_bar, hp.c_bar, hp.gamma) == (0.01, 0.5, 1.0, 1.0, 0.99)
  spec = resolve_env("Pong-v5", frame_size=cfg.environment.frame_size)
  assert spec.obs_shape == (4, 42, 42) and spec.frame_size == 42
  net = networks.make_network("parl_atari", discrete=True, image_obs=True, action_dim=spec.action_dim)
  params = net.init(jax.random.PRNGKey(0), jnp.zeros((1,) + spec.obs_shape, jnp.uint8))
  logits, value = net.apply(params, jnp.zeros((3,) + spec.obs_shape, jnp.uint8))
  assert logits.shape == (3, 6) and value.shape == (3,)


def test_paper_preset_keeps_the_papers_setting():
  """`--preset paper` gives the settings run_impala.py had before PARL's became the default."""
  from algorithms import registry
  from harness.config import config_class
  cfg = config_class(registry.get("impala"))(algorithm=ImpalaConfig(preset="paper")).resolve("atari", "nature_cnn")
  hp = cfg.algorithm
  assert (cfg.environment.frame_size, cfg.environment.network) == (84, "nature_cnn")
  assert (cfg.source.num_actors, cfg.source.envs_per_actor) == (2, 16)
  assert (hp.unroll_length, hp.batch_trajectories, hp.optimizer, hp.lr_schedule) == (20, 32, "rmsprop", "linear")
  assert (hp.learning_rate, hp.rmsprop_decay, hp.rmsprop_eps, hp.ent_coef, hp.total_timesteps) == (
      6e-4, 0.99, 0.01, 0.01, 10_000_000)
  tx, schedule = impala.make_optimizer(hp)
  assert float(schedule(0)) == pytest.approx(6e-4) and float(schedule(hp.num_updates // 2)) == pytest.approx(3e-4, rel=1e-3)
  # classic control and MuJoCo keep their defaults whatever the preset
  for preset in ("parl", "paper"):
    c = config_class(registry.get("impala"))(algorithm=ImpalaConfig(preset=preset)).resolve("classic", "mlp")
    assert (c.algorithm.optimizer, c.algorithm.learning_rate, c.algorithm.unroll_length) == ("rmsprop", 1e-2, 20)
    assert (c.source.num_actors, c.source.envs_per_actor, c.environment.frame_size) == (2, 16, None)


def test_config_json_from_before_the_presets_is_the_paper_setting():
  """A config.json written before presets (`anneal_lr`, no preset, optimiser or frame size) reads back as the run
  it was: the paper's setting at 84x84, so evaluate.py and --resume rebuild the same network and optimiser."""
  from algorithms import registry
  from harness.config import config_class
  cls = config_class(registry.get("impala"))
  paper = cls(algorithm=ImpalaConfig(preset="paper")).resolve("atari", "nature_cnn")
  old = {k: v for k, v in paper.flat().items() if k not in ("preset", "optimizer", "lr_schedule", "frame_size")}
  old = json.loads(json.dumps(dict(old, anneal_lr=True)))  # as read back from disk (tuples become lists)
  assert cls.from_flat(old) == paper
  assert cls.from_flat(dict(old, anneal_lr=False)).algorithm.lr_schedule == "constant"


def test_default_actors_count_every_process_of_a_group():
  from algorithms import registry
  from harness.config import ScaleSettings, available_cores, config_class
  cls = config_class(registry.get("impala"))
  group = cls(scale_out=ScaleSettings(coordinator_address="127.0.0.1:1", num_processes=2, process_id=0))
  assert group.resolve("atari", "nature_cnn").source.num_actors == 2 * 2 * available_cores()


def test_parl_learning_rate_steps_at_updates_20000_and_40000():
  hp = ImpalaConfig().resolve("atari")
  _, schedule = impala.make_optimizer(hp)
  rates = {u: float(schedule(jnp.asarray(u))) for u in (0, 19_999, 20_000, 39_999, 40_000, 90_000)}
  assert rates == pytest.approx({0: 1e-3, 19_999: 1e-3, 20_000: 5e-4, 39_999: 5e-4, 40_000: 1e-4, 90_000: 1e-4},
                                rel=1e-6)
  # the optimiser applies it: after one Adam step from zero moments each parameter moves by ~lr (sign of its grad)
  params = {"w": jnp.ones(3)}
  tx, _ = impala.make_optimizer(hp)
  opt_state = tx.init(params)
  updates, _ = tx.update({"w": jnp.array([1.0, -2.0, 0.5])}, opt_state, params)
  np.testing.assert_allclose(updates["w"], [-1e-3, 1e-3, -1e-3], rtol=1e-4)


def test_pong_smoke(tmp_path):
  """Two updates of the PARL setting on Pong: 1,000-step batches at 42x42, finite losses, the step-changed lr."""
  run_dir = tmp_path / "pong"
  assert run_impala.main(["--total-timesteps", "2000", "--eval-every", "0", "--run-dir", str(run_dir)] + QUIET) == 0
  rows = read_csv(run_dir / "progress.csv")
  assert [int(r["global_step"]) for r in rows] == [1000, 2000]
  assert all(math.isfinite(float(r["loss"])) and 0 < float(r["entropy"]) <= math.log(6) for r in rows)
  assert all(float(r["learning_rate"]) == pytest.approx(1e-3) for r in rows)
  config = json.loads((run_dir / "config.json").read_text())
  assert (config["frame_size"], config["network"], config["preset"]) == (42, "parl_atari", "parl")


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


def test_a_signal_while_the_learner_waits_leaves_the_queue_unlocked():
  """A handler that raises at once can land inside `queue.get` after the queue's lock is taken and before the block
  that releases it; `ActorPool.stop` then waited for that lock forever (a SIGTERM hang, once in ~50 runs). The run's
  handler keeps a signal that arrives while the learner waits for a batch, and the wait raises it at its next poll,
  outside the lock."""
  from harness.loop import Interrupted, Shutdown
  release = threading.Event()

  def stalling(net):  # no trajectory until released: the learner waits in `get`
    act = acting.make_act_fn(net, True, False)
    return lambda params, carry, obs: (release.wait(), act(params, carry, obs))[1]

  handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
  pool = _pool(stalling).start()
  try:
    shutdown = Shutdown(group=False)
    threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGTERM)).start()
    t0 = time.time()
    with pytest.raises(Interrupted) as raised:
      with shutdown.deferred():
        pool.get(timeout=30, poll=shutdown.poll)
    assert raised.value.signum == signal.SIGTERM and time.time() - t0 < 5
    assert raised.traceback[-1].name == "poll"  # raised at the safe point, not wherever the signal landed
    assert pool.queue.mutex.acquire(blocking=False)
    pool.queue.mutex.release()
  finally:
    for s, h in handlers.items():
      signal.signal(s, h)
    release.set()
    pool.stop(timeout=10)
  assert not any(t.is_alive() for t in pool._threads)


def test_a_resumed_segment_samples_anew():
  """The update never advances the state's key, so a resumed run's actors must not start from the keys of its first
  segment: every actor of every segment gets its own key."""
  from harness.loop import actor_keys
  key = jax.random.PRNGKey(1)
  keys = actor_keys(key, 0, 0, 4) + actor_keys(key, 6400, 0, 4) + actor_keys(key, 0, 4, 2)
  assert len({tuple(np.asarray(k).tolist()) for k in keys}) == 10
  assert all(np.array_equal(a, b) for a, b in zip(actor_keys(key, 0, 0, 6)[4:], actor_keys(key, 0, 4, 2)))


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
    (["--env", "CartPole-v1", "--frame-size", "42"], "--frame-size applies to Atari envs"),
    (["--lr-boundaries", "100", "50", "--lr-values", "1e-4", "1e-5"], "--lr-boundaries must be positive and increasing"),
    (["--lr-values", "1e-4"], "--lr-boundaries and --lr-values pair up"),
    (["--preset", "nature"], "--preset"),
    (["--forward-chunks", "7"], "--forward-chunks 7 does not divide a batch's frames ((--unroll-length + 1) x "
                                "--batch-trajectories = 1020)"),
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
  """An impatient user presses Ctrl-C twice: the second is dropped while the first's stop (actors joined, checkpoint
  saved) runs, so the run still ends with its checkpoint and one line, no traceback."""
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
  time.sleep(0.05)
  proc.send_signal(signal.SIGINT)
  _, err = proc.communicate(timeout=60)
  assert proc.returncode == 130, err[-2000:]
  assert "Traceback" not in err, err[-2000:]
  assert err.strip().splitlines()[-1].startswith("interrupted: checkpoint at step")
  from harness.checkpoint import Checkpointer
  steps = Checkpointer(str(run_dir)).steps()
  last_logged = int(read_csv(run_dir / "progress.csv")[-1]["global_step"])
  assert steps and max(steps) == last_logged
