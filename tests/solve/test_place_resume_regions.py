"""The hint's region pass, cut at its deadline, resumed once the arena search
has reached its region choices' peak (olla_jax/solve/place.py, _resume_regions)."""

from __future__ import annotations

import time

from olla_jax.solve import place
from olla_jax.solve.place import place_exact, validate_placement
from olla_jax.solve.problem import ARENA, Interval, Placement, PlacementProblem, Region


def _one_move_per_pass(model, placement, deadline):
    """A region pass that makes one move (block 0, else block 1, into its own
    region) and then runs to its deadline, as a pass cut short does."""
    region, offset = list(placement.region), list(placement.offset)
    for b in (0, 1):
        if region[b] == ARENA:
            region[b], offset[b] = b, 0
            time.sleep(max(0.0, deadline - time.monotonic()))
            return Placement(tuple(region), tuple(offset), placement.arena_size)
    return placement


def test_a_cut_region_pass_goes_on_after_the_arena_search(monkeypatch):
    # Blocks 0 and 1 (256 B) each fit a 256 B region, block 2 (512 B) none:
    # best-fit stacks all three (1,024 B); with both in regions the arena is
    # 512, the live-bytes bound.  Each pass moves one block and is cut: the
    # first pass (the hint's) moves block 0, the arena search brings the
    # arena to its peak (768), and only a second pass on that result moves
    # block 1 (other starts begin from best-fit again and move block 0).
    p = PlacementProblem((Interval(256, 0, 9), Interval(256, 0, 9), Interval(512, 0, 9)),
                         regions=(Region(256), Region(256)), alignment=64)
    hint = Placement((ARENA, ARENA, ARENA), (0, 256, 512), 1024)
    validate_placement(p, hint)
    monkeypatch.setattr(place, "improve_regions", _one_move_per_pass)
    monkeypatch.setattr(place, "_CLASSES_SHARE", 0.0)   # no start from class choices
    got = place_exact(p, time_limit_s=1.0, engine="canonical", hint=hint)
    validate_placement(p, got)
    assert got.arena_size == 512 and got.region[:2] == (0, 1)
