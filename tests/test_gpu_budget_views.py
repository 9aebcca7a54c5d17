"""A value's views keep its first run live (``recompute_plan.read_times``).

On GPU a candidate may be held by entry instructions that run nothing: a
bitcast, or the get-tuple-element naming a multi-result fusion's (or library
call's) result.  The independent checker holds a value live at each of its
positions: at a bitcast before the first copy, and at a get-tuple-element
wherever it runs.  Before, the search ignored them: on resnet50:small (H100)
the order put ``get-tuple-element.1831`` (a view of
``loop_broadcast_fusion.3{1}``) just before the copy's reader, the first run
was given bytes as if dead right after its producer, and the checker refused
the plan ("values loop_broadcast_fusion.3{1} and loop_maximum_fusion{}
overlap ... while both are live").  Pure: no jax compile."""

from __future__ import annotations

from olla_jax.budget.candidates import Candidate
from olla_jax.budget.recompute_plan import read_times


def cand(value, producer, users, views=(), tuple_views=()):
    return Candidate(value, producer, tuple(users), (), 1, 1.0, views=tuple(views),
                     tuple_views=tuple(tuple_views))


def test_a_late_get_tuple_element_keeps_the_first_run_live():
    # made at 1, its get-tuple-element at 8, read at 9: the run before the
    # split at 9 lives until 8's step (doubled: 17), not just its producer's (3)
    c = cand(1, 1, (9,), tuple_views=(8,))
    assert read_times(c, [9], list(range(12))) == [17, 19]


def test_a_get_tuple_element_after_the_split_still_holds_the_first_run():
    c = cand(1, 1, (4, 9), tuple_views=(6,))
    times = read_times(c, [4, 9], list(range(12)))
    assert times[1] == 13        # split before 9: until the view at 6, past reader 4 (9)
    assert times[0] == 13        # split before 4: the view at 6 holds it past the copy


def test_a_bitcast_counts_before_the_split_only():
    c = cand(1, 1, (4, 9), views=(6,))
    # before 4: the producer's time (the bitcast at 6 names the copy);
    # before 9: the bitcast at 6, after reader 4
    assert read_times(c, [4, 9], list(range(12))) == [3, 13, 19]


def test_no_views_reads_as_before():
    c = cand(1, 4, (5, 6, 10))
    assert read_times(c, [5, 6, 10], list(range(12))) == [9, 11, 13, 21]
