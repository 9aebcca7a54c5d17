"""Recomputation inside a while loop's body (CPU): gradient accumulation
over micro-batches with lax.scan holds each micro-batch's input slice from
the forward pass to the first layer's weight gradient, across the body's
peak.  A copy of the slice's kernel runs again inside the body, just before
that gradient: the body's thunk sequence gets the copy, the checker
re-derives that it reads only intact values, and the step is bit-identical."""

from __future__ import annotations

import dataclasses
import warnings

import jax
import jax.numpy as jnp
import pytest
from jax import lax

import olla_jax
from olla_jax import budget, check
from olla_jax.apply import feed_back
from olla_jax.budget import body, recompute_plan
from olla_jax.plan import candidate_plan
from tests.small_steps import (accumulate_args, accumulate_loss as _loss,
                               accumulate_step as _step, entry_and_body_copy,
                               planned_accumulate)


def _args():
    return accumulate_args(4)


@pytest.fixture(scope="module")
def base():
    return planned_accumulate(4)


@pytest.fixture(scope="module")
def planned(base):
    cands = body.candidates(base.graph, base.capture)
    return cands, recompute_plan.plan_of(base.graph, base.layout.order, [], body_cands=cands,
                                         target_temp=0)


def _check(base, plan):
    cap = base.capture
    return check.check_plan(cap.hlo_proto, cap.values_text, cap.live_range_text, plan)


def test_the_peak_is_in_the_body_and_entry_recomputation_cannot_lower_it(base):
    held = budget.held_at_peak(base.graph, base.capture, base.layout)
    assert base.graph.block_length(base.graph.node_index[held.node]) > 1
    assert held.by_reason[0][0].startswith("made inside a loop")


def test_the_micro_batch_slice_is_a_body_candidate(base, planned):
    cands, _ = planned
    graph = base.graph
    names = {c.producer: c for c in cands}
    found = [c for name, c in names.items() if name.startswith("dynamic-slice")]
    assert len(found) == 1, sorted(names)
    c = found[0]
    assert graph.values[c.value].size == 1024 * 256 * 4 and len(c.readers) >= 2
    assert graph.nodes[c.loop].startswith("while")


def test_a_body_copy_lowers_the_temp_and_the_checker_accepts_it(base, planned):
    _, rp = planned
    assert rp.layout.recomputes, "nothing recomputed in the body"
    assert rp.temp_bytes <= base.layout.temp_bytes - 2 ** 20 + 4096
    assert all(r.producer not in base.graph.node_index for r in rp.layout.recomputes)
    _check(base, candidate_plan(rp.layout))


def _claim_plan(rp, **changes):
    plan = candidate_plan(rp.layout)
    claim = dataclasses.replace(plan.recomputes[0], **changes)
    return dataclasses.replace(plan, recomputes=(claim,))


def test_the_checker_rejects_broken_body_copies(base, planned):
    _, rp = planned
    claim = candidate_plan(rp.layout).recomputes[0]
    graph = base.graph
    first = claim.late_users[0]
    # the copy before the first run's reader, which it does not read
    early = [u for u in _readers(base, claim.value) if u not in claim.late_users]
    with pytest.raises(check.PlanRejected, match="does not read it"):
        _check(base, _claim_plan(rp, before=early[0]))
    # a reader before the copy declared one of its readers
    with pytest.raises(check.PlanRejected, match="is declared a late reader"):
        _check(base, _claim_plan(rp, late_users=(early[0], *claim.late_users)))
    # a late reader outside the body
    with pytest.raises(check.PlanRejected, match="not in the body"):
        _check(base, _claim_plan(rp, late_users=(*claim.late_users, graph.nodes[-1])))
    # the copy on the bytes of another operand of its late reader (live with it)
    from olla_jax import dumps
    records = dumps.parse_values(base.capture.values_text)
    other = next(r.id for r in records.values() if r.id != claim.value and r.id in graph.values
                 and graph.values[r.id].size >= graph.values[claim.value].size and
                 any(u.instruction == first for u in r.uses))
    with pytest.raises(check.PlanRejected, match="overlap"):
        _check(base, _claim_plan(rp, place=rp.layout.early_place(other)))


def _readers(base, value):
    from olla_jax import dumps
    rec = dumps.parse_values(base.capture.values_text)[value]
    order = {n: k for k, n in enumerate(base.graph.flat)}
    return sorted({u.instruction for u in rec.uses}, key=order.get)


def test_the_checker_rejects_a_body_copy_whose_operand_is_written_over(base):
    """A body value whose producer reads a value that XLA writes over in
    place later in the body (the loop counter, an accumulator): a copy
    after that write would read the new bytes."""
    from olla_jax import dumps
    graph, cap = base.graph, base.capture
    records = dumps.parse_values(cap.values_text)
    by_key = {v.key: v for v in graph.values.values()}
    step = {n: k for k, n in enumerate(graph.flat)}
    loop = next(n for n in range(len(graph.nodes)) if graph.block_length(n) > 1)
    inside = set(graph.flat[graph.block_start[loop]:graph.block_end[loop]])
    found = None
    for rec in records.values():
        p = rec.defining_instruction
        if p not in inside or rec.key not in by_key or len(rec.positions) != 1:
            continue
        readers = sorted({u.instruction for u in rec.uses}, key=step.get)
        for op in records.values():
            if op.key not in by_key or not any(u.instruction == p for u in op.uses):
                continue
            unit = graph.units[graph.unit_of_value[by_key[op.key].id]]
            writes = [graph.values[o].xla_range[0] for o in unit.values
                      if o != by_key[op.key].id and graph.values[o].xla_range[0] > step[p]]
            late = [u for u in readers if writes and step[u] > min(writes)]
            if late:
                found = (rec, late)
                break
        if found:
            break
    assert found is not None, "no body operand written over in place before a later reader"
    rec, late = found
    claim = check.RecomputeClaim(rec.id, rec.defining_instruction, late[0], tuple(late),
                                 base.layout.early_place(rec.id))
    plan = dataclasses.replace(candidate_plan(base.layout), recomputes=(claim,))
    with pytest.raises(check.PlanRejected, match="written over"):
        _check(base, plan)


def test_the_body_copy_is_fed_back_bit_for_bit(base, planned):
    _, rp = planned
    out = feed_back.apply_layout(base.capture, rp.layout, args=_args())
    assert out.ok, out.reason
    assert out.achieved_temp_bytes == rp.temp_bytes < base.layout.temp_bytes


def test_the_floors_count_body_candidates_only_where_written_or_read(base, planned):
    """The working-set floor counted the body's whole inner peak, which a
    body copy now goes below; relaxed by the body candidates it holds."""
    _, rp = planned
    graph, cap = base.graph, base.capture
    assert budget.working_set_bound(graph)[0] > rp.temp_bytes
    assert budget.working_set_bound(graph, cap)[0] <= rp.temp_bytes
    cands = budget.candidates(graph, cap)
    assert budget.recompute_floor(graph, cands, time_limit_s=2, capture=cap) <= rp.temp_bytes


def test_a_budget_below_the_body_peak_is_met_by_recompute_to_budget(base, planned):
    """``recompute_to_budget`` (what ``plan(memory_budget=...)`` runs): the
    entry search cannot lower a peak inside the body; the body copies meet
    the budget, checked, rewritten and verified bit for bit."""
    _, rp = planned
    fixed = base.argument_bytes + base.output_bytes - base.alias_bytes
    target = fixed + rp.temp_bytes
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = budget.recompute_to_budget(base, target, args=_args(), time_limit_s=6,
                                         measure_time=False)
    assert got.verified and got.runs_total_bytes <= target, got.notes
    assert any(r.producer not in got.graph.node_index for r in got.layout.recomputes)


def _with_entry_value(w, xs, ys):
    """``_step`` with an entry value read before the loop and after it."""
    def micro(acc, xy):
        value, grads = jax.value_and_grad(_loss)(w, *xy)
        return jax.tree.map(jnp.add, acc, (value, grads)), None
    a = xs[0] @ w[0]
    zero = (jnp.sum(jnp.tanh(a)), jax.tree.map(jnp.zeros_like, w))
    (total, grads), _ = lax.scan(micro, zero, (xs, ys))
    return [wi - 0.1 * gi for wi, gi in zip(w, grads)], total + jnp.sum(a * a)


def test_an_entry_copy_and_a_body_copy_are_fed_back_together():
    """Inserting the entry copy rebuilds the entry thunks, the while thunk
    among them: the body copy must go into the rebuilt loop's body (it was
    lost, and the step's results differed)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", olla_jax.PlanWarning)
        base = olla_jax.plan(_with_entry_value, *_args(), time_limit_s=2, feed_back=False)
    graph, cap = base.graph, base.capture
    rp = entry_and_body_copy(graph, cap, base.layout.order)
    out = feed_back.apply_layout(cap, rp.layout, args=_args())
    assert out.ok, out.reason


def test_peak_breakdown_does_not_put_the_body_peak_above_the_plans_temp(base, planned):
    """BudgetNotMet's breakdown drew the body's values at their full lives: a
    plan with body copies read "temp 14.0 MiB" then "the plan's temp peak ...
    18.0 MiB"."""
    from olla_jax import report
    _, rp = planned
    plan = dataclasses.replace(base, layout=rp.layout, planned_temp_bytes=rp.temp_bytes,
                               achieved_temp_bytes=rp.temp_bytes)
    text = report.peak_breakdown_text(plan)
    peak_line = next(ln for ln in text.splitlines() if "temp peak" in ln)
    drawn = report.memory_timeline(plan.graph, plan.layout)
    assert max(drawn) > rp.temp_bytes       # the model's view: copies not drawn
    assert "without its 1 loop-body cop" in peak_line, peak_line
