"""`--num-seeds K`: K agents vmapped in one process over one envpool repeat K single-seed runs."""
import os

import numpy as np
import orbax.checkpoint as ocp
import pytest

import run_ppo
from conftest import read_csv

QUIET = ["--no-progress"]


def _final_state(run_dir):
  ckpt = os.path.join(run_dir, "checkpoints")
  step = max(int(s) for s in os.listdir(ckpt) if s.isdigit())
  with ocp.StandardCheckpointer() as c:
    return c.restore(os.path.join(ckpt, str(step), "state"))


def _leaves(tree):
  import jax
  return jax.tree_util.tree_flatten_with_path(tree)[0]


@pytest.mark.parametrize("env,extra", [
    ("CartPole-v1", ["--total-timesteps", "1536", "--eval-every", "512", "--eval-episodes", "2"]),
    # Continuous actions with the per-agent observation and return normalisers. Pendulum's smooth dynamics keep
    # last-bit differences small; MuJoCo's contacts amplify them to O(1) within ~50 steps (HalfCheetah: 4e-9 in the
    # actions at step 0, 1.5 in the observations at step 64), so a MuJoCo comparison would measure chaos.
    ("Pendulum-v1", ["--total-timesteps", "1024", "--num-envs", "2", "--num-steps", "128", "--normalize-obs", "True",
                     "--normalize-reward", "True", "--eval-every", "512", "--eval-episodes", "1"]),
])
def test_num_seeds_repeats_single_seed_runs(tmp_path, env, extra):
  """Tolerance: parameters and losses agree to rtol 1e-4 / atol 1e-6 (vmapped and single matmuls may round
  differently in the last bits); episode statistics and evaluations, which follow from the sampled actions, exactly
  on CartPole and to rtol 1e-3 on Pendulum, whose continuous actions carry those last bits into the physics."""
  multi = tmp_path / "multi"
  assert run_ppo.main(["--env", env, "--seed", "3", "--num-seeds", "2", "--run-dir", str(multi)] + extra + QUIET) == 0
  num_envs = 4 if env == "CartPole-v1" else 2
  seeds = [3, 3 + num_envs]  # agent j: seed + j * num_envs
  assert sorted(os.listdir(multi)) == ["checkpoints", "config.json", "result.json", "seed3", f"seed{seeds[1]}"]
  stacked = _final_state(str(multi))
  for j, seed in enumerate(seeds):
    single = tmp_path / f"single{seed}"
    assert run_ppo.main(["--env", env, "--seed", str(seed), "--run-dir", str(single)] + extra + QUIET) == 0
    rows_m, rows_s = read_csv(multi / f"seed{seed}" / "progress.csv"), read_csv(single / "progress.csv")
    assert [r["global_step"] for r in rows_m] == [r["global_step"] for r in rows_s]
    for rm, rs in zip(rows_m, rows_s):
      for col in ("episode_return", "episode_length", "eval_return"):
        if rs[col] == "":
          assert rm[col] == ""
        elif env == "CartPole-v1":
          assert rm[col] == rs[col], col
        else:
          assert float(rm[col]) == pytest.approx(float(rs[col]), rel=1e-3, nan_ok=True), col
      for col in ("policy_loss", "value_loss", "entropy", "grad_norm"):
        assert float(rm[col]) == pytest.approx(float(rs[col]), rel=1e-4, abs=1e-6), col
    want = _final_state(str(single))
    for (path, a), (_, b) in zip(_leaves(want), _leaves(stacked)):
      np.testing.assert_allclose(np.asarray(b)[j], a, rtol=1e-4, atol=1e-6, err_msg=str(path))


def test_num_seeds_resume(tmp_path):
  """A stopped multi-seed run resumes all its agents from the one checkpoint, each agent's log continued."""
  run_dir = tmp_path / "run"
  args = ["--env", "CartPole-v1", "--num-seeds", "2", "--eval-every", "0", "--checkpoint-every", "512"] + QUIET
  assert run_ppo.main(args + ["--total-timesteps", "1024", "--run-dir", str(run_dir)]) == 0
  # Extend the run: resume refuses changed flags, so edit the saved config as a user continuing a run would.
  import json
  cfg = json.loads((run_dir / "config.json").read_text())
  cfg["total_timesteps"] = 2048
  (run_dir / "config.json").write_text(json.dumps(cfg))
  assert run_ppo.main(["--resume", str(run_dir)] + QUIET) == 0
  for seed in (1, 5):
    rows = read_csv(run_dir / f"seed{seed}" / "progress.csv")
    assert [int(r["global_step"]) for r in rows] == [512, 1024, 1536, 2048]
  assert _final_state(str(run_dir))["global_step"].tolist() == [2048, 2048]


def test_num_seeds_bad_combination(run_ppo_cli, tmp_path):
  r = run_ppo_cli("--env", "CartPole-v1", "--num-seeds", "2", "--env-groups", "2", "--run-dir", tmp_path / "x")
  assert r.returncode == 2 and "--env-groups" in r.stderr and len(r.stderr.strip().splitlines()) == 1
  assert not (tmp_path / "x").exists()
