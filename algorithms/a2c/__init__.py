"""Advantage actor-critic (A2C), the synchronous form of A3C (Mnih et al. 2016, arXiv 1602.01783), with GAE
advantages: one gradient step per rollout. The worked example of "Adding an algorithm" (README): a package with its
config, state and update, and the one line that registers it; `python -m harness a2c --env CartPole-v1` trains it.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from algorithms import normalize
from algorithms.config import check_positive, check_range, fill_defaults
from algorithms.gae import gae_batch, scan_unroll
from algorithms.parallel import all_sum, value_and_grad
from algorithms.ppo import split_agents
from algorithms.registry import Algorithm, register
from networks import distribution

FAMILY_DEFAULTS = {
    "atari": dict(total_timesteps=10_000_000, num_envs=16, learning_rate=2.5e-4),
    "mujoco": dict(total_timesteps=1_000_000, num_envs=8, learning_rate=3e-4),
    "classic": dict(total_timesteps=300_000, num_envs=8, learning_rate=1e-3),
}


@dataclasses.dataclass(frozen=True)
class A2CConfig:
  """A2C hyperparameters. `None` takes the env family's default."""
  total_timesteps: int | None = None
  """Agent steps to train for (default: Atari 10M, MuJoCo 1M, classic 300K)."""
  num_envs: int | None = None
  """Parallel training envs (default: Atari 16, MuJoCo 8, classic 8)."""
  num_steps: int = 16
  """Steps per env per rollout; one gradient step per rollout."""
  learning_rate: float | None = None
  """Adam learning rate, constant (default: Atari 2.5e-4, MuJoCo 3e-4, classic 1e-3)."""
  gamma: float = 0.99
  """Discount factor."""
  gae_lambda: float = 0.95
  """GAE lambda (1: the n-step returns of A3C)."""
  ent_coef: float = 0.01
  """Entropy bonus coefficient."""
  vf_coef: float = 0.5
  """Value loss coefficient."""
  max_grad_norm: float = 0.5
  """Global gradient-norm clip."""
  normalize_obs: bool = False
  """Running observation normalisation, clipped to +-10."""

  def __post_init__(self):
    check_positive(self, "total_timesteps", "num_envs", "num_steps", "learning_rate", "max_grad_norm")
    check_positive(self, "ent_coef", "vf_coef", allow_zero=("ent_coef", "vf_coef"))
    check_range(self, "gamma", 0.0, 1.0)
    check_range(self, "gae_lambda", 0.0, 1.0)

  def resolve(self, family: str) -> "A2CConfig":
    return fill_defaults(self, FAMILY_DEFAULTS[family])

  @property
  def steps_per_update(self) -> int:
    return self.num_envs * self.num_steps

  @property
  def num_updates(self) -> int:
    return self.total_timesteps // self.steps_per_update


@struct.dataclass
class A2CState:
  params: Any
  opt_state: Any
  obs_norm: normalize.RunningStats
  actor_key: chex.Array    # acting PRNG (action sampling)
  update: chex.Array       # updates done
  global_step: chex.Array  # agent steps done


def make_optimizer(config: A2CConfig) -> optax.GradientTransformation:
  return optax.chain(optax.clip_by_global_norm(config.max_grad_norm), optax.adam(config.learning_rate))


def init_state(config: A2CConfig, network: nn.Module, obs_shape, key: chex.PRNGKey) -> A2CState:
  init_key, actor_key = jax.random.split(key)
  params = network.init(init_key, jnp.zeros((1,) + tuple(obs_shape), jnp.uint8 if len(obs_shape) == 3 else jnp.float32))
  return A2CState(params=params, opt_state=make_optimizer(config).init(params),
                  obs_norm=normalize.init(() if len(obs_shape) == 3 else tuple(obs_shape)), actor_key=actor_key,
                  update=jnp.zeros((), jnp.int32), global_step=jnp.zeros((), jnp.int32))


def make_update_fn(config: A2CConfig, network: nn.Module, discrete: bool, image_obs: bool,
                   axis_name: str | None = None):
  """update(state, traj) -> (state, metrics): the mean over unmasked samples of every device of

    L = -A_t log pi(a_t|x_t) + vf_coef * 0.5 (V(x_t) - R_t)^2 - ent_coef * H(pi(.|x_t)),

  A_t and R_t = A_t + V(x_t) from GAE over the rollout (values stop-gradiented for the targets).
  """
  dist = distribution(discrete)
  tx = make_optimizer(config)
  gae_unroll = scan_unroll(jax.default_backend())

  def loss_fn(params, obs_norm, traj):
    T, N = traj.rewards.shape
    last_obs = normalize.normalize(obs_norm, traj.last_obs) if config.normalize_obs else traj.last_obs
    obs = jnp.concatenate([traj.obs, last_obs[None].astype(traj.obs.dtype)]).reshape((-1,) + traj.obs.shape[2:])
    policy_params, values = network.apply(params, obs)
    values = values.reshape(T + 1, N)
    policy_params = jax.tree.map(lambda x: x.reshape((T + 1, N) + x.shape[1:])[:T], policy_params)
    advantages, returns = gae_batch(traj.rewards, jax.lax.stop_gradient(values), traj.terminations,
                                    traj.truncations, config.gamma, config.gae_lambda, gae_unroll)
    count = jnp.maximum(all_sum(jnp.sum(traj.mask), axis_name), 1.0)
    mean = lambda x: jnp.sum(x * traj.mask) / count  # noqa: E731  (this device's share of the mean)
    policy_loss = mean(-advantages * dist.log_prob(policy_params, traj.actions))
    value_loss = 0.5 * mean((values[:T] - returns) ** 2)
    entropy = mean(dist.entropy(policy_params))
    loss = policy_loss + config.vf_coef * value_loss - config.ent_coef * entropy
    return loss, dict(policy_loss=policy_loss, value_loss=value_loss, entropy=entropy)

  def update(state: A2CState, traj) -> tuple[A2CState, dict]:
    (loss, metrics), grads = value_and_grad(loss_fn, axis_name, reduce_aux=True)(state.params, state.obs_norm, traj)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    metrics = dict(metrics, loss=loss, grad_norm=optax.tree.norm(grads), learning_rate=config.learning_rate)
    T, N = traj.rewards.shape
    return state.replace(params=optax.apply_updates(state.params, updates), opt_state=opt_state,
                         update=state.update + 1, global_step=state.global_step + all_sum(T * N, axis_name)), metrics

  return update


register(Algorithm(name="a2c", config=A2CConfig, init_state=init_state, make_update_fn=make_update_fn,
                   metrics=("loss", "policy_loss", "value_loss", "entropy", "learning_rate", "grad_norm"),
                   source="rollouts", split_agents=split_agents))
