"""CP-SAT position model of the order problem.

One position per node (all different), precedences, and per item an interval
[first def position, last touch position] feeding one cumulative whose capacity
is ``peak + idle-able region capacity``: a fixed region is counted busy (its
capacity used up) over the hull of its items' intervals. With at most one
(non-constant) item per region that is exact; with more, a gap between two of a
region's items is not seen, so the model may overestimate some orders (never
underestimate): returned orders are scored exactly by the caller, and
``exact`` says whether the model's bound holds for the problem itself.

``solve_window`` re-solves steps lo..hi of an order with the rest fixed (see
window.py), optionally keeping the relative order of some of the window's nodes
so that a wide window with few free nodes stays small.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Sequence

from olla_jax.solve import cpsat_run
from olla_jax.solve.dag import Dag
from olla_jax.solve.evaluate import Evaluator, OrderState
from olla_jax.solve.problem import ARENA, OrderProblem
from olla_jax.solve.window import window_problem


def _cp_model():
    try:
        from ortools.sat.python import cp_model
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("the 'cpsat' engine needs OR-Tools: pip install ortools") from e
    return cp_model


@dataclasses.dataclass(frozen=True)
class CpsatResult:
    order: tuple[int, ...] | None   # best order found (None: none within the limit)
    objective: int | None           # its cost in the model (>= its exact cost)
    bound: int                      # proven lower bound on the model's optimum
    optimal: bool                   # the model's optimum was proven
    exact: bool                     # model cost == order_cost for every order
    seconds: float


def _position_bounds(n: int, preds: Sequence[Sequence[int]], succs: Sequence[Sequence[int]],
                     topo: Sequence[int]) -> tuple[list[int], list[int]]:
    """Per node, [#ancestors, n-1-#descendants] (bitsets; depth/height past 4000 nodes)."""
    lo, hi = [0] * n, [n - 1] * n
    if n > 4000:
        for v in topo:
            lo[v] = max((lo[u] + 1 for u in preds[v]), default=0)
        for v in reversed(topo):
            hi[v] = min((hi[w] - 1 for w in succs[v]), default=n - 1)
        return lo, hi
    anc = [0] * n
    for v in topo:
        a = 0
        for u in preds[v]:
            a |= anc[u] | (1 << u)
        anc[v] = a
        lo[v] = a.bit_count()
    desc = [0] * n
    for v in reversed(topo):
        d = 0
        for w in succs[v]:
            d |= desc[w] | (1 << w)
        desc[v] = d
        hi[v] = n - 1 - d.bit_count()
    return lo, hi


def position_variables(m, dag: Dag) -> list:
    """One position per node of ``dag`` in model ``m``: all different, within
    [#ancestors, n-1-#descendants], each after its predecessors."""
    n = len(dag.topo)
    lo, hi = _position_bounds(n, dag.preds, dag.succs, dag.topo)
    pos = [m.new_int_var(lo[v], hi[v], f"p{v}") for v in range(n)]
    m.add_all_different(pos)
    for v in range(n):
        for w in dag.succs[v]:
            m.add(pos[v] + 1 <= pos[w])
    return pos


def solve_cpsat(problem: OrderProblem, *, hint: Sequence[int] | None = None,
                time_limit_s: float = 10.0, workers: int = 2, seed: int = 0,
                extra_edges: Sequence[tuple[int, int]] = (),
                deterministic_time: float | None = None) -> CpsatResult:
    """Minimise the peak with CP-SAT. ``hint``: an order to start from;
    ``deterministic_time``: also stop after this much of CP-SAT's deterministic
    time, so that a run that stops there is reproducible for a seed."""
    cp_model = _cp_model()
    t0 = time.monotonic()
    n = problem.num_nodes
    if n == 0:
        return CpsatResult((), 0, 0, True, True, 0.0)
    dag = Dag.of(dataclasses.replace(problem, edges=tuple(problem.edges) + tuple(extra_edges)))
    m = cp_model.CpModel()
    pos = position_variables(m, dag)
    hint_pos = None
    if hint is not None:
        hint_pos = [0] * n
        for step, v in enumerate(hint):
            hint_pos[v] = step
            m.add_hint(pos[v], step)

    def reduced(nodes: Sequence[int], is_min: bool, name: str, also=None):
        """A variable for the min (or max) position of ``nodes`` (and ``also``)."""
        nodes = sorted(set(nodes))
        if len(nodes) == 1 and also is None:
            return pos[nodes[0]]
        v = m.new_int_var(0, n - 1, name)
        terms = [pos[u] for u in nodes] + ([] if also is None else [also])
        (m.add_min_equality if is_min else m.add_max_equality)(v, terms)
        if hint_pos is not None:
            values = [hint_pos[u] for u in nodes] + ([] if also is None else [hint_of[also.index]])
            hint_of[v.index] = (min if is_min else max)(values)
            m.add_hint(v, hint_of[v.index])
        return v

    hint_of: dict = {}
    if hint_pos is not None:
        hint_of.update((p.index, h) for p, h in zip(pos, hint_pos))
    const_load = 0
    always_busy: set[int] = set()
    spans: list[tuple[int, object, object]] = []   # (item index, start expr, end expr)
    for i, it in enumerate(problem.items):
        fixed_start = it.live_in or not it.defs
        if fixed_start and it.live_out:
            if it.region == ARENA:
                const_load += it.size
            else:
                always_busy.add(it.region)
            continue
        start = 0 if fixed_start else reduced(it.defs, True, f"s{i}")
        if it.live_out:
            end = n - 1
        elif not it.touches:
            end = start
        elif fixed_start or not set(it.defs).isdisjoint(it.touches):
            end = reduced(it.touches, False, f"e{i}")   # already >= start
        else:
            end = reduced(it.touches, False, f"e{i}", also=start)
        spans.append((i, start, end))

    def interval(start, end, name):
        if isinstance(start, int) and isinstance(end, int):
            return m.new_fixed_size_interval_var(start, end - start + 1, name)
        size = m.new_int_var(1, n, f"len_{name}")
        m.add(size == end - start + 1)
        return m.new_interval_var(start, size, end + 1, name)

    intervals, demands = [], []
    by_region: dict[int, list[tuple[object, object]]] = {}
    for i, start, end in spans:
        it = problem.items[i]
        if it.region == ARENA:
            if it.size:
                intervals.append(interval(start, end, f"i{i}"))
                demands.append(it.size)
        elif it.region not in always_busy:
            by_region.setdefault(it.region, []).append((start, end))
    exact = all(len(v) == 1 for v in by_region.values())
    for r, members in by_region.items():
        if problem.region_sizes[r] == 0:
            continue
        if len(members) == 1:
            start, end = members[0]
        else:
            start = m.new_int_var(0, n - 1, f"rs{r}")
            end = m.new_int_var(0, n - 1, f"re{r}")
            m.add_min_equality(start, [s for s, _ in members])
            m.add_max_equality(end, [e for _, e in members])
        intervals.append(interval(start, end, f"r{r}"))
        demands.append(problem.region_sizes[r])
    for v in range(n):
        if problem.node_extra[v]:
            intervals.append(m.new_fixed_size_interval_var(pos[v], 1, f"x{v}"))
            demands.append(problem.node_extra[v])
    idle_cap = sum(c for r, c in enumerate(problem.region_sizes) if r not in always_busy)
    top = const_load + sum(demands)
    peak = m.new_int_var(0, top, "peak")
    capacity = m.new_int_var(0, top + idle_cap, "capacity")
    m.add(capacity == peak + idle_cap - const_load)
    m.add_cumulative(intervals, demands, capacity)
    m.minimize(peak)

    extra = {} if deterministic_time is None else {"max_deterministic_time": deterministic_time}
    solver, status = cpsat_run.solve(m, time_limit_s - (time.monotonic() - t0),
                                     workers=workers, seed=seed, **extra)
    seconds = time.monotonic() - t0
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return CpsatResult(None, None, int(solver.best_objective_bound) if status != cp_model.UNKNOWN else 0,
                           False, exact, seconds)
    values = [solver.value(p) for p in pos]
    order = tuple(sorted(range(n), key=values.__getitem__))
    return CpsatResult(order, int(solver.objective_value), int(solver.best_objective_bound),
                       status == cp_model.OPTIMAL, exact, seconds)


def solve_window(ev: Evaluator, st: OrderState, lo: int, hi: int, *,
                 keep_order: Sequence[int] = (), time_limit_s: float = 2.0,
                 deterministic_time: float | None = None, workers: int = 1,
                 seed: int = 0) -> list[int] | None:
    """Re-solve steps lo..hi of ``st.order`` with every other node fixed; the
    nodes of ``keep_order`` (inside the window) keep their relative order.
    Returns the new full order, or None when the solver found nothing."""
    keep = set(keep_order)
    kept = [int(v) for v in st.order[lo:hi + 1] if v in keep]
    chain = list(zip(kept, kept[1:]))
    win = window_problem(ev, st, lo, hi, extra_edges=chain)
    res = solve_cpsat(win.problem, hint=range(hi - lo + 1), time_limit_s=time_limit_s,
                      deterministic_time=deterministic_time, workers=workers, seed=seed)
    if res.order is None:
        return None
    return win.splice(st.order.tolist(), res.order)
