"""An order's whole-life assignment floor (``solve.bound_assign``) is at most
every placement of it (brute force over whole-block placements at aligned
offsets, and the exact engine's), and it sees what the per-moment floor
(``place_check.region_fit_bound``) cannot: a block that would have to move
between regions."""

from __future__ import annotations

import itertools
import random

from olla_jax.solve import bound_assign, place, place_check
from olla_jax.solve.problem import Interval, Occupant, PlacementProblem, Region

K = 1024


def _brute_force(problem: PlacementProblem) -> int:
    """The least arena over every placement: each block in the arena or a region,
    at an offset that is a multiple of K (every size here is a multiple of K)."""
    ivs, regions = problem.intervals, problem.regions
    best = None
    for where in itertools.product(range(-1, len(regions)), repeat=len(ivs)):
        if any(r >= 0 and ivs[k].size > regions[r].capacity for k, r in enumerate(where)):
            continue
        arena = _pack([iv for iv, r in zip(ivs, where) if r == -1], None)
        if arena is None or (best is not None and arena >= best):
            continue
        if all(_pack([iv for iv, w in zip(ivs, where) if w == r], regions[r]) is not None
               for r in range(len(regions))):
            best = arena
    return best


def random_problem(rng: random.Random, max_regions: int) -> PlacementProblem:
    """2-4 blocks of 1 or 2 K over short spans, 1 to ``max_regions`` regions of
    1 or 2 K, each with an occupant half the time: small enough to brute-force."""
    ivs = []
    for _ in range(rng.randrange(2, 5)):
        s = rng.randrange(0, 4)
        ivs.append(Interval(rng.choice((K, 2 * K)), s, s + rng.randrange(0, 3)))
    regions = []
    for _ in range(rng.randrange(1, max_regions + 1)):
        occ = ()
        if rng.random() < 0.5:
            s = rng.randrange(0, 5)
            occ = (Occupant(0, K, s, s + rng.randrange(0, 3)),)
        regions.append(Region(rng.choice((K, 2 * K)), occ))
    return PlacementProblem(intervals=tuple(ivs), regions=tuple(regions), alignment=K)


def _pack(blocks, region):
    """The least top of ``blocks`` at offsets (multiples of K) with no two live
    together overlapping (and clear of the region's occupants, below its
    capacity): None where they do not fit."""
    top = region.capacity if region else sum(b.size for b in blocks)
    fixed = [(o.offset, o.size, o.start, o.end) for o in (region.occupants if region else ())]
    best = None
    for offs in itertools.product(range(0, top, K), repeat=len(blocks)):
        placed = fixed + [(o, b.size, b.start, b.end) for o, b in zip(offs, blocks)]
        if any(o + s > top for o, s, _, _ in placed):
            continue
        if any(a[2] <= b[3] and b[2] <= a[3] and a[0] < b[0] + b[1] and b[0] < a[0] + a[1]
               for a, b in itertools.combinations(placed, 2)):
            continue
        height = max((o + b.size for o, b in zip(offs, blocks)), default=0)
        best = height if best is None else min(best, height)
    return best


def test_a_block_cannot_move_between_regions():
    # A (1 KiB) lives over 0-2.  At 0 region R0 is all free and R1 half
    # (an occupant), at 2 the other way round; B (2 KiB, at 0) and D (2 KiB,
    # at 2) each need a whole region.  Each moment packs (A beside the
    # occupant, the 2 KiB block in the free region), but A cannot move: one
    # block is left to the arena, A at least.
    problem = PlacementProblem(
        intervals=(Interval(K, 0, 2), Interval(2 * K, 0, 0), Interval(2 * K, 2, 2)),
        regions=(Region(2 * K, (Occupant(0, K, 2, 2),)), Region(2 * K, (Occupant(0, K, 0, 0),))),
        alignment=K)
    floor = bound_assign.whole_life_floor(problem, time_limit_s=5)
    assert place_check.region_fit_bound(problem, exact_s=1) == 0
    assert floor.proven == floor.found == K == _brute_force(problem)


def test_random_problems_floor_at_most_every_placement():
    rng = random.Random(3)
    for trial in range(25):
        problem = random_problem(rng, max_regions=2)
        floor = bound_assign.whole_life_floor(problem, time_limit_s=5)
        assert floor.status == "OPTIMAL"
        brute = _brute_force(problem)
        assert floor.proven <= brute, trial
        exact = place.place_exact(problem, time_limit_s=5)
        assert floor.proven <= exact.arena_size, trial
        hinted = bound_assign.whole_life_floor(problem, time_limit_s=5, hint=exact)
        assert hinted.proven == floor.proven
