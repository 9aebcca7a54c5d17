"""A memory budget on a sharded step planned against exposed communication:
the least exposure that meets the budget (olla_jax.plan's ladder), checked with
a stand-in for the planner so it runs in no time."""

from __future__ import annotations

import importlib

import pytest

import olla_jax
from olla_jax.graph import collectives
from tests.small_steps import FakePlan

plan_lib = importlib.import_module("olla_jax.plan")   # olla_jax.plan is also the function


def _fake_planner(monkeypatch, bytes_at):
    """``_plan`` answering ``bytes_at(allowance)``: memory falls as exposure may grow."""
    asked = []

    def fake(step, *, collective_overlap, **options):
        allowance = 10.0 if collective_overlap == "hidden" else collective_overlap.seconds
        asked.append(allowance)
        return FakePlan(bytes_at(allowance), {"async_pairs": 3, "exposed_s_xla": 10.0,
                                              "comm_s": 50.0, "exposed_allowance_s": allowance})
    monkeypatch.setattr(plan_lib, "_plan", fake)
    monkeypatch.setattr(plan_lib, "_step", lambda *a, **k: None)
    return asked


def test_budget_takes_the_least_exposure_that_meets_it(monkeypatch):
    asked = _fake_planner(monkeypatch, lambda a: 1000 - int(10 * a))   # 900 at XLA's 10 s
    p = olla_jax.plan(lambda x: x, 1.0, backend="gpu:h100", num_devices=2,
                      collective_overlap="hidden", memory_budget=700)
    # The ladder: XLA's 10 s, then 20, 30 (meets 700): 40 and 50 not tried.
    assert asked == [10.0, 20.0, 30.0]
    assert p.runs_total_bytes == 700 and p.settings["exposed_allowance_s"] == 30.0
    assert "exposed communication allowed to grow" in p.notes[-1]


def test_budget_out_of_reach_with_all_communication_exposed(monkeypatch):
    asked = _fake_planner(monkeypatch, lambda a: 1000 - int(a))
    with pytest.raises(olla_jax.BudgetNotMet):
        olla_jax.plan(lambda x: x, 1.0, backend="gpu:h100", num_devices=2, recompute=False,
                      collective_overlap=collectives.ExposedAtMost(10.0), memory_budget=100)
    assert asked == [10.0, 20.0, 30.0, 40.0, 50.0]
