"""report: the temp timeline agrees with the live units, and the plots are written."""

from __future__ import annotations

import dataclasses
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


def test_timeline_of_a_recomputed_value_counts_its_copy_not_its_first_copy_meanwhile():
    """A recomputed value's first copy dies after its early readers; the copy
    lives from the instruction it runs before to its late reader.  (The plot
    once kept the first copy live throughout and drew no copy: bytes in use
    above the arena's size.)"""
    graph = _graph()
    start = graph.flat_layout(graph.xla_order)
    end = lambda n: start[n] + graph.block_length(n) - 1   # noqa: E731
    picked = None
    for unit in graph.units:
        if unit.allocation != graph.temp_allocation or len(unit.values) != 1:
            continue
        v = graph.values[unit.values[0]]
        if v.live_in or v.live_out:
            continue
        last = max(v.touches, key=lambda n: start[n])
        early_end = max(end(n) for n in v.touches if n != last)
        if start[last] - early_end > 1:
            picked = (unit, v, last, early_end)
            break
    assert picked is not None, "the step has a temp value read early and late"
    unit, v, last, early_end = picked
    late = graph.nodes[last]
    copy = layout_lib.Recompute(value=v.id, producer=graph.nodes[v.def_node], before=late,
                                late_users=(late,), place=(graph.temp_allocation, 0),
                                size=unit.size)
    xla = layout_lib.xla_layout(graph)
    before = report.memory_timeline(graph, xla)
    after = report.memory_timeline(graph, dataclasses.replace(xla, recomputes=(copy,)))
    for step in range(early_end + 1, start[last]):
        assert after[step] == before[step] - unit.size, step
    for step in range(start[last], end(last) + 1):
        assert after[step] == before[step], step
    assert after[:early_end + 1] == before[:early_end + 1]


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


def test_memory_plot_of_a_recomputing_plan_names_its_floor_the_working_set(tmp_path,
                                                                          monkeypatch):
    """A recomputing plan's lower_bound_bytes is the working set, not a bound on
    its order and placement: the memory plot says so, as the summary does."""
    figures = []

    def keep(fig, path):
        figures.append(fig)
        return path
    monkeypatch.setattr(report, "_save", keep)
    graph = _graph()
    for recomputed, name in (((), "lower bound"),
                             (("fusion.1",), "working set (floor with recomputation)")):
        figures.clear()
        plan = types.SimpleNamespace(graph=graph, layout=None, backend="cpu",
                                     lower_bound_bytes=1000, recomputed=recomputed)
        report.plot_plan(plan, str(tmp_path / "p"))
        labels = figures[0].axes[0].get_legend_handles_labels()[1]
        assert f"{name} 0.00 MiB" in labels, labels


def test_plot_plan_needs_a_graph(tmp_path):
    plan = types.SimpleNamespace(graph=None, layout=None, backend="cpu", lower_bound_bytes=0)
    with pytest.raises(ValueError, match="nothing to plot"):
        report.plot_plan(plan, str(tmp_path / "p"))


def test_missing_matplotlib_names_the_extra(tmp_path, monkeypatch):
    graph = _graph()
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r"pip install 'olla_jax\[plots\]'"):
        report.plot_layout(graph, layout_lib.xla_layout(graph), str(tmp_path / "l.png"))


@functools.lru_cache(maxsize=None)
def _capture():
    return capture(_step, jnp.ones((128, 256)), jnp.ones((256, 64)), jnp.ones((512, 128)))


def test_op_sources_name_the_users_ops_and_lines():
    sources = report.op_sources(_capture().hlo_proto)
    here = [s for s in sources.values() if s.file.endswith("test_report.py")]
    assert here, sorted({s.file for s in sources.values()})
    lines = {s.line for s in here}
    first = _step.__code__.co_firstlineno
    assert lines and all(first <= line <= first + 6 for line in lines)
    assert any(s.short_op.startswith("dot_general") for s in here)
    assert any(s.short_op.endswith("(bwd)") for s in here)   # the gradient's transposes


def test_short_op_drops_jax_wrappers():
    src = report.OpSource("jit(step)/transpose(jvp(Dense_0))/dot_general", "/a/model.py", 12, "f")
    assert src.short_op == "Dense_0/dot_general (bwd)" and src.where == "model.py:12"
    assert report.OpSource("", "", 0, "").short_op == "" and report.OpSource("", "", 0, "").where == ""


def test_layout_plot_names_buffers_by_source_with_xla_beside_ours(tmp_path):
    graph = _graph()
    xla = layout_lib.xla_layout(graph)
    from olla_jax.plan import solve_graph
    ours = solve_graph(graph, time_limit_s=1).layout
    sources = report.op_sources(_capture().hlo_proto)
    fig = report.layout_figure(graph, ours, xla=xla, sources=sources)
    titles = [ax.get_title() for ax in fig.axes]
    assert any(t.startswith("XLA's layout") for t in titles)
    assert any(t.startswith("olla_jax's layout") for t in titles)
    xla_ax, ours_ax = fig.axes[0], fig.axes[1]
    assert xla_ax.get_ylim() == ours_ax.get_ylim()          # the same scale
    texts = [t.get_text() for ax in fig.axes[:2] for t in ax.texts]
    assert any("test_report.py:" in t for t in texts), texts
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert any(t.startswith("test_report.py:") for t in legend), legend
    path = report.plot_layout(graph, ours, str(tmp_path / "l.png"), xla=xla, sources=sources)
    assert _is_png(path)
    # Without metadata the key falls back to the instructions' names.
    bare = report.layout_figure(graph, ours, xla=xla)
    assert not any("test_report.py" in t.get_text() for t in bare.legends[0].get_texts())


def _plan_record(**changes):
    from olla_jax.plan import Plan
    xla_exe, ours_exe = object(), object()
    fields = dict(backend="cpu", xla_default_temp_bytes=4 << 20, xla_best_temp_bytes=3 << 20,
                  xla_scheduler="memory", planned_temp_bytes=2 << 20, lower_bound_bytes=1 << 20,
                  argument_bytes=1 << 20, output_bytes=1 << 20, alias_bytes=0, solve_seconds=1.0,
                  engine="lns", settings={}, source="olla_jax", achieved_temp_bytes=2 << 20,
                  verified=True, notes=(), compiled=types.SimpleNamespace(executable=ours_exe),
                  xla_compiled=types.SimpleNamespace(executable=xla_exe))
    fields.update(changes)
    if fields["compiled"] == "xla":
        fields["compiled"] = types.SimpleNamespace(executable=xla_exe)
        fields["xla_compiled"] = types.SimpleNamespace(executable=xla_exe)
    return Plan(**fields)


def _row(summary: str, name: str) -> str:
    (line,) = [ln for ln in summary.splitlines() if ln.strip().startswith(name)]
    return line.strip()[len(name):].strip()


def test_summary_says_what_was_verified_and_when_there_is_no_bound():
    ours = _plan_record().summary()
    assert _row(ours, "verified bit-for-bit") == "yes"
    assert _row(ours, "gap to bound") == "50.00%"
    kept = _plan_record(source="xla", engine="xla", verified=False, compiled="xla",
                        planned_temp_bytes=3 << 20, lower_bound_bytes=0).summary()
    assert _row(kept, "verified bit-for-bit") == "n/a (XLA's executable)"
    assert _row(kept, "gap to bound") == "n/a (no bound)"
    assert _row(kept, "lower bound (proven)") == "-"     # not "0.00 MiB (proven)"
    # Not fed back: XLA's executable runs although the plan is ours.
    report_only = _plan_record(verified=False, compiled="xla", achieved_temp_bytes=None)
    assert _row(report_only.summary(), "verified bit-for-bit") == "n/a (XLA's executable)"
    # A compile-only target runs nothing: neither ours nor XLA's executable
    built = _plan_record(backend="gpu:h100", verified=False, compiled="xla",
                         achieved_temp_bytes=None, executable_bytes=b"gpu")
    assert _row(built.summary(), "verified bit-for-bit") == (
        "n/a (compile-only target: ours built, in executable_bytes, not run)")
    xla_built = _plan_record(backend="gpu:h100", source="xla", engine="xla", verified=False,
                             compiled="xla", achieved_temp_bytes=None)
    assert _row(xla_built.summary(), "verified bit-for-bit") == (
        "n/a (compile-only target: XLA's executable, built, not run)")
    assert not [ln for ln in (built.summary() + xla_built.summary()).splitlines()
                if "runs" in ln]
    # a recomputing plan's floor is the working set: its gap is not called a
    # gap to the bound (a user read 72.5% as what the plan left on the table)
    recomputing = _plan_record(recomputed=("fusion.1",), extra_flops=10).summary()
    assert _row(recomputing, "lower bound (working set)")
    assert _row(recomputing, "above the working set") == "50.00%"
    assert not [ln for ln in recomputing.splitlines() if ln.strip().startswith("gap to bound")]
    # checked but not loaded (host callbacks, a sharded step): the total that runs
    # is XLA's, beside the planned one (it read as if the step now took less)
    unloaded = _plan_record(verified=False, compiled="xla", achieved_temp_bytes=3 << 20)
    assert _row(unloaded.summary(), "total: XLA -> olla_jax") == (
        "5.00 MiB -> 4.00 MiB planned, 5.00 MiB as it runs (XLA's executable)")
    assert _row(ours, "total: XLA -> olla_jax") == "5.00 MiB -> 4.00 MiB"
    small = _plan_record(planned_temp_bytes=208 << 10).summary()
    assert _row(small, "olla_jax temp, planned") == "208.0 KiB"


def test_summary_of_a_plan_with_no_temp_shows_the_bound_zero():
    """No temp at all: 0 is the bound (no plan needs less), not "no bound";
    nothing is left to save (it read "lower bound -" and gap "n/a")."""
    empty = _plan_record(source="xla", engine="xla", verified=False, compiled="xla",
                         planned_temp_bytes=0, achieved_temp_bytes=0, lower_bound_bytes=0,
                         xla_default_temp_bytes=0, xla_best_temp_bytes=0).summary()
    assert _row(empty, "lower bound (proven)") == "0.00 MiB"
    assert _row(empty, "gap to bound") == "0.00% (no temp)"


def test_summary_of_a_plan_applied_from_a_file_keeps_its_search_apart():
    """Read from a file, the row says the plan was applied, not searched, with
    the search's own seconds and limit (or that the file does not keep them)."""
    origin = {"path": "/p.json", "searched_s": 4.25, "time_limit_s": 10.0}
    text = _plan_record(solve_seconds=0.01, settings={"time_limit_s": 30.0,
                                                      "saved_plan": origin}).summary()
    assert text.splitlines()[0] == "olla_jax plan (cpu, plan from olla_jax, applied from a saved plan)"
    assert _row(text, "engine, solve time") == (
        "lns, saved plan applied in 0.0 s, no search (its search when saved: 4.2 s "
        "(limit 10.0 s))")
    old = _plan_record(settings={"saved_plan": dict(origin, searched_s=None)}).summary()
    assert "its search when saved: not kept in the file" in _row(old, "engine, solve time")


def test_summary_counts_recomputed_values_and_copies_as_the_notes_do():
    """``recomputed`` holds one producer per copy: the summary says values and
    copies as the note does ("3 values (4 copies)"), not the copies as values;
    a feeder's copy (no late reader) is not counted, a loop body's is said."""
    from olla_jax.budget import feed_back
    from olla_jax.graph.layout import Recompute

    def rec(value, producer, users=("late",)):
        return Recompute(value=value, producer=producer, before="b", late_users=users,
                         place=(0, 0), size=4)
    recomputes = (rec(1, "f1"), rec(1, "f1"), rec(2, "f2"), rec(3, "f3"),
                  rec(9, "feeder", users=()), rec(7, "body_fusion"))
    graph = types.SimpleNamespace(node_index={"f1": 0, "f2": 1, "f3": 2, "feeder": 3})
    layout = types.SimpleNamespace(graph=graph, recomputes=recomputes)
    plan = _plan_record(recomputed=("f1", "f1", "f2", "f3", "body_fusion"), extra_flops=10,
                        layout=layout)
    said = "3 values (4 copies) and 1 inside loop bodies"
    assert _row(plan.summary(), "recomputed, extra FLOPs") == f"{said}, 10 extra FLOPs"
    assert feed_back._copies_stated(types.SimpleNamespace(layout=layout)) == said
    one = _plan_record(recomputed=("f2",), extra_flops=10,
                       layout=types.SimpleNamespace(graph=graph, recomputes=(rec(2, "f2"),)))
    assert _row(one.summary(), "recomputed, extra FLOPs") == "1 value, 10 extra FLOPs"
    # a saved plan of old with no layout: its copies' producers
    old = _plan_record(recomputed=("f1", "f1", "f2"), extra_flops=10)
    assert _row(old.summary(), "recomputed, extra FLOPs") == "3 copies of 2 producers, 10 extra FLOPs"
    # a plan file says the same
    from olla_jax import saved
    file = saved.SavedPlan("f" * 64, "cpu", "default", ("f1", "f2", "f3", "feeder"), {}, {}, {},
                           "auto", (), tuple(saved.recompute_record(r) for r in recomputes))
    assert f"recomputed               {said}" in file.summary()
