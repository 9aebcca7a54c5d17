"""OLLA's time-indexed lifetime ILP (Steiner et al., ICML 2023), in python-mip.

``steps`` time steps, fewer than nodes (OLLA's trick): several independent
nodes may share a step, and a step counts the memory of all of them at once,
so the model over-counts and any of its solutions, expanded by running each
step's nodes in turn, costs at most its objective. Per node v and step t in
v's ASAP/ALAP window, R[v,t] = "v runs at t" (the generate variable C of v's
outputs; an item with several defs gets its own C[e,t]). Per item e,
P[e,t] = "e is resident at t, created earlier", only over the steps where e
can be live. Constraints: one step per node, precedence (strictly later
step), P[e,t] <= P[e,t-1] + C[e,t-1] (no re-creation), every toucher finds e
resident (R[u,t] <= P[e,t] + C[e,t]), and per step
    sum_e size_e (C+P)[e,t] + sum_v extra_v R[v,t] - sum_r cap_r I[r,t] <= peak,
where I[r,t] <= 1 - (C+P)[e,t] for each item e pinned in region r (r idle).
Sizes are divided by their GCD. A given order becomes a MIP start by packing it
into steps. This is the formulation a user can pick; CP-SAT and search beat it
on our suite (see benchmarks/results/order_engines.md).
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Sequence

from olla_jax.solve.dag import Dag
from olla_jax.solve.isolated import ChildFailed, run_isolated
from olla_jax.solve.problem import ARENA, OrderProblem


@dataclasses.dataclass(frozen=True)
class IlpResult:
    order: tuple[int, ...] | None     # None: no solution within the limit
    objective: int | None             # model peak in bytes (>= exact cost of order)
    lp_bound: float | None            # LP relaxation in bytes, when asked for
    optimal: bool                     # the model (with this many steps) was solved to optimality
    steps: int
    step_of: tuple[int, ...] | None   # per node, its step in the model's solution
    num_vars: int
    seconds: float


def default_steps(dag: Dag) -> int:
    """A quarter more steps than the longest path (OLLA's range), at most one per node."""
    longest = dag.longest_path
    return min(dag.num_nodes, longest + max(2, longest // 4))


def pack(dag: Dag, order: Sequence[int], steps: int) -> list[int]:
    """Steps for ``order`` in a ``steps``-step model: nondecreasing along the
    order where the windows allow, strictly increasing along edges."""
    step = [0] * dag.num_nodes
    cursor = 0
    for v in order:
        alap = steps - 1 - dag.height[v]
        earliest = max((step[u] + 1 for u in dag.preds[v]), default=0)
        step[v] = max(earliest, min(cursor, alap))
        cursor = max(cursor, step[v])
    return step


def solve_ilp(problem: OrderProblem, *, start: Sequence[int] | None = None,
              steps: int | None = None, solver_name: str = "CBC",
              time_limit_s: float = 30.0, compute_lp: bool = False,
              threads: int = 1, max_vars: int = 2_000_000) -> IlpResult:
    """Solve the lifetime ILP. ``solver_name``: "CBC" or "HIGHS".

    CBC runs in a child process: the Coin-OR libraries bundled with python-mip
    and with OR-Tools clash when both are loaded into one process (whichever
    comes second fails to load), and the other engines use OR-Tools."""
    if solver_name.upper() not in ("CBC", "HIGHS"):
        raise ValueError(f"solver_name must be CBC or HIGHS, not {solver_name!r}")
    args = dict(started_at=time.time(), start=None if start is None else tuple(start), steps=steps,
                solver_name=solver_name.upper(), time_limit_s=time_limit_s,
                compute_lp=compute_lp, threads=threads, max_vars=max_vars)
    if solver_name.upper() == "HIGHS":
        return _solve(problem, **args)
    try:
        result = run_isolated(__name__, "_solve", problem, timeout_s=time_limit_s + 5, **args)
    except ChildFailed as err:
        raise RuntimeError(f"the CBC child process failed: {err}") from None
    if result is None:   # CBC can overrun its limit in preprocessing
        return IlpResult(None, None, None, False, steps or 0, None, 0, time_limit_s + 5)
    return result


def _solve(problem: OrderProblem, *, started_at, start, steps, solver_name, time_limit_s,
           compute_lp, threads, max_vars) -> IlpResult:
    import mip  # lazily: only this engine needs python-mip

    t0 = time.monotonic() - (time.time() - started_at)   # count the child's start-up too
    names = {"CBC": mip.CBC, "HIGHS": mip.HIGHS}
    dag = Dag.of(problem)
    n = problem.num_nodes
    if n == 0:
        return IlpResult((), 0, 0.0 if compute_lp else None, True, 0, (), 0, 0.0)
    T = steps or default_steps(dag)
    if T < dag.longest_path:
        raise ValueError(f"{T} steps cannot hold a longest path of {dag.longest_path} nodes")
    window = [range(dag.depth[v], T - dag.height[v]) for v in range(n)]
    desc = [0] * n   # bitsets of descendants
    for v in reversed(dag.topo):
        for w in dag.succs[v]:
            desc[v] |= desc[w] | (1 << w)
    sizes = [it.size for it in problem.items] + list(problem.node_extra) + list(problem.region_sizes)
    g = math.gcd(*sizes) or 1

    m = mip.Model(sense=mip.MINIMIZE, solver_name=names[solver_name])
    m.verbose = 0
    m.threads = threads
    R = [{t: m.add_var(var_type=mip.BINARY) for t in window[v]} for v in range(n)]
    for v in range(n):
        m += mip.xsum(R[v].values()) == 1
    # the first node runs at step 0, where items resident from the start are counted
    m += mip.xsum(R[v][0] for v in range(n) if 0 in R[v]) >= 1
    step_of = [mip.xsum(t * x for t, x in R[v].items()) for v in range(n)]
    for u, v in problem.edges:
        m += step_of[u] + 1 <= step_of[v]

    load = [mip.LinExpr() for _ in range(T)]
    for v in range(n):
        if problem.node_extra[v]:
            for t, x in R[v].items():
                load[t].add_var(x, problem.node_extra[v] // g)
    region_live: dict[int, list[dict[int, mip.LinExpr]]] = {}
    always_busy: set[int] = set()
    C_of: list[dict[int, object] | None] = []   # for the MIP start
    P_of: list[dict[int, object]] = []
    const = 0
    for i, it in enumerate(problem.items):
        fixed_start = it.live_in or not it.defs
        C: dict[int, object] = {}
        P: dict[int, object] = {}
        C_of.append(C)
        P_of.append(P)
        if fixed_start and it.live_out:
            if it.region == ARENA:
                const += it.size // g
            else:
                always_busy.add(it.region)
            continue
        if not fixed_start:
            defs = sorted(set(it.defs))
            if len(defs) == 1:
                C.update(R[defs[0]])
            else:
                c_lo = min(window[d].start for d in defs)
                c_hi = min(window[d].stop for d in defs)
                C.update((t, m.add_var(var_type=mip.BINARY)) for t in range(c_lo, c_hi))
                m += mip.xsum(C.values()) == 1
                for t in range(c_lo, T):   # created exactly when the first def runs
                    made = mip.xsum(x for s, x in C.items() if s <= t)
                    ran = [mip.xsum(x for s, x in R[d].items() if s <= t) for d in defs]
                    for r in ran:
                        m += r <= made
                    if t < c_hi:
                        m += made <= mip.xsum(ran)
        live: dict[int, mip.LinExpr] = {}
        if it.live_out:   # resident from creation to the end
            acc = mip.LinExpr()
            for t in range(min(C), T):
                if t in C:
                    acc = acc + C[t]
                live[t] = acc
        else:
            first = 0 if fixed_start else min(C) + 1
            touchers = set(it.touches)
            if not fixed_start and len(set(it.defs)) == 1:
                touchers -= set(it.defs)   # its C is that def's R
            last = max((window[u].stop - 1 for u in touchers), default=first - 1)
            if fixed_start:
                last = max(last, 0)   # resident at step 0 at least
            P.update((t, m.add_var(var_type=mip.BINARY)) for t in range(first, last + 1))
            for t, x in P.items():
                if t == 0 and fixed_start:
                    m += x == 1
                elif t - 1 in P or t - 1 in C:
                    prev = [y for y in (P.get(t - 1), C.get(t - 1)) if y is not None]
                    m += x <= mip.xsum(prev)
                else:
                    m += x == 0
            for u in touchers:
                after = fixed_start or u in it.defs or any(desc[d] >> u & 1 for d in it.defs)
                for t, x in R[u].items():
                    here = mip.xsum(y for y in (P.get(t), C.get(t)) if y is not None)
                    if after:
                        m += x <= here
                    else:   # u may run before e exists: only then is e not needed
                        m += x + mip.xsum(y for s, y in C.items() if s <= t) - 1 <= here
            for t in set(C) | set(P):
                live[t] = mip.xsum(y for y in (P.get(t), C.get(t)) if y is not None)
        if it.region == ARENA:
            for t, expr in live.items():
                load[t].add_expr(expr, it.size // g)
        else:
            region_live.setdefault(it.region, []).append(live)
    idle = {}
    for r, lives in region_live.items():
        cap = problem.region_sizes[r] // g
        if r in always_busy or cap == 0:
            continue
        for t in range(T):
            idle[r, t] = x = m.add_var(lb=0.0, ub=1.0)
            for live in lives:
                if t in live:
                    m += x <= 1 - live[t]
            load[t].add_var(x, -cap)
    always_idle = sum(cap // g for r, cap in enumerate(problem.region_sizes)
                      if r not in always_busy and r not in region_live)
    const -= always_idle
    peak = m.add_var(lb=0.0)
    for t in range(T):
        m += load[t] + const <= peak
    m.objective = peak
    if m.num_cols > max_vars:
        raise ValueError(f"the ILP has {m.num_cols} variables (> max_vars={max_vars}); "
                         "use fewer steps or another engine")

    lp_bound = None
    if compute_lp:
        m.optimize(relax=True, max_seconds=max(1.0, time_limit_s - (time.monotonic() - t0)))
        if m.status == mip.OptimizationStatus.OPTIMAL:
            lp_bound = m.objective_value * g
    if start is not None:
        m.start = _mip_start(problem, dag, start, T, R, C_of, P_of, idle, g, peak, always_idle)
    remaining = time_limit_s - (time.monotonic() - t0)
    status = m.optimize(max_seconds=max(1.0, remaining)) if remaining > 0 else None
    seconds = time.monotonic() - t0
    if status not in (mip.OptimizationStatus.OPTIMAL, mip.OptimizationStatus.FEASIBLE):
        return IlpResult(None, None, lp_bound, False, T, None, m.num_cols, seconds)
    step = [max(R[v], key=lambda t: R[v][t].x) for v in range(n)]
    rank = {v: k for k, v in enumerate(start if start is not None else dag.topo)}
    order = tuple(sorted(range(n), key=lambda v: (step[v], rank[v])))
    return IlpResult(order, round(m.objective_value) * g, lp_bound,
                     status == mip.OptimizationStatus.OPTIMAL, T, tuple(step), m.num_cols, seconds)


def _mip_start(problem, dag, order, T, R, C_of, P_of, idle, g, peak, always_idle) -> list:
    """Values of every variable for ``order`` packed into T steps."""
    step = pack(dag, order, T)
    values: dict = {}
    for v in range(problem.num_nodes):
        for t, x in R[v].items():
            values[x] = float(t == step[v])
    live_steps = []
    for it, C, P in zip(problem.items, C_of, P_of):
        fixed_start = it.live_in or not it.defs
        created = -1 if fixed_start else min(step[d] for d in it.defs)
        touched = max((step[u] for u in it.touches), default=created)
        end = T - 1 if it.live_out else max(created, touched, 0)
        for t, x in C.items():
            values.setdefault(x, float(t == created))
        for t, x in P.items():
            values[x] = float(created < t <= end)
        live_steps.append((max(created, 0), end))
    busy = {}
    for it, (s, e) in zip(problem.items, live_steps):
        if it.region != ARENA:
            for t in range(s, e + 1):
                busy[it.region, t] = True
    for (r, t), x in idle.items():
        values[x] = float(not busy.get((r, t), False))
    load = [-always_idle] * T
    for it, (s, e) in zip(problem.items, live_steps):
        if it.region == ARENA:
            for t in range(s, e + 1):
                load[t] += it.size // g
    for v in range(problem.num_nodes):
        load[step[v]] += problem.node_extra[v] // g
    for (r, t), x in idle.items():
        load[t] -= values[x] * (problem.region_sizes[r] // g)
    values[peak] = float(max(0, max(load)))
    return list(values.items())
