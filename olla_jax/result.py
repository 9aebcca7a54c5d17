"""What planning hands back: the Plan, its warning and the budget error.

Here, not in plan.py, so that every stage after the solver (plan.py, budget/,
the decorator, the CLI) can import them without importing the pipeline.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import os
import sys
import warnings
from typing import TYPE_CHECKING, Any

from olla_jax.calls import StepCallable  # noqa: F401 - Plan.compiled's type
from olla_jax.errors import OllaJaxError
from olla_jax.sizes import size_text

if TYPE_CHECKING:   # types only: a Plan is read without importing the pipeline
    from olla_jax.capture.base import Capture
    from olla_jax.graph.layout import Layout
    from olla_jax.graph.model import ScheduleGraph


class PlanWarning(UserWarning):
    """olla_jax fell back to XLA's plan for part or all of a step."""


_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep
# Set while olla_jax tries something it will redo if it fails (a cached plan):
# its warnings would describe a failure the user never sees.  Per thread/context.
_QUIET = contextvars.ContextVar("olla_jax_quiet", default=False)


@contextlib.contextmanager
def quiet():
    """No PlanWarnings from this thread's planning inside (the notes still say it all)."""
    token = _QUIET.set(True)
    try:
        yield
    finally:
        _QUIET.reset(token)


# Set while a caller (olla_jax.jit) collects this thread's PlanWarnings to
# give them itself (folded into one warning per signature).  Per thread/context.
_HELD: contextvars.ContextVar[list | None] = contextvars.ContextVar("olla_jax_held", default=None)


@contextlib.contextmanager
def held(into: list[tuple[str, type[Warning]]]):
    """This thread's warnings from ``warn`` inside go into ``into`` as
    (message, category), not to ``warnings``: the caller gives them."""
    token = _HELD.set(into)
    try:
        yield into
    finally:
        _HELD.reset(token)


def warn(message: str, category: type[Warning] = PlanWarning) -> None:
    """``warnings.warn`` attributed to the user's line: the first frame outside olla_jax."""
    if _QUIET.get():
        return
    into = _HELD.get()
    if into is not None:
        into.append((message, category))
        return
    frame, level = sys._getframe(1), 2
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(_PACKAGE):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)


@dataclasses.dataclass(frozen=True)
class Plan:
    """Figures (bytes) and the executable of one planned step."""
    backend: str
    xla_default_temp_bytes: int          # XLA's temp with its default scheduler
    xla_best_temp_bytes: int             # the best temp any XLA scheduler reaches
    xla_scheduler: str                   # which scheduler that was
    planned_temp_bytes: int              # temp of our plan (== xla_best when we keep XLA's)
    lower_bound_bytes: int               # proven: no order and placement needs less temp
    argument_bytes: int
    output_bytes: int
    alias_bytes: int
    solve_seconds: float                 # the planner's part, which time_limit_s bounds: graph
                                         # build, order search, bound, placement (no XLA compile)
    engine: str                          # what produced the order and placement
    settings: dict[str, Any]
    source: str                          # "olla_jax" or "xla" (when nothing better was found)
    achieved_temp_bytes: int | None      # read from the loaded executable's memory_analysis()
    verified: bool                       # outputs bit-identical to XLA's executable
    notes: tuple[str, ...]               # why something fell back, what was skipped
    compiled: Any = dataclasses.field(repr=False, compare=False)   # callable like the jitted fn
    # XLA's executable of jax.jit's own program (best scheduler), what the step is timed against
    xla_compiled: Any = dataclasses.field(repr=False, compare=False)
    graph: ScheduleGraph | None = dataclasses.field(repr=False, compare=False, default=None)
    layout: Layout | None = dataclasses.field(repr=False, compare=False, default=None)
    capture: Capture | None = dataclasses.field(repr=False, compare=False, default=None)
    # Orders the order search placed but did not choose, least arena first: a
    # memory budget's recomputation searches from them too (``budget.search``).
    runner_up_orders: tuple[tuple[int, ...], ...] = dataclasses.field(
        repr=False, compare=False, default=())
    recomputed: tuple[str, ...] = ()      # producers run a second time (memory budgets)
    extra_flops: int = 0                  # their FLOPs (estimated from the HLO)
    step_time_ratio: float | None = None  # measured step time / XLA's, when measured
    capture_seconds: float = 0.0          # XLA's compiles (each scheduler) and their dumps;
                                          # with threefry2x32 unrolled, also jax.jit's program's
                                          # (each scheduler, no dumps: only its figures are read)
    verify_seconds: float = 0.0           # after the plan: the independent check, the
                                          # rewrite and the bit-for-bit verification
    # Our serialized executable, when one was built: the one ``compiled`` runs,
    # or, for a compile-only GPU target, one built and decoded but not run here.
    executable_bytes: bytes | None = dataclasses.field(repr=False, compare=False, default=None)
    # XLA's temp (best scheduler) of the program jax.jit compiles, where the
    # program planned is another of the same step (threefry2x32 unrolled on
    # CPU, ``rng_lowering``; scan residual stacks recomputed, ``scan_remat``);
    # None where the program planned is jax.jit's.  The
    # xla_*_temp_bytes above are then the planned program's.
    jax_program_temp_bytes: int | None = None

    @property
    def xla_temp_bytes(self) -> int:
        """XLA's temp for the step as jax.jit compiles it (its best scheduler):
        what the user would otherwise run, and what the headline compares with."""
        if self.jax_program_temp_bytes is not None:
            return self.jax_program_temp_bytes
        return self.xla_best_temp_bytes

    @property
    def gap(self) -> float:
        """How far the plan may be above the optimum: (planned - bound) / planned."""
        if self.planned_temp_bytes <= 0:
            return 0.0
        return (self.planned_temp_bytes - self.lower_bound_bytes) / self.planned_temp_bytes

    @property
    def total_bytes(self) -> int:
        return self.planned_temp_bytes + self.argument_bytes + self.output_bytes - self.alias_bytes

    @property
    def runs_temp_bytes(self) -> int:
        """Temp of the executable in ``compiled`` (ours when fed back, else XLA's;
        the planned figure where nothing could be fed back, e.g. GPU)."""
        temp = self.achieved_temp_bytes
        if temp is None:
            temp = self.planned_temp_bytes if self.source == "olla_jax" else self.xla_best_temp_bytes
        return temp

    @property
    def runs_total_bytes(self) -> int:
        return self.runs_temp_bytes + self.argument_bytes + self.output_bytes - self.alias_bytes

    @property
    def xla_total_bytes(self) -> int:
        """XLA's total for the step as jax.jit compiles it (``xla_temp_bytes``)."""
        return self.xla_temp_bytes + self.argument_bytes + self.output_bytes - self.alias_bytes

    @property
    def recomputed_text(self) -> str:
        """"3 values (4 copies)": values and copies as the notes count them
        (``recomputed`` has one producer per copy)."""
        from olla_jax.graph import layout as layout_lib
        if self.layout is not None and self.layout.recomputes:
            count = layout_lib.recompute_count(self.layout)
            if count.copies + count.in_bodies == len(self.recomputed):
                return count.text
        # no layout kept (an old saved plan): its copies' producers are all there is
        copies, producers = len(self.recomputed), len(set(self.recomputed))
        return f"{copies} cop{'y' if copies == 1 else 'ies'} of {producers} producer" + (
            "" if producers == 1 else "s")

    def to_saved(self):
        from olla_jax import saved
        if self.capture is None:
            raise ValueError("this plan has no captured module to tie a saved plan to")
        layout = self.layout
        figures = {k: getattr(self, k) for k in (
            "xla_default_temp_bytes", "xla_best_temp_bytes", "planned_temp_bytes",
            "achieved_temp_bytes", "lower_bound_bytes", "argument_bytes", "output_bytes",
            "alias_bytes", "verified", "solve_seconds", "capture_seconds", "verify_seconds",
            "extra_flops", "step_time_ratio", "jax_program_temp_bytes")}
        figures["recomputed"] = list(self.recomputed)
        # the search's seconds and limit: a plan applied from a file keeps its file's
        origin = self.saved_from
        figures["solve_seconds"] = (self.solve_seconds if origin is None
                                    else origin.get("searched_s"))
        figures["time_limit_s"] = (self.settings.get("time_limit_s") if origin is None
                                   else origin.get("time_limit_s"))
        return saved.SavedPlan(
            fingerprint=saved.fingerprint(self.capture.hlo_text), backend=self.backend,
            xla_scheduler=self.xla_scheduler,
            order=layout.order_names if layout else tuple(self.graph.nodes) if self.graph else (),
            places=dict(layout.places) if layout else {},
            allocation_sizes=dict(layout.allocation_sizes) if layout else {},
            figures=figures, engine=self.engine, notes=self.notes,
            recomputes=tuple(saved.recompute_record(r)
                             for r in (layout.recomputes if layout else ())))

    def save(self, path) -> None:
        """Write the plan as versioned JSON tied to this module (``olla_jax.load_plan``)."""
        from olla_jax import saved
        saved.write_atomic(path, self.to_saved().to_json())

    def plot(self, prefix) -> list[str]:
        """Write ``prefix-memory.png`` and ``prefix-layout.png`` (needs matplotlib)."""
        from olla_jax import report
        return report.plot_plan(self, str(prefix))

    @property
    def runs_xla_executable(self) -> bool:
        """``compiled`` runs XLA's own executable (nothing of ours was loaded)."""
        def exe(c):
            return getattr(c, "executable", c)
        return self.source == "xla" or exe(self.compiled) is exe(self.xla_compiled)

    @property
    def compile_only(self) -> bool:
        """Planned for a GPU target compiled without the device (``gpu:h100``):
        executables are built here, none is run."""
        from olla_jax.capture.base import Backend
        return Backend.parse(self.backend).compile_only

    def _runs_text(self, mb) -> str:
        """Where the executable ``compiled`` runs needs another total than the
        plan's (a plan checked but not loaded: host callbacks, a sharded step,
        a failed verification), that total beside the planned one."""
        if self.achieved_temp_bytes is None or self.runs_total_bytes == self.total_bytes:
            return ""
        what = " (XLA's executable)" if self.runs_xla_executable else ""
        return f" planned, {mb(self.runs_total_bytes)} as it runs{what}"

    def _verified_text(self) -> str:
        if self.verified:
            return "yes"
        if self.compile_only:   # nothing runs here, neither ours nor XLA's
            # scan_remat's rewrite of the step: its CPU compile compared with jax.jit's
            rewrite = ("; the scan-rematerialized program's outputs equal jax.jit's on CPU"
                       if self.settings.get("scan_remat_stacks") else "")
            if self.source != "xla" and self.executable_bytes is not None:
                return ("n/a (compile-only target: ours built, in executable_bytes, not run"
                        f"{rewrite})")
            return f"n/a (compile-only target: XLA's executable, built, not run{rewrite})"
        if self.runs_xla_executable:
            return "n/a (XLA's executable)"
        return "no"

    @property
    def saved_from(self) -> dict[str, Any] | None:
        """Where a plan applied from a file came from (``plan(..., saved=...)``,
        olla_jax.jit's disk cache): its ``path`` ('' for a SavedPlan not read
        from a file) and the search that made it, ``searched_s`` and
        ``time_limit_s`` (None where the file does not keep them); None for a
        plan searched here."""
        return self.settings.get("saved_plan")

    def _solve_text(self) -> str:
        saved = self.saved_from
        if saved is None:
            return (f"{self.engine}, {self.solve_seconds:.1f} s (limit "
                    f"{_seconds(self.settings.get('time_limit_s'))})")
        # applied, not searched: the seconds here are the graph build and the
        # check; the search's own are the file's
        searched = ("not kept in the file" if saved.get("searched_s") is None else
                    f"{_seconds(saved['searched_s'])} (limit {_seconds(saved.get('time_limit_s'))})")
        return (f"{self.engine}, saved plan applied in {self.solve_seconds:.1f} s, no search "
                f"(its search when saved: {searched})")

    def summary(self) -> str:
        def mb(x):
            return "-" if x is None else size_text(x)
        # Where the program planned is not jax.jit's (threefry2x32 unrolled, or scan
        # residual stacks recomputed), XLA's figures of both, jax.jit's first: the one
        # the headline compares with.
        unrolled = ("" if self.jax_program_temp_bytes is None else
                    ", scan stacks recomputed" if self.settings.get("scan_remat_stacks") else
                    ", threefry unrolled")
        # A bound of 0 is "none proven", unless the plan needs no temp at all:
        # then 0 is the bound (no plan needs less) and nothing is left to save.
        bounded = self.lower_bound_bytes > 0 or self.planned_temp_bytes <= 0
        rows = [] if not unrolled else [
            ("XLA temp, jax.jit's program (best)", mb(self.jax_program_temp_bytes))]
        rows += [
            (f"XLA temp, default scheduler{unrolled}", mb(self.xla_default_temp_bytes)),
            (f"XLA temp, best ({self.xla_scheduler}){unrolled}", mb(self.xla_best_temp_bytes)),
            ("olla_jax temp, planned", mb(self.planned_temp_bytes)),
            ("olla_jax temp, achieved", mb(self.achieved_temp_bytes)),
            ("lower bound (proven)" if not self.recomputed else
             "lower bound (working set)", mb(self.lower_bound_bytes if bounded else None)),
            # a recomputing plan's floor is what no recomputation of these kernels
            # beats, not what order and placement could still save
            ("gap to bound" if not self.recomputed else "above the working set",
             f"{100 * self.gap:.2f}%" + (" (no temp)" if not self.planned_temp_bytes else "")
             if bounded else "n/a (no bound)"),
            ("arguments / outputs / aliased", f"{mb(self.argument_bytes)} / {mb(self.output_bytes)} / "
                                              f"{mb(self.alias_bytes)}"),
            ("total: XLA -> olla_jax", f"{mb(self.xla_total_bytes)} -> {mb(self.total_bytes)}"
                                       + self._runs_text(mb)),
        ]
        host = getattr(self.graph, "other_space_bytes", None) or {}
        if host:   # an offloaded step: XLA's host-memory temp, where XLA put it
            from olla_jax.graph.model import HOST_SPACE
            rows.append(("host memory, not in the total",
                         ", ".join(mb(n) + ("" if c == HOST_SPACE else f" (memory space {c})")
                                   for c, n in sorted(host.items()))))
        rows += [
            ("engine, solve time", self._solve_text()),
            ("XLA compiles, verification", f"{self.capture_seconds:.1f} s, "
                                           f"{self.verify_seconds:.1f} s"),
        ]
        scan_stacks = self.settings.get("scan_remat_stacks") or 0
        if self.recomputed or scan_stacks:
            ratio = "-" if self.step_time_ratio is None else f"{self.step_time_ratio:.3f} x XLA's"
            what = [self.recomputed_text] if self.recomputed else []
            if scan_stacks:     # olla_jax.scan_remat: the stacks recomputed in the backward scan
                what.append(f"{scan_stacks} scan residual stack{'s' if scan_stacks != 1 else ''}"
                            " (in the backward scan)")
            rows.append(("recomputed, extra FLOPs",
                         f"{' and '.join(what)}, {self.extra_flops:,} extra FLOPs"))
            rows.append(("step time (measured)", ratio))
        budget = self.settings.get("memory_budget")
        if budget is not None:   # met or not: what the total above is judged against
            over = self.runs_total_bytes - budget
            rows.append(("memory budget", f"{mb(budget)}, " + (
                "met" if over <= 0 else f"NOT met: {mb(over)} over (the least-memory plan found)")))
        rows += [
            ("verified bit-for-bit", self._verified_text()),
        ]
        width = max(len(k) for k, _ in rows)
        from_file = ", applied from a saved plan" if self.saved_from is not None else ""
        lines = [f"olla_jax plan ({self.backend}, plan from {self.source}{from_file})"]
        lines += [f"  {k.ljust(width)}  {v}" for k, v in rows]
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def _seconds(value) -> str:
    return "-" if value is None else f"{float(value):.1f} s"


class BudgetNotMet(OllaJaxError, ValueError):
    """No plan olla_jax can make keeps the step within the memory budget.

    ``plan`` holds the least-memory plan found (usable, but above the budget);
    ``least_bytes`` its total; ``breakdown`` what holds the peak; ``reasons``
    what recomputation said of where it stopped (also in the message)."""

    def __init__(self, message: str, plan: "Plan", least_bytes: int, breakdown: str = "",
                 reasons: tuple[str, ...] = ()):
        super().__init__(message)
        self.plan = plan
        self.least_bytes = least_bytes
        self.breakdown = breakdown
        self.reasons = reasons
