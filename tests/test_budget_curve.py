"""The recomputation curve: ``budget.ladder`` is monotone by construction,
whatever each budget's own search returns (issue 20.2)."""

from __future__ import annotations

import pytest

from olla_jax import budget
from olla_jax.budget import timed_search


def _plan(temp: int, cost: float, tag: str) -> budget.RecomputePlan:
    return budget.RecomputePlan(layout=None, temp_bytes=temp, extra_flops=int(cost * 1e9),
                                picked=(tag,), extra_cost_s=cost, how=tag)


@pytest.fixture
def searches(monkeypatch):
    """``budget.search`` replaced by a table target -> plan, recording calls."""
    table, calls = {}, []

    def fake(graph, order, cands, target, *, time_limit_s, engine="cpsat", clock=None):
        calls.append(target)
        return table[target]
    monkeypatch.setattr(timed_search, "search", fake)
    return table, calls


def test_ladder_keeps_the_higher_plan_when_a_lower_solve_is_worse(searches):
    table, calls = searches
    # each budget's own search: 0.6 worse than 0.8 (more temp), the least
    # reachable (target 1) worse than both, 0.7 better than all
    table.update({80: _plan(78, 1.0, "a"), 60: _plan(90, 0.5, "b"),
                  70: _plan(65, 2.0, "c"), 1: _plan(85, 0.1, "d")})
    targets = [60, 1, 80, 70]                   # any order: the ladder runs highest first
    plans = budget.ladder(None, (), (), targets, time_limit_s=1, base_temp=100)
    assert sorted(calls, reverse=True) == calls == [80, 70, 60, 1]
    by_target = dict(zip(targets, plans))
    assert [by_target[t].how for t in (80, 70, 60, 1)] == ["a", "c", "c", "c"]
    temps = [by_target[t].temp_bytes for t in (80, 70, 60, 1)]
    assert temps == sorted(temps, reverse=True)
    assert by_target[1].temp_bytes == min(temps)    # the least reachable is the least


def test_ladder_keeps_the_cheaper_higher_plan_that_meets_a_lower_budget(searches):
    table, _ = searches
    # 0.7's own plan meets 70 but costs more and needs more temp than 0.8's
    table.update({80: _plan(60, 1.0, "a"), 70: _plan(68, 3.0, "b")})
    plans = budget.ladder(None, (), (), [80, 70], time_limit_s=1, base_temp=100)
    assert [p.how for p in plans] == ["a", "a"]


def test_ladder_skips_budgets_met_without_recomputation(searches):
    table, calls = searches
    # 120 is met by the plan without recomputation (temp 100); a search result
    # not below it counts as nothing recomputed, and a lower one keeps that
    table.update({90: _plan(100, 1.0, "x"), 80: _plan(95, 1.0, "y")})
    plans = budget.ladder(None, (), (), [120, 90, 80], time_limit_s=1, base_temp=100)
    assert calls == [90, 80]
    assert plans[0] is None and plans[1] is None
    assert plans[2].how == "y"


def test_a_missed_budget_takes_a_lower_budgets_plan_that_meets_it(searches):
    table, _ = searches
    # 80's own search misses it (85); the least reachable's plan (70) meets 80
    # at more cost, and 75's (72) meets it more cheaply: 80 gets 75's
    table.update({80: _plan(85, 1.0, "a"), 75: _plan(72, 2.0, "b"), 1: _plan(70, 3.0, "c")})
    plans = budget.ladder(None, (), (), [80, 75, 1], time_limit_s=1, base_temp=100)
    assert [p.how for p in plans] == ["b", "b", "c"]
    temps = [p.temp_bytes for p in plans]
    assert temps == sorted(temps, reverse=True)
