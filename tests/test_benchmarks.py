"""benchmarks.run (skip, resume, budget), benchmarks.report and benchmarks.plot on tiny real runs made here."""
import contextlib
import csv
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

from benchmarks import plot, report
from benchmarks import run as bench_run
from conftest import ROOT
from harness.checkpoint import complete_steps

SUITE = ["ppo_classic", "--envs", "CartPole-v1", "--seeds", "2", "--total-timesteps", "1024"]


@pytest.fixture(scope="module")
def suite_root(tmp_path_factory):
  root = tmp_path_factory.mktemp("bench")
  # one process per seed, so the grid has two jobs, one after the other; what the grid printed goes to grid.txt
  with open(root / "grid.txt", "w") as out, contextlib.redirect_stdout(out):
    assert bench_run.main(SUITE + ["--seeds-per-process", "1", "--root", str(root)]) == 0
  return root


def test_a_finished_job_reports_its_own_time(suite_root):
  """Each `done` line gives the job's seconds and the grid's: the second job's are its own, not the grid's so far."""
  done = re.findall(r"done   (\S+) \(exit 0, (\d+)s, grid at (\d+)s; log ", (suite_root / "grid.txt").read_text())
  assert [name for name, _, _ in done] == ["CartPole-v1__seed1", "CartPole-v1__seed10001"], done
  (_, first, first_at), (_, second, second_at) = [(n, int(a), int(b)) for n, a, b in done]
  assert first <= first_at and second < second_at and abs(first + second - second_at) <= 5, done


def _jobs(root):
  d = root / "ppo_classic@1024"
  return d / "CartPole-v1__seed1", d / "CartPole-v1__seed10001"


def test_rerun_skips_finished_and_resumes_interrupted(suite_root, capsys):
  first, second = _jobs(suite_root)
  assert (first / "result.json").is_file() and (second / "result.json").is_file()
  capsys.readouterr()
  os.remove(second / "result.json")  # as if killed after its last checkpoint
  assert bench_run.main(SUITE + ["--seeds-per-process", "1", "--root", str(suite_root)]) == 0
  out = capsys.readouterr().out
  assert "skip   CartPole-v1__seed1 (done)" in out
  assert "resume  CartPole-v1__seed10001: " in out and "--resume" in out
  assert (second / "result.json").is_file()
  assert bench_run.main(SUITE + ["--seeds-per-process", "1", "--root", str(suite_root)]) == 0
  assert capsys.readouterr().out.count("skip") == 2


def test_budget_interrupts_and_rerun_finishes(tmp_path, capsys):
  args = ["ppo_classic", "--envs", "CartPole-v1", "--seeds", "1", "--total-timesteps", "16384", "--root",
          str(tmp_path)]
  assert bench_run.main(args + ["--budget-hours", "0.0005"]) == 3  # 1.8 s: stopped while running
  assert "budget reached" in capsys.readouterr().out
  run_dir = tmp_path / "ppo_classic@16384" / "CartPole-v1__seed1"
  assert not (run_dir / "result.json").exists()
  steps = complete_steps(str(run_dir))  # none if stopped while compiling
  kept = run_dir / bench_run.KEPT
  assert (sorted(os.listdir(kept)) if kept.exists() else []) == [str(s) for s in steps[-1:]]
  assert bench_run.main(args) == 0
  assert (run_dir / "result.json").is_file()
  assert not kept.exists()  # a finished run keeps no checkpoint in git


def test_an_unfinished_run_continues_on_a_fresh_clone(tmp_path, capsys):
  """What git carries to another machine: an unfinished run's latest checkpoint under kept_checkpoint/. A clone
  without it, or behind it (an older checkpoint left from an earlier session), gets it back and trains on from it;
  an older checkpoint here never replaces a newer kept one."""
  args = ["ppo_classic", "--envs", "CartPole-v1", "--seeds", "1", "--total-timesteps", "3072", "--root",
          str(tmp_path)]
  assert bench_run.main(args + ["--", "--checkpoint-every", "1024"]) == 0
  run_dir = tmp_path / "ppo_classic@3072" / "CartPole-v1__seed1"
  assert complete_steps(str(run_dir)) == [1024, 2048, 3072] and not (run_dir / bench_run.KEPT).exists()
  # as if killed after its checkpoint at 2,048 steps, a stop the grid did not see
  os.remove(run_dir / "result.json")
  shutil.rmtree(run_dir / "checkpoints" / "3072")
  capsys.readouterr()
  assert bench_run.main(args + ["--keep-only"]) == 0
  assert "CartPole-v1__seed1: checkpoint 2048 kept in kept_checkpoint/" in capsys.readouterr().out
  assert os.listdir(run_dir / bench_run.KEPT) == ["2048"]
  shutil.rmtree(run_dir / "checkpoints" / "2048")  # this machine holds only the older 1,024
  job = bench_run.Job("CartPole-v1", 1, 1, str(run_dir))
  assert bench_run.keep_checkpoint(job) == 2048 and os.listdir(run_dir / bench_run.KEPT) == ["2048"]
  assert bench_run.main(args + ["--dry-run"]) == 0
  assert capsys.readouterr().out.startswith("resume ")
  assert bench_run.main(args) == 0
  out = capsys.readouterr().out
  assert "kept   CartPole-v1__seed1: checkpoint 2048 put back from kept_checkpoint/" in out and "--resume" in out
  with open(run_dir / "progress.csv") as f:
    steps = [int(row["global_step"]) for row in csv.DictReader(f)]
  assert steps == [512 * i for i in range(1, 7)]  # every step once: cut back to 2,048 and trained on from there
  assert complete_steps(str(run_dir)) == [1024, 2048, 3072]
  assert (run_dir / "result.json").is_file() and not (run_dir / bench_run.KEPT).exists()


def test_sigterm_to_the_grid_stops_and_keeps_its_jobs(tmp_path):
  """A session or terminal ending sends the grid itself SIGTERM (or SIGHUP): its jobs checkpoint, their latest
  checkpoint is kept, and it exits as on Ctrl-C."""
  run_dir = tmp_path / "ppo_classic@1000000" / "CartPole-v1__seed1"
  cmd = [sys.executable, "-m", "benchmarks.run", "ppo_classic", "--envs", "CartPole-v1", "--seeds", "1",
         "--total-timesteps", "1000000", "--root", str(tmp_path), "--", "--checkpoint-every", "2048"]
  grid = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  deadline = time.time() + 120
  while time.time() < deadline and not complete_steps(str(run_dir)):
    time.sleep(0.5)
  grid.send_signal(signal.SIGTERM)
  out, err = grid.communicate(timeout=120)
  assert grid.returncode == 130, err[-2000:]
  assert "interrupted: running jobs checkpointed" in out and err == ""
  steps = complete_steps(str(run_dir))
  assert steps and os.listdir(run_dir / bench_run.KEPT) == [str(steps[-1])]
  log = (tmp_path / "ppo_classic@1000000" / "CartPole-v1__seed1.log").read_text()
  assert "stopped by SIGTERM: checkpoint at step" in log


def test_git_tracks_a_runs_record_and_kept_checkpoint_only():
  """benchmarks/runs is committed without its heavy parts: the .gitignore rules benchmarks.run relies on."""
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  if subprocess.run(["git", "-C", repo, "rev-parse"], capture_output=True).returncode != 0:
    pytest.skip("not a git checkout")
  run = "benchmarks/runs/ppo_pong/Pong-v5__seed1"

  def ignored(path):
    return subprocess.run(["git", "-C", repo, "check-ignore", "--no-index", "-q", path]).returncode == 0

  for path in (f"{run}/config.json", f"{run}/progress.csv", f"{run}/result.json", f"{run}.log",
               f"{run}/eval/500000.json", f"{run}/seed1/progress.csv", f"{run}/kept_checkpoint/500000/meta/x"):
    assert not ignored(path), path
  for path in (f"{run}/checkpoints/500000/state/x", f"{run}/events.out.tfevents.1796159031.vm",
               f"{run}/eval/videos/500000.mp4", f"{run}/kept_checkpoint.partial/500000/x",
               f"{run}/kept_checkpoint.old/1/x", f"{run}/result.json.tmp", f"{run}/wandb/run-1/files/x",
               "runs/x/config.json"):
    assert ignored(path), path


def test_report_builds_tables_and_figure(suite_root, tmp_path, capsys):
  out = tmp_path / "out"
  assert report.main(["--root", str(suite_root), "--out", str(out)]) == 0
  text = (out / "ppo_classic@1024.md").read_text()
  assert "shortened from 200,000" in text and "Protocol:" in text and "Hardware:" in text
  row = next(line for line in text.splitlines() if line.startswith("| CartPole-v1 | 2 |"))
  assert "| 475 |" in row  # the reference column
  assert "| CartPole-v1 | 1 process per seed | 2 |" in text
  assert (out / "ppo_classic@1024.png").stat().st_size > 5000
  results = tmp_path / "RESULTS.md"
  results.write_text("# Results\n\nkept\n")
  report.update_results("ppo_classic@1024", text, path=str(results))
  report.update_results("ppo_classic@1024", text, path=str(results))  # replaced, not appended twice
  content = results.read_text()
  assert content.count("<!-- report:ppo_classic@1024 -->") == 1 and "kept" in content


def test_report_shows_where_unfinished_runs_stand(suite_root, tmp_path):
  """A suite whose runs were stopped (no result.json): the row says so, with their latest return and its step, and
  no verdict; the figure still draws their curves."""
  import shutil
  root = tmp_path / "runs"
  shutil.copytree(suite_root / "ppo_classic@1024", root / "ppo_classic@1024")
  for run_dir in _jobs(root):
    os.remove(run_dir / "result.json")
  out = tmp_path / "out"
  assert report.main(["--root", str(root), "--out", str(out)]) == 0
  row = next(line for line in (out / "ppo_classic@1024.md").read_text().splitlines()
             if line.startswith("| CartPole-v1 |"))
  assert row.startswith("| CartPole-v1 | 0 (+2 unfinished) | ") and "(at 1,024 steps)" in row, row
  assert "min so far" in row and "≥" not in row
  assert "Training time by execution mode: no finished run yet." in (out / "ppo_classic@1024.md").read_text()
  assert (out / "ppo_classic@1024.png").stat().st_size > 5000


def test_time_to_score(suite_root):
  """The first row at or above the target, from the real runs' progress.csv; None where no row reaches it."""
  import numpy as np
  from benchmarks.rundata import find_run_dirs, load_all
  from benchmarks.suites import SUITES
  agents = load_all(find_run_dirs(str(suite_root / "ppo_classic@1024")))
  a = agents[0]
  finite = np.nonzero(~np.isnan(a.train_return))[0]
  i = int(finite[np.argmax(a.train_return[finite])])  # the best row: the first one reaching its value is <= it
  first = int(np.nonzero(a.train_return >= a.train_return[i])[0][0])
  assert report.time_to_score(a, float(a.train_return[i])) == (a.walltime[first], int(a.steps[first]))
  assert report.time_to_score(a, 1e9) is None
  lines = report.score_time_table(SUITES["ppo_classic"], agents)
  row = next(line for line in lines if line.startswith("| CartPole-v1 | 475 |"))
  assert "| 0 of 2 | n/a | n/a |" in row  # 1,024 steps of CartPole reach no 475


def test_mean_std_shows_one_seed_alone():
  assert report.mean_std([43.9], " min") == "43.9 min"  # not "43.9 ± 0.0": one seed has no measured spread
  assert report.mean_std([1.0, 3.0, float("nan")]) == "2.0 ± 1.4"
  assert report.mean_std([float("nan")]) == "n/a"


def test_verdicts():
  assert report.verdict(500, 475) == "≥"
  assert report.verdict(430, 475) == "within 10%"
  assert report.verdict(400, 475) == "below"
  assert report.verdict(-6.0, -5.5) == "within 10%" and report.verdict(-7.0, -5.5) == "below"
  assert report.verdict(1.0, None) == "n/a"


def test_plot(suite_root, tmp_path):
  first, second = _jobs(suite_root)
  out = tmp_path / "p.png"
  assert plot.main([str(first), str(second), "--out", str(out)]) == 0
  assert out.stat().st_size > 5000
  with pytest.raises(SystemExit) as e:
    plot.main([str(tmp_path / "nowhere"), "--out", str(out)])
  assert e.value.code == 2


def test_bad_suite_arguments():
  for args in (["nosuch"], ["ppo_classic", "--envs", "Pong-v5"], ["ppo_classic", "--seeds", "0"]):
    with pytest.raises(SystemExit) as e:
      bench_run.main(args + ["--dry-run"])
    assert e.value.code == 2
