"""Regions an occupant fills: closed to the blocks live then (place_model, place_greedy)."""

from __future__ import annotations

import numpy as np

from olla_jax.solve import place_check, place_greedy, place_model
from olla_jax.solve.problem import Interval, Occupant, PlacementProblem, Region


def _problem():
    # Region 0 (100 bytes) is filled by a donated input over [0, 4] and idle after;
    # region 1 (60 bytes) holds a small occupant at [0, 10] over [0, 9].
    return PlacementProblem(
        intervals=(Interval(50, 2, 3), Interval(50, 6, 8), Interval(40, 1, 7)),
        regions=(Region(100, (Occupant(0, 100, 0, 4),)), Region(60, (Occupant(0, 10, 0, 9),))),
        alignment=1)


def test_a_filled_region_is_closed_only_while_filled():
    model = place_model.build_model(_problem())
    closed = [sorted(model.blocked_regions[b]) for b in range(3)]
    assert closed == [[0], [], [0]]
    assert [model.occupied[0][b] for b in range(3)] == [((0, 100),), (), ((0, 100),)]
    assert [model.occupied[1][b] for b in range(3)] == [((0, 10),)] * 3
    assert [list(model.open_regions[b]) for b in range(3)] == [[1], [1], [1]]


def test_best_fit_never_uses_a_filled_region_and_stays_valid():
    p = _problem()
    placement = place_greedy.best_fit(p)
    place_check.validate_placement(p, placement)
    for i, iv in enumerate(p.intervals):
        if placement.region[i] == 0:
            assert iv.start > 4   # region 0 only after its occupant ends
    # Random problems with filled regions: always valid placements.
    rng = np.random.default_rng(0)
    for _ in range(30):
        ivs = tuple(Interval(int(rng.integers(1, 60)), s, s + int(rng.integers(0, 6)))
                    for s in rng.integers(0, 20, size=12).tolist())
        regions = tuple(Region(c, (Occupant(0, c, int(a), int(a) + int(rng.integers(0, 8))),))
                        for c, a in zip(rng.integers(20, 80, size=3).tolist(),
                                        rng.integers(0, 20, size=3).tolist()))
        q = PlacementProblem(intervals=ivs, regions=regions, alignment=1)
        found = place_greedy.best_fit(q)
        place_check.validate_placement(q, found)
