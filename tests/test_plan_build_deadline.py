"""plan() when the graph build eats the time limit (olla_jax/plan.py,
graph/model.py): on a loaded machine a 10k-instruction step's build took 15 s
of a 10 s limit, and the solve's fixed part (a list schedule, a placement,
the layout: 3 s more) followed.  The build stops between its phases past the
deadline, and with less left after it than the solve's fixed part, XLA's
plan is kept at once.  Tested with a fake clock, not wall-clock figures."""

from __future__ import annotations

import importlib
import time
import warnings

import pytest

import olla_jax
from olla_jax import strategy
from olla_jax.capture.record import capture
from olla_jax.graph import model
from tests.small_steps import mlp_args, mlp_step

plan_mod = importlib.import_module("olla_jax.plan")


def test_a_graph_build_past_its_deadline_stops_with_out_of_time():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cap = capture(mlp_step, *mlp_args(0), scheduler="memory")
    graph = model.build(cap.hlo_proto, cap.values_text, cap.live_range_text,
                        deadline=time.monotonic() + 60)
    assert graph.nodes
    with pytest.raises(model.OutOfTime):
        model.build(cap.hlo_proto, cap.values_text, cap.live_range_text,
                    deadline=time.monotonic() - 1)


@pytest.mark.parametrize("build_share, searched", [(0.9, False), (0.1, True)])
def test_xlas_plan_is_kept_at_once_when_the_build_leaves_less_than_the_solve_needs(
        monkeypatch, build_share, searched):
    spent = [0.0]   # fake seconds the build claims, on the planner's clock
    limit = 10.0

    def clock() -> float:
        return time.monotonic() + spent[0]
    monkeypatch.setattr(plan_mod, "Deadline", lambda s: strategy.Deadline(s, clock=clock))
    real_build, real_solve = model.build, plan_mod.solve_graph
    solved = []

    def build(*a, **kw):
        graph = real_build(*a, **{**kw, "deadline": None})
        spent[0] += build_share * limit
        return graph

    def solve_graph(graph, **kw):
        solved.append(1)
        return real_solve(graph, **{**kw, "deadline": strategy.Deadline(0.5)})
    monkeypatch.setattr(model, "build", build)
    monkeypatch.setattr(plan_mod, "solve_graph", solve_graph)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = olla_jax.plan(mlp_step, *mlp_args(0), time_limit_s=limit, feed_back=False)
    assert bool(solved) == searched
    assert any("no time to plan" in n for n in p.notes) != searched, p.notes
    if not searched:
        assert p.source == "xla" and p.graph is not None
