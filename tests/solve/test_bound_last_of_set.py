"""The last-of-a-set bound against brute force over every order."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).parent))
from test_bounds import optimum, order_problems  # noqa: E402

from olla_jax.solve.bounds import last_of_set_bound, min_cut_bound  # noqa: E402
from olla_jax.solve.problem import Item, OrderProblem  # noqa: E402


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(order_problems(max_nodes=6), st.data())
def test_never_exceeds_the_optimum_for_any_sets(problem, data):
    nodes = st.integers(0, problem.num_nodes - 1)
    sets = data.draw(st.lists(st.lists(nodes, min_size=1, max_size=4), max_size=4))
    found = last_of_set_bound(problem, sets, flow=data.draw(st.sampled_from(["ortools", "dinic"])))
    assert found.complete
    assert 0 <= found.value <= optimum(problem)
    # one node alone is the per-node bound at that node
    if problem.num_nodes:
        single = last_of_set_bound(problem, [[v] for v in range(problem.num_nodes)])
        assert single.value == min_cut_bound(problem, prune=False).value


def test_a_set_proves_what_no_node_alone_does():
    # Found by random search: nodes 0 and 3 are unordered; each alone can run
    # before the other (min-cut 9), but whichever runs second costs 10.
    items = (Item(5, (2,), (2, 3, 4)), Item(3, (3,), (3,)), Item(4, (0,), (0, 2)),
             Item(6, (3,), (3, 4)))
    problem = OrderProblem(5, ((0, 2), (2, 4)), items, (0,) * 5)
    cut = min_cut_bound(problem).value
    found = last_of_set_bound(problem, [[0, 3]])
    assert cut == 9 < found.value == 10 <= optimum(problem)


def test_unknown_node_is_rejected():
    with pytest.raises(ValueError, match="outside"):
        last_of_set_bound(OrderProblem(1, (), (), (0,)), [[3]])
