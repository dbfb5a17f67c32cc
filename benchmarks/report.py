"""Turn a suite's run directories into tables and learning-curve figures.

    python -m benchmarks.report                       # every suite found under benchmarks/runs
    python -m benchmarks.report ppo_mujoco --update-results   # also refresh its block in benchmarks/RESULTS.md

For each suite (and each shortened variant SUITE@STEPS) it writes benchmarks/results/<suite>.md and .png:
  * final return per env, mean +- std over finished seeds: training return (mean of each seed's last 100 training
    games) and greedy evaluation return (each seed's last evaluation), wall time, steps/s and hardware, with the
    published reference columns and a verdict (>=, within 10%, below) of the training return against the suite's
    main reference; shortened runs get no verdict; an env whose runs are all unfinished (stopped or running) shows
    where they stand, at which step, and no verdict;
  * time to score: per env and target return (Pong 18, else the main reference's level), the first wall time and
    agent step at which each seed's training return reaches it, mean +- std over seeds, beside the reference's time
    and hardware;
  * learning curves, one column per env: mean and +-std band over seeds of the training return against agent
    steps, and each seed's against wall time (unfinished runs to where they stand, counted in the title);
  * the training-time table: per env and execution mode (seeds vmapped in one process, one process per seed), wall
    time per process and per seed, agent steps/s.
The protocol is stated under every table.
"""
from __future__ import annotations

import argparse
import collections
import os
import re
import sys
import warnings

import numpy as np

from benchmarks.rundata import AgentRun, find_run_dirs, load_all
from benchmarks.suites import SOURCES, SUITES, Suite

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_RUNS = os.path.join(ROOT, "benchmarks", "runs")
DEFAULT_OUT = os.path.join(ROOT, "benchmarks", "results")
RESULTS_MD = os.path.join(ROOT, "benchmarks", "RESULTS.md")


def final(values: np.ndarray) -> float:
  finite = values[~np.isnan(values)]
  return float(finite[-1]) if finite.size else float("nan")


def mean_std(values: list[float], unit: str = "") -> str:
  """Mean ± sample std over seeds; one seed's value alone (a std of one value would read as a measured 0)."""
  values = [v for v in values if not np.isnan(v)]
  if not values:
    return "n/a"
  if len(values) == 1:
    return f"{values[0]:,.1f}{unit}"
  return f"{np.mean(values):,.1f} ± {np.std(values, ddof=1):,.1f}{unit}"


def verdict(value: float, reference) -> str:
  if reference is None or np.isnan(value):
    return "n/a"
  if value >= reference:
    return "≥"
  return "within 10%" if value >= reference - 0.1 * abs(reference) else "below"


def _fmt(x) -> str:
  return "–" if x is None else f"{x:g}"


def mode(agent: AgentRun) -> str:
  k = int(agent.config.get("num_seeds", 1))
  return f"{k} seeds vmapped in 1 process" if k > 1 else "1 process per seed"


def suite_report(name: str, suite: Suite, agents: list[AgentRun], steps: int, figure: str | None) -> str:
  """The suite's markdown: results table, protocol, references, training-time table, figure link (if any)."""
  shortened = steps != suite.total_timesteps
  by_env = collections.OrderedDict((env, [a for a in agents if a.env == env]) for env in suite.envs)
  refs = list(suite.references)
  lines = [f"### `{name}`: {suite.algo.upper()}, {steps:,} agent steps per run"
           + (f" (shortened from {suite.total_timesteps:,}: not comparable with the references)" if shortened else ""),
           ""]
  header = ["env", "seeds", "training return", "greedy eval", "wall time / process", "steps/s / process"]
  header += refs + ([f"vs {suite.verdict_against}"] if not shortened else [])
  lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  hardware = set()
  for env, runs in by_env.items():
    done = [a for a in runs if a.finished]
    judged = float("nan")  # the training return the verdict reads: only over the complete set of seeds
    if not runs:
      row = [env, "0 (not run)"] + ["–"] * 4
    elif not done:  # stopped or still running: where the runs stand, marked as such, and no verdict
      row = so_far_row(env, runs)
    else:
      train = [final(a.train_return) for a in done]
      evals = [final(a.eval_return) for a in done]
      results = {a.run_dir: a.result for a in done}
      walls = [r["walltime"] for r in results.values()]
      sps = [r["sps"] for r in results.values()]
      hardware |= {r.get("hardware", "unknown") for r in results.values()}
      row = [env, f"{len(done)}" + (f" (+{len(runs) - len(done)} unfinished)" if len(runs) > len(done) else ""),
             mean_std(train), mean_std(evals),
             f"{np.mean(walls) / 60:.1f} min" if walls else "n/a", f"{np.mean(sps):,.0f}" if sps else "n/a"]
      if len(done) == len(runs) and not all(np.isnan(train)):
        judged = float(np.nanmean(train))
    row += [_fmt(suite.reference(c, env)) for c in refs]
    if not shortened:
      row.append(verdict(judged, suite.reference(suite.verdict_against, env)))  # "n/a" for NaN
    lines.append("| " + " | ".join(row) + " |")
  eval_games = sorted({int(a.config.get("eval_episodes", 0)) for a in agents})
  lines += ["", f"Protocol: {suite.protocol}. Training return: mean raw return of each seed's last 100 training "
            f"games (sampled actions) at the end of training; greedy eval: mean of {'/'.join(map(str, eval_games))} "
            f"greedy games on fresh evaluation envs after the last update; mean ± sample std over seeds. Wall time and "
            f"steps/s are per process (a process trains all its vmapped seeds; steps/s counts every seed's steps), "
            f"evaluations included." + ("" if shortened else f" Verdict: training return against "
                                        f"{suite.verdict_against}."),
            f"Hardware: {'; '.join(sorted(hardware)) or 'n/a'}.", "", "References: " + "; ".join(
                f"{c}: {SOURCES[c]}" for c in refs) + ".", ""]
  lines += score_time_table(suite, agents)
  lines += time_table(agents)
  if figure:
    lines += ["", f"![{name} learning curves]({figure})"]
  return "\n".join(lines) + "\n"


def so_far_row(env: str, runs: list[AgentRun]) -> list[str]:
  """The results row of an env whose runs are all unfinished: each one's latest training and evaluation returns,
  the step they were logged at, and the wall time and steps/s so far."""
  logged = [a for a in runs if len(a.steps)]
  step = max((int(a.steps[-1]) for a in logged), default=0)
  at = f"{step / 1e6:.2f}M" if step >= 1e6 else f"{step:,}"
  walls = [float(a.walltime[-1]) for a in logged]
  sps = [a.steps[-1] / a.walltime[-1] for a in logged if a.walltime[-1] > 0]
  return [env, f"0 (+{len(runs)} unfinished)", f"{mean_std([final(a.train_return) for a in runs])} (at {at} steps)",
          mean_std([final(a.eval_return) for a in runs]), f"{np.mean(walls) / 60:.1f} min so far" if walls else "n/a",
          f"{np.mean(sps):,.0f}" if sps else "n/a"]


def time_to_score(agent: AgentRun, target: float) -> tuple[float, int] | None:
  """(wall time in s, agent step) of the first logged row whose training return (mean of the last 100 games) is
  at least `target`; None if none is yet."""
  hit = np.nonzero(agent.train_return >= target)[0]  # NaN rows compare False
  return None if hit.size == 0 else (float(agent.walltime[hit[0]]), int(agent.steps[hit[0]]))


def score_time_table(suite: Suite, agents: list[AgentRun]) -> list[str]:
  """Per env and target: how many seeds reached it, and their first wall time and agent step (mean ± std over those
  seeds), beside the reference's time and hardware. Unfinished runs count once they reach it."""
  refs = [c for c in suite.reference_times]
  lines = ["Time to score (first log row whose training return, the mean of the last 100 games, reaches the target;"
           " wall time from the run's start, across resumes):", "",
           "| env | target | seeds reached | wall time | agent steps |" + "".join(f" {c} |" for c in refs),
           "|---|---|---|---|---|" + "---|" * len(refs)]
  rows = 0
  for env in suite.envs:
    runs = [a for a in agents if a.env == env and len(a.steps)]
    for target in suite.score_targets(env) if runs else ():
      hits = [t for t in (time_to_score(a, target) for a in runs) if t is not None]
      walls, steps = [w / 60 for w, _ in hits], [s for _, s in hits]
      row = [env, f"{target:g}", f"{len(hits)} of {len(runs)}", mean_std(walls, " min"),
             mean_std([s / 1e6 for s in steps], "M")] + [suite.reference_times[c].get(env, "–") for c in refs]
      lines.append("| " + " | ".join(row) + " |")
      rows += 1
  return lines + [""] if rows else []


def time_table(agents: list[AgentRun]) -> list[str]:
  groups = collections.OrderedDict()
  for a in agents:
    if a.finished:
      groups.setdefault((a.env, mode(a)), {})[a.run_dir] = a
  if not groups:
    return ["Training time by execution mode: no finished run yet."]
  lines = ["Training time by execution mode:", "", "| env | mode | processes | wall time / process | "
           "wall time / seed | agent steps/s / process |", "|---|---|---|---|---|---|"]
  for (env, m), runs in groups.items():
    results = [a.result for a in runs.values()]
    seeds = sum(len(r["seeds"]) for r in results)
    wall = sum(r["walltime"] for r in results)
    lines.append(f"| {env} | {m} | {len(results)} | {wall / len(results) / 60:.1f} min | {wall / seeds / 60:.1f} min "
                 f"| {np.mean([r['sps'] for r in results]):,.0f} |")
  lines += ["", "Ray workers and multi-process learners add rows here once runs made with them are in the suite."]
  return lines


def curves(name: str, suite: Suite, agents: list[AgentRun], path: str) -> bool:
  """Writes the learning-curve figure of the runs, unfinished ones to where they stand (their count in the env's
  title); False (and no file) when none has a logged row. One column per env: the training return against agent
  steps (mean and ±std band over seeds) above the same against wall time (one line per seed, whose wall times
  differ)."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  envs = [e for e in suite.envs if any(a.env == e and len(a.steps) for a in agents)]
  if os.path.isfile(path):
    os.remove(path)
  if not envs:
    return False
  cols = min(4, len(envs))
  blocks = (len(envs) + cols - 1) // cols
  fig, axes = plt.subplots(2 * blocks, cols, figsize=(max(3.2 * cols, 6.4), 2.4 * 2 * blocks), squeeze=False)
  for i, env in enumerate(envs):
    ax, ax_wall = axes[2 * (i // cols), i % cols], axes[2 * (i // cols) + 1, i % cols]
    runs = [a for a in agents if a.env == env and len(a.steps)]
    grid = np.unique(np.concatenate([a.steps for a in runs]))
    ys = np.stack([np.interp(grid, a.steps, a.train_return, left=np.nan, right=np.nan) for a in runs])
    with warnings.catch_warnings():
      warnings.simplefilter("ignore", RuntimeWarning)  # steps before any seed's first finished game
      mean, std = np.nanmean(ys, axis=0), np.nanstd(ys, axis=0)
    ax.plot(grid, mean, lw=1.3)
    ax.fill_between(grid, mean - std, mean + std, alpha=0.25)
    for a in runs:
      ax_wall.plot(a.walltime / 60, a.train_return, lw=1.0, label=f"seed {a.seed}")
    ref = suite.reference(suite.verdict_against, env)
    for a_, xlabel in ((ax, "agent steps"), (ax_wall, "wall time (min)")):
      if ref is not None:
        a_.axhline(ref, color="gray", ls="--", lw=0.8)
      a_.set_xlabel(xlabel, fontsize=7)
      a_.tick_params(labelsize=7)
      a_.grid(alpha=0.3)
    unfinished = sum(not a.finished for a in runs)
    ax.set_title(f"{env} ({len(runs)} seed{'s' if len(runs) > 1 else ''}"
                 f"{f', {unfinished} unfinished' if unfinished else ''})", fontsize=9)
    ax.ticklabel_format(axis="x", style="sci", scilimits=(0, 0))
    if len(runs) <= 5:
      ax_wall.legend(fontsize=6)
  for j in range(len(envs), blocks * cols):
    axes[2 * (j // cols), j % cols].axis("off")
    axes[2 * (j // cols) + 1, j % cols].axis("off")
  fig.suptitle(f"{name}: training return, mean ± std over seeds (dashed: {suite.verdict_against})", fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=70)
  plt.close(fig)
  return True


def dedupe(agents: list[AgentRun]) -> list[AgentRun]:
  """One agent per (env, seed): a seed trained again under another grid layout counts once (finished first)."""
  seen, out = set(), []
  for a in sorted(agents, key=lambda a: not a.finished):
    if (a.env, a.seed) not in seen:
      seen.add((a.env, a.seed))
      out.append(a)
  return out


def update_results(name: str, text: str, path: str = RESULTS_MD) -> None:
  """Replaces (or appends) the block between `<!-- report:NAME -->` and `<!-- /report:NAME -->`."""
  begin, end = f"<!-- report:{name} -->", f"<!-- /report:{name} -->"
  block = f"{begin}\n{text}{end}"
  content = open(path).read() if os.path.isfile(path) else "# Benchmark results\n"
  pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
  content = pattern.sub(lambda _: block, content) if pattern.search(content) else content.rstrip("\n") + "\n\n" + block
  with open(path, "w") as f:
    f.write(content.rstrip("\n") + "\n")


def discover(root: str, names: list[str] | None) -> list[tuple[str, str, int]]:
  """(report name, directory, steps) for each suite directory under root, e.g. ppo_atari@200000."""
  found = []
  for d in sorted(os.listdir(root)) if os.path.isdir(root) else []:
    base, _, steps = d.partition("@")
    if steps and not steps.isdigit():
      continue
    if base in SUITES and (names is None or base in names or d in names) and os.path.isdir(os.path.join(root, d)):
      found.append((d, os.path.join(root, d), int(steps) if steps else SUITES[base].total_timesteps))
  return found


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m benchmarks.report", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("suites", nargs="*", help="suite names (default: every suite with runs)")
  parser.add_argument("--root", default=DEFAULT_RUNS, help="where benchmarks.run put the runs")
  parser.add_argument("--out", default=DEFAULT_OUT, help="where the .md and .png go")
  parser.add_argument("--update-results", action="store_true", help="refresh the suites' blocks in RESULTS.md")
  args = parser.parse_args(argv)
  unknown = [s for s in args.suites if s.partition("@")[0] not in SUITES]
  if unknown:
    parser.exit(2, f"error: unknown suite {', '.join(unknown)} (suites: {', '.join(sorted(SUITES))})\n")
  found = discover(args.root, args.suites or None)
  if not found:
    parser.exit(2, f"error: no suite runs under {args.root}: run python -m benchmarks.run SUITE first\n")
  os.makedirs(args.out, exist_ok=True)
  for name, directory, steps in found:
    suite = SUITES[name.partition("@")[0]]
    agents = dedupe(load_all(find_run_dirs(directory)))
    figure = os.path.join(args.out, f"{name}.png")
    has_figure = curves(name, suite, agents, figure)
    text = suite_report(name, suite, agents, steps, os.path.basename(figure) if has_figure else None)
    with open(os.path.join(args.out, f"{name}.md"), "w") as f:
      f.write(text)
    if args.update_results:
      link = os.path.relpath(figure, os.path.dirname(RESULTS_MD)) if has_figure else None
      update_results(name, suite_report(name, suite, agents, steps, link))
    print(text)
  return 0


if __name__ == "__main__":
  sys.exit(main())
