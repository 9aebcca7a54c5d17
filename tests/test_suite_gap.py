"""benchmarks/suite.py's gap split: the chosen order's floor counts its region-fit
floor (region space only where whole blocks fit), so a plan at that floor is
not blamed on placement."""

from benchmarks import suite
from olla_jax.solve.problem import Interval, PlacementProblem, Region


def _row(**over):
    row = dict(model="m", planned=110, arena=110, placement_live=100, bound=100, gap=10 / 110)
    row.update(over)
    return row


def test_without_region_fit_floor_the_gap_is_placement():
    split = suite.gap_split(_row())
    assert split["is"] == "placement" and abs(split["placement"] - 10 / 110) < 1e-12


def test_a_plan_at_its_orders_region_fit_floor_is_not_placements():
    split = suite.gap_split(_row(placement_fit=110))
    assert split["placement"] == 0 and split["is"] == "order or bound"
    assert abs(split["order"] - 10 / 110) < 1e-12
    assert suite._floor_cell(_row(placement_fit=110, placement_fit_exact_s=30.0)).endswith("(exact 30 s)")
    assert suite._floor_cell(_row()) == "-"


def test_order_floor_counts_only_region_space_whole_blocks_fit():
    # Two 2-byte blocks live together, one idle 3-byte region: live bytes less
    # the region's space say 1, but the region holds one block, so the arena is
    # at least 2 (and 2 is reached: one block in the region, one in the arena).
    pp = PlacementProblem(intervals=(Interval(2, 0, 1), Interval(2, 1, 2)),
                          regions=(Region(3),), alignment=1)
    assert suite.order_floor(pp, arena=2, exact=True) == (2, 0.0)
    assert suite.order_floor(pp, arena=4, exact=False) == (2, 0.0)
    # An arena above that floor gets the exact pass when asked: still 2, proven.
    assert suite.order_floor(pp, arena=4, exact=True) == (2, suite.FIT_EXACT_S)
