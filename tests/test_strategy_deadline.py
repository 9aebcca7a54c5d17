"""solve_graph's time discipline and placement repair (olla_jax/strategy.py).

The limit is tested as a mechanism, not a wall-clock figure (that is
benchmarks/time_limit.py's job): a fake clock that the stubbed engines advance
by all the time they are given, so a stage handed time past the deadline shows
as a fake elapsed time past the limit, however loaded the machine is."""

from __future__ import annotations

import time

import pytest

from olla_jax import strategy
from olla_jax.solve import bounds, order as order_lib, place as place_lib, place_greedy
from olla_jax.solve import place_model
from olla_jax.solve import problem as sp
from tests.small_steps import mlp_graph


@pytest.fixture(scope="module")
def graph():
    return mlp_graph()


class FakeClock:
    """Real time plus whatever the stubbed engines claim to have spent."""

    def __init__(self):
        self.spent = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.spent


def test_deadline_marks_are_fractions_of_the_limit_and_never_pass_the_end():
    now = [100.0]
    d = strategy.Deadline(10.0, clock=lambda: now[0])
    assert d.mark(0.5) == 105.0 and d.mark(2.0) == 110.0
    now[0] = 103.0
    assert d.until(0.5) == 2.0 and d.left() == 7.0 and d.elapsed() == 3.0
    now[0] = 120.0
    assert d.until(0.5) == 0.0 and d.left() == 0.0


def test_engines_that_take_all_their_time_keep_the_solve_within_the_limit(graph, monkeypatch):
    clock = FakeClock()
    given = []
    real_order, real_bound, real_exact = (order_lib.solve_order, bounds.min_cut_bound,
                                          place_lib.place_exact)

    def spend(name, seconds):
        given.append((name, seconds, strategy_deadline[0].left()))
        clock.spent += seconds

    def solve_order(problem, **kw):
        spend("order", kw["time_limit_s"])
        return real_order(problem, **{**kw, "time_limit_s": 0.01, "engine": "list"})

    def min_cut_bound(problem, **kw):
        spend("bound", kw.get("time_limit_s", 0.0))
        return real_bound(problem, **{**kw, "time_limit_s": 0.01})

    def place_exact(problem, **kw):
        spend("exact", kw["time_limit_s"])
        return real_exact(problem, **{**kw, "time_limit_s": 0.01})

    monkeypatch.setattr(order_lib, "solve_order", solve_order)
    monkeypatch.setattr(bounds, "min_cut_bound", min_cut_bound)
    monkeypatch.setattr(place_lib, "place_exact", place_exact)
    limit = 30.0   # fake seconds: the real work on this graph is a small part of it
    strategy_deadline = [strategy.Deadline(limit, clock=clock)]
    solution = strategy.solve_graph(graph, deadline=strategy_deadline[0])
    assert given, "no engine was called"
    for name, seconds, left in given:
        assert seconds <= left + 1e-6, f"{name} was given {seconds:.2f} s with {left:.2f} s left"
    assert strategy_deadline[0].elapsed() <= 1.1 * limit
    assert solution.layout.temp_bytes > 0


def test_a_deadline_already_past_still_gives_a_valid_solution_and_no_engine_time(graph, monkeypatch):
    given = []
    real_order = order_lib.solve_order

    def solve_order(problem, **kw):
        given.append(kw["time_limit_s"])
        return real_order(problem, **kw)
    monkeypatch.setattr(order_lib, "solve_order", solve_order)
    now = [time.monotonic()]
    deadline = strategy.Deadline(1.0, clock=lambda: now[0])
    now[0] += 5.0   # the graph build (say) ate the whole limit
    solution = strategy.solve_graph(graph, deadline=deadline)
    assert all(g == 0 for g in given)
    sp.check_topological(graph.order_problem(), solution.layout.order)
    assert solution.live_bytes <= solution.layout.temp_bytes


def test_xla_is_not_kept_without_exact_placement_of_an_order_with_fewer_live_bytes(graph,
                                                                                   monkeypatch):
    """Best-fit made poor (every block stacked), XLA's temp just above the best
    order's live bytes: the repair must run the exact engine on that order."""
    def stacked(model_, orders=place_greedy.SORT_ORDERS, **kw):
        n = len(model_.blocks)
        offsets, top = [], 0
        for b in model_.blocks:
            offsets.append(top)
            top += -(-b.size // model_.alignment) * model_.alignment
        return model_.to_placement([sp.ARENA] * n, offsets)
    monkeypatch.setattr(place_greedy, "best_fit_model", stacked)
    exact_calls = []
    real_exact = place_lib.place_exact

    def place_exact(problem, **kw):
        found = real_exact(problem, **kw)
        exact_calls.append((kw["hint"].arena_size, found.arena_size))
        return found
    monkeypatch.setattr(place_lib, "place_exact", place_exact)
    probe = strategy.solve_graph(graph, time_limit_s=0.5)
    xla_temp = probe.least_live_bytes + 1

    def spent_deadline(fraction):
        now = [time.monotonic()]
        deadline = strategy.Deadline(10.0, clock=lambda: now[0])
        now[0] += fraction * 10.0   # 0.98: in the finish reserve; past 1: no time at all
        return deadline
    exact_calls.clear()
    spent = strategy.solve_graph(graph, deadline=spent_deadline(0.98))
    assert not spent.exact_tried and not exact_calls   # no XLA figure to lose to: no time, no try
    # Losing to XLA, the attempt takes the finish reserve (never the deadline: see
    # tests/test_strategy_losing_deadline.py).
    solution = strategy.solve_graph(graph, deadline=spent_deadline(0.98), xla_temp_bytes=xla_temp)
    assert solution.least_live_bytes < xla_temp
    assert solution.exact_tried and exact_calls
    assert exact_calls[0][0] >= xla_temp   # it was the stacked (losing) placement it repaired
    exact_calls.clear()
    late = strategy.solve_graph(graph, deadline=spent_deadline(1.5), xla_temp_bytes=xla_temp)
    assert not late.exact_tried and not exact_calls   # past the deadline: no attempt


def test_a_deadline_partly_spent_before_the_solve_leaves_the_first_search_its_share(graph,
                                                                                   monkeypatch):
    """plan() builds the graph on the same deadline: with 40% of it spent
    before solve_graph, the first order search must still get its share of
    what is left (the marks measured from the limit's start left it a few
    percent, and resnet50's sink moves stopped early), and every engine
    taking all its time must keep the whole within the limit."""
    clock = FakeClock()
    given = []
    real_order, real_exact = order_lib.solve_order, place_lib.place_exact

    def solve_order(problem, **kw):
        given.append((kw["time_limit_s"], deadline.left()))
        clock.spent += kw["time_limit_s"]
        return real_order(problem, **{**kw, "time_limit_s": 0.01, "engine": "list"})

    def place_exact(problem, **kw):
        clock.spent += kw["time_limit_s"]
        return real_exact(problem, **{**kw, "time_limit_s": 0.01})

    monkeypatch.setattr(order_lib, "solve_order", solve_order)
    monkeypatch.setattr(place_lib, "place_exact", place_exact)
    limit = 30.0   # fake seconds
    deadline = strategy.Deadline(limit, clock=clock)
    clock.spent += 0.4 * limit   # the graph build and the warm starts
    left = deadline.left()
    solution = strategy.solve_graph(graph, deadline=deadline)
    assert given, "no order search ran"
    first, _ = given[0]
    assert first >= 0.15 * left, f"the first order search got {first:.2f} s of {left:.2f} s left"
    for seconds, left_then in given:
        assert seconds <= left_then + 1e-6
    assert deadline.elapsed() <= 1.1 * limit
    sp.check_topological(graph.order_problem(), solution.layout.order)


def test_time_the_repair_leaves_goes_on_to_the_bound(graph, monkeypatch):
    """The bound stage cut short (here: its first run proves nothing, as on a
    loaded machine) is topped up with the time left after the placement
    repair, from what it proved, and ends before the deadline."""
    calls = []
    real = strategy._lower_bound

    def lower_bound(graph_, with_regions, orders, now, end, big=False, floor=0, done=None,
                    values=None):
        calls.append((end, floor))
        if len(calls) == 1:
            return 0   # valid: nothing proven in time
        return real(graph_, with_regions, orders, now, end, big=big, floor=floor, done=done,
                    values=values)
    monkeypatch.setattr(strategy, "_lower_bound", lower_bound)
    deadline = strategy.Deadline(3.0)
    solution = strategy.solve_graph(graph, deadline=deadline)
    assert len(calls) == 2, "the bound was not topped up"
    assert calls[1][0] <= deadline.at
    assert 0 < solution.lower_bound_bytes <= solution.layout.temp_bytes
    assert deadline.elapsed() <= 1.1 * 3.0


def test_exact_placement_starts_no_best_fit_it_cannot_finish(graph, monkeypatch):
    """The repair's exact placement tries best-fit starts besides the hint's
    while time lasts; a start costs one best-fit sort order, which the
    strategy has measured (``best_fit_s``): none starts that the budget cannot
    cover (vit small, loaded: a 1.2 s budget ran 2.8 s on a 1.8 s best-fit)."""
    pp, _ = graph.placement_problem(graph.xla_order)
    assert any(r.capacity > 0 for r in pp.regions)   # the region-choice search runs
    hint = place_greedy.best_fit(pp)
    calls = []
    real = place_lib.best_fit_model

    def best_fit_model(*args, **kw):
        calls.append(1)
        return real(*args, **kw)
    monkeypatch.setattr(place_lib, "best_fit_model", best_fit_model)
    # Unknown cost (a model build's time): the other starts are tried.
    place_lib.place_exact(pp, time_limit_s=0.5, hint=hint, engine="canonical")
    assert calls
    calls.clear()
    # Known to cost more than the budget: none is.
    found = place_lib.place_exact(pp, time_limit_s=0.5, hint=hint, engine="canonical",
                                  best_fit_s=1.0)
    assert not calls and found.arena_size <= hint.arena_size


def test_order_objectives_with_a_fixed_cost_end_by_the_order_mark(graph, monkeypatch):
    """Each order objective past the first costs a fixed time beyond its share
    (its problem, floor and list schedules: 0.2-0.3 s on densenet small, where
    0.1 s shares took 0.5 s); once one has shown it, none starts whose share
    and that overrun would end past the order searches' mark."""
    clock = FakeClock()
    fixed = 1.0    # fake seconds each objective after the first takes past its share
    ends = []
    real_order = order_lib.solve_order

    def solve_order(problem, **kw):
        clock.spent += kw["time_limit_s"] + (fixed if ends else 0.0)
        found = real_order(problem, **{**kw, "time_limit_s": 0.01, "engine": "list"})
        ends.append(deadline.elapsed())
        return found
    monkeypatch.setattr(order_lib, "solve_order", solve_order)
    monkeypatch.setattr(bounds, "min_cut_bound", lambda problem, **kw: bounds.Bound(
        0, (), "stub", 0.0, True))
    assert graph.order_problem().region_sizes   # several objectives
    limit = 30.0
    deadline = strategy.Deadline(limit, clock=clock)
    strategy.solve_graph(graph, deadline=deadline)
    assert len(ends) >= 2
    assert max(ends) <= strategy.ORDER_SEARCH_SHARE * limit + 0.3, ends


def test_each_threshold_min_cut_gets_half_the_time_left_and_the_top_up_skips_those_done(
        graph, monkeypatch):
    """The bound's threshold min-cuts, the largest threshold first: each gets
    LEAD_THRESHOLD_SHARE of the time left at least, not an equal share of all
    of them (densenet gpu:h100: the 27th of 2.6 s left its strongest 0.06 s of
    the 0.5 s it needed; resnet50's 23 each got less than their set-up, so
    none ran a flow).  A threshold whose min-cut finished is not run again."""
    given = []
    real = bounds.min_cut_bound
    now = [1000.0]

    def min_cut_bound(problem, **kw):
        left = 1010.0 - now[0]
        given.append((kw["time_limit_s"], left))
        now[0] += kw["time_limit_s"]   # it takes all it is given
        return real(problem, **kw)
    monkeypatch.setattr(bounds, "min_cut_bound", min_cut_bound)
    thresholds = sorted({0, *graph.order_problem().region_sizes})
    assert len(thresholds) >= 4   # an equal share would be a quarter or less
    done = set()
    value = strategy._lower_bound(graph, graph.order_problem(), [graph.xla_order],
                                  lambda: now[0], 1010.0, done=done)
    assert value > 0 and given
    assert given[0][0] >= strategy.LEAD_THRESHOLD_SHARE * 10.0 - 1e-9
    for seconds, left in given:
        assert strategy.LEAD_THRESHOLD_SHARE * left - 1e-9 <= seconds <= left + 1e-9
    assert done and done <= set(thresholds)
    given.clear()
    now[0] = 2000.0
    again = strategy._lower_bound(graph, graph.order_problem(), [graph.xla_order],
                                  lambda: now[0], 2010.0, floor=value, done=done)
    assert again >= value
    assert len(given) == len(set(thresholds) - done)


def test_no_threshold_min_cut_starts_that_would_end_past_the_bound_mark_by_its_overrun(
        graph, monkeypatch):
    """Each min-cut here takes its share and 0.5 s more (problem, set-up, a
    last flow, as on a loaded machine): once one overran, none starts with
    less than that left, and each gets its share of what is left less that:
    the stage ends by its end (it ran 0.2-0.8 s past its mark on gpu:h100
    suites; the old rule, none past the end, ran the last one at 0.25 s left)."""
    now = [1000.0]
    calls = []
    real = bounds.min_cut_bound

    def min_cut_bound(problem, **kw):
        calls.append(kw["time_limit_s"])
        now[0] += kw["time_limit_s"] + 0.5
        return real(problem, **kw)
    monkeypatch.setattr(bounds, "min_cut_bound", min_cut_bound)
    assert len(sorted({0, *graph.order_problem().region_sizes})) >= 4
    strategy._lower_bound(graph, graph.order_problem(), [graph.xla_order], lambda: now[0],
                          1004.0, floor=1)   # a bound in already: no threshold must run
    assert len(calls) >= 2
    assert now[0] <= 1004.0 + 1e-9


def test_the_cpsat_bound_after_the_top_up_ends_by_its_end_and_never_passes_a_plan(
        graph, monkeypatch):
    """_prove_below: CP-SAT on the threshold problems whose min-cuts proved
    most, each given no more than is left to ``end`` (here each takes all it
    is given), none started with less than CPSAT_BOUND_MIN_S left; on the
    real engine, never above a plan that exists."""
    from olla_jax.solve import bound_cpsat
    solution = strategy.solve_graph(graph, time_limit_s=2.0)
    arena = solution.layout.temp_bytes
    caps = sorted({0, *graph.order_problem().region_sizes})
    per_cap = {c: solution.lower_bound_bytes - k for k, c in enumerate(caps)}
    real = bound_cpsat.prove
    value = strategy._prove_below(graph, per_cap, 0, arena, time.monotonic,
                                  time.monotonic() + 2.0)
    assert 0 <= value <= arena
    # before any placement: each problem's target is the orders' best there
    settled: set = set()
    order = solution.layout.order
    best = max(sp.order_cost(graph.threshold_problem(c, for_bound=True), order) for c in caps)
    early = strategy._prove_below(graph, per_cap, 0, None, time.monotonic,
                                  time.monotonic() + 2.0, orders=[order], settled=settled)
    assert 0 <= early <= min(best, arena)
    assert settled <= set(caps)
    now, given = [1000.0], []

    def prove(problem, target, **kw):
        given.append((kw["time_limit_s"], 1004.0 - now[0]))
        now[0] += kw["time_limit_s"]
        return real(problem, target, **{**kw, "time_limit_s": 0.01})
    monkeypatch.setattr(bound_cpsat, "prove", prove)
    strategy._prove_below(graph, per_cap, 0, arena + 1, lambda: now[0], 1004.0)
    assert 1 <= len(given) <= strategy.CPSAT_BOUND_PROBLEMS
    for seconds, left in given:
        assert strategy.CPSAT_BOUND_MIN_S <= left and seconds <= left + 1e-9
    assert now[0] <= 1004.0 + 1e-9


def _sweep_mode(monkeypatch):
    """The small graph planned as a big one (sweep placement: no block model, no exact)."""
    monkeypatch.setattr(strategy, "SWEEP_MIN_PAIRS", 0)
    monkeypatch.setattr(strategy, "PAIR_US", 1e9)


def _bound_calls(monkeypatch) -> list:
    calls = []
    real_probe, real_cut = bounds.probe_bound, bounds.min_cut_bound

    def probe_bound(*a, **kw):
        calls.append("probe")
        return real_probe(*a, **kw)

    def min_cut_bound(*a, **kw):
        calls.append("min-cut")
        return real_cut(*a, **kw)
    monkeypatch.setattr(bounds, "probe_bound", probe_bound)
    monkeypatch.setattr(bounds, "min_cut_bound", min_cut_bound)
    return calls


def test_a_big_graph_past_the_finish_reserve_starts_no_bound(graph, monkeypatch):
    # 93k nodes at load 21 (240 s limit): the graph build and first searches
    # ate the limit, then two forced-live probes given no time ran 46 s past it.
    _sweep_mode(monkeypatch)
    calls = _bound_calls(monkeypatch)
    now = [time.monotonic()]
    deadline = strategy.Deadline(1.0, clock=lambda: now[0])
    now[0] += 5.0
    solution = strategy.solve_graph(graph, deadline=deadline)
    assert calls == []
    assert solution.lower_bound_bytes == 0
    sp.check_topological(graph.order_problem(), solution.layout.order)


def test_a_big_graph_with_time_left_still_gets_its_bound(graph, monkeypatch):
    _sweep_mode(monkeypatch)
    calls = _bound_calls(monkeypatch)
    real_order = order_lib.solve_order
    monkeypatch.setattr(order_lib, "solve_order", lambda problem, **kw: real_order(
        problem, **{**kw, "time_limit_s": min(kw["time_limit_s"], 0.05), "engine": "list"}))
    solution = strategy.solve_graph(graph, deadline=strategy.Deadline(3.0))
    assert calls and solution.lower_bound_bytes > 0


def _stacked(model_, orders=place_greedy.SORT_ORDERS, **kw):
    """A poor best-fit: every block stacked in the arena (the plan loses to XLA)."""
    offsets, top = [], 0
    for b in model_.blocks:
        offsets.append(top)
        top += -(-b.size // model_.alignment) * model_.alignment
    return model_.to_placement([sp.ARENA] * len(model_.blocks), offsets)


def _slow_engines(monkeypatch, clock: FakeClock, model_s: float, exact_calls: list) -> None:
    """Engines that take all their time; a block model takes ``model_s`` and
    the exact engine's set-up three of them (as EXACT_SETUP_MODELS says)."""
    real_order, real_bound, real_model = (order_lib.solve_order, bounds.min_cut_bound,
                                          place_model.build_model)
    real_exact = place_lib.place_exact

    def solve_order(problem, **kw):
        clock.spent += kw["time_limit_s"]
        return real_order(problem, **{**kw, "time_limit_s": 0.01, "engine": "list"})

    def min_cut_bound(problem, **kw):
        clock.spent += kw.get("time_limit_s", 0.0)
        return real_bound(problem, **{**kw, "time_limit_s": 0.01})

    def build_model(problem):
        clock.spent += model_s
        return real_model(problem)

    def place_exact(problem, **kw):
        exact_calls.append(kw["time_limit_s"])
        clock.spent += strategy.EXACT_SETUP_MODELS * model_s + kw["time_limit_s"]
        return real_exact(problem, **{**kw, "time_limit_s": 0.01})

    monkeypatch.setattr(order_lib, "solve_order", solve_order)
    monkeypatch.setattr(bounds, "min_cut_bound", min_cut_bound)
    monkeypatch.setattr(place_model, "build_model", build_model)
    monkeypatch.setattr(place_lib, "place_exact", place_exact)
    monkeypatch.setattr(place_greedy, "best_fit_model", _stacked)


def test_an_exact_attempt_losing_to_xla_starts_only_if_its_set_up_ends_by_the_deadline(
        graph, monkeypatch):
    """When the best arena is not below XLA's temp, the repair tries an exact
    placement of an order whose floor is (XLA's plan wins without it).  It
    may use the finish reserve, but its set-up (the block model, not
    interruptible: seconds on a 10k-instruction step) must end by the
    deadline: a 10k-instruction step at a 240 s limit, loaded, ran 27 s past it."""
    monkeypatch.setattr(place_greedy, "best_fit_model", _stacked)
    probe = strategy.solve_graph(graph, time_limit_s=0.5)
    xla_temp = probe.least_live_bytes + 1     # the stacked placements all lose to it
    limit = 10.0   # fake seconds; a block model takes a fifth of them
    clock, exact_calls = FakeClock(), []
    _slow_engines(monkeypatch, clock, 0.2 * limit, exact_calls)
    deadline = strategy.Deadline(limit, clock=clock)
    solution = strategy.solve_graph(graph, deadline=deadline, xla_temp_bytes=xla_temp)
    assert solution.layout.temp_bytes >= xla_temp   # it lost: the repair was asked to try
    assert deadline.elapsed() <= 1.1 * limit, f"{deadline.elapsed():.1f} s of {limit:.0f}"
    sp.check_topological(graph.order_problem(), solution.layout.order)


def test_with_time_for_its_set_up_the_losing_order_still_gets_its_exact_attempt(graph,
                                                                                monkeypatch):
    monkeypatch.setattr(place_greedy, "best_fit_model", _stacked)
    probe = strategy.solve_graph(graph, time_limit_s=0.5)
    xla_temp = probe.least_live_bytes + 1
    limit = 10.0
    clock, exact_calls = FakeClock(), []
    _slow_engines(monkeypatch, clock, 0.005 * limit, exact_calls)   # a cheap block model
    deadline = strategy.Deadline(limit, clock=clock)
    solution = strategy.solve_graph(graph, deadline=deadline, xla_temp_bytes=xla_temp)
    assert solution.exact_tried and exact_calls
    assert deadline.elapsed() <= 1.1 * limit, f"{deadline.elapsed():.1f} s of {limit:.0f}"


def test_no_order_search_starts_with_a_share_below_what_the_list_schedule_took(graph,
                                                                             monkeypatch):
    """An order search's fixed part (its problem, list schedules, evaluator)
    costs more than the list schedule stage: on 20k instructions at a 10 s
    limit (load 14) a 0.13 s share took 2.3 s, ending at the deadline.  Here
    the graph build took half the limit, the list stage 15% of it, and a
    search would take three times that past its share: none starts."""
    from olla_jax.solve import list_schedule
    clock = FakeClock()
    limit, list_s = 10.0, 1.5
    searched = []
    real_list, real_order = list_schedule.best_list_schedule, order_lib.solve_order

    def best_list_schedule(*a, **kw):
        clock.spent += list_s
        return real_list(*a, **kw)

    def solve_order(problem, **kw):
        searched.append(kw["time_limit_s"])
        clock.spent += kw["time_limit_s"] + 3 * list_s
        return real_order(problem, **{**kw, "time_limit_s": 0.01, "engine": "list"})
    monkeypatch.setattr(list_schedule, "best_list_schedule", best_list_schedule)
    monkeypatch.setattr(order_lib, "solve_order", solve_order)
    monkeypatch.setattr(bounds, "min_cut_bound", lambda problem, **kw: bounds.Bound(
        0, (), "stub", 0.0, True))
    deadline = strategy.Deadline(limit, clock=clock)
    clock.spent += 0.5 * limit    # the graph build
    solution = strategy.solve_graph(graph, deadline=deadline)
    assert not searched, searched
    assert deadline.elapsed() <= 1.1 * limit, f"{deadline.elapsed():.1f} s of {limit:.0f}"
    sp.check_topological(graph.order_problem(), solution.layout.order)


def test_a_big_graph_past_its_bound_mark_starts_no_bound_in_the_last_moments(graph, monkeypatch):
    """Sweep mode (a big graph): the bound's problem alone costs seconds (10k
    instructions at a 10 s limit, load 16: 1.6 s from 96% of the limit).  Past
    its mark the bound waits for the top-up, which starts only with
    BOUND_TOP_UP_SHARE of the limit left before the finish reserve."""
    from olla_jax.solve import list_schedule
    _sweep_mode(monkeypatch)
    calls = _bound_calls(monkeypatch)
    clock = FakeClock()
    limit = 10.0
    real_list = list_schedule.best_list_schedule

    def best_list_schedule(*a, **kw):
        clock.spent += 0.43 * limit   # past the bound's mark, short of the finish reserve
        return real_list(*a, **kw)
    monkeypatch.setattr(list_schedule, "best_list_schedule", best_list_schedule)
    deadline = strategy.Deadline(limit, clock=clock)
    clock.spent += 0.5 * limit    # the graph build
    solution = strategy.solve_graph(graph, deadline=deadline)
    assert calls == []
    assert solution.lower_bound_bytes == 0
    sp.check_topological(graph.order_problem(), solution.layout.order)
