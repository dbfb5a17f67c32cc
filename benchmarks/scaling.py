"""Scale-out throughput of one setting: Ray workers, jax.distributed processes and learner devices, side by side.

    python -m benchmarks.scaling                                  # PPO on HalfCheetah-v4, 8 envs x 256 steps
    python -m benchmarks.scaling --env Pong-v5 --num-steps 128 --updates 8 --rounds 3
    python -m benchmarks.scaling --algo impala --env Pong-v5      # IMPALA: 2 actors x 16 envs, batch 32

Every variant is the real trainer (`run_ppo.py` / `run_impala.py`) started as it would be by a user, on the same env
count and batch:

  local N      one process: PPO one envpool of all envs (N = 1); IMPALA N actor threads (the reference)
  ray W        W Ray actors / PPO environment workers (num_envs / W envs each) on a loopback cluster started here
  processes P  P jax.distributed processes on 127.0.0.1 (num_envs / P envs each), one learner device each
  devices D    one process, the update data-parallel over D forced host devices (XLA_FLAGS)

Throughput is agent steps/s over the updates after the first `--skip` (compilation), read from the run's
progress.csv (evaluation and checkpoints off). Rounds alternate the variants, so they share the machine's drift;
the table gives the mean over rounds and the ratio to `local` from the same rounds. On a machine with few cores,
every extra process and forced device shares the same cores: the table measures overhead, not speed-up.
"""
from __future__ import annotations

import argparse
import csv
import datetime
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _sps(run_dir: str, skip: int) -> float:
  with open(os.path.join(run_dir, "progress.csv")) as f:
    rows = list(csv.DictReader(f))
  rows = rows[skip - 1:]  # differences from the row that ends the skipped updates
  steps = int(rows[-1]["global_step"]) - int(rows[0]["global_step"])
  return steps / (float(rows[-1]["walltime"]) - float(rows[0]["walltime"]))


REFERENCE_ACTORS = 2  # IMPALA: actor threads of the local reference run, and of the process and device variants


def run_variant(algo: str, kind: str, n: int, common: list[str], workdir: str, skip: int,
                ray_address: str | None) -> float:
  run_dir = os.path.join(workdir, f"{kind}{n}")
  shutil.rmtree(run_dir, ignore_errors=True)
  script = [sys.executable, os.path.join(ROOT, f"run_{algo}.py"), *common, "--run-dir", run_dir, "--no-progress"]
  env = dict(os.environ)
  actors = ["--num-actors", str(REFERENCE_ACTORS)] if algo == "impala" else []  # the group's, as the local run's
  if kind == "local":
    cmds = [script + (["--num-actors", str(n)] if algo == "impala" else [])]
  elif kind == "ray":
    workers = "--num-actors" if algo == "impala" else "--num-env-workers"
    cmds = [script + ["--ray-address", ray_address, workers, str(n)]]
  elif kind == "processes":
    port = _port()
    cmds = [script + ["--coordinator-address", f"127.0.0.1:{port}", "--num-processes", str(n), "--process-id", str(i)]
            + actors for i in range(n)]
  elif kind == "devices":
    env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={n}".strip()
    cmds = [script + ["--learner-devices", str(n)] + actors]
  else:
    raise ValueError(kind)
  procs = [subprocess.Popen(c, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
           for c in cmds]
  errors = [p.communicate(timeout=1800)[1] for p in procs]
  if any(p.returncode for p in procs):
    raise RuntimeError(f"{kind} {n} failed:\n" + "\n".join(e[-2000:] for e in errors))
  return _sps(run_dir, skip)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--algo", choices=("ppo", "impala"), default="ppo")
  parser.add_argument("--env", default=None, help="default: HalfCheetah-v4 (PPO), Pong-v5 (IMPALA)")
  parser.add_argument("--num-envs", type=int, default=8, help="PPO: envs in all")
  parser.add_argument("--num-steps", type=int, default=256, help="PPO: steps per env per update")
  parser.add_argument("--envs-per-actor", type=int, default=16, help="IMPALA")
  parser.add_argument("--batch-trajectories", type=int, default=32, help="IMPALA: trajectories per update (unroll 20)")
  parser.add_argument("--updates", type=int, default=None, help="updates per variant and round (PPO 12, IMPALA 30)")
  parser.add_argument("--skip", type=int, default=2, help="first updates not timed (compilation)")
  parser.add_argument("--rounds", type=int, default=2)
  parser.add_argument("--variants", default=None, help="kind:n,... (PPO default: local:1,ray:1,ray:2,"
                      "processes:2,devices:2,devices:4; IMPALA: local:2,ray:2,processes:2,devices:2)")
  parser.add_argument("--out", default=None, help="default: benchmarks/results/scaling_<algo>.md")
  args = parser.parse_args(argv)
  ppo = args.algo == "ppo"
  args.env = args.env or ("HalfCheetah-v4" if ppo else "Pong-v5")
  args.updates = args.updates or (12 if ppo else 30)
  args.variants = args.variants or ("local:1,ray:1,ray:2,processes:2,devices:2,devices:4" if ppo
                                    else "local:2,ray:2,processes:2,devices:2")
  args.out = args.out or os.path.join(ROOT, "benchmarks", "results", f"scaling_{args.algo}.md")
  variants = [(k, int(n)) for k, n in (v.split(":") for v in args.variants.split(","))]
  reference = next(v for v in variants if v[0] == "local") if any(k == "local" for k, _ in variants) else None
  if reference is None:
    reference = ("local", 1 if ppo else REFERENCE_ACTORS)
    variants.insert(0, reference)
  if ppo:
    batch = args.num_envs * args.num_steps
    common = ["--num-envs", str(args.num_envs), "--num-steps", str(args.num_steps)]
    setting = f"PPO on {args.env}, {args.num_envs} envs x {args.num_steps} steps per update"
  else:
    batch = 20 * args.batch_trajectories  # the paper preset's unroll
    common = ["--preset", "paper", "--envs-per-actor", str(args.envs_per_actor), "--batch-trajectories",
              str(args.batch_trajectories)]
    setting = (f"IMPALA on {args.env} (the paper preset), actors of {args.envs_per_actor} envs, batch "
               f"{args.batch_trajectories} x unroll 20 per update")
  common += ["--env", args.env, "--total-timesteps", str(batch * args.updates), "--eval-every", "0",
             "--checkpoint-every", str(10**12)]
  workdir = tempfile.mkdtemp(prefix="jaxpod_scaling_")
  ray_address = None
  ray_bin = os.path.join(os.path.dirname(sys.executable), "ray")
  if any(k == "ray" for k, _ in variants):
    port = _port()
    subprocess.run([ray_bin, "start", "--head", f"--port={port}", "--num-cpus=4", "--include-dashboard=false",
                    "--disable-usage-stats"], check=True, capture_output=True, timeout=300)
    ray_address = f"127.0.0.1:{port}"
  results: dict[tuple[str, int], list[float]] = {v: [] for v in variants}
  try:
    for r in range(args.rounds):
      order = variants if r % 2 == 0 else variants[::-1]
      for v in order:
        sps = run_variant(args.algo, *v, common, workdir, args.skip, ray_address)
        results[v].append(sps)
        print(f"round {r + 1}: {v[0]} {v[1]}: {sps:,.0f} steps/s", file=sys.stderr, flush=True)
  finally:
    if ray_address:
      subprocess.run([ray_bin, "stop", "--force"], capture_output=True, timeout=300)
    shutil.rmtree(workdir, ignore_errors=True)

  from harness.run import hardware
  base = results[reference]
  if ppo:
    describe = {"local": "one process, one envpool", "ray": "Ray env workers ({n} x {e} envs)",
                "processes": "jax.distributed processes ({n} x {e} envs)", "devices": "forced host learner devices"}
  else:
    describe = {"local": "one process, {n} actor threads", "ray": "{n} Ray actors",
                "processes": "jax.distributed processes (actors split)", "devices": "forced host learner devices"}
  lines = [f"{setting}, {args.updates} updates per variant ({args.skip} not timed), {args.rounds} alternating "
           f"rounds; {hardware()}; {datetime.date.today()}.", "",
           "| variant | layout | steps/s (mean over rounds) | per round | vs reference (mean of per-round ratios) |",
           "|---|---|---|---|---|"]
  for (kind, n), values in results.items():
    ratio = statistics.mean(v / b for v, b in zip(values, base))
    layout = describe[kind].format(n=n, e=args.num_envs // n)
    name = f"{kind} {n}" + (" (reference)" if (kind, n) == reference else "")
    lines.append(f"| {name} | {layout} | {statistics.mean(values):,.0f} | "
                 f"{', '.join(f'{v:,.0f}' for v in values)} | {ratio:.2f} |")
  table = "\n".join(lines)
  os.makedirs(os.path.dirname(args.out), exist_ok=True)
  with open(args.out, "w") as f:
    f.write(table + "\n")
  print(table)
  return 0


if __name__ == "__main__":
  sys.exit(main())
