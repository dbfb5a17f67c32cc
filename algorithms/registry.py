"""Algorithms by name: the one seam between a learner and the harness that runs it.

An algorithm is a package under `algorithms/` that registers itself once, with one line:

    register(Algorithm(name="a2c", config=A2CConfig, init_state=init_state, make_update_fn=make_update_fn,
                       metrics=METRICS, source="rollouts"))

`get(name)` imports the package `algorithms.<name>` on first use, so a new package needs no other line anywhere.
The harness reads everything it needs from the entry: the hyperparameter config it parses (its fields are flags),
how to build the state and the jitted update, the metric columns, and which trajectory source feeds it.
"""
from __future__ import annotations

import dataclasses
import importlib
import os
import pkgutil
from typing import Callable

SOURCES = ("rollouts", "actors")


@dataclasses.dataclass(frozen=True)
class Algorithm:
  name: str
  """The name runs record (`config.json`'s "algorithm") and `python -m harness NAME` takes."""
  config: type
  """Frozen dataclass of hyperparameters, every field documented (they are flags). It provides `resolve(family)`
  (family defaults filled in) and the properties `num_updates` and `steps_per_update` (agent steps per update);
  a "rollouts" config also `num_envs` and `num_steps`, and `normalize_obs` if the policy normalises observations.
  Optionally `run_defaults(family)`: the run settings a resolved config implies when they are left unset, as a
  flat dict (`frame_size`, `network`, `num_actors`, `envs_per_actor`; IMPALA's Atari presets)."""
  init_state: Callable
  """(config, network, obs_shape, key) -> state, a pytree with at least `params` and `global_step`; a "rollouts"
  state also `obs_norm` and `actor_key`, which acting updates."""
  make_update_fn: Callable
  """(config, network, discrete, image_obs, axis_name=None) -> update(state, trajectory) -> (state, metrics): one
  agent's update over an `envs.rollout.Trajectory`, metrics a flat dict of scalars that includes `loss`,
  `policy_loss`, `value_loss` and `grad_norm` (a non-finite one stops the run)."""
  metrics: tuple[str, ...]
  """The update's metric names, in the order of progress.csv's columns."""
  source: str
  """"rollouts": synchronous on-policy rollouts of `num_steps` steps of every env with the latest parameters
  (local envpool or Ray env workers); "actors": actor threads or Ray actors feeding a queue of trajectories acted
  with recent parameters (off-policy: the update must correct for the policy lag)."""
  split_agents: Callable | None = None
  """(trajectory, K) -> per-agent trajectories with a leading axis, for K seeds in one process (`--num-seeds`);
  None: one seed per process."""

  def __post_init__(self):
    if self.source not in SOURCES:
      raise ValueError(f"algorithm {self.name}: source must be one of {SOURCES}, got {self.source!r}")


_REGISTRY: dict[str, Algorithm] = {}


def register(algorithm: Algorithm) -> Algorithm:
  _REGISTRY[algorithm.name] = algorithm
  return algorithm


def names() -> list[str]:
  """Every algorithm package under `algorithms/` (whether imported yet or not)."""
  here = os.path.dirname(__file__)
  return sorted(set(_REGISTRY) | {m.name for m in pkgutil.iter_modules([here]) if m.ispkg})


def get(name: str) -> Algorithm:
  """The registered algorithm `name`, importing its package if needed; KeyError naming the known ones."""
  if name not in _REGISTRY and name in names():
    importlib.import_module(f"algorithms.{name}")
  if name not in _REGISTRY:
    raise KeyError(f"unknown algorithm '{name}'; known: {', '.join(names())}")
  return _REGISTRY[name]
