"""Fast exact evaluation of orders, whole or after a local change.

``Evaluator.cost`` equals ``problem.order_cost`` (vectorised with numpy).
``Evaluator.state`` keeps the per-step figures of one order so that the cost
of replacing the nodes of a window ``order[lo:hi+1]`` by another arrangement of
the same nodes (a node move, a segment move, a re-solved window) is found by
looking only at that window: no item's interval outside it can change, because
only nodes inside the window change position.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from olla_jax.solve.problem import ARENA, OrderProblem


def _ranges(ptr: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flat indices of the CSR rows ``rows`` and each row's length."""
    lens = ptr[rows + 1] - ptr[rows]
    total = int(lens.sum())
    if total == 0:
        return np.zeros(0, np.int64), lens
    firsts = np.cumsum(lens) - lens
    idx = np.arange(total, dtype=np.int64) + np.repeat(ptr[rows] - firsts, lens)
    return idx, lens


def _reduce_rows(ufunc: np.ufunc, values: np.ndarray, lens: np.ndarray, empty: int) -> np.ndarray:
    """Per row, ``ufunc`` over its values (rows laid out back to back); ``empty`` if none."""
    out = np.full(len(lens), empty, np.int64)
    nonempty = lens > 0
    if nonempty.any():
        firsts = (np.cumsum(lens) - lens)[nonempty]
        out[nonempty] = ufunc.reduceat(values, firsts)
    return out


def csr(rows: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    ptr = np.zeros(len(rows) + 1, np.int64)
    ptr[1:] = np.cumsum([len(r) for r in rows])
    flat = np.fromiter((x for r in rows for x in r), np.int64, count=int(ptr[-1]))
    return ptr, flat


@dataclasses.dataclass
class OrderState:
    """Per-step figures of one order (mutable; owned by the search using it)."""
    order: np.ndarray
    pos: np.ndarray          # pos[node] = step
    start: np.ndarray        # per item, first live step
    end: np.ndarray          # per item, last live step
    live: np.ndarray         # per step, bytes of live arena items
    idle: np.ndarray         # per step, capacity of idle fixed regions
    profile: np.ndarray      # per step, the objective's term (problem.step_profile)
    prefix_max: np.ndarray
    suffix_max: np.ndarray

    @property
    def cost(self) -> int:
        return int(self.prefix_max[-1]) if len(self.profile) else 0

    def score(self) -> tuple[int, int]:
        """(peak, number of steps at the peak): the search's lexicographic goal."""
        c = self.cost
        return c, int(np.count_nonzero(self.profile == c))


class Evaluator:
    """Exact, vectorised ``order_cost`` and window re-evaluation for one problem."""

    def __init__(self, problem: OrderProblem):
        self.problem = problem
        self.n = problem.num_nodes
        items = problem.items
        self.size = np.array([it.size for it in items], np.int64)
        self.region = np.array([it.region for it in items], np.int64)
        self.fixed_start = np.array([it.live_in or not it.defs for it in items], bool)
        self.live_out = np.array([it.live_out for it in items], bool)
        self.def_ptr, self.def_nodes = csr([it.defs for it in items])
        self.touch_ptr, self.touch_nodes = csr([it.touches for it in items])
        self.extra = np.array(problem.node_extra, np.int64)
        self.caps = np.array(problem.region_sizes, np.int64)
        self.total_cap = int(self.caps.sum())
        self.arena = self.region == ARENA
        self.region_items = [np.flatnonzero(self.region == r) for r in range(len(self.caps))]
        incident: list[set[int]] = [set() for _ in range(self.n)]
        for i, it in enumerate(items):
            for v in (*it.defs, *it.touches):
                incident[v].add(i)
        self.node_items = [np.array(sorted(s), np.int64) for s in incident]

    # -- whole orders -------------------------------------------------------

    def _intervals(self, pos: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Live [start, end] of the items ``rows`` under positions ``pos``."""
        last = self.n - 1
        idx, lens = _ranges(self.def_ptr, rows)
        first_def = _reduce_rows(np.minimum, pos[self.def_nodes[idx]], lens, 0)
        start = np.where(self.fixed_start[rows], 0, first_def)
        idx, lens = _ranges(self.touch_ptr, rows)
        last_touch = _reduce_rows(np.maximum, pos[self.touch_nodes[idx]], lens, -1)
        end = np.where(self.live_out[rows], last, np.maximum(start, last_touch))
        return start, np.maximum(start, end)

    def _busy_caps(self, start: np.ndarray, end: np.ndarray, rows: np.ndarray,
                   lo: int, hi: int) -> np.ndarray:
        """Per step of [lo, hi], total capacity of regions with a live item among ``rows``."""
        width = hi - lo + 1
        busy = np.zeros(width + 1, np.int64)
        rows = rows[self.region[rows] != ARENA]
        s = np.maximum(start[rows], lo) - lo
        e = np.minimum(end[rows], hi) - lo
        keep = s <= e
        rows, s, e = rows[keep], s[keep], e[keep]
        if len(rows) == 0:
            return busy[:width]
        reg = self.region[rows]
        by = np.lexsort((s, reg))
        reg, s, e = reg[by], s[by], e[by]
        # union of intervals per region: running max of ends, kept inside each region
        stride = width + 2
        reach = np.maximum.accumulate(reg * stride + e) - reg * stride
        new = np.ones(len(reg), bool)
        new[1:] = (reg[1:] != reg[:-1]) | (s[1:] > reach[:-1])
        firsts = np.flatnonzero(new)
        lasts = np.append(firsts[1:] - 1, len(reg) - 1)
        cap = self.caps[reg[firsts]]
        np.add.at(busy, s[firsts], cap)
        np.add.at(busy, reach[lasts] + 1, -cap)
        return np.cumsum(busy)[:width]

    def state(self, order: Sequence[int]) -> OrderState:
        order = np.asarray(order, np.int64)
        n = self.n
        pos = np.empty(n, np.int64)
        pos[order] = np.arange(n, dtype=np.int64)
        rows = np.arange(len(self.size), dtype=np.int64)
        start, end = self._intervals(pos, rows)
        diff = np.zeros(n + 1, np.int64)
        a = self.arena
        np.add.at(diff, start[a], self.size[a])
        np.add.at(diff, end[a] + 1, -self.size[a])
        live = np.cumsum(diff)[:n]
        idle = self.total_cap - self._busy_caps(start, end, rows, 0, n - 1)
        profile = np.maximum(0, live + self.extra[order] - idle)
        return OrderState(order, pos, start, end, live, idle, profile,
                          np.maximum.accumulate(profile),
                          np.maximum.accumulate(profile[::-1])[::-1])

    def profile(self, order: Sequence[int]) -> np.ndarray:
        return self.state(order).profile

    def cost(self, order: Sequence[int]) -> int:
        return self.state(order).cost

    # -- local changes --------------------------------------------------------

    def window_profile(self, st: OrderState, lo: int, segment: Sequence[int]) -> np.ndarray:
        """Profile over steps lo..lo+len(segment)-1 if those steps ran ``segment``
        (a rearrangement of the nodes already there) instead."""
        segment = np.asarray(segment, np.int64)
        hi = lo + len(segment) - 1
        old_nodes = st.order[lo:hi + 1]
        rows = np.unique(np.concatenate([self.node_items[v] for v in old_nodes] or [np.zeros(0, np.int64)]))
        old_s, old_e = st.start[rows], st.end[rows]
        st.pos[segment] = np.arange(lo, hi + 1, dtype=np.int64)
        try:
            new_s, new_e = self._intervals(st.pos, rows)
        finally:
            st.pos[old_nodes] = np.arange(lo, hi + 1, dtype=np.int64)
        width = hi - lo + 1
        live = np.zeros(width + 1, np.int64)
        a = self.arena[rows]
        size = self.size[rows][a]
        for s, e, sign in ((old_s[a], old_e[a], -1), (new_s[a], new_e[a], 1)):
            cs, ce = np.maximum(s, lo) - lo, np.minimum(e, hi) - lo
            k = cs <= ce
            np.add.at(live, cs[k], sign * size[k])
            np.add.at(live, ce[k] + 1, -sign * size[k])
        live = st.live[lo:hi + 1] + np.cumsum(live)[:width]
        idle = st.idle[lo:hi + 1]
        moved_regions = np.unique(self.region[rows][~a])
        if len(moved_regions):
            members = np.concatenate([self.region_items[r] for r in moved_regions])
            s_all, e_all = st.start.copy(), st.end.copy()
            old_busy = self._busy_caps(s_all, e_all, members, lo, hi)
            s_all[rows], e_all[rows] = new_s, new_e
            idle = idle + old_busy - self._busy_caps(s_all, e_all, members, lo, hi)
        return np.maximum(0, live + self.extra[segment] - idle)

    def outside_peak(self, st: OrderState, lo: int, hi: int) -> int:
        """The highest step of ``st`` outside steps lo..hi."""
        return max(int(st.prefix_max[lo - 1]) if lo > 0 else 0,
                   int(st.suffix_max[hi + 1]) if hi + 1 < self.n else 0)

    def window_score(self, st: OrderState, lo: int, segment: Sequence[int]) -> tuple[int, int]:
        """``score()`` of the order with ``segment`` placed at steps lo.. (see window_profile)."""
        hi = lo + len(segment) - 1
        inner = self.window_profile(st, lo, segment)
        outside = self.outside_peak(st, lo, hi)
        peak = max(outside, int(inner.max(initial=0)))
        count = int(np.count_nonzero(inner == peak))
        if outside == peak:
            count += int(np.count_nonzero(st.profile[:lo] == peak))
            count += int(np.count_nonzero(st.profile[hi + 1:] == peak))
        return peak, count


def moved(order: np.ndarray, src: int, dst: int, length: int = 1) -> tuple[int, np.ndarray]:
    """The window (lo, new contents) that moves order[src:src+length] so that it
    starts at step ``dst`` of the new order, the other nodes keeping their order."""
    seg = order[src:src + length]
    if dst < src:
        return dst, np.concatenate([seg, order[dst:src]])
    return src, np.concatenate([order[src + length:dst + length], seg])
