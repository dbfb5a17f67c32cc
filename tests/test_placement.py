"""The GPU path on CPU: donation is on for every backend and honoured by XLA:CPU, forced host devices stand in for
separate acting and learner devices, the learner state stays on the learner device whatever the acting device,
published parameters are copies, memory is not preallocated, and processes on one machine get their own devices.
"""
import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import ROOT


def _forced(code_or_args, devices=2, timeout=300, env=None):
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", **(env or {}))
  args = ["-c", code_or_args] if isinstance(code_or_args, str) else code_or_args
  return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


_SYNTHETIC = r'''
import jax, numpy as np
import networks
from algorithms import impala, ppo
from algorithms.impala import ImpalaConfig
from algorithms.parallel import lift
from algorithms.ppo import PPOConfig
from envs.actors import ParamStore
from envs.rollout import Trajectory
from harness.placement import place
cpu0, cpu1 = jax.devices()
rng = np.random.default_rng(0)
f32 = lambda x: np.asarray(x, np.float32)
T, N = 16, 8
traj = Trajectory(obs=f32(rng.normal(size=(T, N, 4))), actions=rng.integers(0, 2, (T, N)).astype(np.int32),
                  logp=f32(np.log(rng.uniform(0.2, 0.8, (T, N)))), values=f32(rng.normal(size=(T, N))),
                  rewards=f32(rng.normal(size=(T, N))), terminations=f32(rng.random((T, N)) < 0.1),
                  truncations=f32(rng.random((T, N)) < 0.05), mask=f32(rng.random((T, N)) > 0.1),
                  last_obs=f32(rng.normal(size=(N, 4))))
net = networks.make_network("mlp_categorical", discrete=True, image_obs=False, action_dim=2)
devices = lambda tree: {d for x in jax.tree.leaves(tree) for d in x.devices()}
'''

_DONATION = _SYNTHETIC + r'''
cfg = ImpalaConfig(batch_trajectories=8).resolve("classic")
state = impala.init_state(cfg, net, (4,), jax.random.PRNGKey(0))
kept = lift(impala.make_update_fn(cfg, net, True, False), donate=False)(state, traj)[0]
assert not any(x.is_deleted() for x in jax.tree.leaves(state))
store = ParamStore(state.params, 0, cpu0)  # the acting device is the learner's: still a copy
ptr = lambda tree: {x.unsafe_buffer_pointer() for x in jax.tree.leaves(tree)}
assert devices(store.get()[0]) == {cpu0} and not ptr(store.get()[0]) & ptr(state.params)
new, _ = lift(impala.make_update_fn(cfg, net, True, False))(state, traj)
assert all(x.is_deleted() for x in jax.tree.leaves(state.params)), "XLA:CPU did not honour donation"
assert not any(x.is_deleted() for x in jax.tree.leaves(store.get()[0]))
assert jax.tree.all(jax.tree.map(lambda a, b: bool(np.array_equal(a, b)), kept, new))
store.publish(new.params, 1)
assert devices(store.get()[0]) == {cpu0} and not ptr(store.get()[0]) & ptr(new.params)
other = ParamStore(new.params, 1, cpu1)
assert devices(other.get()[0]) == {cpu1}
from jax.sharding import Mesh, NamedSharding, PartitionSpec
replicated = jax.device_put(new.params, NamedSharding(Mesh(np.array([cpu0, cpu1]), ("data",)), PartitionSpec()))
shards = {s.data.unsafe_buffer_pointer() for x in jax.tree.leaves(replicated) for s in x.addressable_shards}
store.publish(replicated, 2)  # a learner state replicated over learner devices
assert devices(store.get()[0]) == {cpu0} and not ptr(store.get()[0]) & shards
print("ok")
'''

_PPO_STATE_STAYS = _SYNTHETIC + r'''
cfg = PPOConfig(num_envs=N, num_steps=T, num_minibatches=4, update_epochs=2).resolve("classic")
where = place("cpu:1", False, 1)
assert where.learner == (cpu0,) and where.actor == cpu1
update = lift(ppo.make_update_fn(cfg, net, True, False))
results = []
for actor in (cpu0, cpu1):
  state = ppo.init_state(cfg, net, (4,), jax.random.PRNGKey(0))
  for _ in range(3):
    # what the rollout hands back: observation statistics and acting key, committed to the acting device
    obs_norm, actor_key = jax.device_put((state.obs_norm, jax.random.split(state.actor_key)[0]), actor)
    state, metrics = update(state.replace(obs_norm=obs_norm, actor_key=actor_key), traj)
    assert devices(state) == {cpu0}, (actor, devices(state))
    assert devices(metrics) == {cpu0}
  results.append(jax.device_get(state))
assert jax.tree.all(jax.tree.map(lambda a, b: bool(np.array_equal(a, b)), *results))
print("ok")
'''


def test_update_donates_its_state_and_published_params_are_copies():
  """XLA:CPU honours donation: the learner's input state is deleted by the update; the parameters an actor holds
  are a copy on the acting device (none of the learner's buffers), so they outlive the update."""
  r = _forced(_DONATION)
  assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-3000:]


def test_ppo_learner_state_stays_on_learner_device():
  """Acting on cpu:1 hands back statistics and key committed to cpu:1: every state array is on cpu:0 after each
  update, and the states equal (bitwise) those of acting on the learner's own device."""
  r = _forced(_PPO_STATE_STAYS)
  assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-3000:]


def test_placement_rule_on_forced_devices():
  code = r'''
import jax
from harness.placement import place
from harness.cli import UsageError
d = jax.devices()
assert place(None, False, 1).learner == (d[0],) and place(None, False, 1).actor == d[1]  # kept out of the mesh
assert place(None, True, 2).actor == d[2]
assert place(None, True, 4).actor == d[0]  # every device learns: acting shares the first
assert place("cpu:0", False, 1).actor == d[0]  # asked for
for bad in ("gpu", "cpu:9", "tpu:x"):
  try:
    place(bad, False, 1)
  except UsageError as e:
    assert str(e).startswith(f"--actor-device {bad}: no such JAX device"), e
  else:
    raise AssertionError(bad)
print("ok")
'''
  r = _forced(code, devices=4)
  assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-3000:]


def _result(run_dir):
  return json.loads((run_dir / "result.json").read_text())


def _params(run_dir):
  from harness.checkpoint import Checkpointer
  ckpt = Checkpointer(str(run_dir), create=False)
  try:
    restored = ckpt._manager.restore(ckpt._manager.latest_step())
  finally:
    ckpt.close()
  return jax.tree.leaves(restored["state"]["params"])


def test_ppo_run_acting_on_another_device_equals_acting_on_the_learners(tmp_path):
  """Two forced host devices: a PPO CartPole run acting on cpu:1 (the default: outside the learner's devices) ends
  with the parameters of the run acting on cpu:0, and records where it learned and acted."""
  common = ["--env", "CartPole-v1", "--total-timesteps", "2048", "--eval-every", "0", "--no-progress"]
  for name, extra in (("default", []), ("cpu0", ["--actor-device", "cpu:0"])):
    r = _forced([os.path.join(ROOT, "run_ppo.py"), *common, *extra, "--run-dir", str(tmp_path / name)])
    assert r.returncode == 0, r.stderr[-3000:]
  assert _result(tmp_path / "default")["learner_devices"] == ["cpu:0"]
  assert _result(tmp_path / "default")["actor_device"] == "cpu:1"
  assert _result(tmp_path / "cpu0")["actor_device"] == "cpu:0"
  for a, b in zip(_params(tmp_path / "default"), _params(tmp_path / "cpu0")):
    np.testing.assert_array_equal(a, b)


def test_impala_run_with_donation_and_two_actor_threads(tmp_path):
  """Several updates with donation on, 2 actor threads acting on cpu:1 while the learner updates on cpu:0: no
  deleted-array error, every update logged."""
  r = _forced([os.path.join(ROOT, "run_impala.py"), "--env", "CartPole-v1", "--num-actors", "2",
               "--envs-per-actor", "4", "--batch-trajectories", "8", "--total-timesteps", "3200", "--eval-every", "1600",
               "--checkpoint-every", "800", "--no-progress", "--run-dir", str(tmp_path / "r")])
  assert r.returncode == 0, r.stderr[-3000:]
  rows = (tmp_path / "r" / "progress.csv").read_text().splitlines()
  assert len(rows) == 1 + 3200 // 160
  assert _result(tmp_path / "r")["actor_device"] == "cpu:1"


def test_no_preallocation_unless_asked():
  code = ("import os\nfrom harness import xla\nxla.configure(False)\n"
          "print(os.environ['XLA_PYTHON_CLIENT_PREALLOCATE'])")
  env = {k: v for k, v in os.environ.items() if k != "XLA_PYTHON_CLIENT_PREALLOCATE"}
  r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
  assert r.stdout.strip() == "false", r.stderr
  env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "true"
  r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
  assert r.stdout.strip() == "true", r.stderr


@pytest.mark.parametrize("learner_devices, expected", [(1, ["0", "1"]), (2, ["0,1", "2,3"])])
def test_processes_on_one_machine_get_their_own_devices(learner_devices, expected):
  """Two real jax.distributed processes with the coordinator on loopback: each opens its own accelerators
  (JAX's CUDA/ROCm visible devices), not every process all of them."""
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  code = ("import sys, jax\nfrom harness.config import ScaleSettings\nfrom harness import distributed\n"
          f"distributed.initialize(ScaleSettings(coordinator_address='127.0.0.1:{port}', num_processes=2, "
          f"process_id=int(sys.argv[1]), learner_devices={learner_devices}, heartbeat_timeout=20))\n"
          "assert jax.process_count() == 2\nprint(jax.config._read('jax_cuda_visible_devices'))\n")
  env = {k: v for k, v in os.environ.items() if k not in ("JAX_LOCAL_DEVICE_IDS", "LOCAL_RANK", "SLURM_LOCALID",
                                                          "OMPI_COMM_WORLD_LOCAL_RANK")}
  procs = [subprocess.Popen([sys.executable, "-c", code, str(i)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True) for i in range(2)]
  outs = [p.communicate(timeout=120) for p in procs]
  assert all(p.returncode == 0 for p in procs), [o[1][-1500:] for o in outs]
  assert [o[0].strip() for o in outs] == expected


def test_local_rank_from_launcher_or_loopback(monkeypatch):
  from harness import distributed
  for name in distributed.LOCAL_RANK_VARS + ("JAX_LOCAL_DEVICE_IDS",):
    monkeypatch.delenv(name, raising=False)
  assert distributed.local_rank("10.0.0.5:1234", 3) is None  # other hosts: one process per machine
  assert distributed.local_rank("localhost:1234", 3) == 3
  monkeypatch.setenv("LOCAL_RANK", "1")
  assert distributed.local_rank("10.0.0.5:1234", 3) == 1
  assert distributed.local_device_ids(1, 2) == [2, 3]
  monkeypatch.setenv("JAX_LOCAL_DEVICE_IDS", "5")
  assert distributed.local_device_ids(1, 2) is None  # the user's choice stands


def _has_gpu() -> bool:
  try:
    return bool(jax.devices("gpu"))
  except RuntimeError:
    return False


@pytest.mark.gpu
@pytest.mark.skipif(not _has_gpu(), reason="JAX sees no GPU")
@pytest.mark.parametrize("script, args", [
    ("run_ppo.py", ["--env", "Pong-v5", "--total-timesteps", "2048"]),
    ("run_impala.py", ["--env", "Pong-v5", "--total-timesteps", "1280"]),
    ("run_ppo.py", ["--env", "CartPole-v1", "--total-timesteps", "2048"]),
])
def test_gpu_runs_learn_on_the_gpu(tmp_path, script, args):
  """On a GPU machine: the update runs on the GPU; images act there too, vector observations on the CPU."""
  r = subprocess.run([sys.executable, os.path.join(ROOT, script), *args, "--eval-every", "0", "--no-progress",
                      "--run-dir", str(tmp_path / "r")], cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert r.returncode == 0, r.stderr[-3000:]
  result = _result(tmp_path / "r")
  assert result["learner_devices"] == ["gpu:0"]
  assert result["actor_device"] == ("gpu:0" if "Pong" in args[1] else "cpu:0")


def test_rollout_keeps_frames_on_the_acting_device():
  """With `obs_device` a Pong rollout sends each step's frames to the device once and stacks them there: the same
  trajectory as the host-buffered rollout (same seeds, parameters and key), its `obs` a device array. Placement
  asks for it only on an accelerator that is also the one learner device."""
  import networks
  from algorithms import acting, normalize, ppo
  from envs import EpisodeTracker, resolve_env
  from envs.rollout import make_rollout
  from harness.placement import Placement
  spec = resolve_env("Pong-v5")
  net = networks.make_network("nature_cnn", discrete=True, image_obs=True, action_dim=spec.action_dim)
  state = ppo.init_state(ppo.PPOConfig().resolve("atari"), net, spec.obs_shape, jax.random.PRNGKey(0))
  act = acting.make_act_fn(net, True, False)
  cpu0 = jax.devices()[0]
  trajs = []
  for device in (None, cpu0):
    rollout = make_rollout(spec, 4, 6, 2, 3, act, EpisodeTracker(4), obs_device=device)
    trajs.append(rollout.collect(state.params, (normalize.init(()), jax.random.PRNGKey(1)))[0])
    rollout.close()
  host, kept = trajs
  assert isinstance(host.obs, np.ndarray) and isinstance(kept.obs, jax.Array)
  assert kept.obs.devices() == {cpu0} and kept.obs.shape == host.obs.shape == (6, 4) + spec.obs_shape
  for a, b in zip(jax.tree.leaves(host), jax.tree.leaves(kept)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert Placement((cpu0,), cpu0).frames_device(True) is None  # on the CPU there is no second transfer to save
