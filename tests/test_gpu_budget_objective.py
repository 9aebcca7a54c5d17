"""What the GPU recomputation search minimises: extra FLOPs (``copy_cost``).

A compile-only GPU target runs nothing, and its plans are judged by extra
FLOPs against XLA's rematerialization; a roofline estimate of time ranked a
data-bound kernel by its bytes, so the search took kernels of many FLOPs
over ones of few that move as many bytes.  On CPU, where copies are timed,
the roofline stays.
"""

from __future__ import annotations

import warnings

import pytest

jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402

from olla_jax.capture import gpu  # noqa: E402

needs_plugin = pytest.mark.skipif(gpu.cuda_plugin() is None,
                                  reason="jax's CUDA plugin is not installed")
S = jax.ShapeDtypeStruct


def test_gpu_cost_is_flops_with_bytes_breaking_ties():
    from olla_jax.budget.candidates import copy_cost
    few, many = copy_cost(10**6, 8 << 20, True), copy_cost(10**7, 2 << 20, True)
    assert few < many       # 10 x fewer FLOPs, 4 x the bytes
    assert copy_cost(10**6, 1 << 20, True) < copy_cost(10**6, 2 << 20, True)
    assert copy_cost(0, 1 << 20, True) > 0         # moving data is not free
    # CPU: the roofline, the slower of FLOPs and bytes
    assert copy_cost(10**6, 8 << 20, False) > copy_cost(10**7, 2 << 20, False)


def step(x, w, p, w2):
    a = x @ w                               # a GEMM of K = 8: few FLOPs per byte
    b = p * a.sum()                         # one FLOP per element, as many bytes
    c = jnp.tanh((p * b.sum()) @ w2)        # the peak while a and b wait
    d = c[:, :256] * c[:, 256:512]
    return (a * d + b * d).astype(jnp.bfloat16)


ARGS = (S((2048, 8), jnp.float32), S((8, 256), jnp.float32), S((2048, 256), jnp.float32),
        S((256, 1024), jnp.float32))


@needs_plugin
def test_a_gpu_candidates_cost_goes_with_its_flops_not_its_bytes():
    import olla_jax
    from olla_jax import budget
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        base = olla_jax.plan(step, *ARGS, backend="gpu:h100", time_limit_s=2, feed_back=False)
    g = base.graph
    big = [c for c in budget.candidates(g, base.capture) if g.values[c.value].size == 2048 * 256 * 4]
    gemm = next(c for c in big if c.flops == 2 * 2048 * 256 * 8)
    elementwise = min((c for c in big if c.flops < gemm.flops / 4), key=lambda c: c.flops)
    # both move about a value's bytes: the roofline ranked the elementwise one
    # above the GEMM, with 1/16 of its FLOPs
    assert elementwise.cost_s / gemm.cost_s == pytest.approx(elementwise.flops / gemm.flops,
                                                             rel=0.2)
