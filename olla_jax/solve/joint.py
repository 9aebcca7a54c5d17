"""Order and placement in one CP-SAT model (OLLA's joint problem).

One position per node (all different, precedences); per buffer unit a time
interval from its first definition to its last use (both positions), a choice
of one *bin* (the temp arena, or the idle space of an output allocation large
enough for it) and an offset in that bin.  Per bin, a 2-D no-overlap of
(time, bytes) rectangles: the arena's height is minimised; an output
allocation also holds its own live-out value from the moment it is written.
A unit is live over the hull of its uses, so a unit idle between two uses is
counted busy (never an unsafe plan, at worst a larger one).

The separate order search and best-fit placement warm-start it.  CP-SAT
can abort its process on some parameter mixes, so ``olla_jax.plan`` runs this
model in a child process (``solve.isolated``).  Steps whose
schedule runs nested computations (while, call, conditional blocks) are not
modelled: the joint engine declines them.
"""

from __future__ import annotations

import dataclasses
import time
from typing import AbstractSet, Mapping, Protocol, Sequence

from olla_jax.solve import cpsat_run
from olla_jax.solve import problem as sp
from olla_jax.solve.cpsat_order import _cp_model, position_variables
from olla_jax.solve.dag import Dag
from olla_jax.errors import OllaJaxError


# What the joint model reads of olla_jax.graph.model.ScheduleGraph, described
# here so that the solver imports nothing of the graph package (the graph's
# classes match these protocols structurally).
class JointValue(Protocol):
    @property
    def def_node(self) -> int: ...
    @property
    def touches(self) -> AbstractSet[int]: ...
    @property
    def live_in(self) -> bool: ...
    @property
    def live_out(self) -> bool: ...


class JointUnit(Protocol):
    @property
    def id(self) -> int: ...
    @property
    def values(self) -> Sequence[int]: ...
    @property
    def allocation(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def size(self) -> int: ...
    @property
    def movable(self) -> bool: ...


class JointAllocation(Protocol):
    @property
    def size(self) -> int: ...


class JointGraph(Protocol):
    """A step's memory model as the joint model reads it: its nodes, values,
    buffer units and allocations, and the problems it poses."""
    @property
    def nodes(self) -> Sequence[str]: ...
    @property
    def values(self) -> Mapping[int, JointValue]: ...
    @property
    def units(self) -> Sequence[JointUnit]: ...
    @property
    def allocations(self) -> Sequence[JointAllocation]: ...
    @property
    def regions(self) -> Sequence[int]: ...
    @property
    def alignment(self) -> int: ...
    def block_length(self, node: int) -> int: ...
    def order_problem(self) -> sp.OrderProblem: ...
    def placement_problem(self, order: Sequence[int]) -> tuple[sp.PlacementProblem, tuple[int, ...]]: ...


ScheduleGraph = JointGraph   # its old name here

MAX_BINS = 8   # output allocations offered to one unit besides the arena (smallest that fit)


class JointUnsupported(OllaJaxError, ValueError):
    """The step has a shape the joint model does not cover."""


@dataclasses.dataclass(frozen=True)
class JointResult:
    order: tuple[int, ...]
    placement: sp.Placement          # for graph.placement_problem(order)
    owners: tuple[int, ...]
    problem: sp.PlacementProblem
    optimal: bool
    bound: int                       # proven for the model (the hull relaxation of liveness)
    seconds: float


def unsupported(graph: ScheduleGraph) -> str | None:
    """Why the joint model does not cover ``graph`` (None when it does)."""
    if any(graph.block_length(v) != 1 for v in range(len(graph.nodes))):
        return "the schedule runs nested computations (loops, calls)"
    return None


def hull_hint(graph: ScheduleGraph, order: Sequence[int]) -> dict[int, tuple[int, int]]:
    """Unit id -> (region or ARENA, offset): best-fit of the units over the hulls
    of their lives under ``order``, a placement the joint model accepts as is."""
    from olla_jax.solve import place_greedy
    pp, owners = graph.placement_problem(order)
    hull: dict[int, list[int]] = {}
    for unit, iv in zip(owners, pp.intervals):
        span = hull.setdefault(unit, [iv.size, iv.start, iv.end])
        span[1], span[2] = min(span[1], iv.start), max(span[2], iv.end)
    units = list(hull)
    merged = dataclasses.replace(pp, same_offset=(), intervals=tuple(
        sp.Interval(*hull[u]) for u in units))
    # an output's own value may sit in a gap of a hull: count it busy over its hull too
    merged = dataclasses.replace(merged, regions=tuple(
        sp.Region(r.capacity, tuple(_hull_occupants(r.occupants))) for r in pp.regions))
    placement = place_greedy.best_fit(merged)
    return {u: (r, o) for u, r, o in zip(units, placement.region, placement.offset)}


def _hull_occupants(occupants):
    by_place: dict[tuple[int, int], list[int]] = {}
    for o in occupants:
        span = by_place.setdefault((o.offset, o.size), [o.start, o.end])
        span[0], span[1] = min(span[0], o.start), max(span[1], o.end)
    return [sp.Occupant(off, size, s, e) for (off, size), (s, e) in by_place.items()]


def solve_joint(graph: ScheduleGraph, *, hint_order: Sequence[int],
                hint_places: dict[int, tuple[int, int]], time_limit_s: float = 10.0,
                workers: int = 2, seed: int = 0,
                deadline: float | None = None, lower_bound: int = 0) -> JointResult | None:
    """Minimise the arena over orders and placements together.  ``hint_places``:
    unit id -> (region or ARENA, offset) of a valid plan under ``hint_order``.
    None when CP-SAT finds nothing in time.  ``deadline``: a ``time.monotonic()``
    instant (system-wide, so a parent's deadline holds in the child it starts)
    that the search ends by too, whatever this process's start-up took.
    ``lower_bound``: an arena no valid plan goes below (the caller's proven
    bound); the model's height starts there, so CP-SAT proves optimality and
    stops as soon as it reaches it."""
    cp_model = _cp_model()
    t0 = time.monotonic()
    n = len(graph.nodes)
    reason = unsupported(graph)
    if reason:
        raise JointUnsupported(reason)
    a = graph.alignment
    dag = Dag.of(graph.order_problem())
    m = cp_model.CpModel()
    pos = position_variables(m, dag)
    hint_pos = [0] * n
    for step, v in enumerate(hint_order):
        hint_pos[v] = step
        m.add_hint(pos[v], step)

    def span(unit):
        """(start, end) position expressions of a unit and their hint values."""
        vals = [graph.values[v] for v in unit.values]
        if any(v.live_in for v in vals):
            start, h_start = 0, 0
        else:
            defs = sorted({v.def_node for v in vals})
            start = m.new_int_var(0, n - 1, f"s{unit.id}")
            m.add_min_equality(start, [pos[d] for d in defs])
            h_start = min(hint_pos[d] for d in defs)
            m.add_hint(start, h_start)
        if any(v.live_out for v in vals):
            return start, n - 1, h_start, n - 1
        touches = sorted(set().union(*(v.touches for v in vals)))
        end = m.new_int_var(0, n - 1, f"e{unit.id}")
        m.add_max_equality(end, [pos[t] for t in touches] + ([] if isinstance(start, int) else [start]))
        h_end = max([hint_pos[t] for t in touches] + [h_start])
        m.add_hint(end, h_end)
        return start, end, h_start, h_end

    def time_interval(start, end, name, present=None, hint=None):
        length = m.new_int_var(1, n, f"len_{name}")
        m.add(length == end - start + 1)
        if hint is not None:   # a complete hint is taken as the first solution at once
            m.add_hint(length, hint[1] - hint[0] + 1)
        if present is None:
            return m.new_interval_var(start, length, end + 1, name)
        return m.new_optional_interval_var(start, length, end + 1, present, name)

    regions = graph.regions
    capacity = [graph.allocations[r].size for r in regions]
    rects: dict[int, tuple[list, list]] = {r: ([], []) for r in range(-1, len(regions))}
    movable = [u for u in graph.units if u.movable and u.size > 0]
    total = sum(u.size for u in movable)
    height = m.new_int_var(0, total + a * len(movable), "arena")
    choice: dict[int, list[tuple[int, object, object]]] = {}
    for unit in graph.units:
        if unit.movable or unit.allocation not in regions or unit.size == 0:
            continue
        start, end, h_start, h_end = span(unit)   # an output's own value, fixed in place
        r = regions.index(unit.allocation)
        rects[r][0].append(time_interval(start, end, f"occ{unit.id}", hint=(h_start, h_end)))
        rects[r][1].append(m.new_fixed_size_interval_var(unit.offset, unit.size, f"occy{unit.id}"))
    hint_height = 0
    for unit in movable:
        start, end, h_start, h_end = span(unit)
        hint_region, hint_offset = hint_places.get(unit.id, (sp.ARENA, 0))
        fitting = sorted((r for r in range(len(regions)) if capacity[r] >= unit.size),
                         key=lambda r: (capacity[r], r))[:MAX_BINS]
        if hint_region != sp.ARENA and hint_region not in fitting:
            fitting.append(hint_region)
        options = []
        for r in [sp.ARENA, *fitting]:
            present = m.new_bool_var(f"b{unit.id}_{r}")
            top = (total + a * len(movable)) if r == sp.ARENA else capacity[r]
            k = m.new_int_var(0, max(0, (top - unit.size) // a), f"k{unit.id}_{r}")
            rects[r][0].append(time_interval(start, end, f"t{unit.id}_{r}", present,
                                             hint=(h_start, h_end)))
            rects[r][1].append(m.new_optional_interval_var(
                a * k, unit.size, a * k + unit.size, present, f"y{unit.id}_{r}"))
            if r == sp.ARENA:
                m.add(a * k + unit.size <= height).only_enforce_if(present)
            chosen = r == hint_region
            m.add_hint(present, chosen)
            m.add_hint(k, hint_offset // a if chosen else 0)
            if chosen and r == sp.ARENA:
                hint_height = max(hint_height, hint_offset + unit.size)
            options.append((r, present, k))
        m.add_exactly_one(p for _, p, _ in options)
        choice[unit.id] = options
    for r, (xs, ys) in rects.items():
        if len(xs) > 1:
            m.add_no_overlap_2d(xs, ys)
    m.add_hint(height, hint_height)
    # Valid plans only: the hint stays feasible even if the bound were wrong.
    m.add(height >= min(lower_bound, hint_height))
    m.minimize(height)

    left = time_limit_s - (time.monotonic() - t0)
    if deadline is not None:
        left = min(left, deadline - time.monotonic())
    if left <= 0:
        return None
    solver, status = cpsat_run.solve(m, left, workers=workers, seed=seed)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return None
    values = [solver.value(p) for p in pos]
    order = tuple(sorted(range(n), key=values.__getitem__))
    where = {}
    for uid, options in choice.items():
        r, _, k = next(o for o in options if solver.boolean_value(o[1]))
        where[uid] = (r, a * solver.value(k))
    pp, owners = graph.placement_problem(order)
    regs = tuple(where.get(u, (sp.ARENA, 0))[0] for u in owners)
    offs = tuple(where.get(u, (sp.ARENA, 0))[1] for u in owners)
    arena = max((o + iv.size for r, o, iv in zip(regs, offs, pp.intervals) if r == sp.ARENA),
                default=0)
    placement = sp.Placement(regs, offs, arena)
    return JointResult(order, placement, owners, pp, status == cp_model.OPTIMAL,
                       int(solver.best_objective_bound), time.monotonic() - t0)
