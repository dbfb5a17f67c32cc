"""PPO learner: the clipped-surrogate loss and the jitted update.

The update is written for one agent; `algorithms.parallel.lift` compiles it (and lifts it over agents or devices).
"""
from __future__ import annotations

from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from algorithms import normalize
from algorithms.gae import gae_batch
from algorithms.parallel import env_axis, split_axis
from algorithms.ppo_config import PPOConfig
from networks import apply_chunked, cpu_conv_chunks, distribution


@struct.dataclass
class PPOState:
  """Everything needed to resume a PPO run, and nothing else."""
  params: Any
  opt_state: Any
  obs_norm: normalize.RunningStats
  ret_norm: normalize.RunningStats
  returns: chex.Array      # [N] discounted return per env, for reward scaling
  key: chex.Array          # learner PRNG (minibatch permutations)
  actor_key: chex.Array    # acting PRNG (action sampling)
  update: chex.Array       # updates done
  global_step: chex.Array  # agent steps done (envs x steps, auto-reset steps included)


def masked_mean(x, mask):
  return jnp.sum(x * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def ppo_loss(new_logp, entropy, new_values, old_logp, old_values, advantages, returns, mask, *, clip_coef: float,
             clip_vloss: bool, ent_coef: float, vf_coef: float, norm_adv: bool) -> tuple[chex.Array, dict]:
  """PPO's clipped surrogate objective (Schulman et al. 2017, eq. 7 and 9), over one minibatch [B].

    L = -E[min(rho A, clip(rho, 1 - eps, 1 + eps) A)] + vf_coef * L_V - ent_coef * E[H]
    L_V = 0.5 * E[max((V - R)^2, (V_old + clip(V - V_old, -eps, eps) - R)^2)]   (or unclipped 0.5 (V - R)^2)

  Samples with mask 0 (auto-reset steps) do not count, in the means or in the advantage normalisation.

  Returns:
    (loss, metrics) with policy_loss, value_loss, entropy, approx_kl, clip_frac.
  """
  chex.assert_equal_shape([new_logp, entropy, new_values, old_logp, old_values, advantages, returns, mask])
  if norm_adv:
    mean = masked_mean(advantages, mask)
    std = jnp.sqrt(masked_mean((advantages - mean) ** 2, mask))
    advantages = (advantages - mean) / (std + 1e-8)
  log_ratio = new_logp - old_logp
  ratio = jnp.exp(log_ratio)
  pg_loss = masked_mean(jnp.maximum(-advantages * ratio, -advantages * jnp.clip(ratio, 1 - clip_coef, 1 + clip_coef)),
                        mask)
  v_unclipped = (new_values - returns) ** 2
  if clip_vloss:
    v_clipped = (old_values + jnp.clip(new_values - old_values, -clip_coef, clip_coef) - returns) ** 2
    v_unclipped = jnp.maximum(v_unclipped, v_clipped)
  v_loss = 0.5 * masked_mean(v_unclipped, mask)
  ent = masked_mean(entropy, mask)
  loss = pg_loss - ent_coef * ent + vf_coef * v_loss
  metrics = dict(policy_loss=pg_loss, value_loss=v_loss, entropy=ent,
                 approx_kl=masked_mean((ratio - 1.0) - log_ratio, mask),
                 clip_frac=masked_mean((jnp.abs(ratio - 1.0) > clip_coef).astype(jnp.float32), mask))
  return loss, metrics


def explained_variance(values, returns, mask):
  var_r = masked_mean((returns - masked_mean(returns, mask)) ** 2, mask)
  err = returns - values
  var_e = masked_mean((err - masked_mean(err, mask)) ** 2, mask)
  return jnp.where(var_r > 0, 1.0 - var_e / var_r, jnp.nan)


def make_optimizer(config: PPOConfig) -> tuple[optax.GradientTransformation, optax.Schedule]:
  steps = config.num_updates * config.update_epochs * config.num_minibatches
  lr = (optax.linear_schedule(config.learning_rate, 0.0, steps) if config.anneal_lr
        else optax.constant_schedule(config.learning_rate))
  tx = optax.chain(optax.clip_by_global_norm(config.max_grad_norm), optax.adam(lr, eps=config.adam_eps))
  return tx, lr


def default_unroll(config: PPOConfig, image_obs: bool) -> int | bool:
  if config.scan_unroll is not None:
    return config.scan_unroll
  # NOTE: reported for XLA:CPU: a conv gradient step inside a rolled scan runs ~12x slower than unrolled.
  return True if (image_obs and jax.default_backend() == "cpu") else 1


def default_chunks(config: PPOConfig, image_obs: bool) -> int:
  if config.forward_chunks is not None:
    return config.forward_chunks
  return cpu_conv_chunks(image_obs, config.minibatch_size)


def init_state(config: PPOConfig, network: nn.Module, obs_shape, key: chex.PRNGKey) -> PPOState:
  key, init_key, actor_key = jax.random.split(key, 3)
  dummy = jnp.zeros((1,) + tuple(obs_shape), jnp.uint8 if len(obs_shape) == 3 else jnp.float32)
  params = network.init(init_key, dummy)
  tx, _ = make_optimizer(config)
  vec_shape = () if len(obs_shape) == 3 else tuple(obs_shape)
  return PPOState(params=params, opt_state=tx.init(params), obs_norm=normalize.init(vec_shape),
                  ret_norm=normalize.init(), returns=jnp.zeros(config.num_envs, jnp.float32), key=key,
                  actor_key=actor_key, update=jnp.zeros((), jnp.int32), global_step=jnp.zeros((), jnp.int32))


def split_agents(traj, num_agents: int):
  """A rollout of K agents' envs side by side ([T, K * N, ...]; last_obs [K * N, ...]) -> [K, T, N, ...] per field."""
  return jax.tree_util.tree_map_with_path(
      lambda path, x: split_axis(x, num_agents, env_axis(path)), traj)


def make_update_fn(config: PPOConfig, network: nn.Module, discrete: bool, image_obs: bool):
  """Returns `update(state, traj) -> (state, metrics)` for one agent; `traj` is an `envs.rollout.Trajectory`."""
  dist = distribution(discrete)
  tx, schedule = make_optimizer(config)
  unroll, chunks = default_unroll(config, image_obs), default_chunks(config, image_obs)
  E, M = config.update_epochs, config.num_minibatches

  def loss_fn(params, mb):
    policy_params, values = apply_chunked(network, params, mb["obs"], chunks)
    return ppo_loss(dist.log_prob(policy_params, mb["actions"]), dist.entropy(policy_params), values, mb["logp"],
                    mb["values"], mb["advantages"], mb["returns"], mb["mask"], clip_coef=config.clip_coef,
                    clip_vloss=config.clip_vloss, ent_coef=config.ent_coef, vf_coef=config.vf_coef,
                    norm_adv=config.norm_adv)

  def minibatch_step(carry, mb):
    params, opt_state = carry
    (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, mb)
    updates, opt_state = tx.update(grads, opt_state, params)
    metrics = dict(metrics, loss=loss, grad_norm=optax.tree.norm(grads))
    return (optax.apply_updates(params, updates), opt_state), metrics

  def update(state: PPOState, traj) -> tuple[PPOState, dict]:
    T, N = traj.rewards.shape
    rewards, ret_norm, returns_acc = traj.rewards, state.ret_norm, state.returns
    if config.normalize_reward:
      dones = jnp.maximum(traj.terminations, traj.truncations)
      rewards, ret_norm, returns_acc = normalize.scale_rewards(ret_norm, returns_acc, rewards, dones, traj.mask,
                                                               config.gamma)
    last_obs = normalize.normalize(state.obs_norm, traj.last_obs) if config.normalize_obs else traj.last_obs
    _, last_value = network.apply(state.params, last_obs)
    values = jnp.concatenate([traj.values, last_value[None]], axis=0)
    advantages, returns = gae_batch(rewards, values, traj.terminations, traj.truncations, config.gamma,
                                    config.gae_lambda)
    flat = dict(obs=traj.obs, actions=traj.actions, logp=traj.logp, values=traj.values, advantages=advantages,
                returns=returns, mask=traj.mask)
    flat = jax.tree.map(lambda x: x.reshape((T * N,) + x.shape[2:]), flat)

    def epoch(carry, key):
      perm = jax.random.permutation(key, T * N)
      shuffled = jax.tree.map(lambda x: x[perm].reshape((M, -1) + x.shape[1:]), flat)
      return jax.lax.scan(minibatch_step, carry, shuffled, unroll=unroll)

    key, *epoch_keys = jax.random.split(state.key, E + 1)
    (params, opt_state), metrics = jax.lax.scan(epoch, (state.params, state.opt_state), jnp.stack(epoch_keys),
                                                unroll=unroll)
    metrics = jax.tree.map(jnp.mean, metrics)
    metrics["learning_rate"] = schedule(state.update * E * M)
    metrics["explained_variance"] = explained_variance(traj.values, returns, traj.mask)
    state = state.replace(params=params, opt_state=opt_state, ret_norm=ret_norm, returns=returns_acc, key=key,
                          update=state.update + 1, global_step=state.global_step + T * N)
    return state, metrics

  return update
