"""A bound's order problem never asks more than a placed plan used.  An output
region counts busy whole while any of its items is live; where XLA parked
its temporaries in a donated input (fixed units on part of its bytes), the
rest of it may hold movable units, and plans do put them there.  The bound's
problems cut such regions at the fixed units' edges, so each piece is busy
only while a unit on it is live (a held-out keras step had a bound above
its verified plan; this test fails so on the tiny donated mlp example)."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_model import captured_donated, graph_of  # noqa: E402

from olla_jax import strategy
from olla_jax.solve.problem import order_cost


@pytest.mark.parametrize("scheduler", ["default", "memory"])
def test_no_bound_problem_costs_more_than_the_plan_placed(scheduler):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = graph_of(captured_donated("mlp", scheduler))
    cut = graph._bound_segments[0]
    assert len(cut) > len(graph.regions), "a donated input holding one of XLA's temporaries"
    solution = strategy.solve_graph(graph, time_limit_s=1)
    arena = solution.layout.allocation_sizes.get(graph.temp_allocation, 0)
    for c in sorted({0, *graph.order_problem().region_sizes}):
        problem = graph.threshold_problem(c, for_bound=True)
        assert order_cost(problem, solution.layout.order) <= arena, c
    assert solution.lower_bound_bytes <= arena


def test_the_pieces_of_a_region_cover_it_once():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = graph_of(captured_donated("mlp", "default"))
    pieces = graph._bound_segments[0]
    for alloc in graph.regions:
        spans = sorted((lo, hi) for a, lo, hi in pieces if a == alloc)
        assert spans[0][0] == 0 and spans[-1][1] == graph.allocations[alloc].size
        assert all(a[1] == b[0] and a[0] < a[1] for a, b in zip(spans, spans[1:]))
