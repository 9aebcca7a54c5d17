"""Several recomputations of one value: each copy runs before its own group of
readers and dies after the group's last one.  The checker accepts disjoint,
in-order groups placed apart in time or space and refuses anything else; the
CPU rewrite inserts one thunk per copy and the result is bit for bit XLA's."""

from __future__ import annotations

import dataclasses
import re
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from olla_jax import budget, check
from olla_jax.budget import recompute_plan
from olla_jax.apply import cpu_rewrite, executable, feed_back
from olla_jax.plan import candidate_plan


def held_thrice(x, z, w, w1, w2, v1, v2, o):
    a = jnp.tanh(z) @ w                     # read three times, idle across a peak between each
    s = jnp.sum(jnp.tanh(a))
    t = jnp.cos(jnp.sin((x * s) @ w1) @ v1) @ o     # the peak, then a column
    s = jnp.sum(a * t[:, None])
    t = jnp.cos(jnp.sin((x * s) @ w2) @ v2) @ o     # and again
    return jnp.sum(a * t[:, None])


def _args():
    k = jax.random.split(jax.random.PRNGKey(0), 8)
    return (jax.random.normal(k[0], (128, 128)), jax.random.normal(k[1], (128, 32)),
            jax.random.normal(k[2], (32, 128)),
            *(jax.random.normal(k[i], (128, 512)) for i in (3, 4)),
            *(jax.random.normal(k[i], (512, 2048)) / 16 for i in (5, 6)),
            jax.random.normal(k[7], (2048,)))


@pytest.fixture(scope="module")
def held():
    from olla_jax.capture.record import capture
    from olla_jax.graph import model
    args = _args()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cap = capture(held_thrice, *args)
    graph = model.build(cap.hlo_proto, cap.values_text, cap.live_range_text)
    # (without feeders: tanh(z), a's operand, is kept alive for the copies here)
    cands = budget.candidates(graph, cap, feeders=False)
    a = max((c for c in cands if len(c.users) >= 3), key=lambda c: len(c.users), default=None)
    assert a is not None, "a = tanh(x) @ w is read three times: a candidate with three readers"
    return cap, args, graph, graph.xla_order, a


def _check(cap, layout):
    return check.check_plan(cap.hlo_proto, cap.values_text, cap.live_range_text,
                            candidate_plan(layout), alignment=layout.graph.alignment)


def _with(layout, *copies):
    return dataclasses.replace(layout, recomputes=tuple(copies))


def _three(held):
    cap, args, graph, order, a = held
    return budget.plan_of(graph, order, [(a, 0), (a, 1), (a, 2)])


def test_three_copies_of_one_value_are_checked_and_copied(held):
    cap, args, graph, order, a = held
    plan = _three(held)
    copies = plan.layout.recomputes
    assert [r.value for r in copies] == [a.value] * 3
    step = recompute_plan.step_index(graph, order)
    readers = [graph.nodes[u] for u in sorted(a.users, key=lambda n: step[n])]
    assert [r.late_users for r in copies] == [(u,) for u in readers[:3]]
    _check(cap, plan.layout)
    raw = cpu_rewrite.rewrite(cap.executable, feed_back.edit_of(plan.layout))
    names = [t.info.op_name for t in executable.decode(raw).thunk_sequence.thunks]
    before = [t.info.op_name for t in executable.decode(cap.executable).thunk_sequence.thunks]
    assert len(names) == len(before) + 3
    producer = graph.nodes[a.producer]
    runs = [k for k, n in enumerate(names) if n == producer]
    assert len(runs) == 4       # the first run and one copy before each reader
    for k, r in zip(runs[1:], copies):
        assert names[k + 1] == r.before


@pytest.mark.slow
def test_three_copies_of_one_value_are_bit_identical(held):
    cap, args, _, _, _ = held
    plan = _three(held)
    outcome = feed_back.apply_layout(cap, plan.layout, args=args, trials=1)
    assert outcome.ok, outcome.reason
    ours = outcome.compiled(*args)
    xla = jax.jit(held_thrice)(*args)
    assert np.asarray(ours).tobytes() == np.asarray(xla).tobytes()


def test_two_copies_live_at_once_must_not_share_bytes(held):
    """The second copy runs before the first copy's reader (both live there):
    on the first copy's bytes it is refused; moved to fresh bytes, accepted."""
    cap, _, graph, order, a = held
    plan = budget.plan_of(graph, order, [(a, 1), (a, 2)])
    first, second = plan.layout.recomputes
    early = dataclasses.replace(second, before=first.before, place=first.place)
    with pytest.raises(check.PlanRejected, match="overlap"):
        _check(cap, _with(plan.layout, first, early))
    temp = graph.temp_allocation
    top = plan.layout.allocation_sizes[temp]
    apart = dataclasses.replace(plan.layout, allocation_sizes={
        **plan.layout.allocation_sizes, temp: top + graph.alignment * -(-second.size // graph.alignment)})
    _check(cap, _with(apart, first, dataclasses.replace(early, place=(temp, top))))


def test_reader_groups_must_be_disjoint_in_order_and_cover_every_late_reader(held):
    cap, _, graph, order, a = held
    plan = budget.plan_of(graph, order, [(a, 0), (a, 1), (a, 2)])
    c0, c1, c2 = plan.layout.recomputes
    _check(cap, plan.layout)
    both = dataclasses.replace(c1, late_users=c1.late_users + c2.late_users)
    with pytest.raises(check.PlanRejected, match="overlap|two copies"):
        _check(cap, _with(plan.layout, c0, both, c2))
    with pytest.raises(check.PlanRejected, match="not declared a late reader"):
        _check(cap, _with(plan.layout, c0, c2))           # c1's reader reads no copy
    swapped = (dataclasses.replace(c1, late_users=c2.late_users),
               dataclasses.replace(c2, late_users=c1.late_users))
    with pytest.raises(check.PlanRejected, match="out of order|precedes"):
        _check(cap, _with(plan.layout, c0, *swapped))


def test_a_later_copy_keeps_its_producers_operands_alive(held):
    """The producer's operand and a value XLA writes after the first copy's
    group, both moved to fresh bytes at the arena's top: accepted when no
    copy runs after that value is written, refused when one does (the
    operand must then be intact until that run)."""
    cap, _, graph, order, a = held
    step = recompute_plan.step_index(graph, order)
    readers = sorted(a.users, key=lambda n: step[n])

    def alone(v):
        return graph.units[graph.unit_of_value[v.id]].values == (v.id,)
    operands = [graph.values[o] for o in a.operands
                if graph.values[o].allocation == graph.temp_allocation and alone(graph.values[o])]
    assert operands, "tanh(z) is a temporary operand of a's producer"
    op = operands[0]
    later = [v for v in graph.values.values()
             if v.allocation == graph.temp_allocation and alone(v) and not v.live_out
             and v.id != a.value and step[readers[0]] < step[v.def_node] < step[readers[1]]]
    assert later, "temporaries are written between a's first and second readers"
    temp, align = graph.temp_allocation, graph.alignment

    def on_top(plan, v):
        top = -(-plan.layout.allocation_sizes[temp] // align) * align
        size = -(-max(op.size, v.size) // align) * align
        return dataclasses.replace(plan.layout, places={**plan.layout.places, op.id: (temp, top),
                                                        v.id: (temp, top)},
                                   allocation_sizes={**plan.layout.allocation_sizes,
                                                     temp: top + size})
    one = budget.plan_of(graph, order, [(a, 0)])
    _check(cap, on_top(one, later[0]))
    three = budget.plan_of(graph, order, [(a, 0), (a, 1), (a, 2)])
    with pytest.raises(check.PlanRejected, match=re.escape(op.key)):
        _check(cap, on_top(three, later[0]))


def test_split_copies_recomputes_a_value_idle_across_two_peaks_twice(held):
    """One copy drops ``a`` across one of its two idle peaks only (the other
    still holds it); ``budget.split_copies``, from a one-copy plan, adds a
    second copy, and its arena is below every one-copy plan's."""
    cap, args, graph, order, a = held
    cands = budget.candidates(graph, cap)
    single = [budget.plan_of(graph, order, [(a, k)]) for k in range(len(a.users))]
    start = min(single, key=lambda p: (p.arena_live, p.temp_bytes))
    got = budget.split_copies(graph, order, cands, start, 0, time_limit_s=3)
    assert len(got.layout.recomputes) >= 2 and "copies split" in got.how
    assert sum(r.value == a.value for r in got.layout.recomputes) >= 2
    assert got.arena_live < min(p.arena_live for p in single)
    assert got.temp_bytes < min(p.temp_bytes for p in single)
    _check(cap, got.layout)


def test_the_model_recomputes_a_value_idle_across_two_peaks_twice(held):
    """``choose_model`` offers two-copy options (``Option.more``): asked for
    less than any one-copy plan reaches, it picks two copies of ``a``."""
    cap, _, graph, order, a = held
    cands = budget.candidates(graph, cap, feeders=False)
    single = [budget.plan_of(graph, order, [(a, k)]) for k in range(len(a.users))]
    target = min(p.temp_bytes for p in single) - 1
    got = budget.choose_model(graph, order, cands, target, time_limit_s=3)
    assert got is not None and got.how.startswith("model")
    assert sum(v == a.value for v, _ in got.splits) == 2
    assert got.temp_bytes <= target
    _check(cap, got.layout)


def test_held_at_peak_counts_each_copy_of_a_value_recomputed_twice(held):
    """``budget.held_at_peak`` finds the arena's live-bytes peak that the
    plan's own placement counts (``arena_live``) when a value has two copies:
    each copy lives from its run to its own last reader, the first place dies
    at the reader before the first copy."""
    cap, _, graph, order, a = held
    for picks in ([(a, 1)], [(a, 1), (a, 2)], [(a, 0), (a, 2)]):
        got = budget.plan_of(graph, order, picks)
        held_ = budget.held_at_peak(graph, cap, got.layout)
        assert held_.arena_live == got.arena_live, picks
        assert sum(b for _, b in held_.by_reason) == held_.arena_live
