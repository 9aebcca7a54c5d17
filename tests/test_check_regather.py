"""The independent checker on re-gathered all-gathers (RecomputeClaim.done_before)."""

from __future__ import annotations

import dataclasses
import functools

import pytest

jax = pytest.importorskip("jax")

from olla_jax import check, checked, dumps  # noqa: E402
from tests.marks import needs_plugin  # noqa: E402
from olla_jax.graph import collectives, layout as layout_lib, regather  # noqa: E402
from olla_jax.solve import place as place_lib  # noqa: E402
from small_steps import regather_step  # noqa: E402


@functools.lru_cache(maxsize=1)
def _planned():
    s = regather_step()
    cap, graph, step = s.capture, s.graph, s.step
    rp = regather.plan(graph, graph.xla_order, step, allowance_s=1.0)
    problem, owners = rp.placement_problem(graph)
    placed = layout_lib.realize(graph, rp.order, place_lib.best_fit(problem), owners)
    return cap, graph, rp, placed, regather.with_copies(graph, rp, placed, step)


def _check(cap, plan, graph):
    return check.check_plan(cap.hlo_proto, cap.values_text, cap.live_range_text, plan,
                            alignment=graph.alignment)


@needs_plugin
def test_regathered_plan_is_accepted_and_needs_its_claims():
    cap, graph, rp, placed, layout = _planned()
    assert rp.regathers
    report = _check(cap, checked.candidate_plan(layout), graph)
    # the checker's own live-bytes peak of the arena is the planner's
    assert report.peak_bytes[graph.temp_allocation] <= layout.temp_bytes
    claims = checked.candidate_plan(layout).recomputes
    assert all(c.done_before for c in claims)
    # Without the claims the first copies' reads in the backward pass land on
    # bytes the placement gave to others in the gap.
    plain = dataclasses.replace(checked.candidate_plan(layout), recomputes=())
    if placed.temp_bytes < graph.allocations[graph.temp_allocation].size:
        with pytest.raises(check.PlanRejected):
            _check(cap, plain, graph)


@needs_plugin
def test_bad_regather_claims_are_rejected():
    cap, graph, rp, placed, layout = _planned()
    plan = checked.candidate_plan(layout)
    claim = plan.recomputes[0]
    order = list(plan.order)
    pairs = collectives.async_pairs(dumps.parse_hlo_proto(cap.hlo_proto).hlo_module)
    done = next(p.done for p in pairs if p.start == claim.producer)

    def bad(**changes):
        broken = dataclasses.replace(claim, **changes)
        return dataclasses.replace(plan, recomputes=(broken,) + plan.recomputes[1:])

    first_late = min(claim.late_users, key=order.index)
    after_late = order[order.index(first_late) + 1]
    with pytest.raises(check.PlanRejected, match="runs before the copy of"):
        _check(cap, bad(done_before=max(claim.late_users, key=order.index)), graph)
    with pytest.raises(check.PlanRejected, match="before its first run is done"):
        _check(cap, bad(before=done, late_users=tuple(order[order.index(done):])), graph)
    with pytest.raises(check.PlanRejected, match="declared a late reader"):
        _check(cap, bad(late_users=tuple(u for u in claim.late_users if u != first_late),
                        done_before=after_late), graph)
    rs = next(p.start for p in pairs if "all-gather" not in p.start)   # a reduce-scatter
    with pytest.raises(check.PlanRejected):
        _check(cap, bad(producer=rs), graph)
