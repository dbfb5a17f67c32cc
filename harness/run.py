"""A run's sinks and cadence: the run directory, logs, evaluation and checkpoints at their intervals, the result.
Host-side and stateful by design; the learners stay pure.
"""
from __future__ import annotations

import json
import os
import platform
import signal
import sys
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from algorithms.parallel import local_copy
from envs import AgentTrackers
from envs.rollout import evaluate
from harness import distributed, rundir
from harness.checkpoint import Checkpointer
from harness.logger import RunLogger

BASE_COLUMNS = ["global_step", "walltime", "sps", "episode_return", "episode_return_max", "episode_return_min",
                "episode_length", "episode_length_max", "episode_length_min", "episodes", "eval_return"]
RESULT = "result.json"


def hardware() -> str:
  """The machine in a few words, for reports: CPU model, usable cores, JAX devices."""
  cpu = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo") as f:
      cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
  except (OSError, StopIteration):
    pass
  cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
  devices = jax.devices()
  return f"{cpu}, {cores} cores, {len(devices)}x {devices[0].device_kind} ({jax.default_backend()})"


def agent_dir(run_dir: str, seeds: list[int], j: int) -> str:
  """Where agent j logs: the run directory itself for one agent, RUN_DIR/seed<S>/ for several."""
  return run_dir if len(seeds) == 1 else os.path.join(run_dir, f"seed{seeds[j]}")


NOTHING_TRAINED = "nothing trained yet; start again with --overwrite --run-dir"


def stopped(signum: int) -> str:
  """How the line a signal's stop ends with begins."""
  return "interrupted" if signum == signal.SIGINT else f"stopped by {signal.Signals(signum).name}"


class Run:
  """Owns the run directory's sinks and the logging, evaluation and checkpoint cadence.

  With several agents (`--num-seeds`), the state is stacked over a leading agent axis and one checkpoint holds all
  of them; each agent has its own episode statistics, evaluations and logs.
  """

  def __init__(self, config, spec, placement, resuming: bool, init_fn, fieldnames: list[str]):
    cfg = self.config = config
    self.spec, self.placement = spec, placement
    self.seeds = cfg.agent_seeds
    if len(self.seeds) == 1:
      state = init_fn(jax.random.PRNGKey(cfg.environment.seed))
    else:
      state = jax.vmap(init_fn)(jnp.stack([jax.random.PRNGKey(s) for s in self.seeds]))
    self.tracker = AgentTrackers(len(self.seeds), cfg.num_envs)
    meta = {}
    self.start_step = 0
    # With several processes (jax.distributed) process 0 alone reads and writes the run directory.
    self.main = distributed.is_main()
    self.checkpointer = None
    if resuming and self.main:
      self.checkpointer = Checkpointer(cfg.run.run_dir, cfg.run.keep_checkpoints)
      restored, meta, self.start_step = self.checkpointer.restore(state)
      state = jax.device_put(restored)
      self.tracker.load_state_dict(meta.get("episodes", {}))
      print(f"resuming {cfg.run.run_dir} from step {self.start_step}", file=sys.stderr)
    elif self.main:
      rundir.create_run_dir(cfg.run.run_dir, cfg.replace(resume=None, overwrite=False), cfg.run.overwrite)
      self.checkpointer = Checkpointer(cfg.run.run_dir, cfg.run.keep_checkpoints)
    if jax.process_count() > 1 and resuming:  # every process continues from process 0's checkpoint
      state, start = multihost_utils.broadcast_one_to_all((jax.device_get(state), np.int64(self.start_step)),
                                                          is_source=self.main)
      state, self.start_step = jax.device_put(state), int(start)
    self.state = state
    self.eval_every, self.ckpt_every = cfg.run.eval_every, cfg.run.checkpoint_every
    self.walltime0 = float(meta.get("walltime", 0.0))
    self.t0 = self.t_last = time.time()
    self.step_last = self.start_step
    self.last_eval: list[float | None] = [None] * len(self.seeds)
    self.loggers = []
    for j, seed in enumerate(self.seeds if self.main else []):
      path = agent_dir(cfg.run.run_dir, self.seeds, j)
      os.makedirs(path, exist_ok=True)
      self.loggers.append(RunLogger(path, fieldnames, total_steps=cfg.total_timesteps, start_step=self.start_step,
                                    config=dict(cfg.flat(), agent_seed=seed), track=cfg.run.track,
                                    wandb_project=cfg.run.wandb_project, progress=cfg.run.progress and j == 0,
                                    run_root=cfg.run.run_dir))

  def walltime(self) -> float:
    return self.walltime0 + time.time() - self.t0

  def _crossed(self, step: int, every: int) -> bool:
    return every > 0 and step // every > self.step_last // every

  def evaluate(self, step: int, policy: Callable, j: int = 0) -> float:
    returns = evaluate(self.spec, policy, self.config.run.eval_episodes, seed=self.seeds[j] + 100_000 + step).returns
    self.last_eval[j] = float(np.mean(returns))
    return self.last_eval[j]

  def step(self, step: int, state, metrics: dict, policy: Callable[[int], Callable], final: bool = False) -> None:
    """Logs one row per agent at `step` (agent steps of each agent); evaluates and checkpoints when their intervals
    are crossed, and at the end. `metrics` hold scalars, or [K] arrays for K agents; `policy(j)` is agent j's
    host-callable greedy policy."""
    if final and jax.process_count() > 1:  # a group that drifted apart must not end as if it trained one agent
      multihost_utils.assert_equal(jax.device_get(local_copy(state.params)),
                                   "the processes' parameters differ at the end of the run")
      if self.main:
        print(f"checked: parameters identical on all {jax.process_count()} processes", file=sys.stderr)
    if not self.main:
      self.state, self.step_last = state, step
      return
    now = time.time()
    sps = (step - self.step_last) / max(now - self.t_last, 1e-9)
    evaluating = self.eval_every > 0 and (final or self._crossed(step, self.eval_every))
    for j, (logger, tracker) in enumerate(zip(self.loggers, self.tracker.agents)):
      eval_return = self.evaluate(step, policy(j), j) if evaluating else None
      # [K] arrays hold one value per agent; scalars (timings, the source's counts) are shared by all
      agent_metrics = {k: float(np.reshape(v, -1)[j if np.size(v) > 1 else 0]) for k, v in metrics.items()}
      logger.log(dict(global_step=step, walltime=round(self.walltime(), 3), sps=round(sps, 1), **tracker.summary(),
                      episodes=tracker.episodes, eval_return=eval_return, **agent_metrics))
    if final or self._crossed(step, self.ckpt_every):
      self.save(step, state)
    self.state, self.step_last, self.t_last = state, step, time.time()

  def save(self, step: int, state) -> None:
    if not self.main:
      return
    meta = dict(episodes=self.tracker.state_dict(), walltime=self.walltime(), env=self.spec.env_id,
                network=self.config.environment.network)
    self.checkpointer.save(step, state, meta)

  @staticmethod
  def non_finite(metrics: dict) -> bool:
    """Whether the update's losses or gradient norm are NaN or infinite (the state must then not be kept)."""
    return not all(np.all(np.isfinite(metrics[k])) for k in ("loss", "policy_loss", "value_loss", "grad_norm"))

  def stop_non_finite(self, step: int, metrics: dict) -> int:
    bad = ", ".join(f"{k}={v}" for k, v in metrics.items() if not np.all(np.isfinite(v)))
    if len(self.seeds) > 1:
      finite = np.all([np.isfinite(np.reshape(metrics[k], -1)) for k in ("loss", "grad_norm")], axis=0)
      bad = f"agent seed {', '.join(str(s) for s, ok in zip(self.seeds, finite) if not ok)}: {bad}"
    last = max(self.checkpointer.steps(), default=None) if self.main else None
    self.close()
    if not self.main:
      return 1
    print(f"error: non-finite loss at step {step} ({bad}); training stopped, last good checkpoint: "
          f"{last if last is not None else 'none'} in {self.checkpointer.directory}", file=sys.stderr)
    return 1

  def interrupted(self, state, signum: int = signal.SIGINT) -> None:
    """Saves `state` (unless a checkpoint of its step exists) and says how to continue."""
    if not self.main:
      self.close()
      return
    step = int(np.max(jax.device_get(state.global_step)))
    if step > 0 and step not in self.checkpointer.steps():
      self.save(step, state)
    self.close()
    if step == 0:
      print(f"{stopped(signum)} before the first update: {NOTHING_TRAINED} {self.config.run.run_dir}",
            file=sys.stderr)
      return
    print(f"{stopped(signum)}: checkpoint at step {step}; continue with --resume {self.config.run.run_dir}",
          file=sys.stderr)

  def finish(self) -> None:
    """Closes the sinks, writes RUN_DIR/result.json (final returns per agent, wall time, hardware) and prints it."""
    self.close()
    if not self.main:
      return
    cfg, walltime = self.config, self.walltime()
    returns = [t.mean_return() for t in self.tracker.agents]
    result = dict(algorithm=cfg.ALGORITHM, env=cfg.environment.env, seeds=self.seeds,
                  total_timesteps=cfg.total_timesteps, walltime=round(walltime, 1),
                  sps=round(len(self.seeds) * cfg.total_timesteps / max(walltime, 1e-9), 1),
                  episode_return=[None if np.isnan(r) else r for r in returns],
                  eval_return=[None if v is None or np.isnan(v) else v for v in self.last_eval],
                  eval_episodes=cfg.run.eval_episodes, hardware=hardware(), **self.placement.describe())
    path = os.path.join(cfg.run.run_dir, RESULT)
    with open(path + ".tmp", "w") as f:
      json.dump(result, f, indent=2, allow_nan=False)
    os.replace(path + ".tmp", path)  # whole or absent: benchmarks.run takes its presence for a finished run
    for seed, ret, ev in zip(self.seeds, returns, self.last_eval):
      print(f"done: seed {seed}: {cfg.total_timesteps} steps in {walltime:.0f}s, episode_return {ret:.2f}, "
            f"eval_return {ev if ev is None else round(ev, 2)}, run dir {cfg.run.run_dir}")

  def close(self) -> None:
    for logger in self.loggers:
      logger.close()
    if self.checkpointer is not None:
      self.checkpointer.close()
