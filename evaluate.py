"""Evaluate a trained agent: `python evaluate.py RUN_DIR` plays 10 whole games with the greedy policy of the run's
latest checkpoint and prints mean +- std, min and max of the raw return and episode length.

Works for run_ppo.py and run_impala.py runs alike (multi-seed runs: every agent). Results go to
RUN_DIR/eval/<step>.json (RUN_DIR/seed<S>/eval/ for several seeds); `--video` adds MP4s of the first games to
RUN_DIR/eval/videos/, named with their return. Evaluation envs follow the training protocol without its training
wrappers: Atari without episodic life and reward clipping, with up to 30 no-op starts.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys

import jax
import numpy as np
import tyro

from algorithms import acting, normalize
from algorithms.config import check_positive
from harness.cli import UsageError, main_guard, parse
from harness.restore import load_run
from harness.run import agent_dir
from envs import video
from envs.rollout import evaluate


@dataclasses.dataclass(frozen=True)
class EvalConfig:
  run_dir: tyro.conf.Positional[str]
  """A run directory written by run_ppo.py or run_impala.py."""
  step: int | None = None
  """Checkpoint step to evaluate (default: the latest)."""
  episodes: int = 10
  """Whole games to play, one per env, all on fresh envs."""
  greedy: bool = True
  """Act with the policy's mode; --no-greedy samples actions."""
  seed: int = 0
  """Seed of the evaluation envs (and of the sampled actions)."""
  video: bool = False
  """Also write MP4s of the first --video-episodes games (Atari and MuJoCo; pip install '.[video]')."""
  video_episodes: int = 1
  """Games recorded with --video (at most --episodes)."""

  def __post_init__(self):
    check_positive(self, "episodes", "video_episodes")
    if self.step is not None and self.step < 0:
      raise UsageError(f"--step must be non-negative, got {self.step}")
    if self.video_episodes > self.episodes:
      raise UsageError(f"--video-episodes {self.video_episodes} exceeds --episodes {self.episodes}")


def summarize(values: list[float]) -> dict:
  a = np.asarray(values, np.float64)
  return dict(mean=float(a.mean()), std=float(a.std()), min=float(a.min()), max=float(a.max()))


def make_policy(run, j: int, greedy: bool, seed: int):
  """Agent j's host-callable policy: greedy, or sampling with its own PRNG stream."""
  params, obs_norm = run.agent(j)
  norm_obs = obs_norm is not None
  if obs_norm is None:
    obs_norm = normalize.init(())
  if greedy:
    fn = acting.make_greedy_fn(run.network, run.spec.discrete, norm_obs)
    return lambda obs: fn(params, obs_norm, obs)
  fn = acting.make_sample_fn(run.network, run.spec.discrete, norm_obs)
  keys = iter(jax.random.split(jax.random.PRNGKey(seed), run.spec.max_episode_steps + 2))
  return lambda obs: fn(params, obs_norm, next(keys), obs)


@main_guard
def main(argv: list[str] | None = None) -> int:
  cfg = parse(EvalConfig, argv, __doc__)
  try:
    return _evaluate(cfg)
  except OSError as e:  # a read-only or full run directory
    raise UsageError(f"cannot write the evaluation into {cfg.run_dir}: {e.strerror or e}") from None


def _evaluate(cfg: EvalConfig) -> int:
  run = load_run(cfg.run_dir, cfg.step)
  if cfg.video:
    try:
      video.prepare(run.spec)
    except video.VideoError as e:
      raise UsageError(str(e)) from None
  for j, agent_seed in enumerate(run.seeds):
    out_dir = os.path.join(agent_dir(cfg.run_dir, run.seeds, j), "eval")
    writers: dict[int, video.Mp4Writer] = {}

    def on_frame(i: int, frame) -> None:
      if i not in writers:
        os.makedirs(os.path.join(out_dir, "videos"), exist_ok=True)
        writers[i] = video.Mp4Writer(os.path.join(out_dir, "videos", f".{run.step}_episode{i}.mp4"),
                                     video.FPS[run.spec.family])
      writers[i].add(frame)

    ev = evaluate(run.spec, make_policy(run, j, cfg.greedy, cfg.seed), cfg.episodes, seed=cfg.seed,
                  record=cfg.video_episodes if cfg.video else 0, on_frame=on_frame)
    videos = []
    for i, writer in sorted(writers.items()):  # named once the game's return is known
      writer.close()
      path = os.path.join(out_dir, "videos", f"{run.step}_episode{i}_return{ev.returns[i]:g}.mp4")
      os.replace(writer.path, path)
      videos.append(path)
    os.makedirs(out_dir, exist_ok=True)
    ret, length = summarize(ev.returns), summarize(ev.lengths)
    result = dict(run_dir=cfg.run_dir, algo=run.algo, env=run.spec.env_id, step=run.step, agent_seed=agent_seed,
                  episodes=cfg.episodes, greedy=cfg.greedy, seed=cfg.seed, returns=ev.returns, lengths=ev.lengths,
                  **{f"return_{k}": v for k, v in ret.items()}, **{f"length_{k}": v for k, v in length.items()},
                  videos=videos)
    with open(os.path.join(out_dir, f"{run.step}.json"), "w") as f:
      json.dump(result, f, indent=2)
    who = f"seed {agent_seed}, " if len(run.seeds) > 1 else ""
    print(f"{run.spec.env_id} step {run.step} ({who}{cfg.episodes} game{'s' if cfg.episodes > 1 else ''}, {'greedy' if cfg.greedy else 'sampled'}): "
          f"return {ret['mean']:.2f} +- {ret['std']:.2f} (min {ret['min']:g}, max {ret['max']:g}), "
          f"length {length['mean']:.1f} +- {length['std']:.1f} (min {length['min']:g}, max {length['max']:g})")
    for path in videos:
      print(f"video: {path}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
