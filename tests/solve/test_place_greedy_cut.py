"""Best-fit cut short by its deadline: the blocks left are stacked, the
placement stays valid, and the planner's first placement takes the cut."""

from __future__ import annotations

import time

import numpy as np

from olla_jax.solve.place import best_fit, validate_placement
from olla_jax.solve.place_greedy import _CLOCK_EVERY
from olla_jax.solve.problem import Interval, Occupant, PlacementProblem, Region


def _disjoint(n: int = 200) -> PlacementProblem:
    """``n`` blocks of 128 bytes, none live with another: best-fit needs 128."""
    return PlacementProblem(tuple(Interval(128, 2 * k, 2 * k) for k in range(n)))


def test_best_fit_past_its_deadline_stacks_the_blocks_left():
    problem = _disjoint()
    whole = best_fit(problem, deadline=time.monotonic() - 1.0)     # not cut: the first order runs
    assert whole.arena_size == 128
    cut = best_fit(problem, deadline=time.monotonic() - 1.0, cut=True)
    validate_placement(problem, cut)
    # The first _CLOCK_EVERY blocks by best-fit (one slot), the rest one on another.
    assert cut.arena_size == 128 * (1 + len(problem.intervals) - _CLOCK_EVERY)


def test_cut_placement_is_valid_with_regions_and_alignment():
    rng = np.random.default_rng(1)
    ivs = tuple(Interval(int(rng.integers(1, 40)) * 100, int(s), int(s) + int(rng.integers(0, 30)))
                for s in rng.integers(0, 200, 300))
    regions = (Region(4096, (Occupant(0, 1000, 50, 60),)), Region(2048))
    problem = PlacementProblem(ivs, regions, 256)
    cut = best_fit(problem, deadline=time.monotonic() - 1.0, cut=True)
    validate_placement(problem, cut)
    assert cut.arena_size >= best_fit(problem).arena_size


def test_best_fit_before_its_deadline_is_not_cut():
    problem = _disjoint()
    assert best_fit(problem, deadline=time.monotonic() + 60.0, cut=True).arena_size == 128


def test_planner_first_placement_is_cut_at_the_finish():
    from olla_jax import strategy
    ticks = iter(range(10**6))
    cost = strategy._Cost(lambda: float(next(ticks)))   # each look at this clock: 1 s later
    problem = _disjoint()
    placed = cost.best_fit(problem, until=0.0, cut=0.0)
    validate_placement(problem, placed)
    assert placed.arena_size > 128
    assert cost.best_fit(problem, until=0.0).arena_size == 128
