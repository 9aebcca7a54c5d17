"""A bound's threshold problem with its whole-unit regions (``solve.bound_park``).

Which regions hold whole units at their own size: an output (or donated
input) that is one piece of the bound's regions (``_bound_segments``; a unit
may straddle the cut between two pieces, so those stay fluid).  Which units a
region can never take before a node runs: its pinned unit is written by that
node ``w`` (its only def, not live in), and the unit is read by ``w`` or by a
node after it: live at ``w``'s step whatever the order, while the pinned unit
is live from that step (the planner's placement problem has both live at
``w``'s step: no sharing in place), so the unit would overlap it.  A read by
``w`` itself counts only where ``w`` is one step (inside a loop's block the
read may end before the write).  The nodes evaluated: single-step ones.
"""

from __future__ import annotations

from collections import defaultdict

from olla_jax.solve.problem import ARENA, BlockPark, ParkProblem


def _whole(graph, problem, c: int) -> tuple[tuple[int, ...], dict[int, int]]:
    """The regions of ``problem`` (threshold ``c``) that are one piece, larger
    than ``c``, and their capacities."""
    segments = graph._bound_segments[0]
    pieces = defaultdict(int)
    for alloc, _, _ in segments:
        pieces[alloc] += 1
    whole = tuple(r for r, (alloc, lo, hi) in enumerate(segments)
                  if pieces[alloc] == 1 and hi - lo > c and r < len(problem.region_sizes))
    return whole, {r: segments[r][2] - segments[r][1] for r in whole}


def park_problem(graph, c: int) -> ParkProblem:
    """``graph.threshold_problem(c, for_bound=True)`` with its whole regions."""
    problem = graph.threshold_problem(c, for_bound=True)
    whole, capacity = _whole(graph, problem, c)
    single = frozenset(v for v in range(len(graph.nodes)) if graph.block_length(v) == 1)
    succs = defaultdict(list)
    for u, v in problem.edges:
        succs[u].append(v)
    writers = defaultdict(set)   # writer node -> whole regions it writes
    keep = set(whole)
    for it in problem.items:
        if it.region in keep and len(it.defs) == 1 and not it.live_in:
            writers[it.defs[0]].add(it.region)
    barred = []
    for w, regions in writers.items():
        after, stack = set(), list(succs[w])
        while stack:
            v = stack.pop()
            if v not in after:
                after.add(v)
                stack.extend(succs[v])
        reach = after | ({w} if w in single else set())
        for i, it in enumerate(problem.items):
            if it.region == ARENA and it.size > c and not reach.isdisjoint(it.touches):
                barred += [(i, r, w) for r in sorted(regions)]
    return ParkProblem(problem, whole, capacity, tuple(barred), single)


def block_nodes(graph) -> list[int]:
    """The nodes owning a block of more than one step (loops, calls)."""
    return [v for v in range(len(graph.nodes)) if graph.block_length(v) > 1]


def block_park(graph, c: int, node: int) -> BlockPark:
    """``solve.bound_block``'s problem at block ``node`` on threshold ``c``.

    The block's inner steps run in XLA's order whatever the entry order (the
    planner never reorders a loop body), so each unit living in the block
    only keeps its spans there, counted from the block's first step (from
    XLA's order); a fixed unit live out whose value the block writes holds
    the region pieces that value covers from its first step to the end."""
    problem = graph.threshold_problem(c, for_bound=True)
    whole, capacity = _whole(graph, problem, c)
    first = graph.block_start[node]
    length = graph.block_length(node)
    spans = graph._xla_spans
    inner = []
    for unit_id, owner in graph._inner_units().items():
        unit = graph.units[unit_id]
        if owner != node or unit.size <= c:
            continue
        mine = tuple((max(s, first) - first, min(e, first + length - 1) - first)
                     for s, e in spans[unit_id] if e >= first and s < first + length)
        if mine:
            inner.append((unit.size, mine))
    gap = sum(size for size, nodes in graph._bound_extra_parts[1] if size > c and node in nodes)
    segments = graph._bound_segments[0]
    busy_from: dict[int, int] = {}
    for unit in graph.units:
        if unit.movable:
            continue
        for v in unit.values:
            value = graph.values[v]
            if not value.live_out or value.live_in or value.def_node != node:
                continue
            step = max(0, value.xla_range[0] - first)
            for r, (alloc, lo, hi) in enumerate(segments):
                if alloc == unit.allocation and value.offset <= lo \
                        and hi <= value.offset + value.size and r < len(problem.region_sizes):
                    busy_from[r] = min(busy_from.get(r, step), step)
    park = ParkProblem(problem, whole, capacity, (), frozenset())
    return BlockPark(park, node, length, tuple(inner), gap, busy_from)
