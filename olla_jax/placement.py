"""``olla_jax.place``: the placement problem alone, for lifetimes already fixed."""

from __future__ import annotations

from typing import Iterable

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
    if isinstance(buffers, PlacementProblem):
        problem = buffers
    else:
        intervals = []
        for k, entry in enumerate(buffers):
            try:
                lower, upper, size = (int(x) for x in entry)
            except (TypeError, ValueError) as err:
                raise ValueError(f"buffer {k} is {entry!r}; give (lower, upper, size)") from err
            if upper <= lower or size < 0:
                raise ValueError(f"buffer {k}: needs lower < upper and size >= 0, got {entry!r}")
            intervals.append(Interval(size, lower, upper - 1))
        problem = PlacementProblem(intervals=tuple(intervals), alignment=alignment)
    placement = place_lib.place(problem, time_limit_s=time_limit_s, engine=engine, target=capacity)
    if capacity is not None and placement.arena_size > capacity:
        raise CapacityError(capacity, placement.arena_size, place_lib.live_bytes_bound(problem))
    return placement
