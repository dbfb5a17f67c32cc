"""The GPU path's choices timed on the backend at hand: donating the learner state or not, GAE's scan rolled or
unrolled, and a PPO Atari iteration with its frames kept on the acting device or buffered on the host.

    python -m benchmarks.donation                 # PPO MuJoCo and Atari settings, IMPALA Atari; 5 alternations
    python -m benchmarks.donation --repeats 9

Every update runs on a fixed synthetic trajectory of the setting's shape (no envs: the update alone is timed),
after compilation, alternating the two variants (A B, then B A) so both see the same machine state. Reports
median seconds per update and the ratio donated / not donated (below 1: donation saves time). The GAE rows time
the advantage computation alone, [128, 8] as in PPO's Atari setting. The frames row times whole PPO Atari
iterations (rollout of 8 x 128 Pong steps + update), frames kept on the device / buffered on the host.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Callable

SETTINGS = ("ppo_mujoco", "ppo_atari", "impala_atari")


def _trajectory(rng, T: int, N: int, obs_shape: tuple, discrete: bool, action_dim: int):
  import numpy as np
  from envs.rollout import Trajectory
  f32 = lambda x: np.asarray(x, np.float32)  # noqa: E731
  obs = (rng.integers(0, 255, (T, N) + obs_shape).astype(np.uint8) if len(obs_shape) == 3
         else f32(rng.normal(size=(T, N) + obs_shape)))
  actions = (rng.integers(0, action_dim, (T, N)).astype(np.int32) if discrete
             else f32(rng.normal(size=(T, N, action_dim))))
  return Trajectory(obs=obs, actions=actions, logp=f32(np.log(rng.uniform(0.2, 0.8, (T, N)))),
                    values=f32(rng.normal(size=(T, N))), rewards=f32(rng.normal(size=(T, N))),
                    terminations=f32(rng.random((T, N)) < 0.01), truncations=f32(np.zeros((T, N))),
                    mask=f32(np.ones((T, N))), last_obs=obs[0])


def _variants(setting: str):
  """(name -> (update, state), trajectory) for one setting, both variants built from the same initial state."""
  import jax
  import numpy as np
  import networks
  from algorithms import impala, ppo
  from algorithms.impala import ImpalaConfig
  from algorithms.parallel import lift
  from algorithms.ppo import PPOConfig
  from envs import resolve_env
  env = "HalfCheetah-v4" if setting == "ppo_mujoco" else "Pong-v5"
  spec = resolve_env(env, notify=False)
  name = networks.default_network(spec.discrete, spec.image_obs)
  net = networks.make_network(name, discrete=spec.discrete, image_obs=spec.image_obs, action_dim=spec.action_dim)
  rng = np.random.default_rng(0)
  if setting.startswith("ppo"):
    cfg = PPOConfig().resolve(spec.family)
    init = lambda: ppo.init_state(cfg, net, spec.obs_shape, jax.random.PRNGKey(0))  # noqa: E731
    make = lambda donate: lift(ppo.make_update_fn(cfg, net, spec.discrete, spec.image_obs), donate=donate)  # noqa
    traj = _trajectory(rng, cfg.num_steps, cfg.num_envs, spec.obs_shape, spec.discrete, spec.action_dim)
  else:
    cfg = ImpalaConfig(preset="paper").resolve(spec.family)  # unroll 20 x batch 32 on 84x84, with nature_cnn
    init = lambda: impala.init_state(cfg, net, spec.obs_shape, jax.random.PRNGKey(0))  # noqa: E731
    make = lambda donate: lift(impala.make_update_fn(cfg, net, True, spec.image_obs), donate=donate)  # noqa
    traj = _trajectory(rng, cfg.unroll_length, cfg.batch_trajectories, spec.obs_shape, True, spec.action_dim)
  return {"donated": [make(True), init()], "not donated": [make(False), init()]}, traj


def alternate(what: str, first: tuple[str, Callable[[], float]], second: tuple[str, Callable[[], float]],
              repeats: int, digits: int = 4) -> dict:
  """Times two variants (each a call returning its seconds) after one untimed call each (compilation), A B then
  B A for `repeats` rounds; the row holds both medians and the per-pair ratio first / second (median, min, max)."""
  variants = dict([first, second])
  times = {name: [] for name in variants}
  for fn in variants.values():
    fn()
  for i in range(repeats):
    for name in (list(variants) if i % 2 == 0 else list(variants)[::-1]):  # no variant always first
      times[name].append(variants[name]())
  a, b = times[first[0]], times[second[0]]
  ratios = [x / y for x, y in zip(a, b)]
  return dict(what=what, first_s=round(statistics.median(a), digits), second_s=round(statistics.median(b), digits),
              ratio=round(statistics.median(ratios), 3), ratio_min=round(min(ratios), 3),
              ratio_max=round(max(ratios), 3))


def measure(setting: str, repeats: int) -> dict:
  import jax
  variants, traj = _variants(setting)

  def timed(name):
    def one():
      update, state = variants[name]
      t0 = time.perf_counter()
      state, metrics = update(state, traj)
      jax.block_until_ready((state, metrics))
      variants[name][1] = state
      return time.perf_counter() - t0
    return name, one

  return alternate(f"{setting} update, donated / not donated", timed("donated"), timed("not donated"), repeats)


def measure_gae(repeats: int, T: int = 128, N: int = 8, calls: int = 200) -> dict:
  import jax
  import numpy as np
  from algorithms.gae import gae_batch
  rng = np.random.default_rng(0)
  r, term = rng.normal(size=(T, N)).astype(np.float32), (rng.random((T, N)) < 0.01).astype(np.float32)
  v, trunc = rng.normal(size=(T + 1, N)).astype(np.float32), np.zeros((T, N), np.float32)
  args = [jax.device_put(x) for x in (r, v, term, trunc)]

  def timed(name, unroll):
    fn = jax.jit(lambda r, v, te, tr: gae_batch(r, v, te, tr, 0.99, 0.95, unroll))

    def one():
      t0 = time.perf_counter()
      for _ in range(calls):
        out = fn(*args)
      jax.block_until_ready(out)
      return (time.perf_counter() - t0) / calls
    return name, one

  return alternate(f"GAE [{T}, {N}], unrolled / rolled", timed("unrolled", True), timed("rolled", 1), repeats, 6)


def measure_frames(repeats: int) -> dict:
  import jax
  import networks
  from algorithms import acting, ppo
  from algorithms.parallel import lift
  from envs import EpisodeTracker, resolve_env
  from envs.rollout import make_rollout
  spec = resolve_env("Pong-v5", notify=False)
  net = networks.make_network("nature_cnn", discrete=True, image_obs=True, action_dim=spec.action_dim)
  cfg = ppo.PPOConfig().resolve("atari")
  update = lift(ppo.make_update_fn(cfg, net, True, True))
  act = acting.make_act_fn(net, True, False)
  rollouts = []

  def timed(name, device):
    rollout = make_rollout(spec, cfg.num_envs, cfg.num_steps, 1, 0, act, EpisodeTracker(cfg.num_envs),
                           obs_device=device)
    rollouts.append(rollout)
    holder = [ppo.init_state(cfg, net, spec.obs_shape, jax.random.PRNGKey(0))]

    def one():
      state = holder[0]
      t0 = time.perf_counter()
      traj, (obs_norm, key) = rollout.collect(state.params, (state.obs_norm, state.actor_key))
      holder[0], metrics = update(state.replace(obs_norm=obs_norm, actor_key=key), traj)
      jax.block_until_ready((holder[0], metrics))
      return time.perf_counter() - t0
    return name, one

  try:
    return alternate("PPO Atari iteration, frames kept on the device / on the host",
                     timed("kept", jax.devices()[0]), timed("host", None), repeats, 3)
  finally:
    for rollout in rollouts:
      rollout.close()


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--setting", choices=SETTINGS, action="append", help="default: all")
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--frames", action="store_true", help="also time PPO Atari iterations, frames kept or not")
  args = parser.parse_args(argv)
  from harness import xla
  xla.configure(image_obs=True)
  import jax
  from harness.run import hardware
  rows = [measure(s, args.repeats) for s in args.setting or SETTINGS] + [measure_gae(args.repeats)]
  if args.frames:
    rows.append(measure_frames(args.repeats))
  print(f"# machine: {hardware()}, jax {jax.__version__}, {args.repeats} alternations")
  print("| what (first / second) | first (s) | second (s) | ratio first / second (median, min-max) |")
  print("|---|---|---|---|")
  for r in rows:
    print(f"| {r['what']} | {r['first_s']} | {r['second_s']} | {r['ratio']} ({r['ratio_min']}-{r['ratio_max']}) |")
  return 0


if __name__ == "__main__":
  sys.exit(main())
