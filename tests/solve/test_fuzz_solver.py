"""Fuzzing the solvers: random DAGs through ``solve_order`` and the min-cut
bound, random placement problems through ``place``, each result judged by
checks that share no code with the solvers (brute force, an O(n^2) overlap
check).  The generators live in ``tests/_fuzz.py`` (``benchmarks/fuzz.py`` runs them long); here
hypothesis drives them through ``st.randoms()``, so failures shrink.

Bounded: about 30-60 s on two cores.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import _fuzz as fuzz
from olla_jax.solve import bounds, place
from olla_jax.solve.order import solve_order
from olla_jax.solve.problem import (ARENA, Interval, Item, Occupant, OrderProblem, Placement,
                                    PlacementProblem, Region, check_topological, order_cost,
                                    step_profile)

FUZZ = settings(deadline=None, derandomize=True, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
randoms = st.randoms(use_true_random=False)


# ---------------------------------------------------------------------------
# the independent checks themselves must be able to fail


def test_order_check_catches_bad_results():
    problem = OrderProblem(3, ((0, 1), (1, 2)), (Item(10, (0,), (0, 2)),), (0, 0, 0))

    class Result:
        def __init__(self, order, cost, history=()):
            self.order, self.cost, self.history = order, cost, history

    assert fuzz.check_order_result(problem, Result((0, 1, 2), 10), [(0, 1, 2)]) == []
    assert "not topological" in fuzz.check_order_result(problem, Result((1, 0, 2), 10), [])[0]
    assert "not topological" in fuzz.check_order_result(problem, Result((0, 1), 10), [])[0]
    assert "reported cost" in fuzz.check_order_result(problem, Result((0, 1, 2), 3), [])[0]
    assert "not decreasing" in fuzz.check_order_result(
        problem, Result((0, 1, 2), 10, ((0.0, 5), (0.1, 10))), [])[0]


def test_placement_check_catches_bad_placements():
    problem = PlacementProblem(
        (Interval(64, 0, 2), Interval(64, 1, 3), Interval(64, 3, 4), Interval(0, 0, 4)),
        (Region(128, (Occupant(0, 64, 0, 0),)),), alignment=64, same_offset=())
    good = Placement((ARENA, ARENA, ARENA, ARENA), (0, 64, 0, 0), 128)
    assert fuzz.placement_violations(problem, good) == []
    cases = {
        "overlap": Placement((ARENA,) * 4, (0, 0, 64, 0), 128),
        "exceeds": Placement((ARENA,) * 4, (0, 64, 0, 0), 64),
        "alignment": Placement((ARENA,) * 4, (0, 96, 0, 0), 192),
        "occupant": Placement((0, ARENA, ARENA, ARENA), (0, 0, 64, 0), 128),
        "unknown region": Placement((1, ARENA, ARENA, ARENA), (0, 64, 0, 0), 128),
        "regions": Placement((ARENA,) * 3, (0, 64, 0), 128),
    }
    for what, bad in cases.items():
        assert fuzz.placement_violations(problem, bad), what
    grouped = PlacementProblem(problem.intervals, problem.regions, 64, ((0, 1),))
    assert fuzz.placement_violations(grouped, Placement((ARENA,) * 4, (0, 0, 64, 0), 128)) == []
    assert "split" in fuzz.placement_violations(grouped, good)[0]


def test_brute_force_on_a_known_problem():
    # Two independent producers of 100 B each read by a final node: freeing
    # one before making the other is impossible, so the optimum is 200.
    problem = OrderProblem(3, ((0, 2), (1, 2)),
                           (Item(100, (0,), (0, 2)), Item(100, (1,), (1, 2))), (0, 0, 0))
    assert sorted(fuzz.all_topological_orders(problem)) == [(0, 1, 2), (1, 0, 2)]
    assert fuzz.brute_force_optimum(problem)[0] == 200


# ---------------------------------------------------------------------------
# order


@pytest.mark.parametrize("engine", ["list", "auto"])
@settings(FUZZ, max_examples=120)
@given(rng=randoms)
def test_solve_order_random_dags(engine, rng):
    problem = fuzz.random_order_problem(rng, max_nodes=rng.choice((6, 12, 30)))
    starts = [fuzz.random_topological_order(problem, rng) for _ in range(rng.randint(0, 2))]
    result = solve_order(problem, warm_starts=starts, time_limit_s=0.15, engine=engine,
                         seed=rng.randrange(10))
    assert fuzz.check_order_result(problem, result, starts) == []
    check_topological(problem, result.order)
    assert result.cost == order_cost(problem, result.order)
    assert all(result.cost <= order_cost(problem, s) for s in starts)
    bound = bounds.min_cut_bound(problem, time_limit_s=5.0)
    assert bound.value <= result.cost, (bound, result)


@settings(FUZZ, max_examples=150)
@given(rng=randoms)
def test_bounds_against_brute_force_on_tiny_dags(rng):
    problem = fuzz.random_order_problem(rng, max_nodes=6, max_items=8)
    optimum, best_order = fuzz.brute_force_optimum(problem)
    result = solve_order(problem, time_limit_s=0.1, engine="list")
    assert result.cost >= optimum
    # The bound the planner reports, with the orders it found passed in.
    bound = bounds.min_cut_bound(problem, time_limit_s=5.0, orders=[result.order])
    assert bound.value <= optimum, (problem, bound.value, optimum)
    # Every node's per-node bound holds in every order, not just the best.
    exact = bounds.min_cut_bound(problem, time_limit_s=5.0, prune=False)
    assert exact.value <= optimum
    assert exact.value >= bound.value or not bound.complete
    for order in fuzz.all_topological_orders(problem):
        profile = step_profile(problem, order)
        for step, node in enumerate(order):
            assert exact.per_node[node] <= profile[step], (problem, order, node)
    simple = bounds.simple_bound(problem)
    assert simple.value <= optimum


@settings(FUZZ, max_examples=50)
@given(rng=randoms)
def test_auto_engine_reaches_the_optimum_when_it_says_so(rng):
    problem = fuzz.random_order_problem(rng, max_nodes=7, max_items=10)
    optimum, _ = fuzz.brute_force_optimum(problem)
    result = solve_order(problem, time_limit_s=0.5, engine="auto")
    assert result.cost >= optimum
    if result.proven_optimal:
        assert result.cost == optimum, (problem, result)


def test_solve_order_rejects_an_invalid_warm_start():
    problem = OrderProblem(2, ((0, 1),), (), (0, 0))
    with pytest.raises(ValueError, match="warm start 0"):
        solve_order(problem, warm_starts=[(1, 0)], time_limit_s=0.1, engine="list")


# ---------------------------------------------------------------------------
# placement


@settings(FUZZ, max_examples=300)
@given(rng=randoms)
def test_greedy_placement_is_valid(rng):
    problem = fuzz.random_placement_problem(rng)
    placement = place.place(problem, engine="greedy")
    assert fuzz.placement_violations(problem, placement) == []
    assert placement.arena_size <= fuzz.stacked_size(problem)
    assert placement.arena_size >= place.live_bytes_bound(problem)


@settings(FUZZ, max_examples=80)
@given(rng=randoms)
def test_exact_placement_is_valid_and_no_worse(rng):
    problem = fuzz.random_placement_problem(rng, max_intervals=10)
    greedy = place.place(problem, engine="greedy")
    best = place.place(problem, time_limit_s=0.3)
    assert fuzz.placement_violations(problem, best) == []
    assert best.arena_size <= greedy.arena_size
    assert best.arena_size >= place.live_bytes_bound(problem)


def test_seeded_generators_are_reproducible():
    a = fuzz.random_order_problem(random.Random("x"), max_nodes=20)
    b = fuzz.random_order_problem(random.Random("x"), max_nodes=20)
    assert a == b
    assert fuzz.run_graph(random.Random("graph-0-0"), time_limit_s=0.1) == []
    assert fuzz.run_placement(random.Random("placement-0-0"), time_limit_s=0.1) == []
