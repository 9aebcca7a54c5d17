"""An empty value XLA wrote its user's result over stays in that result's unit.

``lax.cond`` gives a branch that ignores its operand a ``()`` operand; XLA
places it at the bytes of the conditional's result, and the checker counts it
among the values that share them.  Being empty, it overlapped nothing, so it
was a unit of its own: a diffrax step's plan that moved the result was refused
("value tuple.170{} and the values XLA compiled to share its bytes were split")."""

from __future__ import annotations

import functools
import warnings

import jax
import jax.numpy as jnp

from olla_jax import check
from olla_jax.capture import capture
from olla_jax.graph import model


def step(x, flag):
    y = jnp.tanh(x @ x.T)
    z = jax.lax.cond(flag, lambda y: jnp.full_like(y, jnp.nan), lambda y: y, y)
    return jnp.sum(z @ x)


@functools.lru_cache(maxsize=1)
def _captured():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return capture(step, jnp.ones((16, 8)), jnp.bool_(False))


def test_a_unit_moved_whole_with_its_empty_operand_is_accepted():
    cap = _captured()
    graph = model.build(cap.hlo_proto, cap.values_text, cap.live_range_text)
    empty = [v for v in graph.values.values() if v.size == 0 and v.allocation == graph.temp_allocation]
    assert empty, "no empty value in the temp allocation: the premise is gone"
    unit_of = graph.unit_of_value
    alloc = graph.allocations[graph.temp_allocation]
    for z in empty:
        unit = graph.units[unit_of[z.id]]
        assert unit.movable, (z.key, unit)
        # Move the whole unit past XLA's arena, keeping its members' relative places.
        base = -(-alloc.size // 64) * 64
        places = {v: (unit.allocation, base + rel)
                  for v, rel in zip(unit.values, unit.member_offsets)}
        plan = check.CandidatePlan(order=graph.nodes, places=places,
                                   allocation_sizes={alloc.index: base + unit.size})
        check.check_plan(cap.hlo_proto, cap.values_text, cap.live_range_text, plan)
