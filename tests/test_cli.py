"""Bad input: one line on stderr naming what to change, exit code 2, no traceback, nothing written."""
import json
import os
import shutil

import pytest

import run_ppo
from harness.checkpoint import Checkpointer

CARTPOLE = ["--env", "CartPole-v1", "--no-progress"]


def _fails(argv, capsys, match):
  with pytest.raises(SystemExit) as exc:
    run_ppo.main(argv)
  assert exc.value.code == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1, err
  assert err[0].startswith("error: ") and match in err[0], err[0]
  return err[0]


@pytest.mark.parametrize("argv, match", [
    (["--env", "Pongg-v5"], "did you mean Pong-v5"),
    (["--env", "HalfCheeta-v4"], "HalfCheetah-v4"),
    (CARTPOLE + ["--network", "mlp"], "use --network mlp_categorical"),
    (["--env", "HalfCheetah-v4", "--network", "nature_cnn"], "--network nature_cnn"),
    (CARTPOLE + ["--network", "transformer"], "unknown --network 'transformer'"),
    (CARTPOLE + ["--num-minibatches", "3"], "--num-minibatches 3 does not divide --num-steps 128"),
    (CARTPOLE + ["--num-envs", "0"], "--num-envs must be positive"),
    (CARTPOLE + ["--num-steps", "-4"], "--num-steps must be positive"),
    (CARTPOLE + ["--learning-rate", "0"], "--learning-rate must be positive"),
    (CARTPOLE + ["--total-timesteps", "0"], "--total-timesteps must be positive"),
    (CARTPOLE + ["--total-timesteps", "100"], "--total-timesteps 100 is less than one rollout"),
    (CARTPOLE + ["--gamma", "1.5"], "--gamma must lie in"),
    (CARTPOLE + ["--eval-episodes", "0"], "--eval-episodes must be positive"),
    (CARTPOLE + ["--num-envs", "abc"], "--num-envs"),
    (CARTPOLE + ["--no-such-flag"], "--no-such-flag"),
    (["--resume", "x", "--overwrite"], "--resume and --overwrite"),
])
def test_bad_flags(argv, match, capsys, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  _fails(argv + ["--run-dir", str(tmp_path / "run")] if "--resume" not in argv else argv, capsys, match)
  assert not (tmp_path / "run").exists() and not (tmp_path / "runs").exists()


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
  run_dir = tmp_path_factory.mktemp("runs") / "done"
  assert run_ppo.main(CARTPOLE + ["--total-timesteps", "1024", "--eval-every", "0", "--run-dir", str(run_dir)]) == 0
  return run_dir


def test_existing_run_dir_is_not_overwritten(finished_run, capsys):
  before = (finished_run / "progress.csv").read_text()
  _fails(CARTPOLE + ["--total-timesteps", "1024", "--run-dir", str(finished_run)], capsys, "--resume")
  assert (finished_run / "progress.csv").read_text() == before


def test_overwrite_replaces_a_run_dir(finished_run, tmp_path):
  copy = tmp_path / "copy"
  shutil.copytree(finished_run, copy)
  assert run_ppo.main(CARTPOLE + ["--total-timesteps", "512", "--eval-every", "0", "--run-dir", str(copy),
                                  "--overwrite"]) == 0
  assert Checkpointer(str(copy)).steps() == [512]


def test_resume_rejects_other_flags(finished_run, capsys):
  _fails(["--resume", str(finished_run), "--seed", "3"], capsys, "drop --seed")


def test_resume_missing_dir(tmp_path, capsys):
  _fails(["--resume", str(tmp_path / "nowhere")], capsys, "no such run directory")


def test_resume_not_a_run_dir(tmp_path, capsys):
  _fails(["--resume", str(tmp_path)], capsys, "not a run directory")


def test_resume_without_checkpoint(finished_run, tmp_path, capsys):
  copy = tmp_path / "nockpt"
  shutil.copytree(finished_run, copy)
  shutil.rmtree(copy / "checkpoints")
  _fails(["--resume", str(copy)], capsys, "no checkpoint")


def test_resume_corrupt_checkpoint(finished_run, tmp_path, capsys):
  copy = tmp_path / "corrupt"
  shutil.copytree(finished_run, copy)
  for root, _, files in os.walk(copy / "checkpoints"):
    for name in files:
      path = os.path.join(root, name)
      with open(path, "r+b") as f:
        f.truncate(max(os.path.getsize(path) // 3, 1))
  _fails(["--resume", str(copy)], capsys, "corrupt or incompatible")


def test_resume_incompatible_checkpoint(finished_run, tmp_path, capsys):
  copy = tmp_path / "incompatible"
  shutil.copytree(finished_run, copy)
  config = json.loads((copy / "config.json").read_text())
  config["num_envs"] = 8  # the saved state holds per-env return accumulators for 4 envs
  (copy / "config.json").write_text(json.dumps(config))
  _fails(["--resume", str(copy)], capsys, "checkpoint 1024")


def test_cli_exit_code_and_no_traceback(run_ppo_cli, tmp_path):
  res = run_ppo_cli("--env", "Pongg-v5", "--run-dir", tmp_path / "r")
  assert res.returncode == 2
  assert res.stderr.strip().count("\n") == 0 and "Traceback" not in res.stderr
  assert not (tmp_path / "r").exists()


def test_help_documents_every_field(run_ppo_cli):
  from algorithms.ppo_config import PPOConfig
  import dataclasses
  res = run_ppo_cli("--help")
  assert res.returncode == 0
  for field in dataclasses.fields(PPOConfig):
    assert "--" + field.name.replace("_", "-") in res.stdout
  assert "Surrogate clipping epsilon" in res.stdout
