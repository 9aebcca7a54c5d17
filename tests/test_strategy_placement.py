"""solve_graph's placement repair given its share of the limit (olla_jax/strategy.py):
the exact engine runs on an order that best-fit placed above its live bytes,
even when best-fit itself is slow (a fake clock, as in test_strategy_deadline)."""

from __future__ import annotations

import time

from olla_jax import strategy
from olla_jax.solve import bounds, order as order_lib, place as place_lib, place_greedy
from tests.small_steps import mlp_graph, stacked_best_fit


def test_slow_best_fit_still_leaves_the_exact_engine_its_turn(monkeypatch):
    """Each best-fit sort order costs 1 fake second (a step with hundreds of
    regions); the exact engine's set-up is a few model builds, not four sort
    orders, so at a 10 s limit it still runs on the stacked (poor) placement
    and is given more than a token share of the time."""
    graph = mlp_graph()
    spent = [0.0]

    def clock() -> float:
        return time.monotonic() + spent[0]

    monkeypatch.setattr(place_greedy, "best_fit_model", stacked_best_fit(spent))
    given = []
    real_exact = place_lib.place_exact

    def place_exact(problem, **kw):
        given.append(kw["time_limit_s"])
        return real_exact(problem, **{**kw, "time_limit_s": min(kw["time_limit_s"], 0.5)})
    monkeypatch.setattr(place_lib, "place_exact", place_exact)
    real_order, real_bound = order_lib.solve_order, bounds.min_cut_bound

    def solve_order(problem, **kw):     # the searches take all their (fake) time
        spent[0] += kw["time_limit_s"]
        return real_order(problem, **{**kw, "time_limit_s": 0.01, "engine": "list"})

    def min_cut_bound(problem, **kw):
        spent[0] += kw.get("time_limit_s", 0.0)
        return real_bound(problem, **{**kw, "time_limit_s": 0.01})
    monkeypatch.setattr(order_lib, "solve_order", solve_order)
    monkeypatch.setattr(bounds, "min_cut_bound", min_cut_bound)
    solution = strategy.solve_graph(graph, deadline=strategy.Deadline(10.0, clock=clock))
    assert solution.exact_tried and given
    assert max(given) >= 0.05 * 10.0
    assert solution.layout.temp_bytes < solution.best_fit_bytes
