"""MiniMalloc's CSV interchange format for static allocation problems.

Input: a header with at least ``id,lower,upper,size`` (any order, extra
columns kept, whitespace ignored); one buffer per row, live on the half-open
range [lower, upper).  Output: the same rows and columns plus ``offset``.
"""

from __future__ import annotations

import csv
import dataclasses
import io
from pathlib import Path

from olla_jax.solve.place import live_bytes_bound, place
from olla_jax.solve.problem import Interval, Placement, PlacementProblem
from olla_jax.errors import OllaJaxError

REQUIRED = ("id", "lower", "upper", "size")


class CapacityError(OllaJaxError, ValueError):
    """The buffers do not fit in the requested capacity."""

    def __init__(self, capacity: int, best: int, bound: int):
        self.capacity, self.best, self.bound = capacity, best, bound
        proven = " (proven: the live-bytes bound exceeds it)" if bound > capacity else ""
        super().__init__(f"the buffers do not fit in capacity {capacity}{proven}: the least arena "
                         f"found is {best} bytes, the live-bytes lower bound is {bound}")


@dataclasses.dataclass(frozen=True)
class CsvProblem:
    """A parsed CSV: the placement problem and the rows to write back."""
    problem: PlacementProblem
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


def _int(text: str, column: str, line: int) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"line {line}: {column} {text!r} is not an integer") from None


def parse_csv(text: str, *, alignment: int = 1) -> CsvProblem:
    """Parse CSV text; ValueError with the line number on a malformed row."""
    reader = csv.reader(io.StringIO(text))
    header: list[str] | None = None
    rows, intervals, seen = [], [], {}
    for record in reader:
        line = reader.line_num
        cells = [c.strip() for c in record]
        if not any(cells):
            continue
        if header is None:
            header = cells
            names = [c.lower() for c in cells]
            missing = [c for c in REQUIRED if c not in names]
            if missing:
                raise ValueError(f"line {line}: header lacks column(s) {', '.join(missing)} "
                                 f"(need {','.join(REQUIRED)})")
            if len(set(names)) != len(names):
                raise ValueError(f"line {line}: header repeats a column name")
            col = {name: k for k, name in enumerate(names)}
            continue
        if len(cells) != len(header):
            raise ValueError(f"line {line}: {len(cells)} fields, the header has {len(header)}")
        ident = cells[col["id"]]
        if ident in seen:
            raise ValueError(f"line {line}: id {ident!r} already used on line {seen[ident]}")
        seen[ident] = line
        lower = _int(cells[col["lower"]], "lower", line)
        upper = _int(cells[col["upper"]], "upper", line)
        size = _int(cells[col["size"]], "size", line)
        if upper <= lower:
            raise ValueError(f"line {line}: upper ({upper}) must exceed lower ({lower})")
        if size < 0:
            raise ValueError(f"line {line}: size {size} is negative")
        intervals.append(Interval(size=size, start=lower, end=upper - 1))
        rows.append(tuple(cells))
    if header is None:
        raise ValueError(f"no header: the CSV needs the columns {','.join(REQUIRED)}")
    return CsvProblem(PlacementProblem(tuple(intervals), alignment=alignment), tuple(header), tuple(rows))


def read_csv(path: str | Path, *, alignment: int = 1) -> CsvProblem:
    return parse_csv(Path(path).read_text(), alignment=alignment)


def format_csv(parsed: CsvProblem, placement: Placement) -> str:
    """The input rows with an ``offset`` column (replacing any there was)."""
    keep = [k for k, name in enumerate(parsed.header) if name.lower() != "offset"]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([parsed.header[k] for k in keep] + ["offset"])
    for row, offset in zip(parsed.rows, placement.offset):
        writer.writerow([row[k] for k in keep] + [offset])
    return out.getvalue()


def solve_csv(in_path: str | Path, out_path: str | Path, capacity: int | None = None, *,
              time_limit_s: float = 10.0, engine: str = "auto", alignment: int = 1) -> Placement:
    """Read a MiniMalloc CSV, place it, write it back with offsets.

    Raises CapacityError (nothing written) when the arena found exceeds ``capacity``.
    """
    parsed = read_csv(in_path, alignment=alignment)
    placement = place(parsed.problem, time_limit_s=time_limit_s, engine=engine, target=capacity)
    if capacity is not None and placement.arena_size > capacity:
        raise CapacityError(capacity, placement.arena_size, live_bytes_bound(parsed.problem))
    Path(out_path).write_text(format_csv(parsed, placement))
    return placement
