"""Per-step caps of the recomputation model (olla_jax.solve.recompute): a plan
meets the budget only when every cap holds too; the least cost among those."""

import dataclasses
import itertools
import random

import pytest

from olla_jax.solve import recompute as rc
from tests.solve.test_recompute import _random_problem


def _plans(problem):
    for picks in itertools.product(*[range(-1, len(c.options)) for c in problem.choices]):
        try:
            yield picks, rc.evaluate(problem, picks)
        except ValueError:
            continue


@pytest.mark.parametrize("engine", ["cpsat", "mip"])
@pytest.mark.parametrize("seed", range(8))
def test_caps_hold_at_least_cost(engine, seed):
    rng = random.Random(100 + seed)
    problem = _random_problem(rng, budget_share=1.0)
    plans = list(_plans(problem))
    # caps some plan meets (so none is below what every plan keeps there)
    picks, _ = rng.choice(plans)
    prof = rc.profile(problem, picks)
    steps = rng.sample(range(len(prof)), min(3, len(prof)))
    problem = dataclasses.replace(problem, caps=tuple((t, int(prof[t])) for t in steps))
    ok = [(cost, peak) for p, (peak, cost) in plans
          if peak <= problem.budget and rc.fits(problem, p)]
    got = rc.solve(problem, engine=engine, time_limit_s=5)
    assert got.met and rc.fits(problem, got.picks)
    assert (got.cost, got.peak) == min(ok)


def test_cap_below_what_every_plan_keeps_is_raised():
    # interval 0 cannot be dropped at step 2: a cap of 0 there is raised to its size
    problem = rc.RecomputeProblem((64, 64), (0, 0), (6, 6), (rc.Choice(1, (rc.Option((1, 4)),), 1),),
                                  budget=128, caps=((2, 0),))
    got = rc.solve(problem, time_limit_s=2)
    assert got.met and got.picks == (0,)       # the cap still asks for what can be dropped


def test_bad_cap_is_refused():
    with pytest.raises(ValueError, match="cap"):
        rc.RecomputeProblem((1,), (0,), (5,), (), 1, caps=((-1, 0),))
