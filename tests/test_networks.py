"""Network shapes and dtypes for both families, the registry's checks, and registering a new network."""
import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import networks


def _init_apply(name, discrete, image, action_dim, obs):
  net = networks.make_network(name, discrete=discrete, image_obs=image, action_dim=action_dim)
  params = net.init(jax.random.PRNGKey(0), obs)
  return net.apply(params, obs), params


def test_nature_cnn_shapes_and_dtypes():
  obs = jnp.zeros((3, 4, 84, 84), jnp.uint8)
  (logits, value), params = _init_apply("nature_cnn", True, True, 6, obs)
  chex.assert_shape(logits, (3, 6))
  chex.assert_shape(value, (3,))
  chex.assert_type([logits, value], jnp.float32)
  n_params = sum(p.size for p in jax.tree.leaves(params))
  # conv 8x8x4x32 + 32, 4x4x32x64 + 64, 3x3x64x64 + 64, dense 3136x512 + 512, heads 512x6 + 6 and 512 + 1
  assert n_params == 8224 + 32832 + 36928 + 1606144 + 3078 + 513


def test_mlp_gaussian_shapes_and_state_independent_std():
  obs = jax.random.normal(jax.random.PRNGKey(1), (5, 17))
  ((mean, log_std), value), params = _init_apply("mlp", False, False, 6, obs)
  chex.assert_shape([mean, log_std], (5, 6))
  chex.assert_shape(value, (5,))
  chex.assert_type([mean, log_std, value], jnp.float32)
  assert jnp.all(log_std == log_std[0])  # the same for every state
  # separate policy and value torsos: two Dense(64)-Dense(64) stacks plus two heads
  assert len([k for k in params["params"] if k.startswith("Dense")]) == 6


def test_mlp_categorical_shapes():
  obs = jnp.zeros((2, 4))
  (logits, value), _ = _init_apply("mlp_categorical", True, False, 2, obs)
  chex.assert_shape(logits, (2, 2))
  chex.assert_shape(value, (2,))


def test_registry_rejects_mismatches():
  with pytest.raises(networks.NetworkError, match="continuous actions.*use --network mlp_categorical"):
    networks.make_network("mlp", discrete=True, image_obs=False, action_dim=2)
  with pytest.raises(networks.NetworkError, match="image observations"):
    networks.make_network("nature_cnn", discrete=True, image_obs=False, action_dim=2)
  with pytest.raises(networks.NetworkError, match="unknown --network 'resnet99'"):
    networks.make_network("resnet99", discrete=True, image_obs=True, action_dim=2)


def test_register_a_new_network():
  class Tiny(nn.Module):
    action_dim: int

    @nn.compact
    def __call__(self, obs):
      x = nn.tanh(nn.Dense(16)(obs))
      return nn.Dense(self.action_dim)(x), nn.Dense(1)(x)[..., 0]

  @networks.register("tiny_test", actions=("discrete",))
  def tiny(action_dim):
    return Tiny(action_dim)

  assert "tiny_test" in networks.names()
  (logits, value), _ = _init_apply("tiny_test", True, False, 3, jnp.zeros((2, 4)))
  chex.assert_shape(logits, (2, 3))


def test_readme_network_example_works():
  import os
  import re
  readme = open(os.path.join(os.path.dirname(__file__), "..", "README.md")).read()
  section = readme.split("## Adding a network", 1)[1]
  code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
  assert len(code.strip().splitlines()) < 15
  exec(compile(code, "README.md", "exec"), {})
  (logits, value), _ = _init_apply("wide_mlp", True, False, 3, jnp.zeros((2, 8)))
  chex.assert_shape(logits, (2, 3))
  chex.assert_shape(value, (2,))


def test_impala_resnet_has_15_convs_and_the_right_shapes():
  obs = jnp.zeros((2, 4, 84, 84), jnp.uint8)
  (logits, value), params = _init_apply("impala_resnet", True, True, 6, obs)
  chex.assert_shape(logits, (2, 6))
  chex.assert_shape(value, (2,))
  kernels = [p for path, p in jax.tree_util.tree_flatten_with_path(params)[0]
             if "kernel" in jax.tree_util.keystr(path) and p.ndim == 4]
  assert len(kernels) == 15
  assert sorted({k.shape[-1] for k in kernels}) == [16, 32]


def test_parl_atari_shapes_and_its_dense_layer_is_the_11x11_valid_conv():
  """PARL's IMPALA network on 42x42 frames: 42 -> 21 -> 11 after the two padded convs, then 256 units; the dense
  layer over the flattened 11x11x32 map computes what PARL's 11x11 "valid" conv computes (same kernel, reshaped)."""
  net = networks.make_network("parl_atari", discrete=True, image_obs=True, action_dim=6)
  obs = jax.random.randint(jax.random.PRNGKey(0), (3, 4, 42, 42), 0, 256).astype(jnp.uint8)
  params = net.init(jax.random.PRNGKey(1), obs)
  logits, value = net.apply(params, obs)
  assert logits.shape == (3, 6) and value.shape == (3,)
  p = params["params"]
  assert p["Conv_0"]["kernel"].shape == (4, 4, 4, 16) and p["Conv_1"]["kernel"].shape == (4, 4, 16, 32)
  assert p["Dense_0"]["kernel"].shape == (11 * 11 * 32, 256)
  x = jax.random.normal(jax.random.PRNGKey(2), (3, 11, 11, 32))
  dense = x.reshape(3, -1) @ p["Dense_0"]["kernel"]
  conv = jax.lax.conv_general_dilated(x, p["Dense_0"]["kernel"].reshape(11, 11, 32, 256), (1, 1), "VALID",
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))
  np.testing.assert_allclose(np.asarray(conv).reshape(3, 256), np.asarray(dense), rtol=1e-4, atol=1e-4)


def test_parl_atari_initialises_as_paddle_does():
  """PARL's example keeps Paddle's conv default, N(0, 2 / fan_in), and names `Normal()` (std 1) for both heads."""
  net = networks.make_network("parl_atari", discrete=True, image_obs=True, action_dim=6)
  p = net.init(jax.random.PRNGKey(0), jnp.zeros((1, 4, 42, 42), jnp.uint8))["params"]
  expected_std = dict(Conv_0=np.sqrt(2 / (4 * 4 * 4)), Conv_1=np.sqrt(2 / (4 * 4 * 16)),
                      Dense_0=np.sqrt(2 / (11 * 11 * 32)), Dense_1=1.0, Dense_2=1.0)
  for name, std in expected_std.items():
    kernel = np.asarray(p[name]["kernel"])
    assert abs(kernel.std() / std - 1) < 0.15, (name, kernel.std(), std)
    assert np.abs(kernel).max() > 2.5 * std, name  # an untruncated normal, as Paddle's
    assert not np.any(np.asarray(p[name]["bias"])), name
  assert p["Dense_1"]["kernel"].shape == (256, 6) and p["Dense_2"]["kernel"].shape == (256, 1)
