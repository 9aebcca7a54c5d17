"""solve.bound_chain: bounds from sets of nodes in every sequence, against
brute force over every order, the pair bound, and the orders' peaks."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).parent))
from test_bounds import all_orders, optimum, order_problems  # noqa: E402

from olla_jax.solve.bound_chain import candidates, chain_bound, search_bound  # noqa: E402
from olla_jax.solve.bounds import min_cut_bound, pair_bound  # noqa: E402
from olla_jax.solve.problem import Item, OrderProblem, order_cost  # noqa: E402


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(order_problems(max_nodes=6), st.integers(1, 4), st.data())
def test_never_exceeds_the_optimum_and_pairs_match_the_pair_bound(problem, size, data):
    n = problem.num_nodes
    sets = list(itertools.combinations(range(n), min(size, n)))
    flow = data.draw(st.sampled_from(["ortools", "dinic"]))
    found = chain_bound(problem, sets, flow=flow)
    assert found.complete
    assert 0 <= found.value <= optimum(problem)
    if size == 2 and n >= 2:
        assert found.value == pair_bound(problem, sets, flow=flow).value


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(order_problems(max_nodes=6), st.integers(0, 300))
def test_the_search_never_exceeds_the_optimum_and_reports_only_what_beats_the_floor(problem, floor):
    orders = list(itertools.islice(all_orders(problem), 3))
    opt = optimum(problem)
    found = search_bound(problem, orders, time_limit_s=5.0, floor=min(floor, opt), width=6)
    assert found.value <= opt
    assert found.value == 0 or found.value > min(floor, opt)


# Found by random search: nodes 0, 1, 2 unordered (1 before 3).  Every pair,
# in either sequence, leaves its members a way to run at 16; no order runs
# 0, 1 and 2 all so: 17, the optimum.
TRIPLE = OrderProblem(
    4, ((1, 3),),
    (Item(1, (2,), (2, 0, 3)), Item(8, (0,), (0, 2, 1)), Item(8, (1,), (1, 2, 3, 0))),
    (0, 0, 0, 0))


def test_a_triple_proves_what_no_pair_does():
    pairs = list(itertools.combinations(range(4), 2))
    triples = list(itertools.combinations(range(4), 3))
    assert min_cut_bound(TRIPLE, prune=False).value <= pair_bound(TRIPLE, pairs).value == 16
    assert chain_bound(TRIPLE, triples).value == 17 == optimum(TRIPLE)
    orders = [list(o) for o in all_orders(TRIPLE)][:2]
    assert search_bound(TRIPLE, orders, time_limit_s=5.0, width=4).value == 17


def test_the_search_stops_at_the_orders_best_and_candidates_are_the_costliest():
    best = min(all_orders(TRIPLE), key=lambda o: order_cost(TRIPLE, o))
    found = search_bound(TRIPLE, [best], time_limit_s=5.0, width=4, largest=4)
    assert found.value == order_cost(TRIPLE, best)
    picked = candidates(TRIPLE, [best], 2)
    assert len(picked) == 2 and len(set(picked)) == 2
    assert candidates(TRIPLE, [], 3) == []


def test_a_node_outside_the_problem_is_rejected():
    with pytest.raises(ValueError, match="outside"):
        chain_bound(TRIPLE, [(0, 9)])
