"""``olla_jax.place``: the placement problem alone, for lifetimes already fixed."""

from __future__ import annotations

import math
import numbers
from typing import Any, Iterable

from olla_jax.solve import place as place_lib
from olla_jax.solve.csv_io import CapacityError
from olla_jax.sizes import parse_size
from olla_jax.solve.problem import Interval, Placement, PlacementProblem


def place(buffers: Iterable[tuple[int, int, int]] | PlacementProblem, *,
          capacity: int | str | None = None,
          alignment: int = 1, time_limit_s: float = 10.0, engine: str = "auto") -> Placement:
    """Offsets for buffers given as ``(lower, upper, size)``, live on [lower, upper).

    Returns a ``Placement`` (``offset`` per buffer, ``arena_size``) with no two
    buffers live at once on overlapping bytes.  With ``capacity``, raises
    ``CapacityError`` (the least arena found and the live-bytes bound) when it
    does not fit; the search stops at the first placement that fits.  ``capacity``
    is a whole number of bytes or a string such as ``"64MiB"`` (as the CLI's
    ``--capacity``).
    """
    if capacity is not None:
        capacity = parse_size(capacity, "capacity")
    if not _is_whole(alignment) or alignment < 1:
        raise ValueError(f"alignment must be a whole number of bytes >= 1, got {alignment!r}")
    number = isinstance(time_limit_s, numbers.Real) and not isinstance(time_limit_s, bool)
    if not number or not math.isfinite(time_limit_s) or time_limit_s <= 0:
        raise (ValueError if number else TypeError)(
            f"time_limit_s must be a positive number of seconds, got {time_limit_s!r}")
    if isinstance(buffers, PlacementProblem):
        problem = buffers
    else:
        intervals = []
        for k, entry in enumerate(buffers):
            try:
                if not all(map(_is_whole, entry)):   # int() would cut 100.5 bytes to 100
                    raise ValueError("not whole numbers")
                lower, upper, size = (int(x) for x in entry)
            except (TypeError, ValueError) as err:
                raise ValueError(f"buffer {k} is {entry!r}; give (lower, upper, size), whole "
                                 "numbers") from err
            if upper <= lower or size < 0:
                raise ValueError(f"buffer {k}: needs lower < upper and size >= 0, got {entry!r}")
            intervals.append(Interval(size, lower, upper - 1))
        problem = PlacementProblem(intervals=tuple(intervals), alignment=int(alignment))
    placement = place_lib.place(problem, time_limit_s=time_limit_s, engine=engine, target=capacity)
    if capacity is not None and placement.arena_size > capacity:
        raise CapacityError(capacity, placement.arena_size, place_lib.live_bytes_bound(problem))
    return placement


def _is_whole(x: Any) -> bool:
    """An integer, or a float with no fraction (2e9): what counts bytes and steps."""
    return (isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x)
            and x == int(x))
