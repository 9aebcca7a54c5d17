"""The order searched again with a plan's copies as parts of its problem
(``budget.reorder``)."""

from __future__ import annotations

import time

import pytest

from olla_jax import budget
from olla_jax.budget import reorder as ro
from olla_jax.budget.model import model_problem
from olla_jax.budget.recompute_plan import plan_of, step_index
from olla_jax.solve import recompute as rm
from olla_jax.solve.evaluate import Evaluator


@pytest.fixture(scope="module")
def planned(planned_example):
    """vit tiny planned without a budget (shared with the other budget tests)."""
    _, plan = planned_example("vit")
    return plan, budget.candidates(plan.graph, plan.capture)


def _order(plan):
    return tuple(plan.layout.order if plan.layout is not None else plan.graph.xla_order)


_SOLVED = {}


def _least_peak_picks(graph, order, cands):
    """The model's least live peak on ``order`` (solved once a session)."""
    if "got" not in _SOLVED:
        problem, keys, _ = model_problem(graph, order, cands)
        sol = rm.least_peak_within(problem, 2**40, time_limit_s=5)
        _SOLVED["got"] = problem, sol, [(c, k) for (c, ks), j in zip(keys, sol.picks) if j >= 0
                                        for k in ks[j]]
    return _SOLVED["got"]


def test_no_copies_is_the_order_problem(planned):
    plan, _ = planned
    graph, order = plan.graph, _order(plan)
    assert ro.copies_problem(graph, order, []) == graph.order_problem()


def test_copies_problem_counts_what_the_model_counts(planned):
    """With the placement's parked units, the copies' problem's peak on the
    same order is the recomputation model's live-bytes peak for the same
    copies (two models of one plan, built apart)."""
    plan, cands = planned
    graph, order = plan.graph, _order(plan)
    problem, sol, picks = _least_peak_picks(graph, order, cands)
    assert picks, "the step has copies that lower its peak"
    assert sol.peak < int(rm.profile(problem, [-1] * len(problem.choices)).max())
    parked = ro.parked_units(graph, order)
    got = Evaluator(ro.copies_problem(graph, order, picks, parked)).cost(list(order))
    assert got == sol.peak


def test_copies_are_items_read_after_their_step(planned):
    plan, cands = planned
    graph, order = plan.graph, _order(plan)
    _, _, picks = _least_peak_picks(graph, order, cands)
    problem = ro.copies_problem(graph, order, picks)
    base = graph.order_problem()
    assert len(problem.items) == len(base.items) + len({(c.value, k) for c, k in picks})
    step = step_index(graph, order)
    edges = set(problem.edges)
    for c, k in picks:
        users = sorted(c.users, key=lambda n: step[n])
        r = users[k]
        made = [it for it in problem.items[len(base.items):] if it.defs == (r,)]
        assert made and all(step[t] >= step[r] for it in made for t in it.touches)
        assert all((r, t) in edges for it in made for t in it.touches if t != r)


def test_reorder_keeps_the_copies_valid_and_never_worse(planned):
    plan, cands = planned
    graph, order = plan.graph, _order(plan)
    _, _, picks = _least_peak_picks(graph, order, cands)
    parked = ro.parked_units(graph, order)
    new = ro.reorder(graph, order, picks, deadline=time.monotonic() + 2, parked=parked)
    assert sorted(new) == sorted(order)
    ev = Evaluator(ro.copies_problem(graph, order, picks, parked))
    assert ev.cost(list(new)) <= ev.cost(list(order))
    moved = ro.moved_picks(graph, order, new, picks, cands)
    if tuple(new) == tuple(order):
        assert sorted((c.value, k) for c, k in moved) == sorted((c.value, k) for c, k in picks)
    plan_of(graph, new, moved)      # places (raises on a copy with no reader)
