"""One ``bounds.NodeCuts`` shared by the min-cut bound and the min-cut moves:
the cuts the bound solves are not solved again by the moves (strategy's
order floor and solve_order's moves run on the same problem)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

sys.path.insert(0, str(Path(__file__).parent))
from test_bounds import order_problems  # noqa: E402

from olla_jax.solve import cut_move  # noqa: E402
from olla_jax.solve.bounds import NodeCuts, min_cut_bound  # noqa: E402
from olla_jax.solve.evaluate import Evaluator  # noqa: E402
from olla_jax.solve.problem import topological_order  # noqa: E402


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(order_problems())
def test_bound_fills_the_cuts_the_moves_reuse(problem):
    cuts = NodeCuts(problem)
    shared = min_cut_bound(problem, prune=False, cuts=cuts)
    alone = min_cut_bound(problem, prune=False)
    assert shared.value == alone.value and shared.per_node == alone.per_node
    assert cuts.flows == shared.flows     # one max-flow per node the bound solved
    # Every node was solved (prune=False): the moves run no max-flow of their own.
    ev = Evaluator(problem)
    order = topological_order(problem.num_nodes, problem.edges)
    moved = cut_move.improve(ev, order, deadline=time.monotonic() + 0.5, cuts=cuts)
    assert cuts.flows == shared.flows
    assert ev.cost(moved) <= ev.cost(order)
    # A cut handed out is a copy: the moves cannot change what is kept.
    if problem.num_nodes:
        value, before = cuts.before(0)
        before[:] = True
        assert not cuts.before(0)[1][0]


@settings(max_examples=5, deadline=None)
@given(order_problems())
def test_cuts_of_another_problem_are_refused(problem):
    other = NodeCuts(problem)
    import dataclasses
    copy = dataclasses.replace(problem)
    with pytest.raises(ValueError, match="same problem"):
        min_cut_bound(copy, cuts=other)
