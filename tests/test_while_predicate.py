"""A while thunk's predicate is the value at its condition's root, even where
XLA gave its byte to another flag of the loop (a Newton solve's non-finite test,
as optimistix and diffrax compute one): a plan that moves the two apart used to
be refused by the rewrite ("slice ... of while.N is ambiguous"), XLA's
executable kept."""

from __future__ import annotations

import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import olla_jax
from olla_jax import dumps
from olla_jax.capture import capture
from olla_jax.graph import layout, model
from tests.marks import needs_plugin


def newton(a, b):
    """Root of tanh(y) * a = b; the body's linear solve is a loop of its own."""
    def fn(y):
        return jnp.tanh(y) * a - b

    def cond(c):
        step, _, status = c
        return (step < 20) & (status == 0)

    def body(c):
        step, y, _ = c
        diff = jnp.linalg.solve(jax.jacfwd(fn)(y), fn(y))
        bad = jnp.any(~jnp.isfinite(diff))
        done = jnp.max(jnp.abs(diff)) < 1e-6
        return step + 1, jnp.where(bad, y, y - diff), jnp.where(bad, 2, jnp.where(done, 1, 0))
    return jax.lax.while_loop(cond, body, (0, jnp.zeros_like(b), 0))


ARGS = (jnp.full((64,), 2.0), jnp.linspace(-1.0, 1.0, 64))


@functools.lru_cache(maxsize=1)
def _captured():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return capture(newton, *ARGS, scheduler="memory")


def _condition_roots(hlo_proto: bytes) -> dict[str, str]:
    """While instruction -> its condition's root instruction, read from the HLO."""
    module = dumps.parse_hlo_proto(hlo_proto).hlo_module
    comps = {c.id: c for c in module.computations}
    out = {}
    for c in module.computations:
        for i in c.instructions:
            if i.opcode == "while":
                cond = comps[i.called_computation_ids[1]]
                out[i.name] = next(x.name for x in cond.instructions if x.id == cond.root_id)
    return out


def test_relocate_gives_the_predicates_place_where_a_flag_shared_its_byte():
    cap = _captured()
    graph = model.build(cap.hlo_proto, cap.values_text, cap.live_range_text)
    by_key = {v.key: v for v in graph.values.values()}
    shared = []
    for loop, root in _condition_roots(cap.hlo_proto).items():
        pred = by_key.get(root + "{}")
        others = [v for v in graph.values.values() if v.id != pred.id and v.size == pred.size
                  and (v.allocation, v.offset) == (pred.allocation, pred.offset)]
        if others:
            shared.append((loop, pred, others))
    assert shared, "no while predicate shares its byte with another value: the premise is gone"
    for loop, pred, others in shared:
        # Every sharer moved, the predicate to its own spot, the others to another.
        places = {pred.id: (pred.allocation, 1 << 20)}
        places.update({v.id: (v.allocation, 2 << 20) for v in others})
        lay = layout.Layout(graph=graph, order=graph.xla_order, places=places, allocation_sizes={})
        assert lay.relocate(loop, pred.allocation, pred.offset, pred.size) == places[pred.id]


@pytest.mark.slow   # the planner and the verification: 16 s at load 7
def test_plan_of_a_newton_loop_is_applied_and_bit_identical():
    plan = olla_jax.plan(newton, *ARGS, time_limit_s=3)
    assert not any("rewrite refused" in note for note in plan.notes), plan.notes
    assert plan.source == "xla" or plan.verified, plan.notes
    for got, want in zip(plan.compiled(*ARGS), jax.jit(newton)(*ARGS)):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


@needs_plugin
def test_gpu_plan_of_a_loop_with_a_triangular_solve_is_built():
    """XLA:GPU runs a triangular solve in a loop body as an unnamed group of a
    copy and the solve: the rewrite refused every plan of such a step ("thunk
    'sequential_thunk' names ''"); the group runs for the instruction it holds."""
    shapes = [jax.ShapeDtypeStruct(a.shape, a.dtype) for a in ARGS]
    plan = olla_jax.plan(newton, *shapes, backend="gpu:h100", time_limit_s=2)
    assert not any("rewrite refused" in note for note in plan.notes), plan.notes
    assert plan.source == "xla" or plan.executable_bytes, plan.notes
