"""Cut a window of steps out of an order as a problem of its own.

With every node outside ``order[lo:hi+1]`` kept at its step, rearranging the
window changes no item interval outside it, so the steps outside keep their
profile and the window is an OrderProblem whose step_profile equals the full
profile over those steps, for any order of its nodes. Items that start before
the window become live_in, those that end after it live_out; items that span
the whole window without touching it are merged into one constant item per
region. This is what both large-neighbourhood search and the decomposition at
narrow cuts solve.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from olla_jax.solve.evaluate import Evaluator, OrderState
from olla_jax.solve.problem import ARENA, Item, OrderProblem


@dataclasses.dataclass(frozen=True)
class Window:
    problem: OrderProblem
    nodes: tuple[int, ...]   # sub-problem node i is this full-problem node
    lo: int                  # first step of the window in the full order

    def splice(self, order: Sequence[int], sub_order: Sequence[int]) -> list[int]:
        """The full order with the window run in ``sub_order`` (sub-problem ids)."""
        out = list(order)
        out[self.lo:self.lo + len(self.nodes)] = [self.nodes[i] for i in sub_order]
        return out


def window_problem(ev: Evaluator, st: OrderState, lo: int, hi: int,
                   extra_edges: Sequence[tuple[int, int]] = ()) -> Window:
    """The sub-problem of steps lo..hi of the order in ``st``; ``extra_edges``
    (full-problem ids, both ends inside the window) are added as precedences."""
    problem = ev.problem
    nodes = [int(v) for v in st.order[lo:hi + 1]]
    local = {v: i for i, v in enumerate(nodes)}
    pos = st.pos
    incident = np.unique(np.concatenate([ev.node_items[v] for v in nodes] or [np.zeros(0, np.int64)]))
    crossing = np.flatnonzero((st.start < lo) & (st.end > hi))
    spanning = np.setdiff1d(crossing, incident, assume_unique=True)
    rest = np.union1d(incident, np.flatnonzero((st.start <= hi) & (st.end >= lo)))
    rest = np.setdiff1d(rest, spanning, assume_unique=True)

    items: list[Item] = []
    const_arena = int(ev.size[spanning[ev.arena[spanning]]].sum())
    if const_arena:
        items.append(Item(const_arena, (), (), ARENA, live_in=True, live_out=True))
    for r in np.unique(ev.region[spanning[~ev.arena[spanning]]]):
        items.append(Item(0, (), (), int(r), live_in=True, live_out=True))
    for i in rest:
        it = problem.items[i]
        fixed_start = it.live_in or not it.defs
        before = fixed_start or any(pos[d] < lo for d in it.defs)
        after = it.live_out or any(pos[t] > hi for t in it.touches)
        defs_in = tuple(local[d] for d in it.defs if d in local)
        touches_in = tuple(local[t] for t in it.touches if t in local)
        if not before and not defs_in:
            continue  # starts after the window
        if not after and not touches_in and int(st.start[i]) < lo:
            continue  # ended before the window
        items.append(Item(it.size, () if before else defs_in, touches_in, it.region,
                          live_in=before, live_out=after))
    edges = {(local[u], local[v]) for u, v in problem.edges if u in local and v in local}
    edges.update((local[u], local[v]) for u, v in extra_edges)
    sub = OrderProblem(len(nodes), tuple(sorted(edges)), tuple(items),
                       tuple(problem.node_extra[v] for v in nodes), problem.region_sizes)
    return Window(sub, tuple(nodes), lo)
