"""What a capture is, shared by the recorder and the backend compilers.

``record`` compiles a step and fills a :class:`Capture`; ``gpu`` and ``tpu``
compile for their devices and raise :class:`CaptureError`.  They import this
module, never each other, so the capture package has no import cycle.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from olla_jax.errors import OllaJaxError


class CaptureError(OllaJaxError, RuntimeError):
    """The step could not be compiled or its dumps could not be read."""


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
