"""One probe of one batch: the user's step at that batch (``_Step``), XLA's
compiles of it (``CaptureCache``, shared by the modes), XLA's total, ours
(``_olla_plan``), the figures-only compiles checked against the full ones, and
the working-set floor (``floor_point``).  Recomputation's probes are in
``olla_jax.batch.recompute``."""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any, Callable

from olla_jax import calls
from olla_jax.batch.report import FloorPoint
from olla_jax.capture.base import Backend, CaptureError
from olla_jax.capture.record import CompileStore, capture, capture_lowered, sharing_compiles


@dataclasses.dataclass(frozen=True)
class _Step:
    fn: Callable
    args: tuple
    static_argnums: tuple[int, ...]
    donate_argnums: tuple[int, ...]


def _step_of(made: Any, batch: int) -> _Step:
    """The step ``make_step(batch)`` returned, as a positional call: its keyword
    arguments (a Step's ``kwargs``, or a tuple's third item) follow the
    positional ones, static ones bound in (``calls.positional_call``, as the
    compile-only targets take them), so that every probe compiles alike."""
    if hasattr(made, "fn") and hasattr(made, "args"):
        fn, args, kwargs = made.fn, tuple(made.args), getattr(made, "kwargs", None)
        static, donate = getattr(made, "static_argnums", ()), getattr(made, "donate_argnums", ())
        names = (getattr(made, "static_argnames", ()), getattr(made, "donate_argnames", ()))
    elif isinstance(made, tuple) and len(made) in (2, 3) and callable(made[0]):
        fn, args, kwargs = made[0], tuple(made[1]), made[2] if len(made) == 3 else None
        static, donate, names = (), (), ((), ())
    else:
        raise ValueError(f"make_step({batch}) returned a {type(made).__name__}; it must return a "
                         "tuple (fn, args) or (fn, args, kwargs), or an object with fn and args "
                         "(and optionally kwargs, static_argnums, donate_argnums, "
                         "static_argnames, donate_argnames), like examples.Step")
    if kwargs is not None and not isinstance(kwargs, dict):
        raise ValueError(f"make_step({batch})'s kwargs must be a dict of the step's keyword "
                         f"arguments, not a {type(kwargs).__name__}")
    static, donate = calls.argnums(static or (), "static_argnums"), calls.argnums(
        donate or (), "donate_argnums")
    static_names, donate_names = (calls.argnames(n or (), what) for n, what in zip(
        names, ("static_argnames", "donate_argnames")))
    if not (kwargs or static_names or donate_names):
        return _Step(fn, args, static, donate)
    call = calls.positional_call(fn, args, dict(kwargs or {}), static, donate, static_names,
                                 donate_names)
    return _Step(call.fn, call.args, tuple(call.static_argnums), tuple(call.donate_argnums))


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
        where it ends (``_Search.settle_xla``: the answer and the batch above it are
        compiled again as ``xla_total`` does).  Other backends: ``xla_total``."""
        if backend.kind != "cpu":
            return self.xla_total(step, backend)
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
                figures.append(MemoryFigures.of(calls.inner_compiled(compiled)))
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
