"""Train IMPALA (V-trace) on envpool: CPU actor threads feed a learner through a bounded queue.

`python run_impala.py` trains on Pong; `python run_impala.py --env CartPole-v1` on a cheap check. Same run
directory, logs, checkpoints and `--resume RUN_DIR` as run_ppo.py.
"""
from __future__ import annotations

import sys
import time

import jax
import numpy as np

from algorithms import acting, impala, normalize
from algorithms.impala_config import ImpalaConfig
from algorithms.parallel import AXIS, env_axis, lift, local_copy
from harness import distributed, remote, trainer
from harness.cli import main_guard, parse
from envs.actors import ActorError, ActorPool, ParamStore
from envs.rollout import concat_trajectories, make_rollout

LEARNER_METRICS = ["loss", "policy_loss", "value_loss", "entropy", "kl", "rho_mean", "rho_clip_frac",
                   "learning_rate", "grad_norm", "learn_time", "queue_size", "param_syncs", "policy_lag",
                   "policy_lag_max"]


@main_guard
def main(argv: list[str] | None = None) -> int:
  config = parse(ImpalaConfig, argv, __doc__)
  setup = trainer.setup(config, ImpalaConfig, algo="impala")
  config, spec, network = setup.config, setup.spec, setup.network
  device = setup.placement.actor
  P, p = jax.process_count(), jax.process_index()  # several with --coordinator-address (jax.distributed)
  distributed.check_split("--num-actors", config.num_actors)
  distributed.check_split("--batch-size", config.batch_size, config.envs_per_actor, "--envs-per-actor")
  distributed.check_split("--batch-size", config.batch_size, config.learner_devices, "--learner-devices")
  ray = setup.ray
  run = setup.open_run(lambda key: impala.init_state(config, network, spec.obs_shape, key),
                       fieldnames=trainer.BASE_COLUMNS + LEARNER_METRICS)
  state, start_step = run.state, run.start_step

  act_fn = acting.make_act_fn(network, spec.discrete, normalize_obs=False)
  greedy_fn = acting.make_greedy_fn(network, spec.discrete, normalize_obs=False)
  devices = config.learner_devices
  update_fn = lift(impala.make_update_fn(config, network, spec.discrete, spec.image_obs,
                                         axis_name=AXIS if devices * P > 1 else None),
                   devices=devices, batch_axis=env_axis)
  store = ParamStore(state.params, int(state.update), device)
  no_norm = normalize.init(())

  A = config.num_actors // P  # this process's actors: [p * A, (p + 1) * A) of the group's
  # NOTE: made before the actors start: the first update donates `state`, so a thread must not read it later.
  actor_keys = [jax.device_put(jax.random.fold_in(state.key, p * A + i), device) for i in range(A)]

  def make_actor(i: int):
    key = actor_keys[i]
    i += p * A
    rollout = make_rollout(spec, config.envs_per_actor, config.unroll_length, 1,
                           config.seed + start_step + i * config.envs_per_actor, act_fn, run.tracker,
                           tracker_offset=i * config.envs_per_actor)
    return rollout, (no_norm, key)

  # evaluation reads the latest state
  policy = lambda j: lambda obs: greedy_fn(local_copy(state.params), no_norm, obs)  # noqa: E731
  if ray:
    args = remote.worker_args(config, spec, config.num_actors, config.envs_per_actor, config.unroll_length,
                              config.seed + start_step, remote.key_seed(config.seed, start_step), normalize_obs=False)
    pool = remote.RayActorPool(ray, args, store, run.tracker, config.actor_cpus).start()
  else:
    pool = ActorPool(make_actor, A, store, config.queue_size).start()
  try:
    for update in range(start_step // config.steps_per_update, config.num_updates):
      items, n = [], 0
      while n < config.batch_size // P:
        traj, version, _ = pool.get(config.queue_timeout)
        items.append((traj, version))
        n += traj.rewards.shape[1]
      version = int(local_copy(state.update))
      lags = [version - v for _, v in items]
      t0 = time.perf_counter()
      new_state, metrics = update_fn(state, concat_trajectories([t for t, _ in items]))
      metrics = {k: float(v) for k, v in jax.device_get(local_copy(metrics)).items()}
      metrics.update(learn_time=time.perf_counter() - t0, queue_size=pool.qsize(), param_syncs=store.syncs,
                     policy_lag=float(np.mean(lags)), policy_lag_max=max(lags))
      if ray:
        metrics["actor_restarts"] = pool.restarts
      step = (update + 1) * config.steps_per_update
      if run.non_finite(metrics):
        return run.stop_non_finite(step, metrics)
      state = new_state
      store.publish(local_copy(state.params), version + 1)
      run.step(step, state, metrics, policy, final=update == config.num_updates - 1)
  except KeyboardInterrupt:
    pool.stop()  # before the checkpoint, so no actor writes to the tracker while it is saved
    run.interrupted(state)
    return 130
  except (ActorError, TimeoutError) as e:
    run.close()
    print(f"error: {e}", file=sys.stderr)
    return 1
  except Exception as e:
    if distributed.lost(e):
      pool.stop()
      distributed.stop_lost(e, run)
    raise
  finally:
    pool.stop()  # also when the learner itself raises: no actor thread outlives the run
  run.finish()
  return 0


if __name__ == "__main__":
  sys.exit(main())
