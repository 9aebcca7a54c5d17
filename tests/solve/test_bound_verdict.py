"""benchmarks.bound_verdict.verdict: whose gap, from a row's figures (the
chain bound and the longer solve included)."""

from __future__ import annotations

from benchmarks.bound_verdict import verdict

MIB = 1 << 20


def _row(**more):
    row = dict(planned=100 * MIB, bound=90 * MIB, fit=100 * MIB,
               cuts=[dict(c=0, cut=90 * MIB, order=95 * MIB)], proofs=[])
    row.update(more)
    return row


def test_a_chain_bound_within_two_percent_closes_the_gap():
    assert verdict(_row())[2].startswith("order or bound")
    best, _, is_ = verdict(_row(chains=[dict(c=0, value=99 * MIB)]))
    assert best == 99 * MIB and is_.startswith("closed")


def test_a_longer_solve_near_the_bound_makes_it_the_plans():
    long = dict(limit_s=120, planned=91 * MIB, bound=90 * MIB, live=90 * MIB, seconds=100)
    assert verdict(_row(long=long))[2].startswith("the plan's")
    far = dict(long, planned=95 * MIB)
    assert verdict(_row(long=far))[2].startswith("order or bound")


def test_the_two_percent_is_of_the_longer_solves_arena():
    # 1.9 MiB above a 90 MiB bound: 1.9% of the 10 s plan's 100, 2.07% of its own 91.9
    long = dict(limit_s=120, planned=int(91.9 * MIB), bound=90 * MIB, live=90 * MIB, seconds=1)
    assert not verdict(_row(long=long))[2].startswith("the plan's")
