"""The GPU rewrite of a re-gathered all-gather: a second async start/done pair
(compile-only H100 target: built and decoded again by gpu_readback, not run)."""

from __future__ import annotations

import dataclasses
import functools

import pytest

jax = pytest.importorskip("jax")

from olla_jax import check, checked, dumps  # noqa: E402
from olla_jax.apply import feed_back, gpu_executable, gpu_readback, gpu_rewrite  # noqa: E402
from tests.marks import needs_plugin  # noqa: E402
from olla_jax.graph import collectives, layout as layout_lib, regather  # noqa: E402
from olla_jax.solve import place as place_lib  # noqa: E402
from small_steps import regather_step  # noqa: E402


@functools.lru_cache(maxsize=1)
def _forced():
    """The one asynchronous all-gather of dp_step re-gathered by hand (the
    planner does not pick it: it does not lower the peak), its copy started
    and done right before its first late reader."""
    s = regather_step()
    cap, graph, module, step = s.capture, s.graph, s.module, s.step
    order = graph.xla_order
    sync = {graph.node_index[x] for x in collectives.sync_starts(module)}
    cands = regather.candidates(graph, order, step, graph.unit_spans(order), frozenset(sync))
    assert cands, "dp_step has an asynchronous all-gather read in both passes"
    c = cands[0]
    at = order[c.first_late]
    start = graph.flat_layout(order)[at]
    r = regather.Regather(collective=c.collective, unit=c.unit, start_before=at, done_before=at,
                          late_users=c.late_users, gap=(c.early_end + 1, start - 1), slack=0.0)
    rp = regather.given(graph, order, step, [r])
    problem, owners = rp.placement_problem(graph)
    placed = layout_lib.realize(graph, order, place_lib.best_fit(problem), owners)
    return cap, graph, regather.with_copies(graph, rp, placed, step)


@needs_plugin
def test_regathered_all_gather_is_copied_with_its_own_async_execution():
    cap, graph, layout = _forced()
    check.check_plan(cap.hlo_proto, cap.values_text, cap.live_range_text,
                     checked.candidate_plan(layout), alignment=256)
    raw = gpu_rewrite.rewrite(cap.executable, feed_back.edit_of(layout))
    assert gpu_readback.compare(raw, layout) is None
    r = layout.recomputes[0]
    decoded = gpu_executable.decode(raw)
    starts = [t for t in decoded.thunks if t.WhichOneof("impl") == "async_start_thunk"
              and t.thunk_info.profile_annotation == r.producer]
    assert len(starts) == 2
    first, copy = starts
    ids = [t.thunk_info.thunk_id for t in gpu_rewrite._all_thunks(decoded.thunks)]
    assert len(ids) == len(set(ids))                 # fresh thunk ids
    assert copy.async_start_thunk.async_execution_id != first.async_start_thunk.async_execution_id
    dones = [t for t in decoded.thunks if t.WhichOneof("impl") == "async_done_thunk" and
             t.async_done_thunk.async_execution_id == copy.async_start_thunk.async_execution_id]
    assert len(dones) == 1
    # Read back against a plan that wanted the copy elsewhere, it differs.
    other = dataclasses.replace(r, done_before=layout.order_names[-1])
    assert gpu_readback.compare(raw, dataclasses.replace(layout, recomputes=(other,))) is not None


@needs_plugin
def test_synchronous_all_gather_is_not_copied():
    cap, graph, layout = _forced()
    module = dumps.parse_hlo_proto(cap.hlo_proto).hlo_module
    sync = sorted(collectives.sync_starts(module))
    assert sync
    r = dataclasses.replace(layout.recomputes[0], producer=sync[0])
    with pytest.raises(gpu_rewrite.RewriteError, match="synchronous"):
        gpu_rewrite.rewrite(cap.executable, feed_back.edit_of(
            dataclasses.replace(layout, recomputes=(r,))))
