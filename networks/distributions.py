"""Action distributions over network outputs: categorical (logits) and diagonal Gaussian (mean, log_std)."""
from __future__ import annotations

import jax
import jax.numpy as jnp


class Categorical:
  """pi(a|s) = softmax(logits)[a]."""

  @staticmethod
  def sample(key, logits):
    return jax.random.categorical(key, logits)

  @staticmethod
  def mode(logits):
    return jnp.argmax(logits, axis=-1)

  @staticmethod
  def log_prob(logits, actions):
    logp = jax.nn.log_softmax(logits)
    return jnp.take_along_axis(logp, actions[..., None].astype(jnp.int32), axis=-1)[..., 0]

  @staticmethod
  def entropy(logits):
    logp = jax.nn.log_softmax(logits)
    return -jnp.sum(jnp.exp(logp) * logp, axis=-1)


class DiagGaussian:
  """N(mean, diag(exp(log_std)^2)); actions are sampled unbounded and clipped by the env side only."""

  @staticmethod
  def sample(key, params):
    mean, log_std = params
    return mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape)

  @staticmethod
  def mode(params):
    return params[0]

  @staticmethod
  def log_prob(params, actions):
    mean, log_std = params
    z = (actions - mean) * jnp.exp(-log_std)
    return jnp.sum(-0.5 * z**2 - log_std - 0.5 * jnp.log(2 * jnp.pi), axis=-1)

  @staticmethod
  def entropy(params):
    _, log_std = params
    return jnp.sum(log_std + 0.5 * jnp.log(2 * jnp.pi * jnp.e), axis=-1)


def distribution(discrete: bool):
  return Categorical if discrete else DiagGaussian
