"""The placement solver's own self-check, and the live-bytes lower bound."""

from __future__ import annotations

import bisect
import heapq
import time
from collections import Counter

import numpy as np

from olla_jax.solve import cpsat_run
from olla_jax.solve.place_model import check_problem
from olla_jax.solve.problem import ARENA, Placement, PlacementProblem


def _where(r: int) -> str:
    return "the arena" if r == ARENA else f"region {r}"


def validate_placement(problem: PlacementProblem, placement: Placement) -> None:
    """Raise ValueError, naming the intervals, unless ``placement`` is valid:
    aligned, inside the arena size or region capacity, clear of occupants and
    of every other interval live at the same time in the same place (members
    of one ``same_offset`` group excepted, which must share region and offset)."""
    check_problem(problem)
    ivs = problem.intervals
    n, a = len(ivs), problem.alignment
    if len(placement.region) != n or len(placement.offset) != n:
        raise ValueError(f"placement has {len(placement.region)} regions and "
                         f"{len(placement.offset)} offsets for {n} intervals")
    for i, (iv, r, off) in enumerate(zip(ivs, placement.region, placement.offset)):
        if r != ARENA and not 0 <= r < len(problem.regions):
            raise ValueError(f"interval {i} is placed in region {r}, which does not exist")
        if off < 0:
            raise ValueError(f"interval {i} has negative offset {off}")
        if off % a:
            raise ValueError(f"interval {i} offset {off} is not a multiple of the alignment {a}")
        if iv.size == 0:
            continue
        limit = placement.arena_size if r == ARENA else problem.regions[r].capacity
        if off + iv.size > limit:
            what = f"arena size {limit}" if r == ARENA else f"region {r}'s capacity {limit}"
            raise ValueError(f"interval {i} ends at byte {off + iv.size}, past the {what}")
    group = list(range(n))
    for g, members in enumerate(problem.same_offset):
        first = members[0] if members else None
        for i in members:
            group[i] = n + g
            if (placement.region[i], placement.offset[i]) != (placement.region[first], placement.offset[first]):
                raise ValueError(f"same_offset group {g}: intervals {first} and {i} are at "
                                 f"{_where(placement.region[first])} offset {placement.offset[first]} and "
                                 f"{_where(placement.region[i])} offset {placement.offset[i]}")
    _check_occupants(problem, placement)
    _check_pairs(problem, placement, group)


def _check_occupants(problem: PlacementProblem, placement: Placement) -> None:
    reg = np.array(placement.region, dtype=np.int64)
    off = np.array(placement.offset, dtype=np.int64)
    size = np.array([iv.size for iv in problem.intervals], dtype=np.int64)
    start = np.array([iv.start for iv in problem.intervals], dtype=np.int64)
    end = np.array([iv.end for iv in problem.intervals], dtype=np.int64)
    for r, region in enumerate(problem.regions):
        mine = np.nonzero((reg == r) & (size > 0))[0]
        for k, occ in enumerate(region.occupants):
            if occ.size == 0 or not len(mine):
                continue
            bad = ((start[mine] <= occ.end) & (end[mine] >= occ.start)
                   & (off[mine] < occ.offset + occ.size) & (off[mine] + size[mine] > occ.offset))
            if bad.any():
                i = int(mine[np.argmax(bad)])
                raise ValueError(f"interval {i} (bytes [{off[i]}, {off[i] + size[i]}), times "
                                 f"[{start[i]}, {end[i]}]) overlaps occupant {k} of region {r} "
                                 f"(bytes [{occ.offset}, {occ.offset + occ.size}), times "
                                 f"[{occ.start}, {occ.end}])")


def _check_pairs(problem: PlacementProblem, placement: Placement, group: list[int]) -> None:
    """Sweep over time; per place, the live blocks sorted by offset.  Blocks of
    different groups never overlap (each insertion is checked), so only the
    blocks below the new one's end and the nearest ones below its start matter."""
    ivs = problem.intervals
    by_start = sorted((iv.start, i) for i, iv in enumerate(ivs) if iv.size > 0)
    live: dict[int, list[tuple[int, int]]] = {}      # place -> sorted (offset, interval)
    ending: list[tuple[int, int]] = []                # heap of (end time, interval)
    for t, i in by_start:
        while ending and ending[0][0] < t:
            _, j = heapq.heappop(ending)
            keys = live[placement.region[j]]
            del keys[bisect.bisect_left(keys, (placement.offset[j], j))]
        place, lo = placement.region[i], placement.offset[i]
        hi = lo + ivs[i].size
        keys = live.setdefault(place, [])
        pos = bisect.bisect_left(keys, (hi, -1))
        k = pos - 1
        while k >= 0:
            o, j = keys[k]
            if o + ivs[j].size > lo and group[j] != group[i]:
                raise ValueError(
                    f"intervals {j} and {i} overlap in {_where(place)}: bytes "
                    f"[{o}, {o + ivs[j].size}) and [{lo}, {hi}) while both are live "
                    f"(times [{ivs[j].start}, {ivs[j].end}] and [{ivs[i].start}, {ivs[i].end}])")
            if o + ivs[j].size <= lo and (k == 0 or keys[k - 1][0] != o):
                break  # everything further down ends at or below o
            k -= 1
        bisect.insort(keys, (lo, i))
        heapq.heappush(ending, (ivs[i].end, i))


def live_bytes_bound(problem: PlacementProblem) -> int:
    """A lower bound on any valid placement's arena size: the most bytes live at
    one time, less the free space of every region then (occupants subtracted,
    alignment ignored), and at least what is live of the intervals too large for
    every region.  Members of one same_offset group count once (the largest)."""
    check_problem(problem)
    ivs = problem.intervals
    max_cap = max((r.capacity for r in problem.regions), default=-1)
    grouped = {i for g in problem.same_offset for i in g}
    # (start, end, size, must be in the arena) pieces
    pieces = [(iv.start, iv.end, iv.size, iv.size > max_cap) for i, iv in enumerate(ivs)
              if i not in grouped and iv.size > 0]
    for members in problem.same_offset:
        pieces += _group_pieces([ivs[i] for i in members], max_cap)
    if not pieces:
        return 0
    # live bytes rise at piece starts, free space falls at occupant starts
    times = sorted({p[0] for p in pieces} | {o.start for r in problem.regions for o in r.occupants})
    t = np.array(times, dtype=np.int64)
    live = np.zeros(len(t), dtype=np.int64)
    forced = np.zeros(len(t), dtype=np.int64)
    for s, e, size, must in pieces:
        lo, hi = np.searchsorted(t, s), np.searchsorted(t, e, side="right")
        live[lo:hi] += size
        if must:
            forced[lo:hi] += size
    free = np.zeros(len(t), dtype=np.int64)
    for region in problem.regions:
        free += _region_free(region, t)
    return int(max(0, np.maximum(live - free, forced).max()))


def _group_pieces(members, max_cap: int) -> list[tuple[int, int, int, bool]]:
    """A group's bytes over time: at each moment, its largest live member."""
    cuts = sorted({m.start for m in members} | {m.end + 1 for m in members})
    out = []
    for s, nxt in zip(cuts, cuts[1:]):
        size = max((m.size for m in members if m.start <= s <= m.end), default=0)
        if size > 0:
            out.append((s, nxt - 1, size, size > max_cap))
    return out


def covered_stretches(region) -> tuple[list[int], list[int]]:
    """(cuts, covered): the steps where a live occupant of ``region`` starts or
    ends (one past its last step), and the bytes the live occupants cover
    together (their union) from each cut until the next."""
    occ = [o for o in region.occupants if o.size > 0]
    cuts = sorted({o.start for o in occ} | {o.end + 1 for o in occ})
    covered_list = []
    for t in cuts:
        spans = sorted((o.offset, min(o.offset + o.size, region.capacity))
                       for o in occ if o.start <= t <= o.end)
        covered, reach = 0, 0
        for lo, hi in spans:
            lo = max(lo, reach)
            if hi > lo:
                covered += hi - lo
                reach = hi
        covered_list.append(covered)
    return cuts, covered_list


def _region_free(region, times: np.ndarray) -> np.ndarray:
    """Free bytes of a region at each time: capacity less the union of its live
    occupants.  The live set changes only where an occupant starts or ends:
    each stretch between those is measured once (a region has few occupants,
    the times are thousands)."""
    free = np.full(len(times), region.capacity, dtype=np.int64)
    cuts, covered = covered_stretches(region)
    if not cuts:
        return free
    covered_at = [0] + covered   # before the first cut nothing is live
    stretch = np.searchsorted(np.array(cuts, dtype=np.int64), times, side="right")
    free -= np.array(covered_at, dtype=np.int64)[stretch]
    return np.maximum(free, 0)


def region_fit_bound(problem: PlacementProblem, exact_s: float = 0.0,
                     moments: int | None = None) -> int:
    """``live_bytes_bound`` with region space counted only where a block
    could use it: at each moment, the bytes that leave the arena are at most
    (a) the region space free then, (b) per region, the bytes live then of
    blocks that fit in it clear of its occupants for their whole life, summed
    over regions, and (c) the bytes live then of blocks that fit in some
    region; at the moments with the highest figures, (d) what a max-flow
    of those blocks' bytes into the regions' free bytes can carry (a block
    that fits several regions counts once).  Never below ``live_bytes_bound``,
    which counts every region
    byte free at a moment as usable by whatever is live then
    (benchmarks/time_limit.py reports both).
    Members of one same_offset group count as one piece per stretch (the
    largest live), fitting every region that large (a relaxation).
    At the PACK_MOMENTS highest, (e) the same flow with each region's free
    bytes lowered to the most that whole blocks live then sum to.
    ``exact_s`` > 0: then, highest moment first, (f) the assignment itself
    (each block whole into at most one region it fits) by CP-SAT, its
    proven bound on the bytes moved, within about that many seconds in all
    (on unet small's chosen order: 91.00 MiB, its placed arena, where the
    flow said 90.05).  ``moments``: how many of the highest moments get the
    flows (FLOW_MOMENTS when None; fewer is faster and still a bound)."""
    check_problem(problem)
    flows = FLOW_MOMENTS if moments is None else moments
    ivs, regions = problem.intervals, problem.regions
    caps = np.array([r.capacity for r in regions], dtype=np.int64)
    max_cap = int(caps.max()) if len(caps) else -1
    grouped = {i for g in problem.same_offset for i in g}
    # (start, end, size, whole life known: occupants checked)
    pieces = [(iv.start, iv.end, iv.size, True) for i, iv in enumerate(ivs)
              if i not in grouped and iv.size > 0]
    for members in problem.same_offset:
        pieces += [(s, e, z, False) for s, e, z, _ in _group_pieces([ivs[i] for i in members], max_cap)]
    if not pieces:
        return 0
    start = np.array([p[0] for p in pieces], dtype=np.int64)
    end = np.array([p[1] for p in pieces], dtype=np.int64)
    size = np.array([p[2] for p in pieces], dtype=np.int64)
    whole = np.array([p[3] for p in pieces], dtype=bool)
    t = np.array(sorted(set(start.tolist()) | {o.start for r in regions for o in r.occupants}),
                 dtype=np.int64)
    live_at = ((start[None, :] <= t[:, None]) & (t[:, None] <= end[None, :])).astype(np.float64)
    live = live_at @ size.astype(np.float64)      # float sums: exact below 2**53 bytes
    if not regions:
        return int(live.max())
    fits = size[:, None] <= caps[None, :]
    for r, region in enumerate(regions):
        occ = [o for o in region.occupants if o.size > 0]
        if not occ:
            continue
        o_start = np.array([o.start for o in occ], dtype=np.int64)
        o_end = np.array([o.end for o in occ], dtype=np.int64)
        hit = (o_start[None, :] <= end[:, None]) & (start[:, None] <= o_end[None, :])
        # Blocks meeting the same occupants share one widest gap.
        if hit.shape[1] <= 62:
            keys = hit @ (np.int64(1) << np.arange(hit.shape[1], dtype=np.int64))
            _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
            patterns = hit[first]
        else:
            patterns, inverse = np.unique(hit, axis=0, return_inverse=True)
        widest = np.array([_widest_gap(region, occ, row, problem.alignment) for row in patterns],
                          dtype=np.int64)
        fits[:, r] &= ~whole | (size <= widest[np.ravel(inverse)])
    free = np.stack([_region_free(region, t) for region in regions], axis=1).astype(np.float64)
    per_region = np.minimum(free, live_at @ (size[:, None] * fits).astype(np.float64)).sum(axis=1)
    movable = live_at @ (size * fits.any(axis=1)).astype(np.float64)
    moved = np.minimum(np.minimum(movable, per_region), free.sum(axis=1))
    bound = live - moved
    # At the moments with the highest figures, the bytes that can leave the
    # arena as a flow: each live block's bytes to regions it fits, each
    # region's free bytes at most (fractional: a relaxation of the
    # assignment, so still a bound; a block fitting many regions counts once).
    top = np.argsort(-bound, kind="stable")[:flows]
    top = np.union1d(top, np.argsort(-live, kind="stable")[:flows])
    for k in top.tolist():
        if live[k] <= bound.max():
            continue
        on = np.nonzero(live_at[k] > 0)[0]
        bound[k] = max(bound[k], live[k] - _flow_out(size[on], fits[on], free[k]))
    # Then at the highest few, (e) the same flow with each region's free bytes
    # lowered to what whole blocks live then can fill (see _packable).
    sums: dict = {}      # subset sums, shared by the moments
    for k in np.argsort(-bound, kind="stable")[:PACK_MOMENTS].tolist():
        if live[k] <= bound.max():
            continue
        on = np.nonzero(live_at[k] > 0)[0]
        room = _packable(on, size[on], fits[on], free[k], sums)
        if (room < free[k]).any():
            bound[k] = max(bound[k], live[k] - _flow_out(size[on], fits[on], room))
    if exact_s > 0:
        end = time.monotonic() + exact_s
        for k in np.argsort(-bound, kind="stable")[:FLOW_MOMENTS].tolist():
            left = end - time.monotonic()
            if left <= 0:
                break
            if live[k] <= bound.max():
                continue
            on = np.nonzero(live_at[k] > 0)[0]
            moved_at_most = _assign_out(size[on], fits[on], free[k], left)
            bound[k] = max(bound[k], live[k] - moved_at_most)
    return int(round(max(0.0, float(bound.max()))))


def _assign_out(sizes: np.ndarray, fits: np.ndarray, free: np.ndarray, time_limit_s: float) -> float:
    """At most how many bytes of whole blocks (``sizes``, ``fits`` per region)
    the regions' ``free`` bytes take, each block into one region: CP-SAT's
    proven bound (a multiple knapsack), in units of the sizes' gcd."""
    from ortools.sat.python import cp_model
    pairs = list(zip(*np.nonzero(fits & (sizes[:, None] <= free[None, :]))))
    if not pairs:
        return 0.0
    g = int(np.gcd.reduce(sizes))
    model = cp_model.CpModel()
    take = {(b, r): model.NewBoolVar("") for b, r in pairs}
    by_block: dict = {}
    by_region: dict = {}
    for (b, r), v in take.items():
        by_block.setdefault(b, []).append(v)
        by_region.setdefault(r, []).append((v, int(sizes[b]) // g))
    for vs in by_block.values():
        model.AddAtMostOne(vs)
    for r, vs in by_region.items():
        model.Add(sum(v * u for v, u in vs) <= int(free[r]) // g)
    model.Maximize(sum(v * (int(sizes[b]) // g) for (b, _), v in take.items()))
    solver, status = cpsat_run.solve(model, time_limit_s)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return float(sum(int(sizes[b]) for b in by_block))
    return float(np.floor(solver.BestObjectiveBound() + 1e-6)) * g


# Moments (the highest by the flow) at which region_fit_bound packs whole blocks.
PACK_MOMENTS = 4
# Subset sums are taken over at most this many units (of the sizes' gcd) per region.
SUBSET_MAX_UNITS = 1 << 16


def _packable(ids: np.ndarray, sizes: np.ndarray, fits: np.ndarray, free: np.ndarray,
              sums: dict) -> np.ndarray:
    """Per region, its free bytes at a moment lowered to the most that some
    of the blocks live then that fit it sum to (blocks in a region at one
    moment are disjoint, so this is still an upper bound on what it takes):
    a 2.25 MiB region among blocks of 1, 2 and 4 MiB takes 2 MiB, where
    the flow alone would fill it with bytes of a block it cannot hold
    (unet small: 89.5 vs the placed 91.0 MiB).  A bitset subset sum over
    the sizes' gcd; a region whose blocks fit together anyway, or whose
    units would pass SUBSET_MAX_UNITS, keeps its free bytes.  ``ids``: the
    blocks' own numbers, ``sums``: the sums found so far (by block set and
    free bytes)."""
    room = free.astype(np.float64).copy()
    usable = fits & (sizes[:, None] <= free[None, :])
    over = (sizes.astype(np.float64) @ usable) > free      # blocks that do not all fit
    for r in np.nonzero(over & (free > 0))[0].tolist():
        pick = usable[:, r]
        key = (ids[pick].tobytes(), float(free[r]))
        if key not in sums:
            many = Counter(sizes[pick].tolist())
            sums[key] = _subset_sum(np.fromiter(many, dtype=np.int64),
                                    np.fromiter(many.values(), dtype=np.int64), int(free[r]))
        room[r] = min(room[r], sums[key])
    return room


def _subset_sum(kinds: np.ndarray, counts: np.ndarray, cap: int) -> float:
    """The most that some of ``counts[i]`` blocks of ``kinds[i]`` bytes sum
    to without passing ``cap`` (``cap`` itself where the units are too many
    to tell).  Equal sizes go in as 1, 2, 4, ... of them (a bounded knapsack
    by binary splitting)."""
    got = 0                              # largest first: often ``cap`` at once
    for u, c in sorted(zip(kinds.tolist(), counts.tolist()), reverse=True):
        got += u * min(c, (cap - got) // u)
    if got == cap:
        return float(cap)
    g = int(np.gcd.reduce(kinds))
    units = cap // g
    if units > SUBSET_MAX_UNITS:
        return float(cap)
    mask, bits = (1 << (units + 1)) - 1, 1
    full = 1 << units
    for u, c in zip((kinds // g).tolist(), counts.tolist()):
        k = 1
        while c > 0:
            take = min(k, c)
            bits |= (bits << (u * take)) & mask
            c -= take
            k *= 2
        if bits & full:
            return float(cap - cap % g)
    return float((bits.bit_length() - 1) * g)


# Moments (by each figure) at which region_fit_bound solves the flow.
FLOW_MOMENTS = 16


def _flow_out(sizes: np.ndarray, fits: np.ndarray, free: np.ndarray) -> float:
    """Most bytes of blocks (``sizes``, ``fits`` per region) that the
    regions' ``free`` bytes can take, split as they may (a max-flow)."""
    from ortools.graph.python import max_flow
    b_idx, r_idx = np.nonzero(fits & (free[None, :] > 0))
    if not len(b_idx):
        return 0.0
    n, R = len(sizes), len(free)
    source, sink = n + R, n + R + 1
    blocks = np.unique(b_idx)
    regions = np.unique(r_idx)
    tails = np.concatenate([np.full(len(blocks), source), b_idx, n + regions]).astype(np.int32)
    heads = np.concatenate([blocks, n + r_idx, np.full(len(regions), sink)]).astype(np.int32)
    caps = np.concatenate([sizes[blocks], sizes[b_idx], free[regions]]).astype(np.int64)
    smf = max_flow.SimpleMaxFlow()
    smf.add_arcs_with_capacity(tails, heads, caps)
    if smf.solve(source, sink) != smf.OPTIMAL:
        return float(free.sum())      # no flow figure: the plain relaxation
    return float(smf.optimal_flow())


def _widest_gap(region, occupants, row: np.ndarray, alignment: int) -> int:
    """The most bytes one block can take in ``region`` at an aligned offset,
    clear of the occupants ``row`` marks."""
    top, best = 0, 0
    for lo, hi in sorted((occupants[j].offset, occupants[j].offset + occupants[j].size)
                         for j in np.nonzero(row)[0].tolist()):
        best = max(best, lo - -(-top // alignment) * alignment)
        top = max(top, hi)
    return max(best, region.capacity - -(-top // alignment) * alignment)
