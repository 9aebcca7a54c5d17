"""TPU: read-only views only.

On CPU (and, by the same model, GPU) a plan can be fed back by rewriting the
serialized executable: its thunks name buffer slices that can be moved.  A TPU
executable is an opaque libtpu program with its buffer addresses compiled in;
nothing outside libtpu can re-place them.  What remains is to read XLA's own
plan (``memory_analysis()``, the scheduled HLO, ``--xla_dump_to`` buffer
assignment) and to act at the HLO level (rematerialisation, donation, sharding).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax

from olla_jax.capture.base import CaptureError


def tpu_notice() -> str:
    return ("TPU: olla_jax can read XLA's memory plan for a TPU program "
            "(memory_analysis(), scheduled HLO, buffer-assignment dumps) but cannot "
            "feed a plan back: libtpu executables are opaque and their buffer "
            "addresses are baked into the compiled program. Use the findings at the "
            "HLO level instead (donation, rematerialisation, sharding).")


def tpu_devices() -> list[jax.Device]:
    """The TPUs of this machine; empty when there are none."""
    try:
        return list(jax.devices("tpu"))
    except RuntimeError:
        return []


def compile_for_tpu(
    fn: Callable[..., Any],
    args: tuple,
    *,
    static_argnums: int | Sequence[int] = (),
    donate_argnums: int | Sequence[int] = (),
    compiler_options: dict[str, Any] | None = None,
) -> jax.stages.Compiled:
    """Compile ``fn(*args)`` for this machine's TPU, for reading only."""
    if not tpu_devices():
        raise CaptureError("no TPU on this machine: compile_for_tpu needs one (libtpu "
                           "compiles only for attached TPUs here). " + tpu_notice())
    is_jitted = hasattr(fn, "lower") and hasattr(fn, "__wrapped__")
    if is_jitted and not (static_argnums or donate_argnums):
        jitted = fn
    else:
        jitted = jax.jit(fn.__wrapped__ if is_jitted else fn,
                         static_argnums=static_argnums, donate_argnums=donate_argnums)
    return jitted.lower(*args).compile(compiler_options=compiler_options)
