"""Real training steps (forward + backward + optimizer update) the planner is judged on.

    from examples import get, make, names
    step = get("gpt2", size="tiny")          # sizes: "tiny", "small" (default), "full"
    step = make("gpt2", "tiny", batch=8)     # the same step at another batch size
    compiled = step.jit().lower(*step.args).compile()

Every model is random-initialised from a fixed key and fed random data; nothing is downloaded.
"""

from __future__ import annotations

import importlib
from typing import Callable

from olla_jax import jax_compat as _jax_compat  # noqa: F401 - jax imported without a CPU install's CUDA noise

from .step import Step

_MODULES = ("mlp", "resnet18", "resnet50", "gpt2", "bert", "vit", "mlp_mixer", "unet", "densenet",
            "lstm", "remat", "donated", "grad_accum", "cnn_adam", "lm_adamw")
SIZES = ("tiny", "small", "full")


def _lazy(module: str) -> Callable[..., Step]:
    def make_step(size: str = "small") -> Step:
        return importlib.import_module(f"{__name__}.{module}").make_step(size)

    make_step.__name__ = f"{module}.make_step"
    return make_step


EXAMPLES: dict[str, Callable[..., Step]] = {m: _lazy(m) for m in _MODULES}


def names() -> list[str]:
    return list(EXAMPLES)


def get(name: str, size: str = "small") -> Step:
    if name not in EXAMPLES:
        raise KeyError(f"unknown example {name!r}; known: {', '.join(EXAMPLES)}")
    return EXAMPLES[name](size)


def make(name: str, size: str = "small", batch: int | None = None) -> Step:
    """``get(name, size)`` with the batch size replaced by ``batch`` (None: the size's own).

    Everything else keeps the size's configuration, so steps of one example at
    several batch sizes differ only in the batch (``olla_jax.largest_batch``)."""
    if batch is None:
        return get(name, size)
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be a positive integer, got {batch!r}")
    from .common import Sized
    return get(name, Sized(size, batch=batch))


__all__ = ["EXAMPLES", "SIZES", "Step", "get", "make", "names"]
