"""The one checked-apply step: a layout is checked, then applied to the executable.

Both the planner (plan.py) and the recomputation to a budget (the budget package) end the
same way: the independent checker reads the layout, and only then is the
executable rewritten, verified bit for bit and loaded.  Here once, for both.
"""

from __future__ import annotations

from typing import Any, Sequence

from absl import logging

from olla_jax import check
from olla_jax.capture.base import Backend


def candidate_plan(layout) -> check.CandidatePlan:
    """A layout as the independent checker reads it."""
    return check.CandidatePlan(
        layout.order_names, layout.places, layout.allocation_sizes,
        recomputes=tuple(check.RecomputeClaim(r.value, r.producer, r.before, r.late_users, r.place,
                                              done_before=r.done_before,
                                              scratch=tuple(getattr(r, "scratch", ())))
                         for r in layout.recomputes))


def unheld_tuple_flags(cap) -> frozenset[int]:
    """The tuple-table flags of ``cap``'s XLA:GPU executable that none of its
    thunks bears out (``olla_jax.apply.tuple_tables``); none on other backends
    or where the executable cannot be read (then every flag is honoured)."""
    if Backend.parse(cap.backend).kind != "gpu" or cap.executable is None:
        return frozenset()
    from olla_jax.apply import gpu_executable, tuple_tables
    try:
        return tuple_tables.unheld_tuple_flags_of(cap.executable)
    except gpu_executable.GpuLayoutError:
        return frozenset()


def rejection(cap, layout, *, alignment: int) -> str | None:
    """Why the independent checker rejects ``layout`` for ``cap``'s module, or None."""
    try:
        check.check_plan(cap.hlo_proto, cap.values_text, cap.live_range_text,
                         candidate_plan(layout), alignment=alignment,
                         unheld_tuple_flags=unheld_tuple_flags(cap))
    except check.PlanRejected as err:
        return str(err)
    return None


def apply(cap, layout, *, backend: str | Backend, args: Sequence[Any] = (),
          static_argnums: Sequence[int] = (), trials: int = 2, what: str = "the plan"):
    """``cap``'s executable rewritten to ``layout``, verified and loaded: an
    ``olla_jax.apply.feed_back.Outcome``; an exception inside the rewrite becomes
    a failed Outcome that names it, never the caller's exception."""
    from olla_jax.apply import feed_back

    try:
        return feed_back.apply_layout(cap, layout, backend=backend, args=args,
                                      static_argnums=static_argnums, trials=trials)
    except Exception as err:  # noqa: BLE001 - a bug in the rewrite must not cost the user the step
        logging.exception("applying %s failed", what)
        return feed_back.Outcome(False, f"applying {what} failed ({type(err).__name__}: {err})")
