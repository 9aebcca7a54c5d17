"""Deferring output writers: a stable topological order, and the variants tried."""

from __future__ import annotations

from olla_jax.solve import defer
from olla_jax.solve.problem import (ARENA, Interval, Item, OrderProblem, Placement,
                                    PlacementProblem, check_topological)


def _chain_with_outputs() -> OrderProblem:
    # 0 -> 1 -> 2 -> 3 -> 4 is the main chain; 5 writes output region 0 from
    # node 1's result and 6 writes region 1 from node 2's; 7 reads 5.
    edges = ((0, 1), (1, 2), (2, 3), (3, 4), (1, 5), (2, 6), (5, 7))
    items = (Item(8, (1,), (1, 2, 5)), Item(4, (5,), (5, 7), region=0),
             Item(4, (6,), (6,), region=1), Item(2, (0,), (0, 1)))
    return OrderProblem(8, edges, items, (0,) * 8, (16, 16))


def test_output_writers_are_the_nodes_that_define_pinned_items():
    assert defer.output_writers(_chain_with_outputs()) == {5, 6}


def test_deferred_nodes_run_last_and_the_others_keep_their_order():
    p = _chain_with_outputs()
    order = (0, 1, 5, 7, 2, 6, 3, 4)
    moved = defer.defer(p, order, {5, 6})
    check_topological(p, moved)
    assert moved[:5] == (0, 1, 2, 3, 4)
    assert moved[5:] == (5, 7, 6)            # 7 needs 5 and is not deferred itself
    rest = [n for n in moved if n not in (5, 6, 7)]
    assert rest == [n for n in order if n not in (5, 6, 7)]
    assert defer.defer(p, order, set()) == order


def test_arena_peak_step_ignores_what_sits_in_regions():
    p = PlacementProblem((Interval(10, 0, 2), Interval(5, 3, 4), Interval(20, 3, 4)), ())
    arena_only = Placement((ARENA, ARENA, ARENA), (0, 0, 5), 25)
    assert defer.arena_peak_step(p, arena_only) == 3
    parked = Placement((ARENA, ARENA, 0), (0, 0, 0), 10)
    assert defer.arena_peak_step(p, parked) == 0


def test_deferral_sets_start_with_every_writer_after_the_peak():
    writers = frozenset({1, 3, 5, 7, 9})
    order = tuple(range(10))
    sets = list(defer.deferral_sets(writers, order, peak_node=4))
    assert sets[0] == {5, 7, 9}
    assert sets[1] == writers
    assert {5} in sets and {5, 7} in sets
    assert len(sets) == len(set(sets))
