"""Replay an order and placement: live spans, arena in use over time, peak,
fragmentation.  The model's own view (the checker re-derives it separately)."""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from typing import NamedTuple

from olla_jax.graph.layout import Layout
from olla_jax.graph.model import ScheduleGraph


class Box(NamedTuple):
    """One live span of a unit at its place."""
    unit: int
    allocation: int
    offset: int
    size: int
    start: int
    end: int       # inclusive step


def unit_place(graph: ScheduleGraph, layout: Layout, unit_id: int) -> tuple[int, int]:
    """(allocation, offset of the unit's first byte) under ``layout``."""
    unit = graph.units[unit_id]
    first = graph.values[unit.values[0]]
    alloc, offset = layout.places.get(first.id, (first.allocation, first.offset))
    return alloc, offset - unit.member_offsets[0]


def boxes(graph: ScheduleGraph, layout: Layout) -> list[Box]:
    """One box per live span of every unit, at its place under ``layout`` (a
    recomputed value's first copy dies after its early readers; the spans of
    values XLA writes over it in place after its last copy are that copy's,
    ``copy_boxes``)."""
    boxes = []
    late = _late_readers(graph, layout)
    spans_of = graph.unit_spans(layout.order, late)
    moved = _moved_from(graph, layout, late, graph.flat_layout(layout.order))
    for unit, spans in zip(graph.units, spans_of):
        alloc, offset = unit_place(graph, layout, unit.id)
        at = moved.get(unit.id)
        boxes += [Box(unit.id, alloc, offset, unit.size, s, e) for s, e in spans
                  if at is None or s < at]
    return boxes


def _last_copies(graph: ScheduleGraph, layout: Layout, late, start) -> dict[int, object]:
    """Per recomputed value of ``late``, its last copy (the latest to run);
    ``start``: ``graph.flat_layout(layout.order)``."""
    last = {}
    for r in layout.recomputes:
        if r.value in late and r.late_users and (
                r.value not in last or
                start[graph.node_index[r.before]] > start[graph.node_index[last[r.value].before]]):
            last[r.value] = r
    return last


def _moved_from(graph: ScheduleGraph, layout: Layout, late, start) -> dict[int, int]:
    """Unit -> the step its last copy runs at: the unit's values written in
    place after it (its late part) live at the copy's place from then on
    (``budget.candidates.Candidate.successors``)."""
    return {graph.unit_of_value[v]: start[graph.node_index[r.before]]
            for v, r in _last_copies(graph, layout, late, start).items()}


def _late_readers(graph: ScheduleGraph, layout: Layout) -> dict[int, set[str]]:
    """Per recomputed value, the readers of its copies; values with a copy
    inside a loop body (a reader that is no entry instruction) are left out."""
    late: dict[int, set[str]] = {}
    skip = set()
    for r in layout.recomputes:
        if r.before not in graph.node_index or any(u not in graph.node_index for u in r.late_users):
            skip.add(r.value)
        late.setdefault(r.value, set()).update(r.late_users)
    return {v: users for v, users in late.items() if v not in skip}


def copy_boxes(graph: ScheduleGraph, layout: Layout) -> list[Box]:
    """One box per recomputed copy (unit -1): from the step of the instruction
    it runs before to its last late reader, at its place."""
    late = _late_readers(graph, layout)
    start = graph.flat_layout(layout.order)
    last = _last_copies(graph, layout, late, start)
    spans_of = graph.unit_spans(layout.order, late) if last else []
    out = []
    for r in layout.recomputes:
        if r.value in late:
            end = max((start[graph.node_index[u]] + graph.block_length(graph.node_index[u]) - 1
                       for u in r.late_users), default=0)   # (a feeder's: read by its copy alone)
            first = start[graph.node_index[r.before]]
            if last.get(r.value) is r:      # (and the late part written over it in place)
                end = max([end] + [e for s, e in spans_of[graph.unit_of_value[r.value]]
                                   if s >= first])
            out.append(Box(-1, r.place[0], r.place[1], r.size, first, max(first, end)))
    return out


def memory_timeline(graph: ScheduleGraph, layout: Layout,
                    allocations: Collection[int] | None = None) -> list[int]:
    """Per step of the flattened schedule under ``layout.order``: bytes of the
    temp arena in use (units placed in it that are live then, and recomputed
    copies; a unit's bytes are counted once however many aliased values it
    holds).  ``allocations``: those allocations instead of the arena (e.g. the
    host-memory ones of an offloaded step)."""
    horizon = len(graph.flat)
    within = {graph.temp_allocation} if allocations is None else set(allocations)
    delta = [0] * (horizon + 1)
    for box in boxes(graph, layout) + copy_boxes(graph, layout):
        if box.allocation in within:
            delta[box.start] += box.size
            delta[min(box.end, horizon - 1) + 1] -= box.size
    out, live = [], 0
    for step in range(horizon):
        live += delta[step]
        out.append(live)
    return out



@dataclasses.dataclass(frozen=True)
class Simulation:
    arena_bytes: int          # the temp allocation's size under the layout
    live_peak_bytes: int      # most bytes of the arena in use at one step
    peak_step: int
    boxes: tuple[Box, ...]

    @property
    def fragmentation(self) -> float:
        """Share of the arena never needed at the peak: 1 - live peak / arena."""
        return 0.0 if not self.arena_bytes else 1 - self.live_peak_bytes / self.arena_bytes


def simulate(layout: Layout) -> Simulation:
    graph = layout.graph
    timeline = memory_timeline(graph, layout)
    peak = max(timeline, default=0)
    return Simulation(arena_bytes=layout.temp_bytes, live_peak_bytes=peak,
                      peak_step=timeline.index(peak) if timeline else 0,
                      boxes=tuple(boxes(graph, layout)))
