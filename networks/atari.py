"""Atari actor-critics with shared trunks: Nature CNN (Mnih et al. 2015; PPO and PARL) and IMPALA's deep ResNet."""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from networks.registry import register

orthogonal = nn.initializers.orthogonal


class NatureCNN(nn.Module):
  """Input: uint8 frames [B, C, H, W] (envpool's layout). Output: (logits [B, A], value [B])."""
  action_dim: int

  @nn.compact
  def __call__(self, obs):
    # NOTE: XLA:CPU and GPU both prefer NHWC convolutions; the transpose is fused into the first conv.
    x = jnp.transpose(obs, (0, 2, 3, 1)).astype(jnp.float32) / 255.0
    init, zeros = orthogonal(np.sqrt(2)), nn.initializers.zeros
    x = nn.relu(nn.Conv(32, (8, 8), (4, 4), padding="VALID", kernel_init=init, bias_init=zeros)(x))
    x = nn.relu(nn.Conv(64, (4, 4), (2, 2), padding="VALID", kernel_init=init, bias_init=zeros)(x))
    x = nn.relu(nn.Conv(64, (3, 3), (1, 1), padding="VALID", kernel_init=init, bias_init=zeros)(x))
    x = x.reshape((x.shape[0], -1))
    x = nn.relu(nn.Dense(512, kernel_init=init, bias_init=zeros)(x))
    logits = nn.Dense(self.action_dim, kernel_init=orthogonal(0.01), bias_init=zeros)(x)
    value = nn.Dense(1, kernel_init=orthogonal(1.0), bias_init=zeros)(x)
    return logits, value[..., 0]


@register("nature_cnn", actions=("discrete",), observations=("image",))
def nature_cnn(action_dim: int) -> nn.Module:
  return NatureCNN(action_dim)


class ResidualBlock(nn.Module):
  channels: int

  @nn.compact
  def __call__(self, x):
    y = nn.Conv(self.channels, (3, 3), padding="SAME")(nn.relu(x))
    y = nn.Conv(self.channels, (3, 3), padding="SAME")(nn.relu(y))
    return x + y


class ImpalaResNet(nn.Module):
  """IMPALA's deep network (Espeholt et al. 2018, fig. 3): three stacks (16, 32, 32 channels) of conv 3x3, max-pool
  3x3 stride 2 and two residual blocks (15 conv layers), then a 256-unit layer; a shared trunk for policy and value.
  Input: uint8 frames [B, C, H, W]. Output: (logits [B, A], value [B])."""
  action_dim: int
  channels: tuple[int, ...] = (16, 32, 32)

  @nn.compact
  def __call__(self, obs):
    x = jnp.transpose(obs, (0, 2, 3, 1)).astype(jnp.float32) / 255.0
    for ch in self.channels:
      x = nn.Conv(ch, (3, 3), padding="SAME")(x)
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="SAME")
      x = ResidualBlock(ch)(x)
      x = ResidualBlock(ch)(x)
    x = nn.relu(x).reshape((x.shape[0], -1))
    x = nn.relu(nn.Dense(256)(x))
    logits = nn.Dense(self.action_dim, kernel_init=orthogonal(0.01))(x)
    value = nn.Dense(1, kernel_init=orthogonal(1.0))(x)
    return logits, value[..., 0]


@register("impala_resnet", actions=("discrete",), observations=("image",))
def impala_resnet(action_dim: int) -> nn.Module:
  return ImpalaResNet(action_dim)


class ParlAtariNet(nn.Module):
  """The network of PARL's IMPALA Atari example (examples/IMPALA/atari_model.py; shared/REFERENCE.md): inputs / 255;
  conv 16 filters 4x4 stride 2 padding 1, ReLU; conv 32 filters 4x4 stride 2 padding 2, ReLU; conv 256 filters 11x11
  "valid" over the 11x11x32 map of 42x42 frames, ReLU; policy logits by a 1x1 conv and the value by a dense layer,
  both from that 256-unit layer. Input: uint8 frames [B, C, H, W]. Output: (logits [B, A], value [B]).

  Initialisation is PARL's too (Paddle's defaults, which the example keeps for its convs, and the `Normal()` it
  names for its heads): the three convs N(0, 2 / fan_in) (Paddle's conv2d default), both heads N(0, 1), biases 0.
  The heads' unit scale makes the first policy far from uniform (logits of a few units), unlike the 0.01-scaled
  heads of nature_cnn.

  NOTE: an 11x11 valid conv over an 11x11 map is a dense layer over the flattened map, written so here (and a 1x1
  conv on a 1x1 map is a dense layer): on XLA:CPU a gradient step on 1,000 frames took 1.69 s as a conv and 0.31 s
  as reshape + dense (jax 0.10.2, 2 cores). On frames of another size the layer is a dense layer over whatever map
  the two convs leave.
  """
  action_dim: int

  @nn.compact
  def __call__(self, obs):
    conv_init = nn.initializers.variance_scaling(2.0, "fan_in", "normal")  # Paddle's N(0, sqrt(2 / fan_in))
    head_init = nn.initializers.normal(1.0)
    x = jnp.transpose(obs, (0, 2, 3, 1)).astype(jnp.float32) / 255.0
    x = nn.relu(nn.Conv(16, (4, 4), (2, 2), padding=((1, 1), (1, 1)), kernel_init=conv_init)(x))
    x = nn.relu(nn.Conv(32, (4, 4), (2, 2), padding=((2, 2), (2, 2)), kernel_init=conv_init)(x))
    x = nn.relu(nn.Dense(256, kernel_init=conv_init)(x.reshape((x.shape[0], -1))))
    logits = nn.Dense(self.action_dim, kernel_init=head_init)(x)
    value = nn.Dense(1, kernel_init=head_init)(x)
    return logits, value[..., 0]


@register("parl_atari", actions=("discrete",), observations=("image",))
def parl_atari(action_dim: int) -> nn.Module:
  return ParlAtariNet(action_dim)
