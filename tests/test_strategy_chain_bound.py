"""strategy._chain_up: the chain bound (solve.bound_chain) raises the bound
from the threshold problems the min-cuts ranked, within its time."""

from __future__ import annotations

import time

from olla_jax import strategy
from olla_jax.solve.problem import Item, OrderProblem, order_cost

# Nodes 0, 1, 2 unordered (1 before 3): every pair can run at 16, all three
# not (17, the optimum); see tests/solve/test_bound_chain.py.
TRIPLE = OrderProblem(
    4, ((1, 3),),
    (Item(1, (2,), (2, 0, 3)), Item(8, (0,), (0, 2, 1)), Item(8, (1,), (1, 2, 3, 0))),
    (0, 0, 0, 0))


class _Graph:
    """The one call ``_chain_up`` makes of a ScheduleGraph."""

    def __init__(self):
        self.asked = []

    def threshold_problem(self, c: int, *, for_bound: bool = False) -> OrderProblem:
        assert for_bound
        self.asked.append(c)
        return TRIPLE


def test_the_chain_raises_the_bound_and_the_thresholds_figure():
    graph, per_cap = _Graph(), {0: 15, 7: 16, 9: 3}
    orders = [[0, 1, 2, 3], [2, 1, 3, 0]]
    assert min(order_cost(TRIPLE, o) for o in orders) >= 17
    value = strategy._chain_up(graph, per_cap, 16, orders, time.monotonic, time.monotonic() + 5)
    assert value == 17
    assert graph.asked[0] == 7      # the strongest threshold first
    assert per_cap[7] == 17 and len(graph.asked) <= strategy.CHAIN_PROBLEMS


def test_no_time_or_no_order_leaves_the_bound():
    graph, per_cap = _Graph(), {7: 16}
    assert strategy._chain_up(graph, per_cap, 16, [[0, 1, 2, 3]], time.monotonic,
                              time.monotonic() - 1) == 16
    assert strategy._chain_up(graph, per_cap, 16, [], time.monotonic, time.monotonic() + 5) == 16
    assert graph.asked == [] and per_cap == {7: 16}
