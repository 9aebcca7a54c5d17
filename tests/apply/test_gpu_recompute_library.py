"""Recomputation of a library call (cuBLASLt) in the GPU executable: the
copy of the call writes its result at the plan's place and its workspace at
a place of its own, free while the copy runs; the independent checker refuses
a workspace placed over a live value, the read-back one placed elsewhere.

Compile-only for the shipped H100 description (jax's CUDA plugin, no GPU):
built and decoded again, never run here.  Triton GEMMs are switched off, so
the step's matmuls are cuBLASLt calls (what a compile-only target does
when no default Triton tile fits a dot, as in vit).
"""

from __future__ import annotations

import warnings

import pytest

jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402

from olla_jax.apply import gpu_executable, gpu_readback, gpu_rewrite  # noqa: E402
from tests.marks import needs_plugin  # noqa: E402
from tests.small_steps import (assert_scratch_refused, recomputed_on_h100,  # noqa: E402
                               scratch_moved_and_bare)

S = jax.ShapeDtypeStruct
CUBLAS = {"xla_gpu_enable_triton_gemm": False}


def held_step(x, w1, w2):
    a = x @ w1                              # read early, and again at the end
    c = jnp.tanh((x * a.sum()) @ w2)        # the peak: 8 MiB while a waits
    d = c[:, :256] * c[:, 256:512]
    return (a * d).astype(jnp.bfloat16)


ARGS = (S((2048, 256), jnp.float32), S((256, 256), jnp.float32), S((256, 1024), jnp.float32))


@pytest.fixture(scope="module")
def recomputed():
    return recomputed_on_h100(held_step, ARGS, CUBLAS)


def _library_copy(plan):
    lib = [r for r in plan.layout.recomputes if r.scratch]
    assert lib, (plan.notes, plan.layout.recomputes)
    return lib[0]


@needs_plugin
def test_a_cublas_call_is_copied_with_a_workspace_of_its_own(recomputed):
    from olla_jax import checked
    base, plan = recomputed
    assert plan.planned_temp_bytes < base.runs_temp_bytes, plan.notes
    r = _library_copy(plan)
    ((ws, ws_place),) = r.scratch
    assert plan.graph.values[ws].size > 0
    # the x @ w1 product: 2 m n k FLOPs, its k read from the call's config payload
    assert plan.extra_flops >= 2 * 2048 * 256 * 256
    assert checked.rejection(base.capture, plan.layout, alignment=256) is None
    after = gpu_executable.decode(plan.executable_bytes)
    names = [t.thunk_info.profile_annotation for t in after.thunks]
    first, copy = [k for k, n in enumerate(names) if n == r.producer]
    assert gpu_rewrite.thunk_kind(after.thunks[copy]) == "cublas_lt_matmul_thunk"
    roles = [(m.buffer_allocation_index, m.offset, role)
             for m, role in gpu_rewrite.clone_arguments(after.thunks[copy])]
    first_ws = next((m.buffer_allocation_index, m.offset) for m, role
                    in gpu_rewrite.clone_arguments(after.thunks[first]) if role == "scratch")
    assert (*ws_place, "scratch") in roles and first_ws == plan.layout.early_place(ws)
    assert (*r.place, "written") in roles
    assert gpu_readback.compare(plan.executable_bytes, plan.layout) is None


@needs_plugin
def test_checker_refuses_a_copy_whose_workspace_overlaps_a_live_value(recomputed):
    base, plan = recomputed
    r = _library_copy(plan)
    ((ws, _),) = r.scratch

    def refused(scratch, match):
        assert_scratch_refused(base.capture, plan.layout, r.producer, scratch, match)
    # over the copy's own result, written by the same call and live from then on
    refused(((ws, r.place),), "scratch.*overlap|overlap.*scratch")
    # over an operand the copy reads (kept live until the copy runs)
    operand = max((v for v in plan.graph.values.values() if plan.graph.node_index[r.producer]
                   in v.touches and v.def_node != plan.graph.node_index[r.producer]
                   and v.allocation == plan.graph.temp_allocation), key=lambda v: v.size,
                  default=None)
    if operand is not None:
        refused(((ws, plan.layout.early_place(operand.id)),), "overlap")
    # no place claimed for it, or a claim on a value that is no scratch of the call
    refused((), "no place claimed")
    refused(((ws, r.place), (r.value, r.place)), "no scratch of that library call")


@needs_plugin
def test_readback_and_rewrite_hold_the_workspace_to_the_plan(recomputed):
    from olla_jax.apply import feed_back
    base, plan = recomputed
    wrong, bare = scratch_moved_and_bare(plan.layout, _library_copy(plan))
    assert "where the plan puts" in gpu_readback.compare(plan.executable_bytes, wrong)
    # the rewrite refuses a copy of the call with no place for its workspace
    with pytest.raises(gpu_rewrite.RewriteError, match="scratch"):
        gpu_rewrite.rewrite(base.capture.executable, feed_back.edit_of(bare))


@needs_plugin
def test_a_saved_plan_keeps_the_copys_workspace(recomputed, tmp_path):
    """A plan file keeps where a library call's copy puts its workspace: the
    plan read back is the same plan, passes the checker and is built again
    (without the place, the checker finds "no place claimed" and the plan
    falls back to XLA's)."""
    import olla_jax
    base, plan = recomputed
    r = _library_copy(plan)
    path = tmp_path / "library_copy.json"
    plan.save(path)
    loaded = olla_jax.load_plan(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        again = olla_jax.plan(held_step, *ARGS, backend="gpu:h100", time_limit_s=1,
                              compiler_options=CUBLAS, saved=loaded)
    assert again.layout is not None and again.layout.recomputes == plan.layout.recomputes, \
        again.notes
    assert again.planned_temp_bytes == plan.planned_temp_bytes
    assert again.executable_bytes is not None, again.notes
    assert gpu_readback.compare(again.executable_bytes, again.layout) is None
    assert [q.get("scratch") for q in loaded.recomputes if q["producer"] == r.producer] == \
        [[[v, list(p)] for v, p in r.scratch]]
