"""An order's placement floor with each block in one place for its whole life.

``place_check.region_fit_bound`` packs each moment on its own: a block may sit
in one region at one moment and another (or the arena) at the next, so where
blocks of different lives share the regions it can stay below every real
placement (grad_accum, CPU: its chosen order's floor is 8.28 MiB, placed at
9.00).  Here CP-SAT assigns each block whole, for its whole life, to the arena
or to one region at least its size; per region the bytes of its blocks and
occupants live at a step are at most its capacity (a cumulative: offsets
relaxed), and the arena's peak of the blocks left there is minimised.  Every
placement of the order is such an assignment (a block lives at one offset of
one place; the blocks and occupants of a region at one step are disjoint), so
the proven bound is a floor for every placement of that order.  Relaxations
that keep it one: blocks below ``min_size`` are left out, the spans of a
same-offset group are placed each on its own, alignment is ignored.  The
best assignment found is what the relaxation allows: where it is below the
placed arena, offsets or the placement search lose the rest, not the order.
"""

from __future__ import annotations

import dataclasses

from olla_jax.solve import cpsat_run
from olla_jax.solve import place_check
from olla_jax.solve.problem import ARENA, Placement, PlacementProblem


@dataclasses.dataclass(frozen=True)
class AssignFloor:
    proven: int     # no placement of the order has a smaller arena (bytes)
    found: int      # the least arena of the relaxation found (offsets relaxed)
    status: str     # CP-SAT's: OPTIMAL, FEASIBLE, or what it said
    blocks: int     # blocks in the model (at least ``min_size`` bytes)


def whole_life_floor(problem: PlacementProblem, *, time_limit_s: float, min_size: int = 0,
                     hint: Placement | None = None, workers: int = 1) -> AssignFloor:
    """The floor above, by CP-SAT within ``time_limit_s``.  ``hint``: a
    placement of the same problem to start from (its regions, per interval)."""
    from ortools.sat.python import cp_model
    import math

    keep = [i for i, iv in enumerate(problem.intervals) if iv.size >= max(1, min_size)]
    if not keep:
        return AssignFloor(0, 0, "OPTIMAL", 0)
    sizes = [problem.intervals[i].size for i in keep]
    g = 0
    for s in sizes:
        g = math.gcd(g, s)
    m = cp_model.CpModel()
    arena = m.new_int_var(0, sum(sizes) // g, "arena")
    arena_ivs, arena_dem = [], []
    per_region: dict[int, tuple[list, list]] = {}
    for k, i in enumerate(keep):
        iv = problem.intervals[i]
        fits = [r for r, reg in enumerate(problem.regions) if iv.size <= reg.capacity]
        here = m.new_bool_var("")
        places = [m.new_bool_var("") for _ in fits]
        m.add_exactly_one([here, *places])
        length = iv.end - iv.start + 1
        arena_ivs.append(m.new_optional_fixed_size_interval_var(iv.start, length, here, ""))
        arena_dem.append(iv.size // g)
        want = hint.region[i] if hint is not None else None
        if want is not None:
            m.add_hint(here, want == ARENA or want not in fits)
        for r, p in zip(fits, places):
            ivs, dem = per_region.setdefault(r, ([], []))
            ivs.append(m.new_optional_fixed_size_interval_var(iv.start, length, p, ""))
            dem.append(iv.size)    # bytes: the capacity is not a multiple of g
            if want is not None:
                m.add_hint(p, want == r)
    for r, (ivs, dem) in per_region.items():
        region = problem.regions[r]
        for start, end, covered in _covered(region):
            ivs.append(m.new_fixed_size_interval_var(start, end - start + 1, ""))
            dem.append(covered)
        m.add_cumulative(ivs, dem, region.capacity)
    m.add_cumulative(arena_ivs, arena_dem, arena)
    m.minimize(arena)
    solver, status = cpsat_run.solve(m, time_limit_s, workers=workers)
    name = solver.status_name(status)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return AssignFloor(0, sum(sizes), name, len(keep))
    return AssignFloor(int(math.ceil(solver.best_objective_bound - 1e-6)) * g,
                       int(round(solver.objective_value)) * g, name, len(keep))


def _covered(region) -> list[tuple[int, int, int]]:
    """(first step, last step, bytes) of the stretches over which the same
    occupants of ``region`` are live, with the bytes they cover together."""
    cuts, covered = place_check.covered_stretches(region)
    return [(a, b - 1, c) for a, b, c in zip(cuts, cuts[1:], covered) if c]
