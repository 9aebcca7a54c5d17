"""Loop-body copies chosen by the recomputation model (``budget.body_model``):
the body's candidates become the entry model's choices on the fixed order,
a copy costs its kernel times the loop's trip count, a value and a copy
reading it exclude each other (the rewrites chain no body copies), and the
greedy's plan is the warm start and the fallback."""

from __future__ import annotations

import dataclasses

import pytest

from olla_jax import check
from olla_jax.budget import body, body_model, recompute_plan
from olla_jax.plan import candidate_plan
from olla_jax.solve import recompute as model
from tests.small_steps import accumulate_args, planned_accumulate


MICRO = 3


def _args():
    return accumulate_args(MICRO)


@pytest.fixture(scope="module")
def base():
    return planned_accumulate(MICRO)


@pytest.fixture(scope="module")
def cands(base):
    got = body.candidates(base.graph, base.capture)
    assert got, "no body candidates"
    return got


def test_the_trip_count_is_read_from_the_while(base, cands):
    trips = body_model.trip_counts(base.capture, base.graph)
    assert set(trips.values()) == {MICRO}
    assert {c.loop for c in cands} <= set(trips)


def test_the_problem_has_a_choice_per_candidate_and_excludes_chains(base, cands):
    trips = body_model.trip_counts(base.capture, base.graph)
    problem, keys = body_model.problem_of(base.graph, base.layout.order, [], cands, trips)
    assert len(problem.choices) == len(keys) > 0
    for choice, (c, ks) in zip(problem.choices, keys):
        assert len(choice.options) == len(ks) and set(ks) <= set(c.splits)
        assert choice.cost == max(1, round(c.cost_s * MICRO * 1e9))   # per iteration x trips
    of_value = {c.value: n for n, (c, _) in enumerate(keys)}
    conflicting = set(model.conflicts(problem))
    for n, (c, ks) in enumerate(keys):
        for o in c.operands:
            if o in of_value:       # a value and a copy reading it: never both
                assert ((n, 0), (of_value[o], 0)) in conflicting


def test_the_model_meets_a_target_at_no_more_cost_than_the_greedy(base, cands):
    """At the body greedy's temp, the model's copies meet it for no more
    trip-weighted cost, and the independent checker accepts them."""
    graph, order = base.graph, base.layout.order
    trips = body_model.trip_counts(base.capture, graph)
    greedy = recompute_plan.plan_of(graph, order, [], body_cands=cands, target_temp=0)
    assert greedy.body
    target = greedy.temp_bytes
    import time
    got = body_model.choose_model(graph, order, [], cands, target, trips=trips, warm=greedy,
                                  deadline=time.monotonic() + 20)
    assert got is not None and got.temp_bytes <= target
    assert body_model.body_cost(got, trips) <= body_model.body_cost(greedy, trips) + 1e-12
    assert not body_model.better(greedy, got, target, trips)
    cap = base.capture
    check.check_plan(cap.hlo_proto, cap.values_text, cap.live_range_text,
                     candidate_plan(got.layout))      # raises when rejected


def test_exclusive_pairs_are_never_both_taken():
    """Two values dropped over one peak would meet the budget; a caller's
    ``exclusive`` pair rules that out, so the least peak keeps one."""
    problem = model.RecomputeProblem(
        sizes=(10, 10, 25), starts=(0, 0, 4), ends=(9, 9, 4),
        choices=(model.Choice(0, (model.Option((2, 6)),), 1),
                 model.Choice(1, (model.Option((2, 6)),), 1)), budget=25)
    assert model.solve(problem, time_limit_s=5).met
    ruled = dataclasses.replace(problem, exclusive=(((0, 0), (1, 0)),))
    got = model.solve(ruled, time_limit_s=5)
    assert not got.met and sorted(got.picks) == [-1, 0] and got.peak == 35
    with pytest.raises(ValueError):
        model.evaluate(ruled, (0, 0))
    with pytest.raises(ValueError):
        dataclasses.replace(problem, exclusive=(((0, 0), (2, 0)),))
