"""The plan's own placement as a starting point for recomputation's placements.

A recomputation plan is placed by best-fit from scratch (``place_state``),
which on some steps lands well above the placement of the plan it starts from
(the planner's, searched exactly, or XLA's own): a pick then has to win back
that loss before it lowers anything, and a budget a little under the plan's
total can look out of reach ("nothing lowers the peak").  ``anchored`` keeps
every value where the plan put it, unless a copy's operand, kept alive longer,
now meets another value there, and places what is left (the copies, their
scratch, those operands) into the lowest gap of the arena that fits; the
caller keeps whichever of the two placements is smaller.  Recomputation only
shortens lives apart from the operands it extends, so the plan's places stay
valid for everything else.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from olla_jax.graph.model import ScheduleGraph
from olla_jax.solve import problem as sp


@dataclasses.dataclass(frozen=True)
class Anchor:
    """A plan's placement of ``recompute_plan.new_state(graph, order)``'s intervals, with
    their ends then (an interval whose end a pick raises is checked again)."""
    placement: sp.Placement
    ends: tuple[int, ...]


def anchor_of(graph: ScheduleGraph, order: Sequence[int], state, layout) -> Anchor | None:
    """The Anchor of ``layout`` (a plan's Layout on ``order``; XLA's own when
    its places are empty) for ``state`` (``recompute_plan.new_state(graph,
    order)``, no picks), or None when it is not a plan of ``order`` or a
    value sits somewhere the placement problem cannot name."""
    if layout is None or tuple(layout.order) != tuple(order):
        return None
    region_of = {alloc: r for r, alloc in enumerate(graph.regions)}
    places = dict(layout.places)
    regions, offsets = [], []
    for uid in state.owners:
        unit = graph.units[uid]
        if not unit.values:
            return None
        v, rel = unit.values[0], unit.member_offsets[0]
        alloc, off = places.get(v, (graph.values[v].allocation, graph.values[v].offset))
        if alloc == graph.temp_allocation:
            regions.append(sp.ARENA)
        elif alloc in region_of:
            regions.append(region_of[alloc])
        else:
            return None
        offsets.append(off - rel)
    tops = [o + iv[0] for r, o, iv in zip(regions, offsets, state.intervals) if r == sp.ARENA]
    placement = sp.Placement(tuple(regions), tuple(offsets), max(tops, default=0))
    from olla_jax.solve.place_check import validate_placement
    try:
        validate_placement(state.problem(), placement)
    except ValueError:
        return None
    return Anchor(placement, tuple(iv[2] for iv in state.intervals))


def anchored(state, anchor: Anchor) -> sp.Placement | None:
    """``state``'s problem (a ``recompute_plan.State``) placed with
    ``anchor``'s places kept (see the module docstring); None when a tied group (``same_offset``) would have to move."""
    problem = state.problem()
    n, total = len(state.intervals), len(problem.intervals)
    a = problem.alignment
    size = np.array([iv.size for iv in problem.intervals], dtype=np.int64)
    start = np.array([iv.start for iv in problem.intervals], dtype=np.int64)
    end = np.array([iv.end for iv in problem.intervals], dtype=np.int64)
    region = np.full(total, sp.ARENA, dtype=np.int64)
    offset = np.zeros(total, dtype=np.int64)
    region[:n] = anchor.placement.region
    offset[:n] = anchor.placement.offset
    fixed = np.zeros(total, dtype=bool)
    fixed[:n] = True
    grouped = {i for group in problem.same_offset for i in group}
    # operands kept longer for a copy: still clear of everything fixed there?
    for i in np.flatnonzero(end[:n] > np.array(anchor.ends, dtype=np.int64)).tolist():
        fixed[i] = False
        if size[i] == 0:
            fixed[i] = True
            continue
        clear = region[i] == sp.ARENA or (region[i] >= 0 and not any(
            o.offset < offset[i] + size[i] and offset[i] < o.offset + o.size
            and o.start <= end[i] and start[i] <= o.end
            for o in problem.regions[region[i]].occupants))
        if clear:
            meet = fixed & (region == region[i]) & (start <= end[i]) & (start[i] <= end) & \
                (offset < offset[i] + size[i]) & (offset[i] < offset + size)
            meet[i] = False
            clear = not meet.any()
        if clear:
            fixed[i] = True
        elif i in grouped:
            return None
    # the rest into the arena, largest first, each at the lowest gap that fits
    for i in sorted(np.flatnonzero(~fixed).tolist(), key=lambda j: -int(size[j])):
        region[i] = sp.ARENA
        if size[i] == 0:
            offset[i], fixed[i] = 0, True
            continue
        near = fixed & (region == sp.ARENA) & (start <= end[i]) & (start[i] <= end) & (size > 0)
        spans = zip(offset[near].tolist(), (offset[near] + size[near]).tolist())
        offset[i], fixed[i] = lowest_gap(spans, int(size[i]), a), True
    arena = region == sp.ARENA
    top = int((offset[arena] + size[arena]).max()) if arena.any() else 0
    return sp.Placement(tuple(region.tolist()), tuple(offset.tolist()), top)


def lowest_gap(spans, size: int, alignment: int) -> int:
    """The lowest offset (a multiple of ``alignment``) where ``size`` bytes
    meet none of ``spans`` ((start, end) byte ranges taken then)."""
    at = 0
    for lo, hi in sorted(spans):
        if lo >= at + size:
            break
        at = max(at, -(-hi // alignment) * alignment)
    return at


def smaller(plain: sp.Placement, state, anchor: Anchor | None) -> sp.Placement:
    """``plain`` (best-fit's placement of ``state``), or ``anchored``'s when its arena is smaller."""
    if anchor is None:
        return plain
    kept = anchored(state, anchor)
    return kept if kept is not None and kept.arena_size < plain.arena_size else plain
