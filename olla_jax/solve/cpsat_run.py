"""Running a CP-SAT model: its limits set in one place, and a failure inside
OR-Tools taken as "no answer", so that the caller's fallback runs.

OR-Tools' presolve can raise from C++ on a valid model (an uncaught
``absl::btree_map::at`` IndexError, seen in the order search's windows with a
solution hint; google/or-tools#5288 is open on it): without this, one such
window stopped the whole plan.
"""
from __future__ import annotations

from typing import Any

from absl import logging


def solve(model: Any, seconds: float, *, workers: int = 1,
          seed: int | None = None, **parameters) -> tuple[Any, int]:
    """(solver, status) of ``model`` solved for at most ``seconds`` (at least
    10 ms) on ``workers`` threads; ``parameters`` are other CpSolver
    parameters by name. Status UNKNOWN where the solver itself failed."""
    from ortools.sat.python import cp_model   # imported by the callers' models already
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = max(0.01, float(seconds))
    solver.parameters.num_workers = max(1, int(workers))
    if seed is not None:
        solver.parameters.random_seed = int(seed)
    for name, value in parameters.items():
        setattr(solver.parameters, name, value)
    try:
        return solver, solver.solve(model)
    except Exception as err:  # noqa: BLE001 - OR-Tools raises C++ errors as any type
        logging.warning("CP-SAT failed inside OR-Tools (%s: %s); taken as no answer",
                        type(err).__name__, err)
        return solver, cp_model.UNKNOWN
