"""Class choices by the greedy (``solve.place_classes.greedy_classes``) and
the placement started from them (``solve.place._from_classes``): the
choices keep to the relaxation (per class, per moment, the bytes of its
blocks at most its free bytes), the arena peak they leave is never below
CP-SAT's proven floor, an eviction reaches the optimum where the plain
moves stop, and the placements built from them are valid."""

from __future__ import annotations

import random
import time

import numpy as np

from olla_jax.solve import place, place_check, place_classes
from olla_jax.solve.place_model import build_model
from olla_jax.solve.problem import Interval, Occupant, PlacementProblem, Region
from tests.solve.test_bound_assign import K, random_problem


def _within_classes(problem: PlacementProblem, classes) -> bool:
    """Per class and moment, its blocks' bytes at most its regions' free bytes."""
    times = np.array(sorted({iv.start for iv in problem.intervals}), dtype=np.int64)
    for cap in {c for c in classes if c != place_classes.NO_CLASS}:
        free = sum(place_check._region_free(r, times) for r in problem.regions
                   if r.capacity == cap)
        used = np.zeros(len(times), dtype=np.int64)
        for iv, c in zip(problem.intervals, classes):
            if c == cap:
                assert iv.size <= cap
                used += np.where((times >= iv.start) & (times <= iv.end), iv.size, 0)
        if (used > free).any():
            return False
    return True


def test_an_eviction_reaches_the_optimum():
    # One 256 B region.  Blocks 0 (256 B, times 0-5), 1 (256 B, 4-9) and
    # 2 (256 B, 6-9), and a 64 B one over 0-9 (the larger go first).  The
    # first peak moment (4) puts block 0 in the region; at the next (6-9) block 1 fits
    # only once block 0 goes back to the arena, where it stays below the
    # peak: 320 B, the optimum (blocks 1 and 2 are live together and one
    # region holds one of them).
    problem = PlacementProblem((Interval(256, 0, 5), Interval(256, 4, 9), Interval(256, 6, 9),
                                Interval(64, 0, 9)), regions=(Region(256),), alignment=64)
    got = place_classes.greedy_classes(problem, deadline=time.monotonic() + 5)
    floor = place_classes.class_floor(problem, time_limit_s=5)
    assert floor.status == "OPTIMAL"
    assert got.found == floor.proven == 320
    assert _within_classes(problem, got.classes)


def test_random_problems_keep_the_relaxation_and_its_floor():
    rng = random.Random(7)
    for trial in range(40):
        problem = random_problem(rng, max_regions=3)
        got = place_classes.greedy_classes(problem, deadline=time.monotonic() + 5)
        floor = place_classes.class_floor(problem, time_limit_s=5)
        assert floor.status == "OPTIMAL", trial
        assert got.found >= floor.proven, trial
        assert _within_classes(problem, got.classes), trial
        start = place_classes.class_start(problem, got.classes)
        place_check.validate_placement(problem, start)


def test_no_time_leaves_every_block_in_the_arena():
    problem = PlacementProblem((Interval(K, 0, 3), Interval(K, 1, 2)), regions=(Region(K),),
                               alignment=K)
    got = place_classes.greedy_classes(problem, deadline=time.monotonic() - 1)
    assert got.classes == (place_classes.NO_CLASS,) * 2 and got.found == 2 * K


def _random_with_groups(rng: random.Random) -> PlacementProblem:
    ivs = []
    for _ in range(rng.randrange(4, 20)):
        s = rng.randrange(0, 30)
        ivs.append(Interval(rng.choice((0, 64, K, K, 4 * K)), s, s + rng.randrange(0, 10)))
    regions = tuple(
        Region(rng.choice((K, 4 * K)),
               tuple(Occupant(rng.choice((0, K // 2)), K // 2, s, s + rng.randrange(0, 6))
                     for s in rng.sample(range(30), rng.randrange(0, 3))))
        for _ in range(rng.randrange(1, 6)))
    groups = ((0, 1),) if rng.random() < 0.5 and ivs[0].end < ivs[1].start else ()
    return PlacementProblem(tuple(ivs), regions=regions, alignment=64, same_offset=groups)


def test_placements_from_classes_are_valid():
    rng = random.Random(3)
    made = 0
    for trial in range(40):
        problem = _random_with_groups(rng)
        model = build_model(problem)
        got = place._from_classes(problem, model, time.perf_counter() + 2,
                                  place_check.live_bytes_bound(problem), None)
        if got is None:     # every block in a region
            continue
        made += 1
        place_check.validate_placement(problem, got)
        assert got.arena_size >= place_check.live_bytes_bound(problem), trial
    assert made >= 20
