"""Bad input: one line on stderr naming what to change, exit code 2, no traceback, nothing written."""
import dataclasses
import json
import os
import random
import shutil
from typing import Literal

import pytest
import tyro

import run_ppo
from algorithms.config import UsageError, check_finite, check_positive, check_range
from harness.cli import parse
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
    # a value tyro cannot read: the flag, what it takes, what it got
    (CARTPOLE + ["--total-timesteps", "lots"], "--total-timesteps: expected an integer, got 'lots'"),
    (CARTPOLE + ["--seed", "1.5"], "--seed: expected an integer, got '1.5'"),
    (CARTPOLE + ["--learning-rate", "abc"], "--learning-rate: expected a number, got 'abc'"),
    (CARTPOLE + ["--adam-eps=x"], "--adam-eps: expected a number, got 'x'"),
    (CARTPOLE + ["--normalize-obs", "maybe"], "--normalize-obs: expected True or False, got 'maybe'"),
    (CARTPOLE + ["--anneal-lr", "maybe"], "--anneal-lr is a switch and takes no value, got 'maybe'"),
    (CARTPOLE + ["--seed"], "--seed: missing value (an integer)"),
    (CARTPOLE + ["--learnig-rate", "0.1"], "unknown flag --learnig-rate (did you mean --learning-rate?)"),
    # NaN and infinities, refused before anything runs: NaN passes every `<` check
    (CARTPOLE + ["--learning-rate", "nan"], "--learning-rate must be a finite number, got nan"),
    (CARTPOLE + ["--gamma", "inf"], "--gamma must be a finite number, got inf"),
    (CARTPOLE + ["--vf-coef", "nan"], "--vf-coef must be a finite number, got nan"),
    (CARTPOLE + ["--heartbeat-timeout", "-inf"], "--heartbeat-timeout must be a finite number, got -inf"),
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


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_resume_corrupt_checkpoint(finished_run, tmp_path, run_ppo_cli, damage):
  """In a fresh interpreter: orbax's absl ERROR lines (one per unreadable metadata file) would reach the real stderr,
  where pytest's log capture cannot hide them."""
  copy = tmp_path / "corrupt"
  shutil.copytree(finished_run, copy)
  rng = random.Random(0)
  for root, _, files in os.walk(copy / "checkpoints"):
    for name in files:
      path = os.path.join(root, name)
      size = max(os.path.getsize(path) // 3, 1)
      with open(path, "r+b") as f:
        if damage == "truncated":
          f.truncate(size)
        else:
          f.write(bytes(rng.randrange(256) for _ in range(size)))
  res = run_ppo_cli("--resume", copy)
  assert res.returncode == 2
  err = res.stderr.splitlines()
  assert len(err) == 1, res.stderr
  assert err[0].startswith(f"error: checkpoint 1024 in {copy}/checkpoints is corrupt or incompatible"), err[0]


def test_resume_refuses_a_non_finite_config(finished_run, tmp_path, capsys):
  copy = tmp_path / "nan"
  shutil.copytree(finished_run, copy)
  config = json.loads((copy / "config.json").read_text())
  config["learning_rate"] = float("nan")  # json writes NaN
  (copy / "config.json").write_text(json.dumps(config))
  _fails(["--resume", str(copy)], capsys, "--learning-rate must be a finite number, got nan")


def test_resume_incompatible_checkpoint(finished_run, tmp_path, capsys):
  copy = tmp_path / "incompatible"
  shutil.copytree(finished_run, copy)
  config = json.loads((copy / "config.json").read_text())
  config["num_envs"] = 8  # the saved state holds per-env return accumulators for 4 envs
  (copy / "config.json").write_text(json.dumps(config))
  _fails(["--resume", str(copy)], capsys, "checkpoint 1024")


@pytest.mark.parametrize("flag, value, line", [
    ("--total-timesteps", "lots", "error: --total-timesteps: expected an integer, got 'lots'"),
    ("--learning-rate", "nan", "error: --learning-rate must be a finite number, got nan"),
])
def test_bad_value_is_one_plain_line(run_ppo_cli, tmp_path, flag, value, line):
  """The whole of stderr, in a fresh interpreter, before anything is written."""
  res = run_ppo_cli("--env", "CartPole-v1", flag, value, "--run-dir", tmp_path / "r")
  assert (res.returncode, res.stderr) == (2, line + "\n")
  assert not (tmp_path / "r").exists()


@dataclasses.dataclass(frozen=True)
class _Knobs:
  rate: float = 1.0
  """A float that no check of its own looks at."""
  mode: Literal["fast", "slow"] = "fast"
  """A choice."""


@dataclasses.dataclass(frozen=True)
class _Toy:
  knobs: _Knobs = dataclasses.field(default_factory=_Knobs)
  count: int = 1


@pytest.mark.parametrize("argv, line", [
    (["--rate", "nan"], "error: --rate must be a finite number, got nan"),
    (["--rate", "-inf"], "error: --rate must be a finite number, got -inf"),
    (["--mode", "medium"], "error: --mode: expected one of fast, slow, got 'medium'"),
    (["--count", "1e3"], "error: --count: expected an integer, got '1e3'"),
])
def test_parse_describes_any_config(argv, line, capsys):
  """Groups nested as in the trainers' composed configs, flags flat: NaN is refused in a float field whatever its
  group checks, and a choice lists its options."""
  with pytest.raises(SystemExit) as exc:
    parse(tyro.conf.OmitArgPrefixes[_Toy], argv, "toy")
  assert exc.value.code == 2
  assert capsys.readouterr().err == line + "\n"
  assert parse(tyro.conf.OmitArgPrefixes[_Toy], ["--rate", "0.5"], "toy").knobs.rate == 0.5


def test_checks_refuse_nan():
  nan, inf = float("nan"), float("inf")
  with pytest.raises(UsageError, match="--rate must be a finite number, got nan"):
    check_finite(_Toy(knobs=_Knobs(rate=nan)))
  for value in (nan, inf, -inf):  # NaN fails every comparison, so `value < 0` alone lets it through
    with pytest.raises(UsageError, match=f"--rate must be a finite number, got {value}"):
      check_positive(_Knobs(rate=value), "rate")
    with pytest.raises(UsageError, match=f"--rate must be a finite number, got {value}"):
      check_range(_Knobs(rate=value), "rate", 0.0, 1.0)
  check_finite(_Toy())
  check_positive(_Knobs(), "rate")
  check_range(_Knobs(), "rate", 0.0, 1.0)


def test_cli_exit_code_and_no_traceback(run_ppo_cli, tmp_path):
  res = run_ppo_cli("--env", "Pongg-v5", "--run-dir", tmp_path / "r")
  assert res.returncode == 2
  assert res.stderr.strip().count("\n") == 0 and "Traceback" not in res.stderr
  assert not (tmp_path / "r").exists()


def test_help_documents_every_field(run_ppo_cli):
  import dataclasses
  from algorithms import registry
  from harness.config import config_class
  res = run_ppo_cli("--help")
  assert res.returncode == 0
  for group in dataclasses.fields(config_class(registry.get("ppo"))):  # every group's every field, grouped
    assert f"{group.name.replace('_', '-')} options" in res.stdout
    for field in dataclasses.fields(group.default):
      assert "--" + field.name.replace("_", "-") in res.stdout
  assert "Surrogate clipping epsilon" in res.stdout
