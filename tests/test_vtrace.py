"""V-trace against the paper's sum form written as plain loops, on-policy equivalences, and split invariance."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from algorithms.gae import gae
from algorithms.vtrace import vtrace, vtrace_batch


def vtrace_reference(values, r, log_rhos, term, trunc, gamma, rho_bar, c_bar, lam):
  """Espeholt et al. 2018, eq. 1: v_s = V(x_s) + sum_{t>=s} gamma^{t-s} (prod_{s<=i<t} c_i) delta_t, the sum running
  to the end of the episode (or the trajectory); delta_t bootstraps except at termination."""
  T = len(r)
  rhos = np.exp(log_rhos)
  rho_c = np.minimum(rho_bar, rhos)
  cs = lam * np.minimum(c_bar, rhos)
  deltas = [rho_c[t] * (r[t] + (0.0 if term[t] else gamma * values[t + 1]) - values[t]) for t in range(T)]
  vs = np.zeros(T)
  for s in range(T):
    total, weight = 0.0, 1.0
    for t in range(s, T):
      total += weight * deltas[t]
      if term[t] or trunc[t]:
        break
      weight *= gamma * cs[t]
    vs[s] = values[s] + total
  adv = np.zeros(T)
  for s in range(T):
    if term[s]:
      nxt = 0.0
    elif trunc[s] or s == T - 1:
      nxt = values[s + 1]
    else:
      nxt = vs[s + 1]
    adv[s] = rho_c[s] * (r[s] + gamma * nxt - values[s])
  return vs, adv


@pytest.mark.parametrize("seed, rho_bar, c_bar, lam", [(0, 1.0, 1.0, 1.0), (1, 1.0, 0.5, 1.0), (2, 2.0, 0.9, 0.95),
                                                      (3, 0.8, 1.2, 0.7)])
def test_vtrace_matches_paper_sum_form(seed, rho_bar, c_bar, lam):
  rng = np.random.default_rng(seed)
  T = 30
  values, r = rng.normal(size=T + 1), rng.normal(size=T)
  log_rhos = rng.normal(scale=0.7, size=T)
  term = rng.random(T) < 0.1
  trunc = (rng.random(T) < 0.1) & ~term
  term[5], trunc[12] = True, True  # at least one of each inside the trajectory
  vs, adv = vtrace(*(jnp.asarray(x, jnp.float32) for x in (values, r, log_rhos, term, trunc)), 0.97, rho_bar, c_bar,
                   lam)
  ref_vs, ref_adv = vtrace_reference(values, r, log_rhos, term, trunc, 0.97, rho_bar, c_bar, lam)
  np.testing.assert_allclose(vs, ref_vs, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(adv, ref_adv, rtol=1e-4, atol=1e-4)


def test_on_policy_is_the_n_step_bootstrapped_return():
  rng = np.random.default_rng(4)
  T, gamma = 10, 0.9
  values, r = rng.normal(size=T + 1).astype(np.float32), rng.normal(size=T).astype(np.float32)
  zeros = jnp.zeros(T)
  vs, _ = vtrace(values, r, zeros, zeros, zeros, gamma)
  expected = [sum(gamma ** (k - s) * r[k] for k in range(s, T)) + gamma ** (T - s) * values[T] for s in range(T)]
  np.testing.assert_allclose(vs, expected, rtol=1e-5)


@pytest.mark.parametrize("lam", [0.0, 0.5, 0.95])
def test_on_policy_with_lambda_is_the_lambda_return(lam):
  rng = np.random.default_rng(5)
  T = 25
  values, r = rng.normal(size=T + 1).astype(np.float32), rng.normal(size=T).astype(np.float32)
  term = jnp.zeros(T).at[7].set(1)
  trunc = jnp.zeros(T).at[15].set(1)
  vs, _ = vtrace(values, r, jnp.zeros(T), term, trunc, 0.99, lambda_=lam)
  _, lambda_return = gae(r, values, term, trunc, 0.99, lam)
  np.testing.assert_allclose(vs, lambda_return, rtol=1e-5, atol=1e-5)


def test_split_at_episode_boundary_gives_the_same_targets():
  rng = np.random.default_rng(6)
  T = 20
  values = jnp.asarray(rng.normal(size=T + 1), jnp.float32)
  r, log_rhos = (jnp.asarray(rng.normal(size=T), jnp.float32) for _ in range(2))
  term, trunc = jnp.zeros(T).at[9].set(1), jnp.zeros(T)
  whole = vtrace(values, r, log_rhos, term, trunc, 0.99, 1.0, 1.0)
  first = vtrace(values[:11], r[:10], log_rhos[:10], term[:10], trunc[:10], 0.99, 1.0, 1.0)
  second = vtrace(values[10:], r[10:], log_rhos[10:], term[10:], trunc[10:], 0.99, 1.0, 1.0)
  for w, a, b in zip(whole, first, second):
    np.testing.assert_allclose(w, jnp.concatenate([a, b]), rtol=1e-6)


def test_targets_carry_no_gradient_and_batch_is_time_major():
  T, B = 6, 3
  rng = np.random.default_rng(7)
  values = jnp.asarray(rng.normal(size=(T + 1, B)), jnp.float32)
  r, lr = (jnp.asarray(rng.normal(size=(T, B)), jnp.float32) for _ in range(2))
  z = jnp.zeros((T, B))
  grad = jax.grad(lambda v: vtrace_batch(v, r, lr, z, z, 0.99, 1.0, 1.0, 1.0, None)[0].sum())(values)
  assert float(jnp.abs(grad).sum()) == 0.0
  vs, adv = vtrace_batch(values, r, lr, z, z, 0.99, 1.0, 1.0, 1.0, None)
  assert vs.shape == (T, B) and adv.shape == (T, B)
  np.testing.assert_allclose(vs[:, 1], vtrace(values[:, 1], r[:, 1], lr[:, 1], z[:, 1], z[:, 1], 0.99)[0],
                             rtol=1e-6)
