"""What a capture is, shared by the recorder and the backend compilers.

``record`` compiles a step and fills a :class:`Capture`; ``gpu`` and ``tpu``
compile for their devices and raise :class:`CaptureError`.  They import this
module, never each other, so the capture package has no import cycle.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

from olla_jax.errors import OllaJaxError


class CaptureError(OllaJaxError, RuntimeError):
    """The step could not be compiled or its dumps could not be read."""


def step_error(message: str, err: Exception) -> CaptureError:
    """A CaptureError that is also an instance of ``err``'s own type (its
    attributes copied), so that ``except ValueError`` around ``olla_jax.plan``
    still catches the step's own ValueError, as around a ``jax.jit`` call;
    a plain CaptureError where Python cannot join the two types."""
    kind = _joined(type(err))
    try:
        joined = kind(message)
        if kind is not CaptureError and hasattr(err, "__dict__"):
            # not its notes (jax's "removed its internal frames" is about its traceback)
            joined.__dict__.update({k: v for k, v in err.__dict__.items() if k != "__notes__"})
        return joined
    except Exception:  # noqa: BLE001 - an exception type that cannot be built so
        return CaptureError(message)


@functools.lru_cache(maxsize=None)
def _joined(kind: type) -> type:
    if issubclass(kind, CaptureError) or not issubclass(kind, Exception):
        return CaptureError
    try:
        return type(f"CaptureError({kind.__name__})", (kind, CaptureError), {
            "__init__": lambda self, message: BaseException.__init__(self, message),
            "__str__": BaseException.__str__,          # not KeyError's quoted repr
            "__reduce__": lambda self: (CaptureError, self.args),  # pickled as a CaptureError
            "__module__": CaptureError.__module__})
    except TypeError:   # e.g. a final type, or layouts that cannot be joined
        return CaptureError


GPU_ALIGNMENT = 256  # XLA:GPU allocations and kernels: offsets move by multiples of this


@dataclasses.dataclass(frozen=True)
class Backend:
    """Where a step is compiled, parsed once from the ``backend`` string.

    ``name``: the string as given ("cpu", "gpu", "gpu:local", "gpu:h100", "tpu");
    ``kind``: "cpu", "gpu" or "tpu"; ``target``: the GPU target ("local" for this
    machine's GPU), None otherwise; ``compile_only``: a GPU target compiled
    without the device (nothing to run on here); ``alignment``: what offsets move
    by; ``schedulers``: XLA's schedulers tried as baselines; ``can_rewrite``: its
    executables can be rewritten and fed back."""
    name: str
    kind: str
    target: str | None
    compile_only: bool
    alignment: int
    schedulers: tuple[str, ...]
    can_rewrite: bool

    @property
    def local(self) -> bool:
        """Compiled by jax for this machine (cpu, or the local GPU)."""
        return self.kind == "cpu" or (self.kind == "gpu" and not self.compile_only)

    @classmethod
    def parse(cls, backend: "str | Backend") -> "Backend":
        if isinstance(backend, Backend):
            return backend
        if not isinstance(backend, str) or not (backend in ("cpu", "gpu", "tpu")
                                                or (backend.startswith("gpu:") and len(backend) > 4)):
            raise CaptureError(f"unknown backend {backend!r}: use 'cpu', 'gpu' (the local GPU), "
                               "'gpu:<target>' for a GPU compiled without one (e.g. 'gpu:h100'), "
                               "or 'tpu' (read-only)")
        kind = backend.split(":", 1)[0]
        target = None
        if kind == "gpu":
            target = backend.split(":", 1)[1] if ":" in backend else "local"
        return cls(name=backend, kind=kind, target=target,
                   compile_only=kind == "gpu" and target != "local",
                   alignment=GPU_ALIGNMENT if kind == "gpu" else 64,
                   schedulers=("default", "memory") if kind == "cpu" else ("default",),
                   can_rewrite=kind in ("cpu", "gpu"))


@dataclasses.dataclass(frozen=True)
class MemoryFigures:
    """XLA's own figures from ``compiled.memory_analysis()`` (bytes)."""
    temp: int
    argument: int
    output: int
    alias: int
    generated_code: int

    @property
    def total(self) -> int:
        return self.temp + self.argument + self.output - self.alias

    @classmethod
    def of(cls, compiled) -> "MemoryFigures":
        stats = compiled.memory_analysis()
        if stats is None:
            raise CaptureError("this backend reports no memory_analysis(); it cannot be planned")
        return cls(temp=int(stats.temp_size_in_bytes), argument=int(stats.argument_size_in_bytes),
                   output=int(stats.output_size_in_bytes), alias=int(stats.alias_size_in_bytes),
                   generated_code=int(stats.generated_code_size_in_bytes))


@dataclasses.dataclass(frozen=True)
class Capture:
    """Everything one compilation says about memory; plain data plus the live objects."""
    backend: str                      # "cpu", "gpu:h100", ...
    scheduler: str                    # which XLA scheduler made this schedule
    compiler_options: dict[str, Any]
    hlo_text: str
    hlo_proto: bytes                  # serialized xla.HloProto: module, schedule, buffer assignment
    values_text: str                  # *-buffer-assignment-values.txt
    live_range_text: str              # *-live-range.txt
    buffer_assignment_text: str       # *-buffer-assignment.txt (for people)
    memory: MemoryFigures
    executable: bytes | None          # serialized executable where the backend allows it
    compiled: Any = dataclasses.field(repr=False, compare=False)  # jax.stages.Compiled
    lowered: Any = dataclasses.field(repr=False, compare=False)   # jax.stages.Lowered
    # For a flax.nnx.jit step: puts a jax.stages.Compiled back into nnx's Compiled
    # (which moves the modules' state in and out); None for jax.jit steps.
    wrap: Any = dataclasses.field(repr=False, compare=False, default=None)
    # Where this capture's program is not the one jax.jit compiles for the step
    # (jax.random's threefry2x32 lowered unrolled on CPU): jax.jit's own program,
    # compiled with the same scheduler and options, without dumps (it is not
    # planned).  Its outputs are the reference a plan is verified against, its
    # temp XLA's figure for the step.
    jax_program: "ProgramCompile | Capture | None" = dataclasses.field(
        repr=False, compare=False, default=None)

    @property
    def reference(self) -> "ProgramCompile | Capture":
        """The compile whose executable's outputs a plan must reproduce: jax.jit's program."""
        return self.jax_program if self.jax_program is not None else self


@dataclasses.dataclass(frozen=True)
class ProgramCompile:
    """XLA's compile of a program that is not planned, without XLA's dumps
    (no HLO, buffer assignment or live ranges to read): its memory figures and
    its executable, live and serialized, which is all a reference needs."""
    backend: str
    scheduler: str
    compiler_options: dict[str, Any]
    memory: MemoryFigures
    executable: bytes | None          # serialized, for the verification's subprocess
    compiled: Any = dataclasses.field(repr=False, compare=False)  # jax.stages.Compiled
    wrap: Any = dataclasses.field(repr=False, compare=False, default=None)
