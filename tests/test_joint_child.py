"""``engine="joint"``: the order-and-placement model runs in a child process
whose start-up counts against the planner's limit."""

from __future__ import annotations

import time

import pytest

pytest.importorskip("ortools")

from olla_jax import strategy  # noqa: E402
from olla_jax.solve import joint  # noqa: E402
from tests.small_steps import mlp_graph  # noqa: E402


def test_the_joint_model_ends_by_a_deadline_already_past():
    graph = mlp_graph()
    assert joint.unsupported(graph) is None
    order = tuple(graph.xla_order)
    start = time.monotonic()
    found = joint.solve_joint(graph, hint_order=order, hint_places=joint.hull_hint(graph, order),
                              time_limit_s=30.0, deadline=start)
    assert found is None and time.monotonic() - start < 5.0


def test_the_joint_engine_ends_within_its_limit_child_start_up_included():
    graph = mlp_graph()
    limit = 2.0
    start = time.monotonic()
    solution = strategy.solve_graph(graph, engine="joint", time_limit_s=limit)
    elapsed = time.monotonic() - start
    assert solution.layout is not None
    assert elapsed <= 1.1 * limit + 0.3, elapsed   # was the limit plus the child's imports


def test_the_joint_engine_asked_for_on_a_step_with_a_loop_says_it_did_not_run():
    """It covers steps without loops or calls: asked for on a scan, the plan's
    notes say the separate search planned it (the log said so at info only)."""
    import warnings

    import olla_jax
    from tests.small_steps import accumulate_args, accumulate_step
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", olla_jax.PlanWarning)
        plan = olla_jax.plan(accumulate_step, *accumulate_args(4), engine="joint",
                             time_limit_s=2, feed_back=False)
    assert any("engine='joint' was not run" in n and "loops" in n for n in plan.notes), plan.notes
