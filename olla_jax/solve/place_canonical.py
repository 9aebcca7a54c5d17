"""Exact arena placement by search over canonical solutions.

The idea is MiniMalloc's (Moffitt, ASPLOS 2023); this code is our own.
Push every block of a valid placement down as far as it goes, and sort the
blocks by offset: each then sits at the lowest aligned offset above the blocks
placed before it that share a moment of its life.  So placing blocks one at a
time, each at that lowest offset, in non-decreasing offset order, reaches some
placement at least as good as any other.  The search branches on which block
comes next and prunes with:

- section inference: at each time section, every block still to place sits
  above both the highest block placed there and the offset of the last block
  placed, so that level plus their bytes must fit under the target;
- dominance: a block not yet placed that fits entirely below the last offset
  placed, above what it overlaps, could drop there; among the placements with
  the least sum of offsets (some of them optimal) none has such a block, so
  that branch is dropped;
- symmetry: blocks at one offset (they never share a moment) come in index order;
- decomposition: groups of blocks that never share a moment with each other
  (connected components of the conflict graph, and again during the search,
  groups of the blocks left) are placed separately.

The search is heavy-tailed (one branching rule finds a placement at once
where another gets lost), so it restarts: every combination of section
rule, block ranking and fit is a strategy with its own Luby sequence of
node limits, the restarts go round-robin over them (``schedule``), and
the time-reversed problem takes every other restart.  It shares its time with a second search over the
same space (``_Ordered``, MiniMalloc's own scheme: branch on which block
comes next, by offset then a static rank), one dive per rank heuristic;
on MiniMalloc's benchmarks each of the two solves instances the other
does not within seconds.

The search covers the arena only.  Blocks that the starting placement puts
in a region (an idle output allocation) stay there as they are; within that
choice the arena result is optimal when the search ends before its deadline.
Alignment and ``same_offset`` groups (blocks whose life has several
segments) are served directly.
"""

from __future__ import annotations

import dataclasses
import sys
import time

import numpy as np

from olla_jax.solve.place_model import BlockModel
from olla_jax.solve.problem import ARENA, Placement


@dataclasses.dataclass
class CanonicalResult:
    placement: Placement
    optimal: bool        # no target: the search finished, nothing lower exists (given the region choices)
    infeasible: bool     # with a target: proven that nothing fits under it (given the region choices)
    nodes: int           # blocks placed during the search, over all components


def _components(conf: list[np.ndarray], m: int) -> list[np.ndarray]:
    """Connected components of the conflict graph (local block ids)."""
    comp = np.full(m, -1, dtype=np.int64)
    out = []
    for root in range(m):
        if comp[root] >= 0:
            continue
        comp[root] = len(out)
        stack, members = [root], [root]
        while stack:
            b = stack.pop()
            for c in conf[b].tolist():
                if comp[c] < 0:
                    comp[c] = len(out)
                    stack.append(c)
                    members.append(c)
        out.append(np.array(sorted(members), dtype=np.int64))
    return out


class _Timeout(Exception):
    pass


class _NodeLimit(Exception):
    pass


SECTION_RULES = ("slack", "count", "rem", "left", "right", "remc")


class _Search:
    """Depth-first search over canonical placements of one component.

    A node's level is the lowest offset any of its blocks may take next.  It
    picks the time section at that level with the fewest blocks able to
    cover it there and branches on which of them does, or on none (a gap:
    nothing in that section may then sit below level + 1).  Where the blocks
    left to place split into groups that share no section, each group is
    searched alone: one that fails fails the node, whatever the others do."""

    def __init__(self, sizes: np.ndarray, segments: list, conf: list[np.ndarray], alignment: int):
        m = len(sizes)
        self.m, self.a = m, alignment
        self.size = sizes.astype(np.int64)
        cuts = sorted({t for segs in segments for s, e in segs for t in (s, e + 1)})
        where = {t: k for k, t in enumerate(cuts)}
        self.secs = [np.concatenate([np.arange(where[s], where[e + 1]) for s, e in segs])
                     for segs in segments]
        self.n_sec = max(1, len(cuts) - 1)
        self.lo = np.array([x[0] for x in self.secs], dtype=np.int64)        # hull, in sections
        self.hi = np.array([x[-1] for x in self.secs], dtype=np.int64)
        self.flat = np.concatenate(self.secs) if m else np.zeros(0, dtype=np.int64)
        lens = np.array([len(x) for x in self.secs], dtype=np.int64)
        self.starts = np.concatenate(([0], np.cumsum(lens)[:-1])) if m else lens
        self.owner = np.repeat(np.arange(m), lens)      # block of each entry of flat
        self.inc = np.zeros((m, self.n_sec), dtype=bool)
        for b in range(m):
            self.inc[b, self.secs[b]] = True
        self.conf = conf
        dur = np.array([sum(e - s + 1 for s, e in segs) for segs in segments], dtype=np.int64)
        # Among the blocks that may cover a section, try the larger and longer-lived first.
        self.dur = dur
        kinds: dict = {}                # blocks of one size and life are interchangeable
        self.twin = [kinds.setdefault((int(sizes[b]), self.secs[b].tobytes()), b) for b in range(m)]
        self.nodes = 0

    def ranking(self, rule: str, rng: np.random.Generator | None = None) -> np.ndarray:
        """Per block, its rank among blocks that may cover one section (lower first)."""
        m, tie = self.m, (np.arange(self.m) if rng is None else rng.permutation(self.m))
        keys = {"size": (tie, -self.dur, -self.size), "life": (tie, -self.size, -self.dur),
                "area": (tie, -self.size * self.dur)}[rule]
        pos = np.empty(m, dtype=np.int64)
        pos[np.lexsort(keys)] = np.arange(m)
        return pos

    def live_bound(self) -> int:
        rem = np.zeros(self.n_sec, dtype=np.int64)
        for b in range(self.m):
            rem[self.secs[b]] += self.size[b]
        return int(rem.max()) if self.m else 0

    def run(self, cap: int, deadline: float, *, node_limit: int | None = None,
            section_rule: str = "count", pos: np.ndarray | None = None,
            fit: bool | str = False, rng: np.random.Generator | None = None) -> np.ndarray | None:
        """Offsets with every top <= ``cap``, or None when there are none.
        Raises _Timeout past ``deadline``, _NodeLimit after ``node_limit``
        placements.  ``section_rule`` picks the section to branch on (one of
        SECTION_RULES), ``pos`` (from ``ranking``) the order of its blocks."""
        pos = self.ranking("size") if pos is None else pos
        stop_at = None if node_limit is None else self.nodes + node_limit
        m, a, size = self.m, self.a, self.size
        if m == 0:
            return np.zeros(0, dtype=np.int64)
        floor = np.zeros(self.n_sec, dtype=np.int64)    # highest top placed in each section
        gap = np.zeros(self.n_sec, dtype=np.int64)      # nothing more below this, per section
        rem = np.zeros(self.n_sec, dtype=np.int64)      # bytes still to place, per section
        cross = np.zeros(self.n_sec, dtype=np.int64)    # blocks to place live at s and s + 1
        for b in range(m):
            rem[self.secs[b]] += size[b]
            cross[self.lo[b]:self.hi[b]] += 1
        if int(rem.max()) > cap:
            return None
        cand = np.zeros(m, dtype=np.int64)              # highest top placed in each block's life
        placed = np.zeros(m, dtype=bool)
        offset = np.zeros(m, dtype=np.int64)
        tick = [0]

        def aligned(x):
            return x if a == 1 else -(-x // a) * a

        def place(b: int, x: int):
            top = x + int(size[b])
            s, c = self.secs[b], self.conf[b]
            undo = (floor[s].copy(), cand[c].copy())
            floor[s] = top
            rem[s] -= size[b]
            cross[self.lo[b]:self.hi[b]] -= 1
            cand[c] = np.maximum(cand[c], top)
            placed[b] = True
            offset[b] = x
            self.nodes += 1
            return undo

        def unplace(b: int, undo) -> None:
            s = self.secs[b]
            floor[s] = undo[0]
            rem[s] += size[b]
            cross[self.lo[b]:self.hi[b]] += 1
            cand[self.conf[b]] = undo[1]
            placed[b] = False

        def feasible(p: int, q: int, level: int, act: np.ndarray) -> bool:
            """Section inference: in each section, the blocks left sit above
            the level, the highest block placed there, any gap, and the
            lowest offset any of them may take (their own candidate)."""
            lo = np.maximum(np.maximum(floor[p:q + 1], gap[p:q + 1]), level)
            if int((lo + rem[p:q + 1]).max()) > cap:
                return False
            left = act & ~placed
            xs = aligned(cand)
            if gap[p:q + 1].any():
                xs = np.maximum(xs, np.maximum.reduceat(gap[self.flat], self.starts))
            pick = left[self.owner]
            low = np.full(self.n_sec, cap, dtype=np.int64)
            np.minimum.at(low, self.flat[pick], xs[self.owner[pick]])
            return int((np.maximum(lo, low[p:q + 1]) + rem[p:q + 1]).max()) <= cap

        def solve(p: int, q: int, level: int) -> list[int] | None:
            """Place every unplaced block within sections [p, q]; the blocks
            placed (state kept) or None (state restored)."""
            tick[0] += 1
            if tick[0] >= 64:
                tick[0] = 0
                if time.monotonic() > deadline:
                    raise _Timeout
            if stop_at is not None and self.nodes > stop_at:
                raise _NodeLimit
            busy = np.nonzero(rem[p:q + 1] > 0)[0]
            if not len(busy):
                return []
            p, q = p + int(busy[0]), p + int(busy[-1])
            cuts = np.nonzero(cross[p:q] == 0)[0]
            if len(cuts):                                    # independent groups
                done: list[int] = []
                for lo, hi in zip([p, *(p + cuts + 1).tolist()], [*(p + cuts).tolist(), q]):
                    if not rem[lo:hi + 1].any():
                        continue
                    got = solve(lo, hi, level)
                    if got is None:
                        for b in reversed(done):
                            unplace(b, undos.pop(b))
                        return None
                    done += got
                return done
            act = ~placed & (self.lo >= p) & (self.hi <= q)
            xs = aligned(cand)
            ok = act & (xs + size <= cap) & (xs >= level)
            if gap[p:q + 1].any():
                ok &= xs >= np.maximum.reduceat(gap[self.flat], self.starts)
            cands = np.nonzero(ok)[0]
            if not len(cands):
                return None
            x = int(xs[cands].min())
            at = cands[xs[cands] == x]
            covered = self.inc[at, p:q + 1].sum(axis=0)
            if section_rule == "left":
                sec = p + int(np.argmax(covered > 0))
            elif section_rule == "right":
                sec = q - int(np.argmax(covered[::-1] > 0))
            elif section_rule == "rem":
                sec = p + int(np.argmax(np.where(covered > 0, rem[p:q + 1], -1)))
            elif section_rule == "slack":
                # The tightest section (least room above its stack), then the fewest blocks.
                room = cap - np.maximum(floor[p:q + 1], x) - rem[p:q + 1]
                key = np.where(covered > 0, room * (m + 1) + covered, np.iinfo(np.int64).max)
                if rng is not None:      # random ties
                    key = np.where(key == key.min(), rng.random(len(key)), 2.0)
                sec = p + int(np.argmin(key))
            elif section_rule == "remc":
                sec = p + int(np.argmax(np.where(covered > 0, rem[p:q + 1] * 1000 - covered, -1)))
            else:
                covered[covered == 0] = m + 1
                if rng is not None:      # random ties
                    covered = np.where(covered == covered.min(), rng.random(len(covered)), 2.0)
                sec = p + int(np.argmin(covered))
            opts = at[self.inc[at, sec]]
            if fit == "valley":
                # Blocks that fill the valley around the section (floor at most
                # the level, from wall to wall) first, then those meeting one wall.
                low = (floor[p:q + 1] <= x) & (gap[p:q + 1] <= x)
                k = sec - p
                walls = np.nonzero(~low[:k])[0]
                vl = p + (int(walls[-1]) + 1 if len(walls) else 0)
                walls = np.nonzero(~low[k:])[0]
                vr = sec + (int(walls[0]) - 1 if len(walls) else q - sec)
                meets = (self.lo[opts] == vl).astype(np.int64) + (self.hi[opts] == vr)
                opts = opts[np.lexsort((pos[opts], -meets))]
            elif fit:
                # Blocks whose top meets a neighbour's floor (a flat skyline) first.
                tops = x + size[opts]
                left = np.where(self.lo[opts] > 0, floor[np.maximum(self.lo[opts] - 1, 0)], -1)
                right = np.where(self.hi[opts] < self.n_sec - 1,
                                 floor[np.minimum(self.hi[opts] + 1, self.n_sec - 1)], -1)
                meets = (left == tops).astype(np.int64) + (right == tops)
                opts = opts[np.lexsort((pos[opts], -meets))]
            else:
                opts = opts[np.argsort(pos[opts])]
            tried = set()
            for b in opts.tolist():
                twin = self.twin[b]
                if twin in tried:           # the same size and life as a block tried here
                    continue
                tried.add(twin)
                undos[b] = place(b, x)
                # Section inference, then dominance (see the module doc): a
                # block that fits below the level, above all it overlaps,
                # would drop there.
                if feasible(p, q, x, act) and \
                        not (act & ~placed & (aligned(cand) + size <= x)).any():
                    got = solve(p, q, x)
                    if got is not None:
                        return [b, *got]
                unplace(b, undos.pop(b))
            # A gap at (sec, x): a block there now at x must wait for one placed
            # from now on (at x or above) to land in its life; the others sit
            # at their candidates or higher.
            old = int(gap[sec])
            left = act & ~placed
            xs = aligned(cand)[left & self.inc[:, sec]]
            g = int(aligned(x + int(size[left].min())))
            if (xs > x).any():
                g = min(g, int(xs[xs > x].min()))
            gap[sec] = max(old, g)
            got = None
            if feasible(p, q, level, act):
                got = solve(p, q, level)
            gap[sec] = old
            return got

        undos: dict[int, tuple] = {}
        limit = sys.getrecursionlimit()
        sys.setrecursionlimit(max(limit, 4 * m + 1000))
        try:
            got = solve(0, self.n_sec - 1, 0)
        finally:
            sys.setrecursionlimit(limit)
        return None if got is None else offset.copy()


# Per group of blocks, at most this many failed and solved states are kept.
_MEMO_PER_KEY = 64


class _Ordered:
    """A second search over canonical placements of one component, in the
    style of MiniMalloc's: each node places one of the blocks left at its
    lowest offset, trying them by that offset, then by a static rank (the
    ``heuristic``: letters W life span, A area, T the fullest section the
    block lives in, Z size, most first).  Offsets never decrease along a
    branch (blocks at one offset come in rank order); a block whose offset
    is at or above the lowest top any block left could reach is skipped
    (it would leave a gap that block could fill); a node fails when, in some
    time section, the blocks left cannot stack above both the last offset
    and the lowest offset any of them may take; and where no block left
    spans a section boundary, the two sides are searched apart.

    ``dive`` is a generator: it yields now and then, so that the caller can
    share the time with other searches, and returns the offsets or None."""

    YIELD_EVERY = 64

    def __init__(self, sizes: np.ndarray, segments: list, conf: list[np.ndarray], alignment: int):
        m = len(sizes)
        self.m, self.a = m, alignment
        self.size = np.asarray(sizes, dtype=np.int64)
        cuts = sorted({t for segs in segments for s, e in segs for t in (s, e + 1)})
        where = {t: k for k, t in enumerate(cuts)}
        self.n_sec = max(1, len(cuts) - 1)
        self.secs = [np.concatenate([np.arange(where[s], where[e + 1]) for s, e in segs])
                     for segs in segments]
        self.inc = np.zeros((m, self.n_sec), dtype=bool)
        for b in range(m):
            self.inc[b, self.secs[b]] = True
        self.hlo = np.array([int(x[0]) for x in self.secs], dtype=np.int64)
        self.hhi = np.array([int(x[-1]) + 1 for x in self.secs], dtype=np.int64)
        self.width = np.array([segs[-1][1] + 1 - segs[0][0] for segs in segments], dtype=np.int64)
        self.conf = [np.asarray(c, dtype=np.int64) for c in conf]
        kinds: dict = {}                # blocks of one size and life are interchangeable
        self.twin = [kinds.setdefault((int(sizes[b]), self.secs[b].tobytes()), b) for b in range(m)]
        self.nodes = 0
        self.hatless = True
        self._memo_cap, self._memo = None, {}

    def _rank(self, blocks: np.ndarray, total: np.ndarray, heuristic: str) -> np.ndarray:
        fullest = np.array([int(total[self.secs[b]].max()) for b in blocks.tolist()], dtype=np.int64)
        w, z = self.width[blocks], self.size[blocks]
        keys = {"W": -w, "A": -w * z, "T": -fullest, "Z": -z}
        return blocks[np.lexsort([blocks] + [keys[c] for c in reversed(heuristic)])]

    def dive(self, cap: int, heuristic: str):
        """Offsets with every top <= ``cap`` (returned), or None when there
        are none; yields every YIELD_EVERY nodes."""
        m, a, size, inc, secs, conf = self.m, self.a, self.size, self.inc, self.secs, self.conf
        hlo, hhi, twin = self.hlo, self.hhi, self.twin
        big = np.int64(cap + 1)
        left = np.ones(m, dtype=bool)
        offset = np.zeros(m, dtype=np.int64)
        minoff = np.zeros(m, dtype=np.int64)       # lowest offset each block may take
        total = np.zeros(self.n_sec, dtype=np.int64)
        for b in range(m):
            total[secs[b]] += size[b]
        if m == 0:
            return offset
        if int(total.max()) > cap or int(size.max()) > cap:
            return None
        low = np.where(inc, np.int64(0), big)       # per block, per section: its minoff where live
        rank = np.zeros(m, dtype=np.int64)
        cross = np.zeros(self.n_sec, dtype=np.int64)    # hulls left across boundary s | s + 1
        for b in range(m):
            cross[hlo[b]:hhi[b] - 1] += 1

        if self._memo_cap != cap:
            self._memo_cap, self._memo = cap, {}
        memo = self._memo

        def part(blocks, lo, hi):
            # A group's subproblem is fixed by its blocks and their lowest
            # offsets: one that failed fails again from offsets as high or
            # higher; one solved is solved the same way from offsets as low.
            ids = np.sort(blocks)
            seen = memo.setdefault((lo, hi, ids.tobytes()), ([], []))
            mo = minoff[ids]
            if any((mo >= bad).all() for bad in seen[0]):
                return False
            for good, where in seen[1]:
                if (mo <= good).all():
                    offset[ids] = where
                    return True
            order = self._rank(blocks, total, heuristic)
            rank[order] = np.arange(len(order))
            found = yield from node(order, lo, hi, 0, -1)
            if found:
                if len(seen[1]) < _MEMO_PER_KEY:
                    seen[1].append((mo, offset[ids].copy()))
            elif len(seen[0]) < _MEMO_PER_KEY:
                seen[0].append(mo)
            return found

        def node(blocks, lo, hi, level, last_rank):
            self.nodes += 1
            if self.nodes % self.YIELD_EVERY == 0:
                yield
            blocks = blocks[left[blocks]]
            if not len(blocks):
                return True
            tot = total[lo:hi]
            floor = np.minimum(low[blocks, lo:hi].min(axis=0), cap)
            if int((np.maximum(floor, level) + tot).max()) > cap:
                return False
            mo = minoff[blocks]
            lowest_top = int((mo + size[blocks]).min())
            ok = (mo < lowest_top) & ((mo > level) | ((mo == level) & (rank[blocks] > last_rank)))
            cands = blocks[ok]
            if not len(cands):
                return False
            # Every candidate at once, before it is placed: the stacks it would leave.
            o = minoff[cands][:, None]
            ic = inc[cands, lo:hi]
            sz = size[cands][:, None]
            v = np.maximum(np.maximum(floor[None, :], o), np.where(ic, o + sz, 0)) + tot[None, :] - ic * sz
            cands = cands[(v <= cap).all(axis=1)]
            cands = cands[np.lexsort((rank[cands], minoff[cands]))]
            tried = set()
            for b in cands.tolist():
                if twin[b] in tried:        # the same size and life as a block tried here
                    continue
                tried.add(twin[b])
                x, sb = int(minoff[b]), int(size[b])
                top = x + sb
                c = conf[b]
                hatless = not left[c].any()
                c = c[left[c] & (minoff[c] < top)]
                t = top if a == 1 else -(-top // a) * a
                if len(c) and int(size[c].max()) + t > cap:
                    continue
                old, rows, row_b = minoff[c], low[c], low[b].copy()
                left[b] = False
                offset[b] = x
                minoff[c] = t
                total[secs[b]] -= sb
                low[b] = big
                low[c] = np.where(inc[c], t, big)
                found = yield from split(blocks, lo, hi, x, int(rank[b]), b)
                low[c] = rows
                low[b] = row_b
                total[secs[b]] += sb
                minoff[c] = old
                left[b] = True
                if found:
                    return True
                if hatless and self.hatless:
                    # Nothing left overlaps b: it sits at x in every completion
                    # from here, so every other choice fails the same way.
                    break
            return False

        def split(blocks, lo, hi, level, last_rank, b):
            """Go on below ``b``'s placement; apart where no hull left crosses."""
            l, h = int(hlo[b]), int(hhi[b])
            cross[l:h - 1] -= 1
            try:
                a0, a1 = max(lo, l), min(hi, h)
                zero = np.nonzero(cross[a0:a1 - 1] == 0)[0]
                if not len(zero):
                    return (yield from node(blocks, lo, hi, level, last_rank))
                saved = rank.copy()
                cutpoints = [lo, *(a0 + zero + 1).tolist(), hi]
                rest = blocks[left[blocks]]
                try:
                    for s0, s1 in zip(cutpoints[:-1], cutpoints[1:]):
                        group = rest[(hhi[rest] > s0) & (hlo[rest] < s1)]
                        if len(group) and not (yield from part(group, s0, s1)):
                            return False
                    return True
                finally:
                    rank[:] = saved
            finally:
                cross[l:h - 1] += 1

        # The offsets of a success stay in ``offset``: every block is written
        # on the way down and the last writes are those of the branch found.
        found = yield from part(np.arange(m), 0, self.n_sec)
        return offset.copy() if found else None


def solve_canonical(model: BlockModel, hint: Placement, time_limit_s: float, *,
                    stop: int = 0, target: int | None = None) -> CanonicalResult:
    """The least arena over placements that keep ``hint``'s region choices,
    within ``time_limit_s``; never worse than ``hint``.

    Searches for an arena below the best one found (probing halfway to the
    least not ruled out first, ``_descend``) until none exists (then
    ``optimal``), the time is up, or the arena is at most ``stop`` (e.g. a
    lower bound).  With ``target``, the first search asks for an arena of at
    most ``target`` at once (stronger pruning) and a fit ends the search."""
    deadline = time.monotonic() + time_limit_s
    region, offset = model.from_placement(hint)
    offset = list(offset)
    active = [b for b, blk in enumerate(model.blocks) if region[b] == ARENA and blk.size > 0]
    local = {b: i for i, b in enumerate(active)}
    conf = [np.array([local[j] for j in model.conflicts[b].tolist() if j in local], dtype=np.int64)
            for b in active]
    sizes = np.array([model.blocks[b].size for b in active], dtype=np.int64)
    for b, blk in enumerate(model.blocks):
        if region[b] == ARENA and blk.size == 0:
            offset[b] = 0
    jobs = []
    for comp in _components(conf, len(active)):
        pos = {int(g): i for i, g in enumerate(comp.tolist())}
        segments = [model.blocks[active[g]].segments for g in comp.tolist()]
        cconf = [np.array([pos[j] for j in conf[g].tolist()], dtype=np.int64) for g in comp.tolist()]
        # The same blocks with time reversed: an equivalent problem that the
        # search explores differently (a second member of the portfolio).
        end = max(e for segs in segments for _, e in segs)
        mirrored = [tuple(sorted((end - e, end - s) for s, e in segs)) for segs in segments]
        sections = (_Search(sizes[comp], segments, cconf, model.alignment),
                    _Search(sizes[comp], mirrored, cconf, model.alignment))
        ordered = (_Ordered(sizes[comp], segments, cconf, model.alignment)
                   if len(comp) * sections[0].n_sec <= _ORDERED_MAX_CELLS else None)
        search = _Race(sections, ordered)
        height = max(offset[active[g]] + int(sizes[g]) for g in comp.tolist())
        goal = max(stop, search.sections[0].live_bound())
        if height > goal and (target is None or height > target):
            jobs.append((height, goal, comp, search))
    # The highest components first: the others cannot lower the arena below them.
    jobs.sort(key=lambda job: -job[0])
    optimal, infeasible, nodes = True, False, 0
    for k, (height, goal, comp, search) in enumerate(jobs):
        share_end = time.monotonic() + (deadline - time.monotonic()) / (len(jobs) - k)

        def keep(found: np.ndarray) -> int:
            for i, g in enumerate(comp.tolist()):
                offset[active[g]] = int(found[i])
            return int((found + sizes[comp]).max())
        if target is not None:
            try:
                found = search.run(min(height - 1, max(target, goal)), share_end)
                if found is None:
                    infeasible = True
                else:
                    keep(found)
            except _Timeout:
                optimal = False
        else:
            height, done = _descend(search, height, goal, share_end, keep, model.alignment)
            optimal = optimal and done
        nodes += search.nodes
    optimal = optimal and target is None
    return CanonicalResult(model.to_placement(list(region), offset), optimal, infeasible, nodes)


# The descent without a target (``_descend``): each probe asks for an arena
# halfway between the best found and the least not yet ruled out, for at most
# this share of the time left (and at least _PROBE_MIN_S).  A low cap prunes
# from the start: on densenet small's arena (CPU, 384 blocks, live bytes
# 52.80 MiB) a cap 1% above the live bytes found 53.25 in 0.34 s, where
# lowering the cap one byte below each arena found reached 53.66 in 1 s and
# 53.19 in 8 s.
_PROBE_SHARE = 0.5
_PROBE_MIN_S = 0.05
# Probes stop once the range left is below this share of the arena: the
# descent one byte at a time takes the rest of the time.
_PROBE_MIN_GAP = 0.001


def _descend(search: "_Race", height: int, goal: int, deadline: float, keep,
             alignment: int) -> tuple[int, bool]:
    """Lowers a component's arena from ``height`` towards ``goal`` (no arena
    below it) by ``deadline``: probes halfway between the best found and the
    least not ruled out (a probe that times out rules nothing out, but the
    next probes look above it), then one byte below the best found at a
    time.  ``keep(offsets)`` takes each placement found and returns its
    height.  Returns the height and whether it is proven least."""
    soft = goal            # probes look above this (proven, or where one timed out)
    try:
        while height > goal:
            gap = height - soft
            if gap > max(alignment, _PROBE_MIN_GAP * height):
                cap = soft + gap // 2
                left = deadline - time.monotonic()
                probe_end = min(deadline, time.monotonic()
                                + max(_PROBE_MIN_S, _PROBE_SHARE * left))
                try:
                    found = search.run(cap, probe_end)
                except _Timeout:
                    if time.monotonic() >= deadline:
                        raise
                    soft = cap + 1
                    continue
                if found is None:
                    goal = soft = cap + 1      # proven: nothing fits under cap
                else:
                    height = keep(found)
                continue
            found = search.run(height - 1, deadline)
            if found is None:
                return height, True
            height = keep(found)
    except _Timeout:
        return height, False
    return height, True


_LIMIT = object()
_RANKINGS = ("size", "life", "area")
_FITS = (False, True, "valley")


def _luby(i: int) -> int:
    """The Luby sequence 1 1 2 1 1 2 4 1 1 2 ... (i >= 1)."""
    k = 1
    while (1 << k) - 1 < i:
        k += 1
    while True:
        if i == (1 << k) - 1:
            return 1 << (k - 1)
        i -= (1 << (k - 1)) - 1
        k = 1
        while (1 << k) - 1 < i:
            k += 1


@dataclasses.dataclass(frozen=True)
class Attempt:
    """The branching rules and node limit of one restart (see ``schedule``)."""
    rule: str               # SECTION_RULES
    ranking: str            # _RANKINGS
    fit: bool | str         # _FITS
    seed: int | None        # random ties from this seed; None: ties by block index
    luby: int               # the node limit, in units of max(2 * blocks, 256)


_COMBOS = len(SECTION_RULES) * len(_RANKINGS) * len(_FITS)


def schedule(attempt: int) -> Attempt:
    """The ``attempt``-th restart: every (rule, ranking, fit) combination is
    a strategy of the portfolio with its own Luby sequence, and the attempts
    go round-robin over the combinations.  Round 0 runs each once at the
    smallest limit with ties by index, the later rounds with random ties
    and the limit luby(round + 1).

    Within a round the rule changes fastest, then the ranking, and the fit
    is offset by the ranking's pass (``(k + k // 18) % 3``), so all 54
    combinations are reached: cycling rule and fit by the attempt alone (6
    and 3 share a factor) would only ever pair each rule with one fit.  On
    MiniMalloc's A-K every section-search fit within the first seconds came
    at the smallest limit, so a whole round of cheap probes comes before
    any longer one."""
    k, rnd = attempt % _COMBOS, attempt // _COMBOS
    n_r = len(SECTION_RULES)
    return Attempt(rule=SECTION_RULES[k % n_r], ranking=_RANKINGS[(k // n_r) % len(_RANKINGS)],
                   fit=_FITS[(k + k // (n_r * len(_RANKINGS))) % len(_FITS)],
                   seed=None if rnd == 0 else attempt, luby=_luby(rnd + 1))


def _restart(search: _Search, cap: int, deadline: float, attempt: int):
    """One run of the search under a node limit, with the ``attempt``-th
    branching rules (``schedule``).  The searches are heavy-tailed: some
    rule usually finds a placement with little backtracking where another
    gets lost."""
    at = schedule(attempt)
    rng = None if at.seed is None else np.random.default_rng(at.seed)
    limit = max(2 * search.m, 256) * at.luby
    try:
        return search.run(cap, deadline, node_limit=limit, section_rule=at.rule,
                          pos=search.ranking(at.ranking, rng), fit=at.fit, rng=rng)
    except _NodeLimit:
        return _LIMIT


# The ordered search's static ranks that take turns (see _Ordered): on
# MiniMalloc's benchmarks each solves some instance the others do not.
_ORDERED_HEURISTICS = ("TWA", "WAT")
_SLICE_S = 0.25
# The section search's share against one dive's: it alone fits A-C and F-H
# quickly, each dive some of D and I-K.
_SECTION_WEIGHT = 2.0
# The ordered search keeps an int64 per block and time section: above this
# many (64 MiB) the section search runs alone.
_ORDERED_MAX_CELLS = 8_000_000


class _Race:
    """The section search (restarts, both time directions) and the ordered
    search (one dive per rank heuristic) share one deadline: each gets
    slices of about _SLICE_S in turn, the one that has used the least time
    (over its weight) next.  The dives are generators, so a slice goes on where the last one
    stopped; the section search goes on with its next restart."""

    def __init__(self, sections: tuple[_Search, _Search], ordered: _Ordered | None):
        self.sections, self.ordered = sections, ordered
        self.attempt = 0

    @property
    def nodes(self) -> int:
        return (self.sections[0].nodes + self.sections[1].nodes
                + (self.ordered.nodes if self.ordered is not None else 0))

    def run(self, cap: int, deadline: float) -> np.ndarray | None:
        """Offsets under ``cap``, or None when there are none; _Timeout past ``deadline``."""
        dives = ([] if self.ordered is None else
                 [self.ordered.dive(cap, h) for h in _ORDERED_HEURISTICS])
        used = [0.0] * (1 + len(dives))
        weight = [_SECTION_WEIGHT] + [1.0] * len(dives)
        while True:
            k = min(range(len(used)), key=lambda i: used[i] / weight[i])
            t0 = time.monotonic()
            if t0 >= deadline:
                raise _Timeout
            end = min(deadline, t0 + _SLICE_S)
            try:
                if k == 0:
                    while time.monotonic() < end:
                        found = _restart(self.sections[self.attempt % 2], cap, deadline,
                                         self.attempt // 2)
                        self.attempt += 1
                        if found is not _LIMIT:
                            return found
                else:
                    while time.monotonic() < end:
                        next(dives[k - 1])
            except StopIteration as stop:
                return stop.value
            finally:
                used[k] += time.monotonic() - t0
