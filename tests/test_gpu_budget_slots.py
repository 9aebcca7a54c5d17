"""Slots (``budget.candidates.with_slots``): a value may be recomputed just
before the readers of a value recomputed from it, so that the dependent's
copy reads its copy (a chain).  Pure: no jax compile."""

from __future__ import annotations

from olla_jax.budget.candidates import Candidate, with_slots
from olla_jax.budget.recompute_plan import copies_read, late_part_ok


def cand(value, producer, users, operands=()):
    return Candidate(value, producer, tuple(users), tuple(operands), 1, 1.0)


def test_readers_of_dependents_become_slots_down_the_chain():
    h = cand(1, 0, (2, 9))                  # read by a's producer (2) and late (9)
    a = cand(2, 2, (3, 7), operands=(1,))   # a's late reader: 7
    b = cand(3, 3, (8,), operands=(2,))     # b's reader: 8, two links below h
    other = cand(4, 4, (5,))
    got = {c.value: c for c in with_slots([h, a, b, other])}
    assert got[1].slots == (3, 7, 8) and got[1].readers == (2, 9)
    assert set(got[1].users) == {2, 9, 3, 7, 8}
    assert got[2].slots == (8,) and got[2].readers == (3, 7)
    assert got[3].slots == () and got[4] == other
    one = {c.value: c for c in with_slots([h, a, b], depth=1)}
    assert one[1].slots == (3, 7)
    assert {c.value: c for c in with_slots([h, a, b], depth=0)}[1].slots == ()


def test_a_copy_before_a_slot_needs_a_reader_after_it():
    h = with_slots([cand(1, 0, (2, 9)), cand(2, 2, (3, 7), operands=(1,))])[0]
    step = list(range(12))
    assert late_part_ok(None, step, h, 7)           # 9 reads h after the slot
    late = dataclass_replace(h, users=(2, 9, 3, 7, 11), slots=(3, 7, 11))
    assert not late_part_ok(None, step, late, 11)   # nothing reads h after 11
    users = sorted(h.users)                          # 2, 3, 7, 9
    assert copies_read(h, users, [1])                # before 3: serves 9
    assert not copies_read(h, users, [1, 3])         # before 3, again before 9: 3, 7 read none
    assert copies_read(h, users, [0, 3])             # before 2 (reads it), before 9


def dataclass_replace(c, **kw):
    import dataclasses
    return dataclasses.replace(c, **kw)
