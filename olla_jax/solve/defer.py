"""Orders that write outputs later, so their allocations can hold temporaries longer.

The order objectives count an output allocation that is not yet written as
free space at every step, whatever is live then.  A temporary can sit there
only if the allocation stays unwritten for the temporary's whole life, so an
output written just after the arena's peak frees nothing at the peak, and the
objectives cannot tell.  Moving such writers to the end of the order can: on
the H100 GPT-2 and BERT steps it takes the placement down to the lower bound.
It can also cost (a writer's operands then live until it runs), so each
variant is only a candidate, judged by its real placement.
"""

from __future__ import annotations

import heapq
from typing import Iterator, Sequence

import numpy as np

from olla_jax.solve.problem import ARENA, OrderProblem, Placement, PlacementProblem


def output_writers(problem: OrderProblem) -> frozenset[int]:
    """Nodes that define an item pinned in a fixed region (an output)."""
    return frozenset(d for item in problem.items if item.region != ARENA for d in item.defs)


def defer(problem: OrderProblem, order: Sequence[int], deferred: frozenset[int] | set[int]
          ) -> tuple[int, ...]:
    """``order`` with the ``deferred`` nodes run as late as the edges allow;
    every other node keeps its relative place (a stable topological sort)."""
    pos = {node: k for k, node in enumerate(order)}
    succ: list[list[int]] = [[] for _ in range(problem.num_nodes)]
    indeg = [0] * problem.num_nodes
    for u, v in problem.edges:
        succ[u].append(v)
        indeg[v] += 1
    ready = [(n in deferred, pos[n], n) for n in range(problem.num_nodes) if indeg[n] == 0]
    heapq.heapify(ready)
    out = []
    while ready:
        _, _, node = heapq.heappop(ready)
        out.append(node)
        for v in succ[node]:
            indeg[v] -= 1
            if indeg[v] == 0:
                heapq.heappush(ready, (v in deferred, pos[v], v))
    if len(out) != problem.num_nodes:
        raise ValueError("the order problem's edges have a cycle")
    return tuple(out)


def arena_peak_step(problem: PlacementProblem, placement: Placement) -> int:
    """The first time step at which the arena holds the most bytes."""
    horizon = max((iv.end for iv in problem.intervals), default=0) + 2
    delta = np.zeros(horizon + 1, dtype=np.int64)
    for iv, region in zip(problem.intervals, placement.region):
        if region == ARENA:
            delta[iv.start] += iv.size
            delta[iv.end + 1] -= iv.size
    return int(np.argmax(np.cumsum(delta)))


def deferral_sets(writers: frozenset[int], order: Sequence[int], peak_node: int
                  ) -> Iterator[frozenset[int]]:
    """Writers to defer, most promising first: all that run after the peak
    node, every writer, then the 1, 2, 4, ... nearest after the peak."""
    pos = {node: k for k, node in enumerate(order)}
    late = sorted((w for w in writers if pos[w] > pos[peak_node]), key=pos.__getitem__)
    seen = set()
    sizes = []
    k = 1
    while k < len(late):
        sizes.append(k)
        k *= 2
    for chosen in [late, sorted(writers)] + [late[:k] for k in sizes]:
        key = frozenset(chosen)
        if key and key not in seen:
            seen.add(key)
            yield key
