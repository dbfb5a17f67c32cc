"""IMPALA learner: V-trace actor-critic loss and the jitted update (Espeholt et al. 2018).

Losses are summed over time and batch, as in the paper's implementation (scalable_agent) and PARL's example, so
their settings (the paper: lr 6e-4, RMSProp eps 0.01, batch 32 x unroll 20; PARL: Adam lr 1e-3, batch 20 x unroll
50; both baseline 0.5, entropy 0.01, grad-norm clip 40) mean what they meant there.
"""
from __future__ import annotations

from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from algorithms.impala.config import ImpalaConfig
from algorithms.parallel import all_sum, all_sum_flat, value_and_grad
from algorithms.vtrace import vtrace_batch
from networks import apply_chunked, cpu_conv_chunks, distribution


@struct.dataclass
class ImpalaState:
  """Everything needed to resume an IMPALA run, and nothing else."""
  params: Any
  opt_state: Any
  key: chex.Array          # seeds the actors' PRNGs
  update: chex.Array       # learner updates done (the parameter version)
  global_step: chex.Array  # agent steps consumed by the learner


def impala_loss(target_logp, entropy, values, behaviour_logp, rewards, terminations, truncations, mask, *,
                gamma: float, rho_bar: float, c_bar: float, lambda_: float, baseline_coef: float,
                ent_coef: float) -> tuple[chex.Array, dict]:
  """Summed V-trace actor-critic loss over a time-major batch [T, B] (values [T + 1, B]).

    L = -sum A_s log pi(a_s|x_s) + baseline_coef * 0.5 * sum (v_s - V(x_s))^2 - ent_coef * sum H(pi(.|x_s))

  A_s and v_s are V-trace's (stop-gradiented). Auto-reset steps (mask 0) do not count. The metrics mix units:
  `policy_loss` and `value_loss` are the loss's sums (so loss = policy_loss + baseline_coef * value_loss -
  ent_coef * n * entropy), `entropy`, `kl` and the rho statistics are means over the n counted samples.
  """
  log_rhos = target_logp - behaviour_logp
  vs, pg_adv = vtrace_batch(values, rewards, log_rhos, terminations, truncations, gamma, rho_bar, c_bar, lambda_,
                            None)
  pg_loss = -jnp.sum(mask * pg_adv * target_logp)
  baseline_loss = 0.5 * jnp.sum(mask * (vs - values[:-1]) ** 2)
  ent = jnp.sum(mask * entropy)
  loss = pg_loss + baseline_coef * baseline_loss - ent_coef * ent
  n = jnp.maximum(jnp.sum(mask), 1.0)
  rhos = jnp.exp(jax.lax.stop_gradient(log_rhos))
  metrics = dict(policy_loss=pg_loss, value_loss=baseline_loss, entropy=ent / n,
                 # sample estimate of KL(mu || pi) with a ~ mu
                 kl=jnp.sum(mask * -jax.lax.stop_gradient(log_rhos)) / n,
                 rho_mean=jnp.sum(mask * rhos) / n, rho_clip_frac=jnp.sum(mask * (rhos > rho_bar)) / n)
  return loss, metrics


def learning_rate_schedule(config: ImpalaConfig) -> optax.Schedule:
  """The learning rate at each learner update: linear to 0 over the run (the paper), piecewise constant (PARL: 1e-3,
  5e-4 from update 20,000, 1e-4 from 40,000), or constant."""
  if config.lr_schedule == "linear":
    return optax.linear_schedule(config.learning_rate, 0.0, config.num_updates)
  if config.lr_schedule == "piecewise":
    values = np.asarray((config.learning_rate,) + tuple(config.lr_values), np.float32)
    boundaries = np.asarray(config.lr_boundaries, np.int32)
    return lambda update: jnp.take(values, jnp.sum(update >= boundaries))
  return optax.constant_schedule(config.learning_rate)


def make_optimizer(config: ImpalaConfig) -> tuple[optax.GradientTransformation, optax.Schedule]:
  lr = learning_rate_schedule(config)
  if config.optimizer == "adam":
    opt = optax.adam(lr, b1=config.adam_b1, b2=config.adam_b2, eps=config.adam_eps)
  else:
    # NOTE: the paper's TensorFlow RMSProp adds eps inside the square root and starts its mean square at 1; optax's
    # `eps_in_sqrt=True, initial_scale=1.0` reproduces both. Momentum 0 (none).
    opt = optax.rmsprop(lr, decay=config.rmsprop_decay, eps=config.rmsprop_eps, eps_in_sqrt=True, initial_scale=1.0)
  return optax.chain(optax.clip_by_global_norm(config.max_grad_norm), opt), lr


def init_state(config: ImpalaConfig, network: nn.Module, obs_shape, key: chex.PRNGKey) -> ImpalaState:
  key, init_key = jax.random.split(key)
  dummy = jnp.zeros((1,) + tuple(obs_shape), jnp.uint8 if len(obs_shape) == 3 else jnp.float32)
  params = network.init(init_key, dummy)
  tx, _ = make_optimizer(config)
  return ImpalaState(params=params, opt_state=tx.init(params), key=key, update=jnp.zeros((), jnp.int32),
                     global_step=jnp.zeros((), jnp.int32))


def make_update_fn(config: ImpalaConfig, network: nn.Module, discrete: bool, image_obs: bool,
                   axis_name: str | None = None):
  """Returns `update(state, traj) -> (state, metrics)`; `traj` is an `envs.rollout.Trajectory` of [T, B].

  With `axis_name` (learner devices, `parallel.lift(devices=D)`) each device holds B / D trajectories: the summed
  losses and their gradients are summed over devices, which gives exactly the one-device update, and so are the
  metrics.
  """
  dist = distribution(discrete)
  tx, schedule = make_optimizer(config)

  def loss_fn(params, traj):
    T, B = traj.rewards.shape
    obs = jnp.concatenate([traj.obs, traj.last_obs[None].astype(traj.obs.dtype)], axis=0)
    flat = obs.reshape(((T + 1) * B,) + obs.shape[2:])
    chunks = config.forward_chunks or cpu_conv_chunks(image_obs, flat.shape[0])
    policy_params, values = apply_chunked(network, params, flat, chunks)
    policy_params = jax.tree.map(lambda x: x.reshape((T + 1, B) + x.shape[1:])[:T], policy_params)
    values = values.reshape(T + 1, B)
    return impala_loss(dist.log_prob(policy_params, traj.actions), dist.entropy(policy_params), values, traj.logp,
                       traj.rewards, traj.terminations, traj.truncations, traj.mask, gamma=config.gamma,
                       rho_bar=config.rho_bar, c_bar=config.c_bar, lambda_=config.vtrace_lambda,
                       baseline_coef=config.baseline_coef, ent_coef=config.ent_coef)

  def update(state: ImpalaState, traj) -> tuple[ImpalaState, dict]:
    (loss, metrics), grads = value_and_grad(loss_fn, axis_name)(state.params, traj)
    if axis_name is not None:  # per-sample means over all devices' samples, weighted by their counts; one collective
      n = jnp.sum(traj.mask)
      summed = ("policy_loss", "value_loss")
      total = all_sum_flat(dict(n=n, **{k: v if k in summed else v * n for k, v in metrics.items()}), axis_name)
      count = jnp.maximum(total.pop("n"), 1.0)
      metrics = {k: v if k in summed else v / count for k, v in total.items()}
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    metrics = dict(metrics, loss=loss, grad_norm=optax.tree.norm(grads), learning_rate=schedule(state.update))
    T, B = traj.rewards.shape
    state = state.replace(params=optax.apply_updates(state.params, updates), opt_state=opt_state,
                          update=state.update + 1, global_step=state.global_step + all_sum(T * B, axis_name))
    return state, metrics

  return update
