"""Separate budgeted plan() calls of one process are monotone: a plan an
earlier call found competes with a later call's own (``olla_jax.plan_memo``),
applied again through the saved-plan path, so a lower budget never ends above
a plan a higher one met, and a missed budget's plan is never above one found."""

from __future__ import annotations

import importlib
import types
import warnings

import pytest

import olla_jax
from olla_jax import plan_memo
from olla_jax.capture.base import Backend
from olla_jax.plan import BudgetNotMet

plan_lib = importlib.import_module("olla_jax.plan")   # olla_jax.plan is also the function


def _known(total: int, cost: float, budget: int = 0) -> plan_memo.Known:
    return plan_memo.Known(saved=None, total_bytes=total, cost=cost, extra_flops=int(cost),
                           budget=budget)


def test_front_keeps_the_pareto_points_least_memory_always():
    key = ("program", ())
    plan_memo.record(key, _known(100, 0.0))
    plan_memo.record(key, _known(80, 5.0))
    plan_memo.record(key, _known(90, 6.0))       # dominated by (80, 5): not kept
    plan_memo.record(key, _known(80, 3.0))       # dominates (80, 5)
    assert [(k.total_bytes, k.cost) for k in plan_memo.front(key)] == [(80, 3.0), (100, 0.0)]
    for i in range(2 * plan_memo.MAX_PLANS):     # bounded: the highest-memory ones go
        plan_memo.record(key, _known(79 - i, 4.0 + i))
    got = plan_memo.front(key)
    assert len(got) == plan_memo.MAX_PLANS
    assert got[0].total_bytes == 79 - (2 * plan_memo.MAX_PLANS - 1)
    olla_jax.clear_cache()
    assert plan_memo.front(key) == []


def test_memo_keeps_a_few_programs_least_recently_used_dropped():
    keys = [(f"program {i}", ()) for i in range(plan_memo.MAX_PROGRAMS + 1)]
    for key in keys:
        plan_memo.record(key, _known(100, 0.0))
    assert plan_memo.front(keys[0]) == [] and plan_memo.front(keys[-1])


def test_better_ranks_meeting_the_budget_by_cost_then_memory():
    key = ("program", ())
    for total, cost in ((100, 0.0), (80, 2.0), (60, 9.0)):
        plan_memo.record(key, _known(total, cost))
    # own plan misses 70: the one that meets it; 50: the least memory
    assert [k.total_bytes for k in plan_memo.better(key, 70, 75, 1.0)] == [60]
    assert [k.total_bytes for k in plan_memo.better(key, 50, 75, 1.0)] == [60]
    # own plan meets 90 at cost 2 and 85 bytes: only (80, 2) ranks before it
    assert [k.total_bytes for k in plan_memo.better(key, 90, 85, 2.0)] == [80]
    # answers from one front are monotone in the budget
    picks = [plan_memo.better(key, b, 10**9, 10.0**9)[0].total_bytes for b in range(40, 130, 5)]
    assert picks == sorted(picks)


def test_memo_key_is_off_by_the_environment_and_for_saved_or_sharded(monkeypatch):
    first = types.SimpleNamespace(capture=types.SimpleNamespace(hlo_text="HloModule m\nENTRY e"))
    cpu = Backend.parse("cpu")
    options = dict(compiler_options=None, recompute=True, recompute_cost="time", offload=False,
                   rng_lowering="unrolled", collective_overlap="keep", feed_back=True)
    key = plan_lib._memo_key(first, cpu, None, None, **options)
    assert key is not None
    assert key != plan_lib._memo_key(first, cpu, None, None, **dict(options, recompute=False))
    assert key != plan_lib._memo_key(first, cpu, None, None, **dict(options, feed_back=False))
    assert plan_lib._memo_key(first, cpu, {"num_devices": 2}, None, **options) is None
    assert plan_lib._memo_key(first, cpu, None, object(), **options) is None
    monkeypatch.setenv(plan_memo.ENVIRONMENT, "0")
    assert plan_lib._memo_key(first, cpu, None, None, **options) is None


def _plan(step, budget, time_limit_s=3):
    """(plan, met) of a budgeted plan() of ``step``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", olla_jax.PlanWarning)
        try:
            return olla_jax.plan(step.fn, *step.args, static_argnums=step.static_argnums,
                                 donate_argnums=step.donate_argnums, time_limit_s=time_limit_s,
                                 memory_budget=budget), True
        except BudgetNotMet as err:
            return err.plan, False


@pytest.mark.slow   # ~30 s; test_budget's ladder checks monotone budgets by default
def test_a_lower_budget_never_ends_above_a_plan_an_earlier_call_found(planned_example,
                                                                       monkeypatch):
    step, base = planned_example("vit")
    fixed = base.argument_bytes + base.output_bytes - base.alias_bytes
    found, _ = _plan(step, fixed + int(0.95 * base.lower_bound_bytes))
    assert found.verified and found.runs_total_bytes < found.xla_total_bytes, found.notes

    # Later calls whose own search ends at XLA's plan (the solver fails, and
    # nothing is recomputed): as a loaded machine's short search may.
    def failing(*args, **kwargs):
        raise RuntimeError("no search this time")
    monkeypatch.setattr(plan_lib, "solve_graph", failing)
    monkeypatch.setattr(plan_lib, "_recompute_stage", lambda result, *a, **k: result)

    # (the budget met by it: the slow test of olla_jax.jit below)
    missed, ok = _plan(step, found.runs_total_bytes - 1)
    assert not ok and missed.runs_total_bytes == found.runs_total_bytes
    assert missed.verified and missed.settings["from_earlier_call"], missed.notes
    assert "earlier plan() call" in missed.notes[-1] and "applied again" in missed.notes[-1]
    assert missed.recomputed == found.recomputed and missed.extra_flops == found.extra_flops
    # this call searched too: its seconds are no saved plan's application alone
    assert missed.saved_from is None and "saved plan" not in missed.summary(), missed.summary()


@pytest.mark.slow
def test_jit_with_a_lower_budget_keeps_a_plan_another_jit_found(planned_example, monkeypatch):
    # olla_jax.jit plans each signature with plan(): two decorators of one
    # step at two budgets share what the first found
    step, base = planned_example("vit")
    fixed = base.argument_bytes + base.output_bytes - base.alias_bytes

    def jitted(budget):
        return olla_jax.jit(step.fn, static_argnums=step.static_argnums,
                            donate_argnums=step.donate_argnums, time_limit_s=3, cache=False,
                            memory_budget=budget)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", olla_jax.PlanWarning)
        found = jitted(fixed + int(0.95 * base.lower_bound_bytes)).plan_for(*step.args)
        assert found.verified and found.runs_total_bytes < found.xla_total_bytes, found.notes
        monkeypatch.setattr(plan_lib, "solve_graph", lambda *a, **k: 1 / 0)
        monkeypatch.setattr(plan_lib, "_recompute_stage", lambda result, *a, **k: result)
        lower = jitted(found.runs_total_bytes).plan_for(*step.args)   # met by it alone
    assert lower.runs_total_bytes == found.runs_total_bytes and lower.verified, lower.notes
    assert lower.settings["from_earlier_call"] and "it meets the budget" in lower.notes[-1]
