"""How a budgeted plan() on a compile-only GPU target shares its time limit
(``gpu_budget.to_budget``): the limit is the planner's part, builds come on
top (as ``plan`` counts them), and XLA's rematerialized programs hold back no
share of it where they could try none.  Pure: no jax compile."""

from __future__ import annotations

import types

import pytest

pytest.importorskip("jax")

from olla_jax import budget as budget_lib  # noqa: E402
from olla_jax import gpu_budget, xla_remat  # noqa: E402
from olla_jax.budget import feed_back  # noqa: E402
from tests.test_gpu_budget import _fake_plan  # noqa: E402

NS = types.SimpleNamespace


def _limits(monkeypatch, limit: float, result=None, xla_points: int = 1,
            build_s: float = 0.0) -> tuple[float, list]:
    """The limit ``to_budget`` gives our search (which takes all of it, and
    ``build_s`` more to build), and those each of XLA's rematerialized
    programs was planned with, for a step with ``xla_points`` of XLA's
    points worth planning."""
    def memory(temp):
        return NS(total=temp, temp=temp, argument=0, output=0, alias=0)
    points = [xla_remat.RematPoint(None, memory(1000), 100, None)]
    points += [xla_remat.RematPoint(800 - k, memory(900 - k), 150 + k, None)
               for k in range(xla_points)]
    monkeypatch.setattr(feed_back, "xla_remat_points", lambda result, *a, **k: (points, result))
    limits, planned = [], []

    def recompute_to_budget(result, budget, *, time_limit_s, **kw):
        limits.append(time_limit_s)
        return _fake_plan(850, solve_seconds=result.solve_seconds + time_limit_s,
                          verify_seconds=result.verify_seconds + build_s)
    monkeypatch.setattr(budget_lib, "recompute_to_budget", recompute_to_budget)

    def plan_on(path, limit_s):
        planned.append(limit_s)
        return _fake_plan(900, xla_best_temp_bytes=900, backend=f"gpu:{path}")
    gpu_budget.to_budget(result or _fake_plan(950), 800, lambda x: x, (), time_limit_s=limit,
                         plan_on=plan_on)
    return limits[0], planned


def test_our_search_is_not_cut_by_its_build(monkeypatch):
    # gpt2:small: a 5.3 MB executable whose build was guessed at 54 s (3.3 s
    # at load 3, 5-9 s at load 8 measured): the search got a fifth of its share
    big = _fake_plan(950, capture=NS(executable=bytes(10**7)))
    ours, planned = _limits(monkeypatch, 30.0, big, xla_points=0)
    assert ours == pytest.approx(30.0) and planned == []
    # a 10 s build after ours: XLA's programs still get the planner's 15 s ours left
    ours, planned = _limits(monkeypatch, 30.0, big, build_s=10.0)
    assert ours == pytest.approx(15.0) and planned == [pytest.approx(15.0)]


def test_xlas_remat_programs_hold_back_no_share_where_they_could_try_none(monkeypatch):
    # 1.5 s: half of it is less than a try needs (REMAT_MIN_S); ours had that half
    ours, planned = _limits(monkeypatch, 1.5)
    assert ours == pytest.approx(1.5) and planned == []
    # 40 s: a try fits in the share held back; ours leaves it
    ours, planned = _limits(monkeypatch, 40.0)
    assert ours == pytest.approx(40.0 * (1 - gpu_budget.REMAT_PLAN_SHARE))
    assert planned == [pytest.approx(40.0 * gpu_budget.REMAT_PLAN_SHARE)]
