"""Acting loops: collect time-major rollouts from an envpool (PPO's batches, each IMPALA actor's trajectories), and
greedy evaluation on separate envs.

These are host-side loops (not pure): they step envpool in C++ threads and call a jitted policy once per step.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from envs.episodes import EpisodeTracker, derive_flags
from envs.registry import EnvSpec, make_env


@dataclasses.dataclass
class Trajectory:
  """T steps of N envs, time-major. Step t holds o_t, a_t, log mu(a_t|o_t), V(o_t), r_t and the flags of step t.

  `mask[t, n] == 0` marks an envpool auto-reset step: o_t was the last observation of an episode, the env ignored
  a_t and returned the next episode's first observation with r_t = 0. Such steps carry no learning signal and are
  excluded from every loss; GAE never crosses them because step t-1 ended the episode.
  """
  obs: np.ndarray
  actions: np.ndarray
  logp: np.ndarray
  values: np.ndarray
  rewards: np.ndarray
  terminations: np.ndarray
  truncations: np.ndarray
  mask: np.ndarray
  last_obs: np.ndarray  # o_T, raw, for the bootstrap value


def concat_trajectories(trajs: list[Trajectory]) -> Trajectory:
  """Joins trajectories along the env axis (axis 1; axis 0 for `last_obs`)."""
  if len(trajs) == 1:
    return trajs[0]
  return Trajectory(**{f.name: np.concatenate([getattr(t, f.name) for t in trajs],
                                              axis=0 if f.name == "last_obs" else 1)
                       for f in dataclasses.fields(Trajectory)})


# A pytree, so jitted learners take it as it is.
jax.tree_util.register_dataclass(Trajectory, data_fields=[f.name for f in dataclasses.fields(Trajectory)],
                                 meta_fields=[])

# act_fn(params, carry, obs) -> (packed, carry), with packed float32 [N, K] holding, per env, the action (1 column
# if discrete, else A), its log-probability, the value and, when the policy normalises observations, the normalised
# observation it acted on (what the learner must train on); without it the raw observation is stored.
ActFn = Callable[[Any, Any, np.ndarray], tuple]


class Rollout:
  """Steps envpools for `num_steps` per call with the parameters it is given (PPO: the latest, on-policy; an IMPALA
  actor: the last ones the learner published).

  With several env groups (one envpool each) the loop pipelines them: while the policy runs on one group's
  observations, the other groups simulate their last actions in envpool's C++ threads. One group is plain
  synchronous stepping. Both give the same kind of time-major batch, envs of group g in columns `slices[g]`.

  With `obs_device` (image observations acting on the learner's accelerator), each step's observations are sent to
  that device once, to act on, and kept there: the trajectory's `obs` is then a device array stacked from them,
  which the update takes without sending the frames a second time.
  """

  def __init__(self, envs: list, spec: EnvSpec, num_steps: int, act_fn: ActFn, tracker: EpisodeTracker,
               tracker_offset: int = 0, obs_device=None):
    self.envs, self.spec, self.act_fn, self.tracker, self.num_steps = envs, spec, act_fn, tracker, num_steps
    self.obs_device = obs_device
    sizes = [env.config["num_envs"] for env in envs]
    starts = np.cumsum([0] + sizes)
    self.slices = [slice(int(a), int(b)) for a, b in zip(starts[:-1], starts[1:])]
    # this rollout's envs are envs [tracker_offset, tracker_offset + N) of a tracker shared with other actors
    self.tracker_slices = [slice(sl.start + tracker_offset, sl.stop + tracker_offset) for sl in self.slices]
    self.num_envs = int(starts[-1])
    self.obs = [self._cast(env.reset()[0]) for env in envs]
    self.reset_next = np.zeros(self.num_envs, bool)  # next step is an auto-reset step

  @staticmethod
  def _cast(obs: np.ndarray) -> np.ndarray:
    # NOTE: envpool's MuJoCo observations are float64; JAX (without x64) converts them on every call, ~10 us slower
    # than NumPy doing it here.
    return obs if obs.dtype == np.uint8 else obs.astype(np.float32)

  def collect(self, params, carry, poll: Callable[[], None] = lambda: None) -> tuple[Trajectory, Any]:
    """`num_steps` steps of every env; calls `poll` before each (it may raise to abandon the rollout)."""
    T, N, spec = self.num_steps, self.num_envs, self.spec
    a_cols = 1 if spec.discrete else spec.action_dim
    actions = np.zeros((T, N) + (() if spec.discrete else (a_cols,)), np.int32 if spec.discrete else np.float32)
    obs_buf = (np.zeros((T, N) + spec.obs_shape, np.uint8 if spec.obs_dtype == "uint8" else np.float32)
               if self.obs_device is None else None)
    logp, values, rewards, terms, truncs, mask = (np.zeros((T, N), np.float32) for _ in range(6))
    low, high = spec.action_low, spec.action_high

    def receive(g: int, t: int) -> None:
      sl = self.slices[g]
      obs, reward, terminated, truncated, info = self.envs[g].recv()
      terminated, truncated = derive_flags(terminated, truncated, info, spec.max_episode_steps)
      self.tracker.update(reward, terminated, truncated, info, self.reset_next[sl], envs=self.tracker_slices[g])
      rewards[t, sl], terms[t, sl], truncs[t, sl] = reward, terminated, truncated
      self.reset_next[sl] = terminated | truncated
      self.obs[g] = self._cast(obs)

    kept = [[None] * len(self.slices) for _ in range(T)] if self.obs_device is not None else None
    for t in range(T):
      poll()
      for g, sl in enumerate(self.slices):
        if t > 0:
          receive(g, t - 1)  # this group simulated while the policy ran on the others
        if kept is None:
          packed, carry = self.act_fn(params, carry, self.obs[g])
          packed = np.asarray(packed)
          obs_buf[t, sl] = self.obs[g] if packed.shape[1] == a_cols + 2 else packed[:, a_cols + 2:].reshape(
              self.obs[g].shape)
        else:  # raw observations only (images are not normalised)
          kept[t][g] = jax.device_put(self.obs[g], self.obs_device)
          packed, carry = self.act_fn(params, carry, kept[t][g])
          packed = np.asarray(packed)
        logp[t, sl], values[t, sl] = packed[:, a_cols], packed[:, a_cols + 1]
        if spec.discrete:
          actions[t, sl] = env_action = packed[:, 0].astype(np.int32)
        else:
          actions[t, sl] = packed[:, :a_cols]
          env_action = np.minimum(np.maximum(actions[t, sl], low), high)
        mask[t, sl] = ~self.reset_next[sl]
        self.envs[g].send(env_action)
    for g in range(len(self.slices)):
      receive(g, T - 1)
    if kept is not None:
      obs_buf = jnp.stack([row[0] if len(row) == 1 else jnp.concatenate(row) for row in kept])
    traj = Trajectory(obs=obs_buf, actions=actions, logp=logp, values=values, rewards=rewards,
                      terminations=terms, truncations=truncs, mask=mask, last_obs=np.concatenate(self.obs))
    return traj, carry

  def close(self) -> None:
    for env in self.envs:
      env.close()


def make_rollout(spec: EnvSpec, num_envs: int, num_steps: int, groups: int, seed: int, act_fn: ActFn,
                 tracker: EpisodeTracker, tracker_offset: int = 0, obs_device=None) -> Rollout:
  """`groups` envpools of `num_envs / groups` envs each, with distinct env seeds."""
  size = num_envs // groups
  envs = [make_env(spec.env_id, size, seed=seed + g * size, frame_size=spec.frame_size)
          for g in range(groups)]
  return Rollout(envs, spec, num_steps, act_fn, tracker, tracker_offset, obs_device)


@dataclasses.dataclass
class Evaluation:
  """Raw return and length of each env's first game."""
  returns: list[float]
  lengths: list[int]


def evaluate(spec: EnvSpec, policy_fn: Callable[[np.ndarray], np.ndarray], episodes: int, seed: int,
             record: int = 0, on_frame: Callable[[int, np.ndarray], None] | None = None) -> Evaluation:
  """Plays `episodes` whole games on fresh evaluation envs (no episodic life, no reward clipping), one per env.

  `policy_fn(obs) -> actions` is host-callable (e.g. a greedy jitted policy closed over parameters). With `record`
  > 0, envs 0 .. record - 1 are rendered after the reset and after every step of their game (length + 1 frames),
  each RGB frame [H, W, 3] handed to `on_frame(env, frame)` as it comes; rendering does not change what envs do.
  """
  env = make_env(spec.env_id, num_envs=episodes, seed=seed, train=False, render=record > 0,
                 frame_size=spec.frame_size)
  tracker = EpisodeTracker(episodes, window=episodes)
  obs, _ = env.reset()
  recording = list(range(min(record, episodes)))

  def render() -> None:
    if recording:
      for i, frame in zip(recording, env.render(env_ids=recording)):
        on_frame(i, frame)

  render()
  results: dict[int, tuple[float, int]] = {}
  reset_next = np.zeros(episodes, bool)
  for _ in range(spec.max_episode_steps + 1):
    action = np.asarray(policy_fn(obs))
    if not spec.discrete:
      action = np.clip(action, spec.action_low, spec.action_high)
    obs, reward, terminated, truncated, info = env.step(action)
    terminated, truncated = derive_flags(terminated, truncated, info, spec.max_episode_steps)
    render()
    for i, ret, length in tracker.update(reward, terminated, truncated, info, reset_next):
      results.setdefault(i, (ret, length))
    recording = [i for i in recording if i not in results]
    reset_next = terminated | truncated
    if len(results) == episodes:
      break
  env.close()
  if len(results) < episodes:  # cannot happen while truncation is derived from elapsed_step; guards the indexing
    raise RuntimeError(f"evaluation: only {len(results)} of {episodes} games ended within the episode limit")
  return Evaluation([results[i][0] for i in range(episodes)], [results[i][1] for i in range(episodes)])
