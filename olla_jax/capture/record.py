"""Compile a step once with XLA's dumps switched on and keep the pieces.

The record holds the scheduled HLO (proto and text), XLA's buffer assignment,
its value and live-range dumps, ``memory_analysis()`` figures and, where the
backend can serialize, the executable bytes.  Nothing downstream needs jax.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import glob
import os
import tempfile
import shutil
from typing import Any, Callable, Sequence

import jax

from olla_jax import calls
from olla_jax.capture.base import (  # noqa: F401 - re-exported
    Backend, Capture, CaptureError, MemoryFigures, ProgramCompile)
from olla_jax.envelope import without_dump_options

# XLA:CPU's scheduler choices (xla.DebugOptions.xla_cpu_scheduler_type).
CPU_SCHEDULERS = {
    "default": None,
    "memory": "CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED",
}
_DUMP_OPTIONS = {"xla_dump_hlo_as_proto": True, "xla_dump_hlo_as_text": True}


def cpu_scheduler_options(scheduler: str) -> dict[str, str]:
    """XLA:CPU's compiler options that pick ``scheduler`` (a key of ``CPU_SCHEDULERS``)."""
    if scheduler not in CPU_SCHEDULERS:
        raise CaptureError(f"unknown CPU scheduler {scheduler!r}; use one of {sorted(CPU_SCHEDULERS)}")
    chosen = CPU_SCHEDULERS[scheduler]
    return {"xla_cpu_scheduler_type": chosen} if chosen else {}


def _read_one(directory: str, suffix: str, binary: bool = False):
    matches = sorted(glob.glob(os.path.join(directory, f"*{suffix}")))
    if not matches:
        raise CaptureError(f"XLA wrote no '*{suffix}' dump; this jaxlib's dump layout is not supported")
    # Several modules can be compiled (e.g. helpers); the step is the last one.
    path = matches[-1]
    with open(path, "rb" if binary else "r") as f:
        return f.read()


def serialize_executable(compiled) -> bytes | None:
    """``compiled``'s executable as bytes, without XLA's dump options; None where
    the backend does not serialize."""
    try:
        exe = compiled.runtime_executable()
        client = getattr(exe, "client", None)
        if client is None:  # a compile-only executable (GPU target, no device) serializes itself
            raw = bytes(exe.serialize())
        else:
            raw = bytes(client.serialize_executable(exe))
    except Exception:  # noqa: BLE001 - not every backend serializes
        return None
    # Loading bytes that still name our dump folder would make XLA dump there again.
    return without_dump_options(raw)


def compile_with_dumps(lowered, compiler_options: dict[str, Any], *, backend: str,
                       scheduler: str) -> Capture:
    """Compile ``lowered`` with dumps into a private folder and read them."""
    directory = tempfile.mkdtemp(prefix="olla_jax_dump_")
    try:
        options = dict(compiler_options)
        options.update(_DUMP_OPTIONS)
        options["xla_dump_to"] = directory
        try:
            compiled = lowered.compile(compiler_options=options)
        except CaptureError:
            raise
        except Exception as err:  # noqa: BLE001 - XLA raises many types
            raise CaptureError(f"XLA could not compile the step: {err}") from err
        after = "after_optimizations"
        wrap = calls.rewrapper(compiled)
        compiled = calls.inner_compiled(compiled)
        return Capture(
            backend=backend, scheduler=scheduler, compiler_options=dict(compiler_options),
            hlo_text=_read_one(directory, f"{after}.txt"),
            hlo_proto=_read_one(directory, f"{after}.hlo.pb", binary=True),
            values_text=_read_one(directory, f"{after}-buffer-assignment-values.txt"),
            live_range_text=_read_one(directory, f"{after}-live-range.txt"),
            buffer_assignment_text=_read_one(directory, f"{after}-buffer-assignment.txt"),
            memory=MemoryFigures.of(compiled),
            executable=serialize_executable(compiled),
            compiled=compiled, lowered=lowered, wrap=wrap)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _compile_plain(lowered, options: dict[str, Any], *, backend: str,
                   scheduler: str) -> ProgramCompile:
    try:
        compiled = lowered.compile(compiler_options=options) if options else lowered.compile()
    except CaptureError:
        raise
    except Exception as err:  # noqa: BLE001 - XLA raises many types
        raise CaptureError(f"XLA could not compile the step: {err}") from err
    wrap = calls.rewrapper(compiled)
    compiled = calls.inner_compiled(compiled)
    return ProgramCompile(backend=backend, scheduler=scheduler, compiler_options=dict(options),
                          memory=MemoryFigures.of(compiled),
                          executable=serialize_executable(compiled), compiled=compiled, wrap=wrap)


def _check_args(args: Sequence[Any], static: set[int]) -> None:
    # static arguments as None (no leaves), so positions stay the user's
    found = calls.leaf_that_is_no_array(
        [None if i in static else a for i, a in enumerate(args)], None, calls.traced_as_array)
    if found is not None:
        where, leaf = found
        raise CaptureError(
            f"{where} is a {type(leaf).__name__}, not an array: pass arrays or "
            "jax.ShapeDtypeStruct leaves, and mark other arguments static (static_argnums)")


@dataclasses.dataclass
class CompileStore:
    """Captures of local compiles, by what was compiled: the same module text
    for the same backend, scheduler and compiler options is the same compile,
    so its figures and dumps are XLA's own either way."""
    captures: dict = dataclasses.field(default_factory=dict)
    hits: int = 0
    misses: int = 0


_SHARED_COMPILES: contextvars.ContextVar[CompileStore | None] = contextvars.ContextVar(
    "olla_jax_shared_compiles", default=None)


@contextlib.contextmanager
def sharing_compiles(store: CompileStore | None = None):
    """Within: ``capture`` and ``capture_lowered`` on this machine reuse a
    compile of the same module made earlier into ``store`` (a search that
    compiles one step again and again, e.g. ``olla_jax.batch``, pays once)."""
    store = store if store is not None else CompileStore()
    token = _SHARED_COMPILES.set(store)
    try:
        yield store
    finally:
        _SHARED_COMPILES.reset(token)


def _compile_local(lowered, options: dict[str, Any], *, backend: str, scheduler: str,
                   compile_fn: Callable = compile_with_dumps) -> "Capture | ProgramCompile":
    """``compile_fn(lowered, options, ...)``, shared through the store of
    ``sharing_compiles`` where one is open (keyed by ``compile_fn`` too: a
    compile without dumps is no Capture)."""
    store = _SHARED_COMPILES.get()
    if store is None:
        return compile_fn(lowered, options, backend=backend, scheduler=scheduler)
    try:
        # the call's structure too: f(a, x=b) and f(a, b) lower to the same text, but
        # their executables take their arguments differently
        in_tree = getattr(lowered, "in_tree", getattr(getattr(lowered, "lowered", None),
                                                      "in_tree", None))
        key = (compile_fn.__name__, backend, scheduler,
               tuple(sorted((k, repr(v)) for k, v in options.items())), lowered.as_text(),
               str(in_tree))
    except Exception:  # noqa: BLE001 - a module with no text is not shared
        return compile_fn(lowered, options, backend=backend, scheduler=scheduler)
    if key in store.captures:
        store.hits += 1
    else:
        store.misses += 1
        store.captures[key] = compile_fn(lowered, options, backend=backend, scheduler=scheduler)
    return store.captures[key]


def capture(fn: Callable, *args, backend: str | Backend = "cpu", scheduler: str = "default",
            static_argnums: Sequence[int] = (), donate_argnums: Sequence[int] = (),
            compiler_options: dict[str, Any] | None = None,
            spmd: dict[str, Any] | None = None) -> Capture:
    """Lower and compile ``fn(*args)`` for ``backend`` and capture XLA's memory plan.

    ``backend``: "cpu" (this machine), or "gpu:<target>" for a GPU compiled
    without one (targets in ``olla_jax/capture/targets``), or a parsed
    :class:`Backend`.  ``scheduler`` picks
    XLA:CPU's scheduler ("default" or "memory").  ``spmd``: for GPU targets,
    ``num_devices``/``in_shardings``/``out_shardings``/``mesh_axes`` of
    :func:`olla_jax.capture.gpu.compile_for_target` (a sharded program: the
    capture is the per-device module).
    """
    parsed = _parse(backend)
    if spmd and not parsed.compile_only:
        raise CaptureError("sharded (multi-device) steps are planned for compile-only GPU "
                           f"targets such as 'gpu:h100', not {parsed.name!r}")
    options = dict(compiler_options or {})
    own = calls.static_info(fn) if calls.is_jitted(fn) else ((), ())
    if own is not None:   # a wrapper that is not jax.jit (equinox's filter_jit) decides itself
        n = len(args)     # which leaves are static; a jit object's own static ones are no arrays
        _check_args(args, set(static_argnums) | {i % n for i in own[0] if -n <= i < n})
    elif parsed.kind != "cpu":   # compiled under jax.jit there, every leaf an array
        _check_args(args, set(static_argnums))
    if parsed.kind == "cpu":
        options.update(cpu_scheduler_options(scheduler))
        lowered = calls.lower_call(calls.jit_of(fn, static_argnums, donate_argnums), args,
                                   {}).lowered
        return _compile_local(lowered, options, backend="cpu", scheduler=scheduler)
    if parsed.kind == "tpu":
        from olla_jax.capture import tpu

        def compile_tpu(lowered_options):
            return tpu.compile_for_tpu(fn, args, static_argnums=tuple(static_argnums),
                                       donate_argnums=tuple(donate_argnums),
                                       compiler_options=lowered_options)
        return _capture_via(compile_tpu, options, backend="tpu", scheduler="default")
    from olla_jax.capture import gpu
    target = parsed.target
    compiled_holder = {}

    def compile_fn(lowered_options):
        compiled_holder["c"] = gpu.compile_for_target(
            fn, args, target=target, static_argnums=tuple(static_argnums),
            donate_argnums=tuple(donate_argnums), compiler_options=lowered_options,
            **(spmd or {}))
        return compiled_holder["c"]
    # "gpu" and "gpu:local" are both recorded as "gpu:local"
    return _capture_via(compile_fn, options, backend=f"gpu:{target}", scheduler="default")


def _parse(backend: str | Backend) -> Backend:
    """``backend`` parsed, with capture's own message for a string it does not know."""
    if not isinstance(backend, (str, Backend)):
        raise CaptureError(f"backend must be a string such as 'cpu' or 'gpu:h100', not {backend!r}")
    try:
        return Backend.parse(backend)
    except CaptureError:
        raise CaptureError(f"unknown backend {backend!r}: use 'cpu', 'gpu' (the local GPU), "
                           "'gpu:<target>' for a GPU compiled without one (targets: h100, a100, "
                           "or a path to a GpuTargetConfigProto text file), or 'tpu' (read-only)"
                           ) from None


def capture_lowered(lowered, *, backend: str | Backend = "cpu", scheduler: str = "default",
                    compiler_options: dict[str, Any] | None = None) -> Capture:
    """Compile a Lowered (``jax.stages.Lowered`` or flax.nnx's) with dumps: jax
    already resolved the call (static and keyword arguments, donation).
    ``backend``: "cpu", or "gpu"/"gpu:local" (the Lowered must be for it)."""
    options = dict(compiler_options or {})
    try:
        parsed = Backend.parse(backend)
    except CaptureError:
        parsed = None  # refused below, with what to do instead
    if parsed is not None and parsed.kind == "cpu":
        options.update(cpu_scheduler_options(scheduler))
        name = "cpu"
    elif parsed is not None and parsed.kind == "gpu" and not parsed.compile_only:
        name = "gpu:local"
    else:
        raise CaptureError(f"a lowered step is compiled for this machine ('cpu' or 'gpu'), not "
                           f"{getattr(backend, 'name', backend)!r}: for a compile-only target pass "
                           "the function and its positional arguments")
    return _compile_local(lowered, options, backend=name, scheduler=scheduler)


def compile_without_dumps(lowered, *, backend: str | Backend = "cpu", scheduler: str = "default",
                          compiler_options: dict[str, Any] | None = None) -> ProgramCompile:
    """Compile a Lowered for this machine with ``scheduler`` but no dumps: for a
    program whose figures and executable are needed, not its schedule (jax.jit's
    own program beside the unrolled one planned)."""
    parsed = _parse(backend)
    if not parsed.local:
        raise CaptureError(f"a lowered step is compiled for this machine ('cpu' or 'gpu'), not "
                           f"{parsed.name!r}")
    options = dict(compiler_options or {})
    if parsed.kind == "cpu":
        options.update(cpu_scheduler_options(scheduler))
    return _compile_local(lowered, options, backend="cpu" if parsed.kind == "cpu" else "gpu:local",
                          scheduler=scheduler, compile_fn=_compile_plain)


def _capture_via(compile_fn, compiler_options, *, backend, scheduler) -> Capture:
    """Like compile_with_dumps, for backends whose compile call is not lowered.compile."""

    class _Lowered:
        def compile(self, compiler_options):
            return compile_fn(compiler_options)
    return compile_with_dumps(_Lowered(), compiler_options, backend=backend, scheduler=scheduler)
