"""Episode bookkeeping shared by every acting loop (host-side NumPy, not jitted).

envpool conventions this module relies on (checked in tests/test_envs.py):
  * `info["reward"]` is the raw game reward on Atari, before clipping;
  * with episodic life, `terminated` is also True on a lost life, while `info["terminated"]` is True only at game over;
  * the step after any `terminated or truncated` is an auto-reset step: its action is ignored, its reward is 0 and
    it returns the first observation of the next episode (or of the next life).
"""
from __future__ import annotations

import collections
import threading

import numpy as np


def derive_flags(terminated, truncated, info, max_episode_steps: int):
  """Returns (terminated, truncated) as bool arrays, with truncation also derived from the step count.

  NOTE: envpool has been seen to report done with neither flag set (envpool #239); an episode that reached the time
  limit is a truncation whatever the flags say, so it bootstraps.
  """
  terminated, truncated = terminated.astype(bool, copy=False), truncated.astype(bool, copy=False)
  if "elapsed_step" in info:
    truncated = truncated | (info["elapsed_step"] >= max_episode_steps)
  return terminated & ~truncated, truncated


class EpisodeTracker:
  """Raw returns and lengths of whole games, for N envs, with a window of the last `window` finished games.

  A game ends at game over (not at a lost life) or at truncation; statistics are reset in both cases.
  """

  def __init__(self, num_envs: int, window: int = 100):
    self.returns = np.zeros(num_envs, np.float64)
    self.lengths = np.zeros(num_envs, np.int64)
    self.recent_returns: collections.deque = collections.deque(maxlen=window)
    self.recent_lengths: collections.deque = collections.deque(maxlen=window)
    self.episodes = 0
    self._lock = threading.Lock()  # actor threads share one tracker, each updating its own envs

  def update(self, reward, terminated, truncated, info, reset_step, envs: slice = slice(None)
             ) -> list[tuple[int, float, int]]:
    """Adds one env step of the envs `envs` (all by default); returns (env index, raw return, length) of each game
    that ended.

    `terminated`, `truncated` and `reset_step` are bool arrays over those envs; `reset_step` marks auto-reset steps,
    which are not counted as agent steps.
    """
    returns, lengths = self.returns[envs], self.lengths[envs]  # views: updated in place
    returns += info.get("reward", reward)
    lengths += ~reset_step
    done = (info["terminated"].astype(bool) if "terminated" in info else terminated) | truncated
    if not done.any():
      return []
    offset = envs.start or 0
    finished = [(offset + int(i), float(returns[i]), int(lengths[i])) for i in np.flatnonzero(done)]
    self.record(finished)
    returns[done] = 0.0
    lengths[done] = 0
    return finished

  def record(self, finished: list[tuple[int, float, int]]) -> None:
    """Adds games that ended elsewhere (remote actors), as (env index, raw return, length)."""
    with self._lock:
      for _, ret, length in finished:
        self.recent_returns.append(ret)
        self.recent_lengths.append(length)
      self.episodes += len(finished)

  def summary(self) -> dict:
    """Mean, max and min return and length over the window (NaN before the first game ends)."""
    with self._lock:
      rets, lens = list(self.recent_returns), list(self.recent_lengths)
    if not rets:
      nan = float("nan")
      return dict(episode_return=nan, episode_return_max=nan, episode_return_min=nan, episode_length=nan,
                  episode_length_max=nan, episode_length_min=nan)
    return dict(episode_return=float(np.mean(rets)), episode_return_max=float(max(rets)),
                episode_return_min=float(min(rets)), episode_length=float(np.mean(lens)),
                episode_length_max=float(max(lens)), episode_length_min=float(min(lens)))

  def mean_return(self) -> float:
    return self.summary()["episode_return"]

  def mean_length(self) -> float:
    return self.summary()["episode_length"]

  def state_dict(self) -> dict:
    with self._lock:
      return {"recent_returns": list(self.recent_returns), "recent_lengths": list(self.recent_lengths),
              "episodes": self.episodes}

  def load_state_dict(self, d: dict) -> None:
    with self._lock:
      self.recent_returns.extend(d.get("recent_returns", []))
      self.recent_lengths.extend(d.get("recent_lengths", []))
      self.episodes = int(d.get("episodes", 0))


class AgentTrackers:
  """One EpisodeTracker per agent when K agents share one envpool: agent j owns envs [j * n, (j + 1) * n).

  Same `update` interface as EpisodeTracker (env indices are global), so the acting loops need not know about agents.
  """

  def __init__(self, num_agents: int, envs_per_agent: int, window: int = 100):
    self.envs_per_agent = envs_per_agent
    self.agents = [EpisodeTracker(envs_per_agent, window) for _ in range(num_agents)]

  def update(self, reward, terminated, truncated, info, reset_step, envs: slice = slice(None)
             ) -> list[tuple[int, float, int]]:
    if len(self.agents) == 1:  # NOTE: the per-step path of every single-seed run: no slicing
      return self.agents[0].update(reward, terminated, truncated, info, reset_step, envs=envs)
    n, total = self.envs_per_agent, self.envs_per_agent * len(self.agents)
    start, stop = envs.start or 0, total if envs.stop is None else envs.stop
    finished = []
    for j in range(start // n, (stop - 1) // n + 1):
      a, b = max(start, j * n), min(stop, (j + 1) * n)
      local = slice(a - start, b - start)
      sub_info = {k: info[k][local] for k in ("reward", "terminated", "elapsed_step") if k in info}
      for i, ret, length in self.agents[j].update(reward[local], terminated[local], truncated[local], sub_info,
                                                  reset_step[local], envs=slice(a - j * n, b - j * n)):
        finished.append((i + j * n, ret, length))
    return finished

  def record(self, finished: list[tuple[int, float, int]]) -> None:
    """Adds games that ended elsewhere (remote actors); env indices are global."""
    for i, ret, length in finished:
      self.agents[i // self.envs_per_agent].record([(i % self.envs_per_agent, ret, length)])

  def state_dict(self) -> dict:
    return {"agents": [t.state_dict() for t in self.agents]}

  def load_state_dict(self, d: dict) -> None:
    for t, sub in zip(self.agents, d.get("agents", [d])):
      t.load_state_dict(sub)
