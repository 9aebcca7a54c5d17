"""The region-fit live-bytes bound (olla_jax/solve/place_check.region_fit_bound):
at least the plain live-bytes bound, never above a valid placement's arena."""

from __future__ import annotations

import random

from olla_jax.solve.place import best_fit, place_exact, validate_placement
from olla_jax.solve.place_check import live_bytes_bound, region_fit_bound
from olla_jax.solve.problem import Interval, Occupant, PlacementProblem, Region


def test_region_space_a_block_cannot_use_for_its_whole_life_is_not_counted():
    # Region of 128 B; an occupant fills its low 64 B at times 5-10.  The
    # 96 B block lives 0-10: the region has 128 B free at 0-4, 64 B at 5-10,
    # never 96 B for its whole life, so it stays in the arena.  The plain
    # bound counts the region's 64 free bytes at 5-10 as usable: 32 B.
    p = PlacementProblem((Interval(96, 0, 10), Interval(32, 0, 3)),
                         regions=(Region(128, (Occupant(0, 64, 5, 10),)),), alignment=32)
    assert live_bytes_bound(p) == 32
    assert region_fit_bound(p) == 96
    placed = place_exact(p, time_limit_s=1.0, hint=best_fit(p), engine="canonical")
    validate_placement(p, placed)
    assert placed.arena_size == 96


def test_a_block_that_fits_several_regions_counts_once():
    # A (128 B) fits all three regions, B and C (256 B) only the 256 B one:
    # one of B and C stays in the arena.  Summed region by region, the 128 B
    # regions look usable by A twice (bound 128); as a flow, once (256).
    p = PlacementProblem((Interval(128, 0, 4), Interval(256, 0, 4), Interval(256, 0, 4)),
                         regions=(Region(128), Region(128), Region(256)), alignment=64)
    assert live_bytes_bound(p) == 128
    assert region_fit_bound(p) == 256 == best_fit(p).arena_size


def _random(seed: int) -> PlacementProblem:
    rng = random.Random(seed)
    ivs = []
    for _ in range(rng.randint(3, 14)):
        s = rng.randrange(20)
        ivs.append(Interval(64 * rng.randint(1, 6), s, s + rng.randrange(8)))
    regions = []
    for _ in range(rng.randint(0, 3)):
        cap = 64 * rng.randint(1, 8)
        occ = []
        for _ in range(rng.randint(0, 2)):
            s = rng.randrange(20)
            size = 64 * rng.randint(1, max(1, cap // 64 // 2))
            occ.append(Occupant(64 * rng.randrange(max(1, (cap - size) // 64 + 1)), size, s,
                                s + rng.randrange(6)))
        # occupants of one region must not overlap each other in time and bytes
        kept = []
        for o in occ:
            if all(o.end < k.start or k.end < o.start or o.offset + o.size <= k.offset
                   or k.offset + k.size <= o.offset for k in kept):
                kept.append(o)
        regions.append(Region(cap, tuple(kept)))
    return PlacementProblem(tuple(ivs), regions=tuple(regions), alignment=64)


def test_between_the_plain_bound_and_every_placement_on_random_problems():
    tighter = 0
    for seed in range(150):
        p = _random(seed)
        bound = region_fit_bound(p)
        assert bound >= live_bytes_bound(p), seed
        placed = best_fit(p)
        validate_placement(p, placed)
        assert bound <= placed.arena_size, seed
        if bound > live_bytes_bound(p) and tighter < 8:
            exact = place_exact(p, time_limit_s=0.2, hint=placed, engine="canonical")
            validate_placement(p, exact)
            assert bound <= exact.arena_size, seed
            tighter += 1
    assert tighter > 0      # the cases the bound is about do occur
