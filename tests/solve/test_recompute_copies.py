"""The recomputation model with several copies of one value (``Option.more``):
two idle peaks of one height need two copies; each copy costs one more
recomputation; and the model still matches brute force with such options."""

import random

import pytest

from olla_jax.solve import recompute as rc
from tests.small_steps import recompute_brute_force


def _two_peaks(budget: int):
    # value 0 (100 bytes, [0, 12]) is idle over [2, 4] and [7, 9], where values 1 and 2
    # (200 each) make two peaks of 300; one copy drops it over one of them only
    return rc.RecomputeProblem(
        sizes=(100, 200, 200), starts=(0, 2, 7), ends=(12, 4, 9),
        choices=(rc.Choice(0, (rc.Option((2, 4)), rc.Option((7, 9)),
                               rc.Option((2, 4), more=((7, 9),))), 5),),
        budget=budget)


@pytest.mark.parametrize("engine", ["cpsat", "mip"])
def test_two_peaks_need_two_copies_at_twice_the_cost(engine):
    got = rc.solve(_two_peaks(250), engine=engine, time_limit_s=2)
    assert got.met and got.picks == (2,) and got.cost == 10 and got.peak == 200
    pieces = sorted(rc.intervals_after(_two_peaks(250), got.picks))
    assert [p for p in pieces if p[0] == 100] == [(100, 0, 1), (100, 5, 6), (100, 10, 12)]
    # a budget the peaks already meet buys nothing
    got = rc.solve(_two_peaks(300), engine=engine, time_limit_s=2)
    assert got.met and got.picks == (-1,) and got.cost == 0


def test_gaps_must_follow_one_another_inside_the_life():
    with pytest.raises(ValueError, match="gap"):
        rc.RecomputeProblem(sizes=(100,), starts=(0,), ends=(12,),
                            choices=(rc.Choice(0, (rc.Option((7, 9), more=((2, 4),)),), 5),),
                            budget=0)


def test_a_copy_inside_any_gap_of_its_operand_conflicts():
    # B's second copy runs at 10, inside A's second gap [9, 11]: they exclude each other
    problem = rc.RecomputeProblem(
        sizes=(50, 60), starts=(0, 0), ends=(14, 14),
        choices=(rc.Choice(0, (rc.Option((2, 3), more=((9, 11),)),), 1),
                 rc.Choice(1, (rc.Option((4, 5), ((0, 10),), more=((7, 9),)),), 1)),
        budget=0)
    assert ((1, 0), (0, 0)) in rc.conflicts(problem)
    with pytest.raises(ValueError, match="cannot both be taken"):
        rc.evaluate(problem, (0, 0))


def _random_problem(rng: random.Random, n: int = 5):
    sizes, starts, ends = [], [], []
    for _ in range(n):
        s = rng.randrange(0, 8)
        sizes.append(rng.randrange(1, 9) * 64)
        starts.append(s)
        ends.append(s + rng.randrange(6, 16))
    choices = []
    for i in range(n):
        if rng.random() < 0.3:
            continue
        options = []
        for _ in range(rng.randrange(1, 3)):
            a = rng.randrange(starts[i] + 1, ends[i] - 4)
            b = rng.randrange(a, a + 2)
            more = ()
            if rng.random() < 0.6 and b + 2 < ends[i] - 1:
                a2 = rng.randrange(b + 2, ends[i] - 1)
                more = ((a2, rng.randrange(a2, ends[i] - 1)),)
            last = (more[-1] if more else (a, b))[1] + 1
            ops = [j for j in range(n) if j != i and starts[j] <= a <= ends[j]]
            extend = tuple((j, last) for j in rng.sample(ops, min(len(ops), rng.randrange(0, 2))))
            options.append(rc.Option((a, b), extend, more))
        choices.append(rc.Choice(i, tuple(options), rng.randrange(1, 20)))
    probe = rc.RecomputeProblem(tuple(sizes), tuple(starts), tuple(ends), tuple(choices), 0)
    peak = int(rc.profile(probe, [-1] * len(choices)).max())
    return rc.RecomputeProblem(tuple(sizes), tuple(starts), tuple(ends), tuple(choices),
                               int(peak * rng.choice([0.5, 0.7, 0.9])))


@pytest.mark.parametrize("seed", range(8))
def test_model_with_two_copy_options_matches_brute_force(seed):
    problem = _random_problem(random.Random(seed))
    got = rc.solve(problem, engine="cpsat", time_limit_s=5)
    peak, cost = rc.evaluate(problem, got.picks)
    assert (peak, cost) == (got.peak, got.cost)
    assert ((0, cost, peak) if got.met else (1, peak, cost)) == recompute_brute_force(problem)[0]
