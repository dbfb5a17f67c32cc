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
from algorithms.gae import gae_batch, scan_unroll
from algorithms.parallel import all_gather, all_sum, env_axis, shard_offset, split_axis, value_and_grad
from algorithms.ppo.config import PPOConfig
from networks import apply_chunked, cpu_conv_chunks, distribution


@struct.dataclass
class PPOState:
  """Everything needed to resume a PPO run, and nothing else."""
  params: Any
  opt_state: Any
  obs_norm: normalize.RunningStats
  ret_norm: normalize.RunningStats
  scaling_returns: chex.Array  # [N] running discounted return per env, whose variance scales the rewards
  key: chex.Array          # learner PRNG (minibatch permutations)
  actor_key: chex.Array    # acting PRNG (action sampling)
  update: chex.Array       # updates done
  global_step: chex.Array  # agent steps done (envs x steps, auto-reset steps included)


def masked_moments(xs, mask, axis_name: str | None = None):
  """(count, [mean of x for x in xs], [variance of x ...]) over samples with mask 1 (every device's with
  `axis_name`), from one reduction of the counts, sums and sums of squares."""
  sums = jnp.stack([jnp.sum(mask)] + [jnp.sum(x * mask) for x in xs] + [jnp.sum(x * x * mask) for x in xs])
  sums = all_sum(sums, axis_name)
  count = jnp.maximum(sums[0], 1.0)
  means = [sums[1 + i] / count for i in range(len(xs))]
  variances = [jnp.maximum(sums[1 + len(xs) + i] / count - m * m, 0.0) for i, m in enumerate(means)]
  return count, means, variances


def ppo_loss(new_logp, entropy, new_values, old_logp, old_values, advantages, returns, mask, *, clip_coef: float,
             clip_vloss: bool, ent_coef: float, vf_coef: float, norm_adv: bool,
             axis_name: str | None = None) -> tuple[chex.Array, dict]:
  """PPO's clipped surrogate objective (Schulman et al. 2017, eq. 7 and 9), over one minibatch [B].

    L = -E[min(rho A, clip(rho, 1 - eps, 1 + eps) A)] + vf_coef * L_V - ent_coef * E[H]
    L_V = 0.5 * E[max((V - R)^2, (V_old + clip(V - V_old, -eps, eps) - R)^2)]   (or unclipped 0.5 (V - R)^2)

  Samples with mask 0 (auto-reset steps) do not count, in the means or in the advantage normalisation.
  With `axis_name` the minibatch is split over learner devices: the advantages are normalised with all devices'
  statistics, and the loss and metrics returned are this device's shares of the means over all devices' samples
  (their `all_sum` is the one-device value).

  Returns:
    (loss, metrics) with policy_loss, value_loss, entropy, approx_kl, clip_frac.
  """
  chex.assert_equal_shape([new_logp, entropy, new_values, old_logp, old_values, advantages, returns, mask])
  count, (mean,), (var,) = masked_moments([advantages], mask, axis_name)
  share = lambda x: jnp.sum(x * mask) / count  # noqa: E731
  if norm_adv:
    advantages = (advantages - mean) / (jnp.sqrt(var) + 1e-8)
  log_ratio = new_logp - old_logp
  ratio = jnp.exp(log_ratio)
  pg_loss = share(jnp.maximum(-advantages * ratio, -advantages * jnp.clip(ratio, 1 - clip_coef, 1 + clip_coef)))
  v_unclipped = (new_values - returns) ** 2
  if clip_vloss:
    v_clipped = (old_values + jnp.clip(new_values - old_values, -clip_coef, clip_coef) - returns) ** 2
    v_unclipped = jnp.maximum(v_unclipped, v_clipped)
  v_loss = 0.5 * share(v_unclipped)
  ent = share(entropy)
  loss = pg_loss - ent_coef * ent + vf_coef * v_loss
  metrics = dict(policy_loss=pg_loss, value_loss=v_loss, entropy=ent, approx_kl=share((ratio - 1.0) - log_ratio),
                 clip_frac=share((jnp.abs(ratio - 1.0) > clip_coef).astype(jnp.float32)))
  return loss, metrics


def explained_variance(values, returns, mask, axis_name: str | None = None):
  _, _, (var_r, var_e) = masked_moments([returns, returns - values], mask, axis_name)
  return jnp.where(var_r > 0, 1.0 - var_e / var_r, jnp.nan)


def stratified_minibatches(key: chex.PRNGKey, data: dict, num_minibatches: int, env_offset=0) -> dict:
  """Shuffles time-major data [T, N, ...] into [M, T / M * N, ...]: each env's T steps are permuted (with a key
  folded from the env's global index `env_offset + n`) and minibatch m takes T / M steps of every env.

  Every sample appears once per epoch, as with one flat permutation, but which steps of an env share a minibatch
  depends only on that env, so learner devices holding different envs build the shards of the same minibatches.
  """
  T, N = jax.tree.leaves(data)[0].shape[:2]
  keys = jax.vmap(lambda n: jax.random.fold_in(key, n))(env_offset + jnp.arange(N))
  steps = jax.vmap(lambda k: jax.random.permutation(k, T))(keys).T  # [T, N]: row t holds each env's t-th draw
  envs = jnp.arange(N)[None, :]
  return jax.tree.map(lambda x: x[steps, envs].reshape((num_minibatches, T // num_minibatches * N) + x.shape[2:]),
                      data)


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
                  ret_norm=normalize.init(), scaling_returns=jnp.zeros(config.num_envs, jnp.float32), key=key,
                  actor_key=actor_key, update=jnp.zeros((), jnp.int32), global_step=jnp.zeros((), jnp.int32))


def split_agents(traj, num_agents: int):
  """A rollout of K agents' envs side by side ([T, K * N, ...]; last_obs [K * N, ...]) -> [K, T, N, ...] per field."""
  return jax.tree_util.tree_map_with_path(
      lambda path, x: split_axis(x, num_agents, env_axis(path)), traj)


def make_update_fn(config: PPOConfig, network: nn.Module, discrete: bool, image_obs: bool,
                   axis_name: str | None = None):
  """Returns `update(state, traj) -> (state, metrics)` for one agent; `traj` is an `envs.rollout.Trajectory`.

  With `axis_name` (learner devices, `parallel.lift(devices=D)`) each device holds N / D of the envs: minibatches
  are the same as on one device (`stratified_minibatches`), every mean, the advantage normalisation and the return
  statistics count all devices' samples, and gradients are summed over devices, so the update is the one-device
  update up to float rounding.
  """
  dist = distribution(discrete)
  tx, schedule = make_optimizer(config)
  unroll, chunks = default_unroll(config, image_obs), default_chunks(config, image_obs)
  gae_unroll = scan_unroll(jax.default_backend())
  E, M = config.update_epochs, config.num_minibatches

  def loss_fn(params, mb):
    policy_params, values = apply_chunked(network, params, mb["obs"], chunks)
    return ppo_loss(dist.log_prob(policy_params, mb["actions"]), dist.entropy(policy_params), values, mb["logp"],
                    mb["values"], mb["advantages"], mb["returns"], mb["mask"], clip_coef=config.clip_coef,
                    clip_vloss=config.clip_vloss, ent_coef=config.ent_coef, vf_coef=config.vf_coef,
                    norm_adv=config.norm_adv, axis_name=axis_name)

  def minibatch_step(carry, mb):
    params, opt_state = carry
    (loss, metrics), grads = value_and_grad(loss_fn, axis_name, reduce_aux=True)(params, mb)
    updates, opt_state = tx.update(grads, opt_state, params)
    metrics = dict(metrics, loss=loss, grad_norm=optax.tree.norm(grads))
    return (optax.apply_updates(params, updates), opt_state), metrics

  def update(state: PPOState, traj) -> tuple[PPOState, dict]:
    T, N = traj.rewards.shape  # N: this device's envs
    offset = shard_offset(N, axis_name)
    rewards, ret_norm, returns_acc = traj.rewards, state.ret_norm, state.scaling_returns
    if config.normalize_reward:
      dones = jnp.maximum(traj.terminations, traj.truncations)
      rewards, ret_norm, returns_acc = normalize.scale_rewards(
          ret_norm, jax.lax.dynamic_slice_in_dim(returns_acc, offset, N), rewards, dones, traj.mask, config.gamma,
          axis_name)
      returns_acc = all_gather(returns_acc, axis_name)
    last_obs = normalize.normalize(state.obs_norm, traj.last_obs) if config.normalize_obs else traj.last_obs
    _, last_value = network.apply(state.params, last_obs)
    values = jnp.concatenate([traj.values, last_value[None]], axis=0)
    advantages, returns = gae_batch(rewards, values, traj.terminations, traj.truncations, config.gamma,
                                    config.gae_lambda, gae_unroll)
    data = dict(obs=traj.obs, actions=traj.actions, logp=traj.logp, values=traj.values, advantages=advantages,
                returns=returns, mask=traj.mask)

    def epoch(carry, key):
      return jax.lax.scan(minibatch_step, carry, stratified_minibatches(key, data, M, offset), unroll=unroll)

    key, *epoch_keys = jax.random.split(state.key, E + 1)
    (params, opt_state), metrics = jax.lax.scan(epoch, (state.params, state.opt_state), jnp.stack(epoch_keys),
                                                unroll=unroll)
    metrics = jax.tree.map(jnp.mean, metrics)
    metrics["learning_rate"] = schedule(state.update * E * M)
    metrics["explained_variance"] = explained_variance(traj.values, returns, traj.mask, axis_name)
    state = state.replace(params=params, opt_state=opt_state, ret_norm=ret_norm, scaling_returns=returns_acc, key=key,
                          update=state.update + 1, global_step=state.global_step + all_sum(T * N, axis_name))
    return state, metrics

  return update
