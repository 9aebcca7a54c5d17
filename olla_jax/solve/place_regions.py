"""Region choices judged by the arena's peak: blocks live at the peak move
into regions (idle output allocations), evicting a region's block that is
not needed there when that makes room.

Best-fit puts each block into a region whenever one holds it, in its sort
order, so regions fill with blocks whatever their time; the exact arena
search keeps those choices.  On the examples' placement problems the arena
then sat at the arena-only optimum for those choices while its peak stayed
3-8% above the order's live bytes (which count region space as free): the
loss was in which blocks the regions hold.  This pass lowers the arena's
live-bytes peak (the most arena bytes live at once; the arena search then
places what is left), one move at a time, while it goes down:

- a block in the arena live at a peak moment moves into a region with room
  for it all its life;
- failing that, one region block in its way that is live at no peak moment
  goes to the arena (where its bytes stay below the peak) and the peak block
  takes its room;
- once neither move is left for any block at the peak, an ejection chain:
  the blocks in the way of one window of a region (no occupant there) each
  move into another region with room for their whole life (or, live at no
  peak moment, to the arena), and the peak block takes the window.  On gpt2 with gradient accumulation (CPU, small)
  1 MiB regions held 0.25 MiB blocks that 0.25 MiB regions had room for,
  while two 1 MiB blocks sat in the arena at its peak (10.00 MiB placed
  against 8.28 that no order's placement goes below).

Each accepted move lowers (peak, moments at the peak) lexicographically, so
the pass ends.  Offsets in the arena are not kept (the caller places the
arena again); region offsets are.
"""

from __future__ import annotations

import time

import numpy as np

from olla_jax.solve.place_greedy import _tightest
from olla_jax.solve.place_model import BlockModel
from olla_jax.solve.problem import ARENA, Placement


def arena_profile(model: BlockModel, region: list[int], horizon: int) -> np.ndarray:
    """Arena bytes live at each moment under the region choices."""
    diff = np.zeros(horizon + 1, dtype=np.int64)
    for b, blk in enumerate(model.blocks):
        if region[b] == ARENA and blk.size:
            for s, e in blk.segments:
                diff[s] += blk.size
                diff[e + 1] -= blk.size
    return np.cumsum(diff)[:horizon]


def _members(model: BlockModel, region: list[int], offset: list[int], b: int,
             caps: np.ndarray | None = None, only: int | None = None) -> dict[int, list]:
    """Per region in use during block ``b``'s life: [(lo, hi, block or -1)]
    of the blocks placed there then and the occupants (-1); with ``caps``
    (the regions' capacities), only the regions that could hold ``b``;
    with ``only``, that region alone."""
    out: dict[int, list] = {}
    size = model.blocks[b].size
    conf = model.conflicts[b]
    if caps is None:
        for j in conf.tolist():
            if region[j] != ARENA:
                out.setdefault(region[j], []).append((offset[j], offset[j] + model.blocks[j].size, j))
    elif len(conf):
        # vectorised: a deep step's blocks conflict with hundreds of others
        where = np.asarray(region, dtype=np.int64)[conf]
        keep = where != ARENA if only is None else where == only
        keep[keep] = caps[where[keep]] >= size
        for j, r in zip(conf[keep].tolist(), where[keep].tolist()):
            out.setdefault(r, []).append((offset[j], offset[j] + model.blocks[j].size, j))
    for r in model.occupied_regions[b] if only is None else (
            [only] if only in model.occupied_regions[b] else []):
        if caps is None or caps[r] >= size:
            out.setdefault(r, []).extend((lo, hi, -1) for lo, hi in model.occupied[r][b])
    return out


def _room(model: BlockModel, spans: list, b: int, r: int, without: int = -1) -> int | None:
    """Lowest offset of the tightest gap for block ``b`` in region ``r`` among
    ``spans`` (``_members``'s, block ``without`` left out)."""
    found = _tightest([(lo, hi) for lo, hi, j in spans if j != without or j < 0],
                      model.blocks[b].size, model.alignment, model.problem.regions[r].capacity)
    return None if found is None else found[1]


def improve_regions(model: BlockModel, placement: Placement, deadline: float) -> Placement:
    """``placement`` with region choices that lower the arena's live-bytes
    peak (see the module doc); arena offsets are best-effort (each moved-out
    block leaves a hole, each evicted one sits on top), so place the arena
    again.  Returns ``placement`` itself when nothing moved."""
    problem = model.problem
    if not problem.regions or not model.blocks:
        return placement
    region, offset = model.from_placement(placement)
    region, offset = list(region), list(offset)
    sizes = np.array([blk.size for blk in model.blocks], dtype=np.int64)
    horizon = max(blk.end for blk in model.blocks) + 1
    prof = arena_profile(model, region, horizon)
    caps = np.array([reg.capacity for reg in problem.regions], dtype=np.int64)
    by_cap = np.argsort(caps, kind="stable")
    moved = False
    tried: set[tuple[int, int, bool]] = set()   # (block, peak, chains) that found no move
    # Ejection chains only once no plain move is left (they cost more: on a
    # start whose best-fit was cut short, nearly every block in the arena,
    # they took the time the plain moves needed).
    chains = False
    outside: dict = {}   # ejection chains' homes of blocks, until a move is made

    def add(b: int, sign: int) -> None:
        for s, e in model.blocks[b].segments:
            prof[s:e + 1] += sign * int(sizes[b])

    seg_lo = np.array([s for blk in model.blocks for s, _ in blk.segments], dtype=np.int64)
    seg_hi = np.array([e + 1 for blk in model.blocks for _, e in blk.segments], dtype=np.int64)
    seg_of = np.repeat(np.arange(len(model.blocks)), [len(blk.segments) for blk in model.blocks])
    while time.monotonic() < deadline:
        peak = int(prof.max())
        if peak == 0:
            break
        marks = np.concatenate(([0], np.cumsum(prof == peak)))
        hit = np.zeros(len(model.blocks), dtype=bool)
        hit[seg_of[marks[seg_hi] > marks[seg_lo]]] = True
        at_peak = [b for b in np.nonzero(hit)[0].tolist()
                   if region[b] == ARENA and sizes[b] and (b, peak, chains) not in tried]
        at_peak.sort(key=lambda b: -int(sizes[b]))
        done = False
        for b in at_peak:
            if time.monotonic() >= deadline:
                break
            used = _members(model, region, offset, b)
            size_b = int(sizes[b])
            best = None
            # A region with room as it is: one in use then, the tightest gap,
            # or the smallest idle one.
            for r in sorted(used):
                if caps[r] >= size_b:
                    x = _room(model, used[r], b, r)
                    if x is not None:
                        best = (r, x)
                        break
            if best is None:
                for r in by_cap[np.searchsorted(caps[by_cap], size_b):].tolist():
                    if r not in used:
                        best = (r, 0)
                        break
            if best is not None:
                region[b], offset[b] = best
                add(b, -1)
                moved = done = True
                outside.clear()   # homes found before this move may be taken now
                break
            # One region block in the way, live at no peak moment, to the arena.
            add(b, -1)
            for r in sorted(used):
                if caps[r] < size_b:
                    continue
                spans = sorted(used[r])
                for k, (lo, hi, j) in enumerate(spans):
                    # The room j leaves, between its neighbours, must hold b.
                    below = spans[k - 1][1] if k else 0
                    above = spans[k + 1][0] if k + 1 < len(spans) else int(caps[r])
                    if j < 0 or above - below < size_b or any(
                            int(prof[s:e + 1].max()) + int(sizes[j]) >= peak
                            for s, e in model.blocks[j].segments):
                        continue
                    x = _room(model, used[r], b, r, without=j)
                    if x is None:
                        continue
                    region[j], offset[j] = ARENA, 0
                    add(j, +1)
                    region[b], offset[b] = r, x
                    best = (r, x)
                    break
                if best is not None:
                    break
            if best is None and chains and _eject(model, region, offset, prof, peak, b, used,
                                                  caps, by_cap, deadline, outside, sizes):
                best = (region[b], offset[b])
                chains = False   # the plain moves first again
            if best is not None:
                moved = done = True
                outside.clear()   # homes found before this move may be taken now
                break
            add(b, +1)
            tried.add((b, peak, chains))
        if not done:
            if chains or time.monotonic() >= deadline:
                break
            chains = True     # no plain move lowers the peak: ejection chains too
    if not moved:
        return placement
    # Arena blocks stacked in the order of their old offsets: valid, not tight.
    arena = sorted((b for b in range(len(model.blocks)) if region[b] == ARENA and sizes[b]),
                   key=lambda b: offset[b])
    a = model.alignment
    top: dict[int, int] = {}
    for b in arena:
        x = 0
        for j in model.conflicts[b].tolist():
            if j in top:
                x = max(x, top[j])
        x = -(-x // a) * a
        offset[b] = x
        top[b] = x + int(sizes[b])
    for b, blk in enumerate(model.blocks):
        if region[b] == ARENA and not blk.size:
            offset[b] = 0
    return model.to_placement(region, offset)


# The most region blocks one ejection chain moves out of a window.
EJECT_MAX = 8


def _in_way(model: BlockModel, region: list[int], j: int, caps: np.ndarray,
            sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The blocks in a region during block ``j``'s life, in a region that
    could hold ``j``, and their regions (vectorised: a deep step's blocks
    conflict with hundreds of others)."""
    conf = model.conflicts[j]
    if not len(conf):
        return conf, conf
    where = np.asarray(region, dtype=np.int64)[conf]
    keep = where != ARENA
    keep[keep] = caps[where[keep]] >= sizes[j]
    return conf[keep], where[keep]


def _spans(model: BlockModel, offset: list[int], j: int, r: int, ks: np.ndarray,
           rs: np.ndarray, sizes: np.ndarray) -> list[tuple[int, int]]:
    """(lo, hi) of what is in region ``r`` during block ``j``'s life: the
    blocks ``ks`` whose region ``rs`` is ``r``, and its occupants."""
    out = [(offset[k], offset[k] + int(sizes[k])) for k in ks[rs == r].tolist()]
    if r in model.open_regions[j] or r in model.blocked_regions[j]:
        out.extend(model.occupied[r][j])
    return out


def _home(model: BlockModel, region: list[int], offset: list[int], prof: np.ndarray,
          peak: int, j: int, caps: np.ndarray, by_cap: np.ndarray, sizes: np.ndarray,
          skip: int | None = None) -> tuple[int, int] | None:
    """Where block ``j`` (out of its region for now) can go as things stand:
    the tightest room in the smallest region in use during its life with
    room for it, else the smallest region idle then, else the arena when its
    bytes there stay below ``peak`` at every moment of its life; None when
    nowhere.  ``skip``: a region not to look in (and no arena)."""
    size = int(sizes[j])
    ks, rs = _in_way(model, region, j, caps, sizes)
    occupied = [r for r in model.occupied_regions[j] if caps[r] >= size]
    used = set(rs.tolist()) | set(occupied)
    # one block leaves too little room (a full region, the usual case)
    full = set(rs[sizes[ks] > caps[rs] - size].tolist()) | model.blocked_regions[j]
    for r in sorted(used - full, key=lambda r: (caps[r], r)):   # the smallest with room
        if r == skip:
            continue
        got = _tightest(_spans(model, offset, j, r, ks, rs, sizes), size, model.alignment,
                        int(caps[r]))
        if got is not None:
            return r, got[1]
    for r in by_cap[np.searchsorted(caps[by_cap], size):].tolist():
        if r not in used and r != skip:
            return r, 0
    if skip is None and all(int(prof[s:e + 1].max()) + size < peak
                            for s, e in model.blocks[j].segments):
        return ARENA, 0
    return None


def _chain_home(model: BlockModel, region: list[int], offset: list[int], prof: np.ndarray,
                peak: int, j: int, r: int, caps: np.ndarray, by_cap: np.ndarray,
                outside: dict, homed: list[int], sizes: np.ndarray) -> tuple[int, int] | None:
    """``_home`` of block ``j``, one of an ejection chain's out of region
    ``r``: its home outside ``r`` as the placement stood before the chain
    (``outside``, per block, kept until a move is made) when no block of
    this chain (``homed``) took that room since, else as things stand."""
    size = int(sizes[j])
    if j not in outside:
        saved = region[j]
        region[j] = ARENA
        outside[j] = _home(model, region, offset, prof, peak, j, caps, by_cap, sizes, skip=r)
        region[j] = saved
    found = outside[j]
    if found is None:     # region r itself, at another offset, or the arena
        conf = model.conflicts[j]    # sorted
        mine = np.nonzero(np.asarray(region, dtype=np.int64) == r)[0]
        if len(conf) and len(mine):
            pos = np.minimum(np.searchsorted(conf, mine), len(conf) - 1)
            ks = mine[conf[pos] == mine]
        else:
            ks = mine[:0]
        got = _tightest(_spans(model, offset, j, r, ks, np.full(len(ks), r), sizes), size,
                        model.alignment, int(caps[r]))
        if got is not None:
            return r, got[1]
        if all(int(prof[s:e + 1].max()) + size < peak for s, e in model.blocks[j].segments):
            return ARENA, 0
        return None
    lo, hi = found[1], found[1] + size
    conf = set(model.conflicts[j].tolist()) if homed else ()
    if not any(region[k] == found[0] and k in conf and offset[k] < hi
               and offset[k] + int(sizes[k]) > lo for k in homed):
        return found
    return _home(model, region, offset, prof, peak, j, caps, by_cap, sizes)


def _windows(spans: list, size: int, cap: int, alignment: int) -> list[tuple[int, list[int]]]:
    """Offsets in a region where a block of ``size`` bytes could sit once the
    blocks in its way there leave: (offset, those blocks), fewest bytes in
    the way first; none that an occupant (-1) is in, none with more than
    EJECT_MAX blocks."""
    starts = {0, *(-(-hi // alignment) * alignment for _, hi, _ in spans),
              *((lo - size) // alignment * alignment for lo, _, _ in spans)}
    out = []
    for x in sorted(starts):
        if x < 0 or x + size > cap:
            continue
        way = [(lo, hi, j) for lo, hi, j in spans if lo < x + size and hi > x]
        if not way or len(way) > EJECT_MAX or any(j < 0 for _, _, j in way):
            continue
        out.append((sum(hi - lo for lo, hi, _ in way), x, [j for _, _, j in way]))
    out.sort(key=lambda w: (w[0], w[1]))
    return [(x, way) for _, x, way in out]


def _eject(model: BlockModel, region: list[int], offset: list[int], prof: np.ndarray,
           peak: int, b: int, used: dict, caps: np.ndarray, by_cap: np.ndarray,
           deadline: float, outside: dict, sizes: np.ndarray) -> bool:
    """The ejection chain of ``improve_regions`` for peak block ``b`` (out of
    the arena profile already): the first window of a region whose blocks
    all find a home elsewhere (``_home``, one after another, ``b`` in the
    window); ``region``, ``offset`` and ``prof`` updated when one is found
    (True), left as they were otherwise.  ``outside``: ``_chain_home``'s."""
    size = int(model.blocks[b].size)
    home_b = (region[b], offset[b])
    seen = set()
    for r in sorted(used, key=lambda r: -len(used[r])):
        if caps[r] < size:
            continue
        for x, way in _windows(used[r], size, int(caps[r]), model.alignment):
            if time.monotonic() >= deadline:
                return False
            key = (r, tuple(sorted(way)))
            if key in seen:
                continue
            seen.add(key)
            saved = [(j, region[j], offset[j]) for j in way]
            for j in way:
                region[j] = ARENA
            region[b], offset[b] = r, x
            homes = []
            for j in sorted(way, key=lambda j: -int(model.blocks[j].size)):
                home = _chain_home(model, region, offset, prof, peak, j, r, caps, by_cap,
                                   outside, homes, sizes)
                if home is None:
                    break
                region[j], offset[j] = home
                homes.append(j)
                if home[0] == ARENA:
                    offset[j] = 0
                    for s, e in model.blocks[j].segments:
                        prof[s:e + 1] += int(model.blocks[j].size)
            else:
                return True
            for j in homes:     # undone: the window is not free
                if region[j] == ARENA:
                    for s, e in model.blocks[j].segments:
                        prof[s:e + 1] -= int(model.blocks[j].size)
            for j, r0, x0 in saved:
                region[j], offset[j] = r0, x0
            region[b], offset[b] = home_b
    return False
