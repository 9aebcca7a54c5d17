"""strategy._defer_outputs places only the deferral variants that can win: no
order placed twice (the original included), none whose live-bytes bound is not
below the best arena (its placement cannot beat it)."""

from __future__ import annotations

import time

from olla_jax import strategy
from olla_jax.solve import defer, place, place_check
from tests.graph.test_model_bound_fill import KIB, _graph
from tests.small_steps import mlp_graph, stacked_best_fit


def _setup():
    graph = mlp_graph()
    problem = graph.order_problem()
    order = tuple(graph.xla_order)
    cost = strategy._Cost(time.monotonic)
    pp, owners = graph.placement_problem(order)
    best = strategy.Candidate(order, "xla", cost.best_fit(pp, time.monotonic() + 60), owners, pp)
    placed: list = []
    real = cost.best_fit

    def best_fit(problem_, until, cut=None):
        placed.append(problem_)
        return real(problem_, until, cut)
    cost.best_fit = best_fit
    return graph, problem, order, cost, best, placed


def test_each_deferred_order_is_placed_once_and_the_original_not_again(monkeypatch):
    graph, problem, order, cost, best, placed = _setup()
    made = []
    real_defer = defer.defer

    def spy(problem_, order_, deferred):
        made.append(real_defer(problem_, order_, deferred))
        return made[-1]
    monkeypatch.setattr(defer, "defer", spy)
    monkeypatch.setattr(place_check, "live_bytes_bound", lambda pp: 0)   # no variant screened
    strategy._defer_outputs(graph, problem, best, deadline=time.monotonic() + 60, cost=cost,
                            live_of=lambda o: 0)
    new = {m for m in made if m != order}
    assert len(made) > len(new) >= 1           # mlp's variants repeat themselves and the order
    assert len(placed) == len(new)


def test_deferral_leaves_the_repair_its_best_fits(monkeypatch):
    """Each best-fit sort order costs 1 fake second: output deferral (the
    stage before the repair) ends REPAIR_BEST_FITS best-fits before the
    finish, not at its mark of the limit."""
    from olla_jax.solve import bounds, order as order_lib, place_greedy
    graph = mlp_graph()
    spent = [0.0]

    def clock() -> float:
        return time.monotonic() + spent[0]

    monkeypatch.setattr(place_greedy, "best_fit_model", stacked_best_fit(spent))
    real_order, real_bound = order_lib.solve_order, bounds.min_cut_bound

    def solve_order(problem, **kw):
        return real_order(problem, **{**kw, "time_limit_s": 0.01, "engine": "list"})

    def min_cut_bound(problem, **kw):
        return real_bound(problem, **{**kw, "time_limit_s": 0.01})
    monkeypatch.setattr(order_lib, "solve_order", solve_order)
    monkeypatch.setattr(bounds, "min_cut_bound", min_cut_bound)
    given = []
    real_defer = strategy._defer_outputs

    def defer_outputs(graph_, problem, best, *, deadline, cost, live_of):
        given.append((deadline, cost.one_best_fit))
        return real_defer(graph_, problem, best, deadline=deadline, cost=cost, live_of=live_of)
    monkeypatch.setattr(strategy, "_defer_outputs", defer_outputs)
    deadline = strategy.Deadline(20.0, clock=clock)
    strategy.solve_graph(graph, deadline=deadline)
    assert given
    (end, one), = given
    assert one >= 1.0
    finish = deadline.at - strategy.FINISH_RESERVE * deadline.seconds
    assert end <= finish - strategy.REPAIR_BEST_FITS * one + 1e-6


# A variant whose live bytes are at or above the best arena is not placed: no
# placement of it can win (on H100 resnet18 eight such best-fits took 4 s of a
# 20 s limit from the repair).

def _writer_frees_a_temp():
    # n0 writes T (2 KiB); n1 reads it last and writes the 1 KiB output;
    # n2 writes U (2 KiB), n3 reads it.  Deferred, the output's writer runs
    # last and T stays live beside U: 4 KiB, where the order needs 2.
    return _graph([(2 * KIB, 0, 1), (2 * KIB, 2, 3)], [(KIB, 1)], {(0, 1), (2, 3)}, 4)


def _deferred(graph, order):
    problem = graph.order_problem()
    pp, owners = graph.placement_problem(order)
    best = strategy.Candidate(order, "test", place.best_fit(pp), owners, pp, 0)
    cost = strategy._Cost(time.monotonic)
    calls = []
    real = cost.best_fit

    def counted(p, until, cut=None):
        calls.append(place_check.live_bytes_bound(p))
        return real(p, until, cut)
    cost.best_fit = counted
    found = strategy._defer_outputs(graph, problem, best, deadline=time.monotonic() + 30,
                                    cost=cost, live_of=lambda o: 0)
    return best, found, calls


def test_a_variant_that_cannot_beat_the_best_is_not_placed():
    graph = _writer_frees_a_temp()
    best, found, calls = _deferred(graph, (0, 1, 2, 3))
    assert best.placement.arena_size == 2 * KIB
    assert found is best
    assert calls == []           # before: one best-fit of the 4 KiB variant


def test_a_variant_that_may_beat_the_best_is_still_placed():
    # The output written first: deferred to the end, its region is idle while
    # T and U live, and each fits it (T is not read by its writer).
    graph = _graph([(KIB, 1, 2), (KIB, 3, 4)], [(KIB, 0)], {(1, 2), (2, 3), (3, 4)}, 5)
    best, found, calls = _deferred(graph, (0, 1, 2, 3, 4))
    assert calls and all(c < best.placement.arena_size for c in calls)
