"""Copies of several results of one multi-result fusion before one instruction
are one launch (``recompute_plan.State.merged_with``): no scratch for the
results it recomputes, one scratch for each result it does not, its FLOPs
counted once; a result's copy may run before a sibling's reader (a slot,
``candidates.with_sibling_slots``).  Planner only, no compile."""

from __future__ import annotations

import importlib
import types

from olla_jax.budget.candidates import Candidate
from olla_jax.budget.recompute_plan import State

candidates = importlib.import_module("olla_jax.budget.candidates")

SIZES = {1: 64, 2: 128, 3: 256, 9: 512}
GRAPH = types.SimpleNamespace(values={v: types.SimpleNamespace(size=s) for v, s in SIZES.items()})


def result(value: int, readers, producer: int = 0, flops: int = 10) -> Candidate:
    """Result ``value`` of a three-result fusion (values 1, 2, 3) at node ``producer``."""
    return Candidate(value, producer, tuple(readers), (), flops, 0.0,
                     scratch=tuple(v for v in (1, 2, 3) if v != value))


def state_with(*picks) -> State:
    state = State(base=None, owners=(), intervals=[], interval_of_unit={})
    for c, t in picks:
        state.picks.append((c, 0))
        state.add_scratch(GRAPH, c, t)
    return state


def scratch(state: State):
    return sorted((i, v, tuple(iv)) for i, v, iv in state.scratch)


def test_copies_at_one_time_are_one_launch_and_write_a_third_result_once():
    a, b = result(1, (5,)), result(2, (7,))
    s = state_with((a, 10), (b, 10))
    assert s.merged_with(0) == {1} and s.merged_with(1) == {0}
    # result 3 written once, at the first copy's scratch; 1 and 2 at their copies
    assert scratch(s) == [(0, 3, (256, 10, 10))]
    assert s.launches_flops() == 10


def test_copies_at_two_times_are_two_launches_each_with_its_scratch():
    a, b = result(1, (5,)), result(2, (7,))
    s = state_with((a, 10), (b, 14))
    assert s.merged_with(0) == set()
    assert scratch(s) == [(0, 2, (128, 10, 10)), (0, 3, (256, 10, 10)),
                          (1, 1, (64, 14, 14)), (1, 3, (256, 14, 14))]
    assert s.launches_flops() == 20


def test_other_producers_and_feeders_do_not_merge():
    a = result(1, (5,))
    other = Candidate(9, 4, (6,), (), 7, 0.0)          # another producer, one result
    s = state_with((a, 10), (other, 10))
    assert s.merged_with(0) == set() and s.merged_with(1) == set()
    assert s.launches_flops() == 17


def test_a_result_may_be_copied_before_its_siblings_readers():
    a, b, c = result(1, (5, 8)), result(2, (7,)), result(3, ())
    got = {x.value: x for x in candidates.with_sibling_slots([a, b, c])}
    assert got[2].users == (7, 5, 8) and got[2].slots == (5, 8)
    assert got[1].users == (5, 8, 7) and got[1].slots == (7,)
    assert got[1].readers == (5, 8)          # slots read nothing
    # a candidate of another producer is no sibling
    lone = Candidate(9, 4, (6,), (), 7, 0.0, scratch=(1,))
    assert candidates.with_sibling_slots([a, lone])[1] == lone


def test_a_plans_note_counts_a_merged_launch_once():
    feed_back = importlib.import_module("olla_jax.budget.feed_back")
    graph = types.SimpleNamespace(node_index={"f": 0, "g": 1})
    copy = lambda v, producer, before: types.SimpleNamespace(  # noqa: E731
        value=v, producer=producer, before=before, late_users=(before,), done_before="")
    plan = types.SimpleNamespace(
        layout=types.SimpleNamespace(graph=graph, recomputes=(
            copy(1, "f", "x"), copy(2, "f", "x"), copy(9, "g", "x"), copy(1, "f", "y"))),
        picked=("f", "f", "g", "f"), splits=((1, 0), (2, 0), (9, 0), (1, 1)))
    assert feed_back._copies_stated(plan) == "3 values (4 copies, 3 launches)"
