"""``budget.choose_model``'s step caps: when the model's plan fits in live
bytes but not once placed, the steps over the target get caps and the model
is solved again.  A capped problem no plan meets makes the model return its
least memory whatever its cost (on H100 unet:small, copies of cuDNN
convolutions where the caps asked for a little less); the model is then
solved once more with the lowered budget alone, and the cheaper plan that
meets the target is kept."""

from __future__ import annotations

import dataclasses

from olla_jax import budget
from olla_jax.budget import model as budget_model
from olla_jax.solve import recompute as solver

from test_recompute_multi import held  # noqa: F401  (a pytest fixture; tests/apply is on the path)


def test_a_capped_problem_no_plan_meets_is_solved_again_without_caps(held, monkeypatch):  # noqa: F811
    cap, _, graph, order, a = held
    cands = budget.candidates(graph, cap)
    real = budget.plan_of(graph, order, [(a, 0)])
    target = real.temp_bytes
    asked = []
    # (met, placed temp, extra cost) per solve: fits in live bytes but not
    # placed; capped: unmet, least memory at a high cost; uncapped again: fits
    script = [(True, target + 64, 1.0), (False, target - 64, 100.0), (True, target - 32, 2.0)]

    def solve(problem, **_):
        asked.append(problem.caps)
        met = script[len(asked) - 1][0]
        picks = tuple(0 if i == 0 else -1 for i in range(len(problem.choices)))
        return solver.RecomputeSolution(picks, 0, 0, met, True, "cpsat", 0.0)

    def plan_of(*_, **__):
        _, temp, cost = script[len(asked) - 1]
        return dataclasses.replace(real, temp_bytes=temp, extra_cost_s=cost)
    monkeypatch.setattr(solver, "solve", solve)
    monkeypatch.setattr(budget_model, "plan_of", plan_of)
    monkeypatch.setattr(budget_model, "_over_target_caps",
                        lambda problem, picks, plan, target_temp, caps: {0: 1})
    got = budget.choose_model(graph, order, cands, target, time_limit_s=30)
    assert [bool(c) for c in asked] == [False, True, False]
    # meets the target at a cost of 2, not the capped plan's 100
    assert (got.temp_bytes, got.extra_cost_s) == (target - 32, 2.0)
