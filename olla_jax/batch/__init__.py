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
from collections.abc import Mapping
from typing import Any, Callable, Sequence

# The search calls the probes by these names, so tests replace them here; the
# rest is imported for ``olla_jax.batch``'s users and tests.
from olla_jax.batch.capacity import (  # noqa: F401
    _FRACTION_VARS, JAX_GPU_MEM_FRACTION, device_capacity, target_memory_bytes)
from olla_jax.batch.probes import (  # noqa: F401
    QUICK_NOTE, QUICK_OPTIONS, CaptureCache, _compile_differences, _olla_plan, _olla_total,
    _quick_differences, _Step, _step_of, _xla_quick_total, _xla_total, floor_point)
from olla_jax.batch.recompute import (  # noqa: F401
    STEP_TIME_REPEATS, STEP_TIME_ROUNDS, _MemoryFit, _recompute_confirm, _recompute_memory,
    _recompute_support, _recompute_total, _retimed, _Skip, _why_not_met)
from olla_jax.batch.report import (  # noqa: F401
    MIB, BatchReport, FloorPoint, ModeResult, Probe, Reach)
from olla_jax.batch.search import (  # noqa: F401
    _GROWTH, _bisect_mode, _boundary_slope, _Point, _predict, _recompute_search, _search)
from olla_jax.capture.base import Backend
from olla_jax.sizes import parse_size

MODES = ("xla", "olla", "recompute")
SEARCHES = ("predict", "bisect")


class _OutOfTime(Exception):
    """The mode's seconds (``mode_time_s``) are spent: no further probe is started."""


def reachable_batch(make_step: Callable[[int], Any], capacity_bytes: int | str, *, backend: str = "cpu",
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
    capacity_bytes = parse_size(capacity_bytes, "capacity_bytes")
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


def largest_batch(make_step: Callable[[int], Any], *, capacity_bytes: int | str | None = None,
                  backend: str = "cpu", modes: Sequence[str] = ("xla", "olla"), low: int = 1,
                  high: int | None = None, time_limit_s: float = 10.0,
                  step_time_limit: float = 1.10, reserve_bytes: int | str | None = None,
                  search: str = "predict", mode_time_s: float | None = None,
                  cache: CaptureCache | None = None, time_s: float | None = None,
                  reach_time_s: float | None = None, reach_target: float = 1.5,
                  hints: dict[str, int] | None = None, quick_xla: bool = True,
                  quick_plans: bool = True) -> BatchReport:
    """The largest batch size whose step fits ``capacity_bytes`` (bytes, or a
    string such as ``"64MiB"`` as the CLI's ``--capacity``), for each of ``modes``.

    ``make_step(batch_size)`` returns ``(fn, args)``, ``(fn, args, kwargs)`` or a
    Step-like object (fn, args and, where it has them, kwargs, static_argnums,
    donate_argnums, static_argnames, donate_argnames), e.g. ``lambda b:
    examples.make("gpt2", "tiny", b)``.  ``capacity_bytes``: the bytes one step
    may use; required on CPU.
    For ``gpu:<target>`` it defaults to the device's memory less ``reserve_bytes``
    (see ``device_capacity``).  ``time_limit_s``: the planner's limit per probe
    (order and placement; the recomputation search gets as much again).
    The "olla" and "recompute" answers are what the planner finds within that
    limit: where it runs to the limit (no plan met its bound first), a longer
    limit or a quieter machine may find a batch more (``olla-jax batch`` uses
    this default unless given ``--time_limit_s``).
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
    if isinstance(modes, str):   # one mode, as jax.jit takes static_argnames="x"
        modes = (modes,)
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
    capacity_bytes = parse_size(capacity_bytes, "capacity_bytes")   # 2**26 or "64MiB"
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
    if hints is not None and not isinstance(hints, Mapping):
        raise ValueError(f"hints maps a mode ({', '.join(MODES)}) or 'reach' to a batch to probe "
                         f"first, e.g. {{'xla': 38, 'olla': 39}}; got a {type(hints).__name__}")
    hints = dict(hints or {})
    for key, value in hints.items():
        if key not in MODES + ("reach",) or isinstance(value, bool) or not isinstance(value, int) \
                or value < 1:
            raise ValueError(f"hints maps a mode ({', '.join(MODES)}) or 'reach' to a positive "
                             f"batch; got {key!r}: {value!r}")
    cache = cache if cache is not None else CaptureCache()
    with cache.shared_with_plan():
        call = _Search(make_step, capacity_bytes, target, modes, low=low, high=high,
                       time_limit_s=time_limit_s, step_time_limit=step_time_limit,
                       search=search, mode_time_s=mode_time_s, cache=cache, time_s=time_s,
                       reach_time_s=reach_time_s, reach_target=reach_target, hints=hints,
                       quick_xla=quick_xla, quick_plans=quick_plans)
        return call.run(memory, reserve)


# What an earlier mode settles for a later one (``_Search.known_for``).
_FLOORS = {"olla": ("xla",), "recompute": ("olla", "xla")}


class _Search:
    """One ``largest_batch`` call: the modes searched in turn, each from what the
    earlier ones settled, every probe recorded.  The probes it makes
    (``_xla_total``, ``_olla_plan``, ``_recompute_memory``, ...), ``reachable_batch``
    and ``time`` are this module's names, looked up at each call (tests replace
    them here)."""

    def __init__(self, make_step: Callable[[int], Any], capacity: int, target: Backend,
                 modes: Sequence[str], *, low: int, high: int | None, time_limit_s: float,
                 step_time_limit: float, search: str, mode_time_s: float | None,
                 cache: CaptureCache, time_s: float | None, reach_time_s: float | None,
                 reach_target: float, hints: dict[str, int], quick_xla: bool,
                 quick_plans: bool) -> None:
        self.make_step, self.capacity, self.target, self.cache = make_step, capacity, target, cache
        self.modes, self.low, self.high, self.search = modes, low, high, search
        self.time_limit_s, self.step_time_limit = time_limit_s, step_time_limit
        self.time_s, self.mode_time_s = time_s, mode_time_s
        self.reach_time_s, self.reach_target, self.hints = reach_time_s, reach_target, hints
        self.quick_xla = quick_xla and (high is None or high - low > 1)   # (two batches: both edges)
        # Ours and recomputation probe plans of figures-only compiles while this holds
        # (cleared where one differs from the full compile of the same batch).
        self.quick_on = quick_plans and target.kind == "cpu" and search == "predict"
        self.end = time.monotonic() + time_s if time_s else float("inf")   # the whole call's
        self.deadline = self.end   # the current mode's (time.monotonic())
        self.longest: dict[str, float] = {}   # seconds of the longest probe, per kind
        # What the report gets: every probe in the order made, the notes, each
        # mode's answer so far, and the working-set floor's search once run.
        self.probes: list[Probe] = []
        self.notes: list[str] = []
        self.results: list[ModeResult] = []
        self.reach: Reach | None = None
        # compiled probes per mode (recomputation's, with search="bisect" or on GPU)
        self.points: dict[str, dict[int, _Point]] = {m: {} for m in modes}
        # XLA's search by figures-only compiles (``quick_total``)
        self.quick: dict[int, _Point] = {}
        # ours (order and placement) per batch, recomputation's starting point
        self.plans: dict[int, Any] = {}
        # the batches whose ``plans`` entry is of figures-only compiles
        self.quick_plans_made: set[int] = set()
        # ours from full compiles, where ``plans`` holds a figures-only one
        self.full_plans: dict[int, Any] = {}
        # per batch, what its figures-only compile had that the full one did not
        self.compared: dict[int, list[str]] = {}
        # recomputation by memory alone, then fed back, verified and timed, per batch
        self.memory_fits: dict[int, _MemoryFit] = {}
        self.confirmed: dict[int, _Point] = {}
        # the step per batch (the modes and the floor search probe the same batches)
        self.step_at: Callable[[int], _Step] = functools.lru_cache(maxsize=32)(self._make_step)

    # ---- the modes in turn ----------------------------------------------------------

    def run(self, device_memory: int | None, reserve: int | None) -> BatchReport:
        """Every mode in turn, then the report (``device_memory``, ``reserve``:
        where the capacity came from, for it)."""
        for mode in self.modes:
            if mode == "recompute" and self.search == "predict":
                self.floor_search()
            self.results.append(self.mode(mode))
        if "recompute" not in self.modes or self.search != "predict":
            self.floor_search()
        if self.cache.hits:
            self.notes.append(f"XLA's compiles shared between modes: {self.cache.hits} reused, "
                              f"{self.cache.misses} made")
        return BatchReport(backend=self.target.name, capacity_bytes=int(self.capacity),
                           device_memory_bytes=device_memory, reserve_bytes=reserve,
                           results=tuple(self.results), probes=tuple(self.probes),
                           notes=tuple(self.notes), reach=self.reach)

    def mode(self, mode: str) -> ModeResult:
        """One mode's search, from what the earlier modes settled, and its answer."""
        known = self.known_for(mode)
        hint = None
        for earlier in _FLOORS.get(mode, ()):
            if earlier in self.points and hint is None:
                hint = _boundary_slope(self.points[earlier].values(), self.capacity)
        # XLA's answer is the denominator of every ratio: only the whole call's time cuts it.
        self.deadline = min(self.end, time.monotonic() + self.mode_time_s
                            if self.mode_time_s and mode != "xla" else float("inf"))
        mine = (self.confirmed if mode == "recompute" and self.search == "predict"
                else self.points[mode])
        try:
            largest = self.search_mode(mode, known, hint)
        except _Skip as skip:
            return ModeResult(mode, None, None, None, f"skipped: {skip}")
        except _OutOfTime:   # the largest batch seen to fit, a lower bound
            largest = max((b for b, p in {**known, **mine}.items() if p.fits), default=None)
            quick = max((b for b, p in self.quick.items() if p.fits), default=0)
            if mode == "xla" and quick > (largest or 0):
                return self.answer(mode, quick, known, {**mine, quick: self.quick[quick]},
                                   stopped=True,
                                   how="by a figures-only compile, not compiled in full")
            return self.answer(mode, largest, known, mine, stopped=True)
        return self.answer(mode, largest, known, mine)

    def known_for(self, mode: str) -> dict[int, _Point]:
        """The batches an earlier mode settled for ``mode``: ours fits wherever XLA's
        plan fits (no figure: ours is lower), recomputation wherever ours fits (the
        same plan)."""
        known: dict[int, _Point] = {}
        for earlier in reversed([m for m in _FLOORS.get(mode, ()) if m in self.points]):
            for b, p in self.points[earlier].items():
                if p.fits:
                    known[b] = p if earlier == "olla" else _Point(b, True, None)
        for r in self.results:   # fits an earlier mode inferred without a probe
            if r.mode in _FLOORS.get(mode, ()) and r.largest_batch \
                    and r.largest_batch not in known:
                known[r.largest_batch] = _Point(r.largest_batch, True, r.total_bytes
                                                if r.mode == "olla" else None)
        return known

    def search_mode(self, mode: str, known: dict[int, _Point], hint: float | None) -> int | None:
        """The mode's largest fitting batch by ``self.search``; ``known`` gains the
        hinted probes (``hints``)."""
        if mode == "recompute":
            _recompute_support()
        if self.search == "bisect":
            return _bisect_mode(lambda b: self.probe_point(mode, b).fits, self.low, self.high,
                                self.results, mode)
        if mode == "recompute":
            floor = self.floor_failing()
            ceiling = (self.high if floor is None else
                       min(c for c in (self.high, floor - 1) if c is not None))
            return _recompute_search(self.memory_point, self.confirm_point, known, self.low,
                                     ceiling, self.aim(), self.hints.get("recompute"))
        probe = (self.quick_point if mode == "xla" and self.quick_xla
                 else (lambda b: self.probe_point(mode, b)))
        h, high = self.hints.get(mode), self.high
        for b in ((h, h + 1) if h and h >= self.low and (high is None or h < high) else ()):
            if not (b in known and known[b].fits):   # (full: where they bracket
                known[b] = self.probe_point(mode, b)   # the answer, it is settled)
        largest = _predict(probe, self.low, high, self.capacity, tuple(known.values()), hint)
        if mode == "xla" and self.quick_xla:
            largest = self.settle_xla(largest, hint)
        if mode == "olla":
            largest = self.settle_olla(largest, hint, known)
        return largest

    def xla_answer(self) -> int | None:
        return next((r.largest_batch for r in self.results if r.mode == "xla"), None)

    def aim(self) -> int | None:
        """The batch recomputation is asked about first: ``reach_target`` x XLA's."""
        xla = self.xla_answer()
        return max(xla + 1, math.ceil(self.reach_target * xla)) if xla else None

    def floor_failing(self) -> int | None:
        """The least batch whose working-set floor does not fit, where the floor
        search finished."""
        reach = self.reach
        return reach.smallest_failing if reach is not None and reach.complete else None

    # ---- a mode's answer ------------------------------------------------------------

    def answer(self, mode: str, largest: int | None, known: dict[int, _Point],
               mine: dict[int, _Point], stopped: bool = False, how: str = "") -> ModeResult:
        """``mode``'s result from its probes ``mine`` and the batches ``known``
        from earlier modes; ``stopped``: out of time, ``largest`` a lower bound
        (``how``: how it was measured, where not in full)."""
        failing = sorted(b for b, p in mine.items()
                         if not p.fits and (largest is None or b > largest))
        if mine is self.confirmed:   # (recomputation: what failed by memory alone counts too)
            failing = sorted(set(failing) | {b for b, m in self.memory_fits.items()
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
        floor = self.floor_failing()
        if stopped:
            note = self.stopped_note(mode, largest, failing, note, how)
        elif largest is None:
            note = f"batch {self.low} does not fit"
        elif largest == self.high:
            note = f"reached high={self.high}; larger batches were not tried"
        elif mode == "recompute" and floor is not None and largest == floor - 1:
            note = (f"the working-set floor does not fit at batch {floor}: "
                    "no plan of these kernels fits it")
        return ModeResult(mode, largest, total, failing[0] if failing else None, note,
                          complete=not stopped)

    def stopped_note(self, mode: str, largest: int | None, failing: list[int], note: str,
                     how: str) -> str:
        above = f"; {failing[0]} does not fit" if failing else ""
        unconfirmed = sorted(b for b, m in self.memory_fits.items()
                             if m.fits and m.found is not None and b not in self.confirmed
                             and (largest is None or b > largest)) if mode == "recompute" else []
        later = (f"; {unconfirmed[-1]} fits by memory, not yet verified or timed"
                 if unconfirmed else "")
        call = self.deadline >= self.end
        stopped = (f"stopped after the {'call' if call else 'mode'}'s "
                   f"{(self.time_s if call else self.mode_time_s):g} s, ")
        if largest is not None and failing and failing[0] == largest + 1:
            # the edge was found; what is left is the full compiles' comparison
            unsure = [b for b in (largest, largest + 1) if mode != "xla"
                      and b in self.quick_plans_made and b not in self.compared]
            return (stopped + f"batch {largest} fits and {largest + 1} does not"
                    + (f", by plans of figures-only compiles at {' and '.join(map(str, unsure))} "
                       "not yet compared with full compiles" if unsure else "")
                    + later + (f" ({note})" if note else "") + (f" ({how})" if how else ""))
        return (stopped + "before the answer was bracketed: "
                + (f"batch {largest} fits, larger ones were not all tried{above}"
                   if largest is not None else f"no batch seen to fit{above}")
                + later + (f" ({note})" if note else "") + (f" ({how})" if how else ""))

    # ---- probes -----------------------------------------------------------------------

    def _make_step(self, batch: int) -> _Step:
        try:
            made = self.make_step(batch)
        except Exception as err:
            raise ValueError(
                f"make_step({batch}) failed: {type(err).__name__}: {err}. largest_batch probes "
                "any size from low to high; a step that takes only some sizes (say multiples of "
                "8) can be searched in units: make_step=lambda k: step_for(8 * k), the answer "
                "then in units too") from err
        return _step_of(made, batch)

    def started(self, kind: str) -> float:
        """The time a probe of ``kind`` starts; ``_OutOfTime`` where the longest
        probe of that kind so far, started now, would end past the deadline (a
        probe, once started, runs to its end: larger batches take no less)."""
        if time.monotonic() + self.longest.get(kind, 0.0) > self.deadline:
            raise _OutOfTime()
        return time.monotonic()

    def ended(self, kind: str, t0: float) -> float:
        """The seconds since ``t0`` of a probe of ``kind``, kept if its longest."""
        took = time.monotonic() - t0
        self.longest[kind] = max(self.longest.get(kind, 0.0), took)
        return took

    def record(self, mode: str, batch: int, total: int | None, fits: bool, t0: float,
               note: str, kind: str | None = None) -> None:
        took = self.ended(kind or mode, t0)
        self.probes.append(Probe(mode, batch, total, fits, took, note))

    def check_batch_used(self, mode: str, mine: dict[int, _Point], batch: int,
                         total: int | None, fits: bool) -> None:
        """A ValueError where two batches, one at least twice the other, need the
        same bytes: ``make_step`` likely ignores its batch size."""
        if fits and self.high is None and total is not None:
            same = [b for b, p in mine.items() if p.fits and p.total == total
                    and (2 * b <= batch or 2 * batch <= b)]
            if same:
                raise ValueError(f"mode {mode}: the step needs {total:,} bytes at batch "
                                 f"{min(same[0], batch)} and at batch {max(same[0], batch)}; does "
                                 "make_step use its batch size? (give high= to search a bounded "
                                 "range anyway)")

    def probe_point(self, mode: str, batch: int) -> _Point:
        """``mode`` at ``batch`` (each once): XLA's full compiles, ours, or the
        recomputing plan whole (``search="bisect"``, or GPU)."""
        mine = self.points[mode]
        if batch in mine:
            return mine[batch]
        t0 = self.started(mode)
        total, fits, note = self.measure(mode, batch)
        self.record(mode, batch, total, fits, t0, note)
        self.check_batch_used(mode, mine, batch, total, fits)
        mine[batch] = _Point(batch, fits, total)
        return mine[batch]

    def measure(self, mode: str, batch: int) -> tuple[int, bool, str]:
        step = self.step_at(batch)
        if mode == "xla":
            total = _xla_total(step, self.target, self.cache)
            return total, total <= self.capacity, ""
        if mode == "olla":
            total = int(self.plan_at(batch).total_bytes)
            return total, total <= self.capacity, (QUICK_NOTE if batch in self.quick_plans_made
                                                   else "")
        return _recompute_total(step, self.target, self.time_limit_s, self.capacity,
                                self.step_time_limit)

    def quick_point(self, batch: int) -> _Point:
        """XLA at ``batch`` by figures-only compiles, but in full where the batch
        is the answer's edge either way (its neighbours known)."""
        xla, quick = self.points["xla"], self.quick
        if batch in xla:
            return xla[batch]
        below = batch == self.low or (batch - 1 in quick and quick[batch - 1].fits)
        above = batch == self.high or (batch + 1 in quick and not quick[batch + 1].fits)
        if below and above:   # the answer's edge either way: compiled in full, once
            return self.probe_point("xla", batch)
        if batch not in quick:
            t0 = self.started("xla quick")
            total = _xla_quick_total(self.step_at(batch), self.target, self.cache)
            fits = total <= self.capacity
            self.record("xla", batch, total, fits, t0, "figures only (LLVM -O0, no dumps)",
                        kind="xla quick")
            self.check_batch_used("xla", quick, batch, total, fits)
            quick[batch] = _Point(batch, fits, total)
        return quick[batch]

    def settle_xla(self, largest: int | None, hint: float | None) -> int | None:
        """XLA's answer by figures-only compiles, compiled again as every other
        XLA figure is (with its dumps, shared with ours): the answer and the
        batch above it.  Where either disagrees, the search goes on from the
        full compiles alone."""
        low, high, quick = self.low, self.high, self.quick
        edge = [b for b in (largest, (largest or low - 1) + 1)
                if b is not None and low <= b and (high is None or b <= high)]
        full = {b: self.probe_point("xla", b) for b in edge}
        if all(full[b].fits == quick[b].fits for b in edge if b in quick):
            return largest
        self.notes.append("XLA's figures-only compiles disagreed with its full compiles at batch "
                          + ", ".join(f"{b} ({quick[b].total:,} vs {full[b].total:,} bytes)"
                                      for b in edge if b in quick
                                      and full[b].fits != quick[b].fits)
                          + "; searched again by full compiles")
        return _predict(lambda b: self.probe_point("xla", b), low, high, self.capacity,
                        tuple(self.points["xla"].values()), hint)

    # ---- ours, by figures-only compiles or full ones ----------------------------------

    def plan_at(self, batch: int):
        """The probe's plan: of figures-only compiles (``quick_plans``) unless
        XLA's search compiled this batch in full already (shared, no compile)."""
        if batch not in self.plans:
            quick_here = self.quick_on and batch not in self.points["xla"]
            self.plans[batch] = _olla_plan(self.step_at(batch), self.target, self.time_limit_s,
                                           quick=quick_here)
            if quick_here:
                self.quick_plans_made.add(batch)
        return self.plans[batch]

    def compare_at(self, batch: int) -> list[str]:
        """The quick plan's capture at ``batch`` against the full compile of the
        same scheduler; where they differ, said in ``notes`` and no further probe
        is made by figures-only compiles."""
        if batch in self.compared or batch not in self.quick_plans_made:
            return self.compared.get(batch, [])
        differ = self.compared[batch] = _quick_differences(self.plans[batch], self.step_at(batch),
                                                           self.target, self.cache)
        if differ and self.quick_on:
            self.quick_on = False
            self.notes.append(f"ours and recomputation: the figures-only compile at batch {batch} "
                              f"differs from the full compile ({', '.join(differ)}); probed by "
                              "full compiles from there on")
            for b in sorted(self.quick_plans_made):   # nothing planned from them is used again
                del self.plans[b]
                self.memory_fits.pop(b, None)
                self.points["olla"].pop(b, None)
                if b in self.full_plans:
                    self.plans[b] = self.full_plans.pop(b)
            self.quick_plans_made.clear()
        return differ

    def full_plan_at(self, batch: int):
        """Ours at ``batch`` from full compiles (what is fed back, verified and
        timed), compared with the figures-only plan's compile where there was one."""
        if batch not in self.quick_plans_made:
            return self.plan_at(batch)
        if batch not in self.full_plans:
            full = self.full_plans[batch] = _olla_plan(self.step_at(batch), self.target,
                                                       self.time_limit_s)
            self.compare_at(batch)   # (plan's compiles, cached: no compile)
            return full
        return self.full_plans[batch]

    def settle_olla(self, largest: int | None, hint: float | None,
                    known: dict[int, _Point]) -> int | None:
        """Ours found by plans of figures-only compiles: the batches at the
        answer's edge compiled in full and compared (the plan's input, not its
        figures: a plan of the same module and buffer assignment is the same
        plan).  Where they differ, searched again by full compiles."""
        ours = self.points["olla"]
        edge = [b for b in (largest, (largest or self.low - 1) + 1)
                if b is not None and b in self.quick_plans_made and b in ours]
        for b in edge:
            t0 = self.started("compare")
            differ = self.compare_at(b)
            self.notes.append(f"ours at batch {b}: the full compile compared with the "
                              "figures-only one, " + (f"{', '.join(differ)} differ" if differ else
                                                      "the same module and buffer assignment")
                              + f" ({self.ended('compare', t0):.0f} s)")
            if differ:
                break
        if self.quick_on or not edge:
            return largest
        again = {b: p for b, p in known.items() if p.total is None or b in ours}
        return _predict(lambda b: self.probe_point("olla", b), self.low, self.high,
                        self.capacity, tuple({**again, **ours}.values()), hint)

    # ---- recomputation: by memory, then confirmed ---------------------------------------

    def memory_point(self, batch: int) -> _Point:
        """Recomputation at ``batch`` by the plan's figures (no feed-back, no timing)."""
        if self.target.kind != "cpu":   # GPU: plan(memory_budget=...) whole (ours and XLA's remat)
            point = self.probe_point("recompute", batch)
            self.memory_fits.setdefault(batch, _MemoryFit(point.total, point.fits, ""))
            return point
        if batch not in self.memory_fits:
            t0 = self.started("recompute memory")
            fit = _recompute_memory(self.plan_at(batch), self.capacity, self.time_limit_s)
            self.memory_fits[batch] = fit
            self.record("recompute", batch, fit.total, fit.fits, t0, "memory only: " + fit.note
                        + (f" ({QUICK_NOTE})" if batch in self.quick_plans_made else ""),
                        kind="recompute memory")
            self.check_batch_used("recompute", {b: _Point(b, m.fits, m.total)
                                                for b, m in self.memory_fits.items()
                                                if b != batch},
                                  batch, fit.total, fit.fits)
        fit = self.memory_fits[batch]
        return _Point(batch, fit.fits, fit.total)

    def confirm_point(self, batch: int) -> _Point:
        """The batch the memory search settled on: fed back, verified and timed."""
        if batch not in self.confirmed:
            mem = self.memory_point(batch)
            if not mem.fits:
                self.confirmed[batch] = mem
                return mem
            if self.memory_fits[batch].found is None and batch not in self.quick_plans_made:
                self.confirmed[batch] = mem   # no recomputation: nothing to verify or time
                return mem
            t0 = self.started("recompute confirm")
            full, fit, said = self.plan_at(batch), self.memory_fits[batch], ""
            if batch in self.quick_plans_made:   # planned again from the full compiles
                full = self.full_plan_at(batch)
                fit = _recompute_memory(full, self.capacity, self.time_limit_s)
                differ = self.compared.get(batch, [])
                said = ("; planned again from full compiles (the figures-only compile's "
                        + (f"{', '.join(differ)} differed)" if differ else
                           "module and buffer assignment the same)"))
            if fit.found is None:   # fits without recomputation, or no longer fits
                total, fits, note = fit.total, fit.fits, "memory only: " + fit.note
            else:
                total, fits, note = _recompute_confirm(full, fit, self.step_at(batch),
                                                       self.capacity, self.step_time_limit)
            self.record("recompute", batch, total, fits, t0, note + said,
                        kind="recompute confirm")
            self.confirmed[batch] = _Point(batch, fits, total)
        return self.confirmed[batch]

    # ---- what no plan of these kernels can beat -----------------------------------------

    def floor_search(self) -> None:
        """``reachable_batch`` (``reach_time_s``), from XLA's answer and ``aim``."""
        xla = self.xla_answer()
        if not self.reach_time_s or not xla or time.monotonic() > self.end:
            return
        points = self.points["xla"]
        smallest = min(points, default=xla)   # (compiled in full: shared, no new compile)
        reach = self.hints.get("reach", 0)
        hinted = (reach, reach + 1) if reach > smallest else ()
        try:
            self.reach = reachable_batch(
                self.step_at, self.capacity, backend=self.target,
                batches=(smallest, xla, self.aim(), *hinted), low=smallest,
                time_s=min(self.reach_time_s, self.end - time.monotonic()), cache=self.cache,
                quick=lambda b: self.quick_on and b not in points
                and (b not in self.plans or b in self.quick_plans_made))
        except _OutOfTime:
            pass


__all__ = ["BatchReport", "CaptureCache", "FloorPoint", "ModeResult", "Probe", "Reach",
           "device_capacity", "largest_batch", "reachable_batch"]
