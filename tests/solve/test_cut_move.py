"""Min-cut moves (solve.cut_move) and the sets they use (bounds.NodeCuts)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from hypothesis import HealthCheck, given, settings

sys.path.insert(0, str(Path(__file__).parent))
from test_bounds import all_orders, order_problems  # noqa: E402

from olla_jax.solve import cut_move, sink  # noqa: E402
from olla_jax.solve.bounds import NodeCuts, min_cut_bound  # noqa: E402
from olla_jax.solve.dag import Dag  # noqa: E402
from olla_jax.solve.evaluate import Evaluator  # noqa: E402
from olla_jax.solve.problem import (Item, OrderProblem, check_topological, order_cost,  # noqa: E402
                                    step_profile, topological_order)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(order_problems())
def test_each_nodes_set_is_admissible_and_its_value_the_per_node_bound(problem):
    cuts = NodeCuts(problem)
    per_node = min_cut_bound(problem, prune=False).per_node
    edges = set(problem.edges)
    for n in range(problem.num_nodes):
        value, before = cuts.before(n)
        assert not before[n]
        for u, v in edges:   # closed under ancestors: a node before n has its predecessors before
            assert not before[v] or before[u]
            assert not (u == n and before[v])
        assert max(0, value) <= per_node[n]
        order = [v for v in range(problem.num_nodes) if before[v]]
        order = sorted(order, key=topological_order(problem.num_nodes, problem.edges).index)
        rest = [v for v in topological_order(problem.num_nodes, problem.edges)
                if not before[v] and v != n]
        moved = [*order, n, *rest]
        check_topological(problem, moved)
        assert value <= step_profile(problem, moved)[len(order)]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(order_problems())
def test_moves_keep_the_order_valid_and_never_worse(problem):
    start = topological_order(problem.num_nodes, problem.edges)
    moved = cut_move.improve(Evaluator(problem), start, deadline=time.monotonic() + 5)
    check_topological(problem, moved)
    assert order_cost(problem, moved) <= order_cost(problem, start)
    assert order_cost(problem, moved) >= min(order_cost(problem, o) for o in all_orders(problem))


def test_a_node_moved_with_its_cut_where_sink_and_hoist_moves_stop():
    # Found by random search: node 3 touches node 4's item before node 4
    # runs, and node 0's item waits for node 4; no single node moved next to
    # its consumer or producer lowers the peak (12), node 4's cut does (7).
    items = (Item(7, (0,), (0, 4)), Item(5, (4,), (2, 3, 4)))
    problem = OrderProblem(5, ((2, 4),), items, (0,) * 5)
    start = (0, 1, 2, 3, 4)
    ev = Evaluator(problem)
    sunk = sink.improve(ev, Dag.of(problem), start, deadline=time.monotonic() + 5)
    moved = cut_move.improve(ev, start, deadline=time.monotonic() + 5)
    check_topological(problem, moved)
    assert order_cost(problem, start) == order_cost(problem, sunk) == 12
    assert order_cost(problem, moved) == 7 == min_cut_bound(problem).value
