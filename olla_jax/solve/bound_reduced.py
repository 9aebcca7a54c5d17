"""A lower bound from an exact solver run on a reduced order problem.

The per-node min-cut bound (``bounds.min_cut_bound``) lets every node choose
its own set of predecessors-run-before; one order must nest those sets, which
is where it can be far below the optimum (DenseNet's backward: each node alone
can run with little live, no order can run all of them so).  CP-SAT sees the
whole order but cannot prove much on 1-2k nodes.  So keep only the big items
and the nodes that create or touch them, and let CP-SAT prove a bound there.

Why the reduced problem's optimum is a lower bound of the full one's: restrict
any full order to the kept nodes.  A kept item's defs and touches are all kept,
so at a kept node it is live in the restricted order exactly when it is live
in the full one; a dropped item only lowers the count, a dropped pinned item
only leaves its region idle (more space counted free), a dropped node only
removes a step from the peak.  The reduced edges are precedences the full
graph implies (its transitive closure, reduced), so the restricted order is
feasible.  Each kept node's step cost is therefore at most its full cost, and
the reduced optimum at most the full optimum.  CP-SAT's ``best_objective_bound``
is a bound on the reduced optimum when its model is exact (every fixed region
with at most one item: pinned items of shared regions are dropped).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Sequence

from olla_jax.solve.cpsat_order import solve_cpsat
from olla_jax.solve.problem import ARENA, Item, OrderProblem, topological_order


@dataclasses.dataclass(frozen=True)
class Reduced:
    """A reduced problem and, per node of it, the node of the full problem;
    per region of it (the idle one ``_with_idle`` appends excepted), the
    region of the full problem."""
    problem: OrderProblem
    nodes: tuple[int, ...]
    regions: tuple[int, ...] = ()


@dataclasses.dataclass(frozen=True)
class ReducedBound:
    """``value``: proven lower bound on the full problem's optimum.
    ``order_cost``: the cost, on the reduced problem, of the best reduced order
    found (value == order_cost: the reduced problem was solved to optimality)."""
    value: int
    order_cost: int | None
    min_size: int
    kept_nodes: int
    kept_items: int
    optimal: bool
    seconds: float


def reduce_problem(problem: OrderProblem, min_size: int, *, keep_negative: bool = False) -> Reduced:
    """Keep the arena items of at least ``min_size`` bytes (and each pinned item
    alone in its region), the nodes they name, and the precedences among those
    nodes that the full graph implies.  Nodes with a negative extra (a bound's
    correction) are dropped with every item naming them; with ``keep_negative``
    they stay, extra and all (a kept node's cost is still at most its full
    cost: the dropped items only add to the full one), for a model that can
    take a negative extra (``bound_cpsat``; CP-SAT's cumulative cannot).
    ``Reduced.problem`` then has negative extras."""
    if min_size < 0:
        raise ValueError(f"min_size must be >= 0, got {min_size}")
    n = problem.num_nodes
    pinned_count: dict[int, int] = {}
    for it in problem.items:
        if it.region != ARENA:
            pinned_count[it.region] = pinned_count.get(it.region, 0) + 1
    negative = set() if keep_negative else {v for v, x in enumerate(problem.node_extra) if x < 0}

    def keep(it: Item) -> bool:
        if it.region == ARENA:
            big = it.size >= min_size and it.size > 0
        else:
            big = pinned_count[it.region] == 1 and problem.region_sizes[it.region] > 0
        # An item live at step 0 only (started, untouched, not live out) would
        # sit on the reduced order's first step, which need not be the full one's.
        step0 = not it.touches and not it.live_out and (it.live_in or not it.defs)
        return (big and not step0 and negative.isdisjoint(it.defs)
                and negative.isdisjoint(it.touches))

    items = [it for it in problem.items if keep(it)]
    kept = {v for it in items for v in (*it.defs, *it.touches)}
    kept |= {v for v, x in enumerate(problem.node_extra) if x > 0 and x >= min_size}
    nodes = sorted(kept)
    index = {v: k for k, v in enumerate(nodes)}
    # kept descendants per node (bitsets over the kept indices), in reverse topological order
    succs: list[list[int]] = [[] for _ in range(n)]
    for u, v in problem.edges:
        succs[u].append(v)
    below = [0] * n       # kept strict descendants
    for u in reversed(topological_order(n, problem.edges)):
        acc = 0
        for v in succs[u]:
            acc |= below[v]
            if v in index:
                acc |= 1 << index[v]
        below[u] = acc
    edges = []
    for u in nodes:
        d = below[u]
        implied = 0
        rest = d
        while rest:
            low = rest & -rest
            implied |= below[nodes[low.bit_length() - 1]]
            rest ^= low
        direct = d & ~implied
        while direct:
            low = direct & -direct
            edges.append((index[u], low.bit_length() - 1))
            direct ^= low
    regions = sorted({it.region for it in items if it.region != ARENA})
    region_index = {r: k for k, r in enumerate(regions)}
    new_items = tuple(dataclasses.replace(
        it, defs=tuple(index[v] for v in it.defs), touches=tuple(index[v] for v in it.touches),
        region=ARENA if it.region == ARENA else region_index[it.region]) for it in items)
    extra = tuple(x if x < 0 and keep_negative else max(0, x) if x >= min_size else 0
                  for x in (problem.node_extra[v] for v in nodes))
    # Regions that lost their items (shared or dropped) are idle: more free space, a lower cost.
    idle = sum(c for r, c in enumerate(problem.region_sizes) if r not in region_index)
    reduced = OrderProblem(len(nodes), tuple(edges), new_items, extra,
                           tuple(problem.region_sizes[r] for r in regions))
    if idle:
        reduced = _with_idle(reduced, idle)
    return Reduced(reduced, tuple(nodes), tuple(regions))


def _with_idle(problem: OrderProblem, idle: int) -> OrderProblem:
    """The same problem with ``idle`` more bytes of region space free at every
    step: a region that no item pins is idle throughout (see step_profile)."""
    return dataclasses.replace(problem, region_sizes=(*problem.region_sizes, idle))


def reduced_cpsat_bound(problem: OrderProblem, min_size: int, *, time_limit_s: float = 10.0,
                        hint: Sequence[int] | None = None, workers: int = 2,
                        seed: int = 0) -> ReducedBound:
    """CP-SAT's proven bound on ``reduce_problem(problem, min_size)``: a lower
    bound on ``problem``'s optimum.  ``hint``: a full order, restricted to the
    kept nodes as CP-SAT's start."""
    t0 = time.monotonic()
    red = reduce_problem(problem, min_size)
    if red.problem.num_nodes == 0:
        return ReducedBound(0, 0, min_size, 0, 0, True, time.monotonic() - t0)
    start = None
    if hint is not None:
        index = {v: k for k, v in enumerate(red.nodes)}
        start = [index[v] for v in hint if v in index]
    res = solve_cpsat(red.problem, hint=start, time_limit_s=max(0.01, time_limit_s - (time.monotonic() - t0)),
                      workers=workers, seed=seed)
    if not res.exact:   # cannot happen: shared regions' items were dropped
        raise AssertionError("reduced problem's CP-SAT model is not exact")
    value = max(0, res.bound)
    return ReducedBound(value, res.objective, min_size, red.problem.num_nodes,
                        len(red.problem.items), res.optimal, time.monotonic() - t0)


def min_size_for(problem: OrderProblem, max_nodes: int) -> int:
    """The least item size whose reduced problem keeps at most ``max_nodes``
    nodes (the biggest items first; ties kept together)."""
    if max_nodes < 1:
        raise ValueError(f"max_nodes must be >= 1, got {max_nodes}")
    by_size: dict[int, set[int]] = {}
    for it in problem.items:
        if it.region == ARENA and it.size > 0:
            by_size.setdefault(it.size, set()).update(it.defs, it.touches)
    nodes: set[int] = set()
    chosen = max(by_size, default=0) + 1
    for size in sorted(by_size, reverse=True):
        nodes |= by_size[size]
        if len(nodes) > max_nodes:
            break
        chosen = size
    return chosen
