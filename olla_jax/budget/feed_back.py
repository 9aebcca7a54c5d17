"""The budget entry points: plan, check, rewrite and verify; and XLA's remat side by side."""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Collection, Sequence

from absl import logging

from olla_jax import checked
from olla_jax import flops as flops_lib
from olla_jax.capture.base import Backend
from olla_jax.graph.layout import recompute_count, xla_layout
from olla_jax.result import warn
from olla_jax.budget import body, body_model, body_placed
from olla_jax.budget.candidates import (candidates, check_cost, check_producers,
                                        of_producers, screen)
from olla_jax.budget.recompute_plan import RecomputePlan, fit_orders, new_state, plan_of
from olla_jax.budget.timed_search import search
from olla_jax.budget.floors import working_set_bound, working_set_text
from olla_jax.sizes import size_text


# The least left for the recomputation search after its candidates, as a
# share of what they took (the search's problem and first placement cost
# about as much, and run however little time is left).
SEARCH_FLOOR_OF_CANDIDATES = 1.0


def _noted(plan, text: str, spent: dict[str, float]):
    """``plan`` with ``text`` in its notes (and warned), and the seconds
    ``spent`` on the search and on verification added to its own."""
    warn(f"olla_jax recomputation: {text}")
    return dataclasses.replace(plan, notes=plan.notes + (text,),
                               solve_seconds=plan.solve_seconds + spent["search"],
                               verify_seconds=plan.verify_seconds + spent["verify"])


def recompute_to_budget(result, budget: int, *, args: Sequence[Any] = (),
                        static_argnums: Sequence[int] = (), time_limit_s: float = 30.0,
                        verify_trials: int = 2, measure_time: bool = True,
                        engine: str = "cpsat", recompute_cost: str = "time",
                        gpu_extra: Sequence[str] = (), producers: Collection[str] | None = None):
    """``result`` (a Plan over the budget) with values recomputed until the
    step's total fits ``budget``, checked, applied and verified; or the least
    memory reached, with the reason in its notes.

    ``engine``: "greedy" (picks at the peak, most bytes per cost first), or
    "cpsat" / "mip": the model of ``choose_model`` (least extra cost that meets
    the budget, else least memory), warm-started from the greedy, whose plan
    is kept when the model finds nothing better.

    ``recompute_cost``: what a copy costs the search, "time" (a roofline
    estimate from its FLOPs and bytes) or "flops" (its FLOPs, bytes moved
    breaking ties); see ``candidates.copy_cost``.

    ``gpu_extra``: more kinds of candidates on GPU targets (``candidates.screen``);
    ``producers``: only candidates made by instructions of these names
    (``candidates.of_producers``; None: all)."""
    if engine not in ("greedy", "cpsat", "mip"):
        raise ValueError(f"engine must be 'greedy', 'cpsat' or 'mip', not {engine!r}")
    check_cost(recompute_cost)
    check_producers(producers)

    spent = {"search": 0.0, "verify": 0.0}      # seconds, once the search has run

    def note(plan, text: str):
        return _noted(plan, text, spent)

    graph, cap = result.graph, result.capture
    if graph is None or cap is None:
        return note(result, "no memory model of this step: recomputation not tried")
    backend = Backend.parse(result.backend)
    if not (backend.kind == "cpu" or backend.compile_only) or cap.executable is None:
        return note(result, f"recomputation is applied only on CPU executables and built for "
                            f"compile-only GPU targets (this step is for {result.backend})")
    if not temp_resizable(graph, cap):
        return note(result, "XLA's temp allocation cannot be resized here: recomputation not tried")
    t0 = time.monotonic()
    fixed = result.argument_bytes + result.output_bytes - result.alias_bytes
    target = budget - fixed
    if target <= 0:
        return note(result, f"arguments and outputs alone take {size_text(fixed)}, more "
                            "than the budget")
    order = result.layout.order if result.layout is not None else graph.xla_order
    cands = (screen(graph, cap, recompute_cost, gpu_extra=gpu_extra)[0] if gpu_extra
             else candidates(graph, cap, recompute_cost))
    if producers is not None:
        cands = of_producers(graph, cands, producers)
    bodies = body.candidates(graph, cap, recompute_cost)     # [] without while loops
    logging.info("recomputation: %d candidate values, %d inside loop bodies", len(cands),
                 len(bodies))
    elapsed = time.monotonic() - t0
    left = time_limit_s - elapsed
    if left < SEARCH_FLOOR_OF_CANDIDATES * elapsed:
        # The search's fixed part (its problem, one placement) runs however
        # short its limit: lm_adamw small, 2 s limit, load 7: 0.47 s for a
        # 0.07 s share, after candidates that took 0.68 s of the stage's 0.75.
        spent["search"] = time.monotonic() - t0
        return note(result, f"recomputation not searched: finding its candidates took "
                            f"{elapsed:.2g} s of its {time_limit_s:.2g} s (a longer time_limit_s "
                            "searches)")
    found = search(graph, order, cands, target, engine=engine,
                   time_limit_s=left * (_BODY_SHARE if bodies else 1.0),
                   layout=result.layout if result.layout is not None else xla_layout(graph),
                   also=result.runner_up_orders)
    if bodies and (found is None or found.temp_bytes > target):
        found = extend_into_bodies(graph, order, found, cands, bodies, target,
                                   deadline=t0 + _BODY_END * time_limit_s, layout=result.layout,
                                   placed_first=backend.kind == "gpu",
                                   engine=None if engine == "greedy" else engine, capture=cap)
    floor, where = working_set_bound(body.relaxed(graph, bodies))
    # the planner's part, which ``time_limit_s`` bounds; the check, rewrite,
    # verification and timing after it go to ``verify_seconds`` (and the note)
    search_s = spent["search"] = time.monotonic() - t0
    if found is None or found.temp_bytes >= min(result.planned_temp_bytes,
                                                result.achieved_temp_bytes or math.inf):
        why = f"; {working_set_text(floor, where)}" if floor else ""
        return note(result, f"recomputation found nothing that lowers the peak "
                            f"({len(cands)} values qualified{why})")
    return feed_back_plan(result, found, args=args, static_argnums=static_argnums,
                          verify_trials=verify_trials, measure_time=measure_time,
                          search_s=search_s, time_limit_s=time_limit_s, floor=floor)


def temp_resizable(graph, cap) -> bool:
    """Whether the plan may resize XLA's temp allocation: there is one, and
    it is not a tuple table, or its tuple-table flag is one no thunk of the
    executable bears out (``checked.unheld_tuple_flags``: the checker and the
    GPU rewrite resize it then too)."""
    temp = graph.temp_allocation
    return temp >= 0 and (not graph.allocations[temp].is_tuple
                          or temp in checked.unheld_tuple_flags(cap))


def extend_into_bodies(graph, order: Sequence[int], found: RecomputePlan | None, entry_cands,
                       cands: Sequence[body.BodyCandidate], target_temp: int, *,
                       deadline: float, layout=None, placed_first: bool = False,
                       engine: str | None = None, capture=None) -> RecomputePlan | None:
    """``found`` (an entry plan on ``order``, a ``RecomputePlan``, or None)
    with copies inside loop bodies added by ``body.choose`` where its peak is
    inside a body above ``target_temp``; ``found`` itself when that does not
    lower the temp (or there are no such copies).  ``deadline`` (a
    ``time.monotonic()`` time) ends the bisection; what is left of it goes
    to an exact placement when best-fit's misses the target.  Where the
    arena of ``found``'s layout (else ``layout``, the plan's) peaks in a
    body above the target by more than the candidates idle in it there
    (``body_placed.needs_room``: body values parked in idle output
    allocations), ``body_placed.choose_placed`` picks copies by the placed
    arena too: first with ``placed_first`` (a compile-only GPU target),
    else with what the live-bytes greedy leaves when it misses; the smaller
    plan is kept.  With ``engine`` ("cpsat" or "mip"), the model
    (``body_model.choose_model``, trip counts read from ``capture``) then
    chooses the body copies too, warm-started from the live-bytes greedy's,
    which it replaces only when better."""
    if not cands or (found is not None and found.temp_bytes <= target_temp):
        return found
    by_value = {c.value: c for c in entry_cands}
    order = found.layout.order if found is not None else tuple(order)
    picks = [(by_value[v], k) for v, k in found.splits] if found is not None else []
    layout = found.layout if found is not None else layout
    room = layout is not None and body_placed.needs_room(graph, layout, cands, target_temp)
    placed = None
    model = engine and (engine, body_model.trip_counts(capture, graph))
    if room and placed_first:
        placed = body_placed.choose_placed(graph, order, picks, cands, target_temp,
                                           deadline=deadline)
        if placed is not None and (placed.temp_bytes <= target_temp or
                                   time.monotonic() >= deadline):
            placed = dataclasses.replace(placed, how="loop-body greedy on the placed arena")
            if model:       # the model's copies where better, until the deadline
                placed = _modeled_where_better(graph, order, picks, cands, target_temp, placed,
                                               model, deadline)
            return _with_how(placed, found, placed.how)
    got = _live_greedy(graph, order, picks, cands, target_temp, deadline, model=model)
    if room and not placed_first and got.temp_bytes > target_temp:
        placed = body_placed.choose_placed(graph, order, picks, cands, target_temp,
                                           deadline=deadline)
    if placed is not None and placed.temp_bytes < got.temp_bytes:
        return _with_how(placed, found, "loop-body greedy on the placed arena")
    if all(r.producer in graph.node_index for r in got.layout.recomputes) or \
            (found is not None and got.temp_bytes >= found.temp_bytes):
        return found
    return _with_how(got, found, got.how if got.how.startswith("loop-body model") else
                     "loop-body greedy")


def _with_how(got: RecomputePlan, found: RecomputePlan | None, how: str):
    """``got`` named by ``how`` after ``found``'s search; ``found`` where it is smaller."""
    if found is not None and got.temp_bytes >= found.temp_bytes:
        return found
    return dataclasses.replace(got, how=(found.how + " + " if found is not None else "") + how)


def _live_greedy(graph, order, picks, cands, target_temp: int, deadline: float,
                 model=None) -> RecomputePlan:
    """``body.choose``'s copies on ``order`` after the entry ``picks``: the
    fewest of them that meet ``target_temp`` placed, else all of them; with
    ``model`` ((engine, trip counts)), then the model's where better
    (``body_model``, warm-started from the greedy's, given _BODY_MODEL_SHARE
    of the time the greedy leaves); placed exactly with what is left before
    ``deadline``."""
    base, orders = fit_orders(new_state(graph, order).problem())  # (each plan_of's, placed once)
    got = plan_of(graph, order, picks, body_cands=cands, target_temp=target_temp, base=base)
    # the greedy stops on live bytes, output space included: the fewest of
    # its copies (a prefix, by bisection) whose placement meets the target
    lo, hi = 0, len(got.body)
    while got.temp_bytes <= target_temp and hi - lo > 1 and time.monotonic() < deadline:
        mid = (lo + hi) // 2
        fewer = plan_of(graph, order, picks, body_picks=got.body[:mid], base=base)
        if fewer.temp_bytes <= target_temp:
            hi, got = mid, fewer
        else:
            lo = mid
    if model:
        now = time.monotonic()
        got = _modeled_where_better(graph, order, picks, cands, target_temp, got, model,
                                    now + _BODY_MODEL_SHARE * (deadline - now),
                                    fitted=(base, orders[:1]))
    exact_s = (deadline - time.monotonic()) / 2 - 0.2
    if exact_s > 0.05 and got.temp_bytes > target_temp and got.body:
        got = dataclasses.replace(plan_of(graph, order, picks, body_picks=got.body, base=base,
                                          exact_s=exact_s, target_temp=target_temp),
                                  how=got.how)
    return got


def _modeled_where_better(graph, order, picks, cands, target_temp: int, warm: RecomputePlan,
                          model, deadline: float, fitted=None) -> RecomputePlan:
    """The model's body copies (``body_model.choose_model``, warm-started from
    ``warm``, until ``deadline``) where ``body_model.better`` than ``warm``,
    else ``warm``; ``model``: (engine, trip counts)."""
    engine, trips = model
    modeled = body_model.named(body_model.choose_model(
        graph, order, picks, cands, target_temp, trips=trips, warm=warm, engine=engine,
        deadline=deadline, fitted=fitted), engine)
    if modeled is not None and body_model.better(modeled, warm, target_temp, trips):
        return modeled
    return warm


# With while loops, the entry search's share of what is left of the limit;
# the copies inside loop bodies (``extend_into_bodies``, where the peak is
# there) get until _BODY_END of it (its placements are not interrupted:
# grad_accum: 24 s of a 20 s limit at 0.8 and 1.0, load 20; 23 s at 0.5 and 0.85,
# load 5, where the working-set floor after it took seconds).
_BODY_SHARE = 0.5
_BODY_END = 0.7
# Of what the body greedy leaves, the model's share (an exact placement,
# where the target is missed, gets half of what remains).
_BODY_MODEL_SHARE = 0.8


def feed_back_plan(result, found: RecomputePlan, *, args: Sequence[Any] = (),
                   static_argnums: Sequence[int] = (), verify_trials: int = 2,
                   measure_time: bool = True, search_s: float = 0.0,
                   time_limit_s: float | None = None, floor: int | None = None):
    """``result`` (a Plan) with ``found``'s recomputation on ``result``'s
    capture: checked by the independent checker, the executable rewritten,
    verified bit-for-bit in a child and loaded (``recompute_to_budget``'s
    last part; ``ladder``'s plans go through it one by one); the reason in
    its notes when refused.  ``search_s``: the seconds the search took."""
    spent = {"search": search_s, "verify": 0.0}

    def note(plan, text: str):
        return _noted(plan, text, spent)

    graph, cap = result.graph, result.capture
    backend = Backend.parse(result.backend)
    if floor is None:
        floor, _ = working_set_bound(graph, cap)
    layout = found.layout
    t_check = time.monotonic()
    rejected = checked.rejection(cap, layout, alignment=graph.alignment)
    if rejected is not None:
        return note(result, f"the independent checker rejected the recomputation plan: {rejected}")
    outcome = checked.apply(cap, layout, backend=result.backend, args=args,
                            static_argnums=static_argnums, trials=verify_trials,
                            what="the recomputation")
    verify_s = spent["verify"] = time.monotonic() - t_check
    if backend.compile_only and outcome.raw is not None and outcome.verification is None:
        return _built_unrun(result, found, floor, outcome, search_s, verify_s)  # GPU: not run
    if not outcome.ok:
        return note(result, f"recomputation not applied: {outcome.reason}")
    compiled = dataclasses.replace(result.compiled, executable=outcome.compiled)
    ratio = None
    if measure_time:
        t_time = time.monotonic()
        ratio = time_ratio_against_xla(result, compiled, args, static_argnums)
        verify_s += time.monotonic() - t_time
    total_flops = step_flops(cap)
    share = f" ({100 * found.extra_flops / total_flops:.1f}% of the step's)" if total_flops else ""
    text = (f"recomputed {_copies_stated(found)} ({found.how}): {found.extra_flops:,} extra "
            f"FLOPs{share}"
            + (f", step time {ratio:.3f} x XLA's" if ratio is not None else "")
            + f"; searched in {search_s:.1f} s"
            + (f" (limit {time_limit_s:.1f} s)" if time_limit_s is not None else "")
            + ", checked, verified"
            + (" and timed" if ratio is not None else "") + f" in {verify_s:.1f} s")
    return dataclasses.replace(
        result, planned_temp_bytes=found.temp_bytes, achieved_temp_bytes=outcome.achieved_temp_bytes,
        lower_bound_bytes=min(floor, found.temp_bytes), verified=True, source="olla_jax",
        engine=result.engine + "+recompute", solve_seconds=result.solve_seconds + search_s,
        verify_seconds=result.verify_seconds + verify_s,
        notes=_replaced_build(result.notes, "before recomputation") + (text,),
        settings=_with_cost(result.settings, found), compiled=compiled, layout=layout,
        recomputed=found.picked, extra_flops=found.extra_flops, step_time_ratio=ratio,
        executable_bytes=outcome.raw)   # the recomputing executable, the one ``compiled`` runs


def _with_cost(settings: dict, found: RecomputePlan) -> dict:
    """``settings`` with the recomputation's extra cost as its search weighed it
    (``recompute_cost``): what plan() compares plans of separate calls by."""
    return dict(settings, recompute_extra_cost=found.extra_cost_s)


def _replaced_build(notes: tuple[str, ...], which: str) -> tuple[str, ...]:
    """``notes`` of a plan whose executable another replaces: the note of the
    one built before (a compile-only target's) says whose it was, so that it
    is not read as the plan's own."""
    return tuple(f"{which}: {n}" if n.startswith("not fed back: rewritten") else n for n in notes)


def _copies_stated(found: RecomputePlan) -> str:
    """"N values", and how many copies when a value is recomputed several times."""
    return recompute_count(found.layout).text


def _built_unrun(result, found: RecomputePlan, floor: int, outcome, search_s: float,
                 verify_s: float):
    """A compile-only GPU target: the recomputing executable was built, read
    back and compared with the plan, but there is no GPU here to run it."""
    total_flops = step_flops(result.capture)
    share = f" ({100 * found.extra_flops / total_flops:.1f}% of the step's)" if total_flops else ""
    text = (f"recomputed {_copies_stated(found)}: {found.extra_flops:,} extra FLOPs{share}; "
            f"not fed back: {outcome.reason}")
    return dataclasses.replace(
        result, planned_temp_bytes=found.temp_bytes, achieved_temp_bytes=None,
        lower_bound_bytes=min(floor, found.temp_bytes), verified=False, source="olla_jax",
        engine=result.engine + "+recompute", solve_seconds=result.solve_seconds + search_s,
        verify_seconds=result.verify_seconds + verify_s,
        notes=_replaced_build(result.notes, "before recomputation") + (text,),
        settings=_with_cost(result.settings, found), layout=found.layout, recomputed=found.picked,
        extra_flops=found.extra_flops, executable_bytes=outcome.raw)


def xla_remat_to_budget(result, budget: int, fn, args: Sequence[Any], *,
                        static_argnums: Sequence[int] = (), donate_argnums: Sequence[int] = (),
                        compiler_options=None):
    """GPU: XLA's own rematerialization under a searched memory limit
    (``olla_jax.xla_remat``); ``result`` with XLA's best point when it fits
    better, the reason in its notes otherwise.  The search is XLA's compiles:
    its seconds go to ``capture_seconds``, never to the planner's."""
    return xla_remat_points(result, budget, fn, args, static_argnums=static_argnums,
                            donate_argnums=donate_argnums, compiler_options=compiler_options)[1]


def xla_remat_points(result, budget: int, fn, args: Sequence[Any], *,
                     static_argnums: Sequence[int] = (), donate_argnums: Sequence[int] = (),
                     compiler_options=None) -> tuple[list, Any]:
    """(``xla_remat.search``'s points, none when it failed; the plan
    ``xla_remat_to_budget`` gives from them)."""
    from olla_jax import xla_remat
    t0 = time.monotonic()
    try:
        points = xla_remat.search(fn, *args, backend=result.backend, budget_bytes=budget,
                                  static_argnums=static_argnums, donate_argnums=donate_argnums,
                                  compiler_options=compiler_options)
    except Exception as err:  # noqa: BLE001 - the answer is then order and placement alone
        text = f"XLA's rematerialization could not be searched ({type(err).__name__}: {err})"
        warn(f"olla_jax: {text}")
        return [], dataclasses.replace(result, notes=result.notes + (text,),
                                       capture_seconds=result.capture_seconds
                                       + time.monotonic() - t0)
    return points, xla_remat_plan(result, points, budget, time.monotonic() - t0)


def xla_remat_plan(result, points, budget: int, compile_s: float):
    """``result`` with the best of XLA's rematerialization ``points``
    (``xla_remat.search``'s, XLA's own compile first) when it fits better,
    the reason in its notes otherwise; ``compile_s``, the points' compiles,
    added to its ``capture_seconds``."""
    from olla_jax import xla_remat
    result = dataclasses.replace(result, capture_seconds=result.capture_seconds + compile_s)
    base, chosen = points[0], xla_remat.best(points, budget)
    tried = ", ".join(f"{p.limit_bytes / 2**20:,.1f} MiB -> total {p.total / 2**20:,.1f} MiB"
                      for p in points[1:]) + f" ({len(points)} compiles, {compile_s:.1f} s)"
    if chosen.total >= result.runs_total_bytes:
        return dataclasses.replace(result, notes=result.notes + (
            f"XLA's rematerialization did not go below our plan (limits tried: {tried})",))
    extra = max(0, chosen.flops - base.flops)
    share = f" (+{100 * extra / base.flops:.1f}%)" if base.flops else ""
    text = (f"XLA's rematerialization with its memory limit forced to "
            f"{chosen.limit_bytes / 2**20:,.1f} MiB: temp {chosen.memory.temp / 2**20:,.2f} MiB, "
            f"{extra:,} extra FLOPs{share}; limits tried: {tried}")
    from olla_jax.capture.record import serialize_executable
    compiled = dataclasses.replace(result.compiled, executable=chosen.compiled)
    return dataclasses.replace(
        result, planned_temp_bytes=chosen.memory.temp, achieved_temp_bytes=chosen.memory.temp,
        argument_bytes=chosen.memory.argument, output_bytes=chosen.memory.output,
        alias_bytes=chosen.memory.alias, lower_bound_bytes=0, source="xla",
        engine="xla-remat", verified=False, compiled=compiled, layout=None,
        executable_bytes=serialize_executable(chosen.compiled),   # XLA's rematerializing one, not ours
        extra_flops=extra,
        notes=_replaced_build(result.notes, "our order and placement (not kept)") + (text,))


# step_flops's last _STEP_FLOPS_KEPT answers, by capture (kept alive with it,
# so its id is not reused)
_STEP_FLOPS: dict[int, tuple[Any, int]] = {}
_STEP_FLOPS_KEPT = 4


def step_flops(cap) -> int:
    """FLOPs of ``cap``'s step (0 when they cannot be counted), counted once
    per capture: every budget of one step reports its share, and serializing
    and walking a large module takes seconds of a budget's limit."""
    hit = _STEP_FLOPS.get(id(cap))
    if hit is not None and hit[0] is cap:
        return hit[1]
    try:
        got = flops_lib.compiled_flops(cap.compiled)
    except Exception:  # noqa: BLE001 - a report detail
        got = 0
    while len(_STEP_FLOPS) >= _STEP_FLOPS_KEPT:
        del _STEP_FLOPS[next(iter(_STEP_FLOPS))]
    _STEP_FLOPS[id(cap)] = (cap, got)
    return got


def time_ratio_against_xla(result, compiled, args, static_argnums) -> float | None:
    """``compiled``'s step time over that of XLA's executable of jax.jit's own
    program (``result.xla_compiled``), on ``args``; None where not measured."""
    from olla_jax.apply import timing
    import jax
    dynamic = [a for i, a in enumerate(args) if i not in set(static_argnums)]
    if not dynamic or any(isinstance(x, jax.ShapeDtypeStruct)
                          for x in jax.tree_util.tree_leaves(dynamic)):
        return None
    try:
        original = result.xla_compiled.executable    # XLA's of jax.jit's own program
        call_args, call_kwargs = _as_called(original, dynamic)
        return timing.time_ratio(original, compiled.executable, call_args, repeats=10,
                                 kwargs=call_kwargs).ratio
    except Exception:  # noqa: BLE001 - timing is a report detail
        logging.exception("timing the recomputed step failed")
        return None


def _as_called(compiled, dynamic: Sequence[Any]) -> tuple[tuple, dict]:
    """(positional, keyword) arguments of ``compiled`` (a jax Compiled) from
    ``dynamic``: the dynamic positional arguments, or, for a call with keyword
    arguments, their flat leaves (what verification takes), rebuilt by the
    executable's own input tree."""
    import jax
    leaves = jax.tree_util.tree_leaves(tuple(dynamic))
    tree = getattr(compiled, "in_tree", None)
    if tree is None or tree.num_leaves != len(leaves):
        return tuple(dynamic), {}
    call_args, call_kwargs = jax.tree_util.tree_unflatten(tree, leaves)
    return tuple(call_args), dict(call_kwargs)
