"""Run a benchmark suite's grid of runs: skip finished runs, resume interrupted ones, cap parallel jobs and budget.

    python -m benchmarks.run ppo_mujoco --seeds 3                 # 7 envs x 3 seeds at 1M steps
    python -m benchmarks.run ppo_classic --seeds 3 --jobs 2
    python -m benchmarks.run ppo_atari --seeds 3 --total-timesteps 200000   # a shortened run, labelled as such
    python -m benchmarks.run ppo_mujoco --seeds 3 --budget-hours 1          # stop (resumably) after an hour
    python -m benchmarks.report ppo_mujoco                        # then the tables and figures

Runs go to `--root/SUITE/ENV__seed<S>[x<K>]` (`--root` defaults to benchmarks/runs), one process per job. PPO
trains `--seeds-per-process` seeds (default: all; ppo_atari: 1, since vmapped conv updates are slow on XLA:CPU) in
one process with `--num-seeds`, vmapped over one envpool;
IMPALA runs one process per seed. A job whose directory holds `result.json` is done and skipped; one with a
checkpoint is continued with `--resume`; one without is started afresh. At the budget, running jobs are
interrupted (they checkpoint first) and rerunning the same command continues them. Each job's output goes to a
`.log` file beside its run directory. Flags after `--` are passed to new runs.

Runs outlive the machine. A run that spans sessions rarely gets the same machine back, so the runs under
benchmarks/runs are committed: git tracks each run's config.json, progress.csv, result.json and `.log`, and leaves
out checkpoints/, TensorBoard events and videos. Whenever a job stops unfinished, its latest complete checkpoint is
copied to RUN_DIR/kept_checkpoint/STEP, which git does track; on a fresh clone the same command finds it, puts it
back under checkpoints/ and continues the run (progress.csv is cut back to that step on resume). A finished job's
kept checkpoint is removed. `--keep-only` copies without running anything (for runs stopped some other way).
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

from benchmarks.suites import SUITES, Suite
from harness.checkpoint import DIR as CHECKPOINTS, complete_steps

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_RUNS = os.path.join(ROOT, "benchmarks", "runs")
SEED_STRIDE = 10_000  # first seeds of successive processes; a process's agents use seed + j * num_envs
KEPT = "kept_checkpoint"  # an unfinished run's latest checkpoint, tracked by git (checkpoints/ is not)


@dataclasses.dataclass
class Job:
  env: str
  seed: int
  num_seeds: int
  run_dir: str

  @property
  def name(self) -> str:
    return os.path.basename(self.run_dir)


def suite_dir(root: str, suite_name: str, suite: Suite, total_timesteps: int | None) -> str:
  """Shortened runs live apart from full ones, so a report never mixes them."""
  if total_timesteps is None or total_timesteps == suite.total_timesteps:
    return os.path.join(root, suite_name)
  return os.path.join(root, f"{suite_name}@{total_timesteps}")


def plan(suite: Suite, directory: str, envs: list[str], seeds: int, per_process: int, seed: int) -> list[Job]:
  jobs = []
  for env in envs:
    left, p = seeds, 0
    while left > 0:
      k = min(per_process, left)
      s = seed + p * SEED_STRIDE
      name = f"{env}__seed{s}" + (f"x{k}" if k > 1 else "")
      jobs.append(Job(env, s, k, os.path.join(directory, name)))
      left, p = left - k, p + 1
  return jobs


def status(job: Job) -> str:
  """'done', 'resume' (has a checkpoint, or a kept one), 'restart' (started, no checkpoint) or 'new'."""
  try:
    with open(os.path.join(job.run_dir, "result.json")) as f:
      json.load(f)
    return "done"
  except (OSError, ValueError):
    pass  # absent, or cut short: not done
  if complete_steps(job.run_dir) or kept_step(job) is not None:
    return "resume"
  return "restart" if os.path.exists(job.run_dir) else "new"


def kept_step(job: Job) -> int | None:
  """The step of the job's kept checkpoint, or None."""
  directory = os.path.join(job.run_dir, KEPT)
  steps = [int(name) for name in os.listdir(directory) if name.isdigit()] if os.path.isdir(directory) else []
  return max(steps) if steps else None


def keep_checkpoint(job: Job) -> int | None:
  """Copies an unfinished job's latest complete checkpoint to RUN_DIR/kept_checkpoint/STEP when it is newer than the
  kept one, and returns the kept step; removes a finished job's kept checkpoint. None when nothing is kept.

  NOTE: the new copy is made aside and renamed in before the old one is deleted, so a kill at any point leaves a
  whole kept checkpoint (the old or the new) and at most a git-ignored `kept_checkpoint.partial/`."""
  kept = os.path.join(job.run_dir, KEPT)
  if status(job) == "done":
    shutil.rmtree(kept, ignore_errors=True)
    return None
  steps, step = complete_steps(job.run_dir), kept_step(job)
  if not steps or (step is not None and step >= steps[-1]):
    return step  # nothing newer here (a fresh clone before its first save, or one behind what git carried)
  partial, old = kept + ".partial", kept + ".old"
  for leftover in (partial, old):
    shutil.rmtree(leftover, ignore_errors=True)
  shutil.copytree(os.path.join(job.run_dir, CHECKPOINTS, str(steps[-1])), os.path.join(partial, str(steps[-1])))
  if os.path.isdir(kept):
    os.rename(kept, old)
  os.rename(partial, kept)
  shutil.rmtree(old, ignore_errors=True)
  return steps[-1]


def restore_kept_checkpoint(job: Job) -> int | None:
  """Puts the job's kept checkpoint back under checkpoints/ when this machine has none as recent (a clone: git
  leaves checkpoints/ out), so `--resume` continues from it; returns that step, or None.

  NOTE: copied under orbax's temporary-directory name and renamed when whole: a kill during the copy leaves what
  orbax takes for an unfinished save (and removes), never a step it would take for complete."""
  step = kept_step(job)
  steps = complete_steps(job.run_dir)
  if step is None or (steps and steps[-1] >= step):
    return None
  directory = os.path.join(job.run_dir, CHECKPOINTS)
  partial = os.path.join(directory, f"{step}.orbax-checkpoint-tmp-kept")
  shutil.rmtree(partial, ignore_errors=True)
  shutil.copytree(os.path.join(job.run_dir, KEPT, str(step)), partial)
  os.rename(partial, os.path.join(directory, str(step)))
  return step


def _keep(job: Job, out) -> None:
  """keep_checkpoint, with a failed copy (a full disk) said in one line instead of ending the grid."""
  try:
    keep_checkpoint(job)
  except OSError as e:
    print(f"warning: {job.name}: its latest checkpoint was not copied to {KEPT}/ ({e})", file=out, flush=True)


def command(suite: Suite, job: Job, state: str, total_timesteps: int | None, extra: list[str]) -> list[str]:
  script = os.path.join(ROOT, f"run_{suite.algo}.py")
  if state == "resume":
    return [sys.executable, script, "--resume", job.run_dir, "--no-progress"]
  cmd = [sys.executable, script, "--env", job.env, "--seed", str(job.seed), "--run-dir", job.run_dir,
         "--total-timesteps", str(total_timesteps or suite.total_timesteps), "--no-progress", *suite.flags, *extra]
  if job.num_seeds > 1:
    cmd += ["--num-seeds", str(job.num_seeds)]
  if state == "restart":
    cmd.append("--overwrite")
  return cmd


@contextlib.contextmanager
def _signal_handlers(handler, signums):
  """`handler` for `signums` within the block (main thread only), the previous handlers after it."""
  if threading.current_thread() is not threading.main_thread():
    yield
    return
  previous = {signum: signal.signal(signum, handler) for signum in signums}
  try:
    yield
  finally:
    for signum, old in previous.items():
      signal.signal(signum, old)


def _ctrl_c(signum, frame):
  raise KeyboardInterrupt


@dataclasses.dataclass
class Running:
  """A started job: its process, the open log its output goes to, and when it started (time.time())."""
  job: Job
  proc: subprocess.Popen
  log: object
  started: float


def _stop(running: list[Running], grace_s: float, out) -> None:
  """Stops running jobs with SIGTERM (the trainers checkpoint first), kills any still alive after `grace_s`, and
  keeps each one's latest checkpoint.

  NOTE: SIGTERM, not SIGINT: a process started in the background of a non-interactive shell (`... &`, nohup) inherits
  SIGINT as ignored, and its trainers would miss one sent before their own handler is installed (set-up)."""
  with _signal_handlers(signal.SIG_IGN, (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)):  # a second Ctrl-C waits
    for r in running:
      if r.proc.poll() is None:
        r.proc.send_signal(signal.SIGTERM)
    deadline = time.time() + grace_s
    for r in running:
      try:
        r.proc.wait(timeout=max(deadline - time.time(), 0.1))
      except subprocess.TimeoutExpired:
        r.proc.kill()
        r.proc.wait()
      r.log.close()
    for r in running:
      _keep(r.job, out)


def run_grid(suite: Suite, jobs: list[Job], *, parallel: int, budget_s: float | None, total_timesteps: int | None,
             extra: list[str], out=None, grace_s: float = 120.0) -> int:
  """Runs the jobs, at most `parallel` at a time. Returns 0 when all are done, 1 if any failed, 3 at the budget,
  130 on Ctrl-C (running jobs are interrupted and checkpoint first)."""
  out = out or sys.stdout
  t0 = time.time()
  todo = []
  for job in jobs:
    state = status(job)
    if state == "done":
      print(f"skip   {job.name} (done)", file=out)
    else:
      todo.append((job, state))
  running: list[Running] = []
  failed = []
  try:
    while todo or running:
      while todo and len(running) < parallel:
        job, state = todo.pop(0)
        try:
          restored = restore_kept_checkpoint(job) if state == "resume" else None
        except OSError as e:
          print(f"FAILED {job.name}: its kept checkpoint could not be put back ({e})", file=out, flush=True)
          failed.append(job)
          continue
        if restored is not None:
          print(f"kept   {job.name}: checkpoint {restored} put back from {KEPT}/", file=out)
        os.makedirs(os.path.dirname(job.run_dir), exist_ok=True)
        log = open(job.run_dir + ".log", "a")
        cmd = command(suite, job, state, total_timesteps, extra)
        print(f"{'resume' if state == 'resume' else 'start'}  {job.name}: {' '.join(cmd[1:])}", file=out,
              flush=True)
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        running.append(Running(job, proc, log, time.time()))
      time.sleep(0.5)
      for r in list(running):
        if r.proc.poll() is None:
          continue
        running.remove(r)
        r.log.close()
        _keep(r.job, out)
        ok = r.proc.returncode == 0 and status(r.job) == "done"
        now = time.time()
        print(f"{'done' if ok else 'FAILED'}   {r.job.name} (exit {r.proc.returncode}, {now - r.started:.0f}s, "
              f"grid at {now - t0:.0f}s; log {r.job.run_dir}.log)", file=out, flush=True)
        if not ok:
          failed.append(r.job)
      if budget_s is not None and time.time() - t0 > budget_s and (todo or running):
        _stop(running, grace_s, out)
        print(f"budget reached after {time.time() - t0:.0f}s: {len(todo) + len(running)} runs not finished; run "
              f"the same command again to continue them", file=out)
        return 3
  except KeyboardInterrupt:
    _stop(running, grace_s, out)
    print("interrupted: running jobs checkpointed; run the same command again to continue", file=out)
    return 130
  return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  extra = []
  if "--" in argv:
    i = argv.index("--")
    argv, extra = argv[:i], argv[i + 1:]
  parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("suite", choices=sorted(SUITES))
  parser.add_argument("--seeds", type=int, default=3, help="seeds per env (default 3)")
  parser.add_argument("--seed", type=int, default=1, help="first seed (default 1)")
  parser.add_argument("--seeds-per-process", type=int, default=None,
                      help="PPO: seeds vmapped in one process (default: all; ppo_atari: 1); IMPALA: always 1")
  parser.add_argument("--envs", default=None, help="comma-separated subset of the suite's envs")
  parser.add_argument("--total-timesteps", type=int, default=None,
                      help="shorten (or lengthen) every run; such runs go to SUITE@STEPS and are labelled")
  parser.add_argument("--jobs", type=int, default=1, help="runs at the same time (default 1)")
  parser.add_argument("--budget-hours", type=float, default=None, help="interrupt everything after this long")
  parser.add_argument("--root", default=DEFAULT_RUNS, help="where suites' run directories go")
  parser.add_argument("--dry-run", action="store_true", help="print the plan and exit")
  parser.add_argument("--keep-only", action="store_true",
                      help=f"copy each unfinished run's latest checkpoint to RUN_DIR/{KEPT}/ (tracked by git) and exit")
  args = parser.parse_args(argv)
  suite = SUITES[args.suite]
  envs = suite.envs if args.envs is None else tuple(args.envs.split(","))
  unknown = [e for e in envs if e not in suite.envs]
  if unknown:
    parser.exit(2, f"error: --envs {','.join(unknown)} not in suite {args.suite} ({', '.join(suite.envs)})\n")
  for name in ("seeds", "jobs", "seeds_per_process", "total_timesteps"):
    value = getattr(args, name)
    if value is not None and value < 1:
      parser.exit(2, f"error: --{name.replace('_', '-')} must be positive, got {value}\n")
  if args.budget_hours is not None and args.budget_hours <= 0:
    parser.exit(2, f"error: --budget-hours must be positive, got {args.budget_hours}\n")
  per_process = 1 if suite.algo == "impala" else (args.seeds_per_process or suite.seeds_per_process or args.seeds)
  directory = suite_dir(args.root, args.suite, suite, args.total_timesteps)
  jobs = plan(suite, directory, list(envs), args.seeds, per_process, args.seed)
  if args.keep_only:
    for job in jobs:
      step = keep_checkpoint(job)
      print(f"{job.name}: " + (f"checkpoint {step} kept in {KEPT}/" if step is not None else f"{status(job)}, "
                                "no checkpoint kept"))
    return 0
  if args.dry_run:
    for job in jobs:
      print(f"{status(job):8s}{' '.join(command(suite, job, status(job), args.total_timesteps, extra))}")
    return 0
  budget = None if args.budget_hours is None else args.budget_hours * 3600
  with _signal_handlers(_ctrl_c, (signal.SIGTERM, signal.SIGHUP)):  # a session or terminal ending: as Ctrl-C
    return run_grid(suite, jobs, parallel=args.jobs, budget_s=budget, total_timesteps=args.total_timesteps,
                    extra=extra)


if __name__ == "__main__":
  sys.exit(main())
