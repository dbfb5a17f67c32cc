"""GAE against a loop written from the paper, a case worked by hand, and the auto-reset invariance."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from algorithms.gae import gae, gae_batch


def gae_reference(r, v, term, trunc, gamma, lam):
  """Schulman et al. 2016 eq. 16, as a backwards loop; episodes end at term or trunc; trunc bootstraps."""
  T = len(r)
  adv = np.zeros(T)
  next_adv = 0.0
  for t in reversed(range(T)):
    bootstrap = 0.0 if term[t] else v[t + 1]
    delta = r[t] + gamma * bootstrap - v[t]
    if term[t] or trunc[t]:
      next_adv = 0.0
    adv[t] = delta + gamma * lam * next_adv
    next_adv = adv[t]
  return adv, adv + v[:-1]


@pytest.mark.parametrize("seed", range(5))
def test_gae_matches_reference_loop(seed):
  rng = np.random.default_rng(seed)
  T = 50
  r, v = rng.normal(size=T), rng.normal(size=T + 1)
  term = rng.random(T) < 0.1
  trunc = (rng.random(T) < 0.1) & ~term
  assert term.any() and trunc.any()
  adv, ret = gae(jnp.asarray(r, jnp.float32), jnp.asarray(v, jnp.float32), jnp.asarray(term), jnp.asarray(trunc),
                 0.99, 0.95)
  ref_adv, ref_ret = gae_reference(r, v, term, trunc, 0.99, 0.95)
  np.testing.assert_allclose(adv, ref_adv, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(ret, ref_ret, rtol=1e-5, atol=1e-5)


def test_gae_worked_by_hand():
  # gamma = 0.5, lambda = 0.5; T = 3: step 0 ordinary, step 1 truncated, step 2 terminated.
  r = jnp.array([1.0, 2.0, 3.0])
  v = jnp.array([0.5, 1.0, 4.0, 8.0])  # v[3] = 8 must never be used: step 2 terminated
  term = jnp.array([0, 0, 1])
  trunc = jnp.array([0, 1, 0])
  adv, ret = gae(r, v, term, trunc, 0.5, 0.5)
  # step 2: terminal, delta = 3 - 4 = -1, A = -1.
  # step 1: truncated, bootstraps: delta = 2 + 0.5 * 4 - 1 = 3, trace cut: A = 3.
  # step 0: delta = 1 + 0.5 * 1 - 0.5 = 1, A = 1 + 0.25 * 3 = 1.75.
  np.testing.assert_allclose(adv, [1.75, 3.0, -1.0])
  np.testing.assert_allclose(ret, [2.25, 4.0, 3.0])


def test_termination_never_bootstraps_truncation_does():
  r = jnp.zeros(1)
  v = jnp.array([0.0, 10.0])
  term_adv, _ = gae(r, v, jnp.array([1]), jnp.array([0]), 0.9, 1.0)
  trunc_adv, _ = gae(r, v, jnp.array([0]), jnp.array([1]), 0.9, 1.0)
  assert float(term_adv[0]) == 0.0
  assert float(trunc_adv[0]) == pytest.approx(9.0)


def test_split_at_episode_boundary_gives_same_advantages():
  rng = np.random.default_rng(0)
  r, v = jnp.asarray(rng.normal(size=20), jnp.float32), jnp.asarray(rng.normal(size=21), jnp.float32)
  term = jnp.zeros(20).at[9].set(1)
  trunc = jnp.zeros(20)
  whole, _ = gae(r, v, term, trunc, 0.99, 0.95)
  first, _ = gae(r[:10], v[:11], term[:10], trunc[:10], 0.99, 0.95)
  second, _ = gae(r[10:], v[10:], term[10:], trunc[10:], 0.99, 0.95)
  np.testing.assert_allclose(whole, jnp.concatenate([first, second]), rtol=1e-6)


def test_gae_batch_is_time_major_vmap():
  rng = np.random.default_rng(1)
  T, N = 7, 3
  r, v = rng.normal(size=(T, N)).astype(np.float32), rng.normal(size=(T + 1, N)).astype(np.float32)
  term = (rng.random((T, N)) < 0.2).astype(np.float32)
  trunc = np.zeros((T, N), np.float32)
  adv, ret = jax.jit(gae_batch, static_argnums=(4, 5))(r, v, term, trunc, 0.99, 0.95)
  assert adv.shape == (T, N) and ret.shape == (T, N) and adv.dtype == jnp.float32
  for n in range(N):
    ref, _ = gae_reference(r[:, n], v[:, n], term[:, n], trunc[:, n], 0.99, 0.95)
    np.testing.assert_allclose(adv[:, n], ref, rtol=1e-5, atol=1e-5)
