"""Proven lower bounds on the order problem's cost over all topological orders.

For a node ``n`` and the set ``S`` of nodes run before it, the step cost
(``problem.step_profile``) is a function ``f_n(S)``.  Every order runs each
node once, with ``S`` predecessor-closed, holding all of ``n``'s ancestors and
none of its descendants, so ``max_n min_S f_n(S)`` is a lower bound on every
order's peak.  ``min_cut_bound`` computes that minimum per node as a
minimum-weight closure (one s-t max-flow per node); ``simple_bound`` counts
only what is live whatever ``S`` is.

Liveness is modelled so that it never exceeds ``problem.live_intervals``: an
item is live at ``n`` when it has started (``live_in``, no defs, or a def in
``S`` or ``n``) and is unfinished (``live_out``, or a touch that is ``n`` or
not in ``S``).  Where this differs from ``live_intervals`` (defs missing from
touches, items with neither defs nor touches) it says *less* is live, which
only lowers the bound.  The one relaxed term is a fixed region with several
pinned items that may each be live: "busy iff any is live" is not a cut
function, so its capacity is split over those items (``sum w_i * live_i <=
cap * max_i live_i``), which again can only lower the bound.
"""

from __future__ import annotations

import dataclasses
import functools
import heapq
import time
from collections import deque
from typing import Callable, Sequence

import numpy as np

from olla_jax.solve.problem import ARENA, OrderProblem, step_profile, topological_order


@dataclasses.dataclass(frozen=True)
class Bound:
    """A proven lower bound on ``order_cost`` over every topological order.

    ``per_node[n]`` is a proven lower bound on node ``n``'s step cost in any
    order (exact per-node minimum where ``method`` computed it).  ``complete``
    is False when a time limit stopped the computation early; ``value`` is then
    still valid, only possibly weaker.  ``flows`` counts the max-flows solved.
    """
    value: int
    per_node: tuple[int, ...]
    method: str
    seconds: float
    complete: bool
    flows: int = 0


# --------------------------------------------------------------------------
# shared structure


@dataclasses.dataclass(frozen=True)
class _Items:
    """Items after normalisation and merging of identical ones (numpy form)."""
    size: np.ndarray         # int64
    region: np.ndarray       # int64, ARENA or region id
    started: np.ndarray      # bool: live_in or no defs
    live_out: np.ndarray     # bool
    def_item: np.ndarray     # flattened (item, node) pairs of defs
    def_node: np.ndarray
    touch_item: np.ndarray   # flattened (item, node) pairs of touches
    touch_node: np.ndarray
    defs: tuple[tuple[int, ...], ...]
    touches: tuple[tuple[int, ...], ...]


@dataclasses.dataclass(frozen=True)
class _Graph:
    num_nodes: int
    edges: np.ndarray               # (E, 2) int64
    anc: tuple[int, ...]            # strict ancestors per node, as bitsets
    desc: tuple[int, ...]           # strict descendants per node, as bitsets


def _graph(problem: OrderProblem) -> _Graph:
    """Ancestors and descendants of ``problem``'s nodes (kept for the last
    edges seen: a graph's threshold problems share them, and their bitsets
    cost 0.04 s a problem on 2k nodes)."""
    key = (problem.num_nodes, problem.edges)
    if _GRAPH_KEPT and _GRAPH_KEPT[0][0] == key:
        return _GRAPH_KEPT[0][1]
    found = _build_graph(problem)
    _GRAPH_KEPT[:] = [(key, found)]
    return found


_GRAPH_KEPT: list = []   # [((num_nodes, edges), _Graph)]: the last one built


def _adjacency(n: int, edges) -> tuple[list[list[int]], list[list[int]]]:
    """Each node's predecessors and successors."""
    preds: list[list[int]] = [[] for _ in range(n)]
    succs: list[list[int]] = [[] for _ in range(n)]
    for u, v in edges:
        preds[v].append(u)
        succs[u].append(v)
    return preds, succs


def _build_graph(problem: OrderProblem) -> _Graph:
    n = problem.num_nodes
    order = topological_order(n, problem.edges)
    preds, succs = _adjacency(n, problem.edges)
    anc = [0] * n
    for v in order:
        acc = 0
        for u in preds[v]:
            acc |= anc[u] | (1 << u)
        anc[v] = acc
    desc = [0] * n
    for u in reversed(order):
        acc = 0
        for v in succs[u]:
            acc |= desc[v] | (1 << v)
        desc[u] = acc
    edges = np.array(problem.edges, dtype=np.int64).reshape(-1, 2)
    return _Graph(n, edges, tuple(anc), tuple(desc))


def _items(problem: OrderProblem) -> _Items:
    """Normalise items (a single def counts as a touch, which is exact) and
    merge items of identical shape, summing sizes; drop zero-size movables."""
    merged: dict[tuple, int] = {}
    for item in problem.items:
        if item.region != ARENA and not 0 <= item.region < len(problem.region_sizes):
            raise ValueError(f"item pinned in unknown region {item.region}")
        defs = tuple(sorted(set(item.defs)))
        touches = set(item.touches)
        if len(defs) == 1:
            touches.update(defs)  # its first def always has it live
        started = item.live_in or not defs
        key = (item.region, () if started else defs, tuple(sorted(touches)), started, item.live_out)
        if item.region == ARENA and item.size <= 0:
            continue
        merged[key] = merged.get(key, 0) + item.size
    keys = list(merged)
    def_pairs = [(i, d) for i, k in enumerate(keys) for d in k[1]]
    touch_pairs = [(i, t) for i, k in enumerate(keys) for t in k[2]]
    d = np.array(def_pairs, dtype=np.int64).reshape(-1, 2)
    t = np.array(touch_pairs, dtype=np.int64).reshape(-1, 2)
    return _Items(
        size=np.array([merged[k] for k in keys], dtype=np.int64),
        region=np.array([k[0] for k in keys], dtype=np.int64),
        started=np.array([k[3] for k in keys], dtype=bool),
        live_out=np.array([k[4] for k in keys], dtype=bool),
        def_item=d[:, 0], def_node=d[:, 1], touch_item=t[:, 0], touch_node=t[:, 1],
        defs=tuple(k[1] for k in keys), touches=tuple(k[2] for k in keys))


def _bits_to_mask(bits: int, n: int) -> np.ndarray:
    raw = np.frombuffer(bits.to_bytes((n + 7) // 8 or 1, "little"), dtype=np.uint8)
    return np.unpackbits(raw, count=n, bitorder="little").astype(bool)


def _forced_live(graph: _Graph, items: _Items) -> list[int]:
    """Per item, the bitset of nodes at which it is live whatever S is."""
    n = graph.num_nodes
    everything = (1 << n) - 1
    out = []
    for i in range(len(items.size)):
        if items.started[i]:
            a = everything
        else:
            a = 0
            for d in items.defs[i]:
                a |= graph.desc[d] | (1 << d)
        if items.live_out[i]:
            b = everything
        else:
            b = 0
            for t in items.touches[i]:
                b |= graph.anc[t] | (1 << t)
        out.append(a & b)
    return out


def _simple_per_node(problem: OrderProblem, graph: _Graph, items: _Items) -> np.ndarray:
    n = graph.num_nodes
    forced = _forced_live(graph, items)
    live = np.array(problem.node_extra, dtype=np.int64)
    busy = [0] * len(problem.region_sizes)
    for i, bits in enumerate(forced):
        if not bits:
            continue
        r = int(items.region[i])
        if r == ARENA:
            live += int(items.size[i]) * _bits_to_mask(bits, n)
        else:
            busy[r] |= bits
    for r, cap in enumerate(problem.region_sizes):
        live -= cap * ~_bits_to_mask(busy[r], n)  # may be idle: subtract its capacity
    return np.maximum(live, 0)


def simple_bound(problem: OrderProblem) -> Bound:
    """Max over nodes of the bytes live at that node whatever the order:
    items started by an ancestor (or the node) and needed by a descendant (or
    the node), plus the node's extra, less every region that may be idle."""
    t0 = time.perf_counter()
    graph = _graph(problem)
    per_node = _simple_per_node(problem, graph, _items(problem))
    value = int(per_node.max()) if len(per_node) else 0
    return Bound(value, tuple(int(x) for x in per_node), "simple", time.perf_counter() - t0, True)


# --------------------------------------------------------------------------
# max-flow engines: (num_nodes, tails, heads, caps, source, sink) -> flow value

FlowFn = Callable[[int, np.ndarray, np.ndarray, np.ndarray, int, int], int]


def dinic_max_flow(num_nodes: int, tails: np.ndarray, heads: np.ndarray, caps: np.ndarray,
                   source: int, sink: int) -> int:
    """Dinic's algorithm in pure Python (the fallback when ortools is missing)."""
    m = len(tails)
    to = [0] * (2 * m)
    cap = [0] * (2 * m)
    adj: list[list[int]] = [[] for _ in range(num_nodes)]
    for k, (u, v, c) in enumerate(zip(tails.tolist(), heads.tolist(), caps.tolist())):
        to[2 * k], cap[2 * k] = v, c
        to[2 * k + 1] = u
        adj[u].append(2 * k)
        adj[v].append(2 * k + 1)
    total = 0
    while True:
        level = [-1] * num_nodes
        level[source] = 0
        queue = deque([source])
        while queue:
            u = queue.popleft()
            for e in adj[u]:
                if cap[e] > 0 and level[to[e]] < 0:
                    level[to[e]] = level[u] + 1
                    queue.append(to[e])
        if level[sink] < 0:
            return total
        it = [0] * num_nodes
        while True:  # find blocking flow by iterative DFS
            path: list[int] = []
            u = source
            while u != sink:
                edges_u = adj[u]
                while it[u] < len(edges_u):
                    e = edges_u[it[u]]
                    if cap[e] > 0 and level[to[e]] == level[u] + 1:
                        break
                    it[u] += 1
                else:
                    if not path:
                        break
                    level[u] = -1  # dead end: retreat
                    e = path.pop()
                    u = to[e ^ 1]
                    it[u] += 1
                    continue
                path.append(e)
                u = to[e]
            if u != sink:
                break
            push = min(cap[e] for e in path)
            for e in path:
                cap[e] -= push
                cap[e ^ 1] += push
            total += push


def ortools_max_flow(num_nodes: int, tails: np.ndarray, heads: np.ndarray, caps: np.ndarray,
                     source: int, sink: int) -> int:
    """OR-tools' push-relabel SimpleMaxFlow (int64 capacities)."""
    from ortools.graph.python import max_flow
    if len(tails) == 0:
        return 0
    smf = max_flow.SimpleMaxFlow()
    smf.add_arcs_with_capacity(tails, heads, caps)
    status = smf.solve(source, sink)
    if status != smf.OPTIMAL:
        raise RuntimeError(f"ortools max-flow failed with status {status}")
    return int(smf.optimal_flow())


def _flow_engine(flow: str) -> tuple[str, FlowFn]:
    if flow == "dinic":
        return "dinic", dinic_max_flow
    if flow in ("ortools", "auto"):
        try:
            from ortools.graph.python import max_flow  # noqa: F401
            return "ortools", ortools_max_flow
        except ImportError:
            if flow == "ortools":
                raise
            return "dinic", dinic_max_flow
    raise ValueError(f"unknown flow engine {flow!r}: use 'auto', 'ortools' or 'dinic'")


# --------------------------------------------------------------------------
# the per-node closure network

SOURCE, SINK = 0, 1


def _node_minimum(problem: OrderProblem, graph: _Graph, items: _Items, n: int,
                  flow_fn: FlowFn, before: int = 0, after: int = 0,
                  chosen: np.ndarray | None = None) -> int:
    """min over admissible S of the modelled step cost at node ``n``.

    Network: source side = "in S" (already run).  Free nodes x_v get
    infinite arcs x_v -> x_u for each edge u->v (closure).  An item that may
    be live costs w * [started and not finished]: an arc a -> b of capacity w,
    where a is the source (surely started), the one free def, or an auxiliary
    node with infinite arcs x_d -> a (a = OR of the free defs), and b is the
    sink (surely unfinished), the one free touch, or an auxiliary node with
    infinite arcs b -> x_t (b = AND of the free touches).
    ``before``: a bitset of nodes also run before ``n``, closed under
    ancestors and disjoint from ``n`` and its descendants (the caller's case).
    ``after``: a bitset of nodes also run after ``n``, closed under
    descendants and disjoint from ``n``, its ancestors and ``before``.
    ``chosen``: a bool array over the nodes, set to one minimising ``S``
    (OR-tools' flow then, whatever ``flow_fn``: it gives the cut's side).
    """
    nn = graph.num_nodes
    anc = _bits_to_mask(graph.anc[n] | before, nn)
    desc = _bits_to_mask(graph.desc[n] | after, nn)
    here = np.zeros(nn, dtype=bool)
    here[n] = True
    free = ~(anc | desc | here)
    fid = np.cumsum(free) + 1  # ids 2.. for free nodes
    num_items = len(items.size)

    def count(pair_item: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return np.bincount(pair_item[mask], minlength=num_items)

    d_free = free[items.def_node]
    t_free = free[items.touch_node]
    a_cert = items.started | (count(items.def_item, (anc | here)[items.def_node]) > 0)
    b_cert = items.live_out | (count(items.touch_item, (desc | here)[items.touch_node]) > 0)
    a_free = count(items.def_item, d_free)
    b_free = count(items.touch_item, t_free)
    live = a_cert & b_cert
    maybe = ~live & (a_cert | (a_free > 0)) & (b_cert | (b_free > 0))

    movable = items.region == ARENA
    const = int(problem.node_extra[n]) + int(items.size[live & movable].sum())
    weight = np.where(movable & maybe, items.size, 0)
    num_regions = len(problem.region_sizes)
    if num_regions:
        caps = np.array(problem.region_sizes, dtype=np.int64)
        pinned = ~movable
        busy = np.bincount(items.region[pinned & live], minlength=num_regions) > 0
        k = np.bincount(items.region[pinned & maybe], minlength=num_regions)
        const -= int(caps[~busy].sum())
        share = np.where(busy | (k == 0), 0, caps // np.maximum(k, 1))
        pinned_maybe = pinned & maybe
        weight[pinned_maybe] = share[items.region[pinned_maybe]]
    var = maybe & (weight > 0)
    if chosen is not None:
        chosen[:] = anc
    if not var.any():
        return const

    # endpoint a per variable item
    next_id = int(fid[-1]) + 1 if nn else 2
    a_node = np.full(num_items, -1, dtype=np.int64)
    a_node[var & a_cert] = SOURCE
    one_def = var & ~a_cert & (a_free == 1)
    sel = d_free & one_def[items.def_item]
    a_node[items.def_item[sel]] = fid[items.def_node[sel]]
    multi_a = var & ~a_cert & (a_free > 1)
    a_node[multi_a] = np.arange(next_id, next_id + multi_a.sum())
    next_id += int(multi_a.sum())
    b_node = np.full(num_items, -1, dtype=np.int64)
    b_node[var & b_cert] = SINK
    one_touch = var & ~b_cert & (b_free == 1)
    sel_t = t_free & one_touch[items.touch_item]
    b_node[items.touch_item[sel_t]] = fid[items.touch_node[sel_t]]
    multi_b = var & ~b_cert & (b_free > 1)
    b_node[multi_b] = np.arange(next_id, next_id + multi_b.sum())
    next_id += int(multi_b.sum())

    inf = int(weight[var].sum()) + 1
    u, v = graph.edges[:, 0], graph.edges[:, 1]
    closure = free[u] & free[v]
    da = d_free & multi_a[items.def_item]
    tb = t_free & multi_b[items.touch_item]
    tails = np.concatenate([a_node[var], fid[v[closure]],
                            fid[items.def_node[da]], b_node[items.touch_item[tb]]])
    heads = np.concatenate([b_node[var], fid[u[closure]],
                            a_node[items.def_item[da]], fid[items.touch_node[tb]]])
    capacity = np.concatenate([weight[var],
                               np.full(int(closure.sum()) + int(da.sum()) + int(tb.sum()), inf,
                                       dtype=np.int64)])
    keep = tails != heads
    if chosen is not None:
        cut, side = _source_side_flow(tails[keep], heads[keep], capacity[keep])
        in_s = np.zeros(next_id, dtype=bool)
        in_s[side] = True
        chosen |= free & in_s[fid]
        return const + cut
    cut = flow_fn(next_id, tails[keep], heads[keep], capacity[keep], SOURCE, SINK)
    return const + cut


def _source_side_flow(tails: np.ndarray, heads: np.ndarray, caps: np.ndarray
                      ) -> tuple[int, np.ndarray]:
    """OR-tools' max-flow from SOURCE to SINK, and the nodes on the source side of a min cut."""
    from ortools.graph.python import max_flow
    if len(tails) == 0:
        return 0, np.array([SOURCE], dtype=np.int64)
    smf = max_flow.SimpleMaxFlow()
    smf.add_arcs_with_capacity(tails, heads, caps)
    status = smf.solve(SOURCE, SINK)
    if status != smf.OPTIMAL:
        raise RuntimeError(f"ortools max-flow failed with status {status}")
    return int(smf.optimal_flow()), np.asarray(smf.get_source_side_min_cut(), dtype=np.int64)


class NodeCuts:
    """Per-node min-cuts of one problem with the set that attains each: what
    ``min_cut_bound`` computes per node, kept as an order (``solve.cut_move``
    uses it to move an order's nodes to either side of a peak node).  Each
    node's cut is kept: ``min_cut_bound(cuts=)`` fills it for the nodes it
    solves, so the moves on the same problem reuse them (one max-flow each,
    50 ms a node on vit small)."""

    def __init__(self, problem: OrderProblem):
        self.problem = problem
        self._cuts: dict[int, tuple[int, np.ndarray]] = {}
        self.flows = 0    # max-flows run (a cut asked for again runs none)

    # Built on first use: the ancestor bitsets grow as nodes squared (2 GiB
    # and seconds on a 100k-node chain), and a big graph may never ask a cut.
    @functools.cached_property
    def graph(self) -> _Graph:
        return _graph(self.problem)

    @functools.cached_property
    def items(self) -> _Items:
        return _items(self.problem)

    def before(self, n: int) -> tuple[int, np.ndarray]:
        """(min over admissible S of the modelled step cost at ``n``, a
        minimising S as a bool array: closed under ancestors, holding
        ``n``'s ancestors and none of ``n`` or its descendants)."""
        if n not in self._cuts:
            chosen = np.zeros(self.problem.num_nodes, dtype=bool)
            value = _node_minimum(self.problem, self.graph, self.items, n, ortools_max_flow,
                                  chosen=chosen)
            self.flows += 1
            self._cuts[n] = (value, chosen)
        value, chosen = self._cuts[n]
        return value, chosen.copy()


def _greedy_order(problem: OrderProblem) -> list[int]:
    """A memory-greedy topological order, only to get per-node upper bounds for
    pruning: run the ready node with the least (bytes it starts - bytes it ends).

    Priorities only fall as other nodes run, so a lazy heap with stale entries
    skipped on pop is exact.
    """
    n = problem.num_nodes
    preds_left = [0] * n
    succ: list[list[int]] = [[] for _ in range(n)]
    for u, v in problem.edges:
        succ[u].append(v)
        preds_left[v] += 1
    alloc = [0] * n
    frees = [0] * n
    started, left, touchers = [], [], []
    def_of: list[list[int]] = [[] for _ in range(n)]
    touch_of: list[list[int]] = [[] for _ in range(n)]
    for i, item in enumerate(problem.items):
        size = item.size if item.region == ARENA else 0
        defs, touches = set(item.defs), set(item.touches) | set(item.defs)
        started.append(item.live_in or not defs)
        left.append(len(touches))
        touchers.append(touches)
        for d in defs:
            def_of[d].append(i)
            if not started[i]:
                alloc[d] += size
        for t in touches:
            touch_of[t].append(i)
        if len(touches) == 1 and not item.live_out:
            frees[next(iter(touches))] += size
    done = [False] * n
    prio = [alloc[v] - frees[v] for v in range(n)]
    heap = [(prio[v], v) for v in range(n) if preds_left[v] == 0]
    heapq.heapify(heap)
    order: list[int] = []
    while heap:
        p, v = heapq.heappop(heap)
        if done[v] or p != prio[v]:
            continue
        done[v] = True
        order.append(v)
        changed = set()
        for i in def_of[v]:
            if not started[i]:
                started[i] = True
                size = problem.items[i].size if problem.items[i].region == ARENA else 0
                for d in problem.items[i].defs:
                    if not done[d]:
                        alloc[d] -= size
                        changed.add(d)
        for i in touch_of[v]:
            left[i] -= 1
            item = problem.items[i]
            if left[i] == 1 and not item.live_out and item.region == ARENA:
                last = next(t for t in touchers[i] if not done[t])
                frees[last] += item.size
                changed.add(last)
        for w in changed:
            prio[w] = alloc[w] - frees[w]
            if preds_left[w] == 0:
                heapq.heappush(heap, (prio[w], w))
        for w in succ[v]:
            preds_left[w] -= 1
            if preds_left[w] == 0:
                heapq.heappush(heap, (prio[w], w))
    if len(order) != n:
        raise ValueError("the order problem's edges contain a cycle")
    return order


def order_upper(problem: OrderProblem, orders: Sequence[Sequence[int]]) -> tuple[np.ndarray, int]:
    """Per node, the least step cost seen in the given orders, and their best peak."""
    per_node = np.full(problem.num_nodes, np.iinfo(np.int64).max, dtype=np.int64)
    best = np.iinfo(np.int64).max
    for order in orders:
        profile = step_profile(problem, order)
        np.minimum.at(per_node, np.asarray(order, dtype=np.int64), np.asarray(profile, dtype=np.int64))
        best = min(best, max(profile, default=0))
    return per_node, int(best)


def min_cut_bound(problem: OrderProblem, *, time_limit_s: float = 60.0, flow: str = "auto",
                  orders: Sequence[Sequence[int]] = (), prune: bool = True, floor: int = 0,
                  cuts: NodeCuts | None = None) -> Bound:
    """The per-node min-cut (closure) lower bound.

    Nodes are solved in decreasing order of an upper bound on their value (the
    step cost seen in a few topological orders, plus any ``orders`` given), and
    skipped once that upper bound cannot raise the current maximum; the search
    stops early when the maximum meets the best order's peak.  On timeout the
    best bound proven so far is returned with ``complete=False``.
    ``prune=False`` solves every node, so ``per_node`` holds each exact minimum.
    ``floor``: a bound already proven by other means; nodes whose upper bound
    cannot exceed it are skipped too, so ``max(floor, value)`` is exact while
    ``value`` alone may then be weaker.
    ``cuts``: a ``NodeCuts`` of this problem: its network is used and each
    node's cut kept there (for ``solve.cut_move``); with the ortools flow only.
    """
    t0 = time.perf_counter()
    engine, flow_fn = _flow_engine(flow)
    if cuts is not None and (cuts.problem is not problem or engine != "ortools"):
        raise ValueError("min_cut_bound: cuts must be a NodeCuts of the same problem, "
                         "with the ortools flow")
    method = f"min-cut/{engine}"
    if problem.num_nodes == 0:
        return Bound(0, (), method, time.perf_counter() - t0, True)
    heuristic = [_greedy_order(problem), topological_order(problem.num_nodes, problem.edges)]
    upper, best_peak = order_upper(problem, [*heuristic, *orders])
    if prune and floor > 0 and best_peak <= floor:
        # An order already costs no more than the floor: so does the optimum.
        return Bound(0, (0,) * problem.num_nodes, method, time.perf_counter() - t0, True)
    graph = _graph(problem) if cuts is None else cuts.graph
    items = _items(problem) if cuts is None else cuts.items
    per_node = _simple_per_node(problem, graph, items)
    best = int(per_node.max())
    complete, flows = True, 0
    for n in np.argsort(-upper, kind="stable").tolist():
        if prune and min(int(upper[n]), best_peak) <= max(best, floor):
            break  # nor can any later node: upper is sorted, values are at most it
        if time.perf_counter() - t0 > time_limit_s:
            complete = False
            break
        value = max(0, _node_minimum(problem, graph, items, n, flow_fn) if cuts is None
                    else cuts.before(n)[0])
        flows += 1
        per_node[n] = max(int(per_node[n]), value)
        best = max(best, value)
    return Bound(best, tuple(int(x) for x in per_node), method, time.perf_counter() - t0, complete,
                 flows)


# --------------------------------------------------------------------------
# the last node of a set


def _closure(graph: _Graph, nodes) -> int:
    bits = 0
    for v in nodes:
        bits |= graph.anc[v] | (1 << v)
    return bits


def _max_of_least(groups, *, t0: float, time_limit_s: float, best: int = 0):
    """The max over ``groups`` of the least over each group's cases (a case:
    a call giving its value and the max-flows it ran), from ``best``; a group
    whose cases fall to ``best`` stops early, and the time limit (from
    ``t0``) ends the search with the groups done before it.  Returns (best,
    flows, complete)."""
    flows, complete = 0, True
    for cases in groups:
        low = None
        for case in cases:
            if time.perf_counter() - t0 > time_limit_s:
                complete = False
                break
            value, ran = case()
            flows += ran
            low = value if low is None else min(low, value)
            if low <= best:
                break           # this group cannot raise the bound
        if not complete:
            break
        if low is not None:
            best = max(best, low)
    return best, flows, complete


def last_of_set_bound(problem: OrderProblem, sets: Sequence[Sequence[int]], *,
                      time_limit_s: float = 60.0, flow: str = "auto") -> Bound:
    """For a set ``D`` of nodes, every order runs some ``d`` in ``D`` last: then
    the others (and their ancestors) have run, so the order's peak is at least
    ``min`` over such ``d`` of the step cost at ``d`` minimised with them
    before it (the per-node min-cut, more of ``S`` forced).  A ``d`` with a
    descendant in ``D`` cannot be last and is skipped.  The per-node bound is
    the case of one node; a set whose members each alone run cheaply, but
    not all with the others done, proves more.  ``value``: the max over
    ``sets`` (those done within the time); ``per_node`` is empty."""
    t0 = time.perf_counter()
    engine, flow_fn = _flow_engine(flow)
    method = f"last-of-set/{engine}"
    if problem.num_nodes == 0:
        return Bound(0, (), method, time.perf_counter() - t0, True)
    graph = _graph(problem)
    items = _items(problem)
    def cases(members):
        for d in members:
            before = _closure(graph, [v for v in members if v != d])
            if before & (graph.desc[d] | (1 << d)):
                continue        # another member is a descendant of d: d is not last
            yield lambda d=d, before=before: (
                max(0, _node_minimum(problem, graph, items, d, flow_fn, before)), 1)

    def groups():
        for members in sets:
            members = sorted(set(int(v) for v in members))
            if any(not 0 <= v < problem.num_nodes for v in members):
                raise ValueError(f"a set names a node outside 0..{problem.num_nodes - 1}")
            yield cases(members)

    best, flows, complete = _max_of_least(groups(), t0=t0, time_limit_s=time_limit_s)
    return Bound(best, (), method, time.perf_counter() - t0, complete, flows)


def _down_closure(graph: _Graph, node: int) -> int:
    return graph.desc[node] | (1 << node)


def pair_bound(problem: OrderProblem, pairs: Sequence[tuple[int, int]], *,
               time_limit_s: float = 60.0, flow: str = "auto", floor: int = 0) -> Bound:
    """For two unordered nodes ``a`` and ``b``, every order runs one first.
    If ``a`` does, the step at ``a`` has ``b`` and its descendants still to
    run and the step at ``b`` has ``a`` and its ancestors done: the order's
    peak is at least the larger of the two per-node min-cuts so constrained.
    The least of that over both cases is a bound for every order; it is at
    least ``last_of_set_bound`` of ``{a, b}`` (which keeps only the second
    term of each case); where one node is an ancestor of the other, only its
    one case is possible.  ``value``: the max over
    ``pairs`` done within the time (and ``floor``: pairs that cannot beat it
    stop early); ``per_node`` is empty."""
    t0 = time.perf_counter()
    engine, flow_fn = _flow_engine(flow)
    method = f"pair/{engine}"
    if problem.num_nodes == 0:
        return Bound(0, (), method, time.perf_counter() - t0, True)
    graph = _graph(problem)
    items = _items(problem)
    def cases(a, b):
        # (first, second) is impossible when second is an ancestor of first
        for first, second in [c for c in ((a, b), (b, a)) if not graph.anc[c[0]] >> c[1] & 1]:
            # first runs before second: the later one sees the earlier done
            yield lambda first=first, second=second: (max(
                0, _node_minimum(problem, graph, items, second, flow_fn,
                                 before=_closure(graph, [first])),
                _node_minimum(problem, graph, items, first, flow_fn,
                              after=_down_closure(graph, second))), 2)

    def groups():
        for a, b in pairs:
            a, b = int(a), int(b)
            if not (0 <= a < problem.num_nodes and 0 <= b < problem.num_nodes):
                raise ValueError(f"a pair names a node outside 0..{problem.num_nodes - 1}")
            if a != b:
                yield cases(a, b)

    best, flows, complete = _max_of_least(groups(), t0=t0, time_limit_s=time_limit_s,
                                          best=max(0, floor))
    return Bound(best if best > floor else 0, (), method, time.perf_counter() - t0, complete,
                 flows)


# --------------------------------------------------------------------------
# the forced-live floor at a few nodes, in linear memory


def _reach(adjacency: list[list[int]], start: int, n: int) -> np.ndarray:
    """Nodes reachable from ``start`` (itself included), as a mask."""
    seen = np.zeros(n, dtype=bool)
    seen[start] = True
    stack = [start]
    while stack:
        for v in adjacency[stack.pop()]:
            if not seen[v]:
                seen[v] = True
                stack.append(v)
    return seen


def probe_bound(problem: OrderProblem, orders: Sequence[Sequence[int]], *,
                time_limit_s: float, floor: int = 0, prune: bool = True) -> Bound:
    """``simple_bound``'s per-node value at the nodes most costly in ``orders``
    (at least one order), computed node by node from one search up and one
    down (linear time and memory a node, where ``simple_bound`` keeps every
    node's ancestors and descendants as bitsets: quadratic, out of reach on
    100k nodes).  Nodes go in decreasing order of their least step cost over
    ``orders`` (which caps their value) and stop when none left can beat the
    best, or past ``time_limit_s``; the first node always runs.  ``per_node``
    is 0 where no node was probed (valid, only weak); ``flows``: the nodes probed."""
    t0 = time.perf_counter()
    n = problem.num_nodes
    if n == 0 or not orders:
        return Bound(0, (0,) * n, "probe", time.perf_counter() - t0, not n)
    upper, _ = order_upper(problem, orders)
    items = _items(problem)
    preds, succs = _adjacency(n, problem.edges)
    extra = np.asarray(problem.node_extra, dtype=np.int64)
    arena = items.region == ARENA
    caps = np.asarray(problem.region_sizes, dtype=np.int64)
    per_node = np.zeros(n, dtype=np.int64)
    best, complete, probed = 0, True, 0
    for k, node in enumerate(np.argsort(-upper, kind="stable").tolist()):
        if prune and int(upper[node]) <= max(best, floor):
            break   # nor can any later node: its value is at most its upper
        if k and time.perf_counter() - t0 > time_limit_s:
            complete = False
            break
        up, down = _reach(preds, node, n), _reach(succs, node, n)
        # started: live_in, no defs, or a def at the node or one of its ancestors;
        # unfinished: live_out, or a touch at the node or one of its descendants.
        started = items.started.copy()
        started[items.def_item[up[items.def_node]]] = True
        unfinished = items.live_out.copy()
        unfinished[items.touch_item[down[items.touch_node]]] = True
        live = started & unfinished
        busy = np.zeros(len(caps), dtype=bool)
        busy[items.region[live & ~arena]] = True
        value = int(extra[node] + items.size[live & arena].sum() - caps[~busy].sum())
        per_node[node] = max(0, value)
        best = max(best, value)
        probed += 1
    return Bound(max(0, best), tuple(int(x) for x in per_node), "probe",
                 time.perf_counter() - t0, complete, probed)
