"""Does the memory model agree with XLA?  Replays XLA's own order and places.

Three checks (issue 2): the arena XLA's places need equals XLA's temp
allocation; the model's live bytes for XLA's order never exceed XLA's temp;
and no two units XLA placed on overlapping bytes are live together in the
model (the model's lifetimes are never longer than XLA's where it matters).
``fixed_conflicts`` asks the last question of any order: units no plan moves
must never be live together on shared bytes.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from typing import Sequence

from olla_jax.graph.model import ScheduleGraph
from olla_jax.solve import problem as sp


@dataclasses.dataclass(frozen=True)
class Fidelity:
    xla_temp_bytes: int            # XLA's temp allocation(s)
    replayed_arena_bytes: int      # extent of XLA's places of the model's temp units
    order_peak_bytes: int          # order-level model cost of XLA's order
    flat_peak_bytes: int           # arena live bytes on the flat schedule, less idle regions
    conflicts: tuple[str, ...]     # pairs XLA overlapped that the model says are live together

    @property
    def ok(self) -> bool:
        return (self.replayed_arena_bytes <= self.xla_temp_bytes
                and self.order_peak_bytes <= self.xla_temp_bytes
                and self.flat_peak_bytes <= self.xla_temp_bytes
                and not self.conflicts)


def replay_xla(graph: ScheduleGraph) -> Fidelity:
    order = graph.xla_order
    xla_temp = sum(a.size for a in graph.allocations if a.kind == "temp")
    arena = 0
    for unit in graph.units:
        if unit.allocation == graph.temp_allocation:
            arena = max(arena, unit.offset + unit.size)
    # Live bytes of movable units on the flat schedule, less idle region space.
    pp, movable = graph.placement_problem(order)
    horizon = len(graph.flat)
    delta = [0] * (horizon + 1)
    for iv in pp.intervals:
        delta[iv.start] += iv.size
        delta[iv.end + 1] -= iv.size
    busy = [[0] * (horizon + 1) for _ in pp.regions]
    for r, region in enumerate(pp.regions):
        for occ in region.occupants:
            busy[r][occ.start] += 1
            busy[r][occ.end + 1] -= 1
    live, flat_peak, counts = 0, 0, [0] * len(pp.regions)
    for t in range(horizon):
        live += delta[t]
        idle = 0
        for r, region in enumerate(pp.regions):
            counts[r] += busy[r][t]
            idle += region.capacity if counts[r] == 0 else 0
        flat_peak = max(flat_peak, live - idle)
    # Pairs XLA put on overlapping bytes must not be live together in the model.
    return Fidelity(xla_temp_bytes=xla_temp, replayed_arena_bytes=arena,
                    order_peak_bytes=sp.order_cost(graph.order_problem(), order),
                    flat_peak_bytes=max(0, flat_peak),
                    conflicts=_overlaps(graph, order, graph.units))


def fixed_conflicts(graph: ScheduleGraph, order: Sequence[int]) -> tuple[str, ...]:
    """Fixed units (they stay at XLA's places under any plan) on overlapping
    bytes that ``order`` makes live together.  The model's edges must rule
    this out for every order they allow: XLA reuses a donated parameter's
    allocation for its output and for temporaries parked in between."""
    return _overlaps(graph, order, [u for u in graph.units if not u.movable])


def _overlaps(graph: ScheduleGraph, order: Sequence[int], units) -> tuple[str, ...]:
    spans = graph.unit_spans(order)
    conflicts = []
    by_alloc = defaultdict(list)
    for unit in units:
        for s, e in spans[unit.id]:
            by_alloc[unit.allocation].append((s, e, unit))
    for pieces in by_alloc.values():
        pieces.sort(key=lambda p: p[0])
        active = []
        for s, e, u in pieces:
            active = [a for a in active if a[1] >= s]
            for _, _, a in active:
                if a.id != u.id and a.offset < u.offset + u.size and u.offset < a.offset + a.size:
                    conflicts.append(f"{graph.values[a.values[0]].key} / {graph.values[u.values[0]].key}")
            active.append((s, e, u))
    return tuple(conflicts)
