"""List orders whose order costs tie are told apart by their region-fit
floors (``strategy._tied_list_order``): the order objective counts every
idle output byte free, so on gpt2 with gradient accumulation (H100) the ten
rules' orders cost the same within 12 bytes while no placement of the first
went below 9.25 MiB and another placed at 8.25."""

from __future__ import annotations

import time

from olla_jax import strategy
from olla_jax.solve import place_check
from olla_jax.solve.list_schedule import ListResult
from olla_jax.solve.problem import Interval, Occupant, PlacementProblem, Region

K = 1024


class _Graph:
    """Only what ``_tied_list_order`` reads: each order's placement problem."""

    def __init__(self, problems: dict):
        self.problems = problems

    def placement_problem(self, order):
        return self.problems[tuple(order)], ()


def _problems():
    # A 1 KiB block over 0-2 beside a 2 KiB one (no region holds it) at 1.
    # Under order (0, 1) the 1 KiB region's output is written at 2: the
    # block cannot stay there its whole life (floor 3 KiB); under (1, 0) it
    # is written later (floor 2 KiB).
    ivs = (Interval(K, 0, 2), Interval(2 * K, 1, 1))
    late = PlacementProblem(intervals=ivs, regions=(Region(K, (Occupant(0, K, 2, 3),)),),
                            alignment=K)
    early = PlacementProblem(intervals=ivs, regions=(Region(K, (Occupant(0, K, 3, 3),)),),
                             alignment=K)
    assert place_check.region_fit_bound(late) == 3 * K
    assert place_check.region_fit_bound(early) == 2 * K
    return _Graph({(0, 1): late, (1, 0): early})


def test_the_tied_order_with_the_lower_floor_is_kept():
    graph = _problems()
    found = [ListResult((0, 1), 100, "growth"), ListResult((1, 0), 100, "frees")]
    order, problem = strategy._tied_list_order(graph, found, until=time.monotonic() + 60)
    assert order == (1, 0)
    assert problem[0] is graph.problems[(1, 0)]


def test_no_look_where_the_regions_cost_the_first_order_little():
    # The first order's floor is its live bytes: the others are not looked at.
    ivs = (Interval(K, 0, 2), Interval(2 * K, 1, 1))
    free = PlacementProblem(intervals=ivs, regions=(Region(K),), alignment=K)
    graph = _problems()
    graph.problems[(0, 1)] = free
    graph.problems[(1, 0)] = None     # would fail if it were looked at
    found = [ListResult((0, 1), 100, "growth"), ListResult((1, 0), 100, "frees")]
    assert strategy._tied_list_order(graph, found, until=time.monotonic() + 60)[0] == (0, 1)


def test_a_costlier_order_or_no_time_keeps_the_least_cost():
    graph = _problems()
    costlier = [ListResult((0, 1), 100, "growth"), ListResult((1, 0), 101, "frees")]
    assert strategy._tied_list_order(graph, costlier, until=time.monotonic() + 60)[0] == (0, 1)
    tied = [ListResult((0, 1), 100, "growth"), ListResult((1, 0), 100, "frees")]
    assert strategy._tied_list_order(graph, tied, until=time.monotonic() - 1)[0] == (0, 1)
    # The least cost is kept when it comes later, as best_list_schedule did.
    later = [ListResult((1, 0), 101, "growth"), ListResult((0, 1), 100, "frees")]
    assert strategy._tied_list_order(graph, later, until=time.monotonic() + 60)[0] == (0, 1)
