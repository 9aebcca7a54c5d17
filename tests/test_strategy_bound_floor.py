"""solve_graph's bound on a graph too big for the resident floor and the
threshold min-cuts (olla_jax/strategy.py): the forced-live floor
(bounds.probe_bound) is still reported.  At 100k nodes the bound was 0."""

from __future__ import annotations

from olla_jax import strategy
from olla_jax.graph import resident
from olla_jax.solve import bounds
from olla_jax.graph.synthetic import deep_graph

LAYERS, ACT = 300, 65536


def _refuse(name):
    def call(*a, **k):
        raise AssertionError(f"{name} ran on a graph sized past its threshold")
    return call


def test_a_graph_past_every_quadratic_bound_still_gets_the_forced_live_floor(monkeypatch):
    monkeypatch.setattr(strategy, "RESIDENT_NODE_PAIR_S", 1e9)
    monkeypatch.setattr(strategy, "MIN_CUT_NODE_S", 1e9)
    monkeypatch.setattr(resident, "floor_bound", _refuse("the resident floor"))
    monkeypatch.setattr(bounds, "min_cut_bound", _refuse("a min-cut"))
    graph = deep_graph(LAYERS, act=ACT, weight=ACT)   # 1,800 nodes
    solution = strategy.solve_graph(graph, time_limit_s=2.0)
    # Every layer's activation is live from the forward pass to its backward
    # step, whatever the order: all of them at the turn.
    assert LAYERS * ACT <= solution.lower_bound_bytes <= solution.layout.temp_bytes


def test_the_top_up_does_not_probe_again(monkeypatch):
    import time
    monkeypatch.setattr(strategy, "RESIDENT_NODE_PAIR_S", 1e9)
    monkeypatch.setattr(strategy, "MIN_CUT_NODE_S", 1e9)
    calls = []
    real = bounds.probe_bound
    monkeypatch.setattr(bounds, "probe_bound", lambda *a, **k: calls.append(1) or real(*a, **k))
    graph = deep_graph(20, act=ACT, weight=ACT)
    orders, done = [tuple(graph.xla_order)], set()
    args = (graph, graph.order_problem(), orders, time.monotonic, time.monotonic() + 5.0)
    first = strategy._lower_bound(*args, big=True, done=done)
    assert first >= 20 * ACT and "probe" in done
    assert strategy._lower_bound(*args, big=True, floor=first, done=done) == first
    assert len(calls) == 1
