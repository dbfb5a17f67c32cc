"""flax actor-critic networks, chosen by name (`--network`). Importing this package registers the built-ins."""
from networks import atari, mlp  # noqa: F401  (registration side effects)
from networks.distributions import Categorical, DiagGaussian, distribution
from networks.registry import (NetworkError, apply_chunked, cpu_conv_chunks, default_network, make_network,
                               names, register)

__all__ = ["Categorical", "DiagGaussian", "distribution", "NetworkError", "apply_chunked", "cpu_conv_chunks", "default_network", "make_network",
           "names", "register"]
