"""PPO training throughput against raw envpool, side by side in one process, after compilation.

    python -m benchmarks.throughput                     # MuJoCo and Atari PARL settings, each in its own process
    python -m benchmarks.throughput --setting atari --repeats 5
    python -m benchmarks.throughput --setting mujoco --num-seeds 1 --num-seeds 3   # 3 seeds vmapped vs 1

For each setting the script alternates, `--repeats` times: raw envpool with random actions (same env, same env
count, same protocol) for one rollout's worth of steps, then one PPO iteration (rollout + jitted update) exactly as
run_ppo.py runs it. It reports medians in steps/s and the ratio PPO / raw; the first PPO iteration (compilation) is
not timed. The machine's speed drifts, so only the ratios within one run compare cleanly.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

SETTINGS = {
    # The reproduced PARL settings (shared/REFERENCE.md).
    "mujoco": dict(env="HalfCheetah-v4"),
    "atari": dict(env="Pong-v5"),
    # IMPALA's Atari default (PARL's setting: 42x42 frames, parl_atari, unroll 50 x batch 20, 5 envs per actor;
    # `--preset paper` for the paper's) against raw envpool with the same frames and envs, and PPO's Atari setting.
    "impala": dict(env="Pong-v5"),
}


def raw_envpool(spec, num_envs: int, steps: int, seed: int, env=None) -> float:
  """Steps/s of envpool alone with uniformly random actions."""
  import numpy as np
  from envs import make_env
  env = env or make_env(spec.env_id, num_envs, seed, frame_size=spec.frame_size)
  rng = np.random.default_rng(seed)
  env.reset()
  t0 = time.perf_counter()
  for _ in range(steps // num_envs):
    if spec.discrete:
      action = rng.integers(0, spec.action_dim, size=num_envs).astype(np.int32)
    else:
      action = rng.uniform(spec.action_low, spec.action_high, size=(num_envs, spec.action_dim))
    env.step(action)
  return steps / (time.perf_counter() - t0)


def measure(setting: str, repeats: int, num_seeds: tuple[int, ...] = (1,), **overrides) -> list[dict]:
  """One row per entry of `num_seeds` (agents vmapped in one process over one envpool of K x num_envs envs).

  Each repeat runs raw envpool (num_envs envs, one agent's rollout worth of steps) and then one PPO iteration of
  every variant, so all of them see the same machine state. `cost_vs_1` is an iteration's time over the 1-agent
  iteration's (K would mean no gain from vmapping K seeds; 1 would mean the extra seeds are free).
  """
  from harness import xla
  from envs import resolve_env
  spec = resolve_env(SETTINGS[setting]["env"])
  xla.configure(spec.image_obs)
  import jax
  import jax.numpy as jnp
  import networks
  from algorithms import acting, ppo
  from algorithms.parallel import lift
  from algorithms import registry
  from harness.config import EnvSettings, RolloutSettings, config_class
  from envs import AgentTrackers, make_env
  from envs.rollout import make_rollout

  name = networks.default_network(spec.discrete, spec.image_obs)
  net = networks.make_network(name, discrete=spec.discrete, image_obs=spec.image_obs, action_dim=spec.action_dim)
  variants = []
  for k in num_seeds:
    cfg = config_class(registry.get("ppo"))(environment=EnvSettings(env=SETTINGS[setting]["env"]),
                                            source=RolloutSettings(num_seeds=k, **overrides)).resolve(spec.family, name)
    init = lambda key, cfg=cfg: ppo.init_state(cfg.algorithm, net, spec.obs_shape, key)  # noqa: E731
    keys = jnp.stack([jax.random.PRNGKey(j) for j in range(k)])
    state = init(keys[0]) if k == 1 else jax.vmap(init)(keys)
    rollout = make_rollout(spec, k * cfg.num_envs, cfg.algorithm.num_steps, cfg.source.env_groups, 0,
                           acting.make_act_fn(net, spec.discrete, cfg.algorithm.normalize_obs, num_agents=k),
                           AgentTrackers(k, cfg.num_envs))
    update = lift(ppo.make_update_fn(cfg.algorithm, net, spec.discrete, spec.image_obs), num_agents=k,
                  split=ppo.split_agents)
    variants.append(dict(k=k, cfg=cfg, state=state, rollout=rollout, update=update, times=[], collect=[], learn=[]))
  cfg = variants[0]["cfg"]
  raw_env = make_env(spec.env_id, cfg.num_envs, 1)

  def ppo_iteration(v):
    t0 = time.perf_counter()
    state = v["state"]
    traj, (obs_norm, key) = v["rollout"].collect(state.params, (state.obs_norm, state.actor_key))
    t1 = time.perf_counter()
    v["state"], metrics = v["update"](state.replace(obs_norm=obs_norm, actor_key=key), traj)
    jax.block_until_ready(metrics)
    return t1 - t0, time.perf_counter() - t1

  compile_s = {}
  for v in variants:
    t0 = time.perf_counter()
    ppo_iteration(v)  # compiles
    compile_s[v["k"]] = time.perf_counter() - t0
  raw = []
  for _ in range(repeats):
    raw.append(raw_envpool(spec, cfg.num_envs, cfg.algorithm.batch_size, seed=len(raw), env=raw_env))
    for v in variants:
      c, u = ppo_iteration(v)
      v["times"].append(c + u)
      v["collect"].append(c)
      v["learn"].append(u)
  raw_sps = statistics.median(raw)
  base = statistics.median(variants[0]["times"])
  rows = []
  for v in variants:
    t = statistics.median(v["times"])
    ppo_sps = v["k"] * cfg.algorithm.batch_size / t
    rows.append(dict(setting=setting, env=spec.env_id, num_seeds=v["k"], num_envs=cfg.num_envs,
                     batch=cfg.algorithm.batch_size,
                     epochs_x_minibatches=f"{cfg.algorithm.update_epochs}x{cfg.algorithm.num_minibatches}",
                     raw_sps=round(raw_sps), train_sps=round(ppo_sps), ratio=round(ppo_sps / raw_sps, 3),
                     rollout_s=round(statistics.median(v["collect"]), 3),
                     update_s=round(statistics.median(v["learn"]), 3), cost_vs_1=round(t / base, 2),
                     env_groups=cfg.source.env_groups, first_iteration_s=round(compile_s[v["k"]], 1), repeats=repeats,
                     backend=jax.default_backend()))
  return rows


def measure_impala(repeats: int, updates: int = 8, preset: str = "parl", with_ppo: bool = True,
                   **source) -> dict:
  """IMPALA training steps/s against raw envpool (random actions, the same frame size and env count in one envpool)
  and, with `with_ppo`, one PPO iteration, alternating per repeat. `source` overrides the actor layout
  (num_actors, envs_per_actor)."""
  from harness import xla
  xla.configure(True)
  import jax
  import networks
  from algorithms import acting, impala, normalize
  from algorithms import registry
  from harness.config import ActorSettings, EnvSettings, config_class, resolve_against_env
  from algorithms.impala import ImpalaConfig
  from algorithms.parallel import lift
  from envs import EpisodeTracker, make_env
  from envs.actors import ActorPool, ParamStore
  from envs.rollout import concat_trajectories, make_rollout

  cfg, spec = resolve_against_env(config_class(registry.get("impala"))(
      environment=EnvSettings(env=SETTINGS["impala"]["env"]), algorithm=ImpalaConfig(preset=preset),
      source=ActorSettings(**source)))
  actors, hp = cfg.source, cfg.algorithm
  net = networks.make_network(cfg.environment.network, discrete=True, image_obs=True, action_dim=spec.action_dim)
  state = impala.init_state(hp, net, spec.obs_shape, jax.random.PRNGKey(0))
  update = lift(impala.make_update_fn(hp, net, True, True))
  act = acting.make_act_fn(net, True, False)
  tracker = EpisodeTracker(cfg.num_envs)
  raw_env = make_env(spec.env_id, cfg.num_envs, 1, frame_size=spec.frame_size)

  def make_actor(i):
    return (make_rollout(spec, actors.envs_per_actor, hp.unroll_length, 1, 100 * i, act, tracker,
                         tracker_offset=i * actors.envs_per_actor), (normalize.init(()), jax.random.PRNGKey(i)))

  def impala_phase(state, n):
    store = ParamStore(state.params, int(state.update), jax.devices()[0])
    pool = ActorPool(make_actor, actors.num_actors, store, actors.queue_size).start()
    times, learn, wait = [], 0.0, 0.0
    try:
      for k in range(n + 1):  # the first update of a phase waits for actors to start: not timed
        t0 = time.perf_counter()
        items, got = [], 0
        while got < hp.batch_trajectories:
          traj, _, _ = pool.get(cfg.scale_out.queue_timeout)
          items.append(traj)
          got += traj.rewards.shape[1]
        t1 = time.perf_counter()
        state, metrics = update(state, concat_trajectories(items))
        jax.block_until_ready(metrics)
        store.publish(state.params, int(state.update))
        if k:
          times.append(time.perf_counter() - t0)
          learn += time.perf_counter() - t1
          wait += t1 - t0
    finally:
      pool.stop()
    return state, hp.steps_per_update * n / sum(times), learn / n, wait / n

  t0 = time.perf_counter()
  state, _, _, _ = impala_phase(state, 1)  # compiles
  compile_s = time.perf_counter() - t0
  ppo_sps = measure("atari", repeats)[0]["train_sps"] if with_ppo else None  # PPO's own alternation, this process
  raw, train, learn, wait = [], [], [], []
  for _ in range(repeats):
    raw.append(raw_envpool(spec, cfg.num_envs, hp.steps_per_update * 2, seed=len(raw), env=raw_env))
    state, sps, lt, wt = impala_phase(state, updates)
    train.append(sps)
    learn.append(lt)
    wait.append(wt)
  raw_env.close()
  raw_sps, impala_sps = statistics.median(raw), statistics.median(train)
  row = dict(setting="impala", preset=preset, env=spec.env_id, frame_size=spec.frame_size,
             network=cfg.environment.network, num_envs=cfg.num_envs, batch=hp.steps_per_update,
             epochs_x_minibatches="1x1", raw_sps=round(raw_sps), train_sps=round(impala_sps),
             ratio=round(impala_sps / raw_sps, 3), rollout_s=None, update_s=round(statistics.median(learn), 3),
             batch_wait_s=round(statistics.median(wait), 3),
             env_groups=f"{actors.num_actors} actors x {actors.envs_per_actor} envs",
             first_iteration_s=round(compile_s, 1), repeats=repeats, backend=jax.default_backend())
  if with_ppo:
    row.update(ppo_atari_sps=ppo_sps, impala_over_ppo=round(impala_sps / ppo_sps, 2))
  return row


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--setting", choices=sorted(SETTINGS), action="append",
                      help="setting(s) to measure (default: all, each in a fresh process)")
  parser.add_argument("--repeats", type=int, default=5, help="alternations of raw envpool and one PPO iteration")
  parser.add_argument("--json", help="also write the results to this JSON file")
  parser.add_argument("--env-groups", type=int, action="append",
                      help="acting-loop env groups to compare (default: the config's choice)")
  parser.add_argument("--num-seeds", type=int, action="append",
                      help="agents vmapped in one process to compare, e.g. --num-seeds 1 --num-seeds 3 (one setting)")
  parser.add_argument("--preset", choices=("parl", "paper"), default="parl", help="IMPALA's Atari preset (impala)")
  parser.add_argument("--num-actors", type=int, action="append",
                      help="IMPALA actor threads to compare (default: run_impala.py's layout for this machine)")
  parser.add_argument("--envs-per-actor", type=int, help="IMPALA envs per actor (default: the preset's)")
  parser.add_argument("--no-ppo", action="store_true", help="IMPALA only: skip the PPO comparison")
  args = parser.parse_args(argv)
  settings = args.setting or sorted(SETTINGS)
  if settings != ["impala"] and (args.num_actors or args.envs_per_actor or args.no_ppo or args.preset != "parl"):
    parser.exit(2, "error: --preset, --num-actors, --envs-per-actor and --no-ppo apply to --setting impala alone\n")
  results = []
  if settings == ["impala"]:
    for i, actors in enumerate(args.num_actors or [None]):
      source = dict(num_actors=actors, envs_per_actor=args.envs_per_actor)  # None: the default layout
      results.append(measure_impala(args.repeats, preset=args.preset, with_ppo=i == 0 and not args.no_ppo, **source))
  elif len(settings) == 1:
    for groups in args.env_groups or [None]:
      results.extend(measure(settings[0], args.repeats, tuple(args.num_seeds or [1]),
                             **({} if groups is None else {"env_groups": groups})))
  else:  # XLA flags differ per setting and are read once per process
    for s in settings:
      extra = [a for g in (args.env_groups or []) for a in ("--env-groups", str(g))]
      out = subprocess.run([sys.executable, "-m", "benchmarks.throughput", "--setting", s, "--repeats",
                            str(args.repeats), "--json", "/dev/stdout"] + extra, capture_output=True, text=True, check=True,
                           cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
      results.extend(json.loads(out.stdout.strip().splitlines()[-1]))
  if args.json:
    with open(args.json, "w") as f:
      f.write(json.dumps(results) + "\n")
    if args.json == "/dev/stdout":
      return 0
  cols = list(dict.fromkeys(k for r in results for k in r))
  from harness.run import hardware
  print(f"# machine: {hardware()}, {platform.platform()}")
  print("| " + " | ".join(cols) + " |")
  print("|" + "---|" * len(cols))
  for r in results:
    print("| " + " | ".join(str(r.get(c, "")) for c in cols) + " |")
  return 0


if __name__ == "__main__":
  sys.exit(main())
