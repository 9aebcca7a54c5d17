"""The solve strategy: which engines run on a graph, in which order, and how
they share the time limit.

``solve_graph`` is the solve stage of ``olla_jax.plan`` (capture -> graph ->
*solve* -> check -> apply): it takes a ``graph.model.ScheduleGraph`` and hands
back a ``Solution`` (a ``graph.layout.Layout`` and a proven lower bound).  The
engines themselves live in ``olla_jax.solve`` and know nothing of the graph;
this module is where the graph's problems meet them.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Sequence

from absl import logging

from olla_jax.graph import layout as layout_lib
from olla_jax.graph import model
from olla_jax.solve import problem as sp

# How solve_graph shares the time limit (fractions), then the floors in seconds
# that keep a step worth running when the limit is short.
JOINT_WARM_START_SHARE = 0.4   # engine="joint": the separate search warm-starting the joint model
ORDER_SEARCH_SHARE = 0.5       # of the search limit: the order searches, all objectives together
ORDER_FLOOR_SHARE = 0.25       # of one objective's share: the min-cut floor for its order search
BOUND_SHARE = 0.15             # of the search limit: the lower bounds after the order search
RESIDENT_BOUND_SHARE = 0.5     # of the bounds' time: the resident floor (threshold min-cuts: the rest)
PLACE_CANDIDATES_SHARE = 0.85  # of the search limit: no more candidate orders placed past it
SINK_SHARE = 0.25              # of the time to the deadline: sink moves on a deferred order
EXACT_PLACEMENT_SHARE = 0.6    # of the time left at the end: the exact placement engine

ORDER_SEARCH_FLOOR_S = 0.5     # the least one objective's order search, and its min-cut floor, get
BOUNDS_FLOOR_S = 1.0           # the least the lower bounds get together
BOUND_PROBLEM_FLOOR_S = 0.2    # the least one threshold problem's min-cut bound gets
SINK_MIN_S = 0.5               # no sink moves with less than this to the deadline
EXACT_PLACEMENT_MIN_S = 2.0    # no exact placement with this or less of the limit left
JOINT_FLOOR_S = 1.0            # the least the joint model gets


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One order and its placement, as ``solve_graph``'s steps hand them on:
    ``source`` names what produced the order ("xla", "list", an engine, with
    "+deferred", "+sunk" when moved after), ``owners`` and ``problem`` are what
    ``graph.placement_problem(order)`` returned for it."""
    order: tuple[int, ...]
    source: str
    placement: sp.Placement
    owners: tuple[int, ...]   # per interval of ``problem``, the graph's unit id
    problem: sp.PlacementProblem


@dataclasses.dataclass(frozen=True)
class Solution:
    """The best order and placement found for a graph, and what bounds it."""
    layout: layout_lib.Layout
    lower_bound_bytes: int     # proven for every order and placement of the model
    engine: str                # what produced the order ("xla" when XLA's order won)


def solve_graph(graph: model.ScheduleGraph, *, warm_starts: Sequence[Sequence[int]] = (),
                time_limit_s: float = 30.0, engine: str = "auto", seed: int = 0,
                progress=None) -> Solution:
    """Order and placement for a scheduling graph, with a lower bound.

    Orders are searched under several objectives: arena live bytes less idle
    output space (a relaxation that favours writing outputs late, so their
    allocations can hold temporaries first), the same seen from units larger
    than a threshold (only regions at least their size can hold them), and
    arena live bytes alone.  The placement of each candidate order, XLA's
    included, decides.  ``progress``: a callable taking ``olla_jax.progress.Progress``
    snapshots (or a ``progress.Reporter``)."""
    from olla_jax import progress as progress_lib
    from olla_jax.solve import bounds, place as place_lib
    from olla_jax.solve import order as order_lib

    report = progress_lib.reporter(progress, time_limit_s)

    def order_progress(msg: str) -> None:
        logging.info("order search: %s", msg)
        report("order search", msg)

    t0 = time.monotonic()
    joint = engine == "joint"
    if joint:   # a short separate search warm-starts the joint model, which gets the rest
        engine, search_limit_s = "auto", JOINT_WARM_START_SHARE * time_limit_s
    else:
        search_limit_s = time_limit_s
    starts = [tuple(s) for s in warm_starts] or [graph.xla_order]
    with_regions = graph.order_problem()
    orders = {s: "xla" for s in starts}
    problems = [with_regions]
    if with_regions.region_sizes:
        # Also search as seen from the units larger than a few region sizes
        # (only big regions can hold big units), and with no parking at all.
        caps = sorted(set(with_regions.region_sizes))
        for q in (0.5, 0.9, 1.0):
            problems.append(graph.threshold_problem(caps[round(q * (len(caps) - 1))]))
        problems.append(dataclasses.replace(with_regions,
                                            region_sizes=tuple(0 for _ in with_regions.region_sizes)))
    for k, problem in enumerate(problems):
        share = ((ORDER_SEARCH_SHARE * search_limit_s - (time.monotonic() - t0))
                 / (len(problems) - k))
        floor = bounds.min_cut_bound(problem, time_limit_s=max(ORDER_SEARCH_FLOOR_S,
                                                                    ORDER_FLOOR_SHARE * share),
                                     orders=starts).value
        result = order_lib.solve_order(problem, warm_starts=starts, time_limit_s=max(ORDER_SEARCH_FLOOR_S, share),
                                       engine=engine, seed=seed, lower_bound=floor,
                                       progress=order_progress)
        orders.setdefault(tuple(result.order), result.engine)
    # The memory-aware list schedule on its own: cheap, and its best-fit placement
    # sometimes beats orders that score better on the order objectives.
    from olla_jax.solve import list_schedule
    orders.setdefault(tuple(list_schedule.best_list_schedule(with_regions).order), "list")
    bound_deadline = time.monotonic() + max(BOUNDS_FLOOR_S, BOUND_SHARE * search_limit_s)
    # What must be resident at one step whatever the order (loop bodies
    # included) and the last output writer's need: the min-cut's floor, and
    # the bound where the relaxation degenerates (a step inside one while;
    # outputs whose idle space it counts as free for every unit).
    from olla_jax.graph import resident
    floor_found = resident.floor_bound(
        graph,
        deadline=time.monotonic() + RESIDENT_BOUND_SHARE * (bound_deadline - time.monotonic()))
    logging.info("resident bound %d bytes (%d steps solved)", floor_found.value,
                 floor_found.evaluated)
    value = floor_found.value
    # Each is a valid bound on the arena (see ScheduleGraph.bound_problems); the largest holds.
    # The largest threshold first (few units, often the strongest: what it
    # proves lets the others skip every node that cannot beat it), then the
    # plain relaxation, then the rest, largest first, while the bound's share of
    # the limit lasts: any subset of these bounds is a bound, only maybe weaker.
    ascending = graph.bound_problems()
    bound_problems = [ascending[-1], *ascending[:1], *ascending[-2:0:-1]][:len(ascending)]
    solved = 0
    for k, problem in enumerate(bound_problems):
        left = bound_deadline - time.monotonic()
        if k >= 2 and left <= 0:
            break
        value = max(value, bounds.min_cut_bound(
            problem, time_limit_s=max(BOUND_PROBLEM_FLOOR_S, left / (len(bound_problems) - k)),
            orders=list(orders), floor=value).value)
        solved += 1
    logging.info("lower bound %d bytes (%d of %d threshold problems), %.1f s into the search",
                 value, solved, len(bound_problems), time.monotonic() - t0)
    report("lower bound", bound=value)
    best = None
    # Best-fit of the candidate orders (the ranking needs real placements):
    # the first searched order, the list schedule's, the other searched orders
    # in the order their objectives were tried, XLA's last (XLA's own placement of its order is the baseline anyway); stop at
    # the time limit once one is placed.  The exact engine only for the best.
    searched = [o for o, src in orders.items() if src not in ("xla", "list")]

    def rank(item):
        order, src = item
        return 3 if src == "xla" else 1 if src == "list" else 0 if order == searched[0] else 2
    ranked = sorted(orders.items(), key=rank)
    for order, source in ranked:
        if best is not None and time.monotonic() - t0 > PLACE_CANDIDATES_SHARE * search_limit_s:
            logging.info("time limit: %d candidate orders not placed", len(ranked) - ranked.index(
                (order, source)))
            break
        pp, owners = graph.placement_problem(order)
        placement = place_lib.best_fit(pp, deadline=t0 + search_limit_s)
        logging.info("placement under the %s order: %d bytes", source, placement.arena_size)
        report("placement", f"{source} order", best=placement.arena_size)
        if best is None or placement.arena_size < best.placement.arena_size:
            best = Candidate(order, source, placement, owners, pp)
    if best.placement.arena_size > value:
        best = _defer_outputs(graph, with_regions, best, deadline=t0 + search_limit_s)
    if best.placement.arena_size > value and "defer" in best.source:
        best = _sink_deferred(graph, with_regions, best, deadline=t0 + search_limit_s)
    if time.monotonic() > t0 + PLACE_CANDIDATES_SHARE * search_limit_s:
        # A deadline may have cut the chosen order's best-fit to fewer sort
        # orders (densenet lost 3% so); all of them take a second or so.
        best = dataclasses.replace(best, placement=min(
            best.placement, place_lib.best_fit(best.problem), key=lambda p: p.arena_size))
    if joint:
        best = _joint(graph, best, time_limit_s - (time.monotonic() - t0), seed)
    order, source, placement, owners, pp = (best.order, best.source, best.placement,
                                            best.owners, best.problem)
    remaining = time_limit_s - (time.monotonic() - t0)
    if placement.arena_size > value and remaining > EXACT_PLACEMENT_MIN_S:
        # The exact model warm-starts from the best-fit placement found above;
        # building it takes time of its own, hence the share of what is left.
        exact = place_lib.place_exact(pp, time_limit_s=EXACT_PLACEMENT_SHARE * remaining,
                                      hint=placement)
        if exact.arena_size < placement.arena_size:
            placement = exact
    layout = layout_lib.realize(graph, order, placement, owners)
    report("placement", "done", best=layout.temp_bytes)
    return Solution(layout=layout, lower_bound_bytes=min(value, layout.temp_bytes), engine=source)


def _sink_deferred(graph: model.ScheduleGraph, problem: sp.OrderProblem, best: Candidate, *,
                   deadline: float) -> Candidate:
    """Sink moves (``solve.sink``) on an order whose output writers were just
    deferred: the writers' operands now wait for them and can often be made
    later too; placed by best-fit, kept when better."""
    from olla_jax.solve import place as place_lib
    from olla_jax.solve import sink
    from olla_jax.solve.dag import Dag
    from olla_jax.solve.evaluate import Evaluator

    order, source, placement = best.order, best.source, best.placement
    if deadline - time.monotonic() < SINK_MIN_S:    # no time left for sinking and a best-fit
        return best
    budget = SINK_SHARE * (deadline - time.monotonic())
    moved = sink.improve(Evaluator(problem), Dag.of(problem), order,
                         deadline=time.monotonic() + budget)
    if moved == order:
        return best
    pp, owners = graph.placement_problem(moved)
    trial = place_lib.best_fit(pp)
    logging.info("placement after sink moves on the deferred order: %d bytes", trial.arena_size)
    if trial.arena_size < placement.arena_size:
        return Candidate(moved, f"{source}+sunk", trial, owners, pp)
    return best


def _defer_outputs(graph: model.ScheduleGraph, problem: sp.OrderProblem, best: Candidate, *,
                   deadline: float) -> Candidate:
    """The best order with output writers moved later (``solve.defer``), each
    variant placed by best-fit; the best placement wins.  At least one variant
    is tried; the rest while ``deadline`` allows."""
    import bisect

    from olla_jax.solve import defer
    from olla_jax.solve import place as place_lib

    order, source, placement, pp = best.order, best.source, best.placement, best.problem
    writers = defer.output_writers(problem)
    if not writers:
        return best
    layout = graph.flat_layout(order)
    starts = [layout[n] for n in order]
    peak = order[bisect.bisect_right(starts, defer.arena_peak_step(pp, placement)) - 1]
    for k, chosen in enumerate(defer.deferral_sets(writers, order, peak)):
        if k and time.monotonic() > deadline:
            break
        moved = defer.defer(problem, order, chosen)
        moved_pp, moved_owners = graph.placement_problem(moved)
        moved_placement = place_lib.best_fit(moved_pp, deadline=deadline)
        logging.info("placement with %d output writers deferred: %d bytes", len(chosen),
                     moved_placement.arena_size)
        if moved_placement.arena_size < best.placement.arena_size:
            best = Candidate(moved, f"{source}+deferred", moved_placement, moved_owners, moved_pp)
    return best


def _joint(graph: model.ScheduleGraph, best: Candidate, time_limit_s: float, seed: int) -> Candidate:
    """The joint order-and-placement model, warm-started from ``best``; ``best``
    itself unless the joint model finds a valid plan with a smaller arena."""
    from olla_jax.solve import isolated, joint, place_check
    order, placement = best.order, best.placement
    reason = joint.unsupported(graph)
    if reason:
        logging.info("joint engine skipped: %s", reason)
        return best
    hint = joint.hull_hint(graph, order)
    limit = max(JOINT_FLOOR_S, time_limit_s)
    try:   # in a child: a solver abort must not take the user's process with it
        found = isolated.run_isolated("olla_jax.solve.joint", "solve_joint", graph,
                                      hint_order=tuple(order), hint_places=hint,
                                      time_limit_s=limit, seed=seed, timeout_s=limit + 60)
    except isolated.ChildFailed as err:
        logging.warning("joint engine failed: %s", err)
        return best
    if found is None:
        return best
    try:
        place_check.validate_placement(found.problem, found.placement)
    except ValueError as err:  # the model and the placement problem disagree: keep ours
        logging.warning("joint engine returned an invalid placement: %s", err)
        return best
    logging.info("joint engine: arena %d (separate: %d), bound %d, optimal %s",
                 found.placement.arena_size, placement.arena_size, found.bound, found.optimal)
    if found.placement.arena_size < placement.arena_size:
        return Candidate(found.order, "joint", found.placement, found.owners, found.problem)
    return best
