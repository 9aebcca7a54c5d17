"""solve.bound_cpsat: a bound proven by CP-SAT against a target, checked
against brute force over every order (and, with ``park``, against placements
of every order, output regions with pinned items included)."""

from __future__ import annotations

import sys
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).parent))
from test_bounds import all_orders, optimum, order_problems  # noqa: E402
from test_bound_reduced import problems_with_corrections  # noqa: E402

from olla_jax.solve import place as place_lib  # noqa: E402
from olla_jax.solve.bound_cpsat import prove  # noqa: E402
from olla_jax.solve.bound_reduced import reduce_problem  # noqa: E402
from olla_jax.solve.bounds import min_cut_bound  # noqa: E402
from olla_jax.solve.place_greedy import best_fit  # noqa: E402
from olla_jax.solve.problem import (ARENA, Interval, Item, Occupant, OrderProblem,  # noqa: E402
                                    PlacementProblem, Region, live_intervals, order_cost)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(order_problems(max_nodes=6), st.integers(0, 400), st.integers(0, 400), st.integers(0, 60))
def test_never_above_the_optimum_whatever_the_target_and_floor(problem, target, floor, min_size):
    opt = optimum(problem)
    floor = min(floor, opt)          # a floor is a bound already
    found = prove(problem, target, floor=floor, min_size=min_size, time_limit_s=2.0)
    assert floor <= found.value <= max(opt, floor)
    if found.status == "below-none":
        assert found.value == target <= opt


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(order_problems(max_nodes=6))
def test_with_its_optimum_as_the_target_it_proves_the_reduced_optimum(problem):
    """Nothing of the reduced problem is below its optimum: CP-SAT proves it
    (so the model is the problem's cost, not a weaker one), and that is at
    most the full optimum."""
    red = reduce_problem(problem, 0).problem
    if red.num_nodes == 0:
        return
    least = optimum(red)
    assert least <= optimum(problem)
    found = prove(problem, least, min_size=0, time_limit_s=5.0)
    assert found.value == least
    assert found.status == ("below-none" if least > 0 else "none")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems_with_corrections(), st.integers(0, 100))
def test_with_negative_extras_kept_every_order_restricted_costs_no_more(problem, min_size):
    """reduce_problem(keep_negative=True), as prove uses it: a node with a
    negative extra (a bound's correction) stays, with it."""
    red = reduce_problem(problem, min_size, keep_negative=True)
    where = {v: k for k, v in enumerate(red.nodes)}
    for order in all_orders(problem):
        restricted = [where[v] for v in order if v in where]
        assert order_cost(red.problem, restricted) <= order_cost(problem, order)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems_with_corrections(), st.integers(0, 400))
def test_with_negative_extras_never_above_the_optimum_and_proves_the_reduced_one(problem, target):
    opt = optimum(problem)
    assert prove(problem, target, min_size=0, time_limit_s=2.0).value <= opt
    red = reduce_problem(problem, 0, keep_negative=True).problem
    if red.num_nodes:
        least = optimum(red)
        assert prove(problem, least, min_size=0, time_limit_s=5.0).value == least


def test_proves_the_plan_where_the_per_node_min_cut_stops_short():
    # each node alone has a cheap set run before it (min-cut 18), no one order does
    items = (Item(9, (0,), (0, 3, 5)), Item(9, (2,), (2, 3, 5)), Item(8, (3,), (3, 4, 5)),
             Item(3, (3,), (3, 4)), Item(5, (3,), (3, 4)))
    problem = OrderProblem(6, ((0, 1), (1, 2), (1, 5), (2, 4), (4, 5)), items, (0,) * 6)
    cut = min_cut_bound(problem).value
    opt = optimum(problem)
    assert cut < opt
    found = prove(problem, opt, floor=cut, min_size=0, time_limit_s=5.0)
    assert (found.value, found.status) == (opt, "below-none")


# ---- park: whole blocks into regions, against placements of every order

@st.composite
def parked_problems(draw):
    """order_problems with at most two pinned items per region, at disjoint
    bytes (offsets 0 and half the region), each no larger than its share."""
    p = draw(order_problems(max_nodes=4))
    caps = p.region_sizes
    count: dict[int, int] = {}
    items = []
    for it in p.items:
        if it.region != ARENA:
            k = count.get(it.region, 0)
            if k == 2:
                continue
            count[it.region] = k + 1
            it = Item(min(it.size, caps[it.region] // 2), it.defs, it.touches, it.region,
                      it.live_in, it.live_out)
        items.append(it)
    return OrderProblem(p.num_nodes, p.edges, tuple(items), p.node_extra, caps)


def _placement_problem(problem: OrderProblem, order) -> PlacementProblem:
    """The placement of ``order``: arena items and each node's extra as
    blocks, pinned items as occupants at offset 0 and half their region."""
    spans = live_intervals(problem, order)
    intervals = [Interval(it.size, s, e) for it, (s, e) in zip(problem.items, spans)
                 if it.region == ARENA and it.size > 0]
    intervals += [Interval(problem.node_extra[v], k, k) for k, v in enumerate(order)
                  if problem.node_extra[v] > 0]
    occupants: dict[int, list[Occupant]] = {}
    for it, (s, e) in zip(problem.items, spans):
        if it.region != ARENA and it.size > 0:
            mine = occupants.setdefault(it.region, [])
            mine.append(Occupant(len(mine) * (problem.region_sizes[it.region] // 2), it.size, s, e))
    regions = tuple(Region(cap, tuple(occupants.get(r, ()))) for r, cap in
                    enumerate(problem.region_sizes))
    return PlacementProblem(tuple(intervals), regions, alignment=1)


def _least_placed(problem: OrderProblem) -> int:
    """The least arena placed over every order: best-fit everywhere, an
    exact engine on the two best orders (an upper bound on the optimum)."""
    found = sorted((best_fit(_placement_problem(problem, o)).arena_size, tuple(o))
                   for o in all_orders(problem))
    best = found[0][0]
    for _, order in found[:2]:
        pp = _placement_problem(problem, order)
        best = min(best, place_lib.place_exact(pp, time_limit_s=1.0, engine="cpsat").arena_size)
    return best


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(parked_problems(), st.integers(0, 60))
def test_parking_never_above_a_placement_of_any_order(problem, min_size):
    least = _least_placed(problem)
    found = prove(problem, least + 1, min_size=min_size, park=True, time_limit_s=2.0)
    assert found.value <= least


def test_parking_sees_that_a_region_takes_whole_blocks_only():
    # two 2-byte blocks live together, one idle 3-byte region: the cost
    # subtracts 3 (4 - 3 = 1), but only one block fits there: the arena is 2
    items = (Item(2, (0,), (0, 1)), Item(2, (0,), (0, 1)))
    problem = OrderProblem(2, ((0, 1),), items, (0, 0), (3,))
    assert optimum(problem) == 1
    assert prove(problem, 2, min_size=0, time_limit_s=2.0).value == 1
    found = prove(problem, 2, min_size=0, park=True, time_limit_s=2.0)
    assert (found.value, found.status) == (2, "below-none")
    assert _least_placed(problem) == 2


def test_parking_counts_a_pinned_item_only_while_it_is_live():
    # a 4-byte region holds an output written at the last node: before it, a
    # 4-byte block may sit there, and the arena holds only the other one
    items = (Item(4, (0,), (0, 1)), Item(4, (0,), (0, 1)), Item(4, (2,), (2,), region=0,
                                                                live_out=True))
    problem = OrderProblem(3, ((0, 1), (1, 2)), items, (0, 0, 0), (4,))
    least = _least_placed(problem)
    assert least == 4
    assert prove(problem, least + 1, min_size=0, park=True, time_limit_s=2.0).value == 4
