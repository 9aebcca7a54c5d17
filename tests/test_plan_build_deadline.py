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
from olla_jax.capture.record import capture
from olla_jax.graph import model
from tests.small_steps import mlp_args, mlp_step, plan_with_build_claiming

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


def _plan_building_for(monkeypatch, limit: float, build_s: float, **options):
    planned, _, given = plan_with_build_claiming(monkeypatch, limit, build_s, **options)
    return planned, given


@pytest.mark.parametrize("build_share, searched", [(0.9, False), (0.1, True)])
def test_xlas_plan_is_kept_at_once_when_the_build_leaves_less_than_the_solve_needs(
        monkeypatch, build_share, searched):
    limit = 10.0
    p, solved = _plan_building_for(monkeypatch, limit, build_share * limit)
    assert bool(solved) == searched
    assert any("no time to plan" in n for n in p.notes) != searched, p.notes
    if not searched:
        assert p.source == "xla" and p.graph is not None


def _solve_seconds_given(monkeypatch, limit: float, build_s: float, budget) -> float | None:
    """The seconds plan() gives the first solve_graph (None: XLA's plan kept
    before any), the graph build claiming ``build_s`` on a fake clock."""
    _, given = _plan_building_for(monkeypatch, limit, build_s, memory_budget=budget)
    return given[0] if given else None


def test_a_budgeted_first_plan_searches_as_long_as_an_unbudgeted_call_of_its_share(
        monkeypatch):
    # A 6-layer LM at load 7: a 5 s call with a budget kept no order search
    # (its first plan got 2.5 s, the build most of it), where a 3 s call with
    # no budget searched and met that budget.  The share is of what the build
    # leaves, so the budgeted search is the longer (here 0.6 x 6 s against 2 s).
    limit, build_s = 10.0, 4.0
    share = plan_mod.FIRST_PLAN_SHARE
    budgeted = _solve_seconds_given(monkeypatch, limit, build_s, "1GiB")
    plain = _solve_seconds_given(monkeypatch, share * limit, build_s, None)
    assert budgeted is not None, "XLA's plan kept without a search"
    assert plain is not None and budgeted >= plain - 0.05, (budgeted, plain)
    assert budgeted == pytest.approx(share * (limit - build_s), abs=0.05)


def test_the_graph_build_stops_where_it_would_leave_the_solve_less_than_its_floor(monkeypatch):
    # The build past limit / (1 + SOLVE_FLOOR_OF_BUILD) leaves less than the
    # solve's floor: XLA's plan would be kept after it anyway, so it stops
    # there, not at the limit (at 0.2 s it ran to 0.27 s, then kept XLA's).
    asked = []
    real_build = model.build

    def build(*a, deadline=None, **kw):
        asked.append(deadline - time.monotonic())
        return real_build(*a, deadline=None, **kw)
    monkeypatch.setattr(model, "build", build)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        olla_jax.plan(mlp_step, *mlp_args(0), time_limit_s=10.0, feed_back=False)
    assert asked and asked[0] <= 10.0 / (1 + plan_mod.SOLVE_FLOOR_OF_BUILD) + 1e-3, asked
    assert asked[0] > 0.9 * 10.0 / (1 + plan_mod.SOLVE_FLOOR_OF_BUILD), asked


def test_the_solvers_modules_are_imported_before_the_planners_clock_starts():
    # Imported inside solve_graph, a fresh process paid them from its limit
    # (0.05 s idle: a sixth of a 0.3 s one).  A fresh interpreter (this one
    # has imported them): no olla_jax module is first imported between the
    # compiles and the end of plan()'s planner part.
    import subprocess
    import sys
    code = ("import sys, importlib, warnings; p = importlib.import_module('olla_jax.plan'); "
            "real = p._import_solver_libraries; seen = []; "
            "p._import_solver_libraries = lambda: (real(), seen.append(set(sys.modules))); "
            "from tests.small_steps import mlp_args, mlp_step, plan_with_build_claiming; "
            "warnings.simplefilter('ignore'); "
            "p.plan(mlp_step, *mlp_args(0), time_limit_s=1.0, feed_back=False); "
            "print(sorted(m for m in set(sys.modules) - seen[0] if m.startswith('olla_jax')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout


@pytest.mark.parametrize("searched", [True, False])
def test_a_plan_whose_order_search_never_ran_says_so_in_its_notes(monkeypatch, searched):
    """Skipped order searches were said only by the info log: the notes now
    tell the user, and only where no order objective was searched."""
    import dataclasses
    real = plan_mod.solve_graph

    def solve(*args, **kwargs):
        solution = real(*args, **kwargs)
        # the stages as if the machine's load had (not) left time for a search
        others = tuple(s for s in solution.stage_ends if not s[0].startswith("order search"))
        searches = (("order search 0", 0.0),) if searched else ()
        return dataclasses.replace(solution, stage_ends=others + searches)
    monkeypatch.setattr(plan_mod, "solve_graph", solve)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        planned = olla_jax.plan(mlp_step, *mlp_args(0), time_limit_s=2, feed_back=False)
    said = [n for n in planned.notes if n.startswith("no order search ran")]
    assert bool(said) == (not searched), planned.notes


def test_a_build_stopped_at_its_share_says_so_not_that_it_passed_the_limit(monkeypatch):
    """The build's deadline is its share of the limit (the rest is the solve's):
    a build stopped there, short of the limit, was said to have "ran past the
    limit", stopped after fewer seconds than the limit: it read as a broken limit."""
    from olla_jax import strategy
    spent = [0.0]
    monkeypatch.setattr(plan_mod, "Deadline",
                        lambda s: strategy.Deadline(s, clock=lambda: 1000.0 + spent[0]))
    monkeypatch.setattr(plan_mod, "build_seconds_guess", lambda capture: 0.0)

    def build(*args, deadline=None, **kwargs):
        spent[0] = 8.0          # past the build's share of 10 s, short of the limit
        raise model.OutOfTime("the graph build ran past its deadline")
    monkeypatch.setattr(model, "build", build)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = olla_jax.plan(mlp_step, *mlp_args(0), time_limit_s=10, feed_back=False)
    note = next(n for n in p.notes if n.startswith("no time to plan"))
    assert "past its share of the 10 s limit (7.4 s" in note and "after 8 s" in note, note
