"""The joint order-and-placement engine: valid plans, never worse than its hint."""

from __future__ import annotations

import dataclasses
import importlib
import warnings

import pytest

import examples
from olla_jax.capture.record import capture
from olla_jax.graph import model
from olla_jax.solve import isolated, joint, place_check
from olla_jax.solve import problem as sp

plan_mod = importlib.import_module("olla_jax.plan")


def _graph(name):
    step = examples.get(name, "tiny")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cap = capture(step.fn, *step.args, static_argnums=step.static_argnums, scheduler="memory")
    return model.build(cap.hlo_proto, cap.values_text, cap.live_range_text)


@pytest.mark.slow   # CP-SAT needs seconds before its first solution; on a loaded machine, more
def test_joint_plan_is_valid_and_no_worse_than_its_hint():
    graph = _graph("cnn_adam")
    order = graph.xla_order
    places = joint.hull_hint(graph, order)
    pp, owners = graph.placement_problem(order)
    hint = sp.Placement(tuple(places[u][0] for u in owners), tuple(places[u][1] for u in owners), 0)
    hint_arena = max((o + iv.size for r, o, iv in zip(hint.region, hint.offset, pp.intervals)
                      if r == sp.ARENA), default=0)
    place_check.validate_placement(pp, dataclasses.replace(hint, arena_size=hint_arena))
    found = isolated.run_isolated("olla_jax.solve.joint", "solve_joint", graph, hint_order=order,
                                  hint_places=places, time_limit_s=30, timeout_s=180)
    assert found is not None
    sp.check_topological(graph.order_problem(), found.order)
    place_check.validate_placement(found.problem, found.placement)
    assert found.placement.arena_size <= hint_arena
    assert found.bound <= found.placement.arena_size


@pytest.mark.slow   # ~6-12 s; cut from the default run for its 15-minute aim (make test-slow)
def test_joint_engine_through_solve_graph():
    graph = _graph("cnn_adam")
    separate = plan_mod.solve_graph(graph, time_limit_s=3)
    together = plan_mod.solve_graph(graph, time_limit_s=6, engine="joint")
    assert together.layout.temp_bytes <= separate.layout.temp_bytes + graph.alignment
    assert together.lower_bound_bytes <= together.layout.temp_bytes


def test_joint_declines_nested_computations():
    graph = _graph("lstm")
    if all(graph.block_length(v) == 1 for v in range(len(graph.nodes))):
        pytest.skip("this jax compiled the scan without a loop")
    assert joint.unsupported(graph)
    with pytest.raises(joint.JointUnsupported):
        joint.solve_joint(graph, hint_order=graph.xla_order, hint_places={}, time_limit_s=1)
