"""solve_graph on graphs too big for its quadratic stages (olla_jax/strategy.py):
past PAIR_US the block model is never built (sweep placement, no exact
placement), past RESIDENT_NODE_PAIR_S the resident floor is skipped, and on
such a graph no min-cut starts that MIN_CUT_NODE_S says would end past its
mark.  The per-unit costs are raised here so that a small step takes those
paths."""

from __future__ import annotations

import pytest

from olla_jax import strategy
from olla_jax.graph import resident
from olla_jax.solve import bounds, place as place_lib, place_check, place_model
from tests.small_steps import mlp_graph


@pytest.fixture(scope="module")
def graph():
    return mlp_graph()


def _refuse(name):
    def call(*a, **k):
        raise AssertionError(f"{name} ran on a graph sized past its threshold")
    return call


def test_big_graphs_skip_the_block_model_and_the_resident_floor(graph, monkeypatch):
    monkeypatch.setattr(strategy, "PAIR_US", 1e9)
    monkeypatch.setattr(strategy, "SWEEP_MIN_PAIRS", 0)
    monkeypatch.setattr(strategy, "RESIDENT_NODE_PAIR_S", 1e9)
    monkeypatch.setattr(place_model, "build_model", _refuse("the block model"))
    monkeypatch.setattr(place_lib, "place_exact", _refuse("exact placement"))
    monkeypatch.setattr(resident, "floor_bound", _refuse("the resident floor"))
    solution = strategy.solve_graph(graph, time_limit_s=2.0)
    layout = solution.layout
    problem, _ = graph.placement_problem(layout.order)
    assert layout.temp_bytes >= place_check.live_bytes_bound(problem)
    assert solution.lower_bound_bytes <= layout.temp_bytes


def test_min_cuts_that_cannot_end_by_their_mark_do_not_start(graph, monkeypatch):
    monkeypatch.setattr(strategy, "PAIR_US", 1e9)
    monkeypatch.setattr(strategy, "SWEEP_MIN_PAIRS", 0)
    monkeypatch.setattr(strategy, "MIN_CUT_NODE_S", 1e9)
    monkeypatch.setattr(bounds, "min_cut_bound", _refuse("a min-cut"))
    solution = strategy.solve_graph(graph, time_limit_s=2.0)
    assert solution.lower_bound_bytes >= 0 and solution.layout.temp_bytes > 0


def test_small_graphs_keep_the_block_model(graph, monkeypatch):
    monkeypatch.setattr(strategy, "PAIR_US", 1e9)   # costly pairs, but too few of them
    built = []
    real = place_model.build_model
    monkeypatch.setattr(place_model, "build_model", lambda p: built.append(1) or real(p))
    strategy.solve_graph(graph, time_limit_s=2.0)
    assert built
