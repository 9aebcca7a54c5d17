"""The scheduling graph and memory model of one compiled XLA module.

Nodes are the entry computation's instructions.  An entry instruction that
calls computations (while, conditional, call, async) owns a *block*: the steps
of XLA's flattened schedule that run its callees, followed by itself.  Blocks
move as a whole when the entry order changes, so values inside a block keep
their own liveness.

Values are XLA's HloValues with XLA's size and place.  *Units* are the groups
that must share one place: values XLA put at the same bytes while both were
live (aliases and in-place pairs) and values tied by control flow (a while's
operand, body parameter, body root and result).  Units in the temp allocation
or parked as scratch in an output allocation are *movable*; parameters,
constants and everything live out are *fixed* where XLA put them, and so are
temporaries in another memory space (host memory, ``S(5)``: what XLA's host
offloader copied there), in allocations of their own that are not the arena;
XLA's order between those that take turns on the same bytes is kept
(``_fixed_reuse_edges``).

Donation: a donated parameter's allocation is also its aliased output's
(XLA's input_output_alias) and XLA does not treat it as read-only: it holds
the input until its last read, the output from its write, and in between XLA
may park temporaries there.  Everything XLA put there stays (the checker pins
a parameter allocation's values), so such fixed units keep XLA's order among
themselves (``_fixed_reuse_edges``); the allocation's idle bytes are a region
movable units may use, as an output allocation's are.
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
import heapq
import math
from collections import defaultdict
from typing import AbstractSet, Callable, Mapping, Sequence

from olla_jax import dumps
from olla_jax.solve import problem as sp
from olla_jax.errors import OllaJaxError


# XLA's default memory space (device memory); another (host memory is S(5)) holds what
# XLA's host offloader moved there: kept where XLA put it, out of the arena.
DEFAULT_SPACE = 0
HOST_SPACE = 5      # XLA:GPU's host memory space (a shape's layout ``S(5)``)


class UnsupportedProgram(OllaJaxError, ValueError):
    """The module has a construct the memory model does not cover."""


class OutOfTime(OllaJaxError):
    """``build`` passed its deadline (between two of its phases)."""


@dataclasses.dataclass(frozen=True)
class Allocation:
    index: int
    size: int
    kind: str            # "parameter", "constant", "thread_local", "output", "temp", "other_space"
    parameter_number: int = -1
    live_out: bool = False
    is_tuple: bool = False      # holds a tuple's index table (the runtime writes it)
    color: int = 0              # XLA's memory space (0: device memory; 5: host memory, S(5))


@dataclasses.dataclass(frozen=True)
class Value:
    id: int
    key: str
    size: int
    allocation: int
    offset: int
    xla_range: tuple[int, int]      # inclusive, on XLA's flattened schedule
    def_node: int                   # entry node whose block defines it
    touches: frozenset[int]         # entry nodes whose blocks need it resident
    live_in: bool
    live_out: bool


@dataclasses.dataclass(frozen=True)
class Unit:
    id: int
    values: tuple[int, ...]         # value ids
    allocation: int                 # XLA's allocation
    offset: int                     # XLA's offset of the unit's first byte
    size: int
    member_offsets: tuple[int, ...]  # per value, bytes from the unit's first byte
    movable: bool


@dataclasses.dataclass(frozen=True)
class ScheduleGraph:
    """Nodes, dependencies, values, units and allocations of one module."""
    nodes: tuple[str, ...]                   # entry instructions in XLA's order
    flat: tuple[str, ...]                    # XLA's flattened schedule
    block_end: tuple[int, ...]               # per node, its own step on the flat schedule
    edges: tuple[tuple[int, int], ...]
    values: dict[int, Value]
    units: tuple[Unit, ...]
    allocations: tuple[Allocation, ...]
    temp_allocation: int                     # the arena we re-plan (-1 when XLA has none)
    alignment: int = 64
    # while instruction (entry or nested) -> id of the value its thunk reads as
    # its predicate (its condition's root); see Layout.relocate
    predicates: Mapping[str, int] = dataclasses.field(default_factory=dict)

    # ---- derived views -------------------------------------------------
    @functools.cached_property
    def block_start(self) -> tuple[int, ...]:
        return tuple((self.block_end[i - 1] + 1) if i else 0 for i in range(len(self.nodes)))

    @functools.cached_property
    def node_index(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.nodes)}

    @functools.cached_property
    def flat_node(self) -> tuple[int, ...]:
        """Per flat step, the entry node whose block it belongs to."""
        out = []
        for node, end in enumerate(self.block_end):
            out.extend([node] * (end + 1 - len(out)))
        return tuple(out)

    @functools.cached_property
    def unit_of_value(self) -> dict[int, int]:
        return {v: u.id for u in self.units for v in u.values}

    def block_length(self, node: int) -> int:
        return self.block_end[node] - self.block_start[node] + 1

    @functools.cached_property
    def other_space_bytes(self) -> dict[int, int]:
        """Per memory space other than device memory (5: host), the bytes of XLA's
        temp allocations there: fixed, outside the arena (host offloading)."""
        out: dict[int, int] = defaultdict(int)
        for a in self.allocations:
            if a.kind == "other_space":
                out[a.color] += a.size
        return dict(out)

    @property
    def xla_order(self) -> tuple[int, ...]:
        return tuple(range(len(self.nodes)))

    # ---- liveness under an order ----------------------------------------
    def flat_layout(self, order: Sequence[int]) -> list[int]:
        """Per node, the flat step its block starts at under ``order``."""
        start = [0] * len(self.nodes)
        step = 0
        for node in order:
            start[node] = step
            step += self.block_length(node)
        return start

    def value_interval(self, value: Value, order_pos: Sequence[int], layout: Sequence[int],
                       horizon: int) -> tuple[int, int]:
        """Inclusive flat interval of ``value`` under an order (see module doc)."""
        s, e = value.xla_range
        if value.live_in:
            start = 0
        else:
            d = value.def_node
            start = layout[d] + (s - self.block_start[d])
        if value.live_out:
            return start, horizon - 1
        last = max(value.touches, key=lambda n: order_pos[n])
        xla_last = self.flat_node[min(e, len(self.flat_node) - 1)]
        if last == xla_last:
            end = layout[last] + (e - self.block_start[last])
        else:
            end = layout[last] + self.block_length(last) - 1
        return start, max(start, end)

    def unit_spans(self, order: Sequence[int],
                   late_readers: Mapping[int, AbstractSet[str]] | None = None
                   ) -> list[list[tuple[int, int]]]:
        """Per unit, its disjoint live spans under ``order``.  A unit tied by
        control flow can be idle inside a loop body (XLA reuses those bytes
        between the body's last read of the carried value and its new write).
        ``late_readers``: per value id, the readers a recomputed copy serves
        instead (the value then dies after its other readers)."""
        pos = [0] * len(self.nodes)
        for i, n in enumerate(order):
            pos[n] = i
        layout = self.flat_layout(order)
        horizon = len(self.flat)
        late_readers = late_readers or {}

        def span(v: int) -> tuple[int, int]:
            s, e = self.value_interval(self.values[v], pos, layout, horizon)
            if v in late_readers:
                early = [n for n in self.values[v].touches if self.nodes[n] not in late_readers[v]]
                e = max([s, *(layout[n] + self.block_length(n) - 1 for n in early)])
            return s, e
        return [merged_spans(span(v) for v in unit.values) for unit in self.units]

    def unit_intervals(self, order: Sequence[int]) -> list[tuple[int, int]]:
        """Per unit, the hull [first, last] of its live spans."""
        return [(spans[0][0], spans[-1][1]) for spans in self.unit_spans(order)]

    # ---- the solver's problems ------------------------------------------
    @functools.cached_property
    def regions(self) -> tuple[int, ...]:
        """Allocations whose idle space may hold movable units: outputs (and donated
        inputs) in device memory (a movable unit is a device value: never host bytes)."""
        fixed_allocs = {u.allocation for u in self.units if not u.movable}
        return tuple(a.index for a in self.allocations
                     if a.live_out and a.kind in ("output", "parameter") and not a.is_tuple
                     and a.color == DEFAULT_SPACE and a.index in fixed_allocs)

    def _inner_units(self) -> dict[int, int]:
        """Movable units that live inside one node's block only: unit id -> node."""
        inner = {}
        for unit in self.units:
            if not unit.movable:
                continue
            touched = set().union(*(self.values[v].touches for v in unit.values))
            if len(touched) != 1:
                continue
            node = next(iter(touched))
            if self.block_length(node) > 1:
                inner[unit.id] = node
        return inner

    def order_problem(self, *, for_bound: bool = False) -> sp.OrderProblem:
        """The order problem.  Its items are live over their hull, which for a unit
        idle inside a loop body over-counts that body; with ``for_bound`` the
        node's extra is lowered by such units' sizes (it may go negative) so
        that the problem's cost never exceeds the true need: a valid base for a
        lower bound."""
        inner = self._inner_units()
        # Once (2 s a call on 100k nodes): both uses below read XLA's spans.
        xla_spans = self._xla_spans if for_bound else []
        extra = self._node_extra(self._bound_extra_parts if for_bound else
                                 self._plain_extra_parts, above=0)
        if for_bound:
            segments, gapped = self._bound_segments
        else:
            segments = tuple((a, 0, self.allocations[a].size) for a in self.regions)
            gapped = frozenset()
        segments_of = defaultdict(list)
        for r, (alloc, lo, hi) in enumerate(segments):
            segments_of[alloc].append((r, lo, hi))
        items = []
        for unit in self.units:
            if unit.id in inner:
                continue
            if not unit.movable and unit.id in gapped:
                continue  # for a bound, its region counts as idle throughout (never too high)
            if unit.movable:
                regions = [sp.ARENA]
            else:   # fixed outside any region: never in the arena's way
                regions = [r for r, lo, hi in segments_of.get(unit.allocation, ())
                           if lo < unit.offset + unit.size and unit.offset < hi]
            if not regions:
                continue
            vals = [self.values[v] for v in unit.values]
            item = sp.Item(
                size=unit.size,
                defs=tuple(sorted({v.def_node for v in vals})),
                touches=tuple(sorted(set().union(*(v.touches for v in vals)))),
                region=regions[0],
                live_in=any(v.live_in for v in vals),
                live_out=any(v.live_out for v in vals))
            items += [dataclasses.replace(item, region=r) if r != item.region else item
                      for r in regions]
        sizes = tuple(hi - lo for _, lo, hi in segments)
        return sp.OrderProblem(num_nodes=len(self.nodes), edges=self.edges, items=tuple(items),
                               node_extra=tuple(extra), region_sizes=sizes)

    @functools.cached_property
    def _bound_segments(self) -> tuple[tuple[tuple[int, int, int], ...], frozenset[int]]:
        """The bound's regions: each output region cut at the edges of the
        fixed units it holds, as (allocation, first byte, end), and the fixed
        units left out (idle in a gap of XLA's order: idle throughout).  A
        region counts busy whole while any of its items is live; beside a
        fixed unit on part of its bytes (XLA's temporaries parked in a donated
        input) the rest may hold movable units, so for a bound each piece is
        busy only while a unit on it is live."""
        gapped = frozenset(u.id for u, spans in zip(self.units, self._xla_spans)
                           if len(spans) > 1 and not u.movable)
        cuts = {a: {0, self.allocations[a].size} for a in self.regions}
        for unit in self.units:
            if not unit.movable and unit.id not in gapped and unit.allocation in cuts:
                cuts[unit.allocation].update((unit.offset, unit.offset + unit.size))
        edges = {a: sorted(c) for a, c in cuts.items()}
        segments = tuple((a, lo, hi) for a in self.regions
                         for lo, hi in zip(edges[a], edges[a][1:]))
        return segments, gapped

    def _extra_parts(self, inner: dict[int, int], xla_spans):
        """What makes the nodes' extra (``order_problem``): (size, first, last
        flat step) of each inner unit (``_inner_units``), on XLA's own flat
        schedule, (size, nodes) of each movable unit idle in gaps, at the
        nodes after them, and the region pieces held by fixed units inside
        one block (``_inner_fixed``) (``xla_spans``: a bound's; none without)."""
        spans_in = []
        for unit_id in inner:
            unit = self.units[unit_id]
            if xla_spans:   # a bound's: idle between its spans (carried through an inner
                # loop, its bytes reused there: over its hull a MAML step's bound passed the plan)
                spans_in.extend((unit.size, s, e) for s, e in xla_spans[unit_id])
                continue
            spans_in.append((unit.size, min(self.values[v].xla_range[0] for v in unit.values),
                             max(self.values[v].xla_range[1] for v in unit.values)))
        gaps = []
        for unit, spans in zip(self.units, xla_spans):
            if unit.id in inner or len(spans) < 2 or not unit.movable:
                continue
            gaps.append((unit.size, tuple({self.flat_node[a[1] + 1] for a in spans[:-1]})))
        return spans_in, gaps, self._inner_fixed() if xla_spans else {}

    def _inner_fixed(self) -> dict[int, tuple]:
        """For a bound: per node whose block holds fixed units in a region that
        live inside that block only (XLA's loop-body temporaries parked in a
        donated input or an output), the bound's region pieces they cover, as
        (piece size, its allocation's size), and per such unit its (first,
        last flat step) and the indices of its pieces there.  The node's item
        makes those pieces busy over the whole block; they are idle at the
        block's other steps, where its inner units may sit (``_node_extra``)."""
        segments, gapped = self._bound_segments
        by_alloc = defaultdict(list)
        for r, (alloc, lo, hi) in enumerate(segments):
            by_alloc[alloc].append((r, lo, hi))
        found = defaultdict(list)
        for unit, spans in zip(self.units, self._xla_spans):
            if unit.movable or unit.id in gapped or unit.allocation not in by_alloc:
                continue
            vals = [self.values[v] for v in unit.values]
            touched = set().union(*(v.touches for v in vals))
            if len(touched) != 1 or any(v.live_in or v.live_out for v in vals):
                continue
            node = next(iter(touched))
            if self.block_length(node) < 2:
                continue
            pieces = tuple(r for r, lo, hi in by_alloc[unit.allocation]
                           if lo < unit.offset + unit.size and unit.offset < hi)
            found[node].append((spans[0][0], spans[-1][1], pieces))
        out = {}
        for node, units in found.items():
            pieces = sorted({r for _, _, rs in units for r in rs})
            out[node] = (tuple((r, segments[r][2] - segments[r][1],
                                self.allocations[segments[r][0]].size) for r in pieces),
                         tuple(units))
        return out

    def _node_extra(self, parts, *, above: int) -> list[int]:
        """Per node, the peak of the inner units larger than ``above`` bytes
        over its block, less the units larger than ``above`` idle in a gap
        there (``parts``: ``_extra_parts``).  A threshold problem counts only
        units larger than its threshold: the others may sit in output regions
        it no longer counts as idle.  Where fixed units inside the block hold
        region pieces (``_inner_fixed``: a bound's), the peak is of the inner
        units less those pieces idle at each step (the scan's remat'd body:
        XLA parked its temporaries in a donated input, one after another)."""
        extra = [0] * len(self.nodes)
        per_step = defaultdict(int)
        for size, s, e in parts[0]:
            if size > above:
                for step in range(s, e + 1):
                    per_step[step] += size
        for step, size in per_step.items():
            node = self.flat_node[min(step, len(self.flat_node) - 1)]
            extra[node] = max(extra[node], size)
        for node, (pieces, units) in parts[2].items():
            extra[node] = self._block_peak(node, pieces, units, per_step, above)
        for size, nodes in parts[1]:
            if size > above:
                for node in nodes:
                    extra[node] -= size
        return extra

    def _block_peak(self, node: int, pieces, units, per_step, above: int) -> int:
        """The most, over ``node``'s block steps, of its inner units' bytes
        (``per_step``) less the bytes of ``pieces`` (region pieces of
        allocations larger than ``above``) that none of ``units`` (fixed
        units inside the block, as ``_inner_fixed``'s) holds at that step."""
        counted = {r: size for r, size, whole in pieces if whole > above}
        held = defaultdict(int)    # piece -> fixed units on it live at the step
        events = defaultdict(list)
        for s, e, rs in units:
            for r in rs:
                if r in counted:
                    events[s].append((r, 1))
                    events[e + 1].append((r, -1))
        idle = sum(counted.values())
        best = None
        for step in range(self.block_start[node], self.block_end[node] + 1):
            for r, d in events.get(step, ()):
                before = held[r]
                held[r] += d
                if before == 0 and held[r]:
                    idle -= counted[r]
                elif before and held[r] == 0:
                    idle += counted[r]
            need = per_step.get(step, 0) - idle
            best = need if best is None else max(best, need)
        return best

    @functools.cached_property
    def _xla_spans(self):
        """``unit_spans`` of XLA's order (2 s on 100k nodes: the bound's problems share it)."""
        return self.unit_spans(self.xla_order)

    @functools.cached_property
    def _bound_extra_parts(self):
        """``_extra_parts`` of the bound's order problem, for its threshold problems."""
        return self._extra_parts(self._inner_units(), self._xla_spans)

    @functools.cached_property
    def _plain_extra_parts(self):
        """``_extra_parts`` of the plain order problem, for its threshold problems."""
        return self._extra_parts(self._inner_units(), [])

    @functools.cached_property
    def order_problem_for_bound(self) -> sp.OrderProblem:
        """``order_problem(for_bound=True)``, built once: the bound's threshold
        problems all filter it (0.19 s a build on resnet50 small, 23 thresholds)."""
        return self.order_problem(for_bound=True)

    def threshold_problem(self, c: int, *, for_bound: bool = False) -> sp.OrderProblem:
        """The order problem seen from units larger than ``c`` bytes: only they
        count in the arena, and only regions larger than ``c`` can hold them
        (a unit fits only in a region at least its size).  Its cost is a lower
        bound of the arena any placement needs under that order."""
        base = self.order_problem_for_bound if for_bound else self.order_problem()
        items = tuple(i for i in base.items if i.region != sp.ARENA or i.size > c)
        # a piece of a bound's region counts when its allocation can hold more than c
        whole = ([self.allocations[a].size for a, _, _ in self._bound_segments[0]] if for_bound
                 else base.region_sizes)
        sizes = tuple(s if w > c else 0 for s, w in zip(base.region_sizes, whole))
        if for_bound:
            sizes = self._fillable(c, sizes)
        extra = base.node_extra
        parts = self._bound_extra_parts if for_bound else self._plain_extra_parts
        if c > 0 and (parts[2] or any(p[0] <= c for part in parts[:2] for p in part)):
            # loop-body units of c bytes or less, like the items left out, may
            # sit in the regions of c bytes or less that no longer count as idle
            extra = tuple(self._node_extra(parts, above=c))
        return dataclasses.replace(base, items=items, region_sizes=sizes, node_extra=extra)

    def _fillable(self, c: int, sizes: tuple[int, ...]) -> tuple[int, ...]:
        """A bound's region sizes, each lowered to the most that movable units
        larger than ``c`` bytes can fill of it: the units in a region at one
        step are disjoint, whole, and larger than ``c`` (the threshold
        problem's arena counts no others), so they sum to some subset sum of
        those units' sizes (a 2.25 MiB output among 1, 2 and 4 MiB units
        holds 2 MiB of them, where the fluid count lets it hold 2.25).  Only
        a region that is one piece (``_bound_segments``): a unit may straddle
        the cut between two pieces of one allocation."""
        segments = self._bound_segments[0]
        pieces = defaultdict(int)
        for alloc, _, _ in segments:
            pieces[alloc] += 1
        units = self._movable_sizes
        kinds = sorted((s for s in units if s > c), reverse=True)
        found: dict[int, int] = {}
        out = list(sizes)
        for r, (alloc, _, _) in enumerate(segments):
            if out[r] > 0 and pieces[alloc] == 1:
                if out[r] not in found:
                    found[out[r]] = _subset_sum(kinds, units, out[r])
                out[r] = found[out[r]]
        return tuple(out)

    @functools.cached_property
    def _movable_sizes(self) -> dict[int, int]:
        """How many movable units there are of each size."""
        count: dict[int, int] = defaultdict(int)
        for unit in self.units:
            if unit.movable and unit.size > 0:
                count[unit.size] += 1
        return dict(count)

    def bound_problems(self) -> list[sp.OrderProblem]:
        """Problems whose min-cut bounds are all valid for the arena, one per
        threshold: 0 (the plain relaxation) and each output region's size (the
        largest keeps only the units no output can hold)."""
        sizes = self.order_problem().region_sizes
        return [self.threshold_problem(c, for_bound=True) for c in sorted({0, *sizes})]

    def placement_problem(self, order: Sequence[int], spans=None
                          ) -> tuple[sp.PlacementProblem, tuple[int, ...]]:
        """The movable units' live spans under ``order`` as intervals (the spans
        of one unit tied to one offset); also, per interval, its unit id.
        ``spans``: per unit, its spans when not ``unit_spans(order)``'s
        (``graph.regather``: a re-gathered unit is idle in between)."""
        spans = self.unit_spans(order) if spans is None else spans
        occupants = defaultdict(list)
        regions = set(self.regions)   # a set: the tuple's ``in`` made this units x regions
        for unit in self.units:
            if not unit.movable and unit.allocation in regions:
                for s, e in spans[unit.id]:
                    occupants[unit.allocation].append(sp.Occupant(unit.offset, unit.size, s, e))
        regions = tuple(sp.Region(self.allocations[a].size, tuple(occupants[a])) for a in self.regions)
        intervals, owner, groups = [], [], []
        for unit in self.units:
            if not unit.movable:
                continue
            first = len(intervals)
            for s, e in spans[unit.id]:
                intervals.append(sp.Interval(unit.size, s, e))
                owner.append(unit.id)
            if len(intervals) - first > 1:
                groups.append(tuple(range(first, len(intervals))))
        return (sp.PlacementProblem(intervals=tuple(intervals), regions=regions,
                                    alignment=self.alignment, same_offset=tuple(groups)),
                tuple(owner))

    def xla_placement(self, movable: Sequence[int]) -> sp.Placement:
        """XLA's own places of the movable units, as a Placement."""
        region_of = {alloc: r for r, alloc in enumerate(self.regions)}
        regs, offs = [], []
        for uid in movable:
            unit = self.units[uid]
            regs.append(sp.ARENA if unit.allocation == self.temp_allocation
                        else region_of.get(unit.allocation, -2))
            offs.append(unit.offset)
        temp = self.allocations[self.temp_allocation].size if self.temp_allocation >= 0 else 0
        return sp.Placement(tuple(regs), tuple(offs), temp)


# Subset sums are taken over at most this many units (of the sizes' gcd) per capacity.
SUBSET_MAX_UNITS = 1 << 18


def _subset_sum(kinds: Sequence[int], count: dict[int, int], cap: int) -> int:
    """The most that some of the units (``count[size]`` of each size in
    ``kinds``, largest first) sum to without passing ``cap``; ``cap`` itself
    where the gcd's units would pass SUBSET_MAX_UNITS (a bound, only weaker).
    Equal sizes go in as 1, 2, 4, ... of them (a bounded knapsack by binary
    splitting) into a bitset of the sums reached."""
    kinds = [k for k in kinds if k <= cap]
    got = 0
    for k in kinds:                      # largest first: often ``cap`` at once
        got += k * min(count[k], (cap - got) // k)
    if got == cap or not kinds:
        return got
    g = functools.reduce(math.gcd, kinds)
    units = cap // g
    if units > SUBSET_MAX_UNITS:
        return cap
    mask, bits = (1 << (units + 1)) - 1, 1
    for k in kinds:
        left, step = count[k], 1
        while left > 0:
            take = min(step, left)
            bits |= (bits << (k // g * take)) & mask
            left -= take
            step *= 2
        if bits >> units & 1:
            return units * g
    return (bits.bit_length() - 1) * g


# ---------------------------------------------------------------------------
# Building the graph from the dumps.

def _allocations(assignment) -> tuple[tuple[Allocation, ...], dict[int, tuple[int, int, int]]]:
    allocs, place = [], {}
    for a in assignment.buffer_allocations:
        if a.is_thread_local:
            kind = "thread_local"
        elif a.is_entry_computation_parameter:
            kind = "parameter"
        elif a.is_constant:
            kind = "constant"
        elif a.maybe_live_out:
            kind = "output"
        elif a.color != DEFAULT_SPACE:
            kind = "other_space"
        else:
            kind = "temp"
        allocs.append(Allocation(a.index, a.size, kind,
                                 a.parameter_number if a.is_entry_computation_parameter else -1,
                                 bool(a.maybe_live_out), bool(a.is_tuple), int(a.color)))
        for assigned in a.assigned:
            place[assigned.logical_buffer_id] = (a.index, assigned.offset, assigned.size)
    allocs.sort(key=lambda a: a.index)
    if [a.index for a in allocs] != list(range(len(allocs))):
        raise UnsupportedProgram("buffer allocations are not numbered 0..n-1")
    return tuple(allocs), place


class _UnionFind:
    def __init__(self, items):
        self.parent = {i: i for i in items}

    def find(self, x):
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a, b):
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def build(hlo_proto_bytes: bytes, values_text: str, live_range_text: str,
          alignment: int = 64, deadline: float | None = None) -> ScheduleGraph:
    """The scheduling graph of a module from XLA's dumps (see ``capture``).
    ``deadline``: a ``time.monotonic()`` time; past it, ``OutOfTime`` is raised
    between phases (plan() builds the graph on its time limit: 15 s on a
    10k-instruction step at load 19, past a 10 s limit before any search)."""
    import time

    def in_time() -> None:
        if deadline is not None and time.monotonic() > deadline:
            raise OutOfTime("the graph build ran past its deadline")
    proto = dumps.parse_hlo_proto(hlo_proto_bytes)
    in_time()
    records = dumps.parse_values(values_text)
    in_time()
    live = dumps.parse_live_ranges(live_range_text)
    module = proto.hlo_module
    comps = {c.id: c for c in module.computations}
    entry = comps.get(module.entry_computation_id)
    if entry is None:
        raise UnsupportedProgram("the module names no entry computation")
    by_id, by_name, comp_of = {}, {}, {}
    for c in module.computations:   # one pass: each proto field read costs (140k on 20k nodes)
        for i in c.instructions:
            name = i.name
            by_id[i.id] = by_name[name] = i
            comp_of[name] = c.id

    # Nodes: entry instructions in XLA's flattened order; blocks end at each.
    entry_names = {i.name for i in entry.instructions}
    flat = live.sequence
    nodes = tuple(n for n in flat if n in entry_names)
    if set(nodes) != entry_names:
        missing = sorted(entry_names - set(nodes))[:5]
        raise UnsupportedProgram(f"entry instructions missing from XLA's schedule: {missing}")
    flat_pos = {}
    for step, name in enumerate(flat):
        if name in flat_pos:
            raise UnsupportedProgram(f"instruction {name} appears twice in the flattened schedule "
                                     "(a computation called from several places)")
        flat_pos[name] = step
    block_end = tuple(flat_pos[n] for n in nodes)
    if block_end[-1] != len(flat) - 1:
        raise UnsupportedProgram("XLA's flattened schedule does not end with an entry instruction")
    flat_node = []
    for node, end in enumerate(block_end):
        flat_node.extend([node] * (end + 1 - len(flat_node)))
    node_index = {n: i for i, n in enumerate(nodes)}

    def node_of(instruction: str) -> int:
        if instruction not in flat_pos:
            raise UnsupportedProgram(f"instruction {instruction} is not on XLA's flattened schedule")
        return flat_node[flat_pos[instruction]]

    # Dependencies between entry instructions: operands and control edges.
    edges = set()
    for instr in entry.instructions:
        v = node_index[instr.name]
        for pred in list(instr.operand_ids) + list(instr.control_predecessor_ids):
            u = node_index[by_id[pred].name]
            if u != v:
                edges.add((u, v))

    in_time()
    allocations, place = _allocations(proto.buffer_assignment)
    in_time()
    root_name = by_id[entry.root_id].name if entry.root_id in by_id else nodes[-1]
    horizon = len(flat)

    values: dict[int, Value] = {}
    for k, rec in enumerate(records.values()):
        if k % 512 == 511:
            in_time()   # a quarter of the build on a few thousand values
        if rec.key not in live.ranges:
            if rec.id in place and allocations[place[rec.id][0]].kind in ("temp", "output"):
                raise UnsupportedProgram(f"value {rec.key} has an allocation but no live range")
            continue
        if rec.id not in place:
            raise UnsupportedProgram(f"value {rec.key} has no allocation in XLA's assignment")
        alloc, offset, size = place[rec.id]
        s, e = live.ranges[rec.key]
        touches = {node_of(rec.defining_instruction)}
        touches.update(node_of(p.instruction) for p in rec.positions)
        touches.update(node_of(u.instruction) for u in rec.uses)
        touches.add(flat_node[min(s, horizon - 1)])
        touches.add(flat_node[min(e, horizon - 1)])
        def_instr = by_name.get(rec.defining_instruction)
        live_in = (def_instr is not None and def_instr.opcode == "parameter"
                   and comp_of[def_instr.name] == entry.id)
        live_out = e >= horizon - 1 and any(p.instruction == root_name for p in rec.positions) \
            or e >= horizon
        values[rec.id] = Value(
            id=rec.id, key=rec.key, size=size, allocation=alloc, offset=offset,
            xla_range=(s, min(e, horizon - 1)), def_node=node_of(rec.defining_instruction),
            touches=frozenset(touches), live_in=live_in, live_out=live_out)

    in_time()
    units = _units(values, records, allocations, by_name, comps, in_time)
    in_time()
    temps = [a.index for a in allocations if a.kind == "temp"]
    if len(temps) > 1:
        raise UnsupportedProgram(f"XLA made {len(temps)} temp allocations; one is supported")
    graph = ScheduleGraph(nodes=nodes, flat=flat, block_end=block_end, edges=(), values=values,
                          units=units, allocations=allocations,
                          temp_allocation=temps[0] if temps else -1, alignment=alignment,
                          predicates=_while_predicates(records, values, by_name, comps))
    in_time()
    edges |= _in_place_edges(graph)
    edges |= _fixed_reuse_edges(graph)
    in_time()
    return dataclasses.replace(graph, edges=tuple(sorted(edges)))


def _while_predicates(records, values, by_name, comps) -> dict[str, int]:
    """Per while instruction, the value at its condition's root: the byte its
    thunk's ``cond_buffer`` names.  XLA may give that byte to other predicates
    of the loop's block (a flag computed in the body) that a plan moves apart,
    so the slice alone does not say which value it is."""
    roots = {}
    for instr in by_name.values():
        if instr.opcode == "while" and len(instr.called_computation_ids) == 2:
            cond = comps.get(instr.called_computation_ids[1])  # body first, then condition
            root = next((i.name for i in cond.instructions if i.id == cond.root_id), None) \
                if cond is not None else None
            if root is not None:
                roots[root] = instr.name
    found = defaultdict(set)
    for rec in records.values():
        if rec.id in values:
            for p in rec.positions:
                if p.instruction in roots and p.index == ():
                    found[roots[p.instruction]].add(rec.id)
    return {name: ids.pop() for name, ids in found.items() if len(ids) == 1}


def _units(values, records, allocations, by_name, comps,
           in_time: Callable[[], None] = lambda: None) -> tuple[Unit, ...]:
    uf = _UnionFind(values)
    # Rule 1: same bytes of one allocation while both are live (aliases, in-place pairs).
    by_alloc = defaultdict(list)
    for v in values.values():
        by_alloc[v.allocation].append(v)
    # Swept by time with the live values kept by offset: only those that start
    # within the longest live value's size below v's end can share its bytes
    # (the live values of one allocation mostly sit side by side, so this is
    # a few per value, not all of them: the temp allocation's are thousands).
    for vals in by_alloc.values():
        vals.sort(key=lambda v: v.xla_range[0])
        by_offset: list[tuple[int, int]] = []    # (offset, value id) of the live values
        ending: list[tuple[int, int, int]] = []  # heap of (last step, offset, value id)
        largest: list[tuple[int, int]] = []      # heap of (-size, value id), dead ones lazily
        alive: set[int] = set()
        for v in vals:
            while ending and ending[0][0] < v.xla_range[0]:
                _, off, vid = heapq.heappop(ending)
                del by_offset[bisect.bisect_left(by_offset, (off, vid))]
                alive.discard(vid)
            while largest and largest[0][1] not in alive:
                heapq.heappop(largest)
            longest = -largest[0][0] if largest else 0
            hi = bisect.bisect_left(by_offset, (v.offset + v.size, -1))
            lo = bisect.bisect_left(by_offset, (v.offset - longest, -1))
            for _, aid in by_offset[lo:hi]:
                a = values[aid]
                if a.offset < v.offset + v.size and v.offset < a.offset + a.size:
                    uf.union(a.id, v.id)
            bisect.insort(by_offset, (v.offset, v.id))
            heapq.heappush(ending, (v.xla_range[1], v.offset, v.id))
            heapq.heappush(largest, (-v.size, v.id))
            alive.add(v.id)
    in_time()   # between the rules: raises OutOfTime past the build's deadline
    # Rule 1b: an empty value (a conditional's ``()`` operand, as lax.cond gives
    # a branch that ignores its operand) shares no byte, but where XLA wrote its
    # user's result at its place it is that result's in-place operand, as the
    # checker reads it (a diffrax step's plan was refused: "value tuple.170{} and
    # the values XLA compiled to share its bytes were split").
    defined_by = defaultdict(list)
    for rec in records.values():
        if rec.id in values:
            defined_by[rec.defining_instruction].append(rec.id)
    for rec in records.values():
        a = values.get(rec.id)
        for use in (rec.uses if a is not None else ()):
            for out in defined_by.get(use.instruction, ()):
                b = values[out]
                if (a.size == 0 or b.size == 0) and (a.allocation, a.offset) == (b.allocation, b.offset):
                    uf.union(a.id, b.id)
    # Rule 2: control flow ties a callee's parameters and root to the caller.
    at = defaultdict(set)
    for rec in records.values():
        if rec.id in values:
            for p in rec.positions:
                at[(p.instruction, p.index)].add(rec.id)
    indices = defaultdict(set)
    for (instr, index) in at:
        indices[instr].add(index)

    def tie(names: Sequence[str]):
        for index in set().union(*(indices[n] for n in names)):
            group = [v for n in names for v in at.get((n, index), ())]
            for v in group[1:]:
                a, b = values[group[0]], values[v]
                if (a.allocation, a.offset) == (b.allocation, b.offset):
                    uf.union(a.id, b.id)

    def root(comp_id):
        c = comps[comp_id]
        return next(i.name for i in c.instructions if i.id == c.root_id)

    def params(comp_id):
        c = comps[comp_id]
        ps = sorted((i for i in c.instructions if i.opcode == "parameter"),
                    key=lambda i: i.parameter_number)
        return [p.name for p in ps]

    id_name: dict[int, str] = {}   # filled at the first control-flow instruction
    for instr in by_name.values():
        if instr.opcode not in ("while", "conditional", "call"):
            continue
        if not id_name:
            id_name = {i.id: name for name, i in by_name.items()}
        called = list(instr.called_computation_ids)
        operands = [id_name[o] for o in instr.operand_ids]
        if instr.opcode == "while" and len(called) == 2:
            body, cond = called  # XLA keeps the body first, then the condition
            tie([operands[0], params(body)[0], root(body), params(cond)[0], instr.name])
        elif instr.opcode == "conditional":
            tie([instr.name] + [root(c) for c in called])
            for b, c in enumerate(called):
                ps = params(c)
                if ps and b + 1 < len(operands):
                    tie([operands[b + 1], ps[0]])
        elif instr.opcode == "call":
            tie([instr.name, root(called[0])])
            for o, p in zip(operands, params(called[0])):
                tie([o, p])

    in_time()
    # Rule 3: a call XLA:CPU compiles into one kernel (its small-call
    # attribute) addresses its callees' values by XLA's slices from that one
    # thunk, over its whole block: values there sharing bytes keep XLA's
    # relative places, even when they are live one after another.
    call_of = {name: k for k, names in enumerate(one_kernel_calls(by_name.values(), comps))
               for name in names}
    spots = defaultdict(list)      # (call, allocation) -> values defined inside the call
    for rec in records.values():
        if rec.id in values and rec.defining_instruction in call_of:
            spots[(call_of[rec.defining_instruction], values[rec.id].allocation)].append(
                values[rec.id])
    for vals in spots.values():
        vals.sort(key=lambda v: v.offset)
        first, end = vals[0], 0
        for v in vals:      # runs of overlapping byte ranges
            if v.offset < end:
                uf.union(first.id, v.id)
            else:
                first = v
            end = max(end, v.offset + v.size)

    groups = defaultdict(list)
    for v in values:
        groups[uf.find(v)].append(v)
    units = []
    for members in sorted(groups.values(), key=min):
        members.sort()
        vals = [values[v] for v in members]
        allocs = {v.allocation for v in vals}
        if len(allocs) != 1:
            raise UnsupportedProgram(f"values {[v.key for v in vals]} are tied but in different allocations")
        alloc = allocations[vals[0].allocation]
        base = min(v.offset for v in vals)
        size = max(v.offset + v.size for v in vals) - base
        fixed = (alloc.kind in ("parameter", "constant")
                 or any(v.live_in or v.live_out for v in vals))
        units.append(Unit(id=len(units), values=tuple(members), allocation=alloc.index,
                          offset=base, size=size,
                          member_offsets=tuple(v.offset - base for v in vals),
                          movable=not fixed and alloc.kind in ("temp", "output")
                          and alloc.color == DEFAULT_SPACE))
    return tuple(u for u in units if allocations[u.allocation].kind != "thread_local")


ONE_KERNEL_CALL = ("xla_cpu_small_call", "true")   # XLA:CPU's frontend attribute


def one_kernel_calls(instructions, comps) -> list[set[str]]:
    """Per call XLA:CPU emits as one kernel, the names of the instructions
    inside it (nested callees included)."""
    out = []
    for call in instructions:
        if call.opcode != "call" or \
                call.frontend_attributes.map.get(ONE_KERNEL_CALL[0]) != ONE_KERNEL_CALL[1]:
            continue
        out.append(callee_instructions(call, comps))
    return out


def merged_spans(spans) -> list[tuple[int, int]]:
    """Inclusive (start, end) steps, sorted, with overlapping or adjacent ones joined."""
    merged: list[list[int]] = []
    for s, e in sorted(spans):
        if merged and s <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], e)
        else:
            merged.append([s, e])
    return [(s, e) for s, e in merged]


def callee_instructions(instr, comps) -> set[str]:
    """Names of the instructions of the computations ``instr`` calls, at any depth."""
    out, stack, seen = set(), list(instr.called_computation_ids), set()
    while stack:
        cid = stack.pop()
        if cid in seen or cid not in comps:
            continue
        seen.add(cid)
        for x in comps[cid].instructions:
            out.add(x.name)
            stack.extend(x.called_computation_ids)
    return out


def _in_place_edges(graph: ScheduleGraph) -> set[tuple[int, int]]:
    """A unit's later member overwrites the earlier ones' bytes: everything that
    touches an earlier member must run before the node that defines a later one.

    A unit of k members (an in-place accumulator: one per layer) would give
    k^2 / 2 pairs; when the members' def nodes follow their order, a touch of an
    earlier member needs an edge only to the first later def past it: the edges
    between the later members chain it on to the rest (the same orders are
    allowed, with edges linear in k)."""
    edges = set()
    for unit in graph.units:
        vals = sorted((graph.values[v] for v in unit.values), key=lambda v: v.xla_range[0])
        defs = [v.def_node for v in vals]
        chained = all(x <= y for x, y in zip(defs, defs[1:]))
        for i, a in enumerate(vals):
            waiting = set(a.touches)
            for b in vals[i + 1:]:
                d = b.def_node
                if d == a.def_node or b.live_in:
                    continue
                covered = {t for t in waiting if t < d}
                edges.update((t, d) for t in covered)
                if chained:
                    waiting -= covered
                    if not waiting:
                        break
    return edges


def _fixed_reuse_edges(graph: ScheduleGraph) -> set[tuple[int, int]]:
    """Fixed units XLA put on the same bytes one after another keep that order.

    A donated parameter's allocation is also its aliased output's (XLA's
    input_output_alias): it holds the input until its last read, the output
    from its write, and in between whatever temporaries XLA parked there.
    None of these moves (a parameter's allocation is not ours to rearrange),
    so no order may make two of them live at once: everything that touches an
    earlier one runs before the node that defines a later one.
    """
    edges = set()
    by_alloc = defaultdict(list)
    for unit in graph.units:
        if not unit.movable:
            by_alloc[unit.allocation].append(unit)
    for units in by_alloc.values():
        if len(units) < 2:
            continue
        vals = [(graph.values[v], u.id) for u in units for v in u.values]
        for a, a_unit in vals:
            if a.live_out:
                continue
            for b, b_unit in vals:
                if b_unit == a_unit or b.live_in or b.xla_range[0] <= a.xla_range[1] \
                        or not (a.offset < b.offset + b.size and b.offset < a.offset + a.size):
                    continue
                d = b.def_node
                edges.update((t, d) for t in a.touches if t < d)
    return edges


def entry_sequence(live_range_text: str, entry_names: set[str]) -> list[str]:
    """The entry instructions of a live-range dump, in its order."""
    return [n for n in dumps.parse_live_ranges(live_range_text).sequence if n in entry_names]
