"""Plot runs: training and greedy-evaluation return against agent steps and wall time, several runs overlaid.

    python -m benchmarks.plot runs/HalfCheetah-v4__ppo__seed1__* runs/HalfCheetah-v4__ppo__seed2__*
    python -m benchmarks.plot RUN_DIR --out halfcheetah.png

A multi-seed run directory contributes one line per seed. Training return is the mean raw return of the last 100
finished training games; evaluation return the mean of the run's periodic greedy games.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from benchmarks.rundata import RunDataError, load_all


def plot_runs(agents, out: str, title: str | None = None) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(2, 2, figsize=(11, 7), sharey="row")
  colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
  for i, a in enumerate(agents):
    color = colors[i % len(colors)]
    kw = dict(color=color, lw=1.2, label=a.label)
    axes[0, 0].plot(a.steps, a.train_return, **kw)
    axes[0, 1].plot(a.walltime / 60, a.train_return, **kw)
    axes[1, 0].plot(a.eval_steps, a.eval_return, marker=".", **kw)
    axes[1, 1].plot(a.eval_walltime / 60, a.eval_return, marker=".", **kw)
  axes[0, 0].set_ylabel("training return (last 100 games)")
  axes[1, 0].set_ylabel("greedy evaluation return")
  for row in axes:
    row[0].set_xlabel("agent steps")
    row[1].set_xlabel("wall time (min)")
    for ax in row:
      ax.grid(alpha=0.3)
  axes[0, 0].legend(fontsize=7, loc="best")
  envs = sorted({a.env for a in agents})
  fig.suptitle(title or ", ".join(envs))
  fig.tight_layout()
  fig.savefig(out, dpi=90)
  plt.close(fig)


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m benchmarks.plot", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
  parser.add_argument("--out", default="plot.png", help="PNG to write (default plot.png)")
  parser.add_argument("--title", default=None)
  args = parser.parse_args(argv)
  if not args.out.lower().endswith(".png"):
    parser.exit(2, f"error: --out {args.out} must end in .png\n")
  try:
    agents = load_all(args.run_dirs)
  except RunDataError as e:
    parser.exit(2, f"error: {e}\n")
  if not any(len(a.steps) for a in agents):
    parser.exit(2, "error: no logged rows in these run directories yet\n")
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  plot_runs(agents, args.out, args.title)
  finals = [f"{a.label}: {a.train_return[~np.isnan(a.train_return)][-1]:.1f}" for a in agents
            if np.any(~np.isnan(a.train_return))]
  print(f"wrote {args.out} ({len(agents)} runs){'; last training return ' + ', '.join(finals) if finals else ''}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
