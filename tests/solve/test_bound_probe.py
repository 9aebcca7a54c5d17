"""bounds.probe_bound: simple_bound's per-node floor, node by node in linear memory."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings

from olla_jax.solve.bounds import probe_bound, simple_bound
from olla_jax.solve.problem import topological_order

from tests.solve.test_bounds import order_problems


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(order_problems())
def test_probe_matches_the_simple_bound(problem):
    orders = [topological_order(problem.num_nodes, problem.edges)]
    simple = simple_bound(problem)
    every = probe_bound(problem, orders, time_limit_s=60.0, prune=False)
    assert every.per_node == simple.per_node
    assert every.complete
    # Pruned by the order's step costs (each caps its node's value): the same maximum.
    assert probe_bound(problem, orders, time_limit_s=60.0).value == simple.value


def test_no_time_still_probes_the_costliest_node():
    from tests.solve.test_bounds import random_dag_problem
    import numpy as np
    problem = random_dag_problem(np.random.default_rng(0), 40)
    orders = [topological_order(problem.num_nodes, problem.edges)]
    found = probe_bound(problem, orders, time_limit_s=0.0, prune=False)
    assert found.flows == 1 and sum(1 for v in found.per_node if v) <= 1
    assert found.value == max(found.per_node) <= simple_bound(problem).value
    assert not found.complete
