"""gpu.FAST_CAPTURE_OPTIONS: merged with the caller's options, and its backend
options (LLVM, ptxas) leave the schedule and buffer assignment as they are."""

from __future__ import annotations

import warnings

import pytest

jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402

from olla_jax.capture import gpu  # noqa: E402
from tests.marks import needs_plugin  # noqa: E402


def test_merge_keeps_the_callers_passes_and_values():
    before = dict(gpu.FAST_CAPTURE_OPTIONS)
    merged = gpu.with_fast_capture({"xla_disable_hlo_passes": "cse,multi_output_fusion",
                                    "xla_llvm_disable_expensive_passes": False,
                                    "xla_backend_optimization_level": 0})
    assert set(merged["xla_disable_hlo_passes"].split(",")) == {
        "cse", "multi_output_fusion", "triton-softmax-rewriter"}
    assert merged["xla_llvm_disable_expensive_passes"] is False      # the caller's value wins
    assert merged["xla_gpu_disable_gpuasm_optimizations"] is True
    assert merged["xla_backend_optimization_level"] == 0
    assert gpu.FAST_CAPTURE_OPTIONS == before                         # not changed in place
    assert gpu.with_fast_capture(None) == gpu.FAST_CAPTURE_OPTIONS


def _norm_step(w, x):
    def loss(w):
        h = x @ w
        h = (h - h.mean(-1, keepdims=True)) / jnp.sqrt(h.var(-1, keepdims=True) + 1e-5)
        return jnp.mean(jax.nn.softmax(h @ w.T, -1) ** 2)
    return w - 0.1 * jax.grad(loss)(w)


@needs_plugin
@pytest.mark.slow
def test_backend_options_do_not_change_what_is_planned():
    from olla_jax.capture.record import capture
    args = (jax.ShapeDtypeStruct((64, 64), jnp.float32), jax.ShapeDtypeStruct((32, 64), jnp.float32))
    backend_only = {k: v for k, v in gpu.FAST_CAPTURE_OPTIONS.items()
                    if k != "xla_disable_hlo_passes"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plain = capture(_norm_step, *args, backend="gpu:h100")
        fast = capture(_norm_step, *args, backend="gpu:h100", compiler_options=backend_only)
    assert fast.hlo_text == plain.hlo_text
    assert fast.live_range_text == plain.live_range_text
    assert fast.values_text == plain.values_text
    assert fast.memory == plain.memory
