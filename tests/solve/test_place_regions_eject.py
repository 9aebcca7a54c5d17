"""Ejection chains of the region pass (olla_jax/solve/place_regions.py): the
blocks in a region window's way move into other regions so that a block at
the arena's peak can take the window."""

from __future__ import annotations

import random
import time

from olla_jax.solve.place import best_fit, validate_placement
from olla_jax.solve.place_model import build_model
from olla_jax.solve.place_regions import arena_profile, improve_regions
from olla_jax.solve.problem import ARENA, Interval, Occupant, Placement, PlacementProblem, Region


def _peak(model, placement) -> int:
    horizon = max(b.end for b in model.blocks) + 1
    return int(arena_profile(model, model.from_placement(placement)[0], horizon).max())


def _chain_problem() -> tuple[PlacementProblem, Placement]:
    # Region 0 (256 B) holds blocks 0 and 2 (64 B each, times 0-9); region 1
    # (128 B) is idle.  Block 1 (256 B, times 4-6) is in the arena: peak 256.
    # It fits region 0 only once both blocks there have left (one leaving,
    # the only eviction there was, is not enough): both go to region 1.
    p = PlacementProblem((Interval(64, 0, 9), Interval(256, 4, 6), Interval(64, 0, 9)),
                         regions=(Region(256), Region(128)), alignment=64)
    hint = Placement((0, ARENA, 0), (0, 0, 64), 256)
    validate_placement(p, hint)
    return p, hint


def test_the_blocks_in_the_way_move_to_another_region():
    p, hint = _chain_problem()
    model = build_model(p)
    assert _peak(model, hint) == 256
    got = improve_regions(model, hint, time.monotonic() + 5)
    validate_placement(p, got)
    assert _peak(model, got) == 0
    assert got.region == (1, 0, 1)


def test_no_chain_through_an_occupant():
    # As above, but an occupant of region 0 (times 5-5, bytes 128-191) is in
    # the window's way: block 1 cannot take region 0 whatever moves.
    p, hint = _chain_problem()
    p = PlacementProblem(p.intervals, regions=(Region(256, (Occupant(128, 64, 5, 5),)),
                                                Region(64)), alignment=64)
    validate_placement(p, hint)
    model = build_model(p)
    got = improve_regions(model, hint, time.monotonic() + 5)
    validate_placement(p, got)
    assert got.region[1] == ARENA


def _random(seed: int) -> PlacementProblem:
    # Many regions of a few equal sizes, as output allocations are.
    rng = random.Random(seed)
    ivs = []
    for _ in range(rng.randint(8, 30)):
        s = rng.randrange(40)
        ivs.append(Interval(rng.choice((1, 1, 2, 4)) * 64, s, s + rng.randrange(0, 25)))
    regions = []
    for _ in range(rng.randint(2, 6)):
        occ = tuple(Occupant(0, 64, t, t + 1) for t in rng.sample(range(40), rng.randint(0, 1)))
        regions.append(Region(rng.choice((1, 2, 4)) * 64, occ))
    return PlacementProblem(tuple(ivs), regions=tuple(regions), alignment=64)


def test_random_problems_stay_valid_and_the_peak_never_rises():
    for seed in range(40):
        p = _random(seed)
        model = build_model(p)
        start = best_fit(p)
        got = improve_regions(model, start, time.monotonic() + 5)
        validate_placement(p, got)
        assert _peak(model, got) <= _peak(model, start)
