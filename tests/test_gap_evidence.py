"""benchmarks.gap_evidence's verdict: whose the gap to the bound is."""

from benchmarks.gap_evidence import verdict


def row(planned, long, long_live, bound, bound_plus):
    return dict(planned=planned, long=long, long_live=long_live, bound=bound,
                bound_plus=bound_plus, limit_s=10, long_s=150)


def test_a_longer_search_that_reaches_the_bound_makes_the_gap_the_plans():
    v = verdict(row(110, 100, 100, 99, 99))
    assert v["is_"].startswith("plan's: the long search")
    assert abs(v["plan_part"] - 10 / 110) < 1e-12 and v["bound_part"] == 0


def test_a_bound_that_rises_to_the_plan_makes_the_gap_the_bounds():
    v = verdict(row(100, 100, 100, 80, 99))
    assert v["is_"].startswith("bound's") and abs(v["bound_part"] - 0.19) < 1e-12


def test_placement_when_the_long_order_is_near_the_bound():
    assert verdict(row(100, 100, 81, 80, 80))["is_"].startswith("plan's placement")


def test_unresolved_when_neither_side_moves():
    v = verdict(row(100, 100, 100, 60, 60))
    assert v["is_"].startswith("unresolved: a 15x") and abs(v["unresolved"] - 0.4) < 1e-12


def test_within_two_percent_is_no_gap():
    assert verdict(row(100, 100, 100, 98.5, 98.5))["is_"].startswith("none")
