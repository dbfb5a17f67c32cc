"""evaluate.py on tiny real runs made here: its numbers against an independent replay, the JSON, an Atari video,
and bad inputs."""
import json
import os
import shutil
import subprocess
import sys

import envpool
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

import evaluate
import networks
import run_impala
import run_ppo
from conftest import ROOT
from envs import video

QUIET = ["--no-progress", "--eval-every", "0"]


@pytest.fixture(scope="module")
def cartpole_run(tmp_path_factory):
  run_dir = tmp_path_factory.mktemp("runs") / "cartpole"
  assert run_ppo.main(["--env", "CartPole-v1", "--total-timesteps", "4096", "--run-dir", str(run_dir)] + QUIET) == 0
  return run_dir


def _restored_params(run_dir, step):
  with ocp.StandardCheckpointer() as c:
    return c.restore(os.path.join(run_dir, "checkpoints", str(step), "state"))["params"]


def _replay(make, network, params, episodes):
  """Plays greedy (argmax) actions on the given envpool until each env's first game ends; no jaxpod loop code."""
  env = make()
  apply = jax.jit(network.apply)  # eager, the two Pong tests below took 61 s and 30 s; jitted 32 s and 15 s
  obs, _ = env.reset()
  returns, lengths = np.zeros(episodes), np.zeros(episodes, int)
  done = np.zeros(episodes, bool)
  while not done.all():
    logits, _ = apply(params, obs)
    obs, reward, terminated, truncated, info = env.step(np.asarray(np.argmax(logits, axis=-1), np.int32))
    live = ~done
    returns[live] += info.get("reward", reward)[live]
    lengths[live] += 1
    game_over = info["terminated"].astype(bool) if "terminated" in info else terminated
    done |= game_over | truncated
  return returns.tolist(), lengths.tolist()


def _pong_eval_envs(frame_size):
  """Makes 2 Pong envs (seed 3) under the evaluation protocol, written out with envpool's own arguments: no sticky
  actions, 30 no-op starts, no episodic life, no reward clipping, frames `frame_size` square."""
  return lambda: envpool.make(
      "Pong-v5", env_type="gymnasium", num_envs=2, seed=3, repeat_action_probability=0.0, noop_max=30,
      frame_skip=4, stack_num=4, img_height=frame_size, img_width=frame_size, gray_scale=True, use_fire_reset=True,
      episodic_life=False, reward_clip=False)


def test_cartpole_matches_independent_replay(cartpole_run, capsys):
  assert evaluate.main([str(cartpole_run), "--episodes", "4", "--seed", "7"]) == 0
  result = json.loads((cartpole_run / "eval" / "4096.json").read_text())
  assert result["step"] == 4096 and result["episodes"] == 4 and result["greedy"] and result["env"] == "CartPole-v1"
  net = networks.make_network("mlp_categorical", discrete=True, image_obs=False, action_dim=2)
  returns, lengths = _replay(lambda: envpool.make("CartPole-v1", env_type="gymnasium", num_envs=4, seed=7), net,
                             _restored_params(cartpole_run, 4096), 4)
  assert result["returns"] == returns and result["lengths"] == lengths
  assert result["return_mean"] == pytest.approx(np.mean(returns))
  assert result["return_std"] == pytest.approx(np.std(returns))
  assert (result["return_min"], result["return_max"]) == (min(returns), max(returns))
  assert f"return {np.mean(returns):.2f} +- {np.std(returns):.2f}" in capsys.readouterr().out


def test_sampled_actions_and_step(cartpole_run):
  assert evaluate.main([str(cartpole_run), "--episodes", "3", "--no-greedy", "--step", "4096"]) == 0
  result = json.loads((cartpole_run / "eval" / "4096.json").read_text())
  assert not result["greedy"] and len(result["returns"]) == 3


def test_pong_matches_replay_and_writes_video(tmp_path):
  run_dir = tmp_path / "pong"
  assert run_ppo.main(["--total-timesteps", "1024", "--run-dir", str(run_dir)] + QUIET) == 0
  assert evaluate.main([str(run_dir), "--episodes", "2", "--seed", "3", "--video"]) == 0
  result = json.loads((run_dir / "eval" / "1024.json").read_text())
  net = networks.make_network("nature_cnn", discrete=True, image_obs=True, action_dim=6)
  returns, lengths = _replay(_pong_eval_envs(84), net, _restored_params(run_dir, 1024), 2)
  assert result["returns"] == returns and result["lengths"] == lengths
  assert -21 <= returns[0] <= 21 and lengths[0] > 100
  [path] = result["videos"]
  assert os.path.basename(path) == f"1024_episode0_return{returns[0]:g}.mp4" and os.path.isfile(path)
  assert video.count_frames(path) == lengths[0] + 1  # the reset frame, then one per agent step


def test_impala_parl_run_is_played_at_42x42(tmp_path):
  """A run of IMPALA's default (PARL) setting: evaluate.py plays its checkpoint on 42x42 frames, as an independent
  replay does."""
  run_dir = tmp_path / "impala"
  assert run_impala.main(["--total-timesteps", "1000", "--run-dir", str(run_dir)] + QUIET) == 0
  assert evaluate.main([str(run_dir), "--episodes", "2", "--seed", "3"]) == 0
  result = json.loads((run_dir / "eval" / "1000.json").read_text())
  net = networks.make_network("parl_atari", discrete=True, image_obs=True, action_dim=6)
  returns, lengths = _replay(_pong_eval_envs(42), net, _restored_params(run_dir, 1000), 2)
  assert result["returns"] == returns and result["lengths"] == lengths
  assert -21 <= returns[0] <= 21 and lengths[0] > 100


def _cli(*args, env=None):
  return subprocess.run([sys.executable, os.path.join(ROOT, "evaluate.py"), *map(str, args)], cwd=ROOT,
                        capture_output=True, text=True, timeout=300, env=env)


def _one_line_exit_2(r, needle):
  assert r.returncode == 2, r.stderr
  assert len(r.stderr.strip().splitlines()) == 1 and needle in r.stderr, r.stderr


def test_bad_inputs(cartpole_run, tmp_path):
  _one_line_exit_2(_cli(tmp_path / "nowhere"), "no such run directory")
  (tmp_path / "empty").mkdir()
  _one_line_exit_2(_cli(tmp_path / "empty"), "not a run directory")
  _one_line_exit_2(_cli(cartpole_run, "--step", "5"), "--step 5: no such checkpoint")
  _one_line_exit_2(_cli(cartpole_run, "--episodes", "0"), "--episodes")
  _one_line_exit_2(_cli(cartpole_run, "--video"), "--video supports Atari and MuJoCo")
  # A checkpoint from a different env (Acrobot: 6 observations, 3 actions) under CartPole's config.
  other = tmp_path / "acrobot"
  assert run_ppo.main(["--env", "Acrobot-v1", "--total-timesteps", "512", "--run-dir", str(other)] + QUIET) == 0
  mixed = tmp_path / "mixed"
  shutil.copytree(cartpole_run, mixed, ignore=shutil.ignore_patterns("eval", "checkpoints"))
  shutil.copytree(other / "checkpoints", mixed / "checkpoints")
  _one_line_exit_2(_cli(mixed), "does not fit this config")
  assert not (mixed / "eval").exists()
  # Same shapes, other env: caught by the env name the checkpoint recorded.
  relabelled = tmp_path / "relabelled"
  shutil.copytree(cartpole_run, relabelled, ignore=shutil.ignore_patterns("eval"))
  meta_path = relabelled / "checkpoints" / "4096" / "meta" / "metadata"
  meta = json.loads(meta_path.read_text())
  assert meta["env"] == "CartPole-v1" and meta["network"] == "mlp_categorical"
  meta_path.write_text(json.dumps(dict(meta, env="CartPole-v0")))
  _one_line_exit_2(_cli(relabelled), "was trained with env CartPole-v0")


def test_mujoco_video_without_renderer(tmp_path):
  """MuJoCo videos need an offscreen OpenGL context; a backend that cannot be used ends in one line naming it."""
  run_dir = tmp_path / "hc"
  assert run_ppo.main(["--env", "HalfCheetah-v4", "--total-timesteps", "256", "--num-steps", "256",
                       "--num-minibatches", "4", "--run-dir", str(run_dir)] + QUIET) == 0
  env = dict(os.environ, MUJOCO_GL="glfw")
  _one_line_exit_2(_cli(run_dir, "--video", "--episodes", "1", env=env), "MUJOCO_GL=egl or osmesa")
