"""Train PPO on envpool. `python run_ppo.py` trains on Pong; `python run_ppo.py --env HalfCheetah-v4` on MuJoCo.

Writes config.json, progress.csv, TensorBoard events and orbax checkpoints to the run directory;
`python run_ppo.py --resume RUN_DIR` continues a stopped run from its last checkpoint.
"""
from __future__ import annotations

import sys

import jax

from algorithms import acting, ppo
from algorithms.parallel import AXIS, env_axis, lift, local_copy
from algorithms.ppo_config import PPOConfig
from harness import distributed, remote, trainer
from harness.cli import UsageError, main_guard, parse
from envs.actors import ActorError
from envs.rollout import make_rollout

UPDATE_METRICS = ["policy_loss", "value_loss", "entropy", "approx_kl", "clip_frac", "explained_variance",
                  "learning_rate", "grad_norm", "loss"]


@main_guard
def main(argv: list[str] | None = None) -> int:
  config = parse(PPOConfig, argv, __doc__)
  setup = trainer.setup(config, PPOConfig, algo="ppo")
  config, spec, network = setup.config, setup.spec, setup.network
  K = config.num_seeds
  P, p = jax.process_count(), jax.process_index()  # several with --coordinator-address (jax.distributed)
  distributed.check_split("--num-envs", config.num_envs, config.learner_devices, "--learner-devices")
  if P > 1 and K > 1:
    raise UsageError("several processes (--coordinator-address) train one seed: drop --num-seeds")
  ray = setup.ray
  run = setup.open_run(lambda key: ppo.init_state(config, network, spec.obs_shape, key),
                       fieldnames=trainer.BASE_COLUMNS + UPDATE_METRICS)
  state, start_step = run.state, run.start_step

  act_fn = acting.make_act_fn(network, spec.discrete, config.normalize_obs, num_agents=K)
  greedy_fn = acting.make_greedy_fn(network, spec.discrete, config.normalize_obs)
  devices, device = config.learner_devices, setup.placement.actor
  update_fn = lift(ppo.make_update_fn(config, network, spec.discrete, spec.image_obs,
                                      axis_name=AXIS if devices * P > 1 else None),
                   num_agents=K, split=ppo.split_agents, devices=devices, batch_axis=env_axis)
  # NOTE: envpool seeds env i with `seed + i`, so agent j's envs get the seeds a single run with seed
  # `seed + j * num_envs` would use (config.agent_seeds).
  if ray:
    W = config.num_actors
    args = remote.worker_args(config, spec, W, config.num_envs // W, config.num_steps, config.seed + start_step,
                              remote.key_seed(config.seed, start_step), config.normalize_obs)
    rollout = remote.RayRollout(ray, args, run.tracker, config.actor_cpus, config.normalize_obs,
                                config.queue_timeout)
  else:
    n = K * config.num_envs // P  # this process's envs: [p * n, (p + 1) * n) of the group's
    rollout = make_rollout(spec, n, config.num_steps, config.env_groups, config.seed + start_step + p * n, act_fn,
                           run.tracker, tracker_offset=p * n)

  def policy(j: int):  # agent j's greedy policy, reading the latest state
    agent = local_copy(state) if K == 1 else jax.tree.map(lambda x: x[j], state)
    return lambda obs: greedy_fn(agent.params, agent.obs_norm, obs)

  try:
    for update in range(start_step // config.batch_size, config.num_updates):
      inputs = local_copy((state.params, (state.obs_norm, state.actor_key)))
      if P > 1:  # each process samples its own actions
        inputs = (inputs[0], (inputs[1][0], jax.random.fold_in(inputs[1][1], p)))
      inputs = jax.device_put(inputs, device)  # no copy when acting on the learner device
      traj, (obs_norm, actor_key) = rollout.collect(*inputs)
      if P > 1:  # the same state on every process: all processes' observations, the next acting key
        obs_norm = distributed.merge_stats(inputs[1][0], obs_norm) if config.normalize_obs else inputs[1][0]
        actor_key = jax.random.split(local_copy(state.actor_key))[0]
      new_state, metrics = update_fn(state.replace(obs_norm=obs_norm, actor_key=actor_key), traj)
      metrics = jax.device_get(local_copy(metrics))
      if ray:
        metrics["actor_restarts"] = rollout.restarts
      step = (update + 1) * config.batch_size
      if run.non_finite(metrics):
        return run.stop_non_finite(step, metrics)
      state = new_state
      run.step(step, state, metrics, policy, final=update == config.num_updates - 1)
  except KeyboardInterrupt:
    run.interrupted(state)
    return 130
  except (ActorError, TimeoutError) as e:  # Ray workers only: a local rollout raises nothing of these
    run.close()
    print(f"error: {e}", file=sys.stderr)
    return 1
  except Exception as e:
    if distributed.lost(e):
      distributed.stop_lost(e, run)
    raise
  finally:
    rollout.close()
  run.finish()
  return 0


if __name__ == "__main__":
  sys.exit(main())
