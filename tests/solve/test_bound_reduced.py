"""The reduced-problem CP-SAT bound against brute force over every order."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).parent))
from test_bounds import all_orders, optimum, order_problems  # noqa: E402

from olla_jax.solve.bound_reduced import reduce_problem, reduced_cpsat_bound  # noqa: E402
from olla_jax.solve.bounds import min_cut_bound  # noqa: E402
from olla_jax.solve.problem import Item, OrderProblem, order_cost  # noqa: E402


@st.composite
def problems_with_corrections(draw):
    """order_problems, some with negative node extras (a bound's correction)."""
    p = draw(order_problems(max_nodes=6))
    if draw(st.booleans()):
        extra = tuple(x - draw(st.integers(0, 30)) for x in p.node_extra)
        p = OrderProblem(p.num_nodes, p.edges, p.items, extra, p.region_sizes)
    return p


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems_with_corrections(), st.integers(0, 100))
def test_every_order_restricted_costs_no_more_on_the_reduced_problem(problem, min_size):
    red = reduce_problem(problem, min_size)
    where = {v: k for k, v in enumerate(red.nodes)}
    for order in all_orders(problem):
        restricted = [where[v] for v in order if v in where]
        # the restriction is an order of the reduced problem (its edges are implied)...
        pos = {v: k for k, v in enumerate(restricted)}
        assert all(pos[u] < pos[v] for u, v in red.problem.edges)
        # ...that costs no more there: so the reduced optimum is a bound
        assert order_cost(red.problem, restricted) <= order_cost(problem, order)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems_with_corrections(), st.integers(0, 60))
def test_cpsat_bound_on_the_reduced_problem_never_exceeds_the_optimum(problem, min_size):
    found = reduced_cpsat_bound(problem, min_size, time_limit_s=2.0, workers=1)
    assert 0 <= found.value <= optimum(problem)
    if found.optimal:
        assert found.value == found.order_cost


def test_beats_the_per_node_min_cut_where_one_order_cannot_please_every_node():
    # Found by random search: each node alone has a cheap set of nodes run
    # before it (min-cut 18), but no single order gives every node its own.
    items = (Item(9, (0,), (0, 3, 5)), Item(9, (2,), (2, 3, 5)), Item(8, (3,), (3, 4, 5)),
             Item(3, (3,), (3, 4)), Item(5, (3,), (3, 4)))
    problem = OrderProblem(6, ((0, 1), (1, 2), (1, 5), (2, 4), (4, 5)), items, (0,) * 6)
    opt = optimum(problem)
    cut = min_cut_bound(problem).value
    found = reduced_cpsat_bound(problem, 0, time_limit_s=5.0, workers=1)
    assert cut < found.value == opt
    # keeping only the items of 8 bytes or more still proves more than the min-cut
    part = reduced_cpsat_bound(problem, 8, time_limit_s=5.0, workers=1)
    assert cut < part.value <= opt
    assert part.kept_items == 3


def test_negative_min_size_is_rejected():
    with pytest.raises(ValueError, match="min_size"):
        reduce_problem(OrderProblem(1, (), (), (0,)), -1)
