"""Run time of a rewritten executable against XLA's, measured in one process."""

from __future__ import annotations

import dataclasses
import statistics
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class TimeRatio:
    ratio: float              # median rewritten / median original (1.0: same speed)
    ratio_of_minima: float    # min rewritten / min original: less noise, more optimism
    original_s: float         # median seconds per call
    rewritten_s: float
    repeats: int


def _fresh(args: Sequence[Any], kwargs: dict[str, Any]) -> tuple[Sequence[Any], dict[str, Any]]:
    """Device copies of the arguments, ready: donation consumes its inputs."""
    # static arguments (plain Python values) stay as they are: an array would not match the plan
    copied = jax.tree_util.tree_map(
        lambda x: jnp.array(x, copy=True) if isinstance(x, jax.Array) else x, (tuple(args), kwargs))
    return jax.block_until_ready(copied)


def _call(fn, call: tuple[Sequence[Any], dict[str, Any]]) -> float:
    args, kwargs = call
    start = time.perf_counter()
    jax.block_until_ready(fn(*args, **kwargs))
    return time.perf_counter() - start


def time_ratio(original: Any, rewritten_compiled: Any, args: Sequence[Any],
               repeats: int = 50, warmup: int = 2,
               kwargs: dict[str, Any] | None = None) -> TimeRatio:
    """Time both compiled callables on ``args`` (a tuple of positional
    arguments) and ``kwargs``, interleaved A B B A ... so that drift hits both
    alike; copies of the arguments are made outside the timed region."""
    kwargs = dict(kwargs or {})
    for _ in range(warmup):
        _call(original, _fresh(args, kwargs))
        _call(rewritten_compiled, _fresh(args, kwargs))
    a_times, b_times = [], []
    for k in range(repeats):
        pair = ((original, a_times), (rewritten_compiled, b_times))
        for fn, times in (pair if k % 2 == 0 else pair[::-1]):
            times.append(_call(fn, _fresh(args, kwargs)))
    a_med, b_med = statistics.median(a_times), statistics.median(b_times)
    return TimeRatio(ratio=b_med / a_med, ratio_of_minima=min(b_times) / min(a_times),
                     original_s=a_med, rewritten_s=b_med, repeats=repeats)
