"""Memory budgets on compile-only GPU targets: our recomputation beside XLA's.

Three ways to trade compute for memory are tried on the same plan:

* ours (``budget.recompute_to_budget``): values idle across the peak are
  recomputed by copying their producer's kernel thunk in the GPU executable;
  the plan passes the independent checker, the rewritten executable is built,
  decoded again and compared with the plan (not run: no GPU here);
* XLA's rematerialization under a searched memory limit
  (``xla_remat.search``), the baseline;
* XLA's rematerialized program, compiled again for a device description of
  its limit and planned by our order and placement (``remat_planned``): XLA's
  FLOPs, at most its memory.

Asked for (``offload=True``), a fourth, last, in the time the others leave:
the longest-idle values parked in host memory (``olla_jax.offload``), the
offloaded step then ordered and placed by us, and recomputed by us on top
where still over the budget (``offload_side``).  Opt-in: nothing here
measures the copies' time (no GPU).

Given a way to plan another program of the step (``plan_program``), program
recomputation too (``olla_jax.program_remat``: long-idle values dropped and
computed again in the step's jaxpr before XLA fuses, their bits compared on
CPU), after the three above and before offloading, in the time they leave
(``program_after``): the rewritten step ordered and placed by us
(``program_side``).  Opt-in: its XLA compiles (each set tried is compiled for
the target, the chosen one for CPU too and compared in a child) take minutes.

The one kept: among those that meet the budget, the fewest extra FLOPs (the
offloading side loses ties: its copies' time is unknown); when none does, the
least memory.  The others' figures stay in the notes.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Sequence

from olla_jax.capture.base import Backend
from olla_jax.result import quiet
from olla_jax.sizes import size_text


@dataclasses.dataclass(frozen=True)
class Side:
    """One way of meeting the budget, as a Plan, with how it is described."""
    name: str
    plan: Any   # olla_jax.result.Plan
    moves_to_host: bool = False   # host offloading: copies whose time nothing measures


def _figures(side: Side) -> str:
    p = side.plan
    return (f"{side.name}: total {p.runs_total_bytes / 2**20:,.2f} MiB (temp "
            f"{p.runs_temp_bytes / 2**20:,.2f} MiB), {p.extra_flops:,} extra FLOPs")


def _bits(side: Side) -> str:
    """A program recomputation side's bits verdict (its outputs compared on CPU)."""
    bits = side.plan.settings.get("program_remat_bits")
    return "" if bits is None else f"; bits {bits}"


def choose(sides: Sequence[Side], budget: int) -> Side:
    """Fewest extra FLOPs among the sides within ``budget``, else the least
    memory; on a tie, a side that moves nothing to host."""
    fitting = [s for s in sides if s.plan.runs_total_bytes <= budget]
    if fitting:
        return min(fitting, key=lambda s: (s.plan.extra_flops, s.moves_to_host,
                                           s.plan.runs_total_bytes))
    return min(sides, key=lambda s: (s.plan.runs_total_bytes, s.plan.extra_flops,
                                     s.moves_to_host))


def to_budget(result, budget: int, fn, args: Sequence[Any], *, static_argnums: Sequence[int] = (),
              donate_argnums: Sequence[int] = (), compiler_options=None,
              time_limit_s: float = 30.0, recompute_cost: str = "time",
              plan_on: Callable[[str, float], Any] | None = None,
              plan_offloaded: Callable[[Callable, float], Any] | None = None,
              plan_program: Callable[[Callable, float], Any] | None = None,
              program_memo: dict | None = None):
    """``result`` (a Plan over ``budget`` on a compile-only GPU target) with
    the best of our recomputation (its search costing copies by
    ``recompute_cost``, ``budget.candidates.copy_cost``), XLA's
    rematerialization, and, given ``plan_on`` (a target file's path and a
    time limit to a Plan of the same step on that target), XLA's
    rematerialized program under our order and placement (``remat_planned``).
    Given ``plan_offloaded`` (a step with the same arguments and a time limit
    to its Plan), host offloading too (``offload_side``), last, in the time
    the others leave (``offload_after``): they run as without it, so what is
    kept is never worse than without offloading.  XLA's compiles count as
    ``capture_seconds``; ours and the planning of XLA's or the offloaded
    programs share ``time_limit_s`` (the planner's part: checks, rewrites,
    builds and read-backs come on top, ``verify_seconds``, as in ``plan``);
    what one side leaves unused goes to the next.  Given ``plan_program`` (as
    ``plan_offloaded``), program recomputation before offloading
    (``program_after``, ``program_side``; ``program_memo``: its compiles kept
    across calls on one step)."""
    from olla_jax import budget as budget_lib
    from olla_jax.budget import feed_back
    points, xla = feed_back.xla_remat_points(result, budget, fn, args,
                                             static_argnums=static_argnums,
                                             donate_argnums=donate_argnums,
                                             compiler_options=compiler_options)
    candidates = remat_candidates(points, budget) if plan_on is not None else []
    ours_s = time_limit_s * (1 - remat_share(candidates, time_limit_s))
    ours = budget_lib.recompute_to_budget(result, budget, time_limit_s=ours_s,
                                          measure_time=False, recompute_cost=recompute_cost)
    sides = [Side("our recomputation", ours), Side("XLA's rematerialization", xla)]
    spent = ours.solve_seconds - result.solve_seconds   # the planner's part: builds on top
    if ours.runs_total_bytes <= budget:   # only a point with no more FLOPs can be kept
        base = points[0].flops
        candidates = [p for p in candidates if p.flops - base <= ours.extra_flops]
    planned, seconds, tries = (remat_planned(result, points, candidates, budget, plan_on,
                                             time_limit_s - spent)
                               if candidates else (None, {}, ""))
    if planned is not None:
        sides.append(planned)
    programmed, prog_seconds, prog_note = None, {}, ""
    if plan_program is not None:
        left = time_limit_s - spent - seconds.get("solve", 0.0)
        # offloading after it gets a share of what is left
        limit = left * (PROGRAM_PLAN_SHARE if plan_offloaded is not None else 1.0)
        programmed, prog_seconds, prog_note = program_after(
            choose(sides, budget), limit, lambda limit_s: program_side(
                result, budget, fn, args, plan_program, static_argnums=static_argnums,
                donate_argnums=donate_argnums, compiler_options=compiler_options,
                time_limit_s=limit_s, memo=program_memo), budget)
    if programmed is not None:
        sides.append(programmed)
    offloaded, off_seconds, off_note = None, {}, ""
    if plan_offloaded is not None:
        left = (time_limit_s - spent - seconds.get("solve", 0.0)
                - prog_seconds.get("solve", 0.0))
        offloaded, off_seconds, off_note = offload_after(
            choose(sides, budget), left, lambda limit_s: offload_side(
                result, budget, fn, args, plan_offloaded, static_argnums=static_argnums,
                donate_argnums=donate_argnums, compiler_options=compiler_options,
                time_limit_s=limit_s, recompute_cost=recompute_cost), budget)
    if offloaded is not None:
        sides.append(offloaded)
    kept = choose(sides, budget)
    others = [s for s in sides if s is not kept]
    text = (f"budget {budget / 2**20:,.2f} MiB side by side ({len(sides)} sides): "
            f"{_figures(kept)} (kept{_bits(kept)}); "
            + "; ".join(_figures(o) + _bits(o) for o in others))
    extra = tuple(dict.fromkeys(n for o in others for n in _unbuilt(o.plan.notes)
                                if n not in kept.plan.notes))
    # every second of every side is reported: XLA's compiles (its remat
    # search's, and those planned again) with XLA's compiles, our searches
    # and order/placement with the planner's, our builds with verification
    solve = ours.solve_seconds + seconds.get("solve", 0.0) + off_seconds.get("solve", 0.0)
    verify = ours.verify_seconds + seconds.get("verify", 0.0) + off_seconds.get("verify", 0.0)
    capture = (xla.capture_seconds + seconds.get("capture", 0.0)
               + off_seconds.get("capture", 0.0))
    for key, value in prog_seconds.items():
        solve, verify, capture = (solve + (key == "solve") * value,
                                  verify + (key == "verify") * value,
                                  capture + (key == "capture") * value)
    if prog_note:
        extra += (prog_note,)
    if off_note:
        extra += (off_note,)
    if tries and planned is None:
        extra += (tries,)
    return dataclasses.replace(kept.plan, notes=kept.plan.notes + extra + (text,),
                               solve_seconds=solve, verify_seconds=verify,
                               capture_seconds=capture)


# XLA's rematerialized programs planned by us (order and placement, no
# recomputation of ours): the share of the time limit they get when some
# point may be brought within the budget, our recomputation the rest.
REMAT_PLAN_SHARE = 0.5
# A point is tried when the bytes it is over the budget are at most this share
# of its temp: what order and placement may save on a program XLA has
# scheduled (on the H100 suite they saved up to 27% of XLA's temp).
REMAT_MAX_GAIN = 0.35
# At most this many points are planned (each is compiled again and planned).
REMAT_MAX_TRIES = 2
# Least planner seconds worth a try (a solve's fixed part, roughly).
REMAT_MIN_S = 1.0


def remat_share(candidates, time_limit_s: float) -> float:
    """The share of ``time_limit_s`` our recomputation leaves to XLA's
    rematerialized programs planned by us: ``REMAT_PLAN_SHARE`` where
    ``remat_planned`` could try one of ``candidates`` in it (``REMAT_MIN_S``
    at least), else none: a side that cannot try holds nothing back."""
    if not candidates or REMAT_PLAN_SHARE * time_limit_s < REMAT_MIN_S:
        return 0.0
    return REMAT_PLAN_SHARE


def remat_candidates(points, budget: int) -> list:
    """XLA's forced-limit ``points`` (``xla_remat.search``'s, XLA's own compile
    first) worth planning: one per program, fewest FLOPs first, none with more
    FLOPs than XLA's own pick when that fits (ours then has its FLOPs and at
    most its memory), only those order and placement may bring within
    ``budget`` (``REMAT_MAX_GAIN``), ``REMAT_MAX_TRIES`` at most."""
    from olla_jax import xla_remat
    if len(points) < 2:
        return []
    chosen = xla_remat.best(points, budget)
    seen, kept = set(), []
    for p in sorted(points[1:], key=lambda p: (p.flops, p.total)):
        if chosen.total <= budget and p.flops > chosen.flops:
            break
        if (p.memory.temp, p.flops) in seen:
            continue
        seen.add((p.memory.temp, p.flops))
        if p.total - budget <= REMAT_MAX_GAIN * p.memory.temp:
            kept.append(p)
    return kept[:REMAT_MAX_TRIES]


def remat_planned(result, points, candidates, budget: int, plan_on, time_limit_s: float):
    """XLA's rematerialized program at each of ``candidates`` (fewest FLOPs
    first), compiled again for a device description of its limit
    (``xla_remat.target_file``) and planned by ``plan_on`` (the normal
    pipeline: capture, graph, order and placement, check, build and read
    back), until one meets ``budget``; the Side of the best (that one, else
    the least memory), or None when none goes below XLA's temp there, with
    the seconds of all tries (``solve``, ``verify``, ``capture``) and what
    each gave (with None: the note that says so).  Its FLOPs
    are XLA's at that point; ``time_limit_s`` covers the planner's part of
    all tries (shared by the tries left; their builds come on top)."""
    import tempfile

    from olla_jax import xla_remat
    base = points[0]
    io = base.memory.argument + base.memory.output
    target = Backend.parse(result.backend).target
    start = time.monotonic()
    best, tried = None, []
    seconds = dict(solve=0.0, verify=0.0, capture=0.0)
    with (tempfile.TemporaryDirectory(prefix="olla_jax_remat_plan_") as folder,
          xla_remat.limit_warnings_held()):
        for i, point in enumerate(candidates):
            # the planner's part of the time left, shared by the tries left
            left = time_limit_s - seconds["solve"]
            share = left / (len(candidates) - i)
            if share < REMAT_MIN_S:
                tried.append(f"{point.limit_bytes / 2**20:,.1f} MiB: not tried ({max(left, 0):.1f} s "
                             f"left of the limit, {max(share, 0):.1f} s of it to plan; "
                             f"{REMAT_MIN_S:g} s needed)")
                continue
            named = f"{result.backend} with XLA's memory limit at {size_text(point.limit_bytes)}"
            path = ""
            try:
                path = xla_remat.target_file(target, point.limit_bytes, io, folder)
                with quiet():   # may not be kept: its complaints are in its notes
                    got = plan_on(path, share)
            except Exception as err:  # noqa: BLE001 - this side is then left out
                tried.append(f"{point.limit_bytes / 2**20:,.1f} MiB: failed "
                             f"({type(err).__name__}: {_named(str(err), path, named)})")
                continue
            got = dataclasses.replace(got, notes=tuple(_named(n, path, named) for n in got.notes))
            seconds["solve"] += got.solve_seconds
            seconds["verify"] += got.verify_seconds
            seconds["capture"] += got.capture_seconds
            ours = got.source == "olla_jax" and got.runs_temp_bytes < got.xla_best_temp_bytes
            tried.append(f"{point.limit_bytes / 2**20:,.1f} MiB: XLA temp "
                         f"{got.xla_best_temp_bytes / 2**20:,.2f} -> ours "
                         + (f"{got.runs_temp_bytes / 2**20:,.2f}" if ours else "none below"))
            if not ours:
                continue
            if got.runs_total_bytes <= budget:
                best = (point, got)
                break   # the fewest FLOPs of those that fit
            if best is None or got.runs_total_bytes < best[1].runs_total_bytes:
                best = (point, got)
    tries = "; ".join(tried) + f" ({time.monotonic() - start:.1f} s)"
    if best is None:
        planned = [t for t in tried if ": not tried (" not in t]
        return None, seconds, ("XLA's rematerialized programs planned by us: "
                               + ("none below XLA's temp there" if planned else "none tried")
                               + f" ({tries})")
    point, got = best
    extra = max(0, point.flops - base.flops)
    text = (f"XLA's rematerialization at its limit {point.limit_bytes / 2**20:,.1f} MiB "
            f"(device_memory_size {xla_remat.device_memory_for(point.limit_bytes, io):,}), "
            f"ordered and placed by us: temp {got.runs_temp_bytes / 2**20:,.2f} MiB against "
            f"XLA's {got.xla_best_temp_bytes / 2**20:,.2f}, {extra:,} extra FLOPs; tried: "
            + tries)
    plan = _of_the_step(result, got, f"xla-remat+{got.engine}", text, time_limit_s,
                        extra_flops=extra)
    return Side("XLA's rematerialization planned by us", plan), seconds, tries


_BUILT = "not fed back: rewritten"    # apply.feed_back's note of a compile-only build


def _unbuilt(notes: Sequence[str]) -> list[str]:
    """A side not kept: its notes without what they say of the executable
    built for it (not the plan's: read as its, they named two builds)."""
    out = []
    for note in notes:
        head = note.split(f"; {_BUILT}", 1)[0]
        if _BUILT not in head:
            out.append(head)
    return out


def _named(text: str, path: str, name: str) -> str:
    """``text`` with the device description written for a forced limit (a
    temporary file, gone when the search ends: meaningless to a user) called
    ``name``, what it stands for."""
    if not path:
        return text
    return text.replace(f"gpu:{path}", name).replace(path, name)


def _of_the_step(result, got, engine: str, note: str, time_limit_s: float, *,
                 extra_flops: int | None = None, **settings):
    """``got``, a plan of another program of the step (XLA's rematerialized one,
    the offloaded one), reported as a side of ``result``: XLA's figures for the
    step as given, no bound (``got``'s is its own program's), ``note`` added,
    and the call's time limit as every other side reports it (the try had a
    share), with ``settings`` added."""
    changes = {} if extra_flops is None else {"extra_flops": extra_flops}
    return dataclasses.replace(
        got, backend=result.backend, xla_default_temp_bytes=result.xla_default_temp_bytes,
        xla_best_temp_bytes=result.xla_best_temp_bytes, xla_scheduler=result.xla_scheduler,
        xla_compiled=result.xla_compiled, lower_bound_bytes=0, engine=engine,
        notes=got.notes + (note,),
        settings={**got.settings, "time_limit_s": result.settings.get("time_limit_s",
                                                                     time_limit_s), **settings},
        **changes)


# --- host offloading as a side ------------------------------------------------

# Of the time the other sides leave the offloading side, what the order and
# placement of the offloaded step may take when recomputation may follow (the
# rest: the recomputation search).
OFFLOAD_PLAN_SHARE = 0.5


def offload_after(best: Side, left_s: float, run: Callable[[float], tuple], budget: int
                  ) -> tuple[Side | None, dict, str]:
    """Host offloading after the other sides (``best``, the one ``choose``
    keeps of them), in the ``left_s`` seconds of the limit they leave:
    ``run(limit_s)`` (``offload_side``'s result), unless ``best`` already
    meets ``budget`` with no extra FLOPs (offloading cannot beat it: it loses
    ties) or too little time is left for the offloaded step's planning."""
    return _after("host offloading", OFFLOAD_PLAN_SHARE, best, left_s, run, budget)


def _after(what: str, plan_share: float, best: Side, left_s: float,
           run: Callable[[float], tuple], budget: int) -> tuple[Side | None, dict, str]:
    """``run(left_s)``, a side tried after ``best`` was chosen, unless ``best``
    meets ``budget`` with no extra FLOPs or ``plan_share`` of ``left_s`` is
    too short to plan the side's rewritten step."""
    if best.plan.runs_total_bytes <= budget and best.plan.extra_flops == 0:
        return None, {}, f"{what} not tried: {best.name} meets the budget with no extra FLOPs"
    if left_s * plan_share < REMAT_MIN_S:
        return None, {}, (f"{what} not tried: {max(left_s, 0):.1f} s of the limit left after "
                          "the other sides (a longer time_limit_s gives it time)")
    return run(left_s)


def _room(result, budget: int, what: str) -> tuple[dict[str, float], int, str]:
    """A side's seconds (none spent yet), the step's argument and output bytes,
    and why ``what`` is not tried where those alone exceed ``budget`` (else '')."""
    io = result.runs_total_bytes - result.runs_temp_bytes
    full = (f"{what} not tried: arguments and outputs alone ({io / 2**20:,.2f} MiB) exceed "
            "the budget") if budget - io <= 0 else ""
    return dict(solve=0.0, verify=0.0, capture=0.0), io, full


def _planned(plan_fn: Callable, fn: Callable, limit_s: float, more: dict,
             seconds: dict[str, float]):
    """``plan_fn``'s Plan of a rewritten step, quietly (a side that may not be
    kept: its complaints are in its notes), its seconds added to ``seconds``."""
    with quiet():
        got = plan_fn(fn, limit_s, **more)
    seconds["solve"] += got.solve_seconds
    seconds["verify"] += got.verify_seconds
    seconds["capture"] += got.capture_seconds
    return got


def offload_side(result, budget: int, fn, args: Sequence[Any], plan_offloaded,
                 *, static_argnums: Sequence[int] = (), donate_argnums: Sequence[int] = (),
                 compiler_options=None, time_limit_s: float = 10.0,
                 recompute_cost: str = "flops", lever=None) -> tuple[Side | None, dict, str]:
    """Host offloading as a side of ``budget``: the values ``olla_jax.offload``
    parks (the top 1, 2, 4, ... of its candidates until XLA's device temp meets
    the budget's temp share, else the least device temp), the offloaded step
    ordered and placed by ``plan_offloaded`` (the normal pipeline), and our
    recomputation on top when still over ``budget`` and time is left.  The
    Side, or None (the reason in the note), with the seconds spent (``solve``,
    ``verify``, ``capture``: the offload lever's compiles).  Its host
    allocation and copies are reported, not counted in the device total.
    ``lever``: an ``offload.offload`` result of this step already captured
    (a benchmark that also reports the lever alone), used instead of
    capturing it again."""
    from olla_jax import budget as budget_lib
    from olla_jax import offload
    mib = 2 ** 20
    seconds, io, full = _room(result, budget, "host offloading")
    if full:
        return None, seconds, full
    start = time.monotonic()
    try:
        if lever is None:
            lever = offload.offload(fn, *args, backend=result.backend, budget=budget - io,
                                    static_argnums=static_argnums, donate_argnums=donate_argnums,
                                    compiler_options=compiler_options)
    except offload.OffloadError as err:
        return None, seconds, f"host offloading not tried: {err}"
    finally:
        seconds["capture"] += time.monotonic() - start
    if not lever.chosen:
        return None, seconds, (f"host offloading: no set of parked values lowered XLA's device "
                               f"temp ({lever.xla_temp / mib:,.2f} MiB; device temp with the "
                               "top values parked: " + ", ".join(
                                   f"{n} -> {temp / mib:,.2f} MiB" for n, temp in lever.tried)
                               + ")")
    # the offloaded step compiled as the lever compiled it (XLA's latency-hiding
    # scheduler off: olla_jax.offload.NO_LATENCY_HIDING)
    options = getattr(lever, "compiler_options", None)
    more = {"compiler_options": options} if options else {}
    got = _planned(plan_offloaded, lever.fn, time_limit_s * OFFLOAD_PLAN_SHARE, more, seconds)
    if got.source != "olla_jax":
        # XLA's own plan of the offloaded step (its temp read from memory_analysis)
        got = dataclasses.replace(got, achieved_temp_bytes=got.xla_best_temp_bytes)
    how = "ordered and placed by us" if got.source == "olla_jax" else "XLA's order and placement"
    left = time_limit_s - seconds["solve"]
    if got.runs_total_bytes > budget and got.graph is not None:
        if left >= REMAT_MIN_S:
            try:
                with quiet():   # a side that may not be kept: its reasons go in its note
                    more = budget_lib.recompute_to_budget(
                        got, budget, measure_time=False, recompute_cost=recompute_cost,
                        time_limit_s=left)
            except Exception as err:  # noqa: BLE001 - the side without recomputation stays
                how += f" (our recomputation on top failed: {type(err).__name__}: {err})"
            else:
                seconds["solve"] += more.solve_seconds - got.solve_seconds
                seconds["verify"] += more.verify_seconds - got.verify_seconds
                if more.runs_total_bytes < got.runs_total_bytes:
                    got, how = more, how + ", then recomputed by us"
                else:
                    why = [n for n in more.notes if n not in got.notes]
                    how += (" (our recomputation on top did not lower it"
                            f"{': ' + why[-1] if why else ''})")
        else:
            how += f" (no recomputation on top: {max(left, 0):.1f} s left)"
    t = lever.transfers
    # the readers derived again from a copy back, as XLA compiled the offloaded
    # step (OffloadResult.flops_delta; None: not counted)
    delta = getattr(lever, "flops_delta", None)
    off_extra = max(0, delta or 0)
    off_flops = ("offloading's FLOPs not counted" if delta is None else
                 f"{off_extra:,} extra FLOPs from offloading (XLA's offloaded program "
                 f"{delta:+,} FLOPs against the step as given)")
    text = (f"host offloading (olla_jax.offload: {len(lever.chosen)} value(s) parked), {how}: "
            f"device temp {got.runs_temp_bytes / mib:,.2f} MiB against XLA's "
            f"{result.xla_best_temp_bytes / mib:,.2f} for the step as given "
            f"(XLA's offloaded step: {lever.temp / mib:,.2f}); host temp "
            f"{lever.host_temp / mib:,.2f} MiB (not in the device total); "
            f"{t.to_host_bytes / mib:,.2f} MiB copied to host in {t.to_host} cop(ies), "
            f"{t.to_device_bytes / mib:,.2f} MiB back in {t.to_device}; {off_flops}, "
            f"{got.extra_flops:,} from recomputation; not run: the copies' time is "
            "unknown (no GPU here)")
    plan = _of_the_step(result, got, f"offload+{got.engine}", text, time_limit_s,
                        extra_flops=off_extra + (got.extra_flops or 0),
                        offloaded_values=len(lever.chosen), host_temp_bytes=lever.host_temp,
                        to_host_bytes=t.to_host_bytes, to_device_bytes=t.to_device_bytes)
    return Side("host offloading", plan, moves_to_host=True), seconds, ""


# --- program recomputation as a side --------------------------------------------

# Of the time the sides before it leave, what program recomputation's planning
# of the rewritten step takes when offloading follows (the rest: offloading).
PROGRAM_PLAN_SHARE = 0.5


def program_after(best: Side, left_s: float, run: Callable[[float], tuple], budget: int
                  ) -> tuple[Side | None, dict, str]:
    """Program recomputation after the sides ``best`` was chosen from, with
    ``left_s`` seconds of the limit to plan the rewritten step: ``run(limit_s)``
    (``program_side``'s result), unless ``best`` meets ``budget`` with no extra
    FLOPs (nothing to gain) or too little time is left to plan."""
    return _after("program recomputation", 1.0, best, left_s, run, budget)


def program_side(result, budget: int, fn, args: Sequence[Any], plan_program, *,
                 static_argnums: Sequence[int] = (), donate_argnums: Sequence[int] = (),
                 compiler_options=None, time_limit_s: float = 10.0, memo: dict | None = None,
                 check: bool = True) -> tuple[Side | None, dict, str]:
    """Program recomputation as a side of ``budget`` (the whole footprint): the
    step's jaxpr rewritten by ``olla_jax.program_remat`` for XLA's temp within
    ``budget`` less the arguments and outputs, its bits compared on CPU
    (``check``: ``program_remat.BitCheck``), then ordered and placed by
    ``plan_program`` (the normal pipeline: checker, GPU rewrite build and
    read-back).  Extra FLOPs: the compiled rewrite's less the step's.  The
    Side, or None (the reason in the note), with the seconds spent (``capture``:
    program_remat's compiles and bit checks)."""
    from olla_jax import program_remat
    mib = 2 ** 20
    seconds, io, full = _room(result, budget, "program recomputation")
    if full:
        return None, seconds, full
    start = time.monotonic()
    try:
        lever = program_remat.program_remat(
            fn, *args, backend=result.backend, budget=budget - io, static_argnums=static_argnums,
            donate_argnums=donate_argnums, compiler_options=compiler_options, check=check,
            memo=memo)
    except program_remat.ProgramRematError as err:
        return None, seconds, f"program recomputation not tried: {err}"
    finally:
        seconds["capture"] += time.monotonic() - start
    if not lever.chosen:
        return None, seconds, (f"program recomputation: nothing kept ({lever.candidates} "
                               f"candidate(s), {len(lever.tried)} set(s) compiled; bits "
                               f"{lever.bits}; {lever.seconds:.0f} s)")
    more = {"compiler_options": lever.compiler_options} if lever.compiler_options else {}
    got = _planned(plan_program, lever.fn, time_limit_s, more, seconds)
    if got.source != "olla_jax":
        got = dataclasses.replace(got, achieved_temp_bytes=got.xla_best_temp_bytes)
    how = "ordered and placed by us" if got.source == "olla_jax" else "XLA's order and placement"
    extra = max(0, lever.extra_flops)
    text = (f"program recomputation (olla_jax.program_remat: {len(lever.chosen)} of "
            f"{lever.candidates} value(s) computed again in the jaxpr), {how}: temp "
            f"{got.runs_temp_bytes / mib:,.2f} MiB against XLA's "
            f"{result.xla_best_temp_bytes / mib:,.2f} for the step as given (XLA's rewritten "
            f"step: {lever.temp / mib:,.2f}); {extra:,} extra FLOPs (compiled); bits "
            f"{lever.bits}; {lever.seconds:.0f} s of compiles and bit checks")
    plan = _of_the_step(result, got, f"program-remat+{got.engine}", text, time_limit_s,
                        extra_flops=extra, program_remat_values=len(lever.chosen),
                        program_remat_bits=lever.bits)
    return Side("program recomputation", plan), seconds, ""


# --- the terms: ours against one point of XLA's rematerialization -----

# Ours meets a point of XLA's remat (temp M, extra FLOPs F) when it reaches M
# with at most FLOPS_SHARE x F, or MEMORY_SHARE x M with at most F.
FLOPS_SHARE = 0.5
MEMORY_SHARE = 0.85


@dataclasses.dataclass(frozen=True)
class Verdict:
    """Whether our (temp, extra FLOPs) meets the target against one XLA point."""
    met: bool
    how: str        # which of the two terms is met, or how far each is


def against_xla(ours_temp: int, ours_flops: int, xla_temp: int, xla_flops: int, *,
                flops_share: float = FLOPS_SHARE, memory_share: float = MEMORY_SHARE) -> Verdict:
    """Ours against XLA's remat at temp ``xla_temp`` with ``xla_flops`` extra
    FLOPs: met when ours reaches that temp at ``flops_share`` x its FLOPs or
    fewer, or ``memory_share`` x that temp at its FLOPs or fewer."""
    if min(ours_temp, ours_flops, xla_temp, xla_flops) < 0:
        raise ValueError("temps and FLOPs must be non-negative")
    if ours_temp <= xla_temp and ours_flops <= flops_share * xla_flops:
        return Verdict(True, f"its memory at {_ratio(ours_flops, xla_flops)} its extra FLOPs "
                             f"(<= {flops_share:g})")
    if ours_temp <= memory_share * xla_temp and ours_flops <= xla_flops:
        return Verdict(True, f"{ours_temp / xla_temp:.3f} x its memory (<= {memory_share:g}) "
                             f"at {_ratio(ours_flops, xla_flops)} its extra FLOPs")
    return Verdict(False, f"{ours_temp / xla_temp:.3f} x its memory at "
                          f"{_ratio(ours_flops, xla_flops)} its extra FLOPs")


def _ratio(a: int, b: int) -> str:
    if b == 0:
        return "0 x" if a == 0 else "more than (it has none)"
    return f"{a / b:.2f} x"


def front(points: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """The (temp, extra FLOPs) points no other point is at least as good as on
    both, least temp first (XLA's remat is not monotone in its limit)."""
    kept = []
    for temp, flops in sorted(set(points)):
        if not kept or flops < kept[-1][1]:
            kept.append((temp, flops))
    return kept
