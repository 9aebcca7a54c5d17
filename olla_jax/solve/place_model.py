"""The placement problem as blocks: what the greedy and the exact engines share.

A block is one interval, or one ``same_offset`` group (size: the largest
member; life: the union of the members' ranges).  Blocks conflict when their
lives overlap in time; a block may use a region only where its whole size fits
and no occupant live at the same time is in the way.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from olla_jax.solve.problem import ARENA, Placement, PlacementProblem


@dataclasses.dataclass(frozen=True)
class Block:
    members: tuple[int, ...]                 # interval indices
    size: int
    segments: tuple[tuple[int, int], ...]    # disjoint, sorted inclusive time ranges

    @property
    def start(self) -> int:
        return self.segments[0][0]

    @property
    def end(self) -> int:
        return self.segments[-1][1]

    @property
    def duration(self) -> int:
        return sum(e - s + 1 for s, e in self.segments)


@dataclasses.dataclass(frozen=True)
class BlockModel:
    """Blocks, their time conflicts, and per region the occupants in each block's way."""
    problem: PlacementProblem
    blocks: tuple[Block, ...]
    conflicts: tuple[np.ndarray, ...]        # per block: indices of conflicting blocks (size > 0)
    # per region, indexed by block: (lo, hi) byte ranges of occupants live during the block
    occupied: tuple[Sequence[tuple[tuple[int, int], ...]], ...]
    occupied_regions: tuple[tuple[int, ...], ...] = ()   # per block: regions with an occupant then
    # per block: regions an occupant fills wholly at some time of its life (nothing fits there)
    blocked_regions: tuple[frozenset[int], ...] = ()
    open_regions: tuple[tuple[int, ...], ...] = ()       # per block: occupied_regions less blocked

    @property
    def alignment(self) -> int:
        return self.problem.alignment

    def fits_region(self, b: int, r: int) -> bool:
        return self.blocks[b].size <= self.problem.regions[r].capacity

    def to_placement(self, region: list[int], offset: list[int]) -> Placement:
        """Per-block locations -> per-interval Placement (arena size computed)."""
        n = len(self.problem.intervals)
        reg, off = [ARENA] * n, [0] * n
        arena = 0
        for b, block in enumerate(self.blocks):
            for i in block.members:
                reg[i], off[i] = region[b], offset[b]
            if region[b] == ARENA and block.size > 0:
                arena = max(arena, offset[b] + block.size)
        return Placement(tuple(reg), tuple(off), arena)

    def from_placement(self, placement: Placement) -> tuple[list[int], list[int]]:
        """Per-block (region, offset) read from a Placement's first members."""
        region = [placement.region[b.members[0]] for b in self.blocks]
        offset = [placement.offset[b.members[0]] for b in self.blocks]
        return region, offset


class _Occupied:
    """One region's occupants as ``occupied[r][b]`` reads them: the (lo, hi)
    byte ranges of those live during block ``b``, found when asked."""

    def __init__(self, occupants, blocks):
        self._occupants = occupants
        self._blocks = blocks

    def __len__(self) -> int:
        return len(self._blocks)

    def __getitem__(self, b: int) -> tuple[tuple[int, int], ...]:
        segments = self._blocks[b].segments
        return tuple((o.offset, o.offset + o.size) for o in self._occupants
                     if _segments_overlap(segments, ((o.start, o.end),)))


def _merge(ranges: list[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    out: list[tuple[int, int]] = []
    for s, e in sorted(ranges):
        if out and s <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return tuple(out)


def _segments_overlap(a: tuple[tuple[int, int], ...], b: tuple[tuple[int, int], ...]) -> bool:
    i = j = 0
    while i < len(a) and j < len(b):
        if a[i][1] < b[j][0]:
            i += 1
        elif b[j][1] < a[i][0]:
            j += 1
        else:
            return True
    return False


def check_problem(problem: PlacementProblem) -> None:
    """ValueError on a malformed problem (sizes, ranges, alignment, groups)."""
    if problem.alignment < 1:
        raise ValueError(f"alignment must be >= 1, got {problem.alignment}")
    for i, iv in enumerate(problem.intervals):
        if iv.size < 0:
            raise ValueError(f"interval {i} has negative size {iv.size}")
        if iv.end < iv.start:
            raise ValueError(f"interval {i} ends ({iv.end}) before it starts ({iv.start})")
    for r, region in enumerate(problem.regions):
        if region.capacity < 0:
            raise ValueError(f"region {r} has negative capacity")
        for k, occ in enumerate(region.occupants):
            if occ.size < 0 or occ.offset < 0 or occ.end < occ.start:
                raise ValueError(f"occupant {k} of region {r} is malformed: {occ}")
    seen: dict[int, int] = {}
    for g, group in enumerate(problem.same_offset):
        for i in group:
            if not 0 <= i < len(problem.intervals):
                raise ValueError(f"same_offset group {g} names interval {i}, which does not exist")
            if i in seen:
                raise ValueError(f"interval {i} is in same_offset groups {seen[i]} and {g}")
            seen[i] = g


def build_model(problem: PlacementProblem) -> BlockModel:
    check_problem(problem)
    grouped = set()
    blocks: list[Block] = []
    for group in problem.same_offset:
        if not group:
            continue
        grouped.update(group)
        ivs = [problem.intervals[i] for i in group]
        blocks.append(Block(tuple(group), max(iv.size for iv in ivs),
                            _merge([(iv.start, iv.end) for iv in ivs])))
    for i, iv in enumerate(problem.intervals):
        if i not in grouped:
            blocks.append(Block((i,), iv.size, ((iv.start, iv.end),)))
    starts = np.array([b.start for b in blocks], dtype=np.int64)
    ends = np.array([b.end for b in blocks], dtype=np.int64)
    sizes = np.array([b.size for b in blocks], dtype=np.int64)
    multi = np.array([len(b.segments) > 1 for b in blocks], dtype=bool)
    conflicts = []
    for b, block in enumerate(blocks):
        if block.size == 0:
            conflicts.append(np.zeros(0, dtype=np.int64))
            continue
        hit = (starts <= block.end) & (ends >= block.start) & (sizes > 0)
        hit[b] = False
        idx = np.nonzero(hit)[0]
        # Refine hull overlaps where a life is split: single-segment neighbours
        # vectorised against this block's segments, split ones one by one.
        split = multi[idx]
        if multi[b] or split.any():
            single = idx[~split]
            if multi[b]:
                keep = np.zeros(len(single), dtype=bool)
                for lo, hi in block.segments:
                    keep |= (starts[single] <= hi) & (ends[single] >= lo)
                single = single[keep]
            others = [j for j in idx[split].tolist()
                      if _segments_overlap(block.segments, blocks[j].segments)]
            idx = np.sort(np.concatenate([single, np.array(others, dtype=np.int64)]))
        conflicts.append(idx)
    # Occupants of every region at once, hull overlaps vectorised (the exact
    # segments of split lives checked one by one).  A region that an occupant
    # fills wholly at some time of a block's life is closed to that block.
    # Per region, the spans in a block's way are read when asked (``_Occupied``):
    # donated inputs and outputs make hundreds of regions, each in the way of
    # nearly every block, too many pairs to list.
    n = len(blocks)
    occupants = [(r, o) for r, region in enumerate(problem.regions)
                 for o in region.occupants if o.size > 0]
    empty = tuple(() for _ in range(n))
    if not occupants:
        return BlockModel(problem, tuple(blocks), tuple(conflicts),
                          tuple(_Occupied((), blocks) for _ in problem.regions), empty,
                          tuple(frozenset() for _ in range(n)), empty)
    o_start = np.array([o.start for _, o in occupants], dtype=np.int64)
    o_end = np.array([o.end for _, o in occupants], dtype=np.int64)
    o_region = np.array([r for r, _ in occupants], dtype=np.int64)
    capacity = np.array([problem.regions[r].capacity for r, _ in occupants], dtype=np.int64)
    fills = np.array([o.offset <= 0 for _, o in occupants]) & (
        np.array([o.offset + o.size for _, o in occupants], dtype=np.int64) >= capacity)
    hit = (starts[:, None] <= o_end[None, :]) & (ends[:, None] >= o_start[None, :])
    for b in np.nonzero(multi)[0].tolist():
        for k in np.nonzero(hit[b])[0].tolist():
            _, o = occupants[k]
            hit[b, k] = _segments_overlap(blocks[b].segments, ((o.start, o.end),))
    in_way = np.zeros((n, len(problem.regions)), dtype=bool)
    closed = np.zeros_like(in_way)
    rows, cols = np.nonzero(hit)
    in_way[rows, o_region[cols]] = True
    full = fills[cols]
    closed[rows[full], o_region[cols[full]]] = True
    occupied_regions = tuple(tuple(np.nonzero(row)[0].tolist()) for row in in_way)
    blocked = tuple(frozenset(np.nonzero(row)[0].tolist()) for row in closed)
    open_regions = tuple(tuple(np.nonzero(row)[0].tolist()) for row in in_way & ~closed)
    by_region: list[list] = [[] for _ in problem.regions]
    for r, o in occupants:
        by_region[r].append(o)
    occupied = tuple(_Occupied(tuple(occ), blocks) for occ in by_region)
    return BlockModel(problem, tuple(blocks), tuple(conflicts), occupied, occupied_regions,
                      blocked, open_regions)
