"""A lower bound proven by CP-SAT on a reduced order problem, given a target.

The per-node min-cut (``bounds.min_cut_bound``) lets each node pick its own
set of nodes run before it; one order must nest those sets.  On lstm (CPU,
small) that left the bound at 143.50 MiB under a plan of 147.50: CP-SAT on the
problem reduced to its big items (``bound_reduced.reduce_problem``, why that
is a lower bound is there) proves no order of it is below 147.50 in about
2 s, where minimising from scratch proved nothing in 3 s.  So the question
asked is a decision: is there an order below ``target`` (the plan's arena)?
Infeasible: ``target`` is a bound.  Otherwise the search also minimises, from
``floor`` (a bound known already), and what it proves is the bound.

``park=True`` asks for more than the order problem's cost: instead of
subtracting an idle region's whole capacity, each arena item either stays in
the arena or sits whole in one region it fits, and a region holds at most its
capacity of them at each step (with its pinned item's bytes while that one
is live).  Every real placement is such an assignment (a block lives at one
offset of one place; the blocks in a region at one moment are disjoint), so
the least peak of this model is still at most any plan's arena, and it sees
what the cost does not: a 2.25 MiB region among 1, 2 and 4 MiB blocks takes
2 MiB.  Its node extras count zero (the blocks behind them could be parked
too), its pinned items count their own bytes, not their region's.
"""

from __future__ import annotations

import dataclasses
import time

from olla_jax.solve import bound_reduced
from olla_jax.solve.cpsat_order import _cp_model, position_variables
from olla_jax.solve import cpsat_run
from olla_jax.solve.dag import Dag
from olla_jax.solve.problem import ARENA, OrderProblem


@dataclasses.dataclass(frozen=True)
class CpsatBound:
    """``value``: a proven lower bound (at least ``floor``); ``status``:
    "below-none" (no order of the reduced problem is below the target),
    "optimal" (its least peak, below the target), "bound" (CP-SAT's bound at
    the time limit) or "none" (nothing proven past ``floor``)."""
    value: int
    status: str
    min_size: int
    kept_nodes: int
    kept_items: int
    seconds: float


def prove(problem: OrderProblem, target: int, *, time_limit_s: float, floor: int = 0,
          min_size: int | None = None, max_nodes: int = 120, park: bool = False,
          workers: int = 1, seed: int = 0) -> CpsatBound:
    """A lower bound on ``problem``'s least cost (``park``: its least arena),
    by CP-SAT on ``reduce_problem(problem, min_size)`` (by default the least
    size keeping at most ``max_nodes`` nodes), looking for an order below
    ``target``."""
    t0 = time.monotonic()
    floor = max(0, floor)
    if park:
        # A region smaller than every kept item holds none of them: its
        # pinned item only adds nodes (dropped, the region is idle: no less room).
        problem = _without_small_regions(problem, min_size if min_size is not None else
                                         _least_kept(problem, max_nodes))
    if min_size is None:
        min_size = bound_reduced.min_size_for(problem, max_nodes)
    red = bound_reduced.reduce_problem(problem, min_size, keep_negative=not park)
    rp = red.problem

    def done(value: int, status: str) -> CpsatBound:
        return CpsatBound(max(floor, value), status, min_size, rp.num_nodes, len(rp.items),
                          time.monotonic() - t0)
    if target <= floor or rp.num_nodes == 0:
        return done(0, "none")
    cp_model = _cp_model()
    m = cp_model.CpModel()
    n = rp.num_nodes
    pos = position_variables(m, Dag.of(rp))

    def extreme(nodes, is_min: bool, also=None):
        nodes = sorted(set(nodes))
        if len(nodes) == 1 and also is None:
            return pos[nodes[0]]
        v = m.new_int_var(0, n - 1, "")
        terms = [pos[u] for u in nodes] + ([] if also is None else [also])
        (m.add_min_equality if is_min else m.add_max_equality)(v, terms)
        return v

    def span(it):
        """The item's first and last step, as ``live_intervals`` has them."""
        fixed_start = it.live_in or not it.defs
        start = 0 if fixed_start else extreme(it.defs, True)
        if it.live_out:
            return start, n - 1
        if not it.touches:
            return start, start
        if fixed_start or not set(it.defs).isdisjoint(it.touches):
            return start, extreme(it.touches, False)
        return start, extreme(it.touches, False, also=start)

    def interval(start, end, present=None):
        if isinstance(start, int) and isinstance(end, int):
            if present is None:
                return m.new_fixed_size_interval_var(start, end - start + 1, "")
            return m.new_optional_fixed_size_interval_var(start, end - start + 1, present, "")
        size = m.new_int_var(1, n, "")
        m.add(size == end - start + 1)
        if present is None:
            return m.new_interval_var(start, size, end + 1, "")
        return m.new_optional_interval_var(start, size, end + 1, present, "")

    spans = [span(it) for it in rp.items]
    top = sum(it.size for it in rp.items if it.region == ARENA) + sum(max(0, x) for x in rp.node_extra)
    if park:
        arena_ivs, arena_dem = _park(m, rp, red.regions, list(problem.region_sizes), spans,
                                     interval)
        capacity = peak = m.new_int_var(floor, max(floor, min(top, target - 1)), "peak")
    else:
        arena_ivs, arena_dem, idle, const = [], [], 0, 0
        for it, (s, e) in zip(rp.items, spans):
            always = isinstance(s, int) and s == 0 and isinstance(e, int) and e == n - 1
            if it.region == ARENA:
                arena_ivs.append(interval(s, e))
                arena_dem.append(it.size)
            elif always:
                const -= rp.region_sizes[it.region]     # never idle: never subtracted
            else:
                arena_ivs.append(interval(s, e))
                arena_dem.append(rp.region_sizes[it.region])
        for v, x in enumerate(rp.node_extra):
            if x > 0:
                arena_ivs.append(m.new_fixed_size_interval_var(pos[v], 1, ""))
                arena_dem.append(x)
            elif x < 0:
                # -x more room at v's step: -x taken everywhere else, -x more capacity
                before = m.new_interval_var(0, pos[v], pos[v], "")
                after_len = m.new_int_var(0, n, "")
                m.add(after_len == n - 1 - pos[v])
                after = m.new_interval_var(pos[v] + 1, after_len, n, "")
                arena_ivs += [before, after]
                arena_dem += [-x, -x]
                const -= x
        idle = sum(rp.region_sizes) + const
        peak = m.new_int_var(floor, max(floor, min(top, target - 1)), "peak")
        capacity = m.new_int_var(0, top + idle, "capacity")
        m.add(capacity == peak + idle)
    m.add_cumulative(arena_ivs, arena_dem, capacity)
    m.minimize(peak)
    solver, status = cpsat_run.solve(m, time_limit_s - (time.monotonic() - t0),
                                     workers=workers, seed=seed)
    if status == cp_model.INFEASIBLE:
        return done(target, "below-none")
    if status == cp_model.OPTIMAL:
        return done(int(solver.objective_value), "optimal")
    if status == cp_model.FEASIBLE:
        return done(int(solver.best_objective_bound), "bound")
    return done(0, "none")


def _least_kept(problem: OrderProblem, max_nodes: int) -> int:
    """``min_size_for`` on the arena items alone (pinned items ignored)."""
    return bound_reduced.min_size_for(dataclasses.replace(
        problem, items=tuple(it for it in problem.items if it.region == ARENA)), max_nodes)


def _without_small_regions(problem: OrderProblem, min_size: int) -> OrderProblem:
    """``problem`` less the pinned items of regions below ``min_size`` bytes."""
    items = tuple(it for it in problem.items
                  if it.region == ARENA or problem.region_sizes[it.region] >= min_size)
    return dataclasses.replace(problem, items=items)


def _park(m, rp: OrderProblem, kept_regions: tuple[int, ...], caps: list[int], spans,
          interval) -> tuple[list, list[int]]:
    """The arena's intervals and demands when each arena item of ``rp`` either
    stays there or sits whole in one region of ``caps`` it fits (one
    cumulative per region, its pinned item's bytes included while live)."""
    occupant: dict[int, tuple[int, object, object]] = {}
    for it, (s, e) in zip(rp.items, spans):
        if it.region != ARENA and it.region < len(kept_regions):
            r = kept_regions[it.region]
            occupant[r] = (min(it.size, caps[r]), s, e)
    in_region: dict[int, tuple[list, list[int]]] = {}
    arena_ivs, arena_dem = [], []
    for it, (s, e) in zip(rp.items, spans):
        if it.region != ARENA or it.size <= 0:
            continue
        eligible = [r for r, cap in enumerate(caps) if it.size <= cap]
        if not eligible:
            arena_ivs.append(interval(s, e))
            arena_dem.append(it.size)
            continue
        here = m.new_bool_var("")
        places = [m.new_bool_var("") for _ in eligible]
        m.add_exactly_one([here, *places])
        arena_ivs.append(interval(s, e, here))
        arena_dem.append(it.size)
        for r, p in zip(eligible, places):
            ivs, dem = in_region.setdefault(r, ([], []))
            ivs.append(interval(s, e, p))
            dem.append(it.size)
    for r, (ivs, dem) in in_region.items():
        if r in occupant:
            size, s, e = occupant[r]
            ivs.append(interval(s, e))
            dem.append(size)
        m.add_cumulative(ivs, dem, caps[r])
    return arena_ivs, arena_dem
