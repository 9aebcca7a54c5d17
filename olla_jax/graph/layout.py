"""A solved order and placement, stated per XLA value and per slice.

``Layout`` is what the checker reads and what the executable rewrite applies:
the new entry order by name, each value's new (allocation, offset), the new
allocation sizes, and ``relocate`` that maps a thunk's old buffer slice to its
new place (a slice is identified by the instruction whose thunk holds it, which
fixes the moment and so the value, since XLA reuses bytes over time).
"""

from __future__ import annotations

import dataclasses
import functools
from collections import defaultdict
from typing import Container, Mapping, Sequence

from olla_jax.graph.model import ScheduleGraph
from olla_jax.solve import problem as sp
from olla_jax.errors import OllaJaxError


class LayoutError(OllaJaxError, ValueError):
    """A slice of the executable maps to no value, or a plan cannot be stated."""


def _round_up(x: int, a: int) -> int:
    return -(-x // a) * a


@dataclasses.dataclass(frozen=True)
class Recompute:
    """A value computed a second time: a copy of its producer's thunk runs just
    before entry instruction ``before`` and writes the value at ``place``,
    where ``late_users`` (every reader from ``before`` on) read it.  The first
    copy stays where the layout's ``places`` put it and dies earlier.

    A value may be recomputed several times (several entries, by ``before``):
    each copy's ``late_users`` are then the readers from its ``before`` up to
    the next copy's, and it dies after the last of them."""
    value: int                      # value id (XLA's logical buffer id)
    producer: str                   # entry instruction whose thunk is copied
    before: str
    late_users: tuple[str, ...]
    place: tuple[int, int]          # (allocation, offset) of the second copy
    size: int
    done_before: str = ""           # a collective run again (graph.regather): its done's place
    # A library call's copy (cuBLAS, cuDNN): its scratch (workspace) values,
    # written by the copy and read by nothing, each with the (allocation,
    # offset) the copy's own scratch takes (free while the copy runs).
    scratch: tuple[tuple[int, tuple[int, int]], ...] = ()


@dataclasses.dataclass(frozen=True)
class RecomputeCount:
    """How much a layout recomputes, as its notes and summary say it."""
    values: int          # entry values recomputed
    copies: int          # their copies (a value may be recomputed before several readers)
    in_bodies: int = 0   # copies inside loop bodies
    launches: int = -1   # kernel launches of the copies (-1: one each)

    @property
    def text(self) -> str:
        """"3 values (4 copies)", "3 values" when each has one copy; the launches
        too where copies of several results of one fusion run as one."""
        launches = self.copies if self.launches < 0 else self.launches
        counts = ([f"{self.copies} copies"] if self.copies != self.values else []) + (
            [f"{launches} launches"] if launches != self.copies else [])
        text = f"{self.values} value{'' if self.values == 1 else 's'}" + (
            f" ({', '.join(counts)})" if counts else "")
        return text + (f" and {self.in_bodies} inside loop bodies" if self.in_bodies else "")


def count_recomputes(recomputes: Sequence[Recompute], entry: Container[str]) -> RecomputeCount:
    """The copies a reader is served by (a feeder's copy, which only feeds
    another copy, has no late reader and is not counted) and their values;
    a copy whose producer is not in ``entry`` (the entry instructions) is a
    loop body's.  Copies of one producer before one instruction run as one
    launch (``apply.feed_back.edit_of``), a collective run again as its own."""
    own = [r for r in recomputes if r.late_users]
    top = [r for r in own if r.producer in entry]
    first: dict[tuple[str, str], int] = {}   # (producer, before) -> value of its launch
    launches = 0
    for r in top:
        key = (r.producer, r.before)
        if r.done_before or first.setdefault(key, r.value) == r.value:
            launches += 1   # its own launch (a value copied again before one instruction too)
    return RecomputeCount(values=len({r.value for r in top}), copies=len(top),
                          in_bodies=len(own) - len(top), launches=launches)


def recompute_count(layout: "Layout") -> RecomputeCount:
    """``count_recomputes`` of ``layout``'s copies."""
    return count_recomputes(layout.recomputes, layout.graph.node_index)


@dataclasses.dataclass(frozen=True)
class Layout:
    graph: ScheduleGraph = dataclasses.field(repr=False)
    order: tuple[int, ...]                         # node indices
    places: Mapping[int, tuple[int, int]]          # value id -> (allocation, offset)
    allocation_sizes: Mapping[int, int]            # allocation -> new size (changed ones)
    recomputes: tuple[Recompute, ...] = ()

    @property
    def order_names(self) -> tuple[str, ...]:
        return tuple(self.graph.nodes[n] for n in self.order)

    @property
    def temp_bytes(self) -> int:
        g = self.graph
        return sum(self.allocation_sizes.get(a.index, a.size)
                   for a in g.allocations if a.kind == "temp")

    @functools.cached_property
    def _flat_step(self) -> dict[str, int]:
        """XLA's flat step of every scheduled instruction (slices are looked up there)."""
        return {name: k for k, name in enumerate(self.graph.flat)}

    @functools.cached_property
    def _by_allocation(self) -> dict[int, list]:
        index = defaultdict(list)
        for v in self.graph.values.values():
            index[v.allocation].append(v)
        return index

    @functools.cached_property
    def _moved_allocations(self) -> frozenset[int]:
        g = self.graph
        moved = {g.values[v].allocation for v, place in self.places.items()
                 if place != (g.values[v].allocation, g.values[v].offset)}
        moved.update(g.values[r.value].allocation for r in self.recomputes)
        return frozenset(moved)

    @functools.cached_property
    def _late_places(self) -> dict[tuple[str, int], tuple[int, int]]:
        """(late reader, value id) -> place of the recomputed copy it reads.  A
        late reader that runs a block (a while loop reading the value through
        its carried tuple) reads it with the thunks of its body and condition:
        every instruction of its block reads the copy."""
        g = self.graph
        out = {}
        for r in self.recomputes:
            for user in r.late_users:
                node = g.node_index.get(user)
                if node is None:    # a copy inside a loop body: its readers there
                    out[(user, r.value)] = r.place
                    continue
                for name in g.flat[g.block_start[node]:g.block_end[node] + 1]:
                    out[(name, r.value)] = r.place
        return out

    def early_place(self, value_id: int) -> tuple[int, int]:
        v = self.graph.values[value_id]
        return self.places.get(value_id, (v.allocation, v.offset))

    def _window(self, instruction: str) -> tuple[int, int]:
        """XLA's flat steps at which ``instruction``'s thunk may touch memory:
        its own step, or its whole block for a control-flow entry instruction."""
        g = self.graph
        node = g.node_index.get(instruction)
        if node is not None:
            return g.block_start[node], g.block_end[node]
        step = self._flat_step.get(instruction)
        if step is None:
            raise LayoutError(f"a thunk names {instruction}, which is not on XLA's schedule")
        return step, step

    def relocate(self, instruction: str, allocation: int, offset: int, size: int) -> tuple[int, int]:
        """New (allocation, offset) of a slice that ``instruction``'s thunk uses."""
        if allocation not in self._moved_allocations:
            return allocation, offset
        first, last = self._window(instruction)
        covering = [v for v in self._by_allocation[allocation]
                    if v.offset <= offset and offset + size <= v.offset + v.size]
        live = [v for v in covering if v.xla_range[0] <= last and first <= v.xla_range[1]]
        if not live and instruction not in self.graph.node_index:
            # A control-flow instruction nested in a block (a while loop in a while
            # body) touches its own block's values (its predicate), which the graph
            # does not delimit: look in the enclosing entry block.  Any value found
            # there answers correctly when all of them moved to one place, and
            # where they moved apart the answer is refused below as ambiguous.
            node = self.graph.flat_node[self._flat_step[instruction]]
            first, last = self.graph.block_start[node], self.graph.block_end[node]
            live = [v for v in covering if v.xla_range[0] <= last and first <= v.xla_range[1]]
        if not live:
            raise LayoutError(f"slice {allocation}:{offset}+{size} of {instruction} matches no live value")
        exact = [v for v in live if v.offset == offset and v.size == size]
        predicate = self.graph.predicates.get(instruction)
        if any(v.id == predicate for v in exact):
            # A while thunk's own slice is its predicate (cond_buffer): the value
            # at its condition's root, whatever other flags shared that byte.
            exact = [v for v in exact if v.id == predicate]
        if len({self.places.get(v.id, (v.allocation, v.offset)) for v in exact}) == 1:
            live = exact  # e.g. a while thunk's predicate among values reusing its bytes
        new = set()
        for v in live:
            new_alloc, new_offset = self._late_places.get(
                (instruction, v.id), self.places.get(v.id, (v.allocation, v.offset)))
            new.add((new_alloc, new_offset + offset - v.offset))
        if len(new) > 1:
            raise LayoutError(f"slice {allocation}:{offset}+{size} of {instruction} is ambiguous: "
                              f"values {[v.key for v in live]} move apart")
        return new.pop()

    def relocate_logical(self, value_id: int, allocation: int, offset: int) -> tuple[int, int]:
        v = self.graph.values.get(value_id)
        if v is None:
            return allocation, offset
        new_alloc, new_offset = self.places.get(v.id, (v.allocation, v.offset))
        return new_alloc, new_offset + (offset - v.offset)


def realize(graph: ScheduleGraph, order: Sequence[int], placement: sp.Placement,
            movable: Sequence[int]) -> Layout:
    """Turn a per-unit placement of the movable units into per-value places."""
    places: dict[int, tuple[int, int]] = {}
    for uid, region, offset in zip(movable, placement.region, placement.offset):
        # ``movable`` names each interval's unit; a unit's intervals share one place.
        unit = graph.units[uid]
        if region == sp.ARENA:
            if graph.temp_allocation < 0:
                raise LayoutError("the plan uses a temp arena but XLA made no temp allocation")
            alloc = graph.temp_allocation
        else:
            alloc = graph.regions[region]
        for v, rel in zip(unit.values, unit.member_offsets):
            places[v] = (alloc, offset + rel)
    sizes = {}
    if graph.temp_allocation >= 0:
        sizes[graph.temp_allocation] = _round_up(placement.arena_size, graph.alignment) \
            if placement.arena_size else 0
    return Layout(graph=graph, order=tuple(order), places=places, allocation_sizes=sizes)


def xla_layout(graph: ScheduleGraph) -> Layout:
    """XLA's own plan, as a Layout (nothing moves)."""
    return Layout(graph=graph, order=graph.xla_order, places={}, allocation_sizes={})
