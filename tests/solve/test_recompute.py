"""The recomputation model (olla_jax.solve.recompute) against brute force."""

import random

import pytest

from olla_jax.solve import recompute as rc
from tests.small_steps import evaluations, recompute_brute_force


def _random_problem(rng: random.Random, n: int = 6, budget_share: float = 0.7):
    sizes, starts, ends = [], [], []
    for _ in range(n):
        s = rng.randrange(0, 10)
        sizes.append(rng.randrange(1, 9) * 64)
        starts.append(s)
        ends.append(s + rng.randrange(3, 14))
    choices = []
    for i in range(n):
        if rng.random() < 0.3 or ends[i] - starts[i] < 3:
            continue
        options = []
        for _ in range(rng.randrange(1, 3)):
            a = rng.randrange(starts[i] + 1, ends[i] - 1)
            b = rng.randrange(a, ends[i])
            ops = [j for j in range(n) if j != i and starts[j] <= a <= ends[j]]
            extend = tuple((j, b + 1) for j in rng.sample(ops, min(len(ops), rng.randrange(0, 2))))
            options.append(rc.Option((a, b), extend))
        choices.append(rc.Choice(i, tuple(options), rng.randrange(1, 20)))
    probe = rc.RecomputeProblem(tuple(sizes), tuple(starts), tuple(ends), tuple(choices), 0)
    peak = int(rc.profile(probe, [-1] * len(choices)).max())
    return rc.RecomputeProblem(tuple(sizes), tuple(starts), tuple(ends), tuple(choices),
                               int(peak * budget_share))


@pytest.mark.parametrize("engine", ["cpsat", "mip"])
@pytest.mark.parametrize("seed", range(12))
def test_model_matches_brute_force(engine, seed):
    rng = random.Random(seed)
    problem = _random_problem(rng, budget_share=rng.choice([0.5, 0.7, 0.9]))
    key, _ = recompute_brute_force(problem)
    got = rc.solve(problem, engine=engine, time_limit_s=5)
    peak, cost = rc.evaluate(problem, got.picks)
    assert (peak, cost) == (got.peak, got.cost)
    assert got.met == (peak <= problem.budget)
    assert ((0, cost, peak) if got.met else (1, peak, cost)) == key


def test_operand_extension_counts():
    # value 0 (big) idle over [3, 8]; its copy reads value 1, which then lives to step 9
    problem = rc.RecomputeProblem(
        sizes=(100, 30, 50), starts=(0, 0, 4), ends=(10, 2, 6),
        choices=(rc.Choice(0, (rc.Option((3, 8), ((1, 9),)),), 5),),
        budget=135)
    got = rc.solve(problem, time_limit_s=2)
    # 150 at steps 4-6 before; dropping value 0 saves 100 there but keeps 30 alive: 80,
    # and the peak moves to steps 0-2 (130)
    assert got.picks == (0,) and got.met
    assert got.peak == int(rc.profile(problem, got.picks).max()) == 130


def test_chains_read_the_operands_copy_and_never_inside_its_gap():
    # A (50 bytes, [0, 11]) is read by B's copy at step 10; B (60, [1, 12]) may drop
    # over [3, 9]; A over [2, 8] (its copy, born at 9, is what B's copy reads) or over
    # [2, 10] (no A at all when B's copy runs); C (80, [4, 7]) makes the peak.
    problem = rc.RecomputeProblem(
        sizes=(50, 60, 80), starts=(0, 1, 4), ends=(11, 12, 7),
        choices=(rc.Choice(1, (rc.Option((3, 9), ((0, 10),)),), 5),
                 rc.Choice(0, (rc.Option((2, 8)), rc.Option((2, 10))), 3)),
        budget=120)
    assert rc.conflicts(problem) == [((0, 0), (1, 1))]
    with pytest.raises(ValueError, match="cannot both"):
        rc.evaluate(problem, (0, 1))
    assert rc.evaluate(problem, (0, -1))[0] == 130 and rc.evaluate(problem, (-1, 0))[0] == 140
    got = rc.solve(problem, time_limit_s=2)
    assert got.picks == (0, 0) and got.met and (got.peak, got.cost) == (110, 8)


def test_lower_budget_never_gets_a_higher_peak():
    rng = random.Random(7)
    for _ in range(6):
        p = _random_problem(rng, n=7)
        top = int(rc.profile(p, [-1] * len(p.choices)).max())
        peaks = []
        for share in (1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.3, 0.0):
            q = rc.RecomputeProblem(p.sizes, p.starts, p.ends, p.choices, int(share * top))
            peaks.append(rc.solve(q, time_limit_s=3).peak)
        assert peaks == sorted(peaks, reverse=True), peaks


def test_warm_start_is_kept_or_improved():
    rng = random.Random(3)
    p = _random_problem(rng, n=7, budget_share=0.8)
    key, picks = recompute_brute_force(p)
    got = rc.solve(p, time_limit_s=3, hint=picks)
    assert rc.evaluate(p, got.picks) <= rc.evaluate(p, picks) or got.met


@pytest.mark.parametrize("seed", range(12))
def test_unreachable_budget_least_peak_is_proven_from_any_start(seed):
    """A budget no plan meets: the least peak is proven (``optimal``) also
    when the warm start, or picking nothing, already is it (the solver then
    returns it unchanged)."""
    rng = random.Random(seed)
    problem = _random_problem(rng, budget_share=0.3)
    key, picks = recompute_brute_force(problem)
    assert key[0] == 1                      # (no plan meets it)
    for hint in (None, picks):
        got = rc.solve(problem, time_limit_s=5, hint=hint)
        assert (1, got.peak, got.cost) == key and got.optimal, hint


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="gap"):
        rc.RecomputeProblem((1,), (0,), (5,), (rc.Choice(0, (rc.Option((0, 2)),), 1),), 1)
    with pytest.raises(ValueError, match="engine"):
        rc.solve(rc.RecomputeProblem((1,), (0,), (5,), (), 1), engine="x")


@pytest.mark.parametrize("engine", ["cpsat", "mip"])
@pytest.mark.parametrize("seed", range(8))
def test_least_peak_within_a_cost_cap_matches_brute_force(engine, seed):
    """``least_peak_within``: the least live-bytes peak of any plan whose cost
    is at most the cap (the budget plays no part but in ``met``)."""
    rng = random.Random(100 + seed)
    problem = _random_problem(rng, budget_share=0.7)
    plans = list(evaluations(problem))
    cap = rng.choice(sorted({0, *(cost for _, _, cost in plans)}))
    best = min((peak for _, peak, cost in plans if cost <= cap), default=None)
    sol = rc.least_peak_within(problem, cap, engine=engine, time_limit_s=10)
    assert sol.optimal
    assert sol.peak == best and sol.cost <= cap
    assert sol.met == (sol.peak <= problem.budget)
    assert rc.evaluate(problem, sol.picks) == (sol.peak, sol.cost)
