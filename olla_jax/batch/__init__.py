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

import dataclasses
import functools
import inspect
import math
import os
import time
import warnings
from typing import Any, Callable, Sequence

from olla_jax.capture.base import Backend, CaptureError
from olla_jax.capture.record import CompileStore, capture, capture_lowered, sharing_compiles

MODES = ("xla", "olla", "recompute")
SEARCHES = ("predict", "bisect")
# The share of GPU memory jax's GPU client gives its allocator unless told otherwise
# (XLA_CLIENT_MEM_FRACTION / XLA_PYTHON_CLIENT_MEM_FRACTION; jax's "GPU memory allocation" docs).
JAX_GPU_MEM_FRACTION = 0.75
_FRACTION_VARS = ("XLA_CLIENT_MEM_FRACTION", "XLA_PYTHON_CLIENT_MEM_FRACTION")
_MAX_BATCH = 2 ** 31
MIB = 2 ** 20


@dataclasses.dataclass(frozen=True)
class Probe:
    """One step compiled (and planned) at one batch size."""
    mode: str
    batch: int
    total_bytes: int | None    # None when the mode could not produce a figure (see note)
    fits: bool
    seconds: float
    note: str = ""


@dataclasses.dataclass(frozen=True)
class ModeResult:
    mode: str
    largest_batch: int | None      # None: not even ``low`` fits, or the mode was skipped
    total_bytes: int | None        # the step's total at largest_batch
    smallest_failing: int | None   # the least probed batch above largest_batch that did not fit
    note: str = ""
    complete: bool = True          # False: the mode's time ran out; largest_batch is a lower bound


@dataclasses.dataclass(frozen=True)
class BatchReport:
    """The largest batch per mode under ``capacity_bytes``, with every probe."""
    backend: str
    capacity_bytes: int
    device_memory_bytes: int | None   # the device description's memory, when capacity came from it
    reserve_bytes: int | None         # what was held back from it
    results: tuple[ModeResult, ...]
    probes: tuple[Probe, ...]
    notes: tuple[str, ...] = ()
    reach: "Reach | None" = None      # the working-set floor's search (``reach_time_s``)

    def result(self, mode: str) -> ModeResult:
        for r in self.results:
            if r.mode == mode:
                return r
        raise KeyError(f"mode {mode!r} was not searched; searched: "
                       f"{', '.join(r.mode for r in self.results)}")

    def largest(self, mode: str) -> int | None:
        return self.result(mode).largest_batch

    @property
    def largest_batches(self) -> dict[str, int | None]:
        return {r.mode: r.largest_batch for r in self.results}

    def probe(self, mode: str, batch: int) -> Probe | None:
        """The last probe of ``mode`` at ``batch`` (recomputation: the confirmation,
        where the batch was confirmed after its memory-only probe)."""
        for p in reversed(self.probes):
            if p.mode == mode and p.batch == batch:
                return p
        return None

    def table(self) -> str:
        """Markdown: per mode, the largest batch, its total and the ratio to XLA's batch."""
        xla = self.largest_batches.get("xla")
        lines = [f"capacity {_mib(self.capacity_bytes)} ({self.capacity_bytes:,} bytes), "
                 f"backend {self.backend}", "",
                 "| mode | largest batch | total at largest | first batch over | vs xla |",
                 "|---|---:|---:|---:|---:|"]
        for r in self.results:
            if r.largest_batch and xla:
                ratio = f"{r.largest_batch / xla:.2f}x"
            else:
                ratio = "-"
            lines.append(f"| {r.mode} | {r.largest_batch if r.largest_batch is not None else '-'} "
                         f"| {_mib(r.total_bytes)} | "
                         f"{r.smallest_failing if r.smallest_failing is not None else '-'} "
                         f"| {ratio} |")
        lines += [f"\n{r.mode}: {r.note}" for r in self.results if r.note]
        lines += [f"\nnote: {n}" for n in self.notes]
        return "\n".join(lines)

    def probes_table(self) -> str:
        """Markdown: every probe in the order it was made."""
        lines = ["| mode | batch | total | fits | seconds |", "|---|---:|---:|---|---:|"]
        for p in self.probes:
            lines.append(f"| {p.mode} | {p.batch} | {_mib(p.total_bytes)} | "
                         f"{'yes' if p.fits else 'no'} | {p.seconds:.1f} |"
                         + (f" {p.note}" if p.note else ""))
        return "\n".join(lines)


def _mib(n: int | None) -> str:
    return "-" if n is None else f"{n / MIB:,.2f} MiB"


class _Skip(Exception):
    """This olla_jax cannot run the mode; the search records why and moves on."""


class _OutOfTime(Exception):
    """The mode's seconds (``mode_time_s``) are spent: no further probe is started."""


# ---- capacity -----------------------------------------------------------------

def _memory_fraction() -> float:
    for var in _FRACTION_VARS:
        value = os.environ.get(var)
        if value:
            try:
                fraction = float(value)
            except ValueError as err:
                raise ValueError(f"{var}={value!r} is not a number") from err
            if not 0 < fraction <= 1:
                raise ValueError(f"{var}={value!r} must be in (0, 1]")
            return fraction
    return JAX_GPU_MEM_FRACTION


def target_memory_bytes(target: str) -> int:
    """``device_memory_size`` of a shipped GPU device description (``gpu:<target>``)."""
    from google.protobuf import text_format

    from olla_jax import protos
    from olla_jax.capture import gpu
    message = protos.message_class(gpu.TARGET_PROTO)()
    text_format.Parse(gpu.target_config(target), message)
    size = int(message.gpu_device_info.device_memory_size)
    if size <= 0:
        raise ValueError(f"the device description of {target!r} gives no device_memory_size: "
                         "pass capacity_bytes")
    return size


def device_capacity(backend: str | Backend, reserve_bytes: int | None = None) -> tuple[int, int, int]:
    """(capacity, device memory, reserve) in bytes for a GPU backend.

    ``gpu:<target>``: the description's ``device_memory_size`` less ``reserve_bytes``;
    by default the share jax's GPU client leaves outside its allocator
    (1 - XLA_CLIENT_MEM_FRACTION, 0.75 unless that variable is set): CUDA's
    context, cuBLAS/cuDNN workspaces and other processes live there.  ``gpu``
    (this machine's GPU): the allocator's own limit (``memory_stats()["bytes_limit"]``),
    which already excludes that share, less ``reserve_bytes`` (default 0).
    """
    try:
        target = Backend.parse(backend)
    except CaptureError:
        target = None   # refused below like cpu: no device memory size to read
    backend = getattr(backend, "name", backend)
    if target is not None and target.kind == "gpu" and not target.compile_only:
        import jax
        try:
            stats = jax.devices("gpu")[0].memory_stats() or {}
        except RuntimeError as err:
            raise ValueError(f"backend {backend!r}: no local GPU ({err}); pass capacity_bytes") from err
        memory = int(stats.get("bytes_limit", 0))
        if memory <= 0:
            raise ValueError("the local GPU reports no bytes_limit; pass capacity_bytes")
        reserve = 0 if reserve_bytes is None else int(reserve_bytes)
    elif target is not None and target.kind == "gpu":
        memory = target_memory_bytes(target.target)
        reserve = (memory - int(memory * _memory_fraction()) if reserve_bytes is None
                   else int(reserve_bytes))
    else:
        raise ValueError(f"backend {backend!r} has no device memory size to read: pass "
                         "capacity_bytes (the bytes one step may use)")
    if reserve < 0 or reserve >= memory:
        raise ValueError(f"reserve_bytes={reserve} must be at least 0 and below the device's "
                         f"{memory} bytes")
    return memory - reserve, memory, reserve


# ---- one probe per mode -----------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class _Step:
    fn: Callable
    args: tuple
    static_argnums: tuple[int, ...]
    donate_argnums: tuple[int, ...]


def _step_of(made: Any, batch: int) -> _Step:
    if hasattr(made, "fn") and hasattr(made, "args"):
        return _Step(made.fn, tuple(made.args), tuple(getattr(made, "static_argnums", ())),
                     tuple(getattr(made, "donate_argnums", ())))
    if isinstance(made, tuple) and len(made) == 2 and callable(made[0]):
        return _Step(made[0], tuple(made[1]), (), ())
    raise ValueError(f"make_step({batch}) returned a {type(made).__name__}; it must return a "
                    "tuple (fn, args) or an object with fn and args (and optionally "
                    "static_argnums, donate_argnums), like examples.Step")


# The XLA search's probes compile for ``memory_analysis()`` alone: LLVM's
# optimization (XLA:CPU's code generation, after buffer assignment) switched off.
QUICK_OPTIONS = {"xla_backend_optimization_level": 0}
QUICK_NOTE = "planned from figures-only compiles (LLVM -O0)"


class CaptureCache:
    """XLA's compiles of one step, shared by the modes that probe the same batch.

    Each probe of each mode compiles the step once per XLA scheduler (on a loaded
    2-core machine 10-25 s each for the small examples); ours and recomputation
    usually probe batches XLA's search compiled already.  The key is the lowered
    module's text with the backend, scheduler and argument options: the same
    module compiled with the same options is the same compile, so the figures
    and dumps are XLA's own either way.  Used by ``largest_batch`` for its XLA
    probes and, while it runs, for ``olla_jax.plan``'s baseline compiles."""

    def __init__(self) -> None:
        self.store = CompileStore()
        self.quick: dict[str, int] = {}   # ``quick_total`` per lowered module text

    @property
    def hits(self) -> int:
        return self.store.hits

    @property
    def misses(self) -> int:
        return self.store.misses

    def capture_lowered(self, lowered, **options):
        """``capture.capture_lowered``, sharing this cache's compiles."""
        with sharing_compiles(self.store):
            return capture_lowered(lowered, **options)

    def capture(self, fn, *args, **options):
        """``capture.capture``, sharing this cache's compiles (local backends)."""
        with sharing_compiles(self.store):
            return capture(fn, *args, **options)

    def xla_total(self, step: "_Step", backend: Backend) -> int:
        """The step's total under XLA's best plan: the least temp of XLA's schedulers."""
        caps = [self.capture(step.fn, *step.args, backend=backend, scheduler=s,
                             static_argnums=step.static_argnums,
                             donate_argnums=step.donate_argnums)
                for s in backend.schedulers]
        return min(caps, key=lambda c: c.memory.temp).memory.total

    def quick_total(self, step: "_Step", backend: Backend) -> int:
        """``xla_total`` by compiles made for their figures alone: no dumps, and
        XLA:CPU's code generation at LLVM -O0 (``QUICK_OPTIONS``).  XLA assigns
        buffers on the optimized HLO before it generates code, so the figure is
        expected to be the same, in about half the time; the search checks that
        where it ends (``_largest_batch``: the answer and the batch above it are
        compiled again as ``xla_total`` does).  Other backends: ``xla_total``."""
        if backend.kind != "cpu":
            return self.xla_total(step, backend)
        from olla_jax import calls
        from olla_jax.capture.base import MemoryFigures
        from olla_jax.capture.record import cpu_scheduler_options
        lowered = calls.lower_call(calls.jit_of(step.fn, step.static_argnums,
                                                step.donate_argnums), step.args, {}).lowered
        key = lowered.as_text()
        if key not in self.quick:
            figures = []
            for s in backend.schedulers:
                options = {**QUICK_OPTIONS, **cpu_scheduler_options(s)}
                try:
                    compiled = lowered.compile(compiler_options=options)
                except Exception as err:  # noqa: BLE001 - XLA raises many types
                    raise CaptureError(f"XLA could not compile the step: {err}") from err
                figures.append(MemoryFigures.of(compiled))
            self.quick[key] = min(figures, key=lambda m: m.temp).total
        return self.quick[key]

    def shared_with_plan(self):
        """A context within which ``olla_jax.plan``'s baseline compiles (any
        capture on this machine) share this cache's compiles."""
        return sharing_compiles(self.store)


def _xla_total(step: _Step, backend: Backend, cache: CaptureCache | None = None) -> int:
    return (cache or CaptureCache()).xla_total(step, backend)


def _xla_quick_total(step: _Step, backend: Backend, cache: CaptureCache | None = None) -> int:
    return (cache or CaptureCache()).quick_total(step, backend)


def _plan_function() -> Callable:
    from olla_jax.plan import plan
    return plan


def _olla_total(step: _Step, backend: Backend, time_limit_s: float) -> int:
    return int(_olla_plan(step, backend, time_limit_s).total_bytes)


def _recompute_support() -> tuple[Any, set[str]]:
    """(BudgetNotMet, plan's parameter names), or _Skip when plan has no memory budget."""
    try:
        from olla_jax.result import BudgetNotMet
    except ImportError as err:
        raise _Skip("this olla_jax has no olla_jax.plan.BudgetNotMet (memory budgets with "
                    "recomputation are not available)") from err
    params = set(inspect.signature(_plan_function()).parameters)
    if not {"memory_budget", "recompute"} <= params:
        raise _Skip("this olla_jax.plan takes no memory_budget/recompute")
    return BudgetNotMet, params


# Calls per side when a recomputing plan is timed again (the budget's own check
# takes 10 and compares medians, which swing by tens of percent on a shared machine).
STEP_TIME_REPEATS = 30
STEP_TIME_ROUNDS = 3   # rounds of them where the first is over the limit (``_retimed``)


@dataclasses.dataclass(frozen=True)
class _Timed:
    ratio: float            # what the step-time limit is checked against
    how: str                # how it was measured, for the probe's note


def _retimed(result, step: _Step, limit: float | None = None) -> _Timed | None:
    """The recomputing plan's step time over XLA's, measured again here:
    ``STEP_TIME_REPEATS`` interleaved calls per side, the fastest call over
    the fastest (other processes only ever add time to a call; the medians are
    in the note); the plan's own ``step_time_ratio`` when it cannot be run here.
    Where that round is over ``limit``, two more rounds are timed and the
    median of the three rounds' ratios is the figure: on a shared machine one
    side's fastest call can be one lucky call, either way."""
    own = getattr(result, "step_time_ratio", None)
    compiled, xla = getattr(result, "compiled", None), getattr(result, "xla_compiled", None)
    fallback = (_Timed(own, "the plan's own median of 10 calls a side") if own is not None
                else None)
    if compiled is None or xla is None:
        return fallback
    import jax

    from olla_jax.apply import timing
    dynamic = tuple(a for i, a in enumerate(step.args) if i not in set(step.static_argnums))
    if not dynamic or any(isinstance(x, jax.ShapeDtypeStruct)
                          for x in jax.tree_util.tree_leaves(dynamic)):
        return fallback
    rounds = []
    try:
        while len(rounds) < (1 if not rounds or limit is None
                             or rounds[0].ratio_of_minima <= limit else STEP_TIME_ROUNDS):
            rounds.append(timing.time_ratio(xla.executable, compiled.executable, dynamic,
                                            repeats=STEP_TIME_REPEATS))
    except Exception:  # noqa: BLE001 - the plan's own figure stands
        if not rounds:
            return fallback
    ratios = sorted(r.ratio_of_minima for r in rounds)
    how = (f"fastest of {STEP_TIME_REPEATS} calls a side" if len(rounds) == 1 else
           f"the median of {len(rounds)} rounds' fastest of {STEP_TIME_REPEATS} calls a side "
           f"({', '.join(f'{r.ratio_of_minima:.2f}' for r in rounds)})")
    return _Timed(ratios[len(ratios) // 2],
                  f"{how}; medians {', '.join(f'{r.ratio:.2f}' for r in rounds)}"
                  + (f", the plan's own {own:.2f}" if own is not None else ""))


def _why_not_met(err) -> str:
    """What held the batch: the step's fixed bytes, the working-set floor (the
    temp one instruction needs whatever is recomputed), and what recomputation
    said; empty when the error carries no plan."""
    result = getattr(err, "plan", None)
    if result is None:
        return ""
    parts = []
    try:
        fixed = result.argument_bytes + result.output_bytes - result.alias_bytes
        parts.append(f"least {_mib(int(err.least_bytes))}, of which arguments + outputs "
                     f"{_mib(fixed)}")
        if result.graph is not None:
            from olla_jax import budget
            floor, where = budget.working_set_bound(result.graph)
            if floor:
                parts.append(f"working-set floor {_mib(floor + fixed)} ({where})")
    except Exception as exc:  # noqa: BLE001 - a diagnosis must not cost the probe
        parts.append(f"no diagnosis ({type(exc).__name__})")
    said = [n for n in getattr(result, "notes", ()) if "recomput" in n]
    if said:
        parts.append(said[-1][:200])
    return ": " + "; ".join(parts) if parts else ""


def _recompute_total(step: _Step, backend: Backend, time_limit_s: float, capacity: int,
                     step_time_limit: float) -> tuple[int, bool, str]:
    """(total, fits, note).  A plan that recomputed values fits only if its measured
    step time is within ``step_time_limit`` x XLA's; unmeasured, that is noted."""
    from olla_jax.result import PlanWarning
    budget_not_met, _ = _recompute_support()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PlanWarning)
        try:
            result = _plan_function()(
                step.fn, *step.args, backend=backend.name, time_limit_s=time_limit_s,
                static_argnums=step.static_argnums, donate_argnums=step.donate_argnums,
                feed_back=False, memory_budget=int(capacity), recompute=True)
        except budget_not_met as err:
            return int(err.least_bytes), False, "budget not met" + _why_not_met(err)
        except ImportError as err:   # the recomputation module is not there
            raise _Skip(f"recomputation is not available in this olla_jax ({err})") from err
    total = int(getattr(result, "runs_total_bytes", result.total_bytes))
    fits, note = total <= capacity, ""
    if getattr(result, "recomputed", ()):
        timed = _retimed(result, step, step_time_limit)
        if timed is None:
            note = f"recomputed; step time not measured, step_time_limit={step_time_limit} unchecked"
        elif timed.ratio > step_time_limit:
            fits, note = False, (f"recomputed, but step time {timed.ratio:.2f} x XLA's > "
                                 f"{step_time_limit} ({timed.how})")
        else:
            note = f"recomputed, step time {timed.ratio:.2f} x XLA's ({timed.how})"
    return total, fits, note


@dataclasses.dataclass(frozen=True)
class _MemoryFit:
    """A recomputation plan judged by memory alone (planned bytes, nothing fed
    back, verified or timed): the search's probe.  ``found`` is None where
    order and placement fit without recomputation, or nothing fits."""
    total: int
    fits: bool
    note: str
    found: Any = None


def _olla_plan(step: _Step, backend: Backend, time_limit_s: float, quick: bool = False):
    """``olla_jax.plan`` (order and placement, planned figures): the olla mode's
    probe, and the plan recomputation starts from at the same batch.  ``quick``:
    XLA's baselines compiled with ``QUICK_OPTIONS`` (dumps on, LLVM -O0): the
    same module and buffer assignment where ``_compile_differences`` finds none,
    but an executable neither fed back nor timed."""
    from olla_jax.result import PlanWarning
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PlanWarning)   # XLA's plan kept: its figures still count
        return _plan_function()(step.fn, *step.args, backend=backend.name,
                                time_limit_s=time_limit_s, static_argnums=step.static_argnums,
                                donate_argnums=step.donate_argnums, feed_back=False,
                                compiler_options=dict(QUICK_OPTIONS) if quick else None)


def _quick_differences(quick_plan, step: _Step, backend: Backend, cache: CaptureCache
                       ) -> list[str]:
    """``_compile_differences`` of the figures-only compile ``quick_plan`` was
    planned from and the full compile of the same step and scheduler (cached)."""
    quick = getattr(quick_plan, "capture", None)
    if quick is None:
        return ["no compile to compare (the plan has none)"]
    full = cache.capture(step.fn, *step.args, backend=backend, scheduler=quick.scheduler,
                         static_argnums=step.static_argnums, donate_argnums=step.donate_argnums)
    return _compile_differences(quick, full)


_COMPARED_DUMPS = ("hlo_text", "buffer_assignment_text", "values_text", "live_range_text")


def _compile_differences(quick, full) -> list[str]:
    """What the figures-only compile ``quick`` (a Capture) holds that the full
    compile ``full`` of the same module and scheduler does not: the dumps a plan
    is built from (the scheduled module, its proto less the module's unique id,
    the buffer assignment, values and live ranges) and ``memory_analysis()``.
    Empty where a plan of either is a plan of the other."""
    from olla_jax import dumps
    differ = [name for name in _COMPARED_DUMPS if getattr(quick, name) != getattr(full, name)]
    if quick.memory != full.memory:
        differ.append("memory_analysis")
    a, b = dumps.parse_hlo_proto(quick.hlo_proto), dumps.parse_hlo_proto(full.hlo_proto)
    if a.buffer_assignment != b.buffer_assignment:
        differ.append("the proto's buffer assignment")
    fields = {f.name for f, _ in a.hlo_module.ListFields()} | \
        {f.name for f, _ in b.hlo_module.ListFields()}
    if any(getattr(a.hlo_module, f) != getattr(b.hlo_module, f) for f in fields - {"id"}):
        differ.append("the proto's module")
    return differ


def _recompute_memory(result, capacity: int, time_limit_s: float) -> _MemoryFit:
    """Does ``result`` (ours without recomputation) fit ``capacity`` once values
    are recomputed, by the plan's figures?  ``olla_jax.budget.search`` on
    ``result``'s graph and order, what ``plan(memory_budget=...)`` runs, but
    without feeding the plan back, verifying or timing it: that is done once,
    for the batch the search settles on (``_recompute_confirm``)."""
    from olla_jax import budget
    from olla_jax.graph.layout import xla_layout
    fixed = result.argument_bytes + result.output_bytes - result.alias_bytes
    total = int(result.runs_total_bytes)
    if total <= capacity:
        return _MemoryFit(total, True, "fits without recomputation (ours)")
    graph, cap = result.graph, result.capture
    if graph is None or cap is None or getattr(cap, "executable", None) is None:
        return _MemoryFit(total, False, "no memory model of this step: recomputation not tried")
    if capacity - fixed <= 0:
        return _MemoryFit(total, False, f"arguments and outputs alone take {_mib(fixed)}")
    order = result.layout.order if result.layout is not None else graph.xla_order
    cands = budget.candidates(graph, cap)
    found = budget.search(graph, order, cands, capacity - fixed, time_limit_s=time_limit_s,
                          layout=result.layout if result.layout is not None
                          else xla_layout(graph))
    if found is None or found.temp_bytes + fixed >= total:
        floor, where = budget.working_set_bound(graph)
        return _MemoryFit(total, False, f"budget not met: recomputation found nothing that "
                          f"lowers the peak ({len(cands)} values qualified; working-set floor "
                          f"{_mib(floor + fixed)} ({where}))")
    planned = int(found.temp_bytes + fixed)
    if planned > capacity:
        floor, where = budget.working_set_bound(graph)
        return _MemoryFit(planned, False, f"budget not met: least {_mib(planned)} with "
                          f"recomputation, of which arguments + outputs {_mib(fixed)}; "
                          f"working-set floor {_mib(floor + fixed)} ({where})")
    return _MemoryFit(planned, True, f"fits by the plan's figures recomputing "
                      f"{len(found.picked)} values (not yet verified or timed)", found)


def _recompute_confirm(result, memory: _MemoryFit, step: _Step, capacity: int,
                       step_time_limit: float, verify_trials: int = 2) -> tuple[int, bool, str]:
    """(total, fits, note) of the batch the search settled on: the recomputation
    fed back into the executable (``budget.feed_back_plan``: checked, rewritten,
    verified bit for bit), its achieved total within ``capacity``, and its step
    time, measured here against XLA's executable at the same batch
    (``_retimed``), within ``step_time_limit`` x XLA's."""
    if memory.found is None:
        return memory.total, memory.fits, memory.note
    from olla_jax import budget
    from olla_jax.result import PlanWarning
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PlanWarning)
        fed = budget.feed_back_plan(result, memory.found, args=step.args,
                                    static_argnums=step.static_argnums,
                                    verify_trials=verify_trials, measure_time=False)
    if not getattr(fed, "recomputed", ()):
        said = [n for n in fed.notes if "recomput" in n]
        return memory.total, False, "not fed back: " + (said[-1][:200] if said else "refused")
    total = int(fed.runs_total_bytes)
    if total > capacity:
        return total, False, (f"recomputed and verified, but the executable needs {_mib(total)} "
                              f"(planned {_mib(memory.total)})")
    timed = _retimed(fed, step, step_time_limit)   # (measure_time=False: the plan's own is None)
    if timed is None:
        return total, False, "recomputed, but the step time could not be measured here"
    if timed.ratio > step_time_limit:
        return total, False, (f"recomputed, but step time {timed.ratio:.2f} x XLA's > "
                              f"{step_time_limit} ({timed.how})")
    return total, True, (f"recomputed {len(fed.recomputed)} values, verified, step time "
                         f"{timed.ratio:.2f} x XLA's ({timed.how})")


# ---- the search -------------------------------------------------------------------

def _search(probe: Callable[[int], bool], low: int, high: int | None, start: int) -> int | None:
    """Largest b in [low, high] with probe(b), assuming probe is monotone (True then False).

    Doubles from ``start`` (>= low) until a probe fails, then bisects.  A failure
    at ``start`` > ``low`` restarts below it."""
    fit, fail = low - 1, None
    b = start
    while True:
        if probe(b):
            fit = b
            if (high is not None and b >= high) or b >= _MAX_BATCH:
                return b
            b = 2 * b if high is None else min(2 * b, high)
        else:
            fail = b
            break
    while fail - fit > 1:
        mid = (fit + fail) // 2
        if probe(mid):
            fit = mid
        else:
            fail = mid
    return fit if fit >= low else None


# The most a prediction may multiply the largest fitting batch by before a batch
# has failed: a linear fit through two small batches (where the arguments
# dominate) can predict far too much.
_GROWTH = 8


@dataclasses.dataclass(frozen=True)
class _Point:
    """A batch whose fit is known; ``total`` None when it was inferred, not compiled."""
    batch: int
    fits: bool
    total: int | None


def _slope(a: _Point | None, b: _Point | None) -> float | None:
    if a is None or b is None or a.total is None or b.total is None or a.batch == b.batch:
        return None
    slope = (b.total - a.total) / (b.batch - a.batch)
    return slope if slope > 0 else None


def _predict(probe: Callable[[int], _Point], low: int, high: int | None, capacity: int,
             known: Sequence[_Point] = (), slope_hint: float | None = None) -> int | None:
    """Largest b in [low, high] whose probe fits, assuming fit is monotone in b.

    ``known``: points already settled (not probed again).  Until a batch fails,
    the next batch is where a line through the largest fit and the nearest
    smaller batch with a lower total (``slope_hint`` while there is none)
    reaches ``capacity``, at most ``_GROWTH`` x the largest fit; when three
    predictions in a row by the mode's own line fit, the step at least doubles.  Then the line through
    the largest fit and the least failure, with a bisection whenever two probes
    in a row land on the same side."""
    points = {p.batch: p for p in known if p.batch >= low and (high is None or p.batch <= high)}
    top_limit = min(_MAX_BATCH, high) if high is not None else _MAX_BATCH
    bracket_sides: list[bool] = []
    crawl = 0   # predictions in a row (before any failure) that fit
    while True:
        fit = max((p for p in points.values() if p.fits), key=lambda p: p.batch, default=None)
        f = fit.batch if fit is not None else low - 1
        fail = min((p for p in points.values() if not p.fits and p.batch > f),
                   key=lambda p: p.batch, default=None)
        if fail is not None and fail.batch - f <= 1:
            return fit.batch if fit is not None else None
        if fit is not None and f >= top_limit:
            return f
        predicted = False
        if fit is None:
            guess = low
        elif fit.total is None or fit.total > capacity:
            guess = f + 1   # fit known without a figure: is one more already too many?
        elif fail is not None:
            # While probes keep landing on one side, the end that stays put
            # weighs half as much each time (the Illinois rule), pulling the
            # next guess toward it; the fourth same side in a row bisects.
            run = _run_length(bracket_sides)
            if run >= 4 or fail.total is None or fail.total <= capacity:
                guess = (f + fail.batch) // 2   # (a failure for another reason: no line)
            else:
                shrink = 0.5 ** (run - 1) if run else 1.0   # (run 0: a failure was known)
                under = (capacity - fit.total) * (shrink if run and not bracket_sides[-1] else 1)
                over = (fail.total - capacity) * (shrink if run and bracket_sides[-1] else 1)
                guess = f + int((fail.batch - f) * under / (under + over))
        else:
            lower = [p for p in points.values() if p.batch < f and p.total is not None
                     and p.fits and p.total < fit.total]
            slope = _slope(max(lower, key=lambda p: p.batch), fit) if lower else None
            if slope or slope_hint:
                guess = f + int((capacity - fit.total) // (slope or slope_hint))
                predicted = bool(slope) and guess < f * _GROWTH   # by this mode's own line
            else:
                guess = 2 * f
            if crawl >= 3:
                prev = max((p.batch for p in points.values() if p.fits and p.batch < f),
                           default=f // 2)
                guess = max(guess, f + 2 * (f - prev))
        hi = fail.batch - 1 if fail is not None else (f * _GROWTH if fit is not None else low)
        guess = max(f + 1, min(guess, hi, top_limit))
        point = probe(guess)
        points[guess] = point
        if fail is not None or not point.fits:
            bracket_sides.append(point.fits)
        crawl = crawl + 1 if predicted and point.fits else 0


def _run_length(sides: Sequence[bool]) -> int:
    """How many of the last entries of ``sides`` equal the last one."""
    n = 0
    for side in reversed(sides):
        if side != sides[-1]:
            break
        n += 1
    return n


def _boundary_slope(pts, capacity: int) -> float | None:
    """Bytes per batch element of a finished mode near its answer: through its
    largest fit and least failure when both have figures, else its two largest fits."""
    measured = sorted((p for p in pts if p.total is not None and (p.total <= capacity) == p.fits),
                      key=lambda p: p.batch)
    fits = [p for p in measured if p.fits]
    if not fits:
        return None
    fails = [p for p in measured if not p.fits and p.batch > fits[-1].batch]
    return (_slope(fits[-1], fails[0]) if fails else None) or \
        (_slope(fits[-2], fits[-1]) if len(fits) > 1 else None)


def _bisect_mode(fits: Callable[[int], bool], low: int, high: int | None,
                 results: Sequence[ModeResult], mode: str) -> int | None:
    """The earlier search: doubling then bisection from the previous modes' answer
    (probed again)."""
    floor_modes = {"olla": ("xla",), "recompute": ("olla", "xla")}.get(mode, ())
    known = [r.largest_batch for r in results if r.mode in floor_modes and r.largest_batch]
    return _search(fits, low, high, max(low, max(known)) if known else low)


# ---- what no plan of these kernels can beat ---------------------------------------

@dataclasses.dataclass(frozen=True)
class FloorPoint:
    """The step at one batch, split as the batch question needs it (bytes)."""
    batch: int
    io_bytes: int          # arguments + outputs - aliased (parameters, optimizer state, the batch's data)
    xla_temp: int          # XLA's best plan's temp
    floor_temp: int        # the working-set floor: the temp one instruction needs (budget.working_set_bound)
    where: str             # that instruction

    @property
    def floor_total(self) -> int:
        return self.io_bytes + self.floor_temp


@dataclasses.dataclass(frozen=True)
class Reach:
    """The largest batch any plan that runs the step's kernels could fit
    (order, placement, recomputation by kernel copies all keep the arguments,
    the outputs and each instruction's operands and results): the largest batch
    whose ``FloorPoint.floor_total`` is within the capacity, searched like a mode."""
    batch: int | None              # None: not even the first batch's floor fits
    smallest_failing: int | None   # the least batch computed above it whose floor does not fit
    points: tuple[FloorPoint, ...]
    complete: bool                 # False: time ran out; ``batch`` is a lower bound
    seconds: float

    def point(self, batch: int) -> FloorPoint | None:
        return next((p for p in self.points if p.batch == batch), None)


def floor_point(step: "_Step", backend: Backend, cache: "CaptureCache", batch: int,
                quick: bool = False) -> FloorPoint:
    """``FloorPoint`` of ``step`` from XLA's best compile (cached); ``quick``: by
    compiles with ``QUICK_OPTIONS`` (the same dumps, LLVM -O0), CPU only."""
    from olla_jax import budget
    from olla_jax.graph import model
    options = dict(QUICK_OPTIONS) if quick and backend.kind == "cpu" else None
    caps = [cache.capture(step.fn, *step.args, backend=backend, scheduler=s,
                          static_argnums=step.static_argnums, donate_argnums=step.donate_argnums,
                          compiler_options=options)
            for s in backend.schedulers]
    best = min(caps, key=lambda c: c.memory.temp)
    graph = model.build(best.hlo_proto, best.values_text, best.live_range_text,
                        alignment=backend.alignment)
    floor, where = budget.working_set_bound(graph)
    m = best.memory
    return FloorPoint(batch, m.argument + m.output - m.alias, m.temp, int(floor), str(where))


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


def _recompute_search(memory: Callable[[int], _Point], confirm: Callable[[int], _Point],
                      known: dict[int, _Point], low: int, ceiling: int | None,
                      aim: int | None, hint: int | None = None) -> int | None:
    """The largest batch whose recomputing plan fits by memory and then, fed
    back, verified and timed, within the step-time limit.

    From the largest batch known to fit without recomputation (ours, else XLA's)
    up to ``ceiling`` (the working-set floor's last fitting batch, when known),
    by memory alone: ``aim`` (e.g. 1.5 x XLA's batch) first, confirmed at once
    when it fits (so a search cut short still answers that question), then
    ``hint`` and the batch above it, then doubling and bisection.  The largest
    batch that fits by memory is then confirmed; where that fails (the
    executable over the capacity, verification, or the step time), the
    confirmations bisect between it and the largest batch confirmed (a slow
    plan at one batch says little about the next, which recomputes other
    values, but the fewer values a smaller batch needs recomputed the faster
    it tends to run)."""
    base = max((b for b, p in known.items() if p.fits), default=low - 1)
    lo, hi = base, (ceiling + 1 if ceiling is not None else None)   # memory: lo fits, hi not
    if hi is not None and lo + 1 >= hi:
        return base if base >= low else None
    firsts = [aim] if aim else []
    firsts += [hint, hint + 1] if hint else []
    for b in firsts:
        if lo < b and (hi is None or b < hi):
            if memory(b).fits:
                lo = b
                if b == aim:
                    confirm(b)   # the question asked, answered before anything else
            else:
                hi = b
    while hi is None:   # nothing failed yet: double
        b = 2 * max(lo, 1) if ceiling is None else min(2 * max(lo, 1), ceiling)
        if b <= lo:
            break
        if memory(b).fits:
            lo = b
            if ceiling is not None and b >= ceiling:
                break
        else:
            hi = b
    while hi is not None and hi - lo > 1:
        mid = (lo + hi) // 2
        if memory(mid).fits:
            lo = mid
        else:
            hi = mid
    if lo <= base:
        return base if base >= low else None
    good = max([base] + [b for b in range(base + 1, lo + 1) if b == aim and confirm(b).fits])
    bad, candidate = lo + 1, lo
    while True:
        if candidate > good:
            if confirm(candidate).fits:
                good = candidate
            else:
                bad = candidate
        if bad - good <= 1:
            return good if good >= low else None
        candidate = (good + bad) // 2


__all__ = ["BatchReport", "CaptureCache", "FloorPoint", "ModeResult", "Probe", "Reach",
           "device_capacity", "largest_batch", "reachable_batch"]
