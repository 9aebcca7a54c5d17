"""pytest marks shared by the test files."""

import pytest

from olla_jax.capture import gpu

# The compile-only GPU targets need jax's CUDA plugin (its compiler), not a GPU.
needs_plugin = pytest.mark.skipif(gpu.cuda_plugin() is None,
                                  reason="jax's CUDA plugin is not installed")
