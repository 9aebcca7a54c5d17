"""``largest_batch``: the largest batch size whose step fits a memory capacity, per planner.

A step fits when its total (temp + arguments + outputs - aliased, the figure
``memory_analysis()`` gives and ``Plan.total_bytes`` reports) is at most the
capacity.  Modes:

- ``"xla"``: XLA's best plan (the schedulers XLA:CPU has, least temp; on a GPU XLA's default).
- ``"olla"``: ``olla_jax.plan`` (order and placement), planned figures (``feed_back=False``).
- ``"recompute"``: ``olla_jax.plan(..., memory_budget=capacity, recompute=True)``, where this
  olla_jax has it; otherwise the mode is skipped with a note.

The search (``search="predict"``) reads the step's total at each probe and
predicts the largest batch from a straight line through two measured totals
(temp grows about linearly with the batch), then probes next to the prediction
until a fitting batch sits next to a failing one; a bisection step whenever two
predictions in a row land on the same side keeps it within about twice
bisection's probes.  What one mode found is not probed again by the next:
ours fits wherever XLA's plan does (the planner keeps XLA's plan when it finds
nothing lower), and recomputation is only tried where ours without it does
not fit (``plan(memory_budget=...)`` returns that plan unchanged).
Recomputation is searched in two stages: by memory alone (ours at the batch,
shared with the olla mode, then ``budget.search`` for the capacity: planned
bytes, nothing fed back), from ``reach_target`` x XLA's batch, doubling then
bisecting, up to the working-set floor's answer (``reach_time_s``), which no
plan of these kernels passes; then the batch found is fed back, verified and
timed, and where that fails (step time over the limit, or the executable
over the capacity) the confirmations bisect below it.
``search="bisect"`` is the earlier search, for comparison: doubling from
``low``, then bisection, each mode starting from the previous mode's answer and
probing it again.  Both assume that memory grows with the batch size; that is
not guaranteed (XLA may pick other fusions or layouts at another size), so
every probed batch is recorded with its figures in ``BatchReport.probes``.

XLA's compiles (one per scheduler and batch) are most of a probe's time; a
``CaptureCache`` makes each once and shares it between the modes (ours and
recomputation mostly probe batches XLA's search compiled).  XLA's own search
(``quick_xla``, CPU) compiles for ``memory_analysis()`` alone, without dumps
and with LLVM's optimization off (about half a full compile); only its answer
and the batch above it are compiled in full, and where those disagree with the
quick figures the search goes on by full compiles (said in ``notes``).  A
recomputing plan whose first step-time round is over the limit is timed twice
more and judged by the median round.  Ours and recomputation (``quick_plans``)
plan from compiles with the same dumps at LLVM -O0 (the module and buffer
assignment are XLA's before code generation); only what is fed back, verified
and timed is planned again from full compiles, compared with the quick ones
(where they differ, the search goes on by full compiles, said so).  ``reachable_batch``
answers what no planner can beat: the largest batch whose arguments, outputs
and one instruction's working set fit (``FloorPoint``, ``Reach``).
"""

from __future__ import annotations

import functools
import math
import time
from typing import Any, Callable, Sequence

# ``_largest_batch`` calls the probes by these names, so tests replace them here;
# the rest is imported for ``olla_jax.batch``'s users and tests.
from olla_jax.batch.capacity import (  # noqa: F401
    _FRACTION_VARS, JAX_GPU_MEM_FRACTION, device_capacity, target_memory_bytes)
from olla_jax.batch.probes import (  # noqa: F401
    QUICK_NOTE, QUICK_OPTIONS, CaptureCache, _compile_differences, _olla_plan, _olla_total,
    _quick_differences, _Step, _step_of, _xla_quick_total, _xla_total, floor_point)
from olla_jax.batch.recompute import (  # noqa: F401
    STEP_TIME_REPEATS, STEP_TIME_ROUNDS, _MemoryFit, _recompute_confirm, _recompute_memory,
    _recompute_support, _recompute_total, _retimed, _Skip, _why_not_met)
from olla_jax.batch.report import MIB, BatchReport, FloorPoint, ModeResult, Probe, Reach  # noqa: F401
from olla_jax.batch.search import (  # noqa: F401
    _GROWTH, _bisect_mode, _boundary_slope, _Point, _predict, _recompute_search, _search)
from olla_jax.capture.base import Backend

MODES = ("xla", "olla", "recompute")
SEARCHES = ("predict", "bisect")


class _OutOfTime(Exception):
    """The mode's seconds (``mode_time_s``) are spent: no further probe is started."""


def reachable_batch(make_step: Callable[[int], Any], capacity_bytes: int, *, backend: str = "cpu",
                    batches: Sequence[int] = (), low: int = 1, time_s: float | None = None,
                    cache: CaptureCache | None = None,
                    quick: Callable[[int], bool] | None = None) -> Reach:
    """The largest batch whose working-set floor plus arguments and outputs fits
    ``capacity_bytes`` (see ``Reach``): an upper limit of every answer
    ``largest_batch`` can give for ``olla`` and ``recompute``, assuming (as the
    search does) that the floor grows with the batch.  ``batches``: computed
    first (e.g. XLA's answer and 1.5 x it; cached compiles cost no compile);
    ``time_s``: no further batch starts after it (the answer is then a lower
    bound, ``complete`` False); ``quick(batch)``: compile that batch with
    ``QUICK_OPTIONS`` (``floor_point``)."""
    target = Backend.parse(backend)
    cache = cache if cache is not None else CaptureCache()
    t0 = time.monotonic()
    points: dict[int, FloorPoint] = {}

    def at(batch: int) -> FloorPoint:
        if batch not in points:
            if time_s is not None and time.monotonic() - t0 > time_s:
                raise _OutOfTime()
            points[batch] = floor_point(_step_of(make_step(batch), batch), target, cache, batch,
                                        quick=bool(quick and quick(batch)))
        return points[batch]

    def probe(batch: int) -> _Point:
        p = at(batch)
        return _Point(batch, p.floor_total <= capacity_bytes, p.floor_total)

    complete = True
    try:
        for b in batches:
            at(b)
        known = [_Point(b, p.floor_total <= capacity_bytes, p.floor_total)
                 for b, p in points.items()]
        largest = _predict(probe, low, None, capacity_bytes, known)
    except _OutOfTime:
        complete = False
        largest = max((b for b, p in points.items() if p.floor_total <= capacity_bytes),
                      default=None)
    over = [b for b, p in points.items() if p.floor_total > capacity_bytes
            and (largest is None or b > largest)]
    return Reach(largest, min(over, default=None),
                 tuple(points[b] for b in sorted(points)), complete, time.monotonic() - t0)


def largest_batch(make_step: Callable[[int], Any], *, capacity_bytes: int | None = None,
                  backend: str = "cpu", modes: Sequence[str] = ("xla", "olla"), low: int = 1,
                  high: int | None = None, time_limit_s: float = 10.0,
                  step_time_limit: float = 1.10, reserve_bytes: int | None = None,
                  search: str = "predict", mode_time_s: float | None = None,
                  cache: CaptureCache | None = None, time_s: float | None = None,
                  reach_time_s: float | None = None, reach_target: float = 1.5,
                  hints: dict[str, int] | None = None, quick_xla: bool = True,
                  quick_plans: bool = True) -> BatchReport:
    """The largest batch size whose step fits ``capacity_bytes``, for each of ``modes``.

    ``make_step(batch_size)`` returns ``(fn, args)`` or a Step-like object (fn,
    args, static_argnums, donate_argnums), e.g. ``lambda b: examples.make("gpt2",
    "tiny", b)``.  ``capacity_bytes``: the bytes one step may use; required on CPU.
    For ``gpu:<target>`` it defaults to the device's memory less ``reserve_bytes``
    (see ``device_capacity``).  ``time_limit_s``: the planner's limit per probe
    (order and placement; the recomputation search gets as much again).
    ``step_time_limit``: the slowest step, relative to XLA's at the same batch, a
    plan that recomputes values may take to count as fitting: measured on CPU with
    concrete arguments, in this process, XLA's executable and the recomputing one
    called in turn, fastest call over fastest call of ``STEP_TIME_REPEATS`` a side
    (when it cannot be measured the batch does not count).

    ``search``: "predict" (a line through measured totals; what one mode settles
    is not probed again by the next; recomputation probed by memory alone, then
    fed back, verified and timed at the batch it settles on) or "bisect" (the
    earlier doubling and bisection, every recomputing probe verified and timed);
    see the module doc.

    ``mode_time_s``: seconds for "olla" and "recompute" each, after which no
    further probe starts (the one running finishes); the mode's answer is then
    the largest batch seen to fit, a lower bound, with ``ModeResult.complete``
    False and a note.  ``time_s``: seconds for the whole call, XLA's search
    included (its answer, the ratios' denominator, is then a lower bound too,
    and said so): a caller with a hard limit (a worker that will be killed)
    gets what was found instead of nothing.
    ``cache``: XLA's compiles shared between the modes (and with the caller,
    e.g. the capture that set the capacity); a fresh one by default.
    ``reach_time_s``: run ``reachable_batch`` (seconds) after XLA's and our
    search, from XLA's answer and ``reach_target`` x it; its answer
    (``BatchReport.reach``) caps the recomputation search, which no plan of
    these kernels can take past it.
    ``hints``: per mode ("xla", "olla", "recompute", and "reach" for the floor
    search), a batch to probe first with the one above it (e.g. a previous
    run's answers): where they bracket the answer, two probes settle it; the
    answer is still this call's own probes, a fitting batch next to a failing one.
    ``quick_xla`` (``search="predict"``, CPU): XLA's search probes by compiles
    made for their figures alone (``CaptureCache.quick_total``), then compiles
    its answer and the batch above it in full (those figures are the ones
    reported; where they disagree it searches on by full compiles).
    ``quick_plans`` (``search="predict"``, CPU): ours and recomputation probe
    plans of compiles with the same options and dumps at LLVM -O0, and the floor
    search compiles so too; ours' answer and the batch above it are compiled
    in full and the compiles compared (module, proto less its id, buffer
    assignment, values, live ranges, ``memory_analysis()``), and the batch
    recomputation settles on is planned again from full compiles, then fed
    back, verified and timed (XLA's executable it is timed against is the full
    one).  Where a comparison differs it is said in ``notes`` and the search
    goes on by full compiles.
    """
    if search not in SEARCHES:
        raise ValueError(f"search must be one of {', '.join(SEARCHES)}, not {search!r}")
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        raise ValueError(f"unknown modes {unknown}; choose from {', '.join(MODES)}")
    if isinstance(low, bool) or not isinstance(low, int) or low < 1:
        raise ValueError(f"low must be a positive integer, got {low!r}")
    if high is not None and (not isinstance(high, int) or high < low):
        raise ValueError(f"high must be an integer >= low ({low}), got {high!r}")
    memory = reserve = None
    target = Backend.parse(backend)
    backend = target.name
    if capacity_bytes is None:
        if target.kind != "gpu":
            raise ValueError(f"capacity_bytes is required for backend {backend!r} (the bytes one "
                             "step may use); only GPU backends have a device memory size to "
                             "default to")
        capacity_bytes, memory, reserve = device_capacity(target, reserve_bytes)
    elif reserve_bytes is not None:
        raise ValueError("give capacity_bytes or reserve_bytes, not both: reserve_bytes is held "
                         "back from a GPU's device memory when capacity_bytes is not given")
    if isinstance(capacity_bytes, bool) or not isinstance(capacity_bytes, int) or capacity_bytes <= 0:
        raise ValueError(f"capacity_bytes must be a positive integer, got {capacity_bytes!r}")
    for name, value in (("mode_time_s", mode_time_s), ("time_s", time_s),
                        ("reach_time_s", reach_time_s), ("time_limit_s", time_limit_s)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not value > 0):
            raise ValueError(f"{name} must be positive seconds" +
                             (" or None" if name != "time_limit_s" else "") + f", got {value!r}")
    if isinstance(step_time_limit, bool) or not isinstance(step_time_limit, (int, float)) \
            or not step_time_limit >= 1.0:
        raise ValueError(f"step_time_limit must be a number >= 1.0 (x XLA's step time), got "
                         f"{step_time_limit!r}")
    if isinstance(reach_target, bool) or not isinstance(reach_target, (int, float)) \
            or not reach_target > 1.0:
        raise ValueError(f"reach_target must be a ratio above 1.0, got {reach_target!r}")
    hints = dict(hints or {})
    for key, value in hints.items():
        if key not in MODES + ("reach",) or isinstance(value, bool) or not isinstance(value, int) \
                or value < 1:
            raise ValueError(f"hints maps a mode ({', '.join(MODES)}) or 'reach' to a positive "
                             f"batch; got {key!r}: {value!r}")
    cache = cache if cache is not None else CaptureCache()
    with cache.shared_with_plan():
        return _largest_batch(make_step, capacity_bytes, target, modes, low, high, time_limit_s,
                              step_time_limit, search, mode_time_s, cache, memory, reserve,
                              time_s, reach_time_s, reach_target, hints, quick_xla,
                              quick_plans)


def _largest_batch(make_step, capacity_bytes: int, target: Backend, modes, low, high,
                   time_limit_s, step_time_limit, search, mode_time_s, cache, memory,
                   reserve, time_s=None, reach_time_s=None, reach_target=1.5,
                   hints=None, quick_xla=True, quick_plans=True) -> BatchReport:
    hints = hints or {}
    quick_xla = quick_xla and (high is None or high - low > 1)   # (two batches: both edges)
    # Ours and recomputation probe plans of figures-only compiles while this holds
    # (cleared where one differs from the full compile of the same batch).
    quick_on = [quick_plans and target.kind == "cpu" and search == "predict"]
    backend = target.name
    probes: list[Probe] = []
    notes: list[str] = []
    end = time.monotonic() + time_s if time_s else float("inf")   # the whole call's
    deadline = [end]   # the current mode's, time.monotonic()
    points: dict[str, dict[int, _Point]] = {m: {} for m in modes}   # compiled probes per mode
    plans: dict[int, Any] = {}          # ours (order and placement) per batch, for recomputation
    quick_plans_made: set[int] = set()  # batches whose ``plans`` entry is of figures-only compiles
    full_plans: dict[int, Any] = {}     # ours from full compiles where ``plans`` has a quick one
    compared: dict[int, list[str]] = {}   # batch -> what the quick compile had that the full did not
    memory_fits: dict[int, _MemoryFit] = {}   # recomputation by memory alone, per batch
    confirmed: dict[int, _Point] = {}         # recomputation fed back, verified, timed

    @functools.lru_cache(maxsize=32)   # modes and the floor search probe the same batches
    def step_at(batch: int) -> _Step:
        try:
            made = make_step(batch)
        except Exception as err:
            raise ValueError(f"make_step({batch}) failed: {type(err).__name__}: {err}") from err
        return _step_of(made, batch)

    def plan_at(batch: int):
        """The probe's plan: of figures-only compiles (``quick_plans``) unless
        XLA's search compiled this batch in full already (shared, no compile)."""
        if batch not in plans:
            quick_here = quick_on[0] and batch not in points["xla"]
            plans[batch] = _olla_plan(step_at(batch), target, time_limit_s, quick=quick_here)
            if quick_here:
                quick_plans_made.add(batch)
        return plans[batch]

    def compare_at(batch: int) -> list[str]:
        """The quick plan's capture at ``batch`` against the full compile of the
        same scheduler; where they differ, said in ``notes`` and no further probe
        is made by figures-only compiles."""
        if batch in compared or batch not in quick_plans_made:
            return compared.get(batch, [])
        differ = compared[batch] = _quick_differences(plans[batch], step_at(batch), target,
                                                      cache)
        if differ and quick_on[0]:
            quick_on[0] = False
            notes.append(f"ours and recomputation: the figures-only compile at batch {batch} "
                         f"differs from the full compile ({', '.join(differ)}); probed by full "
                         "compiles from there on")
            for b in sorted(quick_plans_made):   # nothing planned from them is used again
                del plans[b]
                memory_fits.pop(b, None)
                points["olla"].pop(b, None)
                if b in full_plans:
                    plans[b] = full_plans.pop(b)
            quick_plans_made.clear()
        return differ

    def full_plan_at(batch: int):
        """Ours at ``batch`` from full compiles (what is fed back, verified and
        timed), compared with the figures-only plan's compile where there was one."""
        if batch not in quick_plans_made:
            return plan_at(batch)
        if batch not in full_plans:
            full = full_plans[batch] = _olla_plan(step_at(batch), target, time_limit_s)
            compare_at(batch)   # (plan's compiles, cached: no compile)
            return full
        return full_plans[batch]

    def settle_olla(largest: int | None, hint, known: dict[int, _Point]) -> int | None:
        """Ours found by plans of figures-only compiles: the batches at the
        answer's edge compiled in full and compared (the plan's input, not its
        figures: a plan of the same module and buffer assignment is the same
        plan).  Where they differ, searched again by full compiles."""
        edge = [b for b in (largest, (largest or low - 1) + 1)
                if b is not None and b in quick_plans_made and b in points["olla"]]
        for b in edge:
            t0 = started()
            differ = compare_at(b)
            notes.append(f"ours at batch {b}: the full compile compared with the figures-only "
                         "one, " + (f"{', '.join(differ)} differ" if differ else
                                    "the same module and buffer assignment")
                         + f" ({time.monotonic() - t0:.0f} s)")
            if differ:
                break
        if quick_on[0] or not edge:
            return largest
        again = {b: p for b, p in known.items() if p.total is None or b in points["olla"]}
        return _predict(lambda b: probe_point("olla", b), low, high, capacity_bytes,
                        tuple({**again, **points["olla"]}.values()), hint)

    def measure(mode: str, batch: int) -> tuple[int, bool, str]:
        step = step_at(batch)
        if mode == "xla":
            total = _xla_total(step, target, cache)
            return total, total <= capacity_bytes, ""
        if mode == "olla":
            total = int(plan_at(batch).total_bytes)
            return total, total <= capacity_bytes, (QUICK_NOTE if batch in quick_plans_made
                                                    else "")
        return _recompute_total(step, target, time_limit_s, capacity_bytes, step_time_limit)

    def started() -> float:
        if time.monotonic() > deadline[0]:
            raise _OutOfTime()
        return time.monotonic()

    def check_batch_used(mode: str, mine: dict[int, _Point], batch: int, total, fits: bool):
        if fits and high is None and total is not None:
            same = [b for b, p in mine.items() if p.fits and p.total == total
                    and (2 * b <= batch or 2 * batch <= b)]
            if same:
                raise ValueError(f"mode {mode}: the step needs {total:,} bytes at batch "
                                 f"{min(same[0], batch)} and at batch {max(same[0], batch)}; does "
                                 "make_step use its batch size? (give high= to search a bounded "
                                 "range anyway)")

    def probe_point(mode: str, batch: int) -> _Point:
        mine = points[mode]
        if batch in mine:
            return mine[batch]
        t0 = started()
        total, fits, note = measure(mode, batch)
        probes.append(Probe(mode, batch, total, fits, time.monotonic() - t0, note))
        check_batch_used(mode, mine, batch, total, fits)
        mine[batch] = _Point(batch, fits, total)
        return mine[batch]

    quick: dict[int, _Point] = {}   # XLA's search by figures-only compiles (``quick_total``)

    def quick_point(batch: int) -> _Point:
        if batch in points["xla"]:
            return points["xla"][batch]
        below = batch == low or (batch - 1 in quick and quick[batch - 1].fits)
        above = batch == high or (batch + 1 in quick and not quick[batch + 1].fits)
        if below and above:   # the answer's edge either way: compiled in full, once
            return probe_point("xla", batch)
        if batch not in quick:
            t0 = started()
            total = _xla_quick_total(step_at(batch), target, cache)
            fits = total <= capacity_bytes
            probes.append(Probe("xla", batch, total, fits, time.monotonic() - t0,
                                "figures only (LLVM -O0, no dumps)"))
            check_batch_used("xla", quick, batch, total, fits)
            quick[batch] = _Point(batch, fits, total)
        return quick[batch]

    def settle_xla(largest: int | None, hint) -> int | None:
        """XLA's answer by figures-only compiles, compiled again as every other
        XLA figure is (with its dumps, shared with ours): the answer and the
        batch above it.  Where either disagrees, the search goes on from the
        full compiles alone."""
        edge = [b for b in (largest, (largest or low - 1) + 1)
                if b is not None and low <= b and (high is None or b <= high)]
        full = {b: probe_point("xla", b) for b in edge}
        if all(full[b].fits == quick[b].fits for b in edge if b in quick):
            return largest
        notes.append("XLA's figures-only compiles disagreed with its full compiles at batch "
                     + ", ".join(f"{b} ({quick[b].total:,} vs {full[b].total:,} bytes)"
                                 for b in edge if b in quick and full[b].fits != quick[b].fits)
                     + "; searched again by full compiles")
        return _predict(lambda b: probe_point("xla", b), low, high, capacity_bytes,
                        tuple(points["xla"].values()), hint)

    def memory_point(batch: int) -> _Point:
        """Recomputation at ``batch`` by the plan's figures (no feed-back, no timing)."""
        if target.kind != "cpu":   # GPU: plan(memory_budget=...) whole (ours and XLA's remat)
            point = probe_point("recompute", batch)
            memory_fits.setdefault(batch, _MemoryFit(point.total, point.fits, ""))
            return point
        if batch not in memory_fits:
            t0 = started()
            fit = _recompute_memory(plan_at(batch), capacity_bytes, time_limit_s)
            memory_fits[batch] = fit
            probes.append(Probe("recompute", batch, fit.total, fit.fits,
                                time.monotonic() - t0, "memory only: " + fit.note
                                + (f" ({QUICK_NOTE})" if batch in quick_plans_made else "")))
            check_batch_used("recompute", {b: _Point(b, m.fits, m.total)
                                           for b, m in memory_fits.items() if b != batch},
                             batch, fit.total, fit.fits)
        fit = memory_fits[batch]
        return _Point(batch, fit.fits, fit.total)

    def confirm_point(batch: int) -> _Point:
        """The batch the memory search settled on: fed back, verified and timed."""
        if batch not in confirmed:
            mem = memory_point(batch)
            if not mem.fits:
                confirmed[batch] = mem
                return mem
            if memory_fits[batch].found is None and batch not in quick_plans_made:
                confirmed[batch] = mem   # no recomputation: nothing to verify or time
                return mem
            t0 = started()
            full, fit, said = plan_at(batch), memory_fits[batch], ""
            if batch in quick_plans_made:   # planned again from the full compiles
                full = full_plan_at(batch)
                fit = _recompute_memory(full, capacity_bytes, time_limit_s)
                differ = compared.get(batch, [])
                said = ("; planned again from full compiles (the figures-only compile's "
                        + (f"{', '.join(differ)} differed)" if differ else
                           "module and buffer assignment the same)"))
            if fit.found is None:   # fits without recomputation, or no longer fits
                total, fits, note = fit.total, fit.fits, "memory only: " + fit.note
            else:
                total, fits, note = _recompute_confirm(full, fit, step_at(batch),
                                                       capacity_bytes, step_time_limit)
            probes.append(Probe("recompute", batch, total, fits, time.monotonic() - t0,
                                note + said))
            confirmed[batch] = _Point(batch, fits, total)
        return confirmed[batch]

    reach: Reach | None = None

    def floor_search() -> None:
        nonlocal reach
        xla = next((r.largest_batch for r in results if r.mode == "xla"), None)
        if not reach_time_s or not xla or time.monotonic() > end:
            return
        aim = max(xla + 1, math.ceil(reach_target * xla))
        smallest = min(points["xla"], default=xla)   # (compiled in full: shared, no new compile)
        hinted = (hints["reach"], hints["reach"] + 1) if hints.get("reach", 0) > smallest else ()
        try:
            reach = reachable_batch(step_at, capacity_bytes, backend=target,
                                    batches=(smallest, xla, aim, *hinted), low=smallest,
                                    time_s=min(reach_time_s, end - time.monotonic()),
                                    cache=cache, quick=lambda b: quick_on[0]
                                    and b not in points["xla"]
                                    and (b not in plans or b in quick_plans_made))
        except _OutOfTime:
            pass

    # What an earlier mode settles for a later one: ours fits wherever XLA's plan
    # fits (no figure: ours is lower), recomputation wherever ours fits (the same plan).
    floors = {"olla": ("xla",), "recompute": ("olla", "xla")}
    results: list[ModeResult] = []
    for mode in modes:
        if mode == "recompute" and search == "predict":
            floor_search()
        known: dict[int, _Point] = {}
        for earlier in reversed([m for m in floors.get(mode, ()) if m in points]):
            for b, p in points[earlier].items():
                if p.fits:
                    known[b] = p if earlier == "olla" else _Point(b, True, None)
        for r in results:   # fits an earlier mode inferred without a probe
            if r.mode in floors.get(mode, ()) and r.largest_batch and r.largest_batch not in known:
                known[r.largest_batch] = _Point(r.largest_batch, True, r.total_bytes
                                                if r.mode == "olla" else None)
        hint = None
        for earlier in floors.get(mode, ()):
            if earlier in points and hint is None:
                hint = _boundary_slope(points[earlier].values(), capacity_bytes)
        # XLA's answer is the denominator of every ratio: only the whole call's time cuts it.
        deadline[0] = min(end, time.monotonic() + mode_time_s if mode_time_s and mode != "xla"
                          else float("inf"))
        stopped, quick_note = False, ""
        mine = points[mode]
        try:
            if mode == "recompute":
                _recompute_support()
            if search == "bisect":
                largest = _bisect_mode(lambda b, m=mode: probe_point(m, b).fits, low, high,
                                       results, mode)
            elif mode == "recompute":
                mine = confirmed
                ceiling = high
                if reach is not None and reach.complete and reach.smallest_failing is not None:
                    ceiling = min(c for c in (high, reach.smallest_failing - 1) if c is not None)
                aim = None
                xla = next((r.largest_batch for r in results if r.mode == "xla"), None)
                if xla:
                    aim = max(xla + 1, math.ceil(reach_target * xla))
                largest = _recompute_search(memory_point, confirm_point, known, low, ceiling,
                                            aim, hints.get("recompute"))
            else:
                probe = ((lambda b: quick_point(b)) if mode == "xla" and quick_xla
                         else (lambda b, m=mode: probe_point(m, b)))
                h = hints.get(mode)
                for b in ((h, h + 1) if h and h >= low and (high is None or h < high) else ()):
                    if not (b in known and known[b].fits):   # (full: where they bracket
                        known[b] = probe_point(mode, b)      # the answer, it is settled)
                largest = _predict(probe, low, high, capacity_bytes, tuple(known.values()), hint)
                if mode == "xla" and quick_xla:
                    largest = settle_xla(largest, hint)
                if mode == "olla":
                    largest = settle_olla(largest, hint, known)
        except _Skip as skip:
            results.append(ModeResult(mode, None, None, None, f"skipped: {skip}"))
            continue
        except _OutOfTime:
            stopped = True   # the largest batch seen to fit, a lower bound
            seen = [b for b, p in {**known, **mine}.items() if p.fits]
            largest = max(seen, default=None)
            if mode == "xla" and max((b for b, p in quick.items() if p.fits),
                                     default=0) > (largest or 0):
                largest = max(b for b, p in quick.items() if p.fits)
                mine = {**mine, largest: quick[largest]}
                quick_note = "by a figures-only compile, not compiled in full"
        failing = sorted(b for b, p in mine.items()
                         if not p.fits and (largest is None or b > largest))
        if mode == "recompute" and mine is confirmed:
            failing = sorted(set(failing) | {b for b, m in memory_fits.items()
                                             if not m.fits and (largest is None or b > largest)})
        note, total = "", None
        if mode == "recompute" and largest is not None and largest in mine \
                and not mine[largest].fits:
            largest = None   # (the walk found no batch within the step-time limit)
        if largest is not None:
            if largest in mine:
                total = mine[largest].total
            else:
                total = known[largest].total
                note = ("fits without recomputation (ours at this batch); not probed again"
                        if mode == "recompute" and total is not None else
                        "fits: XLA's plan does, and ours is never above it; not planned at this "
                        "batch")
        if stopped:
            above = f"; {failing[0]} does not fit" if failing else ""
            unconfirmed = sorted(b for b, m in memory_fits.items() if m.fits and m.found is not None
                                 and b not in confirmed and (largest is None or b > largest)) \
                if mode == "recompute" else []
            note = (f"stopped after the {'call' if deadline[0] >= end else 'mode'}'s "
                    f"{(time_s if deadline[0] >= end else mode_time_s):g} s, before the answer "
                    "was bracketed: "
                    + (f"batch {largest} fits, larger ones were not all tried{above}"
                       if largest is not None else f"no batch seen to fit{above}")
                    + (f"; {unconfirmed[-1]} fits by memory, not yet verified or timed"
                       if unconfirmed else "")
                    + (f" ({note})" if note else "") + (f" ({quick_note})" if quick_note else ""))
        elif largest is None:
            note = f"batch {low} does not fit"
        elif largest == high:
            note = f"reached high={high}; larger batches were not tried"
        elif mode == "recompute" and reach is not None and reach.complete \
                and reach.smallest_failing is not None and largest == reach.smallest_failing - 1:
            note = (f"the working-set floor does not fit at batch {reach.smallest_failing}: "
                    "no plan of these kernels fits it")
        results.append(ModeResult(mode, largest, total, failing[0] if failing else None, note,
                                  complete=not stopped))
    if "recompute" not in modes or search != "predict":
        floor_search()
    if cache.hits:
        notes.append(f"XLA's compiles shared between modes: {cache.hits} reused, "
                     f"{cache.misses} made")
    return BatchReport(backend=backend, capacity_bytes=int(capacity_bytes),
                       device_memory_bytes=memory, reserve_bytes=reserve,
                       results=tuple(results), probes=tuple(probes), notes=tuple(notes),
                       reach=reach)


__all__ = ["BatchReport", "CaptureCache", "FloorPoint", "ModeResult", "Probe", "Reach",
           "device_capacity", "largest_batch", "reachable_batch"]
