"""PPO loss on a case worked by hand, masking of auto-reset steps, normaliser statistics."""
import jax.numpy as jnp
import numpy as np
import pytest

from algorithms import normalize
from algorithms.ppo import explained_variance, ppo_loss

KW = dict(clip_coef=0.2, clip_vloss=True, ent_coef=0.01, vf_coef=0.5, norm_adv=False)


def test_ppo_loss_worked_by_hand():
  # Two samples, eps = 0.2.
  # Sample 0: ratio = e^{ln 1.5} = 1.5, A = +1 -> min(1.5, clip 1.2) * 1 = 1.2 -> pg term -1.2 (clipped).
  # Sample 1: ratio = 0.5, A = +2 -> min(1.0, clip 0.8 * 2 = 1.6) = 1.0 -> pg term -1.0 (unclipped).
  # pg_loss = mean(-1.2, -1.0) = -1.1.
  # Values: new (1.0, 0.0), old (0.5, 0.0), returns (2.0, 1.0):
  #   sample 0: unclipped (1 - 2)^2 = 1; clipped V = 0.5 + clip(0.5, +-0.2) = 0.7 -> (0.7 - 2)^2 = 1.69; max 1.69.
  #   sample 1: unclipped 1; clipped V = 0 -> 1; max 1.  v_loss = 0.5 * mean(1.69, 1) = 0.6725.
  # entropy mean 1.0; loss = -1.1 - 0.01 * 1.0 + 0.5 * 0.6725 = -0.77375.
  new_logp = jnp.log(jnp.array([1.5, 0.5]))
  loss, m = ppo_loss(new_logp, jnp.ones(2), jnp.array([1.0, 0.0]), jnp.zeros(2), jnp.array([0.5, 0.0]),
                     jnp.array([1.0, 2.0]), jnp.array([2.0, 1.0]), jnp.ones(2), **KW)
  assert float(m["policy_loss"]) == pytest.approx(-1.1, abs=1e-6)
  assert float(m["value_loss"]) == pytest.approx(0.6725, abs=1e-6)
  assert float(loss) == pytest.approx(-0.77375, abs=1e-6)
  assert float(m["clip_frac"]) == pytest.approx(1.0)  # both ratios lie outside [0.8, 1.2]
  # approx KL = mean((r - 1) - ln r) = ((0.5 - ln 1.5) + (-0.5 - ln 0.5)) / 2
  assert float(m["approx_kl"]) == pytest.approx(((0.5 - np.log(1.5)) + (-0.5 - np.log(0.5))) / 2, abs=1e-6)


def test_masked_samples_do_not_count():
  rng = np.random.default_rng(0)
  args = [jnp.asarray(rng.normal(size=6), jnp.float32) for _ in range(7)]
  mask = jnp.array([1, 1, 1, 0, 0, 0], jnp.float32)
  kw = dict(KW, norm_adv=True)
  full, m_full = ppo_loss(*[a[:3] for a in args], jnp.ones(3), **kw)
  masked, m_masked = ppo_loss(*args, mask, **kw)
  assert float(masked) == pytest.approx(float(full), rel=1e-5)
  for k in m_full:
    assert float(m_masked[k]) == pytest.approx(float(m_full[k]), rel=1e-5, abs=1e-7)


def test_explained_variance():
  returns = jnp.array([1.0, 2.0, 3.0, 4.0])
  assert float(explained_variance(returns, returns, jnp.ones(4))) == pytest.approx(1.0)
  assert float(explained_variance(jnp.zeros(4) + 2.5, returns, jnp.ones(4))) == pytest.approx(0.0)


def test_running_stats_match_numpy():
  rng = np.random.default_rng(0)
  batches = [rng.normal(3.0, 2.0, size=(5, 4)) for _ in range(20)]
  stats = normalize.init((4,))
  for b in batches:
    stats = normalize.update(stats, jnp.asarray(b))
  data = np.concatenate(batches)
  np.testing.assert_allclose(stats.mean, data.mean(0), rtol=1e-4)
  np.testing.assert_allclose(stats.var, data.var(0), rtol=1e-3)


def test_reward_scaling_follows_discounted_return():
  # One env, rewards 1 each step, episode ends after step 2: R = 1, 1.5, 1.75 (gamma 0.5) then resets to 1.
  r = jnp.ones((4, 1))
  done = jnp.array([[0.0], [0.0], [1.0], [0.0]])
  scaled, stats, returns = normalize.scale_rewards(normalize.init(), jnp.zeros(1), r, done, jnp.ones((4, 1)), 0.5)
  seen = np.array([1.0, 1.5, 1.75, 1.0])
  assert float(stats.mean) == pytest.approx(seen.mean(), rel=1e-3)
  assert float(returns[0]) == pytest.approx(1.0)  # carried into the next rollout
  assert float(scaled[-1, 0]) == pytest.approx(1.0 / np.sqrt(float(stats.var) + 1e-8), rel=1e-5)
