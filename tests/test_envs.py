"""Env ids and aliases, episode statistics under episodic life, truncation, and envpool's auto-reset step."""
import jax
import numpy as np
import pytest

import networks
from algorithms import acting, ppo
from algorithms.gae import gae_batch
from algorithms.ppo import PPOConfig
from envs import EpisodeTracker, UnknownEnvError, derive_flags, make_env, resolve_env
from envs.rollout import Rollout, evaluate


def test_atari_alias_maps_to_v5_with_the_same_protocol(capsys):
  spec = resolve_env("PongNoFrameskip-v4")
  assert spec.env_id == "Pong-v5" and spec.family == "atari"
  assert spec.obs_shape == (4, 84, 84) and spec.obs_dtype == "uint8" and spec.discrete
  env = make_env(spec.env_id, num_envs=1, seed=0)
  cfg = env.spec.config
  assert (cfg.repeat_action_probability, cfg.noop_max, cfg.frame_skip, cfg.stack_num) == (0.0, 30, 4, 4)
  assert cfg.episodic_life and cfg.reward_clip
  eval_cfg = make_env(spec.env_id, num_envs=1, seed=0, train=False).spec.config
  assert not eval_cfg.episodic_life and not eval_cfg.reward_clip


def test_gym_mujoco_alias_prints_one_notice(capsys):
  spec = resolve_env("HalfCheetah-v2")
  assert spec.env_id == "HalfCheetah-v4" and spec.family == "mujoco"
  assert not spec.discrete and spec.action_dim == 6 and spec.obs_shape == (17,)
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and "HalfCheetah-v4" in err[0]


def test_unknown_env_suggests_close_names():
  with pytest.raises(UnknownEnvError, match="Pong-v5"):
    resolve_env("Pongg-v5")
  with pytest.raises(UnknownEnvError, match="HalfCheetah"):
    resolve_env("HalfCheeta-v4")


def test_truncation_is_derived_from_elapsed_steps():
  term, trunc = derive_flags(np.array([True, True, False]), np.array([False, False, False]),
                             {"elapsed_step": np.array([5, 1000, 1000])}, 1000)
  np.testing.assert_array_equal(term, [True, False, False])
  np.testing.assert_array_equal(trunc, [False, True, True])


def test_episode_statistics_reset_on_truncation():
  tracker = EpisodeTracker(2)
  info = {"elapsed_step": np.array([1, 1])}
  tracker.update(np.array([1.0, 2.0]), np.array([False, False]), np.array([False, True]), info, np.zeros(2, bool))
  tracker.update(np.array([1.0, 2.0]), np.array([True, False]), np.array([False, False]), info, np.zeros(2, bool))
  assert list(tracker.recent_returns) == [2.0, 2.0]  # env 1 truncated at 2, env 0 terminated at 1 + 1
  assert tracker.returns.tolist() == [0.0, 2.0]  # env 1 restarted after its truncation


def test_episode_statistics_count_whole_games_under_episodic_life():
  """Breakout with random actions: 5 lives per game. Training episodes end at a lost life (terminated), but the
  statistics must report whole games with the raw (unclipped) score."""
  env = make_env("Breakout-v5", num_envs=2, seed=3)
  tracker = EpisodeTracker(2)
  env.reset()
  rng = np.random.default_rng(0)
  reset_next = np.zeros(2, bool)
  raw_sum, clipped_sum, life_losses, games = np.zeros(2), np.zeros(2), 0, []
  while len(games) < 2:
    obs, r, term, trunc, info = env.step(rng.integers(0, 4, size=2).astype(np.int32))
    term, trunc = derive_flags(term, trunc, info, 27000)
    raw_sum += info["reward"]
    clipped_sum += r
    life_losses += int((term & (info["lives"] > 0)).sum())
    for i, ret, length in tracker.update(r, term, trunc, info, reset_next):
      assert info["lives"][i] == 0 and info["terminated"][i]  # ended at game over, not at a lost life
      assert ret == raw_sum[i] and length == info["elapsed_step"][i]
      games.append((ret, clipped_sum[i]))
      raw_sum[i] = clipped_sum[i] = 0
    reset_next = term | trunc
  assert life_losses >= 8  # four lost lives per game before game over
  assert all(ret >= clipped for ret, clipped in games)


def test_auto_reset_steps_are_masked_and_not_bootstrapped_across():
  """envpool's step after `done` only resets: the rollout marks it with mask 0 and reward 0, and GAE does not let
  the next episode's values leak into the ended one."""
  spec = resolve_env("CartPole-v1")
  cfg = PPOConfig(num_envs=4, num_steps=200).resolve("classic")
  net = networks.make_network("mlp_categorical", discrete=True, image_obs=False, action_dim=2)
  state = ppo.init_state(cfg, net, spec.obs_shape, jax.random.PRNGKey(0))
  rollout = Rollout([make_env(spec.env_id, 4, seed=0)], spec, 200, acting.make_act_fn(net, True, False),
                    EpisodeTracker(4))
  traj, _ = rollout.collect(state.params, (state.obs_norm, state.actor_key))
  done = np.maximum(traj.terminations, traj.truncations)
  assert done.sum() >= 10  # a random policy ends CartPole episodes every ~20 steps
  expected_mask = np.ones_like(done)
  expected_mask[1:] = 1.0 - done[:-1]
  np.testing.assert_array_equal(traj.mask, expected_mask)
  assert np.all(traj.rewards[traj.mask == 0] == 0.0)
  # Changing the values of every auto-reset step must not change any advantage of a real step.
  values = np.concatenate([traj.values, np.zeros((1, 4), np.float32)])
  adv, _ = gae_batch(traj.rewards, values, traj.terminations, traj.truncations, 0.99, 0.95)
  poked = values.copy()
  poked[:-1][traj.mask == 0] += 100.0
  adv2, _ = gae_batch(traj.rewards, poked, traj.terminations, traj.truncations, 0.99, 0.95)
  real = traj.mask == 1
  # the value of a reset step's observation only enters through its own delta and its predecessor's bootstrap,
  # which is a terminal step here (CartPole terminates), so no real advantage moves
  np.testing.assert_allclose(np.asarray(adv)[real], np.asarray(adv2)[real], atol=1e-4)


def test_evaluate_plays_whole_games():
  spec = resolve_env("CartPole-v1")
  ev = evaluate(spec, lambda obs: np.zeros(len(obs), np.int32), episodes=3, seed=0)
  assert len(ev.returns) == len(ev.lengths) == 3
  assert all(8 <= length <= 12 and ret == length for ret, length in zip(ev.returns, ev.lengths))  # falls in ~10


def test_pipelined_groups_give_the_same_trajectory_as_one_pool():
  """Two envpools of 2 envs (seeds s, s + 2) are the same 4 envs as one pool of 4 (env i is seeded s + i); with a
  deterministic policy the pipelined loop must produce exactly the single pool's batch."""
  spec = resolve_env("CartPole-v1")

  def act(params, carry, obs):  # push the cart towards the pole's lean: deterministic, long episodes
    action = (obs[:, 2] + 0.5 * obs[:, 3] > 0).astype(np.float32)
    packed = np.stack([action, np.zeros_like(action), obs[:, 0]], axis=1)  # action, logp, "value"
    return packed, carry

  def run(groups):
    from envs.rollout import make_rollout
    rollout = make_rollout(spec, 4, 300, groups, seed=7, act_fn=act, tracker=EpisodeTracker(4))
    trajs = [rollout.collect(None, None)[0] for _ in range(2)]
    return trajs, rollout.tracker

  (one, t1), (two, t2) = run(1), run(2)
  for a, b in zip(one, two):
    for name in ("obs", "actions", "values", "rewards", "terminations", "truncations", "mask", "last_obs"):
      np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
  assert list(t1.recent_returns) and sorted(t1.recent_returns) == sorted(t2.recent_returns)
