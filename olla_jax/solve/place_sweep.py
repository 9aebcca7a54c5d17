"""Sweep placement: a best-fit allocator run along time, for problems too big for the block model.

``place_model.build_model`` lists every pair of blocks whose lives overlap,
and ``place_greedy`` walks those lists: both grow with the number of such
pairs, which is quadratic when many buffers are live together (a deep step's
saved activations: 3.5 M pairs on a 10k-instruction transformer step, 350 M
expected at 100k).  ``sweep_fit`` needs no pairs: it visits blocks by start
time (larger first on ties), frees the blocks whose life has ended, and puts
each new block on top of a region idle over its whole life (the one with
the least free bytes above its top that hold it; a region counts as busy
while any of its occupants is live), else into the tightest free gap of the
arena, else on its top.  O(n log n) in the blocks and regions.

A ``same_offset`` group is one block live over the hull of its members (a
few bytes-times more than needed, never less): the placement stays valid.
Sizes are rounded up to the alignment so that every gap starts aligned.
"""

from __future__ import annotations

import bisect
import heapq

import numpy as np

from olla_jax.solve.problem import ARENA, Placement, PlacementProblem

REGION_CANDIDATES = 32   # classes of free bytes tried per block, smallest that holds it first


class _Heap:
    """Free gaps below a top, best-fit: the smallest gap that holds the size,
    lowest offset on ties; sizes and offsets are multiples of the alignment."""

    def __init__(self, capacity: int | None = None):
        self.capacity = capacity
        self.top = 0
        self.peak = 0
        self.by_len: list[tuple[int, int]] = []   # (length, start), sorted
        self.start_of_end: dict[int, int] = {}    # gap end -> gap start
        self.len_at: dict[int, int] = {}          # gap start -> length

    def _add(self, start: int, length: int) -> None:
        bisect.insort(self.by_len, (length, start))
        self.start_of_end[start + length] = start
        self.len_at[start] = length

    def _drop(self, start: int) -> int:
        length = self.len_at.pop(start)
        del self.start_of_end[start + length]
        del self.by_len[bisect.bisect_left(self.by_len, (length, start))]
        return length

    def best_gap(self, size: int) -> tuple[int, int] | None:
        """(gap length, offset) of the tightest gap below the top, or of the top itself
        (length: what is left up to the capacity), None when it does not fit."""
        k = bisect.bisect_left(self.by_len, (size, -1))
        if k < len(self.by_len):
            return self.by_len[k]
        if self.capacity is None:
            return None
        if self.top + size <= self.capacity:
            return self.capacity - self.top, self.top
        return None

    def take(self, offset: int, size: int) -> None:
        if offset in self.len_at:
            length = self._drop(offset)
            if length > size:
                self._add(offset + size, length - size)
        else:   # on the top
            self.top = offset + size
            self.peak = max(self.peak, self.top)

    def alloc_top(self, size: int) -> int:
        offset = self.top
        self.take(offset, size)
        return offset

    def free(self, offset: int, size: int) -> None:
        start, end = offset, offset + size
        if start in self.start_of_end:           # a gap ends where this block starts
            left = self.start_of_end[start]
            self._drop(left)
            start = left
        if end in self.len_at:                    # a gap starts where it ends
            end += self._drop(end)
        if end >= self.top:
            self.top = start
        else:
            self._add(start, end - start)


def _busy_windows(problem: PlacementProblem) -> list[tuple[list[int], list[int]]]:
    """Per region, the union of its occupants' lives as sorted (starts, ends)."""
    out = []
    for region in problem.regions:
        spans = sorted((o.start, o.end) for o in region.occupants if o.size > 0)
        merged: list[list[int]] = []
        for s, e in spans:
            if merged and s <= merged[-1][1] + 1:
                merged[-1][1] = max(merged[-1][1], e)
            else:
                merged.append([s, e])
        out.append(([m[0] for m in merged], [m[1] for m in merged]))
    return out


def _idle(window: tuple[list[int], list[int]], start: int, end: int) -> bool:
    starts, ends = window
    k = bisect.bisect_right(starts, end)   # busy spans starting at or before ``end``
    return k == 0 or ends[k - 1] < start


class _Regions:
    """The regions by the free bytes above their top block ("tail"), each
    tail a heap keyed by when its region next becomes busy (latest first): a
    block goes on top of a region in the smallest tail class that holds it
    whose latest-busy region is idle over the block's life."""

    def __init__(self, problem: PlacementProblem):
        self.capacity = [r.capacity for r in problem.regions]
        self.windows = _busy_windows(problem)
        self.heaps = [_Heap(c) for c in self.capacity]
        self.pool: dict[int, list[tuple[int, int]]] = {}
        self.classes: list[int] = []    # sorted tails that have a pool
        for r in range(len(self.capacity)):
            self._push(r, 0)

    def _tail(self, r: int) -> int:
        return self.capacity[r] - self.heaps[r].top

    def _next_busy(self, r: int, t: int) -> int:
        """Start of the first busy span of region ``r`` that ends at or after ``t``."""
        starts, ends = self.windows[r]
        k = bisect.bisect_left(ends, t)
        return starts[k] if k < len(starts) else 1 << 62

    def _push(self, r: int, t: int) -> None:
        tail = self._tail(r)
        if tail <= 0:
            return
        if tail not in self.pool:
            self.pool[tail] = []
            bisect.insort(self.classes, tail)
        heapq.heappush(self.pool[tail], (-self._next_busy(r, t), r))

    def take(self, size: int, s: int, e: int) -> tuple[int, int] | None:
        """(region, offset) on top of a region idle over [s, e] with ``size`` free
        bytes there, or None."""
        tried = 0
        for c in self.classes[bisect.bisect_left(self.classes, size):]:
            heap = self.pool[c]
            if not heap:
                continue
            tried += 1
            if tried > REGION_CANDIDATES:
                break
            for _ in range(8):   # stale entries: moved to another tail, or keys out of date
                if not heap:
                    break
                key, r = heap[0]
                if self._tail(r) != c:
                    heapq.heappop(heap)
                    continue
                fresh = -self._next_busy(r, s)
                if fresh != key:
                    heapq.heapreplace(heap, (fresh, r))
                    continue
                if -key > e and _idle(self.windows[r], s, e):
                    heapq.heappop(heap)
                    offset = self.heaps[r].alloc_top(size)
                    self._push(r, s)
                    return r, offset
                break
        return None

    def release(self, r: int, offset: int, size: int, t: int) -> None:
        self.heaps[r].free(offset, size)
        self._push(r, t)


def sweep_fit(problem: PlacementProblem) -> Placement:
    """A valid placement of ``problem`` in O(n log n) (see the module's docstring)."""
    a = max(1, problem.alignment)
    n = len(problem.intervals)
    grouped = {i for g in problem.same_offset for i in g}
    members = [tuple(g) for g in problem.same_offset if g]
    members += [(i,) for i in range(n) if i not in grouped]
    ivs = problem.intervals
    starts = [min(ivs[i].start for i in m) for m in members]
    ends = [max(ivs[i].end for i in m) for m in members]
    sizes = [-(-max(ivs[i].size for i in m) // a) * a for m in members]
    regions = _Regions(problem)
    arena = _Heap()
    where = [(ARENA, 0)] * len(members)
    live: list[tuple[int, int]] = []   # (end, block)
    for b in sorted(range(len(members)), key=lambda b: (starts[b], -sizes[b], b)):
        size, s, e = sizes[b], starts[b], ends[b]
        while live and live[0][0] < s:
            _, done = heapq.heappop(live)
            r, off = where[done]
            if r == ARENA:
                arena.free(off, sizes[done])
            else:
                regions.release(r, off, sizes[done], s)
        if size == 0:
            continue
        found = regions.take(size, s, e)
        if found is not None:
            r, off = found
        else:
            found = arena.best_gap(size)
            r = ARENA
            if found is not None:
                off = found[1]
                arena.take(off, size)
            else:
                off = arena.alloc_top(size)
        where[b] = (r, off)
        heapq.heappush(live, (e, b))
    region, offset = [ARENA] * n, [0] * n
    arena_size = 0
    for b, m in enumerate(members):
        r, off = where[b]
        for i in m:
            region[i], offset[i] = r, off
            if r == ARENA and ivs[i].size > 0:
                arena_size = max(arena_size, off + ivs[i].size)
    return Placement(tuple(region), tuple(offset), arena_size)


def overlapping_pairs(problem: PlacementProblem) -> int:
    """How many pairs of intervals overlap in time (what the block model lists,
    twice: each pair from both ends), in O(n log n)."""
    if not problem.intervals:
        return 0
    s = np.fromiter((iv.start for iv in problem.intervals), dtype=np.int64)
    e = np.fromiter((iv.end for iv in problem.intervals), dtype=np.int64)
    per = np.searchsorted(np.sort(s), e, "right") - np.searchsorted(np.sort(e), s, "left") - 1
    return int(per.sum())
