"""Region choices improved at the arena's peak (olla_jax/solve/place_regions.py)."""

from __future__ import annotations

import random
import time


from olla_jax.solve.place import best_fit, place_exact, validate_placement
from olla_jax.solve.place_model import build_model
from olla_jax.solve.place_regions import arena_profile, improve_regions
from olla_jax.solve.problem import ARENA, Interval, Occupant, Placement, PlacementProblem, Region


def _peak(model, placement) -> int:
    horizon = max(b.end for b in model.blocks) + 1
    return int(arena_profile(model, model.from_placement(placement)[0], horizon).max())


def test_a_block_off_the_peak_makes_room_for_one_on_it():
    # The region (256 B) holds block 0 (times 0-5); blocks 1 (4-9) and 2
    # (6-9) and a small one (0-9) are in the arena: peak 576 at 6-9.  Block 1
    # fits in the region only once block 0 leaves, and block 0 in the arena
    # stays below the peak: after the swap the peak is 320.
    p = PlacementProblem((Interval(256, 0, 5), Interval(256, 4, 9), Interval(256, 6, 9),
                          Interval(64, 0, 9)), regions=(Region(256),), alignment=64)
    hint = Placement((0, ARENA, ARENA, ARENA), (0, 64, 320, 0), 576)
    validate_placement(p, hint)
    model = build_model(p)
    assert _peak(model, hint) == 576
    got = improve_regions(model, hint, time.monotonic() + 5)
    validate_placement(p, got)
    assert _peak(model, got) == 320 and got.region[0] == ARENA and 0 in got.region[1:3]


def _random(seed: int) -> PlacementProblem:
    rng = random.Random(seed)
    ivs = []
    for _ in range(rng.randint(5, 25)):
        s = rng.randrange(30)
        ivs.append(Interval(rng.randrange(1, 8) * 64, s, s + rng.randrange(0, 10)))
    regions = tuple(Region(rng.randrange(1, 8) * 64,
                           tuple(Occupant(0, 64, t, t + 2) for t in rng.sample(range(30), 2)))
                    for _ in range(rng.randint(1, 4)))
    return PlacementProblem(tuple(ivs), regions=regions, alignment=64)


def test_the_peak_never_rises_and_placements_stay_valid():
    lowered = 0
    for seed in range(60):
        p = _random(seed)
        model = build_model(p)
        start = best_fit(p)
        got = improve_regions(model, start, time.monotonic() + 5)
        validate_placement(p, got)
        assert _peak(model, got) <= _peak(model, start)
        lowered += _peak(model, got) < _peak(model, start)
        exact = place_exact(p, time_limit_s=0.5, engine="canonical", hint=start)
        validate_placement(p, exact)
        assert exact.arena_size <= start.arena_size
    assert lowered > 0
