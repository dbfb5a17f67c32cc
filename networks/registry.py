"""Networks by name. A network is a flax module `__call__(obs) -> (policy_params, value)` with
`policy_params` = logits [B, A] for discrete actions, or (mean [B, A], log_std [B, A]) for continuous ones.

Add one by decorating a factory `(action_dim: int) -> nn.Module`:

    @register("my_net", actions=("discrete",), observations=("image",))
    def my_net(action_dim):
      return MyModule(action_dim)
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp


class NetworkError(ValueError):
  """A network name that does not exist, or does not fit the environment."""


@dataclasses.dataclass(frozen=True)
class NetworkEntry:
  factory: Callable[[int], nn.Module]
  actions: tuple[str, ...]       # "discrete", "continuous"
  observations: tuple[str, ...]  # "image", "vector"


_REGISTRY: dict[str, NetworkEntry] = {}


def register(name: str, *, actions=("discrete", "continuous"), observations=("vector",)):
  def wrap(factory):
    _REGISTRY[name] = NetworkEntry(factory, tuple(actions), tuple(observations))
    return factory
  return wrap


def names() -> list[str]:
  return sorted(_REGISTRY)


def default_network(discrete: bool, image_obs: bool) -> str:
  if image_obs:
    return "nature_cnn"
  return "mlp_categorical" if discrete else "mlp"


def make_network(name: str, *, discrete: bool, image_obs: bool, action_dim: int) -> nn.Module:
  """Builds a registered network after checking that it fits the env's action and observation kinds."""
  if name not in _REGISTRY:
    raise NetworkError(f"unknown --network '{name}'; registered: {', '.join(names())}")
  entry = _REGISTRY[name]
  action_kind, obs_kind = ("discrete" if discrete else "continuous"), ("image" if image_obs else "vector")
  fits = [n for n, e in sorted(_REGISTRY.items()) if action_kind in e.actions and obs_kind in e.observations]
  if action_kind not in entry.actions:
    raise NetworkError(f"--network {name} is for {'/'.join(entry.actions)} actions but this env has {action_kind} "
                       f"actions; use --network {' or '.join(fits)}")
  if obs_kind not in entry.observations:
    raise NetworkError(f"--network {name} takes {'/'.join(entry.observations)} observations but this env has "
                       f"{obs_kind} observations; use --network {' or '.join(fits)}")
  return entry.factory(action_dim)


def apply_chunked(network: nn.Module, params, obs, chunks: int):
  """network.apply over `chunks` equal slices of the batch, outputs concatenated: the same function, but XLA:CPU
  runs the independent slices' convolutions concurrently and in cache.

  NOTE: measured on a 2-core CPU, a Nature-CNN gradient step on 256 frames takes 0.38 s whole and 0.15 s in 4
  slices (benchmarks/RESULTS.md). Losses still see the whole minibatch (advantage normalisation, masked means).
  """
  if chunks <= 1:
    return network.apply(params, obs)
  outs = [network.apply(params, part) for part in jnp.split(obs, chunks)]
  return jax.tree.map(lambda *xs: jnp.concatenate(xs, axis=0), *outs)


def cpu_conv_chunks(image_obs: bool, batch: int) -> int:
  """The slice count `apply_chunked` defaults to: 4 for conv nets on CPU, 1 elsewhere."""
  return 4 if (image_obs and jax.default_backend() == "cpu" and batch % 4 == 0) else 1
