"""Acting functions for actor-critic agents (PPO and IMPALA alike): jitted, called by the env side's loops."""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from algorithms import normalize
from networks import distribution


def make_act_fn(network: nn.Module, discrete: bool, normalize_obs: bool, num_agents: int = 1):
  """Jitted `act(params, carry, obs) -> (packed, carry)` for the rollout; carry is `(obs_norm, key)`.

  With `num_agents` K > 1, params and carry are stacked over agents and obs [K * N, ...] holds agent j's envs in
  rows j * N ... (j + 1) * N - 1; each agent acts on its own rows, and `packed` keeps that row order.

  `packed` is one float32 array [N, K] = [action (1 column if discrete, else A), log-prob, value, normalised obs
  (only with normalisation)], so the host fetches one buffer per step.
  NOTE: one device-to-host copy instead of four saves ~60 us a step on CPU, a fifth of a MuJoCo step with 1 env.
  With normalisation the statistics are updated with each observation before it is used.
  """
  dist = distribution(discrete)

  def act(params, carry, obs):
    obs_norm, key = carry
    x = obs
    if normalize_obs:
      obs_norm = normalize.update(obs_norm, obs)
      x = normalize.normalize(obs_norm, obs)
    policy_params, value = network.apply(params, x)
    key, sample_key = jax.random.split(key)
    action = dist.sample(sample_key, policy_params)
    logp = dist.log_prob(policy_params, action)
    cols = [action.reshape(action.shape[0], -1).astype(jnp.float32), logp[:, None], value[:, None]]
    if normalize_obs:
      cols.append(x.reshape(x.shape[0], -1))
    return jnp.concatenate(cols, axis=1), (obs_norm, key)

  if num_agents == 1:
    return jax.jit(act)

  @jax.jit
  def act_agents(params, carry, obs):
    packed, carry = jax.vmap(act)(params, carry, obs.reshape((num_agents, -1) + obs.shape[1:]))
    return packed.reshape((-1,) + packed.shape[2:]), carry

  return act_agents


def make_greedy_fn(network: nn.Module, discrete: bool, normalize_obs: bool):
  """Jitted `greedy(params, obs_norm, obs) -> action` (the distribution's mode), statistics frozen."""
  dist = distribution(discrete)

  @jax.jit
  def greedy(params, obs_norm, obs):
    x = normalize.normalize(obs_norm, obs) if normalize_obs else obs
    policy_params, _ = network.apply(params, x)
    return dist.mode(policy_params)

  return greedy


def make_sample_fn(network: nn.Module, discrete: bool, normalize_obs: bool):
  """Jitted `sample(params, obs_norm, key, obs) -> action` (a draw from the policy), statistics frozen."""
  dist = distribution(discrete)

  @jax.jit
  def sample(params, obs_norm, key, obs):
    x = normalize.normalize(obs_norm, obs) if normalize_obs else obs
    policy_params, _ = network.apply(params, x)
    return dist.sample(key, policy_params)

  return sample
