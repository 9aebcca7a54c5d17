"""bounds._graph keeps the last ancestor/descendant sets it built: problems
that share edges (a graph's threshold problems) reuse them, others do not."""

from __future__ import annotations

import dataclasses

from olla_jax.solve import bounds
from olla_jax.solve.problem import ARENA, Item, OrderProblem


def _chain(n: int, reverse: bool = False) -> OrderProblem:
    edges = tuple((i + 1, i) if reverse else (i, i + 1) for i in range(n - 1))
    items = tuple(Item(size=10 * (i + 1), defs=(i,), touches=(i, i + 1), region=ARENA)
                  for i in range(n - 1))
    return OrderProblem(num_nodes=n, edges=edges, items=items, node_extra=(0,) * n,
                        region_sizes=())


def test_problems_sharing_edges_share_the_sets_and_other_edges_get_their_own():
    a = _chain(5)
    fewer = dataclasses.replace(a, items=a.items[:2])
    assert bounds._graph(fewer) is bounds._graph(a)
    b = _chain(5, reverse=True)   # same nodes, other edges
    gb = bounds._graph(b)
    assert gb is not bounds._graph(a)
    assert gb.anc[0] == 0b11110 and bounds._graph(a).anc[4] == 0b01111
    # the bound on a problem is the same whatever was built before it
    first = bounds.min_cut_bound(b, time_limit_s=5).value
    bounds._graph(a)
    assert bounds.min_cut_bound(b, time_limit_s=5).value == first
