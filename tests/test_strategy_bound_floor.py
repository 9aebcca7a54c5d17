"""solve_graph's bound on a graph too big for the resident floor and the
threshold min-cuts (olla_jax/strategy.py): the forced-live floor
(bounds.probe_bound) is still reported.  At 100k nodes the bound was 0."""

from __future__ import annotations

from olla_jax import strategy
from olla_jax.graph import resident
from olla_jax.solve import bounds
from benchmarks.scale_synthetic import deep_graph

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
