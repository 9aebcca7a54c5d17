"""A budgeted plan() with feed_back=False does not time the recomputing step."""

import warnings

import pytest

import olla_jax
from olla_jax import budget
from tests import small_steps


def test_feed_back_false_does_not_time_the_recomputation(monkeypatch):
    asked = []

    def recorded(result, budget_bytes, **kw):
        asked.append(kw.get("measure_time", True))
        return result       # nothing found: the budget is missed

    monkeypatch.setattr(budget, "recompute_to_budget", recorded)
    args = small_steps.mlp_args(0)
    for feed_back in (False, True):
        with warnings.catch_warnings(), pytest.raises(olla_jax.BudgetNotMet):
            warnings.simplefilter("ignore", olla_jax.PlanWarning)
            olla_jax.plan(small_steps.mlp_step, *args, memory_budget=1, time_limit_s=2,
                          feed_back=feed_back)
    assert asked == [False, True]
