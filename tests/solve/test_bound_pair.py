"""The pair bound (bounds.pair_bound) against brute force over every order."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).parent))
from test_bounds import optimum, order_problems  # noqa: E402

from olla_jax.solve.bounds import last_of_set_bound, min_cut_bound, pair_bound  # noqa: E402
from olla_jax.solve.problem import Item, OrderProblem  # noqa: E402


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(order_problems(max_nodes=6), st.data())
def test_never_exceeds_the_optimum_and_is_at_least_the_last_of_the_pair(problem, data):
    n = problem.num_nodes
    pairs = list(itertools.combinations(range(n), 2))
    flow = data.draw(st.sampled_from(["ortools", "dinic"]))
    found = pair_bound(problem, pairs, flow=flow)
    assert found.complete
    assert 0 <= found.value <= optimum(problem)
    assert found.value >= last_of_set_bound(problem, [list(p) for p in pairs], flow=flow).value


def test_a_pair_proves_what_neither_node_alone_nor_the_last_of_the_pair_does():
    # Found by random search (1 in ~10k small DAGs): nodes 2 and 3 both follow
    # node 1 and are unordered.  Each alone, and whichever runs last with the
    # other done, can run at 7; but the first of the two holds node 1's
    # outputs that the other still needs as well as its own item: 8.
    items = (Item(4, (2,), (2,)), Item(1, (3,), (3,)), Item(3, (1,), (0, 1, 2)),
             Item(4, (1,), (0, 1, 3)))
    problem = OrderProblem(4, ((0, 1), (1, 2), (1, 3)), items, (0,) * 4)
    cut = min_cut_bound(problem, prune=False).value
    last = last_of_set_bound(problem, [[2, 3]]).value
    found = pair_bound(problem, [(2, 3)]).value
    assert last <= cut == 7 < found == 8 == optimum(problem)


def test_an_ordered_pair_has_one_case_and_unknown_nodes_are_rejected():
    problem = OrderProblem(2, ((0, 1),), (Item(4, (0,), (0, 1)),), (0, 0))
    assert pair_bound(problem, [(1, 0)]).flows == 2
    with pytest.raises(ValueError, match="outside"):
        pair_bound(problem, [(0, 5)])
