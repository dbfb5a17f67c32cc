"""Reopen a finished or running run directory for evaluation: its config, env, network and a checkpointed state.

Host-side, like the rest of the harness. Everything a user can get wrong (not a run directory, no such step, a
checkpoint that does not fit the saved network or env) raises UsageError with one line.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

import networks
from algorithms import registry
from harness import rundir, xla
from harness.config import config_class
from harness.checkpoint import Checkpointer
from harness.cli import UsageError
from envs import UnknownEnvError, resolve_env


@dataclasses.dataclass
class LoadedRun:
  algo: str            # the algorithm's registered name
  config: Any          # its composed config (harness.config)
  spec: Any
  network: Any
  state: Any           # stacked over a leading agent axis when there are several seeds
  step: int
  seeds: list[int]

  def agent(self, j: int):
    """Agent j's (params, obs_norm or None)."""
    state = self.state if len(self.seeds) == 1 else jax.tree.map(lambda x: x[j], self.state)
    return state.params, (state.obs_norm if self.config.normalize_obs else None)


def load_run(run_dir: str, step: int | None = None) -> LoadedRun:
  """Loads the run's config and its latest checkpoint (or `step`), rebuilding network and state shapes."""
  fields = rundir.read_fields(run_dir, flag="RUN_DIR")
  try:
    algorithm = registry.get(fields.get("algorithm", ""))
  except KeyError:
    raise UsageError(f"RUN_DIR {run_dir}: {rundir.CONFIG} names no known algorithm "
                     f"({fields.get('algorithm') or 'none'}; known: {', '.join(registry.names())})") from None
  config = rundir.load_config(run_dir, config_class(algorithm), flag="RUN_DIR", fields=fields)
  env, network_name = config.environment.env, config.environment.network
  try:
    spec = resolve_env(env, frame_size=config.environment.frame_size, notify=False)
  except UnknownEnvError as e:
    raise UsageError(f"{run_dir}: {e}") from None
  try:
    network = networks.make_network(network_name, discrete=spec.discrete, image_obs=spec.image_obs,
                                    action_dim=spec.action_dim)
  except networks.NetworkError as e:
    raise UsageError(f"{run_dir}: {e}") from None
  xla.configure(spec.image_obs)
  seeds = config.agent_seeds
  init = lambda key: algorithm.init_state(config.algorithm, network, spec.obs_shape, key)  # noqa: E731
  keys = jnp.stack([jax.random.PRNGKey(s) for s in seeds])
  template = jax.eval_shape(init, keys[0]) if len(seeds) == 1 else jax.eval_shape(jax.vmap(init), keys)
  checkpointer = Checkpointer(run_dir, create=False)
  try:
    steps = checkpointer.steps()
    if step is not None and step not in steps:
      raise UsageError(f"--step {step}: no such checkpoint in {checkpointer.directory} (have {sorted(steps)})")
    state, meta, step = checkpointer.restore(template, step)
  finally:
    checkpointer.close()
  for key, want in (("env", spec.env_id), ("network", network_name)):
    if meta.get(key, want) != want:  # shapes can agree across envs and networks (two Atari games, 6 actions)
      raise UsageError(f"checkpoint {step} in {run_dir} was trained with {key} {meta[key]}, but the run's "
                       f"{rundir.CONFIG} says {want}")
  return LoadedRun(algorithm.name, config, spec, network, jax.device_put(state), step, seeds)
