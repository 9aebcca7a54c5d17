"""Greedy best-fit placement with several sort orders."""

from __future__ import annotations

import bisect
import time
from typing import Sequence

import numpy as np

from olla_jax.solve.place_model import BlockModel, build_model
from olla_jax.solve.problem import ARENA, Placement, PlacementProblem

# Tried in this order; the planner, short of time, may stop after the first.
# Longest-lived first gave the least arena of the four on the placement
# problems of resnet50, unet and densenet small (each order's chosen by the
# planner at a 10 s limit), where size first had been tried alone.
SORT_ORDERS = ("duration", "size", "start", "area")
_OPEN = np.iinfo(np.int64).max  # length of the open space above all obstacles
_FEW = 32   # obstacles up to which the gap search runs in plain Python (numpy beyond)


def _align_up(x: np.ndarray | int, a: int):
    return -(-x // a) * a


def tightest_gap(lo: np.ndarray, hi: np.ndarray, size: int, alignment: int,
                 limit: int | None) -> tuple[int, int] | None:
    """Lowest aligned offset in the tightest free gap between [lo, hi) obstacles
    that holds ``size`` bytes below ``limit``, as (gap length, offset).

    With ``limit=None`` the space above the obstacles is open; it is used only
    when no gap between obstacles fits (its length counts as infinite).
    """
    order = np.argsort(lo, kind="stable")
    lo, hi = lo[order], hi[order]
    top = np.maximum.accumulate(hi) if len(hi) else hi
    gap_lo = np.concatenate(([0], top))
    gap_hi = np.concatenate((lo, [limit if limit is not None else -1]))
    if limit is not None:
        gap_hi = np.minimum(gap_hi, limit)
    start = _align_up(gap_lo, alignment)
    length = gap_hi - gap_lo
    fits = start + size <= gap_hi
    if limit is None:
        fits[-1] = False
    if fits.any():
        cand = np.nonzero(fits)[0]
        best = cand[np.lexsort((start[cand], length[cand]))[0]]
        return int(length[best]), int(start[best])
    if limit is None:
        return _OPEN, int(start[-1])
    return None


def _sort_keys(model: BlockModel, order: str, rng: np.random.Generator) -> np.ndarray:
    blocks = model.blocks
    size = np.array([b.size for b in blocks], dtype=np.int64)
    start = np.array([b.start for b in blocks], dtype=np.int64)
    dur = np.array([b.duration for b in blocks], dtype=np.int64)
    tie = rng.permutation(len(blocks))
    keys = {
        "size": (tie, start, -dur, -size),
        "start": (tie, -dur, -size, start),
        "area": (tie, -size, -size * dur),
        "duration": (tie, -size, -dur),
    }
    if order not in keys:
        raise ValueError(f"unknown sort order {order!r}: use one of {SORT_ORDERS}")
    return np.lexsort(keys[order])


def _tightest(spans: list[tuple[int, int]], size: int, alignment: int,
              limit: int | None) -> tuple[int, int] | None:
    """``tightest_gap`` over a short list of (lo, hi) obstacles, in plain Python
    (most blocks see a handful of obstacles per region: numpy costs more)."""
    best = None
    top = 0
    for lo, hi in sorted(spans, key=lambda x: x[0]):
        gap_hi = lo if limit is None else min(lo, limit)
        start = -(-top // alignment) * alignment
        if start + size <= gap_hi and (best is None or (gap_hi - top, start) < best):
            best = (gap_hi - top, start)
        top = max(top, hi)
    start = -(-top // alignment) * alignment
    if limit is None:
        return best if best is not None else (_OPEN, start)
    if start + size <= limit and (best is None or (limit - top, start) < best):
        best = (limit - top, start)
    return best


# Blocks placed between two looks at the clock in ``greedy``.
_CLOCK_EVERY = 64


def greedy(model: BlockModel, sequence: Sequence[int],
           deadline: float | None = None) -> tuple[list[int], list[int]]:
    """Place blocks in ``sequence``: each into the tightest region gap that fits,
    else the tightest arena gap, else on top of what it overlaps in the arena.

    Ties go to the lower region index.  A region nothing touches during a
    block's life offers one gap, its whole capacity: those are found by size
    (bisection over capacities), so only the regions in use are searched.

    Past ``deadline`` (``time.monotonic()``) the blocks left are stacked in
    the arena above everything placed, one on another (valid at once, not
    tight): a best-fit on a big problem can cost more than a whole limit."""
    problem, a = model.problem, model.alignment
    n = len(model.blocks)
    region = [ARENA] * n
    offset = [0] * n
    placed = np.zeros(n, dtype=bool)
    sizes = [b.size for b in model.blocks]
    # The same places as arrays: a block's placed neighbours are read in bulk
    # (a long-lived block conflicts with thousands).
    region_a = np.full(n, ARENA, dtype=np.int64)
    offset_a = np.zeros(n, dtype=np.int64)
    size_a = np.array(sizes, dtype=np.int64)
    capacity = [reg.capacity for reg in problem.regions]
    by_capacity = sorted(range(len(capacity)), key=lambda r: (capacity[r], r))
    sorted_caps = [capacity[r] for r in by_capacity]
    # Regions an occupant fills during a block's life are neither searched nor idle.
    open_regions = model.open_regions or model.occupied_regions
    no_block = frozenset()
    sequence = list(sequence)
    for k, b in enumerate(sequence):
        if deadline is not None and k % _CLOCK_EVERY == 0 and k and time.monotonic() > deadline:
            _stack(model, sequence[:k], sequence[k:], region, offset)
            break
        size = sizes[b]
        placed[b] = True
        if size == 0:
            continue
        blocked = model.blocked_regions[b] if model.blocked_regions else no_block
        conf = model.conflicts[b]
        near = conf[placed[conf]]
        regs = region_a[near]
        in_arena = regs == ARENA
        members: dict[int, list[tuple[int, int]]] = {}
        if not in_arena.all():
            rj, rr = near[~in_arena], regs[~in_arena]
            by_region = np.argsort(rr, kind="stable")
            rj, rr = rj[by_region], rr[by_region]
            # One conversion to lists, then slices per region (np.split per
            # block cost half of a best-fit with hundreds of regions).
            cuts = [0, *(np.flatnonzero(np.diff(rr)) + 1).tolist(), len(rr)]
            lo = offset_a[rj]
            spans = list(zip(lo.tolist(), (lo + size_a[rj]).tolist()))
            rs = rr.tolist()
            for c0, c1 in zip(cuts[:-1], cuts[1:]):
                if rs[c0] not in blocked:
                    members[rs[c0]] = spans[c0:c1]
        for r in open_regions[b]:
            members.setdefault(r, [])
        best: tuple[int, int, int] | None = None   # (gap length, region, offset)
        for r in sorted(members):
            if capacity[r] < size:
                continue
            found = _tightest(members[r] + list(model.occupied[r][b]), size, a, capacity[r])
            if found is not None and (best is None or (found[0], r) < best[:2]):
                best = (found[0], r, found[1])
        # The smallest idle region that holds the block (gap: its whole capacity).
        k = bisect.bisect_left(sorted_caps, size)
        while k < len(by_capacity) and (by_capacity[k] in members or by_capacity[k] in blocked):
            k += 1
        if k < len(by_capacity):
            r = by_capacity[k]
            if best is None or (capacity[r], r) < best[:2]:
                best = (capacity[r], r, 0)
        if best is None:
            arena = near[in_arena]
            lo = offset_a[arena]
            if len(arena) > _FEW:
                found = tightest_gap(lo, lo + size_a[arena], size, a, None)
            else:
                found = _tightest(list(zip(lo.tolist(), (lo + size_a[arena]).tolist())), size, a,
                                  None)
            best = (found[0], ARENA, found[1])
        region[b], offset[b] = best[1], best[2]
        region_a[b], offset_a[b] = best[1], best[2]
    return region, offset


def _stack(model: BlockModel, done: Sequence[int], rest: Sequence[int], region: list[int],
           offset: list[int]) -> None:
    """``rest`` into the arena, each on top of the arena's top over ``done``
    and the blocks stacked before it (in place)."""
    a = model.alignment
    top = max((offset[b] + model.blocks[b].size for b in done
               if region[b] == ARENA and model.blocks[b].size > 0), default=0)
    for b in rest:
        region[b] = ARENA
        if model.blocks[b].size == 0:
            continue
        offset[b] = _align_up(top, a)
        top = offset[b] + model.blocks[b].size


def best_fit(problem: PlacementProblem, *, orders: Sequence[str] = SORT_ORDERS,
             seed: int = 0, deadline: float | None = None, cut: bool = False) -> Placement:
    """Best of the greedy best-fit placements over the given sort orders
    ("size", "start", "area", "duration"); ``seed`` breaks ties.  Past
    ``deadline`` (``time.monotonic()``) no further sort order is tried, and
    with ``cut=True`` the first one stops placing by best-fit (the blocks
    left are stacked: see ``greedy``)."""
    model = build_model(problem)
    return best_fit_model(model, orders=orders, seed=seed, deadline=deadline, cut=cut)


def best_fit_model(model: BlockModel, *, orders: Sequence[str] = SORT_ORDERS,
                   seed: int = 0, deadline: float | None = None, cut: bool = False) -> Placement:
    if not orders:
        raise ValueError("best_fit needs at least one sort order")
    best: Placement | None = None
    for order in orders:
        if best is not None and deadline is not None and time.monotonic() > deadline:
            break
        rng = np.random.default_rng(seed)
        placement = model.to_placement(*greedy(model, _sort_keys(model, order, rng),
                                               deadline if cut else None))
        if best is None or placement.arena_size < best.arena_size:
            best = placement
    return best
