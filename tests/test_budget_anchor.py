"""Recomputation starts from the plan's own placement (``budget.anchor``)."""

from __future__ import annotations

import warnings

import pytest

import examples
import olla_jax
from olla_jax import budget
from olla_jax.budget import anchor as anchor_lib
from olla_jax.budget.recompute_plan import best_fit, new_state
from olla_jax.graph.layout import xla_layout
from olla_jax.solve.place_check import validate_placement


@pytest.fixture(scope="module")
def lm():
    step = examples.make("lm_adamw", "tiny", 22)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", olla_jax.PlanWarning)
        plan = olla_jax.plan(step.fn, *step.args, static_argnums=step.static_argnums,
                             donate_argnums=step.donate_argnums, time_limit_s=3,
                             feed_back=False)
    return plan


def _order(plan):
    return plan.layout.order if plan.layout is not None else plan.graph.xla_order


def test_anchor_is_the_plans_own_placement(lm):
    graph = lm.graph
    for layout in (lm.layout, xla_layout(graph)):
        if layout is None:
            continue
        state = new_state(graph, layout.order)
        a = anchor_lib.anchor_of(graph, layout.order, state, layout)
        assert a is not None
        placed = anchor_lib.anchored(state, a)
        validate_placement(state.problem(), placed)
        assert placed.arena_size == a.placement.arena_size
        assert placed.arena_size <= layout.temp_bytes
    # not a plan of another order
    other = tuple(reversed(_order(lm)))
    assert anchor_lib.anchor_of(graph, other, new_state(graph, _order(lm)), lm.layout) is None


def test_greedy_keeps_the_plans_placement_where_best_fit_loses(lm):
    """A target the plan itself meets: best-fit from scratch places the
    greedy's picks above it; anchored, the picks keep the plan's places."""
    from olla_jax.solve.place import place_exact
    graph, order = lm.graph, lm.graph.xla_order
    cands = budget.candidates(graph, lm.capture)
    state = new_state(graph, order)
    plain = best_fit(state.problem())
    exact = place_exact(state.problem(), time_limit_s=4, hint=plain)
    if exact.arena_size >= plain.arena_size:
        pytest.skip("the exact placement found nothing below best-fit here")
    a = anchor_lib.Anchor(exact, tuple(iv[2] for iv in state.intervals))
    own = -(-exact.arena_size // graph.alignment) * graph.alignment   # (a layout's temp is aligned)
    old = budget.choose(graph, order, cands, own, time_limit_s=0.0)
    assert old is None or old.temp_bytes > own     # the case this is for
    got = budget.choose(graph, order, cands, own, time_limit_s=0.0, anchor=a)
    assert got is not None and got.temp_bytes <= own

