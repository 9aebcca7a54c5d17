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

That CP-SAT took 7-20 s there, past a 10 s plan; ``greedy_classes`` finds
class choices in a fraction of a second (the same relaxation, no proof):
it lowers the arena's peak one block at a time, the largest block live at
the peak into the smallest class with free bytes for its whole life, or,
failing that, into a class once the class's blocks in its way that are
live at no peak moment go to the arena (where they stay below the peak).
On that step it reached CP-SAT's optimum, 8.31, in 0.3 s.
"""

from __future__ import annotations

import dataclasses
import math
import time

import numpy as np

from olla_jax.solve import cpsat_run
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
    solver, status = cpsat_run.solve(m, time_limit_s, workers=workers)
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


def class_start(problem: PlacementProblem, classes, *, pack: bool = True) -> Placement:
    """A valid placement from class choices (``ClassChoice.classes``): per
    class, its blocks in turn (largest then longest first, or largest then
    earliest first, whichever leaves fewer bytes out: _PACK_ORDERS), each
    into the tightest room over its whole life in a region of that class
    (the arena where none has room); the arena's blocks, largest first, each at the lowest offset
    clear of those already there (``pack=False``: one above another, for a
    caller that places the arena again: packing took 1.2 s where most blocks
    were left there); a same-offset group's members together on top of the
    arena.  A start for the placement search, not tight."""
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
    for cap in sorted({classes[i] for i in todo}):
        mine = [i for i in todo if classes[i] == cap]
        best = None
        for key in _PACK_ORDERS:
            got = _pack_class(sorted(mine, key=key(ivs)), by_cap.get(cap, []), held, ivs,
                              regions, a)
            left_out = sum(ivs[i].size for i in mine if i not in got)
            if best is None or left_out < best[0]:
                best = (left_out, got)
            if not left_out:
                break
        for i, (r, x) in best[1].items():
            where[i], offset[i] = r, x
            held[r].append((x, x + ivs[i].size, ivs[i].start, ivs[i].end))
    placed: list[int] = []
    top = 0
    rest = [i for i in range(len(ivs)) if where[i] == ARENA and i not in grouped]
    for i in sorted(rest, key=lambda i: (-ivs[i].size, ivs[i].start, i)):
        iv = ivs[i]
        if iv.size == 0:
            continue
        if pack:
            spans = [(offset[j], offset[j] + ivs[j].size) for j in placed
                     if ivs[j].start <= iv.end and iv.start <= ivs[j].end]
            offset[i] = _tightest(spans, iv.size, a, None)[1]
        else:
            offset[i] = -(-top // a) * a
        placed.append(i)
        top = max(top, offset[i] + iv.size)
    for members in problem.same_offset:
        top = -(-top // a) * a
        for i in members:
            offset[i] = top
        top += max((ivs[i].size for i in members), default=0)
    return Placement(tuple(where), tuple(offset), -(-top // a) * a)


# class_start's orders of a class's blocks, tried in turn, the packing that
# leaves the fewest bytes to the arena kept: on gpt2 with gradient
# accumulation (CPU, small) the longest-first order left a 0.25 MiB block of
# the 1 MiB regions out (four shorter ones had taken the only room) and the
# earliest-first order fitted them all, but left 0.5 MiB of the 0.25 MiB
# regions' blocks out where longest-first fitted them.
_PACK_ORDERS = (
    lambda ivs: lambda i: (-ivs[i].size, ivs[i].start - ivs[i].end, i),   # largest, longest
    lambda ivs: lambda i: (-ivs[i].size, ivs[i].start, i),                # largest, earliest
)


def _pack_class(blocks: list[int], rs: list[int], held: dict, ivs, regions,
                a: int) -> dict[int, tuple[int, int]]:
    """``blocks`` in turn, each into the tightest room for its whole life in
    the regions ``rs`` (of one class), beside what ``held`` has there (left
    as it is); returns block -> (region, offset) for those that fit."""
    mine = {r: list(held[r]) for r in rs}
    got = {}
    for i in blocks:
        iv, best, empty = ivs[i], None, False
        for r in rs:
            spans = [(lo, hi) for lo, hi, s, e in mine[r] if s <= iv.end and iv.start <= e]
            if not spans:
                if empty:
                    continue     # one empty region of the class is as good as another
                empty = True
            room = _tightest(spans, iv.size, a, regions[r].capacity)
            if room is not None and (best is None or room[0] < best[0]):
                best = (room[0], r, room[1])
                if room[0] == 0:
                    break
        if best is not None:
            _, r, x = best
            got[i] = (r, x)
            mine[r].append((x, x + iv.size, iv.start, iv.end))
    return got


def greedy_classes(problem: PlacementProblem, *, deadline: float,
                   min_size: int = 0) -> ClassChoice:
    """Class choices by the greedy of the module doc (``proven`` 0: no
    proof), ending at ``deadline`` (``time.monotonic()``) with what it has
    (``status`` "TIME"; "GREEDY" where no move was left).
    The moments, free bytes and left-out blocks are ``class_floor``'s."""
    place_check.check_problem(problem)
    ivs = problem.intervals
    grouped = {i for members in problem.same_offset for i in members}
    keep = [i for i, iv in enumerate(ivs) if iv.size >= max(1, min_size) and i not in grouped]
    none = tuple(NO_CLASS for _ in ivs)
    caps = np.array(sorted({r.capacity for r in problem.regions if r.capacity > 0}),
                    dtype=np.int64)
    if not keep:
        return ClassChoice(0, 0, none, "GREEDY", 0)
    times = np.array(sorted({ivs[i].start for i in keep}), dtype=np.int64)
    free = np.zeros((len(caps), len(times)), dtype=np.int64)   # per class, per moment
    for region in problem.regions:
        if region.capacity > 0:
            free[np.searchsorted(caps, region.capacity)] += place_check._region_free(region, times)
    size = np.array([ivs[i].size for i in keep], dtype=np.int64)
    lo = np.searchsorted(times, [ivs[i].start for i in keep], side="left")
    hi = np.searchsorted(times, [ivs[i].end for i in keep], side="right")    # exclusive
    diff = np.zeros(len(times) + 1, dtype=np.int64)
    np.add.at(diff, lo, size)
    np.add.at(diff, hi, -size)
    arena = np.cumsum(diff)[:-1]      # the arena's bytes per moment, every block there first
    cls = np.full(len(keep), -1)      # per kept block: its class's index, or -1 (the arena)
    first = np.searchsorted(caps, size)   # per block: its smallest class that could hold it
    tried: set[tuple[int, int]] = set()   # (block, peak) that found no move

    def move(b: int, c: int) -> None:
        if cls[b] >= 0:
            free[cls[b], lo[b]:hi[b]] += size[b]
        else:
            arena[lo[b]:hi[b]] -= size[b]
        if c >= 0:
            free[c, lo[b]:hi[b]] -= size[b]
        else:
            arena[lo[b]:hi[b]] += size[b]
        cls[b] = c

    status = "GREEDY"     # "TIME": cut at the deadline
    while True:
        if time.monotonic() >= deadline:
            status = "TIME"
            break
        peak = int(arena.max())
        t = int(np.argmax(arena))
        live = np.nonzero((lo <= t) & (t < hi) & (cls < 0))[0]
        live = [b for b in live[np.argsort(-size[live], kind="stable")].tolist()
                if (b, peak) not in tried]
        done = False
        for b in live:
            if time.monotonic() >= deadline:
                status = "TIME"
                break
            room = free[first[b]:, lo[b]:hi[b]].min(axis=1) >= size[b]
            if room.any():
                move(b, first[b] + int(np.argmax(room)))
                done = True
                break
            done = _evict_for(b, t, peak, first[b], cls, size, lo, hi, free, arena, move)
            if done:
                break
            tried.add((b, peak))
        if not done:
            break
    classes = list(none)
    for k, i in enumerate(keep):
        if cls[k] >= 0:
            classes[i] = int(caps[cls[k]])
    found = _arena_peak(problem, tuple(classes), keep)
    return ClassChoice(0, found, tuple(classes), status, len(keep))


def _evict_for(b: int, t: int, peak: int, first: int, cls, size, lo, hi, free, arena,
               move) -> bool:
    """``greedy_classes``' eviction: block ``b`` (in the arena, live at the
    peak moment ``t``) into the smallest class from ``first`` where the
    class's blocks in its way, live neither at ``t`` nor at the peak once
    in the arena, smallest first, leave room for its whole life; True when
    moved."""
    arena[lo[b]:hi[b]] -= size[b]      # as if moved: the evicted must stay below the peak
    found, out = -1, []
    for c in range(first, free.shape[0]):
        short = size[b] - free[c, lo[b]:hi[b]]       # bytes missing per moment
        way = np.nonzero((cls == c) & (lo < hi[b]) & (hi > lo[b]) & ~((lo <= t) & (t < hi)))[0]
        out = []
        if not len(way):
            continue
        # All of them out, each judged alone, must leave room (most calls end here).
        ends = np.stack([lo[way], hi[way]], axis=1).ravel()
        alone = way[np.maximum.reduceat(np.append(arena, 0), ends)[::2] + size[way] < peak]
        cover = np.zeros(hi[b] - lo[b] + 1, dtype=np.int64)
        np.add.at(cover, np.maximum(lo[alone], lo[b]) - lo[b], size[alone])
        np.add.at(cover, np.minimum(hi[alone], hi[b]) - lo[b], -size[alone])
        if (np.cumsum(cover)[:-1] < short).any():
            continue
        for j in way[np.argsort(size[way], kind="stable")].tolist():
            if short.max() <= 0:
                break
            seg = slice(max(lo[j], lo[b]) - lo[b], min(hi[j], hi[b]) - lo[b])
            if (short[seg] > 0).any() and int(arena[lo[j]:hi[j]].max()) + size[j] < peak:
                out.append(j)
                short[seg] -= size[j]
                arena[lo[j]:hi[j]] += size[j]
        for j in out:
            arena[lo[j]:hi[j]] -= size[j]
        if short.max() <= 0:
            found = c
            break
    arena[lo[b]:hi[b]] += size[b]
    if found < 0:
        return False
    for j in out:
        move(j, -1)
    move(b, found)
    return True
