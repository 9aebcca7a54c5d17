"""The two problems the solvers work on, stated without jax or XLA.

Order problem: a DAG of nodes (the entry computation's instructions, each one
step) and items (placement units) that are resident from the first of their
``defs`` to the last of their ``touches``.  Items of the temp arena (region -1)
are what we minimise; items pinned in a fixed region (an output allocation)
count only by making that region busy.  A region with no live item is idle and
can host temp items, which is why the objective subtracts idle capacity.

Placement problem: intervals on a (flattened) time axis with sizes, to be given
offsets in the temp arena or inside idle regions, minimising the arena size.
"""

from __future__ import annotations

import collections
import dataclasses

import numpy as np
from typing import Sequence

ARENA = -1  # region id of the temp arena


@dataclasses.dataclass(frozen=True)
class Item:
    """A placement unit as the order solver sees it."""
    size: int
    defs: tuple[int, ...]          # nodes that create it; life starts at the first that runs
    touches: tuple[int, ...]       # nodes that need it resident (defs included)
    region: int = ARENA            # ARENA: movable temp; r >= 0: pinned in fixed region r
    live_in: bool = False          # resident from before the first node
    live_out: bool = False         # resident after the last node


@dataclasses.dataclass(frozen=True)
class OrderProblem:
    num_nodes: int
    edges: tuple[tuple[int, int], ...]   # (u, v): u runs before v
    items: tuple[Item, ...]
    node_extra: tuple[int, ...]           # temp bytes a node needs while it runs (nested computations)
    region_sizes: tuple[int, ...] = ()    # capacity of each fixed region

    def __post_init__(self):
        if len(self.node_extra) != self.num_nodes:
            raise ValueError("node_extra needs one entry per node")


@dataclasses.dataclass(frozen=True)
class ParkProblem:
    """An order problem (``solve.bound_park``) whose regions in ``whole`` hold whole arena items
    only (at ``capacity[r]`` bytes, their ``region_sizes`` entry ignored);
    the others count their ``region_sizes`` when idle, as ``bounds`` does.
    ``barred``: (arena item index, region, node): the item cannot sit in the
    region at a step before the node runs.  ``nodes``: the nodes whose step
    cost is one real step (the only ones evaluated)."""
    problem: OrderProblem
    whole: tuple[int, ...]
    capacity: dict[int, int]
    barred: tuple[tuple[int, int, int], ...]
    nodes: frozenset[int]


@dataclasses.dataclass(frozen=True)
class BlockPark:
    """``solve.bound_block``'s view of one block node (a loop whose body order
    is fixed): ``park`` as ``ParkProblem`` (its ``barred`` and ``nodes``
    unused; the node's ``node_extra`` ignored); ``inner``: per unit living
    inside the block only, its size and live spans as (first, last) steps
    counted from the block's first; ``gap``: bytes of units idle in a gap of
    the block, subtracted at every step; ``busy_from``: per region, the first
    block step from which a unit written inside the block holds it until the
    end (whatever the entry order)."""
    park: ParkProblem
    node: int
    length: int
    inner: tuple[tuple[int, tuple[tuple[int, int], ...]], ...]
    gap: int
    busy_from: dict[int, int]


def live_intervals(problem: OrderProblem, order: Sequence[int]) -> list[tuple[int, int]]:
    """Per item, the inclusive [first, last] step it is resident under ``order``."""
    pos = [0] * problem.num_nodes
    for step, node in enumerate(order):
        pos[node] = step
    last = len(order) - 1
    out = []
    for item in problem.items:
        start = 0 if item.live_in or not item.defs else min(pos[d] for d in item.defs)
        end = last if item.live_out else max((pos[t] for t in item.touches), default=start)
        out.append((start, max(start, end)))
    return out


def step_profile(problem: OrderProblem, order: Sequence[int]) -> list[int]:
    """Per step, arena bytes needed at least: movable live bytes plus the node's
    extra, less the capacity of fixed regions that are idle then (never below 0)."""
    n = len(order)
    if n == 0:
        return []
    movable = np.zeros(n + 1, dtype=np.int64)
    busy_capacity = np.zeros(n + 1, dtype=np.int64)
    by_region: dict[int, list[tuple[int, int]]] = {}
    for item, (s, e) in zip(problem.items, live_intervals(problem, order)):
        if item.region == ARENA:
            movable[s] += item.size
            movable[e + 1] -= item.size
        else:
            by_region.setdefault(item.region, []).append((s, e))
    for r, spans in by_region.items():
        cap = problem.region_sizes[r]
        spans.sort()
        lo, hi = spans[0]
        for s, e in spans[1:]:      # a region is busy over the union of its items' lives
            if s > hi + 1:
                busy_capacity[lo] += cap
                busy_capacity[hi + 1] -= cap
                lo, hi = s, e
            else:
                hi = max(hi, e)
        busy_capacity[lo] += cap
        busy_capacity[hi + 1] -= cap
    idle = sum(problem.region_sizes) - np.cumsum(busy_capacity)[:n]
    extra = np.asarray(problem.node_extra, dtype=np.int64)[np.asarray(order, dtype=np.int64)]
    profile = np.maximum(0, np.cumsum(movable)[:n] + extra - idle)
    return profile.tolist()


def order_cost(problem: OrderProblem, order: Sequence[int]) -> int:
    """The order-level objective: the peak of ``step_profile``."""
    return max(step_profile(problem, order), default=0)


def check_topological(problem: OrderProblem, order: Sequence[int]) -> None:
    if sorted(order) != list(range(problem.num_nodes)):
        raise ValueError("order is not a permutation of the nodes")
    pos = {node: step for step, node in enumerate(order)}
    for u, v in problem.edges:
        if pos[u] >= pos[v]:
            raise ValueError(f"edge {u}->{v} violated")


@dataclasses.dataclass(frozen=True)
class Interval:
    """A buffer to place: resident on the inclusive time range [start, end]."""
    size: int
    start: int
    end: int


@dataclasses.dataclass(frozen=True)
class Occupant:
    """A fixed block inside a region: bytes [offset, offset+size) over [start, end]."""
    offset: int
    size: int
    start: int
    end: int


@dataclasses.dataclass(frozen=True)
class Region:
    capacity: int
    occupants: tuple[Occupant, ...] = ()


@dataclasses.dataclass(frozen=True)
class PlacementProblem:
    intervals: tuple[Interval, ...]
    regions: tuple[Region, ...] = ()   # idle space that intervals may use besides the arena
    alignment: int = 64
    # groups of interval indices that must sit at one offset in one region
    # (members of one XLA buffer split for placement; usually empty)
    same_offset: tuple[tuple[int, ...], ...] = ()


@dataclasses.dataclass(frozen=True)
class Placement:
    region: tuple[int, ...]    # per interval: ARENA or a region index
    offset: tuple[int, ...]    # per interval: byte offset inside that region / the arena
    arena_size: int


def topological_order(num_nodes: int, edges: Sequence[tuple[int, int]]) -> list[int]:
    """Kahn's order, first ready first (FIFO); ValueError on a cycle or an edge
    naming a node outside the graph."""
    succ: list[list[int]] = [[] for _ in range(num_nodes)]
    indeg = [0] * num_nodes
    for u, v in edges:
        if not (0 <= u < num_nodes and 0 <= v < num_nodes):
            raise ValueError(f"edge {u}->{v} names a node outside 0..{num_nodes - 1}")
        succ[u].append(v)
        indeg[v] += 1
    ready = collections.deque(v for v in range(num_nodes) if indeg[v] == 0)
    order = []
    while ready:
        u = ready.popleft()
        order.append(u)
        for v in succ[u]:
            indeg[v] -= 1
            if indeg[v] == 0:
                ready.append(v)
    if len(order) != num_nodes:
        raise ValueError("the edges contain a cycle")
    return order
