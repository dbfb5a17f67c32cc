"""Running mean/variance statistics for observation normalisation and return-based reward scaling.

Pure functions over a pytree, so the statistics live in the training state and are checkpointed with it.
"""
from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from algorithms.parallel import all_sum

CLIP = 10.0
EPS = 1e-8


@struct.dataclass
class RunningStats:
  mean: chex.Array
  var: chex.Array
  count: chex.Array


def init(shape=()) -> RunningStats:
  return RunningStats(jnp.zeros(shape, jnp.float32), jnp.ones(shape, jnp.float32), jnp.asarray(1e-4, jnp.float32))


def update(stats: RunningStats, x: chex.Array, weight: chex.Array | None = None,
           axis_name: str | None = None) -> RunningStats:
  """Merges a batch `x` [B, *shape] (optionally weighted [B]) with Chan et al.'s parallel variance formula.

  With `axis_name` the batch is every learner device's rows together (its moments are summed over devices).
  """
  x = x.astype(jnp.float32)
  w = jnp.ones(x.shape[:1], jnp.float32) if weight is None else weight.astype(jnp.float32)
  wx = w.reshape((-1,) + (1,) * (x.ndim - 1))
  n = all_sum(jnp.sum(w), axis_name)
  safe_n = jnp.maximum(n, 1.0)
  batch_mean = all_sum(jnp.sum(wx * x, axis=0), axis_name) / safe_n
  batch_var = all_sum(jnp.sum(wx * (x - batch_mean) ** 2, axis=0), axis_name) / safe_n
  return merge_moments(stats, n, batch_mean, batch_var)


def merge_moments(stats: RunningStats, n, batch_mean, batch_var) -> RunningStats:
  """Merges a batch given by its weight `n`, mean and variance (Chan et al.); unchanged when n is 0."""
  total = stats.count + n
  delta = batch_mean - stats.mean
  mean = stats.mean + delta * n / total
  m2 = stats.var * stats.count + batch_var * n + delta**2 * stats.count * n / total
  return RunningStats(mean, m2 / total, total)


def merge(base: RunningStats, results: list[RunningStats]) -> RunningStats:
  """Statistics of `base` plus every result's own data, where each result started from `base` and took in its own
  batch (workers acting in parallel with the same starting statistics). Host-side, in float64: each batch's
  moments are recovered from the difference of two accumulated moments."""
  f64 = lambda s: [np.asarray(x, np.float64) for x in (s.mean, s.var, s.count)]  # noqa: E731
  b_mean, b_var, b_count = f64(base)
  mean, m2, count = b_mean, b_var * b_count, b_count
  for result in results:
    r_mean, r_var, r_count = f64(result)
    n = r_count - b_count
    if n <= 0:
      continue
    batch_mean = (r_mean * r_count - b_mean * b_count) / n
    batch_m2 = np.maximum(r_var * r_count - b_var * b_count - (batch_mean - b_mean) ** 2 * b_count * n / r_count, 0.0)
    total = count + n
    delta = batch_mean - mean
    mean, m2, count = mean + delta * n / total, m2 + batch_m2 + delta**2 * count * n / total, total
  return RunningStats(jnp.asarray(mean, jnp.float32), jnp.asarray(m2 / count, jnp.float32),
                      jnp.asarray(count, jnp.float32))


def normalize(stats: RunningStats, x: chex.Array) -> chex.Array:
  return jnp.clip((x.astype(jnp.float32) - stats.mean) / jnp.sqrt(stats.var + EPS), -CLIP, CLIP)


def scale_rewards(stats: RunningStats, returns: chex.Array, r_t: chex.Array, done_t: chex.Array,
                  mask_t: chex.Array, gamma: float,
                  axis_name: str | None = None) -> tuple[chex.Array, RunningStats, chex.Array]:
  """Return-based reward scaling (as baselines' VecNormalize): r_t / std(R), R_t = gamma R_{t-1} + r_t.

  Args:
    stats: running statistics of the discounted return R.
    returns: R per env [N] carried over from the previous rollout.
    r_t, done_t, mask_t: [T, N]; done_t ends R after step t; steps with mask 0 (auto-reset) are not counted.
    gamma: discount of R.
    axis_name: learner devices holding the other envs; the statistics count all of them.

  Returns:
    (scaled rewards [T, N] clipped to +-10, new stats, new returns [N]).

  The statistics take in each step's returns in turn, as a per-step `update` would; R does not depend on them, so
  the per-step moments of every device's envs come from one reduction (shifted by the running mean for accuracy).
  """
  def ret_step(ret, xs):
    r, done = xs
    ret = ret * gamma + r
    return ret * (1.0 - done), ret

  returns, rets = jax.lax.scan(ret_step, returns, (r_t, done_t))  # rets[t]: R_t of every env, before any reset
  x = rets - stats.mean
  sums = all_sum(jnp.stack([jnp.sum(mask_t, 1), jnp.sum(mask_t * x, 1), jnp.sum(mask_t * x * x, 1)], 1), axis_name)
  n = sums[:, 0]
  shifted_mean = sums[:, 1] / jnp.maximum(n, 1.0)
  batch_var = jnp.maximum(sums[:, 2] / jnp.maximum(n, 1.0) - shifted_mean**2, 0.0)

  def stat_step(stats, xs):
    n, mean, var, r = xs
    stats = merge_moments(stats, n, mean, var)
    return stats, jnp.clip(r / jnp.sqrt(stats.var + EPS), -CLIP, CLIP)

  stats, scaled = jax.lax.scan(stat_step, stats, (n, shifted_mean + stats.mean, batch_var, r_t))
  return scaled, stats, returns
