"""The sweep placement (olla_jax/solve/place_sweep.py): valid on random problems
with regions, occupants and same-offset groups, and its pair count exact."""

from __future__ import annotations

import random

from olla_jax.solve import place_check, place_sweep
from olla_jax.solve import problem as sp


def _problem(seed: int, n: int = 150, horizon: int = 100) -> sp.PlacementProblem:
    rng = random.Random(seed)
    intervals = []
    for _ in range(n):
        s = rng.randrange(horizon)
        intervals.append(sp.Interval(rng.choice([0, 1, 64, 100, 512, 4096, 10000]), s,
                                     min(horizon - 1, s + rng.randrange(40))))
    regions = []
    for _ in range(rng.randrange(6)):
        occ = []
        for _ in range(rng.randrange(3)):
            s = rng.randrange(horizon)
            occ.append(sp.Occupant(rng.randrange(0, 2048, 64), rng.choice([0, 64, 1024]), s,
                                   min(horizon - 1, s + rng.randrange(30))))
        regions.append(sp.Region(rng.choice([512, 4096, 16384]), tuple(occ)))
    members = rng.sample(range(n), 12)
    groups = (tuple(members[:3]), tuple(members[3:7]), tuple(members[7:8]))
    return sp.PlacementProblem(tuple(intervals), tuple(regions), alignment=rng.choice([1, 64, 256]),
                               same_offset=groups)


def test_sweep_placements_are_valid_and_no_smaller_than_the_live_bytes():
    for seed in range(40):
        problem = _problem(seed)
        placement = place_sweep.sweep_fit(problem)
        place_check.validate_placement(problem, placement)
        assert placement.arena_size >= place_check.live_bytes_bound(problem)


def test_sweep_uses_idle_regions_and_reuses_freed_arena_space():
    # Two blocks at a time, each 1 KiB: an idle 1 KiB region takes one of the first pair.
    ivs = tuple(sp.Interval(1024, 10 * k, 10 * k + 5) for k in range(4)) + \
        tuple(sp.Interval(1024, 10 * k + 1, 10 * k + 6) for k in range(4))
    busy_late = sp.Region(1024, (sp.Occupant(0, 1024, 50, 60),))
    placement = place_sweep.sweep_fit(sp.PlacementProblem(ivs, (busy_late,), alignment=64))
    assert placement.arena_size == 1024                  # freed space reused, one block parked
    assert placement.region.count(0) == 4               # the region, idle before 50, each time
    assert place_sweep.sweep_fit(sp.PlacementProblem(ivs, (), alignment=64)).arena_size == 2048


def test_overlapping_pairs_counts_every_pair_once_per_end():
    for seed in range(10):
        problem = _problem(seed, n=60)
        ivs = problem.intervals
        brute = sum(1 for i, a in enumerate(ivs) for j, b in enumerate(ivs)
                    if i != j and a.start <= b.end and b.start <= a.end)
        assert place_sweep.overlapping_pairs(problem) == brute
