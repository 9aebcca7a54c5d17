"""budget.search's time discipline: the whole search ends within its limit
when its stages are slow (best-fit, the model's build, the exact placement).

As tests/test_strategy_deadline.py, the limit is tested as a mechanism, not a
wall-clock figure: a fake clock that the stubbed stages advance by the time
they claim, read by the search (``clock``) and by the model's engine runs, so
a stage handed time it does not have shows as a fake elapsed time past the
limit however loaded the machine is.  (The model's CP-SAT runs took their
build, seconds on donated small, past their share: a 10 s search ran 15-20 s.)"""

from __future__ import annotations

import time
import types

import pytest

from olla_jax import budget
from olla_jax.solve import place as place_lib
from olla_jax.solve import place_greedy
from olla_jax.solve import recompute as recompute_model


class FakeClock:
    """Real time plus whatever the stubbed stages claim to have spent."""

    def __init__(self):
        self.spent = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.spent


def _slow_stages(monkeypatch, clock: FakeClock, *, fit_s: float, build_s: float) -> dict:
    """Each best-fit sort order takes ``fit_s`` more, each model build
    ``build_s`` more (and its conflicts as much, once), the exact placement
    all the time it is given; counts of each, returned."""
    calls = {"fit": 0, "build": 0, "exact": 0}
    monkeypatch.setattr(recompute_model, "time", types.SimpleNamespace(monotonic=clock))
    real_fit, real_terms, real_conflicts = (place_greedy.best_fit_model, recompute_model._terms,
                                            recompute_model.conflicts)

    def best_fit_model(model, **kw):
        calls["fit"] += 1
        clock.spent += fit_s * len(kw.get("orders", place_greedy.SORT_ORDERS))
        return real_fit(model, **kw)

    def terms(*args, **kw):
        calls["build"] += 1
        clock.spent += build_s
        return real_terms(*args, **kw)

    def conflicts(problem):
        clock.spent += build_s
        return real_conflicts(problem)

    def place_exact(problem, *, time_limit_s, hint=None, **kw):
        calls["exact"] += 1
        clock.spent += time_limit_s
        return hint
    monkeypatch.setattr(place_greedy, "best_fit_model", best_fit_model)
    monkeypatch.setattr(recompute_model, "_terms", terms)
    monkeypatch.setattr(recompute_model, "conflicts", conflicts)
    monkeypatch.setattr(place_lib, "place_exact", place_exact)
    return calls


def test_search_with_slow_stages_ends_within_its_limit(vit_tiny, monkeypatch):
    graph, order, cands = vit_tiny
    clock = FakeClock()
    calls = _slow_stages(monkeypatch, clock, fit_s=0.05, build_s=0.5)
    limit = 4.0
    t0 = clock()
    # target 1 byte: nothing meets it, every stage runs until its share ends
    got = budget.search(graph, order, cands, 1, time_limit_s=limit, clock=clock)
    elapsed = clock() - t0
    assert got is not None and got.picked
    # (the model runs when the machine leaves it time: its builds are
    # test_model_solve_counts_its_builds_in_its_limit's)
    assert calls["fit"] > 0
    assert elapsed <= 1.1 * limit, (elapsed, calls)
    print(f"fake elapsed {elapsed:.2f} s of {limit} s, {calls}")


@pytest.mark.parametrize("limit", [4.0, 1.5])
def test_model_solve_counts_its_builds_in_its_limit(monkeypatch, limit):
    # one choice, a budget only it meets; each engine run's build takes 1 s
    # (two row sets of 0.5 s): at 4 s both runs fit (the cheapest plan, then
    # the least peak at its cost); at 1.5 s the first run's build eats its
    # share and no other starts.  Before, each run had its share past its build.
    from ortools.sat.python import cp_model  # noqa: F401 - imported: not a build's time
    clock = FakeClock()
    monkeypatch.setattr(recompute_model, "time", types.SimpleNamespace(monotonic=clock))
    real_terms = recompute_model._terms
    builds = []

    def terms(*args, **kw):
        builds.append(clock())
        clock.spent += 0.5
        return real_terms(*args, **kw)
    monkeypatch.setattr(recompute_model, "_terms", terms)
    problem = recompute_model.RecomputeProblem(
        sizes=(100, 100, 50), starts=(0, 2, 4), ends=(9, 9, 6),
        choices=(recompute_model.Choice(0, (recompute_model.Option((3, 7)),), 5),), budget=200)
    t0 = clock()
    sol = recompute_model.solve(problem, time_limit_s=limit)
    assert clock() - t0 <= 1.1 * limit, builds
    if limit > 2:
        assert sol.met and sol.picks == (0,) and len(builds) == 4
    else:
        assert not sol.met and len(builds) == 2


def test_greedy_is_handed_its_share_less_two_one_order_fits(vit_tiny, monkeypatch):
    """The greedy places its plans with best-fit's one winning sort order: what
    its placement may run past its share is two fits of one order, not the
    four of ``fit_orders`` (on resnet50:small on H100, 2,000 nodes, those took
    seconds, and the greedy and the model were left no time)."""
    from olla_jax.budget import timed_search
    graph, order, cands = vit_tiny
    clock = FakeClock()
    fit_s = 0.5                         # per sort order: fit_orders' four take 2 s
    _slow_stages(monkeypatch, clock, fit_s=fit_s, build_s=0.0)
    handed = []
    real_choose = timed_search.choose

    def choose(*args, time_limit_s, **kw):
        handed.append((time_limit_s, clock()))
        return real_choose(*args, time_limit_s=time_limit_s, **kw)
    monkeypatch.setattr(timed_search, "choose", choose)
    limit = 12.0
    t0 = clock()
    budget.search(graph, order, cands, 1, time_limit_s=limit, clock=clock)
    elapsed = clock() - t0
    share, at = handed[0]
    # until the greedy's end (0.35 of the limit), less two fits of one order;
    # (before: less fit_orders' four, 1 s less)
    expected = timed_search._GREEDY_END * limit - (at - t0) - 2 * fit_s
    assert share >= expected - 0.3, (share, expected)
    assert elapsed <= 1.1 * limit, elapsed
