"""Placement for fixed lifetimes: ``PlacementProblem`` -> ``Placement``.

``place`` runs the greedy best-fit, then an exact engine while the arena is
above the live-bytes bound and time remains, and checks what it returns.
"""

from __future__ import annotations

import time
import warnings

from olla_jax.solve.place_check import live_bytes_bound, validate_placement
from olla_jax.solve.place_engines import EngineFailure, solve_cpsat, solve_ilp
from olla_jax.solve.place_greedy import SORT_ORDERS, best_fit, best_fit_model
from olla_jax.solve.place_model import build_model
from olla_jax.solve.problem import Placement, PlacementProblem

__all__ = ["ENGINES", "SORT_ORDERS", "best_fit", "live_bytes_bound", "place", "place_exact",
           "validate_placement"]

ENGINES = ("cpsat", "ilp-cbc", "ilp-highs")


def place_exact(problem: PlacementProblem, *, time_limit_s: float, engine: str = "cpsat",
                hint: Placement | None = None) -> Placement:
    """Minimise the arena with an exact engine ("cpsat", "ilp-cbc", "ilp-highs"),
    warm-started from ``hint`` (best_fit when None); never worse than the hint.
    An engine that crashes leaves the hint, with a RuntimeWarning."""
    if engine not in ENGINES:
        raise ValueError(f"unknown placement engine {engine!r}: use one of {ENGINES}")
    model = build_model(problem)
    if hint is None:
        hint = best_fit_model(model)
    else:
        validate_placement(problem, hint)
    lower = live_bytes_bound(problem)
    if hint.arena_size <= lower:
        return hint
    try:
        if engine == "cpsat":
            found = solve_cpsat(model, hint, time_limit_s, lower)
        else:
            found = solve_ilp(model, hint, time_limit_s, "CBC" if engine == "ilp-cbc" else "HiGHS", lower)
    except EngineFailure as err:
        warnings.warn(f"placement engine {engine} failed, keeping the hint: {err}", RuntimeWarning)
        return hint
    if found is None or found.arena_size >= hint.arena_size:
        return hint
    validate_placement(problem, found)
    return found


def place(problem: PlacementProblem, *, time_limit_s: float = 10.0, engine: str = "auto") -> Placement:
    """Best-fit, then the exact engine (``auto``: CP-SAT; ``greedy``: none) if
    the arena is above the live-bytes bound and time allows.  Always valid."""
    t0 = time.perf_counter()
    if engine not in ("auto", "greedy", *ENGINES):
        raise ValueError(f"unknown placement engine {engine!r}: use 'auto', 'greedy' or one of {ENGINES}")
    result = best_fit(problem)
    validate_placement(problem, result)
    left = time_limit_s - (time.perf_counter() - t0)
    if engine != "greedy" and left > 0.05 and result.arena_size > live_bytes_bound(problem):
        result = place_exact(problem, time_limit_s=left, engine="cpsat" if engine == "auto" else engine,
                             hint=result)
    return result
