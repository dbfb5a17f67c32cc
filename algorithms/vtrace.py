"""V-trace off-policy targets (Espeholt et al. 2018, IMPALA, arXiv 1802.01561, section 4)."""
from __future__ import annotations

import chex
import jax
import jax.numpy as jnp


def vtrace(values: chex.Array, r_t: chex.Array, log_rhos: chex.Array, terminated_t: chex.Array,
           truncated_t: chex.Array, gamma: float, rho_bar: float = 1.0, c_bar: float = 1.0, lambda_: float = 1.0,
           pg_rho_bar: float | None = None) -> tuple[chex.Array, chex.Array]:
  """V-trace targets and policy-gradient advantages over one time-major trajectory.

  With rho_t = min(rho_bar, pi(a_t|x_t) / mu(a_t|x_t)) and c_t = lambda * min(c_bar, pi/mu) (paper eq. 1 and its
  lambda variant in remark 5):

    delta_t = rho_t (r_t + gamma_t V(x_{t+1}) - V(x_t))
    v_s     = V(x_s) + delta_s + gamma_s c_s (v_{s+1} - V(x_{s+1}))          (the recursive form, section 4.1)
    A_s     = min(pg_rho_bar, pi/mu) (r_s + gamma_s v_{s+1} - V(x_s))         (the actor-critic advantage, 4.2)

  gamma_t is 0 where step t terminated (no bootstrap). Where step t was truncated, delta_t bootstraps from
  V(x_{t+1}) (the episode's real last observation), the trace stops (v_t = V(x_t) + delta_t) and A_t uses V(x_{t+1})
  in place of v_{t+1}, which belongs to the next episode. Targets carry no gradient.

  Args:
    values: V(x_t) for t = 0..T [T + 1]; values[T] bootstraps the last step.
    r_t: rewards [T].
    log_rhos: log pi(a_t|x_t) - log mu(a_t|x_t) [T] (target minus behaviour log-probabilities).
    terminated_t, truncated_t: [T], 1 where step t ended its episode that way.
    gamma: discount.
    rho_bar, c_bar, lambda_: truncation levels and the trace-mixing lambda.
    pg_rho_bar: truncation of the importance weight in A_s (default rho_bar).

  Returns:
    (v_s [T], A_s [T]), both stop-gradiented.
  """
  chex.assert_rank([values, r_t, log_rhos, terminated_t, truncated_t], 1)
  chex.assert_equal_shape([r_t, log_rhos, terminated_t, truncated_t])
  chex.assert_axis_dimension(values, 0, r_t.shape[0] + 1)
  values = jax.lax.stop_gradient(values)
  rhos = jnp.exp(jax.lax.stop_gradient(log_rhos))
  not_term = 1.0 - terminated_t.astype(values.dtype)
  trunc = truncated_t.astype(values.dtype)
  cont = not_term * (1.0 - trunc)
  clipped_rhos = jnp.minimum(rho_bar, rhos)
  cs = lambda_ * jnp.minimum(c_bar, rhos)
  deltas = clipped_rhos * (r_t + gamma * not_term * values[1:] - values[:-1])

  def step(acc, xs):
    delta, discount_c = xs
    acc = delta + discount_c * acc
    return acc, acc

  _, vs_minus_v = jax.lax.scan(step, jnp.zeros_like(values[0]), (deltas, gamma * cont * cs), reverse=True)
  vs = values[:-1] + vs_minus_v
  vs_tp1 = jnp.concatenate([vs[1:], values[-1:]])
  next_value = trunc * values[1:] + (1.0 - trunc) * vs_tp1
  pg_rhos = jnp.minimum(rho_bar if pg_rho_bar is None else pg_rho_bar, rhos)
  advantages = pg_rhos * (r_t + gamma * not_term * next_value - values[:-1])
  return jax.lax.stop_gradient(vs), jax.lax.stop_gradient(advantages)


# Batched over trajectories: time-major [T, B] inputs, [T + 1, B] values.
vtrace_batch = jax.vmap(vtrace, in_axes=(1, 1, 1, 1, 1, None, None, None, None, None), out_axes=1)
