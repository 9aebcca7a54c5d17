"""A lower bound above the plan is a bug in the bound: solve_graph reports no
bound (clipped to the plan it would claim a 0% gap it did not prove) and says
so in a warning."""

from __future__ import annotations

from absl import logging

from olla_jax import strategy
from tests.small_steps import mlp_graph


def _warnings(monkeypatch) -> list[str]:
    said = []
    monkeypatch.setattr(logging, "warning", lambda msg, *a: said.append(msg % a))
    return said


def test_a_bound_above_the_plan_is_dropped_and_warned(monkeypatch):
    said = _warnings(monkeypatch)
    monkeypatch.setattr(strategy, "_lower_bound", lambda *a, **k: 1 << 40)
    solution = strategy.solve_graph(mlp_graph(), time_limit_s=1.0)
    assert solution.lower_bound_bytes == 0
    assert any("above the plan" in m for m in said)


def test_a_sound_bound_says_nothing(monkeypatch):
    said = _warnings(monkeypatch)
    solution = strategy.solve_graph(mlp_graph(), time_limit_s=1.0)
    assert solution.lower_bound_bytes <= solution.layout.temp_bytes
    assert not any("above the plan" in m for m in said)
