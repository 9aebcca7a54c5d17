"""Graph facts about an OrderProblem that every order engine needs.

``Dag.of(problem)`` validates the problem (edge and item node ids in range,
regions known, no cycle) once, so engines can trust their input.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable, Sequence

from olla_jax.solve.problem import ARENA, OrderProblem


@dataclasses.dataclass(frozen=True)
class Dag:
    """Adjacency and one topological order of a problem's nodes."""
    preds: tuple[tuple[int, ...], ...]
    succs: tuple[tuple[int, ...], ...]
    topo: tuple[int, ...]          # nodes in a topological order
    depth: tuple[int, ...]         # longest path (in edges) from any source
    height: tuple[int, ...]        # longest path (in edges) to any sink

    @property
    def num_nodes(self) -> int:
        return len(self.preds)

    @property
    def longest_path(self) -> int:
        """Number of nodes on a longest path (0 for an empty graph)."""
        return max((d + h + 1 for d, h in zip(self.depth, self.height)), default=0)

    @staticmethod
    def of(problem: OrderProblem) -> Dag:
        validate(problem)
        n = problem.num_nodes
        preds: list[set[int]] = [set() for _ in range(n)]
        succs: list[set[int]] = [set() for _ in range(n)]
        for u, v in problem.edges:
            succs[u].add(v)
            preds[v].add(u)
        topo = _topological(n, preds, succs)
        depth = [0] * n
        for v in topo:
            depth[v] = max((depth[u] + 1 for u in preds[v]), default=0)
        height = [0] * n
        for v in reversed(topo):
            height[v] = max((height[w] + 1 for w in succs[v]), default=0)
        return Dag(tuple(tuple(sorted(p)) for p in preds), tuple(tuple(sorted(s)) for s in succs),
                   tuple(topo), tuple(depth), tuple(height))


def validate(problem: OrderProblem) -> None:
    """Raise ValueError naming the first malformed edge, item or region."""
    n = problem.num_nodes
    for u, v in problem.edges:
        if not (0 <= u < n and 0 <= v < n):
            raise ValueError(f"edge {u}->{v} names a node outside 0..{n - 1}")
        if u == v:
            raise ValueError(f"edge {u}->{v} is a self loop")
    for i, item in enumerate(problem.items):
        for node in (*item.defs, *item.touches):
            if not 0 <= node < n:
                raise ValueError(f"item {i} names node {node} outside 0..{n - 1}")
        if item.size < 0:
            raise ValueError(f"item {i} has negative size {item.size}")
        if item.region != ARENA and not 0 <= item.region < len(problem.region_sizes):
            raise ValueError(f"item {i} is pinned in unknown region {item.region}")


def _topological(n: int, preds: list[set[int]], succs: list[set[int]]) -> list[int]:
    indeg = [len(p) for p in preds]
    ready = [v for v in range(n) if indeg[v] == 0]
    ready.reverse()
    out = []
    while ready:
        v = ready.pop()
        out.append(v)
        for w in sorted(succs[v], reverse=True):
            indeg[w] -= 1
            if indeg[w] == 0:
                ready.append(w)
    if len(out) != n:
        stuck = min(v for v in range(n) if indeg[v] > 0)
        raise ValueError(f"the edges contain a cycle through node {stuck}")
    return out


def check_order(problem: OrderProblem, order: Sequence[int]) -> None:
    """Like problem.check_topological, with a message naming what is wrong."""
    n = problem.num_nodes
    if len(order) != n or sorted(order) != list(range(n)):
        raise ValueError(f"order is not a permutation of the {n} nodes")
    pos = [0] * n
    for step, v in enumerate(order):
        pos[v] = step
    for u, v in problem.edges:
        if pos[u] >= pos[v]:
            raise ValueError(f"order violates edge {u}->{v} (steps {pos[u]} and {pos[v]})")


def reachable(adj, frontier: Iterable[int]) -> set[int]:
    """Every node reached from ``frontier`` along ``adj`` (node -> its
    neighbours: a list of lists or a mapping), the frontier's own included."""
    seen, stack = set(), list(frontier)
    while stack:
        v = stack.pop()
        if v not in seen:
            seen.add(v)
            stack.extend(adj[v])
    return seen
