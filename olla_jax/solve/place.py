"""Placement for fixed lifetimes: ``PlacementProblem`` -> ``Placement``.

``place`` runs the greedy best-fit, then an exact engine while the arena is
above the live-bytes bound and time remains, and checks what it returns.
Engines: "canonical" (search over canonical placements of the arena, under
the hint's region choices and, where blocks may use regions, those of
greedy region-class choices and of best-fit's sort orders, each improved
by moving blocks live at the arena's peak into regions), "cpsat", "ilp-cbc", "ilp-highs", and
"auto" (the default: canonical, then CP-SAT where regions may be used).
"""

from __future__ import annotations

import time
import warnings

from olla_jax.solve import place_classes
from olla_jax.solve.place_canonical import solve_canonical
from olla_jax.solve.place_check import live_bytes_bound, validate_placement
from olla_jax.solve.place_engines import EngineFailure, solve_cpsat, solve_ilp
from olla_jax.solve.place_greedy import SORT_ORDERS, best_fit, best_fit_model
from olla_jax.solve.place_model import build_model
from olla_jax.solve.place_regions import arena_profile, improve_regions
from olla_jax.solve.problem import ARENA, Placement, PlacementProblem

__all__ = ["ENGINES", "SORT_ORDERS", "best_fit", "live_bytes_bound", "place", "place_exact",
           "validate_placement"]

ENGINES = ("canonical", "cpsat", "ilp-cbc", "ilp-highs")


def place_exact(problem: PlacementProblem, *, time_limit_s: float, engine: str = "auto",
                hint: Placement | None = None, target: int | None = None,
                floor: int | None = None, best_fit_s: float = 0.0) -> Placement:
    """Minimise the arena with an exact engine ("canonical", "cpsat", "ilp-cbc",
    "ilp-highs"), warm-started from ``hint`` (best_fit when None); never worse
    than the hint.  With ``target``, an arena of at most ``target`` is enough
    (the canonical search then prunes with it from the start).  An engine that
    crashes leaves the hint, with a RuntimeWarning.  ``floor``: a lower bound
    on the arena the caller knows (e.g. ``place_check.region_fit_bound``,
    often above the live-bytes bound where blocks may use regions): the
    search ends on reaching it instead of trying to prove it.

    ``auto`` (the default): the canonical search, which places the arena
    under a few region choices it does not search exhaustively (the hint's,
    best-fit's, improved at the arena's peak); where some block could use a region
    (an idle output allocation), it gets 3/4 of the time and CP-SAT, which
    also moves blocks between regions and the arena, the rest from its
    result.  ``best_fit_s``: what one best-fit sort order is known to cost
    on this problem (the canonical engine starts none it cannot finish; a
    model build's time is taken when 0)."""
    if engine == "auto":
        return _place_auto(problem, time_limit_s=time_limit_s, hint=hint, target=target,
                           floor=floor)
    if engine not in ENGINES:
        raise ValueError(f"unknown placement engine {engine!r}: use 'auto' or one of {ENGINES}")
    t0 = time.perf_counter()
    model = build_model(problem)
    built = time.perf_counter() - t0
    if hint is None:
        hint = best_fit_model(model)
    else:
        validate_placement(problem, hint)
    lower = max(live_bytes_bound(problem), floor or 0)
    if hint.arena_size <= max(lower, target or 0):
        return hint
    # The engine gets what the model build and the hint's check left of the limit.
    left = time_limit_s - (time.perf_counter() - t0)
    if left <= 0.02:
        return hint
    try:
        if engine == "canonical" and any(r.capacity > 0 for r in problem.regions):
            found = _regions_and_arena(problem, model, hint, left, lower, target, built,
                                       best_fit_s)
        elif engine == "canonical":
            found = solve_canonical(model, hint, left, stop=lower, target=target).placement
        elif engine == "cpsat":
            found = solve_cpsat(model, hint, left, lower)
        else:
            found = solve_ilp(model, hint, left, "CBC" if engine == "ilp-cbc" else "HiGHS", lower)
    except EngineFailure as err:
        warnings.warn(f"placement engine {engine} failed, keeping the hint: {err}", RuntimeWarning)
        return hint
    if found is None or found.arena_size >= hint.arena_size:
        return hint
    validate_placement(problem, found)
    return found


def place(problem: PlacementProblem, *, time_limit_s: float = 10.0, engine: str = "auto",
          target: int | None = None) -> Placement:
    """Best-fit, then an exact engine (``greedy``: none) if the arena is above
    the live-bytes bound and ``target`` and time allows (``auto``: see
    place_exact).  Always valid."""
    t0 = time.perf_counter()
    if engine not in ("auto", "greedy", *ENGINES):
        raise ValueError(f"unknown placement engine {engine!r}: use 'auto', 'greedy' or one of {ENGINES}")
    result = best_fit(problem)
    validate_placement(problem, result)
    goal = max(live_bytes_bound(problem), target or 0)

    def left() -> float:
        return time_limit_s - (time.perf_counter() - t0)
    if engine == "greedy" or left() <= 0.05 or result.arena_size <= goal:
        return result
    return place_exact(problem, time_limit_s=left(), engine=engine, hint=result, target=target)


# Where blocks may use regions, the canonical search's share before CP-SAT:
# on the placement problems of small example steps (benchmarks/placement_graphs.py)
# it lowered the arena where CP-SAT did not (densenet, gpt2).
_CANONICAL_SHARE_WITH_REGIONS = 0.75


def _place_auto(problem: PlacementProblem, *, time_limit_s: float, hint: Placement | None,
                target: int | None, floor: int | None = None) -> Placement:
    """place_exact's ``auto``: see there.  With a ``target`` and no region,
    the canonical search looks for a fit for 80% of the time and, failing
    that, lowers the arena in the rest (for the report)."""
    t0 = time.perf_counter()

    def left() -> float:
        return time_limit_s - (time.perf_counter() - t0)
    result = hint if hint is not None else best_fit(problem)
    goal = max(live_bytes_bound(problem), target or 0, floor or 0)
    if result.arena_size <= goal:
        if hint is not None:
            validate_placement(problem, hint)
        return result
    regions = any(r.capacity > 0 for r in problem.regions)
    share = _CANONICAL_SHARE_WITH_REGIONS if regions else 0.8 if target is not None else 1.0
    result = place_exact(problem, time_limit_s=share * left(), engine="canonical", hint=result,
                         target=target, floor=floor)
    if target is not None and not regions and result.arena_size > target and left() > 0.05:
        # No fit found: the rest of the time lowers the arena, for the report.
        result = place_exact(problem, time_limit_s=left(), engine="canonical", hint=result,
                             floor=floor)
    if regions and left() > 0.05 and result.arena_size > goal:
        result = place_exact(problem, time_limit_s=left(), engine="cpsat", hint=result,
                             target=target, floor=floor)
    return result


# Of the time left, what the region pass (place_regions.improve_regions) may
# take on the hint, the first start; it ends early when no move lowers the
# arena's peak, and the canonical search stops at once at that peak.  At
# 0.1, gpt2 with gradient accumulation (CPU, small, 1.4 s for the repair)
# kept best-fit's region choices, 10.00 MiB; its ejection chains need about
# 1.4 s there (loaded machine) to bring the peak to 8.75.
_IMPROVE_SHARE = 0.5
# ... when the hint is at most this many times the floor: a best-fit cut at
# its deadline (blocks stacked, 200 MiB on grad_accum at load 20) took
# _IMPROVE_SHARE of 1.5 s and lost to XLA's 15.06 MiB.
_NEAR = 2.0


# One best-fit sort order over a model takes about this many times the model's
# build: 9-13 on remat's placement problems (358 and 1,001 blocks) and on
# tests/solve/test_place_time_limit.py's; guessed as one build, a best-fit
# begun with 0.4 s left took 1.6 s, and a 5 s canonical search ran 6.2 s.
_GREEDY_PER_BUILD = 15.0


def _regions_and_arena(problem: PlacementProblem, model, hint: Placement, time_limit_s: float,
                       goal: int, target: int | None, built: float,
                       best_fit_s: float = 0.0) -> Placement:
    """The canonical arena search under several region choices: greedy
    class choices' (``_from_classes``, where the time allows), the hint's,
    then best-fit's under each sort order, each first improved by moving
    blocks live at the arena's peak into regions (place_regions), while time
    lasts; the best arena (never worse than the hint).  The canonical search
    keeps region choices, and on the examples they, not the arena, held the
    placement 3-8% above the order's live bytes.  ``model``: the problem's
    BlockModel, built in ``built`` seconds (or what one best-fit is known to cost:
    on vit small a sort order took 1.8 s beside a 0.16 s model, loaded, and a
    1.2 s budget ran 2.4 s)."""
    t0 = time.perf_counter()
    end = t0 + time_limit_s

    def left() -> float:
        return end - time.perf_counter()
    one = best_fit_s or _GREEDY_PER_BUILD * built   # one best-fit order's seconds, then measured
    horizon = max((blk.end for blk in model.blocks), default=-1) + 1
    best = hint
    peak = int(arena_profile(model, model.from_placement(hint)[0], horizon).max())
    if peak <= (1 + _REGIONS_SETTLED) * goal:
        # The hint's region choices already hold the arena's live bytes near
        # the floor: the arena search is what is left, and gets all the time.
        found = hint
        if hint.arena_size > max(peak, goal):
            found = solve_canonical(model, hint, left(), stop=max(goal, peak),
                                    target=target).placement
        if found.arena_size < hint.arena_size:
            validate_placement(problem, found)
            return found
        return hint
    # (its arena blocks' best-fit costs up to a whole one: none it cannot finish)
    if _CLASSES_SHARE * time_limit_s >= max(_CLASSES_PER_BUILD * built, 1.5 * best_fit_s):
        classed = _from_classes(problem, model, t0 + _CLASSES_SHARE * time_limit_s, goal,
                                target, settled_end=end)
        if classed is not None and classed.arena_size < best.arena_size:
            best = classed
            if best.arena_size <= max(goal, target or 0):
                return best
    starts = [None, *SORT_ORDERS]
    for k, order in enumerate(starts):
        if k and left() < 1.5 * one:   # a start: one best-fit, then its search
            break
        t = time.perf_counter()
        start = hint if order is None else best_fit_model(model, orders=(order,))
        if order is not None:
            one = max(best_fit_s, time.perf_counter() - t)
        # The hint's pass gets more, unless the hint is far above the floor
        # (a best-fit cut short: the next start's best-fit is worth more) or
        # within 1% of it (the arena search has more to win there).
        share = (_IMPROVE_SHARE if k == 0 and 1.01 * goal < start.arena_size <= _NEAR * goal
                 else 0.1)
        pass_end = time.monotonic() + share * max(0.0, left())
        start = _region_pass(problem, model, start, pass_end)
        cut = time.monotonic() >= pass_end     # moves may be left: see _resume_regions
        peak = int(arena_profile(model, model.from_placement(start)[0], horizon).max())
        if (order is not None or best is not hint) and peak >= best.arena_size:
            continue                       # its arena cannot go below its live peak
        # The hint's search keeps time for the other starts only when they
        # would get as much again (else it gets it all: a best-fit may cost
        # more than the whole budget).
        later = one * (len(starts) - 1)
        budget = (left() - later if left() > 2 * later else max(0.0, left())) if k == 0 \
            else left() / (len(starts) - k)
        found = start
        if budget > 0.01 and start.arena_size > max(peak, goal):
            found = solve_canonical(model, start, budget, stop=max(goal, peak), target=target).placement
        if k == 0 and cut:
            found = _resume_regions(problem, model, found, horizon, goal, target,
                                    end - left() / 2 if len(starts) > 1 else end, share)
        if found.arena_size < best.arena_size:
            validate_placement(problem, found)
            best = found
        if best.arena_size <= max(goal, target or 0) or left() <= 0:
            break
    return best


def _region_pass(problem: PlacementProblem, model, start: Placement, deadline: float) -> Placement:
    """``improve_regions`` on ``start`` by ``deadline`` (``time.monotonic()``),
    its moves checked as an engine's result is (``start`` kept if invalid)."""
    improved = improve_regions(model, start, deadline)
    if improved is not start:
        try:
            validate_placement(problem, improved)
            return improved
        except ValueError as err:
            warnings.warn(f"the region pass returned an invalid placement, keeping its "
                          f"start: {err}", RuntimeWarning)
    return start


def _resume_regions(problem: PlacementProblem, model, found: Placement, horizon: int, goal: int,
                    target: int | None, end: float, share: float) -> Placement:
    """The hint's region pass, cut at its deadline, resumed on ``found``
    while the arena search has brought the arena down to its region choices'
    live peak (only region moves lower it then) and the time before ``end``
    (``time.perf_counter()``) lasts: the pass (``share`` of what is left),
    then the arena search to the new peak.  Without it, a pass cut short (a
    short repair, a loaded machine) left the moves it had not made to the
    other starts, whose passes get a tenth of the time each from a fresh
    best-fit.  Never worse than ``found``."""
    while end - time.perf_counter() > 0.01:
        peak = int(arena_profile(model, model.from_placement(found)[0], horizon).max())
        if found.arena_size > max(peak, goal) or found.arena_size <= max(goal, target or 0):
            return found      # the arena search, not the regions, is what is left (or done)
        pass_end = time.monotonic() + share * (end - time.perf_counter())
        moved = _region_pass(problem, model, found, pass_end)
        if moved is found:
            return found      # no move lowers the peak: the pass is done
        cut = time.monotonic() >= pass_end
        peak = int(arena_profile(model, model.from_placement(moved)[0], horizon).max())
        if peak >= found.arena_size:
            return found
        left = end - time.perf_counter()
        if left > 0.01 and moved.arena_size > max(peak, goal):
            moved = solve_canonical(model, moved, left, stop=max(goal, peak),
                                    target=target).placement
        if moved.arena_size >= found.arena_size:
            return found
        validate_placement(problem, moved)
        found = moved
        if not cut:
            return found
    return found


# Where the hint's region choices leave the arena's live-bytes peak within
# this share of the floor, _regions_and_arena searches the arena alone: on
# densenet small's chosen order (CPU) the hint's choices held 52.93 MiB
# against a 52.78 floor, yet the starts from other region choices (class
# choices, best-fit's sort orders, each with its region pass) took all but
# a few tenths of a 1 s repair and the arena stayed at 55.33 (53.38 with
# the second given to the arena search).
_REGIONS_SETTLED = 0.005


# Of _regions_and_arena's time, what the start from class choices may take
# (it ends sooner when its arena search reaches its live peak): on gpt2 with
# gradient accumulation (CPU, small) the greedy, class start and region pass
# took 0.6 s and the arena search alone about 1 s to reach 8.50 MiB, where
# the other starts stopped at 9.00 (best-fit's region choices).
_CLASSES_SHARE = 0.6
# ... only when that share is at least this many times the model's build:
# on that step the greedy, class start and region pass took about 8 builds
# (0.08 s) unloaded; with less, the time they took left the other starts
# too little (10.25 MiB at a 1 s limit, where without them 9.00).
_CLASSES_PER_BUILD = 8.0
# ... the greedy's and the region pass's shares of that (the arena search the
# rest).  A greedy cut short leaves most blocks in the arena: no start then.
_GREEDY_SHARE = 0.3
_CLASS_PASS_SHARE = 0.15


def _from_classes(problem: PlacementProblem, model, end: float, goal: int,
                  target: int | None, settled_end: float | None = None) -> Placement | None:
    """A placement whose region choices start from class choices
    (``place_classes.greedy_classes``, placed by ``class_start``), improved
    by the region pass, and whose arena blocks are then placed on their own
    (best-fit and the canonical search on the arena's blocks alone: on the
    whole model, its region blocks kept, the search found nothing below
    best-fit's 9.00 MiB in 3 s where alone it reached the live peak, 8.50,
    in 1 s); by ``end`` (``time.perf_counter()``), checked; None when time
    is short or the start is invalid.  ``settled_end``: a later end for the
    arena search, taken when the region choices hold the arena's live bytes
    within _REGIONS_SETTLED of ``goal`` (the arena search is what is left)."""
    def left() -> float:
        return end - time.perf_counter()
    if left() <= 0.05:
        return None
    span = left()
    choice = place_classes.greedy_classes(problem,
                                          deadline=time.monotonic() + _GREEDY_SHARE * span)
    if choice.status != "GREEDY":
        return None       # cut short, most blocks are still in the arena: no start
    start = place_classes.class_start(problem, choice.classes, pack=False)
    start = improve_regions(model, start, time.monotonic() + _CLASS_PASS_SHARE * span)
    grouped = {i for members in problem.same_offset for i in members}
    arena = [i for i, r in enumerate(start.region) if r == ARENA and i not in grouped]
    if not arena:
        return None      # every block in a region: the other starts' region pass finds it
    sub = PlacementProblem(tuple(problem.intervals[i] for i in arena), (), problem.alignment)
    sub_model = build_model(sub)
    found = best_fit_model(sub_model)
    stop = max(goal, live_bytes_bound(sub))
    if settled_end is not None and stop <= (1 + _REGIONS_SETTLED) * goal:
        end = max(end, settled_end)
    if left() > 0.01 and found.arena_size > stop:
        # First with the stop as its target, for half the time: it prunes
        # from the start (on that step 0.5 s to the live peak, where without
        # it 1-4 s) but finds nothing when nothing fits under it.
        found = solve_canonical(sub_model, found, left() / 2, stop=stop,
                                target=max(stop, target or 0)).placement
    if left() > 0.01 and found.arena_size > stop:
        found = solve_canonical(sub_model, found, left(), stop=stop, target=target).placement
    offset = list(start.offset)
    for k, i in enumerate(arena):
        offset[i] = found.offset[k]
    # Same-offset groups left in the arena (their members' lives are apart:
    # the search above would take each as one block over their union, and on
    # that step two such groups of a few bytes kept it from the live peak)
    # go on top.
    top, a = found.arena_size, problem.alignment
    for members in problem.same_offset:
        if members and start.region[members[0]] == ARENA:
            top = -(-top // a) * a
            for i in members:
                offset[i] = top
            top += max(problem.intervals[i].size for i in members)
    result = Placement(start.region, tuple(offset), -(-top // a) * a)
    try:
        validate_placement(problem, result)
    except ValueError as err:
        warnings.warn(f"the start from class choices is invalid, dropped: {err}", RuntimeWarning)
        return None
    return result
