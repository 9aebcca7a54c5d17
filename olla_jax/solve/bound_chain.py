"""Lower bounds from a few nodes at once: whichever order runs them in, each
sees the ones before it done and the ones after it still to run.

The per-node min-cut (``bounds.min_cut_bound``) lets every node pick its own
set ``S`` of nodes run before it; one order must nest those sets.  For a set
``K`` of nodes, every order runs them in some sequence ``k1, ..., km`` that
the edges allow; in it, the step at ``ki`` has ``k1..k(i-1)`` and their
ancestors in ``S`` and ``k(i+1)..km`` and their descendants out of it, so the
order's peak is at least the largest of the members' min-cuts so constrained
(``bounds._node_minimum`` with ``before`` and ``after``).  The least of that
over the sequences is a bound for every order.  ``bounds.pair_bound`` is the
case of two nodes; on unet (CPU, small, threshold 0.28 MiB) pairs raised the
min-cut's 83.88 MiB to 87.12 and triples to 87.50, the best order's cost
there (0.7 s on 811 nodes).

Each constrained min-cut depends only on the node and which members come
before and after it, so it is kept and shared between sets and sequences.
"""

from __future__ import annotations

import itertools
import time
from typing import Sequence

import numpy as np

from olla_jax.solve import bounds
from olla_jax.solve.problem import OrderProblem, step_profile


class _Cuts:
    """Constrained per-node min-cuts of one problem, each computed once."""

    def __init__(self, problem: OrderProblem, flow: str):
        self.problem = problem
        self.graph = bounds._graph(problem)
        self.items = bounds._items(problem)
        _, self.flow_fn = bounds._flow_engine(flow)
        self.kept: dict[tuple[int, frozenset, frozenset], int] = {}
        self.flows = 0

    def at(self, node: int, earlier: frozenset, later: frozenset) -> int:
        key = (node, earlier, later)
        if key not in self.kept:
            before = 0
            for v in earlier:
                before |= self.graph.anc[v] | (1 << v)
            after = 0
            for v in later:
                after |= self.graph.desc[v] | (1 << v)
            self.kept[key] = max(0, bounds._node_minimum(
                self.problem, self.graph, self.items, node, self.flow_fn, before, after))
            self.flows += 1
        return self.kept[key]

    def feasible(self, sequence: Sequence[int]) -> bool:
        """No member is an ancestor of one it comes after."""
        anc = self.graph.anc
        return not any(anc[sequence[i]] >> sequence[j] & 1
                       for i in range(len(sequence)) for j in range(i + 1, len(sequence)))


def _least_over_sequences(cuts: _Cuts, members: tuple[int, ...], best: int) -> int | None:
    """min over the sequences the edges allow of the max of the members'
    constrained min-cuts; stops at ``best`` or below (the set cannot raise it:
    the figure returned is then only an upper estimate of the set's value)."""
    low = None
    for seq in itertools.permutations(members):
        if not cuts.feasible(seq):
            continue
        worst = 0
        for i, v in enumerate(seq):
            worst = max(worst, cuts.at(v, frozenset(seq[:i]), frozenset(seq[i + 1:])))
            if low is not None and worst >= low:
                break       # no lower than a sequence seen already
        low = worst if low is None else min(low, worst)
        if low <= best:
            break
    return low


def chain_bound(problem: OrderProblem, sets: Sequence[Sequence[int]], *,
                time_limit_s: float = 60.0, flow: str = "auto", floor: int = 0,
                _cuts: _Cuts | None = None) -> bounds.Bound:
    """The max over ``sets`` of each set's bound (see the module's doc):
    ``value`` (0 where no set beats ``floor``; sets that cannot stop early).
    Sets done within ``time_limit_s``; ``per_node`` is empty."""
    t0 = time.perf_counter()
    n = problem.num_nodes
    checked = []
    for members in sets:
        members = tuple(sorted({int(v) for v in members}))
        if any(not 0 <= v < n for v in members):
            raise ValueError(f"a set names a node outside 0..{n - 1}")
        if members:
            checked.append(members)
    if n == 0 or not checked:
        return bounds.Bound(0, (), "chain", time.perf_counter() - t0, True)
    cuts = _cuts if _cuts is not None else _Cuts(problem, flow)
    start_flows = cuts.flows
    best, complete = max(0, floor), True
    for members in checked:
        if time.perf_counter() - t0 > time_limit_s:
            complete = False
            break
        low = _least_over_sequences(cuts, members, best)
        if low is not None and low > best:
            best = low
    return bounds.Bound(best if best > floor else 0, (), "chain", time.perf_counter() - t0,
                        complete, cuts.flows - start_flows)


def candidates(problem: OrderProblem, orders: Sequence[Sequence[int]], width: int) -> list[int]:
    """Up to ``width`` nodes most costly in the orders: the ``width // 2``
    costliest of the order cheapest on ``problem`` (where its peak is), then
    by their least cost over ``orders`` (an upper bound on what a node can
    prove)."""
    if not orders or problem.num_nodes == 0:
        return []
    profiles = [np.asarray(step_profile(problem, o), dtype=np.int64) for o in orders]
    least = np.full(problem.num_nodes, np.iinfo(np.int64).max, dtype=np.int64)
    for order, profile in zip(orders, profiles):
        np.minimum.at(least, np.asarray(order, dtype=np.int64), profile)
    k = min(range(len(orders)), key=lambda i: int(profiles[i].max(initial=0)))
    best_order = np.asarray(orders[k], dtype=np.int64)
    picked: list[int] = []
    for v in best_order[np.argsort(-profiles[k], kind="stable")][:max(1, width // 2)].tolist():
        picked.append(int(v))
    for v in np.argsort(-least, kind="stable").tolist():
        if len(picked) >= width:
            break
        if v not in picked:
            picked.append(int(v))
    return picked[:width]


def search_bound(problem: OrderProblem, orders: Sequence[Sequence[int]], *,
                 time_limit_s: float, floor: int = 0, width: int = 12, largest: int = 3,
                 flow: str = "auto") -> bounds.Bound:
    """``chain_bound`` over the pairs, then the triples (up to ``largest``
    members) of ``candidates(problem, orders, w)``, for w = 6, 9, then
    ``width`` (the fewest first: on unet the six costliest nodes' triples
    proved in 0.15 s what twelve's did in 0.9 s), while the time lasts; stops
    once it meets the least peak of ``orders`` (nothing proves more).
    ``value`` is 0 where nothing beats ``floor``."""
    t0 = time.perf_counter()
    if not orders or problem.num_nodes < 2:
        return bounds.Bound(0, (), "chain", time.perf_counter() - t0, True)
    top = min(max(step_profile(problem, o), default=0) for o in orders)
    cuts = _Cuts(problem, flow)
    best, complete = max(0, floor), True
    tried: set = set()
    for w in sorted({min(width, 6), min(width, 9), width}):
        nodes = sorted(candidates(problem, orders, w))
        for size in range(2, max(2, largest) + 1):
            if best >= top or not complete:
                break
            sets = [s for s in itertools.combinations(nodes, size) if s not in tried]
            tried.update(sets)
            left = time_limit_s - (time.perf_counter() - t0)
            found = chain_bound(problem, sets, time_limit_s=left, floor=best, _cuts=cuts)
            best = max(best, found.value)
            complete = found.complete
    return bounds.Bound(best if best > floor else 0, (), "chain", time.perf_counter() - t0,
                        complete, cuts.flows)
