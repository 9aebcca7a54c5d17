"""A time limit is a limit: with a memory budget, plan()'s planner part (every
order-and-placement solve and the recomputation search) fits one deadline,
not one limit per stage; XLA's compiles and the verification are apart."""

from __future__ import annotations

import importlib
import time
import warnings

import jax
import numpy as np
import pytest

import examples
import olla_jax
from olla_jax.plan import BudgetNotMet
from tests.small_steps import FakePlan

plan_lib = importlib.import_module("olla_jax.plan")   # olla_jax.plan is also the function


def test_budget_plan_solves_within_one_time_limit():
    # vit tiny (XLA's temp ~0.6 MiB) with 256 KiB of temp over its arguments
    # and outputs: order and placement alone cannot reach it, so
    # recomputation is searched too (no donation: nothing aliased)
    step = examples.get("vit", "tiny")
    assert not step.static_argnums and not step.donate_argnums
    target = _bytes(step.args) + _bytes(jax.eval_shape(step.fn, *step.args)) + 256 * 1024
    limit = 2.0
    t0 = time.monotonic()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", olla_jax.PlanWarning)
        try:
            plan = olla_jax.plan(step.fn, *step.args, static_argnums=step.static_argnums,
                                 time_limit_s=limit, memory_budget=target)
        except BudgetNotMet as err:
            plan = err.plan
            assert err.least_bytes > target and "budget" in str(err)
        else:
            assert plan.runs_total_bytes <= target and plan.recomputed, plan.notes
    elapsed = time.monotonic() - t0
    # (half a second of slack on a loaded machine, as the recomputation's own test)
    assert 0 < plan.solve_seconds <= 1.1 * limit + 0.5, (plan.solve_seconds, plan.notes)
    assert plan.solve_seconds + plan.verify_seconds <= elapsed + 1e-6
    print(f"solve {plan.solve_seconds:.2f} s, verify {plan.verify_seconds:.2f} s, limit {limit} s")


def _bytes(tree) -> int:
    return sum(int(np.prod(x.shape)) * np.dtype(x.dtype).itemsize
               for x in jax.tree_util.tree_leaves(tree))


@pytest.mark.parametrize("first_overruns", [False, True])
def test_overlap_retries_share_what_the_first_plan_left(monkeypatch, first_overruns):
    # a stand-in planner that spends all the time it is given (the first one,
    # when it overruns, the whole limit): the retries get what is left, and
    # none when nothing is, said in the notes, never a limit of their own
    limits, asked = [], []

    def fake(step, *, collective_overlap, time_limit_s, solve_share=1.0, **options):
        given = time_limit_s * solve_share   # (no graph build here)
        spent = 10.0 if first_overruns and not limits else given
        limits.append(given)
        asked.append((time_limit_s, solve_share))
        return FakePlan(1000, {"async_pairs": 3}, solve_seconds=spent)
    monkeypatch.setattr(plan_lib, "_plan", fake)
    monkeypatch.setattr(plan_lib, "_step", lambda *a, **k: None)
    with pytest.raises(BudgetNotMet) as info:
        olla_jax.plan(lambda x: x, 1.0, backend="gpu:h100", num_devices=2, recompute=False,
                      time_limit_s=10.0, memory_budget=100)
    assert limits[0] == 10.0 * plan_lib.FIRST_PLAN_SHARE
    # the first plan builds its graph on the whole limit; only its solve takes a share
    assert asked[0] == (10.0, plan_lib.FIRST_PLAN_SHARE) and all(s == 1.0 for _, s in asked[1:])
    assert info.value.plan.solve_seconds == pytest.approx(sum(
        10.0 if first_overruns and i == 0 else t for i, t in enumerate(limits)))
    if first_overruns:
        assert len(limits) == 1
        assert any("not tried" in n for n in info.value.plan.notes), info.value.plan.notes
    else:
        assert len(limits) == 5 and sum(limits) <= 10.0 + 1e-9




@pytest.mark.parametrize("budget", [100, 100.0, np.int64(100)])   # 1e2 bytes is a budget too
def test_a_budget_met_by_the_first_plan_reports_the_whole_limit(monkeypatch, budget):
    # the first plan gets a share of the limit; met at once, the plan says
    # the call's limit (the one asked for), not that share
    def fake(step, *, collective_overlap, time_limit_s, solve_share=1.0, **options):
        return FakePlan(50, {"time_limit_s": time_limit_s},
                        solve_seconds=time_limit_s * solve_share / 2)
    monkeypatch.setattr(plan_lib, "_plan", fake)
    monkeypatch.setattr(plan_lib, "_step", lambda *a, **k: None)
    got = olla_jax.plan(lambda x: x, 1.0, time_limit_s=10.0, memory_budget=budget)
    assert got.settings["time_limit_s"] == 10.0
    assert got.solve_seconds == 10.0 * plan_lib.FIRST_PLAN_SHARE / 2
