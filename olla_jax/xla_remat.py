"""XLA:GPU's own rematerialization, driven by its memory limit and searched.

XLA:GPU rematerializes only when its scheduler's memory limit is below what
the program needs.  That limit is derived from the device description:
(0.8 x ``device_memory_size`` - arguments - outputs) x
``xla_gpu_memory_limit_slop_factor`` / 100.  On a compile-only target the
description is ours to write, so the limit can be set to any value; the
result is not monotone in the limit (a lower limit can give a larger temp),
so several limits are compiled and the best one that fits is kept.

This is the baseline (and GPU fallback) for ``plan(..., memory_budget=...)``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import tempfile
from typing import Any, Callable, Iterator, Sequence

from absl import logging

from olla_jax import jax_compat
from olla_jax.capture.base import Backend, CaptureError, MemoryFigures
from olla_jax.flops import compiled_flops

_DEVICE_FRACTION = 0.8        # of device_memory_size, in XLA:GPU's limit
_DEFAULT_SLOP = 0.95          # xla_gpu_memory_limit_slop_factor's default, 95 (%)


# XLA:GPU logs a warning on stderr for each compile whose memory limit its
# rematerialization cannot reach.  The search asks for such limits on purpose
# (each point's figures say what XLA reached), so during its compiles these
# lines, and only these, are held back and logged at INFO instead.
_CANNOT_REACH = r"hlo_rematerialization\.cc:\d+\] Can't reduce memory use below"


@contextlib.contextmanager
def limit_warnings_held() -> Iterator[None]:
    """XLA's "Can't reduce memory use below" warnings of the compiles inside
    go to ``absl.logging`` at INFO, not stderr; all else on stderr stays."""
    held: list[str] = []
    try:
        with jax_compat.native_stderr_without(_CANNOT_REACH) as held:
            yield
    finally:   # the lines are there once the filter has ended
        for line in held:
            logging.info("XLA under a forced memory limit: %s", line)


@dataclasses.dataclass(frozen=True)
class RematPoint:
    """One compile of the step under a forced memory limit."""
    limit_bytes: int | None       # the scheduler limit aimed at (None: XLA's own)
    memory: MemoryFigures
    flops: int                    # of the whole step (olla_jax.flops)
    compiled: Any = dataclasses.field(repr=False, compare=False)

    @property
    def total(self) -> int:
        return self.memory.total


def device_memory_for(limit_bytes: int, io_bytes: int) -> int:
    """The ``device_memory_size`` that puts XLA:GPU's scheduler limit at
    ``limit_bytes`` for a step with ``io_bytes`` of arguments and outputs."""
    return int((limit_bytes / _DEFAULT_SLOP + io_bytes) / _DEVICE_FRACTION)


def target_file(target: str, limit_bytes: int, io_bytes: int, folder: str) -> str:
    """A device description of ``target`` written in ``folder`` whose memory
    puts XLA's limit at ``limit_bytes``; its path is a target of its own
    (``backend="gpu:<path>"``): the program XLA rematerializes under that
    limit, compiled again, which ``olla_jax.plan`` can capture and plan."""
    return _target_with_memory(target, device_memory_for(limit_bytes, io_bytes), folder)


def _target_with_memory(target: str, device_memory: int, folder: str) -> str:
    from olla_jax.capture import gpu
    text = gpu.target_config(target)
    if not re.search(r"\bdevice_memory_size:\s*\d+", text):
        raise CaptureError(f"GPU target {target!r} has no device_memory_size to lower")
    text = re.sub(r"\bdevice_memory_size:\s*\d+", f"device_memory_size: {int(device_memory)}",
                  text, count=1)
    path = os.path.join(folder, f"limit-{int(device_memory)}.txtpb")
    with open(path, "w") as f:
        f.write(text)
    return path


def search(fn: Callable, *args, backend: str | Backend, budget_bytes: int,
           static_argnums: Sequence[int] = (), donate_argnums: Sequence[int] = (),
           compiler_options: dict[str, Any] | None = None,
           fractions: Sequence[float] = (1.0, 0.85, 0.7, 0.55, 0.4, 0.25),
           io_bytes: int | None = None) -> list[RematPoint]:
    """Compile ``fn`` for a compile-only GPU target (``backend`` "gpu:<target>")
    with XLA's memory limit at ``fractions`` of the budget; XLA's own compile
    first, unless ``io_bytes`` (its arguments + outputs, which the limit is
    offset by) is given: then only the forced limits are compiled (a caller
    that holds XLA's own compile already saves one)."""
    from olla_jax.capture import gpu
    try:
        parsed = Backend.parse(backend)
    except CaptureError:
        parsed = None   # refused just below, with what to use instead
    if parsed is None or not parsed.compile_only:
        raise CaptureError("XLA's rematerialization can be forced only for a compile-only GPU "
                           f"target such as 'gpu:h100' (got {getattr(backend, 'name', backend)!r}): "
                           "the limit comes from the device description, which a real GPU "
                           "reports itself")
    target = parsed.target

    def compile_with(target_name: str, limit: int | None) -> RematPoint:
        compiled = gpu.compile_for_target(
            fn, tuple(args), target=target_name, static_argnums=tuple(static_argnums),
            donate_argnums=tuple(donate_argnums), compiler_options=compiler_options)
        return RematPoint(limit, MemoryFigures.of(compiled), compiled_flops(compiled), compiled)

    if io_bytes is None:
        points = [compile_with(target, None)]
        io = points[0].memory.argument + points[0].memory.output
    else:
        points, io = [], int(io_bytes)
    with tempfile.TemporaryDirectory(prefix="olla_jax_remat_") as folder, limit_warnings_held():
        for fraction in fractions:
            limit = int(fraction * budget_bytes)
            try:
                points.append(compile_with(target_file(target, limit, io, folder), limit))
            except CaptureError:
                continue  # XLA refused this limit outright; others may do
    return points


def best(points: Sequence[RematPoint], budget_bytes: int) -> RematPoint:
    """The fewest FLOPs among points within the budget, else the least memory."""
    fitting = [p for p in points if p.total <= budget_bytes]
    if fitting:
        return min(fitting, key=lambda p: (p.flops, p.total))
    return min(points, key=lambda p: (p.total, p.flops))
