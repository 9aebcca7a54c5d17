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
  takes its room.

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


def _members(model: BlockModel, region: list[int], offset: list[int], b: int) -> dict[int, list]:
    """Per region in use during block ``b``'s life: [(lo, hi, block or -1)]
    of the blocks placed there then and the occupants (-1)."""
    out: dict[int, list] = {}
    for j in model.conflicts[b].tolist():
        if region[j] != ARENA:
            out.setdefault(region[j], []).append((offset[j], offset[j] + model.blocks[j].size, j))
    for r in model.occupied_regions[b]:
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
    tried: set[tuple[int, int]] = set()        # (block, peak) pairs that found no move

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
                   if region[b] == ARENA and sizes[b] and (b, peak) not in tried]
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
            if best is not None:
                moved = done = True
                break
            add(b, +1)
            tried.add((b, peak))
        if not done:
            break
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
