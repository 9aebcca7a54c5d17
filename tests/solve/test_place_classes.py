"""The region-class floor (``solve.place_classes.class_floor``) is at most
every placement of an order (brute force over whole-block placements at
aligned offsets, and the exact engine's), and above the per-moment floor
where a block would have to change place; its choices start valid
placements (``class_start``)."""

from __future__ import annotations

import random

from olla_jax.solve import place, place_check, place_classes
from olla_jax.solve.problem import ARENA, Interval, Occupant, PlacementProblem, Region
from tests.solve.test_bound_assign import K, _brute_force, random_problem


def test_a_block_cannot_leave_its_class():
    # One 1 KiB region.  A (1 KiB) lives over 0-2 and B (1 KiB) over 2-3;
    # X and Y (2 KiB, too large for the region) at 1 and over 3-5.  At each
    # moment the region can take the 1 KiB block live then (one of A, B at
    # 2), so the per-moment floor is 2 KiB.  Over their whole lives A and B
    # cannot both have it (both live at 2): A left out is live with X, B
    # with Y: 3 KiB.
    ivs = (Interval(K, 0, 2), Interval(K, 2, 3), Interval(2 * K, 1, 1), Interval(2 * K, 3, 5))
    problem = PlacementProblem(intervals=ivs, regions=(Region(K),), alignment=K)
    found = place_classes.class_floor(problem, time_limit_s=5)
    assert place_check.region_fit_bound(problem, exact_s=1) == 2 * K
    assert found.status == "OPTIMAL"
    assert found.proven == found.found == 3 * K == _brute_force(problem)


def test_random_problems_floor_at_most_every_placement():
    rng = random.Random(5)
    for trial in range(30):
        problem = random_problem(rng, max_regions=3)
        found = place_classes.class_floor(problem, time_limit_s=5)
        assert found.status == "OPTIMAL", trial
        brute = _brute_force(problem)
        assert found.proven <= brute, trial
        assert found.proven <= place.place_exact(problem, time_limit_s=5).arena_size, trial
        start = place_classes.class_start(problem, found.classes)
        place_check.validate_placement(problem, start)
        assert start.arena_size >= brute, trial


def test_start_is_valid_with_groups_occupants_and_small_blocks():
    rng = random.Random(11)
    for trial in range(40):
        n = rng.randrange(3, 12)
        ivs = []
        for _ in range(n):
            s = rng.randrange(0, 10)
            ivs.append(Interval(rng.choice((0, 64, K, 2 * K, 3 * K, 5 * K)), s,
                                s + rng.randrange(0, 6)))
        regions = tuple(
            Region(rng.choice((K, 2 * K, 4 * K)),
                   tuple(Occupant(rng.choice((0, K)), K, s, s + rng.randrange(0, 4))
                         for s in rng.sample(range(12), rng.randrange(0, 3))))
            for _ in range(rng.randrange(0, 4)))
        groups = ((0, 1),) if rng.random() < 0.5 else ()
        problem = PlacementProblem(intervals=tuple(ivs), regions=regions, alignment=64,
                                   same_offset=groups)
        found = place_classes.class_floor(problem, time_limit_s=5)
        start = place_classes.class_start(problem, found.classes)
        place_check.validate_placement(problem, start)
        assert found.proven <= start.arena_size, trial
        # Every block the choices put in a class that fits it somewhere
        # sits in a region of that class or in the arena.
        for i, c in enumerate(found.classes):
            r = start.region[i]
            assert r == ARENA or problem.regions[r].capacity == c, trial


def test_hint_and_no_time_keep_it_a_floor():
    problem = PlacementProblem(
        intervals=(Interval(K, 0, 3), Interval(K, 1, 2), Interval(2 * K, 2, 4)),
        regions=(Region(K), Region(2 * K, (Occupant(0, K, 4, 4),))), alignment=K)
    exact = place.place_exact(problem, time_limit_s=5)
    hinted = place_classes.class_floor(problem, time_limit_s=5, hint=exact)
    plain = place_classes.class_floor(problem, time_limit_s=5)
    assert hinted.proven == plain.proven <= exact.arena_size
    empty = place_classes.class_floor(PlacementProblem(intervals=()), time_limit_s=1)
    assert (empty.proven, empty.found, empty.classes) == (0, 0, ())


def test_class_start_tries_the_earliest_first_order_where_longest_first_leaves_one_out():
    # Two regions of 2 KiB (one class).  A 2 KiB block fills the first on
    # [0, 4]; three 1 KiB blocks: Y on [2, 12], Z on [3, 21], X on [5, 20].
    # Longest first: Z, then X take the second region (its room is tighter
    # than the first's, empty from 5) and Y, live at 2-4, has none.  Earliest
    # first: Y and Z in the second region, X in the first: all fit.
    ivs = (Interval(2048, 0, 4), Interval(1024, 2, 12), Interval(1024, 3, 21),
           Interval(1024, 5, 20))
    p = PlacementProblem(ivs, regions=(Region(2048), Region(2048)), alignment=64)
    start = place_classes.class_start(p, (2048,) * 4, pack=False)
    place_check.validate_placement(p, start)
    assert ARENA not in start.region
