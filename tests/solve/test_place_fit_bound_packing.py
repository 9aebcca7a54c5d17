"""region_fit_bound's regions take at most what some of the blocks live then
sum to (place_check._packable), not every free byte."""

from __future__ import annotations

import random

import numpy as np

from olla_jax.solve import place_check
from olla_jax.solve.place import best_fit, validate_placement
from olla_jax.solve.place_check import live_bytes_bound, region_fit_bound
from olla_jax.solve.problem import Interval, PlacementProblem, Region

MIB = 1 << 20


def test_a_region_takes_only_whole_blocks():
    # unet small's case: a 2.25 MiB region among blocks of 2, 1 and 1 MiB
    # live at once takes 2 MiB of them, never 2.25: the arena holds 2 MiB.
    p = PlacementProblem((Interval(2 * MIB, 0, 4), Interval(MIB, 0, 4), Interval(MIB, 2, 6)),
                         regions=(Region(2 * MIB + MIB // 4),), alignment=64)
    assert live_bytes_bound(p) == 4 * MIB - (2 * MIB + MIB // 4)
    assert region_fit_bound(p) == 2 * MIB == best_fit(p).arena_size


def test_subset_sum_by_binary_splitting():
    sizes = np.array([3, 5, 7], dtype=np.int64)
    assert place_check._subset_sum(sizes, np.array([2, 1, 1]), 16) == 15.0   # 3 + 5 + 7
    assert place_check._subset_sum(sizes, np.array([2, 1, 1]), 13) == 13.0   # 3 + 3 + 7
    assert place_check._subset_sum(np.array([4, 6]), np.array([3, 2]), 11) == 10.0
    assert place_check._subset_sum(np.array([1000]), np.array([5]), 3500) == 3000.0


def _random(seed: int) -> PlacementProblem:
    rng = random.Random(seed)
    ivs = []
    for _ in range(rng.randint(3, 12)):
        s = rng.randrange(12)
        ivs.append(Interval(64 * rng.choice((1, 2, 4, 8)), s, s + rng.randrange(8)))
    regions = tuple(Region(64 * rng.choice((3, 5, 9, 12))) for _ in range(rng.randint(1, 3)))
    return PlacementProblem(tuple(ivs), regions=regions, alignment=64)


def test_never_above_a_placement_and_never_below_the_flow_alone(monkeypatch):
    tighter = 0
    for seed in range(120):
        p = _random(seed)
        bound = region_fit_bound(p)
        placed = best_fit(p)
        validate_placement(p, placed)
        assert bound <= placed.arena_size, seed
        with monkeypatch.context() as m:
            m.setattr(place_check, "_packable", lambda ids, sizes, fits, free, sums: free)
            flow = region_fit_bound(p)
        assert bound >= flow, seed
        tighter += bound > flow
    assert tighter > 0       # the cases the packing is about do occur


def test_exact_assignment_counts_each_block_whole_in_one_region():
    # Blocks of 5, 5 and 2 units, regions of 8 and 2: the flow fills both
    # regions (9 units leave, 3 stay); whole blocks, at most 7 leave (5 + 2,
    # in either way), so 5 stay, as best-fit finds.
    u = 64
    p = PlacementProblem((Interval(5 * u, 0, 3), Interval(5 * u, 0, 3), Interval(2 * u, 0, 3)),
                         regions=(Region(8 * u), Region(2 * u)), alignment=u)
    assert region_fit_bound(p) == 3 * u
    assert region_fit_bound(p, exact_s=2.0) == 5 * u == best_fit(p).arena_size


def test_exact_assignment_never_above_a_placement():
    for seed in range(40):
        p = _random(seed)
        bound = region_fit_bound(p, exact_s=0.5)
        assert region_fit_bound(p) <= bound <= best_fit(p).arena_size, seed
