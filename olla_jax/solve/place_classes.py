"""Region classes: an order's placement floor, and a placement start, from
whole-life choices between the arena and the *classes* of regions (the
regions of one capacity taken together).

``place_check.region_fit_bound`` packs each moment on its own, so a block may
sit in a region at one moment and in the arena at the next; ``bound_assign``
keeps each block in one region for its whole life but gives CP-SAT every
region to choose, and on gpt2 with gradient accumulation (CPU, small: 3
regions of 8 MiB, 36 of 1 MiB, 75 of 0.25 MiB, 190 smaller) it proved
nothing in 125 s above 7.97 MiB, below the per-moment floor (8.28).  Regions
of one capacity are alike to a block, so here a block chooses the arena or a
class, for its whole life, and per class the bytes of its blocks live at a
moment are at most the class's free bytes then (its regions' capacities less
their occupants).  Every placement of the order makes such a choice (a
block sits in one region, its class; the blocks in a region at one moment
are disjoint and clear of its occupants), so the least arena peak of the
relaxation is a floor for every placement of the order (on that step: 8.31,
proven in seconds).  Relaxations that keep it one: the class constraints
are imposed at the blocks' start times only (where the live set grows),
blocks below ``min_size`` and the members of same-offset groups
are left out (they share their bytes: counted apart, two live at
once would count twice), offsets and alignment are ignored.

The choices found also start a placement (``class_start``): per class, its
blocks, largest and then longest first, into the tightest room of a region
of that class for their whole life (the arena where none has room).  On the
same step's chosen order the placement search from it reached 8.50 MiB,
where the planner's own region choices stopped at 9.06.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from olla_jax.solve import place_check
from olla_jax.solve.place_greedy import _tightest
from olla_jax.solve.problem import ARENA, Placement, PlacementProblem

NO_CLASS = -1    # ``ClassChoice.classes``: the block stays in the arena


@dataclasses.dataclass(frozen=True)
class ClassChoice:
    proven: int                 # no placement of the problem has a smaller arena (bytes)
    found: int                  # the arena's live-bytes peak of ``classes`` (bytes)
    classes: tuple[int, ...]    # per interval: its class's capacity, or NO_CLASS
    status: str                 # CP-SAT's
    blocks: int                 # intervals in the model


def class_floor(problem: PlacementProblem, *, time_limit_s: float, min_size: int = 0,
                workers: int = 1, hint: Placement | None = None) -> ClassChoice:
    """The floor of the module doc by CP-SAT within ``time_limit_s``, and the
    choices it found (the arena for every block when it found none).
    ``hint``: a placement of the problem whose region choices CP-SAT starts
    from (its classes)."""
    from ortools.sat.python import cp_model
    place_check.check_problem(problem)
    ivs = problem.intervals
    grouped = {i for members in problem.same_offset for i in members}
    keep = [i for i, iv in enumerate(ivs) if iv.size >= max(1, min_size) and i not in grouped]
    none = tuple(NO_CLASS for _ in ivs)
    if not keep:
        return ClassChoice(0, 0, none, "OPTIMAL", 0)
    caps = sorted({r.capacity for r in problem.regions if r.capacity > 0})
    starts = sorted({ivs[i].start for i in keep})
    times = np.array(starts, dtype=np.int64)
    free = {c: np.zeros(len(times), dtype=np.int64) for c in caps}
    for region in problem.regions:
        if region.capacity in free:
            free[region.capacity] += place_check._region_free(region, times)
    g = 0
    for i in keep:
        g = math.gcd(g, ivs[i].size)
    m = cp_model.CpModel()
    arena, choice = {}, {}
    for i in keep:
        size = ivs[i].size
        arena[i] = m.new_bool_var("")
        choice[i] = {c: m.new_bool_var("") for c in caps if c >= size}
        m.add_exactly_one([arena[i], *choice[i].values()])
        if hint is not None:
            r = hint.region[i]
            want = NO_CLASS if r == ARENA else problem.regions[r].capacity
            m.add_hint(arena[i], want not in choice[i])
            for c, v in choice[i].items():
                m.add_hint(v, c == want)
    peak = m.new_int_var(0, sum(ivs[i].size for i in keep) // g, "peak")
    start = np.array([ivs[i].start for i in keep], dtype=np.int64)
    end = np.array([ivs[i].end for i in keep], dtype=np.int64)
    index = np.array(keep, dtype=np.int64)
    seen = set()
    for k, t in enumerate(starts):
        on = index[(start <= t) & (t <= end)].tolist()
        key = (tuple(on), tuple(int(free[c][k]) for c in caps))
        if key in seen:
            continue
        seen.add(key)
        m.add(sum(ivs[i].size // g * arena[i] for i in on) <= peak)
        for c in caps:
            there = [i for i in on if c in choice[i]]
            if sum(ivs[i].size for i in there) > free[c][k]:
                m.add(sum(ivs[i].size * choice[i][c] for i in there) <= int(free[c][k]))
    m.minimize(peak)
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = max(0.01, time_limit_s)
    solver.parameters.num_workers = workers
    status = solver.solve(m)
    name = solver.status_name(status)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return ClassChoice(0, _arena_peak(problem, none, keep), none, name, len(keep))
    classes = list(none)
    for i in keep:
        classes[i] = next((c for c, v in choice[i].items() if solver.value(v)), NO_CLASS)
    classes = tuple(classes)
    proven = int(math.ceil(solver.best_objective_bound - 1e-6)) * g
    return ClassChoice(proven, _arena_peak(problem, classes, keep), classes, name, len(keep))


def _arena_peak(problem: PlacementProblem, classes, keep) -> int:
    """The most bytes live at once of the blocks ``keep`` left in the arena."""
    ivs = problem.intervals
    diff = np.zeros(max(iv.end for iv in ivs) + 2, dtype=np.int64)
    for i in keep:
        iv = ivs[i]
        if classes[i] == NO_CLASS:
            diff[iv.start] += iv.size
            diff[iv.end + 1] -= iv.size
    return int(np.cumsum(diff).max())


def class_start(problem: PlacementProblem, classes) -> Placement:
    """A valid placement from class choices (``ClassChoice.classes``): per
    class, its blocks, largest then longest first, each into the tightest
    room over its whole life in a region of that class (the arena where none
    has room); the arena's blocks, largest first, each at the lowest offset
    clear of those already there; a same-offset group's members together on
    top of the arena.  A start for the placement search, not tight."""
    place_check.check_problem(problem)
    ivs, regions, a = problem.intervals, problem.regions, problem.alignment
    grouped = {i for members in problem.same_offset for i in members}
    by_cap: dict[int, list[int]] = {}
    for r, region in enumerate(regions):
        by_cap.setdefault(region.capacity, []).append(r)
    held = {r: [(o.offset, o.offset + o.size, o.start, o.end) for o in region.occupants]
            for r, region in enumerate(regions)}
    where = [ARENA] * len(ivs)
    offset = [0] * len(ivs)
    todo = [i for i, c in enumerate(classes) if c != NO_CLASS and i not in grouped
            and ivs[i].size > 0]
    todo.sort(key=lambda i: (-ivs[i].size, ivs[i].start - ivs[i].end, i))
    for i in todo:
        iv, best = ivs[i], None
        for r in by_cap.get(classes[i], ()):
            spans = [(lo, hi) for lo, hi, s, e in held[r] if s <= iv.end and iv.start <= e]
            got = _tightest(spans, iv.size, a, regions[r].capacity)
            if got is not None and (best is None or got[0] < best[0]):
                best = (got[0], r, got[1])
                if got[0] == 0:
                    break
        if best is not None:
            _, r, x = best
            where[i], offset[i] = r, x
            held[r].append((x, x + iv.size, iv.start, iv.end))
    placed: list[int] = []
    top = 0
    rest = [i for i in range(len(ivs)) if where[i] == ARENA and i not in grouped]
    for i in sorted(rest, key=lambda i: (-ivs[i].size, ivs[i].start, i)):
        iv = ivs[i]
        if iv.size == 0:
            continue
        spans = [(offset[j], offset[j] + ivs[j].size) for j in placed
                 if ivs[j].start <= iv.end and iv.start <= ivs[j].end]
        offset[i] = _tightest(spans, iv.size, a, None)[1]
        placed.append(i)
        top = max(top, offset[i] + iv.size)
    for members in problem.same_offset:
        top = -(-top // a) * a
        for i in members:
            offset[i] = top
        top += max((ivs[i].size for i in members), default=0)
    return Placement(tuple(where), tuple(offset), -(-top // a) * a)
