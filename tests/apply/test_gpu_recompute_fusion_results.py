"""Recomputation of one result of a multi-result fusion in the GPU executable:
the copy of its kernel writes every result, the recomputed one at the plan's
place and the other at a scratch place of its own, free while the copy runs
(as a library call's workspace); the independent checker refuses that place
over a live value, or no place for it, the read-back a place elsewhere.

Compile-only for the shipped H100 description (jax's CUDA plugin, no GPU):
built and decoded again, never run here.  ``exp(x)`` and its row sums are one
reduction fusion with two results; ``exp(x)`` waits across an 8 MiB product
for a GEMM (cuBLAS: Triton GEMMs are switched off, so no fusion takes it in).
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
    a = jnp.exp(x)
    s = a.sum(1, keepdims=True)             # one fusion writes a and s
    c = jnp.tanh((x * s) @ w2)              # the peak: 8 MiB while a waits
    d = (c[:, :256] * c[:, 256:512]) @ w1   # c dies here
    return (a @ (w1 * d.sum())).astype(jnp.bfloat16)   # a read again, by a GEMM


ARGS = (S((2048, 256), jnp.float32), S((256, 256), jnp.float32), S((256, 1024), jnp.float32))


@pytest.fixture(scope="module")
def recomputed():
    return recomputed_on_h100(held_step, ARGS, CUBLAS)


def _fusion_copy(plan):
    module = gpu_executable.decode(plan.capture.executable).hlo_module
    fusions = {i.name for c in module.computations for i in c.instructions
               if i.opcode == "fusion" and len(i.shape.tuple_shapes) > 1}
    found = [r for r in plan.layout.recomputes if r.producer in fusions]
    assert found, (plan.notes, plan.layout.recomputes)
    return found[0]


@needs_plugin
def test_a_multi_result_fusion_is_copied_with_its_other_result_at_a_scratch_place(recomputed):
    from olla_jax import checked
    base, plan = recomputed
    assert plan.planned_temp_bytes < base.runs_temp_bytes, plan.notes
    r = _fusion_copy(plan)
    ((other, place),) = r.scratch
    assert other != r.value and plan.graph.values[other].size > 0
    assert checked.rejection(base.capture, plan.layout, alignment=256) is None
    after = gpu_executable.decode(plan.executable_bytes)
    names = [t.thunk_info.profile_annotation for t in after.thunks]
    first, copy = [k for k, n in enumerate(names) if n == r.producer]
    written = [(m.buffer_allocation_index, m.offset) for m, w
               in gpu_rewrite.kernel_arguments(after.thunks[copy]) if w]
    first_written = [(m.buffer_allocation_index, m.offset) for m, w
                     in gpu_rewrite.kernel_arguments(after.thunks[first]) if w]
    assert sorted(written) == sorted([r.place, place])
    assert sorted(first_written) == sorted([plan.layout.early_place(r.value),
                                            plan.layout.early_place(other)])
    assert gpu_readback.compare(plan.executable_bytes, plan.layout) is None


@needs_plugin
def test_checker_refuses_the_other_result_over_a_live_value_or_unplaced(recomputed):
    base, plan = recomputed
    r = _fusion_copy(plan)
    ((other, _),) = r.scratch

    def refused(scratch, match):
        assert_scratch_refused(base.capture, plan.layout, r.producer, scratch, match)
    # over the copy's own result, written by the same kernel and live from then on
    refused(((other, r.place),), "overlap")
    # no place claimed for it, or a claim on a value that is no result of the fusion
    refused((), "no place claimed")
    stranger = next(v.id for v in plan.graph.values.values()
                    if v.def_node != plan.graph.node_index[r.producer] and v.size > 0
                    and v.allocation == plan.graph.temp_allocation)
    refused(((other, r.scratch[0][1]), (stranger, r.scratch[0][1])),
            "no other result of that fusion")


@needs_plugin
def test_readback_and_rewrite_hold_the_other_result_to_the_plan(recomputed):
    from olla_jax.apply import feed_back
    base, plan = recomputed
    wrong, bare = scratch_moved_and_bare(plan.layout, _fusion_copy(plan))
    assert "where the plan puts" in gpu_readback.compare(plan.executable_bytes, wrong)
    # the rewrite refuses a copy that would write the other result over its first run's
    with pytest.raises(gpu_rewrite.RewriteError, match="multi-output"):
        gpu_rewrite.rewrite(base.capture.executable, feed_back.edit_of(bare))


@pytest.mark.slow     # mlp:small compiled for H100: ~40 s on a loaded machine
@needs_plugin
def test_candidates_of_a_steps_multi_result_fusions():
    """mlp:small on H100: a multi-result fusion's results read by others are
    candidates, each with the fusion's other results with bytes as its
    scratch; a fusion with a result written in place over one of its operands
    (the relu gradient over the activation) is refused for every result, with
    its reason: its copy would read what its first run wrote."""
    import importlib
    import examples
    import olla_jax
    # (the module: ``olla_jax.budget.candidates`` the attribute is its function)
    screen = importlib.import_module("olla_jax.budget.candidates")
    step = examples.get("mlp", "small")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        base = olla_jax.plan(step.fn, *step.args, backend="gpu:h100", time_limit_s=1,
                             static_argnums=step.static_argnums,
                             donate_argnums=step.donate_argnums)
    g = base.graph
    module = gpu_executable.decode(base.capture.executable).hlo_module
    multi = {i.name for c in module.computations for i in c.instructions
             if i.opcode == "fusion" and len(i.shape.tuple_shapes) > 1}
    found, why = screen.screen(g, base.capture, "flops")
    from_multi = [c for c in found if g.nodes[c.producer] in multi]
    assert from_multi
    for c in from_multi:
        results = [v.id for v in g.values.values() if v.def_node == c.producer
                   and "{}" not in v.key]
        assert sorted(c.scratch) == sorted(v for v in results
                                           if v != c.value and g.values[v].size > 0)
    in_place = [v for v, text in why.items() if "in place" in text and
                g.nodes[g.values[v].def_node] in multi]
    assert in_place
    for v in in_place:
        node = g.values[v].def_node
        units = {g.unit_of_value[x.id] for x in g.values.values() if x.def_node == node}
        assert any(g.unit_of_value[o.id] in units for o in g.values.values()
                   if o.def_node != node and node in o.touches)
