"""Placement: greedy validity, exact optimality on tiny cases, the self-check."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from olla_jax.solve.place import (best_fit, live_bytes_bound, place, place_exact,
                                  validate_placement)
from olla_jax.solve.problem import (ARENA, Interval, Occupant, Placement, PlacementProblem,
                                    Region)


# --------------------------------------------------------------------------
# generators and an independent brute force


@st.composite
def placement_problems(draw, max_intervals: int = 12, max_regions: int = 2, groups: bool = True,
                       aligned_occupants: bool = False):
    a = draw(st.sampled_from([1, 4, 64]))
    n = draw(st.integers(0, max_intervals))
    ivs = []
    for _ in range(n):
        start = draw(st.integers(0, 20))
        ivs.append(Interval(draw(st.integers(0, 300)), start, start + draw(st.integers(0, 8))))
    regions = []
    for _ in range(draw(st.integers(0, max_regions))):
        cap = draw(st.integers(0, 600))
        occ = []
        for _ in range(draw(st.integers(0, 2))):
            off = draw(st.integers(0, 500))
            if aligned_occupants:
                off -= off % a
            s = draw(st.integers(0, 28))
            occ.append(Occupant(off, draw(st.integers(1, 200)), s, s + draw(st.integers(0, 6))))
        regions.append(Region(cap, tuple(occ)))
    same = ()
    if groups and n >= 2 and draw(st.booleans()):
        k = draw(st.integers(2, min(3, n)))
        same = (tuple(draw(st.permutations(range(n)))[:k]),)
    return PlacementProblem(tuple(ivs), tuple(regions), a, same)


def _blocks(p: PlacementProblem):
    grouped = {i for g in p.same_offset for i in g}
    return [tuple(g) for g in p.same_offset] + [(i,) for i in range(len(p.intervals)) if i not in grouped]


def _meet(x: Interval | Occupant, y: Interval | Occupant) -> bool:
    return x.start <= y.end and y.start <= x.end


def _first_fit(p: PlacementProblem, blocks, where, perm) -> int | None:
    """Place blocks in ``perm`` order at the lowest aligned offset that is free;
    None if a region block does not fit.  Returns the arena size."""
    offs: dict[int, int] = {}
    arena = 0
    for b in perm:
        members = [p.intervals[i] for i in blocks[b]]
        size = max(m.size for m in members)
        if size == 0:
            offs[b] = 0
            continue
        obstacles = [(offs[c], offs[c] + max(p.intervals[i].size for i in blocks[c]))
                     for c in offs if where[c] == where[b]
                     and any(_meet(m, p.intervals[i]) for m in members for i in blocks[c])]
        if where[b] != ARENA:
            obstacles += [(o.offset, o.offset + o.size) for o in p.regions[where[b]].occupants
                          if o.size and any(_meet(m, o) for m in members)]
        cands = sorted({0, *(-(-hi // p.alignment) * p.alignment for _, hi in obstacles)})
        off = next(c for c in cands if all(c + size <= lo or c >= hi for lo, hi in obstacles))
        if where[b] != ARENA and off + size > p.regions[where[b]].capacity:
            return None
        offs[b] = off
        if where[b] == ARENA:
            arena = max(arena, off + size)
    return arena


def brute_force_arena(p: PlacementProblem) -> int:
    """Least arena over every location choice and every first-fit order (some
    order of an optimal packing pushed down reproduces it)."""
    blocks = _blocks(p)
    best = None
    for where in itertools.product([ARENA, *range(len(p.regions))], repeat=len(blocks)):
        for perm in itertools.permutations(range(len(blocks))):
            arena = _first_fit(p, blocks, where, perm)
            if arena is not None and (best is None or arena < best):
                best = arena
    return best


def naive_valid(p: PlacementProblem, pl: Placement) -> bool:
    """An O(n^2) restatement of validity, to test the sweep in validate_placement."""
    a, ivs = p.alignment, p.intervals
    group = {i: g for g, m in enumerate(p.same_offset) for i in m}
    for i, iv in enumerate(ivs):
        r, o = pl.region[i], pl.offset[i]
        if o < 0 or o % a or (r != ARENA and not 0 <= r < len(p.regions)):
            return False
        if iv.size and o + iv.size > (pl.arena_size if r == ARENA else p.regions[r].capacity):
            return False
        if r != ARENA and iv.size:
            for occ in p.regions[r].occupants:
                if occ.size and _meet(iv, occ) and o < occ.offset + occ.size and occ.offset < o + iv.size:
                    return False
    for m in p.same_offset:
        if len({(pl.region[i], pl.offset[i]) for i in m}) > 1:
            return False
    for i, j in itertools.combinations(range(len(ivs)), 2):
        if group.get(i, -1 - i) == group.get(j, -1 - j) or not ivs[i].size or not ivs[j].size:
            continue
        if pl.region[i] == pl.region[j] and _meet(ivs[i], ivs[j]) and \
                pl.offset[i] < pl.offset[j] + ivs[j].size and pl.offset[j] < pl.offset[i] + ivs[i].size:
            return False
    return True


# --------------------------------------------------------------------------
# greedy and place


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(placement_problems(max_intervals=30))
def test_best_fit_is_always_valid_and_above_the_bound(p):
    for order in ("size", "start", "area", "duration"):
        pl = best_fit(p, orders=(order,))
        validate_placement(p, pl)
        assert naive_valid(p, pl)
        assert pl.arena_size >= live_bytes_bound(p)
    both = best_fit(p)
    assert both.arena_size == min(best_fit(p, orders=(o,)).arena_size
                                  for o in ("size", "start", "area", "duration"))


@settings(max_examples=40, deadline=None)
@given(placement_problems(max_intervals=5, max_regions=1))
def test_bound_and_greedy_bracket_the_brute_force_optimum(p):
    opt = brute_force_arena(p)
    assert live_bytes_bound(p) <= opt <= best_fit(p).arena_size


@settings(max_examples=40, deadline=None)
@given(placement_problems(max_intervals=5, max_regions=1, aligned_occupants=True))
def test_cpsat_reaches_the_brute_force_optimum(p):
    pl = place_exact(p, time_limit_s=20.0, engine="cpsat")
    validate_placement(p, pl)
    assert pl.arena_size == brute_force_arena(p)


@pytest.mark.parametrize("engine", ["cpsat", "ilp-cbc"])
def test_occupants_that_overlap_each_other_leave_the_optimum_reachable(engine):
    # The two occupants share bytes [330, 332) at time 7, as a buffer handed
    # on in place does; the optimum puts intervals 1 and 2 in the region.
    ivs = (Interval(0, 0, 0), Interval(4, 0, 8), Interval(277, 8, 16), Interval(185, 20, 28),
           Interval(54, 4, 12))
    region = Region(436, (Occupant(135, 197, 1, 7), Occupant(330, 200, 7, 13)))
    p = PlacementProblem(ivs, (region,), 1)
    pl = place_exact(p, time_limit_s=20.0, engine=engine)
    validate_placement(p, pl)
    assert pl.arena_size == brute_force_arena(p) == 54


def test_cpsat_returns_a_placement_when_every_block_may_use_many_regions():
    # Like a training step: 200 output regions, each written only at the end,
    # may hold any of 400 temporaries before.  Probing every region literal
    # once used the whole time limit, and CP-SAT returned nothing.
    from olla_jax.solve.place_engines import solve_cpsat
    from olla_jax.solve.place_model import build_model

    rng = np.random.default_rng(0)
    ivs = []
    for s in rng.integers(0, 700, 400).tolist():
        ivs.append(Interval(int(rng.integers(1, 64)) * 4096, s, s + int(rng.integers(1, 40))))
    caps = (rng.integers(16, 128, 200) * 4096).tolist()
    regions = tuple(Region(c, (Occupant(0, c, 650 + k % 50, 800),)) for k, c in enumerate(caps))
    p = PlacementProblem(tuple(ivs), regions, 64)
    hint = best_fit(p)
    found = solve_cpsat(build_model(p), hint, 5.0)
    assert found is not None
    validate_placement(p, found)
    assert found.arena_size <= hint.arena_size


@pytest.mark.parametrize("engine", ["ilp-highs", "ilp-cbc"])
def test_ilp_reaches_the_brute_force_optimum(engine):
    if engine == "ilp-highs":
        pytest.importorskip("highsbox", reason="python-mip finds HiGHS through highsbox")
    rng = np.random.default_rng(7)
    ivs = tuple(Interval(int(rng.integers(1, 9)) * 64, int(s), int(s) + int(rng.integers(0, 4)))
                for s in rng.integers(0, 6, 6))
    region = Region(256, (Occupant(128, 64, 0, 2),))
    p = PlacementProblem(ivs, (region,), 64, ((0, 5),))
    opt = brute_force_arena(p)
    # a deliberately poor start: everything stacked in the arena
    stack, top = [], 0
    for iv in ivs:
        stack.append(top)
        top += iv.size
    stack[5] = stack[0]
    hint = Placement(tuple([ARENA] * 6), tuple(stack), max(o + iv.size for o, iv in zip(stack, ivs)))
    validate_placement(p, hint)
    assert hint.arena_size > opt
    pl = place_exact(p, time_limit_s=20.0, engine=engine, hint=hint)
    validate_placement(p, pl)
    assert pl.arena_size == opt


def test_exact_engine_is_never_worse_than_the_hint():
    rng = np.random.default_rng(3)
    ivs = tuple(Interval(int(rng.integers(1, 50)) * 64, int(s), int(s) + int(rng.integers(0, 30)))
                for s in rng.integers(0, 100, 120))
    p = PlacementProblem(ivs)
    hint = best_fit(p)
    pl = place_exact(p, time_limit_s=0.5, engine="cpsat", hint=hint)
    validate_placement(p, pl)
    assert pl.arena_size <= hint.arena_size


@settings(max_examples=30, deadline=None)
@given(placement_problems(max_intervals=15))
def test_place_is_valid_and_not_worse_than_best_fit(p):
    pl = place(p, time_limit_s=2.0)
    validate_placement(p, pl)
    assert live_bytes_bound(p) <= pl.arena_size <= best_fit(p).arena_size


def test_regions_absorb_intervals_when_they_fit():
    ivs = (Interval(100, 0, 5), Interval(100, 3, 8), Interval(50, 0, 9))
    idle = Region(128, (Occupant(0, 64, 6, 9),))       # free at bytes [0,128) until time 5
    p = PlacementProblem(ivs, (idle,), 1)
    pl = best_fit(p)
    validate_placement(p, pl)
    assert pl.region[0] == 0 and pl.arena_size == 150
    # at times 3..5: 250 bytes live, the region can take at most 128 of them
    assert live_bytes_bound(p) == 250 - 128


def test_same_offset_group_shares_one_offset():
    ivs = (Interval(64, 0, 1), Interval(128, 5, 6), Interval(64, 0, 6))
    p = PlacementProblem(ivs, alignment=64, same_offset=((0, 1),))
    pl = best_fit(p)
    validate_placement(p, pl)
    assert pl.offset[0] == pl.offset[1] and pl.arena_size == 192


# --------------------------------------------------------------------------
# the self-check


def _p():
    return PlacementProblem((Interval(64, 0, 4), Interval(64, 4, 8), Interval(64, 9, 9)),
                            (Region(128, (Occupant(0, 64, 0, 9),)),), 64, ((1, 2),))


@pytest.mark.parametrize("placement, message", [
    (Placement((ARENA, ARENA, ARENA), (0, 0, 0), 64), "intervals 0 and 1 overlap in the arena"),
    (Placement((ARENA, ARENA, ARENA), (0, 96, 96), 160), "not a multiple of the alignment 64"),
    (Placement((ARENA, ARENA, ARENA), (0, 64, 64), 64), "past the arena size 64"),
    (Placement((0, ARENA, ARENA), (0, 64, 64), 128), "overlaps occupant 0 of region 0"),
    (Placement((0, ARENA, ARENA), (128, 64, 64), 128), "past the region 0's capacity 128"),
    (Placement((ARENA, ARENA, ARENA), (0, 64, 128), 192), "same_offset group 0"),
    (Placement((ARENA, 3, 3), (0, 0, 0), 64), "region 3, which does not exist"),
    (Placement((ARENA, ARENA), (0, 0), 64), "for 3 intervals"),
])
def test_validate_rejects_with_a_clear_message(placement, message):
    with pytest.raises(ValueError, match=message):
        validate_placement(_p(), placement)


def test_validate_accepts_a_good_placement():
    validate_placement(_p(), Placement((ARENA, 0, 0), (0, 64, 64), 64))


def test_malformed_problems_are_rejected():
    with pytest.raises(ValueError, match="ends .* before it starts"):
        best_fit(PlacementProblem((Interval(8, 5, 4),)))
    with pytest.raises(ValueError, match="groups 0 and 1"):
        best_fit(PlacementProblem((Interval(8, 0, 1), Interval(8, 0, 1)), same_offset=((0, 1), (1,))))
    with pytest.raises(ValueError, match="unknown placement engine"):
        place_exact(PlacementProblem(()), time_limit_s=1, engine="gurobi")


@settings(max_examples=300, deadline=None)
@given(placement_problems(max_intervals=10), st.data())
def test_validate_agrees_with_a_naive_check(p, data):
    n = len(p.intervals)
    places = [ARENA, *range(len(p.regions))]
    a = p.alignment
    region = tuple(data.draw(st.sampled_from(places)) for _ in range(n))
    offset = tuple(a * data.draw(st.integers(0, 600 // a)) for _ in range(n))
    if p.same_offset and data.draw(st.booleans()):
        g = p.same_offset[0]
        region = tuple(region[g[0]] if i in g else r for i, r in enumerate(region))
        offset = tuple(offset[g[0]] if i in g else o for i, o in enumerate(offset))
    arena = max([o + iv.size for o, iv, r in zip(offset, p.intervals, region) if r == ARENA], default=0)
    pl = Placement(region, offset, arena)
    try:
        validate_placement(p, pl)
        ok = True
    except ValueError:
        ok = False
    assert ok == naive_valid(p, pl)
