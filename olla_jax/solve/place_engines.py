"""Exact placement engines: CP-SAT (NoOverlap2D) and OLLA's location ILP (python-mip).

Both work in units of the alignment: a block at aligned byte offset ``A*x``
with ``s`` bytes ends below an aligned ``A*y`` iff ``x + ceil(s/A) <= y``, so
rounding sizes up is exact between blocks.  Region capacities are exact
(``A*x + s <= cap``); an occupant at an unaligned offset is rounded outwards,
which can only forbid placements.  The arena peak is minimised in bytes.
Both start from (and are bounded by) a hint and never return anything worse.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import time

from olla_jax.errors import OllaJaxError
from olla_jax.solve import cpsat_run
from olla_jax.solve.isolated import ChildFailed, run_isolated
from olla_jax.solve.place_model import BlockModel
from olla_jax.solve.problem import ARENA, Placement


class EngineFailure(OllaJaxError, RuntimeError):
    """An exact engine crashed (CBC has been seen to abort in its preprocessing)."""


@dataclasses.dataclass(frozen=True)
class _Units:
    """What both engines need, in alignment units."""
    size: list[int]                  # ceil(bytes / A) per block
    places: list[list[int]]          # per block: ARENA and the regions it fits in
    limit: list[dict[int, int]]      # per block, per place: highest offset unit allowed
    ub: int                          # arena upper bound in bytes (the hint's)


def _units(model: BlockModel, hint_arena: int) -> _Units:
    a = model.alignment
    sizes, places, limits = [], [], []
    for b, block in enumerate(model.blocks):
        sizes.append(-(-block.size // a))
        lim = {ARENA: max(0, (hint_arena - block.size) // a)}
        for r, region in enumerate(model.problem.regions):
            if model.fits_region(b, r):
                lim[r] = (region.capacity - block.size) // a
        places.append(list(lim))
        limits.append(lim)
    return _Units(sizes, places, limits, hint_arena)


def _occupant_units(lo: int, hi: int, a: int) -> tuple[int, int]:
    return lo // a, -(-hi // a)


def _free_units(model: BlockModel, b: int, r: int, top: int) -> list[tuple[int, int]]:
    """Offsets (in units, inclusive ranges) at which block ``b`` fits in region
    ``r``: below ``top`` (the highest unit allowed there) and clear of every
    occupant live at any time during the block's life.  Occupants are fixed and
    a block keeps one offset all its life, so they only narrow its domain."""
    a, size = model.alignment, model.blocks[b].size
    spans = sorted(_occupant_units(lo, hi, a) for lo, hi in model.occupied[r][b])
    free, x = [], 0
    for lo, hi in spans + [(top + -(-size // a) + 1, None)]:
        last = min(top, (lo * a - size) // a)      # highest unit ending at or below lo
        if last >= x:
            free.append((x, last))
        if hi is not None:
            x = max(x, hi)
    return free


_PRESOLVE_MAX_OPTIONAL = 10_000

# The share of solve_cpsat's limit its model build may take.  The build costs
# about the same per (block, place) option, and on remat's placement problem
# (1,001 blocks x 302 regions, 139k options) it alone took 16-25 s, so a 5 s
# limit ran 16 s.
_BUILD_SHARE = 0.4


class _RegionCap:
    """Bounds solve_cpsat's model build: every few blocks it projects the
    build's end from the seconds spent per option so far, and where that
    passes ``budget_s`` it offers each later block fewer regions (always the
    arena and the hint's place, so the hint stays a solution; then the first
    ``k`` that fit, ``k`` what the rest of the budget affords)."""

    def __init__(self, t0: float, budget_s: float, places: list[list[int]]):
        self.t0, self.budget_s, self.all = t0, budget_s, places
        self.after = list(itertools.accumulate((len(p) for p in reversed(places)), initial=0))[::-1]
        self.done = 0                  # options offered so far
        self.k: int | None = None      # regions offered per block beyond the hint's; None: all

    def places(self, b: int, hinted: int) -> list[int]:
        if b and b % 16 == 0 and self.done:
            spent = time.perf_counter() - self.t0
            per = spent / self.done
            rest = self.after[b] if self.k is None else 0          # options of blocks b..
            if self.k is not None or spent + per * rest > self.budget_s:
                afford = max(0.0, self.budget_s - spent) / per / max(1, len(self.all) - b)
                k = max(0, int(afford) - 2)
                self.k = k if self.k is None else min(self.k, k)
        mine = self.all[b]
        if self.k is not None and len(mine) > self.k + 2:
            keep = {ARENA, hinted}
            mine = [p for p in mine if p in keep] + [p for p in mine if p not in keep][:self.k]
        self.done += len(mine)
        return mine


def solve_cpsat(model: BlockModel, hint: Placement, time_limit_s: float,
                lower_bound: int = 0) -> Placement | None:
    """Minimise the arena with CP-SAT; None when it found nothing.

    One NoOverlap2D (time x units) per place, over only the blocks that can use
    it: a region is offered to a block only where some offset clears every
    occupant of its life, and the occupants themselves enter as domains."""
    t0 = time.perf_counter()                # the first import of OR-Tools costs ~1 s
    from ortools.sat.python import cp_model

    a = model.alignment
    u = _units(model, hint.arena_size)
    hint_region, hint_offset = model.from_placement(hint)
    cap = _RegionCap(t0, _BUILD_SHARE * time_limit_s, u.places)
    m = cp_model.CpModel()
    peak = m.new_int_var(lower_bound, max(lower_bound, hint.arena_size), "peak")
    m.add_hint(peak, max(lower_bound, hint.arena_size))
    boxes: dict[int, tuple[list, list]] = {}            # place -> (x intervals, y intervals)
    choice: list[dict[int, tuple]] = []
    optional = 0                                        # rectangles present only if a place is chosen
    for b, block in enumerate(model.blocks):
        if block.size == 0:
            choice.append({})
            continue
        domains = {ARENA: [(0, u.limit[b][ARENA])]}
        for place in cap.places(b, hint_region[b]):
            if place != ARENA:
                free = _free_units(model, b, place, u.limit[b][place])
                if free:
                    domains[place] = free
        options = {}
        lits = []
        single = len(domains) == 1
        for place, free in domains.items():
            lit = None if single else m.new_bool_var(f"p{b}_{place}")
            x = m.new_int_var_from_domain(cp_model.Domain.from_intervals(free), f"x{b}_{place}")
            xs, ys = boxes.setdefault(place, ([], []))
            if single:
                y = m.new_fixed_size_interval_var(x, u.size[b], f"y{b}")
                xs += [m.new_fixed_size_interval_var(s, e - s + 1, f"t{b}_{s}") for s, e in block.segments]
            else:
                y = m.new_optional_fixed_size_interval_var(x, u.size[b], lit, f"y{b}_{place}")
                xs += [m.new_optional_fixed_size_interval_var(s, e - s + 1, lit, f"t{b}_{place}_{s}")
                       for s, e in block.segments]
                optional += len(block.segments)
            ys += [y] * len(block.segments)
            if place == ARENA:
                ct = m.add(peak >= a * x + block.size)
                if not single:
                    ct.only_enforce_if(lit)
            options[place] = (lit, x)
            hinted = hint_region[b] == place
            if not single:
                lits.append(lit)
                m.add_hint(lit, hinted)
            m.add_hint(x, hint_offset[b] // a if hinted else free[0][0])
        if lits:
            m.add_exactly_one(lits)
        choice.append(options)
    for xs, ys in boxes.values():
        if len(xs) > 1:
            m.add_no_overlap_2d(xs, ys)
    m.minimize(peak)
    left = time_limit_s - (time.perf_counter() - t0)
    if left <= 0.05:
        return None             # loading the model alone would outlast the limit
    # Probing the region literals of a few hundred blocks can outlast the
    # whole limit (seen on every suite model), leaving no time to search.
    # Presolve pays on arena-only models (random buffers without regions end
    # closer to the live-bytes bound with it), but on 63k optional rectangles
    # (400 blocks x 157 regions, the test of that name) it alone outlasted 5 s.
    solver, status = cpsat_run.solve(m, left, workers=min(8, os.cpu_count() or 1),
                                     cp_model_probing_level=0, symmetry_level=0,
                                     cp_model_presolve=optional <= _PRESOLVE_MAX_OPTIONAL)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return None
    region, offset = [ARENA] * len(model.blocks), [0] * len(model.blocks)
    for b, options in enumerate(choice):
        for place, (lit, x) in options.items():
            if lit is None or solver.boolean_value(lit):
                region[b], offset[b] = place, solver.value(x) * a
    return model.to_placement(region, offset)


def solve_ilp(model: BlockModel, hint: Placement, time_limit_s: float, solver_name: str = "CBC",
              lower_bound: int = 0) -> Placement | None:
    """OLLA's location ILP, solved in a child process.

    python-mip's bundled CBC and OR-tools ship different builds of the same
    COIN-OR libraries under one soname (libOsi.so.0): whichever loads second in a
    process fails.  A spawned child that never imports OR-tools keeps both usable.
    """
    # The child's start-up, model build and solve all come out of the limit: it
    # stops building at the deadline (wall clock, shared with the child), and
    # one that overruns anyway is killed (None: the caller keeps its hint).
    deadline = time.time() + time_limit_s
    try:
        return run_isolated(__name__, "_solve_ilp_here", model, hint, time_limit_s, solver_name,
                            lower_bound, deadline=deadline,
                            timeout_s=_CHILD_GRACE * time_limit_s + 0.1)
    except ChildFailed as err:
        raise EngineFailure(f"the {solver_name} ILP: {err}") from None


_CHILD_GRACE = 1.05  # the child is killed this many times its limit after its start


def _solve_ilp_here(model: BlockModel, hint: Placement, time_limit_s: float, solver_name: str,
                    lower_bound: int, deadline: float | None = None) -> Placement | None:
    """OLLA's location ILP: an integer offset per block, one binary per pair of
    blocks live at the same time (pairs that never are need none), big-M
    non-overlap in every place both may use, minimise the arena peak.
    ``deadline`` (time.time()): None when the model is not built by then."""
    if deadline is None:
        deadline = time.time() + time_limit_s
    import mip

    a = model.alignment
    u = _units(model, hint.arena_size)
    hint_region, hint_offset = model.from_placement(hint)
    big = max([u.ub // a + 1] + [r.capacity // a + 1 for r in model.problem.regions]) + max(u.size, default=0)
    m = mip.Model(sense=mip.MINIMIZE, solver_name=solver_name)
    m.verbose = 0
    m.threads = min(8, os.cpu_count() or 1)
    peak = m.add_var("peak", lb=lower_bound, ub=max(lower_bound, hint.arena_size))
    start: list[tuple] = [(peak, hint.arena_size)]
    x, z = [], []
    for b, block in enumerate(model.blocks):
        if block.size == 0:
            x.append(None)
            z.append({})
            continue
        xb = m.add_var(f"x{b}", var_type=mip.INTEGER, lb=0, ub=max(u.limit[b].values()))
        x.append(xb)
        start.append((xb, hint_offset[b] // a))
        zb = {}
        if len(u.places[b]) == 1:
            zb = {u.places[b][0]: 1}
        else:
            for place in u.places[b]:
                zb[place] = m.add_var(f"z{b}_{place}", var_type=mip.BINARY)
                start.append((zb[place], int(hint_region[b] == place)))
            m += mip.xsum(zb.values()) == 1
        z.append(zb)
        for place, zv in zb.items():
            m += xb <= u.limit[b][place] + big * (1 - zv)
            if place == ARENA:
                m += peak >= a * xb + block.size - a * big * (1 - zv)
            else:
                for k, (lo, hi) in enumerate(model.occupied[place][b]):
                    below = (lo - block.size) // a   # highest offset ending at or below lo
                    above = -(-hi // a)
                    q = m.add_var(f"q{b}_{place}_{k}", var_type=mip.BINARY)
                    m += xb <= below + big * (1 - q) + big * (1 - zv)
                    m += xb >= above - big * q - big * (1 - zv)
                    hinted_below = hint_offset[b] + block.size <= lo
                    start.append((q, int(hinted_below)))
    for i, conf in enumerate(model.conflicts):
        if x[i] is None:
            continue
        for j in conf.tolist():
            if j <= i or x[j] is None:
                continue
            shared = [p for p in z[i] if p in z[j]]
            if not shared:
                continue
            if len(start) % 512 == 0 and time.time() >= deadline:
                return None                 # the model alone outlasts the limit
            y = m.add_var(f"y{i}_{j}", var_type=mip.BINARY)   # 1: i below j
            start.append((y, int(hint_offset[i] < hint_offset[j])))
            for p in shared:
                off = big * (2 - z[i][p] - z[j][p])
                m += x[i] + u.size[i] <= x[j] + big * (1 - y) + off
                m += x[j] + u.size[j] <= x[i] + big * y + off
    m.objective = mip.minimize(peak)
    m.start = [(v, float(val)) for v, val in start if isinstance(v, mip.Var)]
    left = deadline - time.time()
    if left <= 0.05:
        return None
    m.optimize(max_seconds=left)
    if m.num_solutions == 0:
        return None
    region, offset = [ARENA] * len(model.blocks), [0] * len(model.blocks)
    for b in range(len(model.blocks)):
        if x[b] is None:
            continue
        for place, zv in z[b].items():
            if zv.x >= 0.5 if isinstance(zv, mip.Var) else zv == 1:
                region[b] = place
        offset[b] = int(round(x[b].x)) * a
    return model.to_placement(region, offset)
