"""Copies one kernel run makes together (``solve.recompute.Launch``: GPU, the
results of a multi-result fusion copied before one instruction): the launch
costs once, and writes the results it does not copy at its step."""

import random

import pytest

from olla_jax.solve import recompute as rc
from tests.small_steps import recompute_brute_force
from tests.solve.test_recompute import _random_problem


def _siblings(budget: int, launches: bool = True) -> rc.RecomputeProblem:
    """Values 0 and 1 (100 and 60 bytes), two results of one fusion, idle
    over [3, 7] and copied at 8 (cost 10 each alone); value 2 (150 bytes, cost
    15), idle over [3, 7] too, another producer's; value 3 (200 bytes) at
    [3, 7] alone.  Steps 0-10."""
    choices = (rc.Choice(0, (rc.Option((3, 7)),), 10), rc.Choice(1, (rc.Option((3, 7)),), 10),
               rc.Choice(2, (rc.Option((3, 7)),), 15))
    launch = (rc.Launch(at=8, members=(0, 1), written=(100, 60), cost=10),)
    return rc.RecomputeProblem((100, 60, 150, 200), (0, 0, 0, 3), (10, 10, 10, 7), choices, budget,
                               launches=launch if launches else ())


@pytest.mark.parametrize("engine", ["cpsat", "mip"])
def test_one_launch_for_two_results_where_that_is_cheaper(engine):
    # dropping 150 bytes at [3, 7] meets 360: value 2 alone (cost 15) or both
    # results (160 bytes): one launch, 10; costed per copy they were 20
    got = rc.solve(_siblings(360), engine=engine, time_limit_s=5)
    assert got.met and got.picks == (0, 0, -1) and got.cost == 10
    per_copy = rc.solve(_siblings(360, launches=False), engine=engine, time_limit_s=5)
    assert per_copy.picks == (-1, -1, 0) and per_copy.cost == 15


def test_a_launch_writes_the_results_it_does_not_copy_at_its_step():
    problem = _siblings(10**6)
    alone = rc.profile(problem, (0, -1, -1))
    # value 0 absent over [3, 7], its copy from 8; value 1 written again at 8 (scratch)
    assert alone[7] == 410 and alone[8] == 310 + 60 and alone[9] == 310
    both = rc.profile(problem, (0, 0, -1))
    assert both[7] == 350 and both[8] == 310 and both[9] == 310
    assert rc.evaluate(problem, (0, 0, -1)) == (350, 10)
    assert rc.evaluate(problem, (0, -1, 0)) == (370, 25)


def test_a_copy_at_another_step_is_its_own_recomputation():
    choices = (rc.Choice(0, (rc.Option((3, 7)), rc.Option((3, 5))), 10),
               rc.Choice(1, (rc.Option((3, 7)),), 10))
    problem = rc.RecomputeProblem((100, 60), (0, 0), (10, 10), choices, 0,
                                  launches=(rc.Launch(8, (0, 1), (100, 60), 10),))
    # value 0 copied at 6, value 1 at 8: the launch makes one copy, the other runs alone
    assert rc.evaluate(problem, (1, 0))[1] == 20
    assert rc.profile(problem, (1, 0))[8] == 160 + 100


def test_bad_launches_are_refused():
    ok = _siblings(0)
    with pytest.raises(ValueError, match="one written size per member"):
        rc.RecomputeProblem(ok.sizes, ok.starts, ok.ends, ok.choices, 0,
                            launches=(rc.Launch(8, (0, 1), (100,), 10),))
    with pytest.raises(ValueError, match="already in a launch"):
        rc.RecomputeProblem(ok.sizes, ok.starts, ok.ends, ok.choices, 0,
                            launches=(rc.Launch(8, (0,), (100,), 10),
                                      rc.Launch(8, (0, 1), (100, 60), 10)))


def _with_launches(rng: random.Random, problem: rc.RecomputeProblem) -> rc.RecomputeProblem:
    """``problem`` with launches at some copy steps: the choices with a copy
    there, each result's bytes written when not copied, others at random."""
    at = {}
    for k, c in enumerate(problem.choices):
        for o in c.options:
            for _, b in o.gaps:
                at.setdefault(b + 1, set()).add(k)
    launches = []
    for t, ks in sorted(at.items()):
        if rng.random() < 0.6:
            members = tuple(sorted(ks))
            launches.append(rc.Launch(t, members,
                                      tuple(problem.sizes[problem.choices[k].interval]
                                            for k in members),
                                      rng.randrange(1, 25), rng.choice([0, 0, 64, 128])))
    return rc.RecomputeProblem(problem.sizes, problem.starts, problem.ends, problem.choices,
                               problem.budget, launches=tuple(launches))


@pytest.mark.parametrize("engine", ["cpsat", "mip"])
@pytest.mark.parametrize("seed", range(10))
def test_model_with_launches_matches_brute_force(engine, seed):
    rng = random.Random(100 + seed)
    problem = _with_launches(rng, _random_problem(rng, n=7,
                                                  budget_share=rng.choice([0.5, 0.7, 0.9])))
    key, _ = recompute_brute_force(problem)
    got = rc.solve(problem, engine=engine, time_limit_s=5)
    peak, cost = rc.evaluate(problem, got.picks)
    assert (peak, cost) == (got.peak, got.cost)
    assert ((0, cost, peak) if got.met else (1, peak, cost)) == key


def test_restricted_keeps_launches_of_the_choices_kept():
    problem = _siblings(360)
    sub = rc.restricted(problem, [1, 2])
    assert [c.interval for c in sub.choices] == [1, 2]
    assert sub.launches == (rc.Launch(8, (0,), (60,), 10, others=100),)
    # value 1 copied alone: value 0 written at its step, as in the whole problem
    assert rc.profile(sub, (0, -1))[8] == rc.profile(problem, (-1, 0, -1))[8]
    assert rc.restricted(problem, [2]).launches == ()
