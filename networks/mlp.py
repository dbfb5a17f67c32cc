"""MLP actor-critic (PPO paper's MuJoCo agent): separate 64-64 tanh policy and value nets by default."""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from networks.registry import register

orthogonal = nn.initializers.orthogonal


def _torso(hidden: Sequence[int], x):
  for width in hidden:
    x = nn.tanh(nn.Dense(width, kernel_init=orthogonal(np.sqrt(2)), bias_init=nn.initializers.zeros)(x))
  return x


class MLPActorCritic(nn.Module):
  """Input: float obs [B, D]. Output: (logits [B, A] or (mean [B, A], log_std [B, A]), value [B]).

  The Gaussian's log-std is a learned, state-independent parameter, initialised to 0.
  """
  action_dim: int
  discrete: bool
  hidden: Sequence[int] = (64, 64)
  shared: bool = False

  @nn.compact
  def __call__(self, obs):
    x = obs.astype(jnp.float32)
    pi_h = _torso(self.hidden, x)
    v_h = pi_h if self.shared else _torso(self.hidden, x)
    head = nn.Dense(self.action_dim, kernel_init=orthogonal(0.01), bias_init=nn.initializers.zeros)(pi_h)
    value = nn.Dense(1, kernel_init=orthogonal(1.0), bias_init=nn.initializers.zeros)(v_h)[..., 0]
    if self.discrete:
      return head, value
    log_std = self.param("log_std", nn.initializers.zeros, (self.action_dim,))
    return (head, jnp.broadcast_to(log_std, head.shape)), value


@register("mlp", actions=("continuous",))
def mlp(action_dim: int) -> nn.Module:
  return MLPActorCritic(action_dim, discrete=False)


@register("mlp_categorical", actions=("discrete",))
def mlp_categorical(action_dim: int) -> nn.Module:
  return MLPActorCritic(action_dim, discrete=True)
