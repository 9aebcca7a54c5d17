"""A call XLA:CPU emits as one kernel (its ``xla_cpu_small_call`` attribute:
jax.random's threefry loop is one) reaches the values inside it through the
slices XLA gave them, from one thunk spanning the whole call.  Values in one
such call that share bytes must therefore move together even when they are
live one after another: the graph ties them into one unit and the checker
refuses a plan that moves one of them alone.  (A flax step with dropout came
back from the rewriter as "slice ... is ambiguous: values ... move apart".)"""

from __future__ import annotations

import warnings
from collections import defaultdict

import jax
import jax.numpy as jnp
import pytest

from olla_jax import check, dumps
from olla_jax.graph import model


def dropout_grad(w, x, key):
    def loss(w):
        h = jnp.tanh(x @ w)
        h = jnp.where(jax.random.bernoulli(jax.random.fold_in(key, 3), 0.9, h.shape), h, 0)
        return jnp.sum(jnp.where(jax.random.bernoulli(jax.random.fold_in(key, 5), 0.9, h.shape),
                                 h @ w.T, 0) ** 2)
    return jax.grad(loss)(w)


@pytest.fixture(scope="module")
def captured():
    from olla_jax.capture.record import capture
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cap = capture(dropout_grad, jnp.ones((64, 64)), jnp.ones((32, 64)), jax.random.key(0))
    return cap, model.build(cap.hlo_proto, cap.values_text, cap.live_range_text)


def _sharing_inside_calls(cap, graph):
    """Pairs of values defined inside one small call on overlapping bytes."""
    module = dumps.parse_hlo_proto(cap.hlo_proto).hlo_module
    comps = {c.id: c for c in module.computations}
    records = dumps.parse_values(cap.values_text)
    pairs = []
    for c in module.computations:
        for call in c.instructions:
            if call.opcode != "call" or \
                    call.frontend_attributes.map.get("xla_cpu_small_call") != "true":
                continue
            names, todo = set(), list(call.called_computation_ids)
            while todo:
                for i in comps[todo.pop()].instructions:
                    names.add(i.name)
                    todo.extend(i.called_computation_ids)
            inside = [graph.values[r.id] for r in records.values()
                      if r.defining_instruction in names and r.id in graph.values]
            pairs += [(a, b) for a in inside for b in inside if a.id < b.id
                      and a.allocation == b.allocation
                      and a.offset < b.offset + b.size and b.offset < a.offset + a.size]
    return pairs


def test_values_sharing_bytes_in_a_one_kernel_call_are_one_unit(captured):
    cap, graph = captured
    pairs = _sharing_inside_calls(cap, graph)
    assert pairs, "jax.random.fold_in's threefry loop: XLA:CPU runs it as a small call"
    unit = graph.unit_of_value
    apart = [(a.key, b.key) for a, b in pairs if unit[a.id] != unit[b.id]]
    assert not apart, apart[:3]


def _free_spot(graph, v, size):
    """An aligned offset of ``v``'s allocation that no other value holds while ``v`` lives."""
    busy = [(u.offset, u.offset + u.size) for u in graph.values.values()
            if u.allocation == v.allocation and u.id != v.id
            and u.xla_range[0] <= v.xla_range[1] and v.xla_range[0] <= u.xla_range[1]]
    return next((o for o in range(0, size - v.size + 1, graph.alignment)
                 if o != v.offset and all(o + v.size <= lo or hi <= o for lo, hi in busy)), None)


def test_the_checker_refuses_one_of_them_moved_alone(captured):
    cap, graph = captured
    size = {a.index: a.size for a in graph.allocations}
    order = tuple(graph.nodes)
    base = check.CandidatePlan(order=order, places={}, allocation_sizes={})
    check.check_plan(cap.hlo_proto, cap.values_text, cap.live_range_text, base,
                     alignment=graph.alignment)      # XLA's own plan passes
    moved = {a.id: a for pair in _sharing_inside_calls(cap, graph) for a in pair}
    tried = caught_only_here = 0
    for v in moved.values():
        spot = _free_spot(graph, v, size[v.allocation])
        if spot is None:
            continue
        tried += 1
        alone = check.CandidatePlan(order=order, places={v.id: (v.allocation, spot)},
                                    allocation_sizes={})
        with pytest.raises(check.PlanRejected) as err:
            check.check_plan(cap.hlo_proto, cap.values_text, cap.live_range_text, alone,
                             alignment=graph.alignment)
        caught_only_here += "runs as one kernel" in str(err.value)
    assert tried
    assert caught_only_here, "some value is held with the others by nothing but the one kernel"
