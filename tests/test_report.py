"""report: the temp timeline agrees with the live units, and the plots are written."""

from __future__ import annotations

import functools
import sys
import types

import jax
import jax.numpy as jnp
import pytest

from olla_jax import report
from olla_jax.capture import capture
from olla_jax.graph import layout as layout_lib
from olla_jax.graph import model


def _step(w1, w2, x):
    def loss(ws):
        h = jnp.tanh(x @ ws[0])
        return jnp.sum((h @ ws[1]) ** 2)
    g1, g2 = jax.grad(loss)((w1, w2))
    return w1 - 0.1 * g1, w2 - 0.1 * g2


@functools.lru_cache(maxsize=None)
def _graph() -> model.ScheduleGraph:
    args = (jnp.ones((128, 256)), jnp.ones((256, 64)), jnp.ones((512, 128)))
    cap = capture(_step, *args)
    return model.build(cap.hlo_proto, cap.values_text, cap.live_range_text)


def _live_temp_bytes(graph: model.ScheduleGraph, step: int) -> int:
    """Bytes of temp units live at ``step`` on XLA's order, straight from XLA's ranges."""
    horizon = len(graph.flat)
    total = 0
    for unit in graph.units:
        if unit.allocation != graph.temp_allocation:
            continue
        for v in (graph.values[i] for i in unit.values):
            start = 0 if v.live_in else v.xla_range[0]
            end = horizon - 1 if v.live_out else v.xla_range[1]
            if start <= step <= end:
                total += unit.size
                break
    return total


def test_timeline_is_the_sum_of_live_temp_units():
    graph = _graph()
    xla = layout_lib.xla_layout(graph)
    timeline = report.memory_timeline(graph, xla)
    assert len(timeline) == len(graph.flat)
    assert 0 < max(timeline) <= xla.temp_bytes
    assert timeline == [_live_temp_bytes(graph, step) for step in range(len(timeline))]


def test_timeline_follows_moved_units():
    """A temp unit placed in another allocation no longer counts in the arena."""
    graph = _graph()
    unit = max((u for u in graph.units if u.allocation == graph.temp_allocation and u.movable),
               key=lambda u: u.size)
    other = next(a.index for a in graph.allocations if a.index != graph.temp_allocation)
    places = {v: (other, off) for v, off in zip(unit.values, unit.member_offsets)}
    moved = layout_lib.Layout(graph=graph, order=graph.xla_order, places=places, allocation_sizes={})
    before = report.memory_timeline(graph, layout_lib.xla_layout(graph))
    after = report.memory_timeline(graph, moved)
    (start, end), *_ = graph.unit_spans(graph.xla_order)[unit.id]
    assert after[start] == before[start] - unit.size
    assert sum(before) - sum(after) >= unit.size * (end - start + 1)


def _is_png(path) -> bool:
    with open(path, "rb") as f:
        return f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_plots_are_written(tmp_path):
    graph = _graph()
    xla = layout_lib.xla_layout(graph)
    memory = report.plot_memory(graph, xla, xla, str(tmp_path / "m.png"), lower_bound=1000)
    layout = report.plot_layout(graph, xla, str(tmp_path / "l.png"), title="t")
    for path in (memory, layout):
        assert _is_png(path) and (tmp_path / path).stat().st_size > 5000
    plan = types.SimpleNamespace(graph=graph, layout=None, backend="cpu", lower_bound_bytes=0)
    paths = report.plot_plan(plan, str(tmp_path / "p"))
    assert paths == [str(tmp_path / "p-memory.png"), str(tmp_path / "p-layout.png")]
    assert all(_is_png(p) for p in paths)


def test_plot_plan_needs_a_graph(tmp_path):
    plan = types.SimpleNamespace(graph=None, layout=None, backend="cpu", lower_bound_bytes=0)
    with pytest.raises(ValueError, match="nothing to plot"):
        report.plot_plan(plan, str(tmp_path / "p"))


def test_missing_matplotlib_names_the_extra(tmp_path, monkeypatch):
    graph = _graph()
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r"pip install 'olla_jax\[plots\]'"):
        report.plot_layout(graph, layout_lib.xla_layout(graph), str(tmp_path / "l.png"))
