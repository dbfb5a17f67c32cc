"""Data-parallel learners on forced host devices (XLA_FLAGS=--xla_force_host_platform_device_count=4): the update
over 4 devices equals the one-device update on the same data, and both trainers run with --learner-devices."""
import os
import subprocess
import sys

import pytest

from conftest import ROOT

_UPDATE_CHECK = r'''
import jax, numpy as np
import networks
from algorithms import impala
from algorithms.impala import ImpalaConfig
from algorithms.parallel import AXIS, env_axis, lift
from envs.rollout import Trajectory
assert len(jax.devices()) == 4
cfg = ImpalaConfig(batch_trajectories=8).resolve("classic")
net = networks.make_network("mlp_categorical", discrete=True, image_obs=False, action_dim=2)
state = impala.init_state(cfg, net, (4,), jax.random.PRNGKey(0))
rng = np.random.default_rng(0)
T, B = 5, 8
f32 = lambda x: np.asarray(x, np.float32)
traj = Trajectory(obs=f32(rng.normal(size=(T, B, 4))), actions=rng.integers(0, 2, (T, B)).astype(np.int32),
                  logp=f32(np.log(rng.uniform(0.2, 0.8, (T, B)))), values=f32(rng.normal(size=(T, B))),
                  rewards=np.ones((T, B), np.float32), terminations=f32(rng.random((T, B)) < 0.1),
                  truncations=f32(rng.random((T, B)) < 0.05), mask=f32(rng.random((T, B)) > 0.1),
                  last_obs=f32(rng.normal(size=(B, 4))))
one = lift(impala.make_update_fn(cfg, net, True, False))
four = lift(impala.make_update_fn(cfg, net, True, False, axis_name=AXIS), devices=4,
            batch_axis=env_axis)
copy = lambda tree: jax.tree.map(lambda x: x.copy(), tree)  # each update donates its input state
s1, m1 = one(copy(state), traj)
for _ in range(3):  # several updates, so the optimiser state takes part too
  s1, m1 = one(s1, traj)
s4, m4 = four(copy(state), traj)
for _ in range(3):
  s4, m4 = four(s4, traj)
assert {d.id for d in s4.params["params"]["Dense_0"]["kernel"].devices()} == {0, 1, 2, 3}
for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(s1)[0], jax.tree.leaves(s4)):
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6, err_msg=jax.tree_util.keystr(path))
for k in m1:
  np.testing.assert_allclose(float(m1[k]), float(m4[k]), rtol=1e-5, atol=1e-6, err_msg=k)
print("ok")
'''


_PPO_UPDATE_CHECK = r'''
import jax, numpy as np
import networks
from algorithms import ppo
from algorithms.ppo import PPOConfig
from algorithms.parallel import AXIS, env_axis, lift
from envs.rollout import Trajectory
assert len(jax.devices()) == 4
rng = np.random.default_rng(0)
f32 = lambda x: np.asarray(x, np.float32)
for discrete in (True, False):
  T, N = 16, 8
  cfg = PPOConfig(num_envs=N, num_steps=T, num_minibatches=4, update_epochs=2, normalize_obs=not discrete,
                  normalize_reward=True).resolve("classic")
  name = "mlp_categorical" if discrete else "mlp"
  net = networks.make_network(name, discrete=discrete, image_obs=False, action_dim=2)
  state = ppo.init_state(cfg, net, (4,), jax.random.PRNGKey(0))
  state = state.replace(scaling_returns=jax.numpy.asarray(rng.normal(size=N), jax.numpy.float32))
  actions = rng.integers(0, 2, (T, N)).astype(np.int32) if discrete else f32(rng.normal(size=(T, N, 2)))
  traj = Trajectory(obs=f32(rng.normal(size=(T, N, 4))), actions=actions,
                    logp=f32(np.log(rng.uniform(0.2, 0.8, (T, N)))), values=f32(rng.normal(size=(T, N))),
                    rewards=f32(rng.normal(size=(T, N))), terminations=f32(rng.random((T, N)) < 0.1),
                    truncations=f32(rng.random((T, N)) < 0.05), mask=f32(rng.random((T, N)) > 0.1),
                    last_obs=f32(rng.normal(size=(N, 4))))
  one = lift(ppo.make_update_fn(cfg, net, discrete, False))
  four = lift(ppo.make_update_fn(cfg, net, discrete, False, axis_name=AXIS), devices=4, batch_axis=env_axis)
  s1, s4 = (jax.tree.map(lambda x: x.copy(), state) for _ in range(2))  # each update donates its input state
  for _ in range(3):
    s1, m1 = one(s1, traj)
    s4, m4 = four(s4, traj)
  for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(s1)[0], jax.tree.leaves(s4)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-5, atol=1e-6, err_msg=jax.tree_util.keystr(path))
  for k in m1:
    np.testing.assert_allclose(float(m1[k]), float(m4[k]), rtol=2e-5, atol=1e-6, err_msg=k)
  print(discrete, {k: round(float(v), 4) for k, v in m1.items()})
print("ok")
'''


def _forced(code_or_args, devices=4, timeout=300):
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
  args = ["-c", code_or_args] if isinstance(code_or_args, str) else code_or_args
  return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def test_impala_update_on_4_devices_equals_one_device():
  """Tolerance rtol 1e-5: the per-device partial sums are added in another order than one device's sum."""
  r = _forced(_UPDATE_CHECK)
  assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-3000:]


def test_ppo_update_on_4_devices_equals_one_device():
  """Discrete and Gaussian policies, observation and reward normalisation on, 3 updates of 2 epochs x 4 minibatches:
  advantage normalisation, the return statistics and every metric use all devices' samples (rtol 2e-5)."""
  r = _forced(_PPO_UPDATE_CHECK)
  assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-3000:]


@pytest.mark.parametrize("script, steps", [("run_ppo.py", "4096"), ("run_impala.py", "20480")])
def test_run_with_two_learner_devices(tmp_path, script, steps):
  r = _forced([os.path.join(ROOT, script), "--env", "CartPole-v1", "--total-timesteps", steps,
               "--learner-devices", "2", "--eval-episodes", "2", "--run-dir", str(tmp_path / "run"), "--no-progress"],
              devices=2)
  assert r.returncode == 0, r.stderr[-3000:]
  assert (tmp_path / "run" / "result.json").is_file()


def test_learner_devices_bad_values(tmp_path):
  r = _forced([os.path.join(ROOT, "run_ppo.py"), "--env", "CartPole-v1", "--learner-devices", "3",
               "--run-dir", str(tmp_path / "bad")], devices=4)
  assert r.returncode == 2 and r.stderr.strip() == "error: --learner-devices 3 does not divide --num-envs 4"
  r = _forced([os.path.join(ROOT, "run_impala.py"), "--env", "CartPole-v1", "--learner-devices", "3",
               "--run-dir", str(tmp_path / "a")], devices=4)
  assert r.returncode == 2 and "--learner-devices 3 does not divide --batch-trajectories 32" in r.stderr
  r = _forced([os.path.join(ROOT, "run_impala.py"), "--env", "CartPole-v1", "--learner-devices", "8",
               "--batch-trajectories", "32", "--run-dir", str(tmp_path / "b")], devices=4)
  assert r.returncode == 2 and "only 4 local devices" in r.stderr and len(r.stderr.strip().splitlines()) == 1
  assert not (tmp_path / "b").exists()
