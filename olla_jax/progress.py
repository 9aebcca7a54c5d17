"""Progress of one planning run, for a callback (``olla_jax.plan(progress=...)``)
and the command line's status line.

The planner calls a ``Reporter`` at each stage and whenever its best figure or
its bound changes; the reporter hands the user's callback a ``Progress``
snapshot.  With no callback every call is a no-op.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable

from olla_jax.sizes import size_text


@dataclasses.dataclass(frozen=True)
class Progress:
    """Where a planning run stands."""
    stage: str                  # "compiling", "order search", "placement", "lower bound", ...
    elapsed_s: float            # the planner's own time, which time_limit_s bounds (not
                                # XLA's compiles, nor the verification after the plan)
    time_limit_s: float
    total_s: float              # since the run started, XLA's compiles included
    best_bytes: int | None      # least temp placed so far (None until a placement exists)
    xla_bytes: int | None       # XLA's best temp, once compiled
    bound_bytes: int | None     # proven lower bound on the temp, once computed
    message: str = ""           # detail of the stage (e.g. the order search's latest)
    planning: bool = False      # the planner's clock is running

    def line(self, since_s: float = 0.0) -> str:
        """One status line, ``since_s`` seconds after the snapshot (a ticking clock)."""
        if self.planning:
            clock = f"{self.elapsed_s + since_s:5.1f} of {self.time_limit_s:g} s"
        else:
            clock = f"{self.total_s + since_s:5.1f} s in all"
        parts = [f"{self.stage:<12} {clock}"]
        if self.best_bytes is not None or self.xla_bytes is not None:
            best = "-" if self.best_bytes is None else size_text(self.best_bytes)
            xla = "" if self.xla_bytes is None else f" (XLA {size_text(self.xla_bytes)})"
            parts.append(f"best {best}{xla}")
        if self.bound_bytes is not None:
            parts.append(f"bound {size_text(self.bound_bytes)}")
        return "olla_jax: " + " | ".join(parts)


class Reporter:
    """Keeps the figures of one run and passes snapshots to ``callback``."""

    def __init__(self, callback: Callable[[Progress], None] | None, time_limit_s: float):
        if callback is not None and not callable(callback):
            raise TypeError(f"progress must be a callable taking a Progress, got {callback!r}")
        self.callback = callback
        self.time_limit_s = float(time_limit_s)
        self.t0 = time.monotonic()
        self.t_plan: float | None = None     # the planner's clock, while it runs
        self.planned_s = 0.0                 # its time before that
        self.best: int | None = None
        self.xla: int | None = None
        self.bound: int | None = None
        self.callback_s = 0.0                # the callback's own time (the planner's thread)
        self.said_slow = False               # the planner said once that it was slow

    def start_planning(self) -> None:
        """The planner's clock runs (the time ``time_limit_s`` bounds)."""
        if self.t_plan is None:
            self.t_plan = time.monotonic()

    def stop_planning(self) -> None:
        if self.t_plan is not None:
            self.planned_s += time.monotonic() - self.t_plan
            self.t_plan = None

    def __call__(self, stage: str, message: str = "", *, best: int | None = None,
                 xla: int | None = None, bound: int | None = None) -> None:
        if self.callback is None:
            return
        if best is not None and (self.best is None or best < self.best):
            self.best = int(best)
        if xla is not None:
            self.xla = int(xla)
        if bound is not None:   # the latest: a later graph may be freer than an earlier one
            self.bound = int(bound)
        now = time.monotonic()
        planning = self.t_plan is not None
        elapsed = self.planned_s + (now - self.t_plan if planning else 0.0)
        self.callback(Progress(stage, elapsed, self.time_limit_s, now - self.t0, self.best,
                               self.xla, self.bound, message, planning))
        self.callback_s += time.monotonic() - now


def reporter(progress: Reporter | Callable[[Progress], None] | None,
             time_limit_s: float) -> Reporter:
    """``progress`` as a Reporter (a callable gets a fresh one, its clock
    started; None a silent one)."""
    if isinstance(progress, Reporter):
        return progress
    report = Reporter(progress, time_limit_s)
    report.start_planning()
    return report
