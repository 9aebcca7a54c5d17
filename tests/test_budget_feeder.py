"""Feeders: a copy that reads its operand's copy, made just before it for it
alone (``budget.candidates.with_feeders``).  The tiny LSTM LM's embedded
inputs (a gather of the embedding table, copied once more into the layout
the forward scan reads) are read by the forward scan and, much later, by the
backward scan; keeping the gather alive for a copy costs as much as keeping
the input, so only a copy made from the parameters frees it.  The checker
re-derives that the feeder's copy is read by the next copy (and refuses one
that nothing reads), and the rewritten executable is bit-identical (CPU)."""

from __future__ import annotations

import dataclasses

import pytest

from olla_jax import budget, check
from olla_jax.apply import feed_back
from olla_jax.budget import recompute_plan
from olla_jax.plan import candidate_plan


@pytest.fixture(scope="module")
def base(planned_example):
    # lstm tiny planned (3 s, fed back) once a session, shared with
    # tests/test_plan_examples.py (tests/conftest.py)
    return planned_example("lstm")


def _fed(plan):
    """The candidate whose copy has a feeder and is read by a while loop, split before the last loop."""
    graph = plan.graph
    found = [c for c in budget.candidates(graph, plan.capture) if c.feeders and
             any(graph.nodes[u].startswith("while") for u in c.users)]
    assert found, "no candidate with a feeder"
    return found[0], len(found[0].users) - 1     # (plan_of sorts the users by the order)


def _order(plan):
    return plan.layout.order if plan.layout is not None else plan.graph.xla_order


def test_a_copy_from_parameters_has_a_feeder(base):
    _, plan = base
    graph = plan.graph
    c, _ = _fed(plan)
    for f in c.feeders:
        # the feeder is read by the copy's producer alone, and the copy reads its operands instead
        assert graph.values[f].touches - {graph.values[f].def_node} == {c.producer}
        assert f not in c.operands
    assert all(not graph.units[graph.unit_of_value[o]].movable for o in c.operands)


def _plan_and_args(plan):
    c, k = _fed(plan)
    rp = recompute_plan.plan_of(plan.graph, _order(plan), [(c, k)])
    cap = plan.capture
    return rp, candidate_plan(rp.layout), (cap.hlo_proto, cap.values_text, cap.live_range_text)


def test_checker_accepts_the_feeder_and_refuses_a_copy_nothing_reads(base):
    _, plan = base
    rp, cplan, args = _plan_and_args(plan)
    claims = cplan.recomputes
    assert len(claims) == 2 and not claims[0].late_users and claims[1].late_users
    assert claims[0].before == claims[1].before
    check.check_plan(*args, cplan)

    def rejected(recomputes) -> bool:
        try:
            check.check_plan(*args, dataclasses.replace(cplan, recomputes=tuple(recomputes)))
        except check.PlanRejected:
            return True
        return False
    # the feeder's copy alone: nothing reads it
    assert rejected(claims[:1])
    # listed after the copy that should read it: it runs after, so nothing reads it
    assert rejected(claims[::-1])


@pytest.mark.slow
def test_the_feeder_runs_bit_for_bit(base):
    step, plan = base
    rp, _, _ = _plan_and_args(plan)
    c, _ = _fed(plan)
    assert rp.extra_flops == c.flops        # (its feeders' FLOPs included)
    out = feed_back.apply_layout(plan.capture, rp.layout, args=step.args,
                                 static_argnums=step.static_argnums, trials=1)
    assert out.ok, out.reason
    assert out.achieved_temp_bytes == rp.temp_bytes
