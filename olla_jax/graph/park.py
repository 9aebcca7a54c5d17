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

from olla_jax.solve.problem import ARENA, ParkProblem


def park_problem(graph, c: int) -> ParkProblem:
    """``graph.threshold_problem(c, for_bound=True)`` with its whole regions."""
    problem = graph.threshold_problem(c, for_bound=True)
    segments = graph._bound_segments[0]
    pieces = defaultdict(int)
    for alloc, _, _ in segments:
        pieces[alloc] += 1
    whole = tuple(r for r, (alloc, lo, hi) in enumerate(segments)
                  if pieces[alloc] == 1 and hi - lo > c and r < len(problem.region_sizes))
    capacity = {r: segments[r][2] - segments[r][1] for r in whole}
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
