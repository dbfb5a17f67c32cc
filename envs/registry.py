"""Resolving env ids to envpool tasks, and building envpool instances with jaxpod's protocols.

Families:
  atari   `<Game>-v5`, and the reproduced example's `<Game>NoFrameskip-v4` as an alias. Protocol (both ids):
          no sticky actions, up to 30 no-op starts, frame skip 4 (max-pooled), gray frames resized to 84x84 (or
          `frame_size`: PARL's IMPALA example trains on 42x42), 4-frame stack, fire reset; training envs add
          episodic life and reward clipping, evaluation envs do not.
  mujoco  envpool's gym MuJoCo tasks (`-v4`, `-v5`); the gym ids `-v2`/`-v3` map to `-v4` with a notice.
  classic envpool's classic control tasks (CartPole-v1 and friends), for tests and quick checks.
"""
from __future__ import annotations

import dataclasses
import difflib
import re
import sys
import warnings
from functools import lru_cache

import envpool
import numpy as np
from envpool.registration import registry

# envpool's float64 MuJoCo bounds make gymnasium warn on every make; the cast is harmless.
warnings.filterwarnings("ignore", message=".*precision lowered by casting.*")

_FAMILIES = {"envpool.atari": "atari", "envpool.mujoco.gym": "mujoco", "envpool.classic_control": "classic"}
_GYM_MUJOCO = ("Ant", "HalfCheetah", "Hopper", "Humanoid", "HumanoidStandup", "InvertedDoublePendulum",
               "InvertedPendulum", "Pusher", "Reacher", "Swimmer", "Walker2d")
_ATARI_ALIAS = re.compile(r"^(?P<game>[A-Za-z0-9]+)NoFrameskip-v4$")
_MUJOCO_ALIAS = re.compile(r"^(?P<task>%s)-v[23]$" % "|".join(_GYM_MUJOCO))


class UnknownEnvError(ValueError):
  """An env id that jaxpod cannot map to a supported envpool task."""


@dataclasses.dataclass(frozen=True)
class EnvSpec:
  """What the learner needs to know about an environment; built once from envpool's spaces."""
  env_id: str            # the envpool task id actually made
  requested_id: str      # what the user typed
  family: str            # "atari" | "mujoco" | "classic"
  obs_shape: tuple[int, ...]
  obs_dtype: str
  discrete: bool
  action_dim: int        # number of actions (discrete) or action size (continuous)
  action_low: float
  action_high: float
  max_episode_steps: int
  frame_size: int | None = None  # Atari: frame height and width in pixels; None for the other families

  @property
  def image_obs(self) -> bool:
    return len(self.obs_shape) == 3


@lru_cache(maxsize=1)
def _supported_ids() -> tuple[str, ...]:
  return tuple(sorted(i for i, (mod, _, _) in registry.specs.items() if mod in _FAMILIES))


def _family(env_id: str) -> str:
  return _FAMILIES[registry.specs[env_id][0]]


def _canonical(requested: str) -> tuple[str, str | None]:
  """Maps an alias to its envpool id; returns (id, notice or None)."""
  if m := _ATARI_ALIAS.match(requested):
    return f"{m['game']}-v5", None  # same protocol as -v5 under jaxpod, so no notice is needed
  if m := _MUJOCO_ALIAS.match(requested):
    target = f"{m['task']}-v4"
    return target, f"note: {requested} is run as envpool's {target} (same task; gym's mujoco-py versions are retired)"
  return requested, None


DEFAULT_FRAME_SIZE = 84  # the DQN / PPO / IMPALA papers' Atari frames


def resolve_env(requested: str, *, frame_size: int | None = None, notify: bool = True) -> EnvSpec:
  """Validates an env id and returns its spec (Atari frames `frame_size` square, default 84; other families ignore
  it). Raises UnknownEnvError with close matches."""
  env_id, notice = _canonical(requested)
  if env_id not in _supported_ids():
    pool = list(_supported_ids()) + [f"{g}NoFrameskip-v4" for g in ("Pong", "Breakout", "BeamRider", "Qbert")]
    close = difflib.get_close_matches(requested, pool, n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else "; supported: Atari <Game>-v5, MuJoCo -v4/-v5, classic control"
    if env_id in registry.specs:
      hint = " (envpool family not supported by jaxpod)" + hint
    raise UnknownEnvError(f"unknown env id '{requested}' for --env{hint}")
  if notice and notify:
    print(notice, file=sys.stderr)
  family = _family(env_id)
  frame_size = (frame_size or DEFAULT_FRAME_SIZE) if family == "atari" else None
  env = make_env(env_id, num_envs=1, seed=0, frame_size=frame_size)
  obs_space, act_space = env.observation_space, env.action_space
  discrete = hasattr(act_space, "n")
  spec = EnvSpec(
      env_id=env_id, requested_id=requested, family=family,
      obs_shape=tuple(obs_space.shape), obs_dtype=str(obs_space.dtype), discrete=discrete,
      action_dim=int(act_space.n) if discrete else int(np.prod(act_space.shape)),
      action_low=-1.0 if discrete else float(np.min(act_space.low)),
      action_high=1.0 if discrete else float(np.max(act_space.high)),
      max_episode_steps=int(env.spec.config.max_episode_steps), frame_size=frame_size)
  env.close()
  return spec


def make_env(env_id: str, num_envs: int, seed: int, *, train: bool = True, batch_size: int | None = None,
             num_threads: int = 0, render: bool = False, frame_size: int | None = None):
  """Builds an envpool (gymnasium API) with the family's protocol; `batch_size < num_envs` is async mode.
  `frame_size` is the Atari frames' height and width (envpool's img_height/img_width; default 84; other families
  ignore it).

  `render` enables `env.render(env_ids)` RGB frames (MuJoCo needs a current OpenGL context: envs.video).
  """
  kwargs = dict(env_type="gymnasium", num_envs=num_envs, seed=seed, num_threads=num_threads,
                batch_size=batch_size or num_envs)
  if render:
    kwargs["render_mode"] = "rgb_array"
  if _family(env_id) == "atari":
    size = frame_size or DEFAULT_FRAME_SIZE
    kwargs.update(repeat_action_probability=0.0, noop_max=30, frame_skip=4, stack_num=4, img_height=size,
                  img_width=size, gray_scale=True, use_fire_reset=True, episodic_life=train, reward_clip=train)
  return envpool.make(env_id, **kwargs)
