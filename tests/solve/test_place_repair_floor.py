"""solve_graph's placement repair (olla_jax/strategy.py ``_repair``) judges
each order by what its placement problem allows (the region-fit bound), not
by its live bytes under the order objective; and ``place_exact(floor=...)``
stops there.  Synthetic candidates and a recording exact engine: no graph,
no search."""

from __future__ import annotations

import dataclasses

from olla_jax import strategy
from olla_jax.solve import place as place_lib
from olla_jax.solve import place_check
from olla_jax.solve import problem as sp


def _problem(*sizes_spans, regions=()) -> sp.PlacementProblem:
    return sp.PlacementProblem(intervals=tuple(sp.Interval(z, s, e) for z, s, e in sizes_spans),
                               regions=tuple(regions), alignment=1)


def _stacked(problem: sp.PlacementProblem, arena: int) -> sp.Placement:
    """Every interval at offset 0 of the arena, reported with ``arena`` bytes
    (the repair reads only the arena size)."""
    n = len(problem.intervals)
    return sp.Placement((sp.ARENA,) * n, (0,) * n, arena)


def _candidate(order, problem, arena, live) -> strategy.Candidate:
    return strategy.Candidate(order, f"order{order[0]}", _stacked(problem, arena),
                              tuple(range(len(problem.intervals))), problem, live)


def _repair(monkeypatch, candidates, live, bound=0, xla_temp=None):
    """``_repair`` over ``candidates`` (all placed), with an exact engine that
    reaches the floor it is given; returns (best, tried, the problems the
    engine got, in order)."""
    calls = []

    def place_exact(problem, *, time_limit_s, hint, engine, floor=None, **kw):
        calls.append(problem)
        return dataclasses.replace(hint, arena_size=floor if floor is not None else
                                   place_check.live_bytes_bound(problem))
    monkeypatch.setattr(place_lib, "place_exact", place_exact)
    clock = strategy.Deadline(10.0)
    cost = strategy._Cost(clock.clock)
    cost.measured = True
    placed = {c.order: c for c in candidates}
    best = min(candidates, key=lambda c: c.placement.arena_size)
    found, tried = strategy._repair(None, best, placed, [], live, bound, xla_temp, clock, cost)
    return found, tried, calls


def test_the_order_with_the_lower_floor_gets_the_exact_engine_first(monkeypatch):
    """Two orders tie on the order objective; the one placed first (arena 260)
    cannot go below 200, the other (arena 250) can reach 150: only the second
    gets the exact engine (the first's floor is above what the second reached)."""
    high = _problem((100, 0, 3), (100, 1, 4))    # two live at once: 200
    low = _problem((100, 0, 3), (50, 1, 4))      # 150
    a, b = _candidate((0,), high, 260, 10), _candidate((1,), low, 250, 10)
    found, tried, calls = _repair(monkeypatch, [a, b], {a.order: 10, b.order: 10})
    assert tried
    assert calls == [low]
    assert found.order == b.order and found.placement.arena_size == 150


def test_an_order_whose_region_fit_bound_meets_its_arena_is_left_alone(monkeypatch):
    """An 80-byte block cannot use the region's 100 bytes (an occupant holds
    60 of them at its start): the live-bytes bound (120) lets the region take
    40 bytes, the region-fit bound (160) does not; the arena is 160.  The
    order objective says 10 bytes: the old repair ran the exact engine."""
    region = sp.Region(100, (sp.Occupant(0, 60, 0, 0),))
    problem = _problem((80, 0, 5), (80, 0, 5), regions=[region])
    assert place_check.live_bytes_bound(problem) < 160 == place_check.region_fit_bound(problem)
    cand = _candidate((0,), problem, 160, 10)
    found, tried, calls = _repair(monkeypatch, [cand], {cand.order: 10})
    assert not tried and not calls
    assert found is cand


def test_place_exact_stops_at_the_floor_it_is_given():
    """With a floor at best-fit's own arena the hint comes back as it is (no
    search); below it, the result never goes under the floor's true bound."""
    problem = _problem((64, 0, 3), (64, 1, 4), (64, 2, 5), (128, 4, 7), (64, 6, 8))
    hint = place_lib.best_fit(problem)
    assert place_lib.place_exact(problem, time_limit_s=1.0, hint=hint, engine="canonical",
                                 floor=hint.arena_size) is hint
    found = place_lib.place_exact(problem, time_limit_s=1.0, hint=hint, engine="canonical",
                                  floor=place_check.live_bytes_bound(problem))
    place_lib.validate_placement(problem, found)
    assert found.arena_size >= place_check.live_bytes_bound(problem)


def test_a_lone_order_gets_all_the_time_and_what_it_leaves(monkeypatch):
    """One order to repair (nothing else could beat it): its exact placement
    gets all the time to the finish, not EXACT_PLACEMENT_SHARE of it kept
    for others; one that ends early above its floor goes on from its result
    in what it left."""
    problem = _problem((100, 0, 3), (50, 1, 4))       # floor 150
    cand = _candidate((0,), problem, 260, 10)
    budgets, hints = [], []

    def place_exact(problem, *, time_limit_s, hint, engine, floor=None, **kw):
        budgets.append(time_limit_s)
        hints.append(hint.arena_size)
        return dataclasses.replace(hint, arena_size=hint.arena_size - 10)   # short of the floor
    monkeypatch.setattr(place_lib, "place_exact", place_exact)
    clock = strategy.Deadline(10.0)
    cost = strategy._Cost(clock.clock)
    cost.measured = True
    found, tried = strategy._repair(None, cand, {cand.order: cand}, [], {cand.order: 10}, 0,
                                    None, clock, cost)
    finish = (1 - strategy.FINISH_RESERVE) * 10.0
    assert tried and len(budgets) == 2
    assert budgets[0] > 0.9 * finish
    assert hints == [260, 250] and found.placement.arena_size == 240
