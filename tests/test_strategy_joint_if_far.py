"""engine="auto" runs the joint order-and-placement model only where its plan
ends far from the bound with time left, on a graph the model covers; a plan
at its bound starts no child and ends well before its limit."""

from __future__ import annotations

import time

import pytest

pytest.importorskip("ortools")

from olla_jax import strategy  # noqa: E402
from olla_jax.solve import isolated, joint  # noqa: E402
from tests.small_steps import mlp_graph  # noqa: E402


def test_why_the_joint_model_is_skipped(monkeypatch):
    graph = mlp_graph()
    arena = 1 << 20
    near = int(arena * (1 - strategy.JOINT_GAP / 2))
    far = arena // 2
    assert "within" in strategy.joint_skipped(graph, arena, near, 60.0)
    assert "within" in strategy.joint_skipped(graph, arena, arena, 60.0)
    small = 2 * strategy.JOINT_MIN_GAP_BYTES   # far by the share, a few bytes by the count
    assert "within" in strategy.joint_skipped(graph, small, small // 2 + 1, 60.0)
    assert "left" in strategy.joint_skipped(graph, arena, far, strategy.JOINT_MIN_S / 2)
    assert strategy.joint_skipped(graph, arena, far, 60.0) is None
    assert strategy.joint_skipped(graph, arena, 0, 60.0) is None   # no bound: as far as it gets
    monkeypatch.setattr(strategy, "JOINT_MAX_NODES", len(graph.nodes) - 1)
    assert "nodes" in strategy.joint_skipped(graph, arena, far, 60.0)
    monkeypatch.setattr(strategy, "JOINT_MAX_NODES", len(graph.nodes))
    monkeypatch.setattr(joint, "unsupported", lambda g: "loops")
    assert strategy.joint_skipped(graph, arena, far, 60.0) == "loops"


def test_a_plan_at_its_bound_starts_no_child_and_ends_early(monkeypatch):
    started = []
    monkeypatch.setattr(isolated, "run_isolated", lambda *a, **k: started.append(a))
    limit = 6.0
    t0 = time.monotonic()
    solution = strategy.solve_graph(mlp_graph(), time_limit_s=limit)
    elapsed = time.monotonic() - t0
    assert solution.layout.temp_bytes == solution.lower_bound_bytes > 0
    assert not started
    assert "joint model" not in dict(solution.stage_ends)
    assert elapsed < limit / 2, elapsed


def test_a_plan_far_from_its_bound_gives_the_joint_model_the_time_left(monkeypatch):
    """Wired after the bound top-up, with the proven bound to stop at (the
    child itself is the slow test in tests/solve/test_auto_stops_early.py)."""
    calls = []

    def fake_joint(graph, best, time_limit_s, seed, *, lower_bound=0, live_of=None):
        calls.append((time_limit_s, lower_bound))
        return best
    monkeypatch.setattr(strategy, "joint_skipped", lambda *a: None)
    monkeypatch.setattr(strategy, "_joint", fake_joint)
    limit = 4.0
    solution = strategy.solve_graph(mlp_graph(), time_limit_s=limit)
    assert len(calls) == 1
    left, bound = calls[0]
    assert bound == solution.lower_bound_bytes
    assert 0 < left < limit
    assert "joint model" in dict(solution.stage_ends)


def test_the_joint_model_stops_at_the_bound_and_survives_a_wrong_one():
    graph = mlp_graph()
    order = tuple(graph.xla_order)
    hint = joint.hull_hint(graph, order)
    at = strategy.solve_graph(graph, time_limit_s=2.0).lower_bound_bytes
    found = joint.solve_joint(graph, hint_order=order, hint_places=hint, time_limit_s=20.0,
                              lower_bound=at)
    assert found.optimal and found.placement.arena_size == at
    # a bound above every plan (a bug elsewhere) leaves the hint feasible: still a plan
    wrong = joint.solve_joint(graph, hint_order=order, hint_places=hint, time_limit_s=20.0,
                              lower_bound=1 << 40)
    assert wrong is not None and wrong.placement.arena_size >= at
