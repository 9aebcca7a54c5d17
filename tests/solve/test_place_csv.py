"""MiniMalloc CSV reading, writing and solving."""

from __future__ import annotations

import csv

import pytest

from olla_jax.solve.csv_io import CapacityError, parse_csv, read_csv, solve_csv
from olla_jax.solve.place import validate_placement
from olla_jax.solve.problem import Interval, Placement, PlacementProblem

CSV = """id,lower,upper,size
b0,0,3,10
b1,1,4,20
b2,3,6,10
b3,4,5,30
"""


def test_round_trip_keeps_rows_and_adds_valid_offsets(tmp_path):
    src, dst = tmp_path / "in.csv", tmp_path / "out.csv"
    src.write_text(CSV)
    placement = solve_csv(src, dst, time_limit_s=2.0)
    rows = list(csv.DictReader(dst.open()))
    assert [r["id"] for r in rows] == ["b0", "b1", "b2", "b3"]
    assert [(r["lower"], r["upper"], r["size"]) for r in rows] == \
        [tuple(line.split(",")[1:]) for line in CSV.splitlines()[1:]]
    offsets = tuple(int(r["offset"]) for r in rows)
    assert offsets == placement.offset
    # reading the output back gives the same problem; the offsets are valid for it
    again = read_csv(dst)
    assert again.problem == read_csv(src).problem
    validate_placement(again.problem, Placement(placement.region, offsets, placement.arena_size))
    # upper is exclusive: b1 ends at 3, so the peak is b2+b3 at time 4
    assert again.problem.intervals[1] == Interval(20, 1, 3)
    assert placement.arena_size == 40


def test_extra_columns_and_whitespace_are_tolerated_and_kept(tmp_path):
    src, dst = tmp_path / "in.csv", tmp_path / "out.csv"
    src.write_text(" Size , ID ,lower, upper ,note\n 8 , a , 0 , 2 , first\n\n8,b,1,3,second\n")
    solve_csv(src, dst)
    rows = list(csv.reader(dst.open()))
    assert rows[0] == ["Size", "ID", "lower", "upper", "note", "offset"]
    assert [r[1] for r in rows[1:]] == ["a", "b"] and rows[2][4] == "second"
    assert sorted(int(r[5]) for r in rows[1:]) == [0, 8]


@pytest.mark.parametrize("text, message", [
    ("id,lower,size\n", "line 1: header lacks column.*upper"),
    ("", "no header"),
    ("id,lower,upper,size\na,0,2,8\nb,0,x,8\n", "line 3: upper 'x' is not an integer"),
    ("id,lower,upper,size\na,0,2,8\nb,5,5,8\n", r"line 3: upper \(5\) must exceed lower \(5\)"),
    ("id,lower,upper,size\na,0,2,-1\n", "line 2: size -1 is negative"),
    ("id,lower,upper,size\na,0,2\n", "line 2: 3 fields, the header has 4"),
    ("id,lower,upper,size\na,0,2,8\n\na,1,2,8\n", "line 4: id 'a' already used on line 2"),
])
def test_malformed_csv_is_rejected_with_its_line(text, message):
    with pytest.raises(ValueError, match=message):
        parse_csv(text)


def test_capacity_error_names_the_arena_and_the_bound(tmp_path):
    src, dst = tmp_path / "in.csv", tmp_path / "out.csv"
    src.write_text(CSV)
    with pytest.raises(CapacityError) as err:
        solve_csv(src, dst, capacity=35, time_limit_s=1.0)
    assert isinstance(err.value, ValueError)
    assert (err.value.best, err.value.bound) == (40, 40)
    assert "least arena found is 40" in str(err.value) and "bound is 40" in str(err.value)
    assert not dst.exists()
    assert solve_csv(src, dst, capacity=40).arena_size == 40


def test_parsed_problem_uses_inclusive_ends():
    parsed = parse_csv(CSV, alignment=8)
    assert parsed.problem == PlacementProblem(
        (Interval(10, 0, 2), Interval(20, 1, 3), Interval(10, 3, 5), Interval(30, 4, 4)), alignment=8)
