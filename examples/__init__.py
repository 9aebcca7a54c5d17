"""Real training steps (forward + backward + optimizer update) the planner is judged on.

    from examples import get, names
    step = get("gpt2", size="tiny")          # sizes: "tiny", "small" (default), "full"
    compiled = step.jit().lower(*step.args).compile()

Every model is random-initialised from a fixed key and fed random data; nothing is downloaded.
"""

from __future__ import annotations

import importlib
from typing import Callable

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


__all__ = ["EXAMPLES", "SIZES", "Step", "get", "names"]
