"""The canonical placement search: exact on small cases, valid, on time, and
fast enough on a MiniMalloc benchmark instance."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from olla_jax.placement import place as place_buffers
from olla_jax.solve.csv_io import CapacityError, read_csv
from olla_jax.solve.place import best_fit, live_bytes_bound, place, place_exact, validate_placement
from olla_jax.solve.place_canonical import _Ordered, solve_canonical
from olla_jax.solve.place_model import build_model
from olla_jax.solve.problem import ARENA, Interval, Occupant, Placement, PlacementProblem, Region
from tests.solve.test_place import brute_force_arena, naive_valid, placement_problems

DATA = Path(__file__).resolve().parents[2] / "benchmarks" / "data" / "minimalloc"


def _stacked(p: PlacementProblem) -> Placement:
    """A poor start: every interval on top of the previous one (groups share one offset)."""
    a, top, offs = p.alignment, 0, {}
    group = {i: g for g, members in enumerate(p.same_offset) for i in members}
    offset = []
    for i, iv in enumerate(p.intervals):
        key = ("g", group[i]) if i in group else ("i", i)
        if key not in offs:
            members = p.same_offset[group[i]] if i in group else (i,)
            offs[key] = top
            top += -(-max(p.intervals[j].size for j in members) // a) * a
        offset.append(offs[key])
    arena = max([o + iv.size for o, iv in zip(offset, p.intervals) if iv.size], default=0)
    return Placement(tuple([ARENA] * len(offset)), tuple(offset), arena)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(placement_problems(max_intervals=5, max_regions=0))
def test_reaches_the_brute_force_optimum_from_a_poor_start(p):
    hint = _stacked(p)
    validate_placement(p, hint)
    result = solve_canonical(build_model(p), hint, 20.0)
    validate_placement(p, result.placement)
    assert naive_valid(p, result.placement)
    assert result.optimal
    assert result.placement.arena_size == brute_force_arena(p)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(placement_problems(max_intervals=25, max_regions=2))
def test_place_exact_is_valid_and_never_worse_than_best_fit(p):
    # With regions: the search keeps best-fit's region choices, places the arena.
    pl = place_exact(p, time_limit_s=0.5, engine="canonical")
    validate_placement(p, pl)
    assert naive_valid(p, pl)
    assert live_bytes_bound(p) <= pl.arena_size <= best_fit(p).arena_size


def _tiling(rng: random.Random, n: int, horizon: int, height: int) -> list[Interval]:
    """Cut the rectangle [0, horizon) x [0, height) into n pieces: a perfect
    packing exists by construction, at the live-bytes bound."""
    rects = [(0, horizon, 0, height)]
    while len(rects) < n:
        k = rng.randrange(len(rects))
        t0, t1, o0, o1 = rects[k]
        if rng.random() < 0.5 and t1 - t0 > 1:
            c = rng.randint(t0 + 1, t1 - 1)
            rects[k:k + 1] = [(t0, c, o0, o1), (c, t1, o0, o1)]
        elif o1 - o0 > 1:
            c = rng.randint(o0 + 1, o1 - 1)
            rects[k:k + 1] = [(t0, t1, o0, c), (t0, t1, c, o1)]
    ivs = [Interval(o1 - o0, t0, t1 - 1) for t0, t1, o0, o1 in rects]
    rng.shuffle(ivs)
    return ivs


@pytest.mark.parametrize("seed", range(5))
def test_finds_the_perfect_packing_of_a_cut_rectangle(seed):
    p = PlacementProblem(tuple(_tiling(random.Random(seed), 30, 60, 1000)), alignment=1)
    result = solve_canonical(build_model(p), best_fit(p), 10.0, target=1000)
    validate_placement(p, result.placement)
    assert result.placement.arena_size == 1000


def test_proves_that_a_tiny_capacity_cannot_be_met():
    # Two live buffers of 1 byte at alignment 2 need 3 bytes; the live-bytes bound says 2.
    p = PlacementProblem((Interval(1, 0, 1), Interval(1, 1, 2)), alignment=2)
    assert live_bytes_bound(p) == 2
    result = solve_canonical(build_model(p), _stacked(p), 5.0, target=2)
    assert result.infeasible and result.placement.arena_size == 3
    with pytest.raises(CapacityError, match="do not fit in capacity 2"):
        place_buffers([(0, 2, 1), (1, 3, 1)], capacity=2, alignment=2, time_limit_s=2.0)


def test_same_offset_groups_and_alignment_are_kept():
    ivs = (Interval(64, 0, 1), Interval(128, 5, 6), Interval(64, 0, 6), Interval(100, 2, 4))
    p = PlacementProblem(ivs, alignment=64, same_offset=((0, 1),))
    result = solve_canonical(build_model(p), _stacked(p), 5.0)
    validate_placement(p, result.placement)
    assert result.optimal and result.placement.arena_size == brute_force_arena(p) == 192


def test_respects_its_deadline():
    rng = random.Random(0)
    ivs = []
    for _ in range(600):
        s = rng.randrange(300)
        ivs.append(Interval(rng.randrange(1, 200) * 64, s, s + rng.randrange(1, 60)))
    p = PlacementProblem(tuple(ivs), alignment=64)
    hint = best_fit(p)
    t0 = time.monotonic()
    result = solve_canonical(build_model(p), hint, 0.5)
    assert time.monotonic() - t0 < 2.0
    validate_placement(p, result.placement)
    assert result.placement.arena_size <= hint.arena_size


def test_fits_minimalloc_instance_a_in_a_few_seconds():
    problem = read_csv(DATA / "A.1048576.csv").problem
    buffers = [(iv.start, iv.end + 1, iv.size) for iv in problem.intervals]
    assert best_fit(problem).arena_size > 1048576          # best-fit alone does not fit
    t0 = time.monotonic()
    placement = place_buffers(buffers, capacity=1048576, time_limit_s=10.0)
    assert time.monotonic() - t0 < 5.0
    validate_placement(problem, placement)
    assert placement.arena_size <= 1048576


def test_place_uses_the_canonical_search_by_default():
    p = PlacementProblem(tuple(_tiling(random.Random(0), 40, 80, 512)), alignment=1)
    assert best_fit(p).arena_size > 512
    assert place(p, time_limit_s=10.0).arena_size == 512


def test_a_capacity_not_met_still_reports_a_lowered_arena():
    # Below the live-bytes bound nothing fits; the time left after looking for
    # a fit lowers the arena that CapacityError reports below best-fit's.
    problem = read_csv(DATA / "E.1048576.csv").problem
    buffers = [(iv.start, iv.end + 1, iv.size) for iv in problem.intervals]
    capacity = live_bytes_bound(problem) - 1
    with pytest.raises(CapacityError) as err:
        place_buffers(buffers, capacity=capacity, time_limit_s=2.0)
    assert err.value.bound > capacity
    assert err.value.best < best_fit(problem).arena_size


def _dive(search, cap: int, heuristic: str):
    """Run an ordered-search dive to its end: the offsets, or None."""
    gen = search.dive(cap, heuristic)
    try:
        while True:
            next(gen)
    except StopIteration as stop:
        return stop.value


def _ordered(p: PlacementProblem):
    model = build_model(p)
    live = [b for b, blk in enumerate(model.blocks) if blk.size > 0]
    local = {b: i for i, b in enumerate(live)}
    conf = [np.array([local[j] for j in model.conflicts[b].tolist() if j in local], dtype=np.int64)
            for b in live]
    search = _Ordered(np.array([model.blocks[b].size for b in live], dtype=np.int64),
                      [model.blocks[b].segments for b in live], conf, p.alignment)
    return model, live, search


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(placement_problems(max_intervals=5, max_regions=0), st.sampled_from(("TWA", "WAT", "ZAW")))
def test_the_ordered_search_decides_each_capacity_like_brute_force(p, heuristic):
    # At the optimum it finds a valid placement; one byte below it proves there is none.
    best = brute_force_arena(p)
    model, live, search = _ordered(p)
    if not live:
        return
    found = _dive(search, best, heuristic)
    assert found is not None
    offset = [0] * len(model.blocks)
    for i, b in enumerate(live):
        offset[b] = int(found[i])
    placement = model.to_placement([ARENA] * len(model.blocks), offset)
    validate_placement(p, placement)
    assert naive_valid(p, placement) and placement.arena_size <= best
    assert _dive(search, best - 1, heuristic) is None


def test_the_ordered_search_fits_minimalloc_instance_k():
    # The section search alone did not fit K in 10 s; one ordered dive does.
    p = read_csv(DATA / "K.1048576.csv").problem
    model, live, search = _ordered(p)
    found = _dive(search, 1048576, "TWA")
    assert found is not None
    placement = model.to_placement([ARENA] * len(model.blocks), [int(x) for x in found])
    validate_placement(p, placement)
    assert placement.arena_size <= 1048576 < best_fit(p).arena_size


def _region_helps() -> tuple[PlacementProblem, Placement]:
    """Two long buffers, one idle region that holds either, and a hint with
    both in the arena: only a move into the region halves the arena."""
    p = PlacementProblem((Interval(256, 0, 9), Interval(256, 0, 9)),
                         regions=(Region(256, (Occupant(0, 256, 12, 14),)),), alignment=64)
    hint = Placement((ARENA, ARENA), (0, 256), 512)
    validate_placement(p, hint)
    return p, hint


def test_auto_and_canonical_move_blocks_into_regions():
    # The canonical search keeps region choices, but tries them improved at
    # the arena's peak (place_regions) first; auto has CP-SAT besides.
    p, hint = _region_helps()
    assert place_exact(p, time_limit_s=1.0, engine="canonical", hint=hint).arena_size == 256
    import ortools.sat.python.cp_model  # noqa: F401  (its first import is not the engine's time)
    t0 = time.monotonic()
    pl = place_exact(p, time_limit_s=1.0, hint=hint)          # the default: auto
    assert time.monotonic() - t0 < 3.0
    validate_placement(p, pl)
    assert naive_valid(p, pl) and pl.arena_size == 256 and ARENA in pl.region and 0 in pl.region


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(placement_problems(max_intervals=4, max_regions=2))
def test_auto_is_exact_with_regions_on_small_cases(p):
    # Regions, occupants, alignment and same_offset groups: the default engine
    # reaches the brute-force optimum over every location choice.
    pl = place_exact(p, time_limit_s=2.0)
    validate_placement(p, pl)
    assert naive_valid(p, pl)
    assert pl.arena_size == brute_force_arena(p)


def test_auto_respects_its_time_limit_with_regions():
    rng = random.Random(1)
    ivs = []
    for _ in range(300):
        s = rng.randrange(150)
        ivs.append(Interval(rng.randrange(1, 200) * 64, s, s + rng.randrange(1, 40)))
    regions = (Region(64 * 300, (Occupant(0, 64 * 100, 40, 80),)), Region(64 * 150))
    p = PlacementProblem(tuple(ivs), regions=regions, alignment=64)
    hint = best_fit(p)
    import ortools.sat.python.cp_model  # noqa: F401  (its first import is not the engine's time)
    t0 = time.monotonic()
    pl = place_exact(p, time_limit_s=1.0, hint=hint)
    assert time.monotonic() - t0 < 3.0
    validate_placement(p, pl)
    assert pl.arena_size <= hint.arena_size
