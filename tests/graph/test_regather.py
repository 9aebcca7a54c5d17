"""Re-gathering (olla_jax.graph.regather) on a tiny FSDP step, 2 compile-only H100s."""

from __future__ import annotations

import dataclasses
import functools

import pytest

jax = pytest.importorskip("jax")

from tests.marks import needs_plugin  # noqa: E402
from olla_jax.graph import layout as layout_lib, overlap, regather  # noqa: E402
from olla_jax.solve import place as place_lib  # noqa: E402
from small_steps import regather_step  # noqa: E402


@functools.lru_cache(maxsize=1)
def _step():
    """dp_step on 2 devices, FSDP, one all-gather per weight (combining off):
    each gathered weight is read in the forward pass and again in the backward."""
    s = regather_step()
    return s.graph, s.step


def _live_peak(graph, spans) -> int:
    events = []
    for u in graph.units:
        if u.movable:
            for a, b in spans[u.id]:
                events += [(a, u.size), (b + 1, -u.size)]
    live = peak = 0
    for _, d in sorted(events):
        live += d
        peak = max(peak, live)
    return peak


@needs_plugin
def test_regathers_free_the_gap_and_keep_exposure_within_the_allowance():
    graph, step = _step()
    order = graph.xla_order
    plain = step.exposure(order).exposed_s
    loose = regather.plan(graph, order, step, allowance_s=1.0)   # a second of exposure: any hides
    assert loose.regathers, "FSDP with remat holds gathered parameters across the step"
    assert loose.peak < loose.peak_before
    assert loose.peak == _live_peak(graph, loose.spans)
    assert loose.peak_before == _live_peak(graph, graph.unit_spans(order))
    pos = {n: k for k, n in enumerate(order)}
    layout = graph.flat_layout(order)
    for r in loose.regathers:
        c = step.collectives[r.collective]
        assert c.kind == "all-gather"
        first, second = loose.spans[r.unit]
        assert first[1] + 1 == r.gap[0] and r.gap[1] + 1 == second[0]
        assert pos[c.done] < pos[r.start_before] <= pos[r.done_before]
        assert layout[r.start_before] == second[0]
        assert all(pos[u] >= pos[r.done_before] for u in r.late_users)
        readers = {t for v in graph.units[r.unit].values for t in graph.values[v].touches}
        assert not any(r.gap[0] <= layout[n] <= r.gap[1] for n in readers)
    assert len({r.collective for r in loose.regathers}) == len(loose.regathers)
    # Not allowed more than the order exposes: the copies stay hidden.
    tight = regather.plan(graph, order, step, allowance_s=0.0)
    assert tight.exposure.exposed_s <= plain + overlap.EPS
    assert tight.exposure.exposed_s == pytest.approx(
        regather.exposure_with(order, step, tight.regathers, len(graph.nodes)).exposed_s)
    assert tight.peak >= loose.peak
    # The placement of the re-gathered spans: one offset per unit, no overlap while live.
    problem, owners = loose.placement_problem(graph)
    placement = place_lib.best_fit(problem)
    realized = layout_lib.realize(graph, order, placement, owners)
    assert realized.temp_bytes >= loose.peak - sum(
        u.size for u in graph.units if u.movable and u.allocation != graph.temp_allocation)
    placed = [(iv, reg, off) for iv, reg, off in zip(problem.intervals, placement.region,
                                                     placement.offset)]
    for i, (a, ra, oa) in enumerate(placed):
        for b, rb, ob in placed[i + 1:]:
            if ra == rb and a.start <= b.end and b.start <= a.end:
                assert oa + a.size <= ob or ob + b.size <= oa


def test_extended_order_runs_each_copy_start_before_its_done():
    c = overlap.Collective(start=0, done=1, kind="all-gather", group=2, link_bytes=1.0, seconds=1.0)
    step = overlap.StepModel(cost=None, node_seconds=(0.0, 0.0, 1.0, 1.0, 1.0), collectives=(c,),
                             xla=overlap.exposure(range(5), (0.0, 0.0, 1.0, 1.0, 1.0), (c,)))
    r = regather.Regather(collective=0, unit=0, start_before=4, done_before=4, late_users=(4,),
                          gap=(3, 3), slack=1.0)
    ext, seconds, colls = regather._extended((0, 1, 2, 3, 4), step, [r], 5)
    assert ext == [0, 1, 2, 3, 5, 6, 4] and len(colls) == 2 and seconds[5:] == [0.0, 0.0]
    # the copy starts and is waited for at once: its whole link time is exposed
    assert regather.exposure_with((0, 1, 2, 3, 4), step, [r], 5).exposed_s == pytest.approx(2.0)
    early = dataclasses.replace(r, start_before=2)
    assert regather.exposure_with((0, 1, 2, 3, 4), step, [early], 5).exposed_s == pytest.approx(1.0)

