"""plan() at limits too short for a search (olla_jax/plan.py, graph/model.py):
at 0.1-0.3 s a small step's graph build is quick, but the solve's fixed part
(a list schedule, a bound, a best-fit, the layout) is not a share of it, and
plan() ran to 1.5-2.4 x its limit.  XLA's plan is now kept at once where the
limit leaves less than that floor (a note says the smallest limit that plans),
before the build where even a quiet machine's build would not fit, and the
build stops past its deadline inside its longer phases too.  Fake clocks, no
wall-clock figures."""

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


@pytest.fixture(scope="module")
def mlp_capture():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return capture(mlp_step, *mlp_args(0))


def _plan_on_a_frozen_clock(monkeypatch, limit: float, build_s: float, **options):
    return plan_with_build_claiming(monkeypatch, limit, build_s, frozen=True, **options)


def _floor(mlp_capture, build_s: float) -> float:
    graph = model.build(mlp_capture.hlo_proto, mlp_capture.values_text,
                        mlp_capture.live_range_text)
    return plan_mod.solve_floor_seconds(build_s, graph,
                                        plan_mod.build_seconds_guess(mlp_capture))


@pytest.mark.parametrize("slowness", [1.0, 3.0])
def test_a_small_graph_keeps_xlas_plan_when_the_limit_leaves_less_than_the_solves_floor(
        monkeypatch, mlp_capture, slowness):
    # The floor of the build's share alone (0.35 x a few ms) let the solve of
    # a small graph start with less than its list schedule and best-fit take:
    # flax_lm planned 0.455 s at a 0.3 s limit.  ``slowness``: the build ran
    # that much slower than the quiet machine's guess (a loaded machine).
    guess = plan_mod.build_seconds_guess(mlp_capture)
    build_s = slowness * guess
    floor = _floor(mlp_capture, build_s)
    assert floor > 2 * plan_mod.SOLVE_FLOOR_OF_BUILD * build_s   # not the build's share
    p, built, solved = _plan_on_a_frozen_clock(monkeypatch, build_s + 0.9 * floor, build_s)
    assert built and not solved, solved
    assert p.source == "xla" and p.graph is not None
    note = next(n for n in p.notes if n.startswith("no time to plan"))
    assert "too short for a search" in note and "at least about" in note, note


def test_the_limit_the_note_names_plans_the_step(monkeypatch, mlp_capture):
    guess = plan_mod.build_seconds_guess(mlp_capture)
    build_s = 2 * guess
    p, _, solved = _plan_on_a_frozen_clock(monkeypatch, build_s + 0.5 * _floor(
        mlp_capture, build_s), build_s)
    assert not solved
    note = next(n for n in p.notes if n.startswith("no time to plan"))
    named = float(note.split("at least about ")[1].split(" s")[0])
    _, built, solved = _plan_on_a_frozen_clock(monkeypatch, named, build_s)
    assert built and solved and solved[0] >= _floor(mlp_capture, build_s) - 1e-9, solved


def test_a_limit_below_a_quiet_machines_build_keeps_xlas_plan_without_building(
        monkeypatch, mlp_capture):
    # At 0.01 s the build ran (one phase, then another) before XLA's plan was kept.
    limit = 0.5 * plan_mod.build_seconds_guess(mlp_capture)
    p, built, solved = _plan_on_a_frozen_clock(monkeypatch, limit, 0.0)
    assert not built and not solved
    assert p.source == "xla" and p.solve_seconds < 0.5, p.solve_seconds
    assert any("at least about" in n and "guessed from XLA's dumps" in n for n in p.notes), \
        p.notes


def test_a_normal_limit_still_searches(monkeypatch, mlp_capture):
    p, built, solved = _plan_on_a_frozen_clock(monkeypatch, 5.0, 0.01)
    assert built and solved and not any(n.startswith("no time to plan") for n in p.notes)


def test_a_budget_with_a_tiny_limit_says_the_limit_was_too_short(mlp_capture):
    # A budget that cannot be met at 0.001 s: BudgetNotMet (not a hang or a
    # crash), whose message names the limit as the reason and the one that plans.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(plan_mod.BudgetNotMet) as err:
            olla_jax.plan(mlp_step, *mlp_args(0), time_limit_s=0.001, memory_budget=1,
                          feed_back=False)
    message = str(err.value)
    assert "too short for a search" in message and "at least about" in message, message
    assert err.value.plan.source == "xla"


def test_the_build_stops_past_its_deadline_inside_its_phases(monkeypatch, mlp_capture):
    # The build checked its deadline between six phases only; the last ones
    # (the units' rules, the edges) ran to their end past it: lstm small built
    # for 0.7 s at a 0.3 s limit.  On a clock that passes the deadline after
    # the sixth check, the build now stops.
    calls = [0]

    def clock() -> float:
        calls[0] += 1
        return 0.0 if calls[0] <= 6 else 100.0
    monkeypatch.setattr(time, "monotonic", clock)
    with pytest.raises(model.OutOfTime):
        model.build(mlp_capture.hlo_proto, mlp_capture.values_text,
                    mlp_capture.live_range_text, deadline=50.0)


def test_recomputation_is_not_searched_when_its_candidates_took_its_time(monkeypatch):
    # The search's fixed part (its problem, a placement) runs however short
    # its share: lm_adamw small, 2 s limit with a budget, 0.47 s for a 0.07 s
    # share after candidates that took 0.68 s of the stage's 0.75 (1.23 x the
    # limit in all).  On a fake clock the candidates take 0.6 of a 1 s stage.
    import types
    from olla_jax import budget
    feed_back = importlib.import_module("olla_jax.budget.feed_back")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        base = olla_jax.plan(mlp_step, *mlp_args(0), time_limit_s=1, feed_back=False)
    now = [0.0]
    monkeypatch.setattr(feed_back, "time", types.SimpleNamespace(monotonic=lambda: now[0]))
    real_candidates, searched = feed_back.candidates, []

    def candidates(*a, **kw):
        now[0] += 0.6
        return real_candidates(*a, **kw)
    monkeypatch.setattr(feed_back, "candidates", candidates)
    monkeypatch.setattr(feed_back, "search", lambda *a, **kw: searched.append(kw) or None)
    target = base.runs_total_bytes - base.runs_temp_bytes + base.runs_temp_bytes // 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = budget.recompute_to_budget(base, target, time_limit_s=1.0, measure_time=False)
    assert not searched, searched
    assert any(n.startswith("recomputation not searched") for n in got.notes), got.notes
    assert got.solve_seconds == pytest.approx(base.solve_seconds + 0.6)


@pytest.mark.parametrize("limit, collected", [(0.5, True), (5.0, False)])
def test_a_short_limit_collects_garbage_before_the_planners_clock_starts(
        monkeypatch, limit, collected):
    """A full garbage collection due after XLA's compiles came inside a
    process's first graph build: a MoE step's plans at a 0.02 s limit ran
    several times the limit.  Under COLLECT_BELOW_S it runs before the clock."""
    import gc
    from olla_jax import strategy
    events = []
    monkeypatch.setattr(plan_mod.gc, "collect", lambda *a: events.append("collect"))
    monkeypatch.setattr(plan_mod, "Deadline",
                        lambda s: events.append("clock") or strategy.Deadline(s))
    assert plan_mod.gc is gc
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        olla_jax.plan(mlp_step, *mlp_args(0), time_limit_s=limit, feed_back=False)
    assert events[0] == ("collect" if collected else "clock"), events
