"""olla_jax plans a step XLA offloads to host memory (compile-only H100): the
device temp is ours to order and place, the host allocation (memory space 5)
stays where XLA put it, the async copies keep their start before their done
and their operand until the done."""

from __future__ import annotations

import re
import warnings

import pytest

jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402

import olla_jax  # noqa: E402
from olla_jax import check, dumps, offload  # noqa: E402
from olla_jax.apply import gpu_executable, gpu_readback  # noqa: E402
from olla_jax.capture import record  # noqa: E402
from olla_jax.graph import model  # noqa: E402
from olla_jax.sizes import size_text  # noqa: E402
from tests.marks import needs_plugin  # noqa: E402
from tests.small_steps import OFFLOAD_ARGS, park_across  # noqa: E402

pytestmark = needs_plugin

ARGS = OFFLOAD_ARGS


def _offloaded():
    traced = offload.trace(park_across, ARGS)
    parked = offload.idle_values(traced.closed, kinds=None)[:1]
    return offload.rewrite(park_across, ARGS, parked, traced=traced)


@pytest.fixture(scope="module")
def captured():
    cap = record.capture(_offloaded(), *ARGS, backend="gpu:h100")
    assert offload.transfers(cap.hlo_text).to_host == 1, "XLA no longer offloads this step"
    return cap


def test_graph_keeps_the_host_allocation_out_of_the_arena(captured):
    graph = model.build(captured.hlo_proto, captured.values_text, captured.live_range_text)
    host = [a for a in graph.allocations if a.kind == "other_space"]
    assert [a.color for a in host] == [model.HOST_SPACE]
    assert graph.allocations[graph.temp_allocation].color == model.DEFAULT_SPACE
    assert graph.other_space_bytes == {model.HOST_SPACE: host[0].size}
    in_host = [u for u in graph.units if u.allocation == host[0].index]
    assert in_host and not any(u.movable for u in in_host)


def test_plan_takes_the_offloaded_step_and_leaves_host_copies_in_place(captured):
    with warnings.catch_warnings():
        warnings.simplefilter("error", olla_jax.PlanWarning)
        plan = olla_jax.plan(_offloaded(), *ARGS, backend="gpu:h100", time_limit_s=3)
    assert plan.source == "olla_jax" and plan.executable_bytes is not None
    assert plan.planned_temp_bytes <= plan.xla_temp_bytes
    assert any("memory space 5" in n for n in plan.notes), plan.notes
    host = plan.graph.other_space_bytes[model.HOST_SPACE]
    row = re.escape("host memory, not in the total") + r"\s+" + re.escape(size_text(host)) + "\n"
    assert re.search(row, plan.summary()), plan.summary()
    assert not any("does not cover" in n for n in plan.notes), plan.notes
    assert any("decoded again" in n for n in plan.notes), plan.notes

    def host_slices(raw):
        decoded = gpu_executable.decode(raw)
        host = {a.index for a in decoded.allocations if a.color == model.HOST_SPACE}
        return sorted(s for t in decoded.thunks for s in gpu_readback._all_slices(t)
                      if s[0] in host)
    assert host_slices(plan.executable_bytes) == host_slices(captured.executable) != []


def test_readback_wants_each_async_done_after_its_start(captured):
    thunks = list(gpu_executable.decode(captured.executable).thunks)
    assert gpu_readback._async_pairs_differ(thunks) is None
    kinds = [t.WhichOneof("impl") for t in thunks]
    start = kinds.index("async_start_thunk")
    done = next(k for k in range(start, len(thunks)) if kinds[k] == "async_done_thunk"
                and thunks[k].async_done_thunk.async_execution_id
                == thunks[start].async_start_thunk.async_execution_id)
    swapped = thunks[:start] + [thunks[done]] + thunks[start:done] + thunks[done + 1:]
    assert "does not follow its start" in gpu_readback._async_pairs_differ(swapped)
    assert "has no done" in gpu_readback._async_pairs_differ(thunks[:done] + thunks[done + 1:])


def test_checker_holds_a_copy_operand_until_its_copy_done(captured):
    """A value written over the copy-start's operand before the copy-done is
    refused even when the values dump does not list the copy-done as a use."""
    whole = dumps.parse_hlo_proto(captured.hlo_proto)
    proto = whole.hlo_module
    entry = next(c for c in proto.computations if c.id == proto.entry_computation_id)
    by_id = {i.id: i for i in entry.instructions}
    live = dumps.parse_live_ranges(captured.live_range_text)
    order = tuple(n for n in live.sequence if n in {i.name for i in entry.instructions})
    start = next(i for i in entry.instructions if i.opcode == "copy-start"
                 and "S(5)" not in _operand_layout(captured.hlo_text, by_id[i.operand_ids[0]].name))
    done = next(i for i in entry.instructions if i.opcode == "copy-done"
                and start.id in i.operand_ids)
    records = dumps.parse_values(captured.values_text)
    places = {}
    for a in whole.buffer_assignment.buffer_allocations:
        for x in a.assigned:
            places[x.logical_buffer_id] = (a.index, x.offset, x.size)
    source = next(r for r in records.values()
                  if any(p.instruction == by_id[start.operand_ids[0]].name and not p.index
                         for p in r.positions))
    between = set(order[order.index(start.name) + 1:order.index(done.name)])
    mover = next(r for r in records.values() if r.defining_instruction in between
                 and r.id in places and places[r.id][0] == places[source.id][0]
                 and places[r.id][2] <= places[source.id][2])
    plan = check.CandidatePlan(order=order, places={mover.id: places[source.id][:2]},
                               allocation_sizes={})
    # the dump without the copy-done's use of the operand
    stripped = "\n".join(line for line in captured.values_text.splitlines()
                         if not line.strip().startswith(f"{done.name}, operand 0 {{1}}"))
    assert stripped != captured.values_text
    for values_text in (captured.values_text, stripped):
        with pytest.raises(check.PlanRejected, match="overlap"):
            check.check_plan(captured.hlo_proto, values_text, captured.live_range_text, plan)


def _operand_layout(hlo_text: str, name: str) -> str:
    """The shape text of instruction ``name`` in ``hlo_text``."""
    for line in hlo_text.splitlines():
        if line.strip().startswith(f"%{name} = ") or line.strip().startswith(f"ROOT %{name} = "):
            return line.split("=", 1)[1].split(" ", 2)[1]
    return ""


def test_host_memory_outputs_hold_no_device_values():
    """An output (or donated input) in host memory is no region for the arena's
    units, and a temporary XLA parked there stays (it is host bytes)."""
    allocs = (model.Allocation(0, 1024, "temp"),
              model.Allocation(1, 4096, "output", live_out=True, color=model.HOST_SPACE),
              model.Allocation(2, 4096, "output", live_out=True))

    def value(vid, alloc, offset, live_out):
        return model.Value(id=vid, key=f"v{vid}", size=1024, allocation=alloc, offset=offset,
                           xla_range=(vid, vid + 1), def_node=0, touches=frozenset({0}),
                           live_in=False, live_out=live_out)
    values = {0: value(0, 0, 0, False), 1: value(1, 1, 0, True), 2: value(2, 1, 2048, False),
              3: value(3, 2, 0, True)}
    units = model._units(values, {}, allocs, {}, {})
    movable = {u.values: u.movable for u in units}
    assert movable == {(0,): True, (1,): False, (2,): False, (3,): False}
    graph = model.ScheduleGraph(nodes=("a",), flat=("a",), block_end=(0,), edges=(),
                                values=values, units=units, allocations=allocs,
                                temp_allocation=0)
    assert graph.regions == (2,)


def test_plots_say_what_is_in_host_memory(captured):
    """The arena drawn is device memory: the plots say (and draw) the host bytes beside it."""
    pytest.importorskip("matplotlib")
    from olla_jax import report
    from olla_jax.graph import layout as layout_lib
    graph = model.build(captured.hlo_proto, captured.values_text, captured.live_range_text)
    host = graph.other_space_bytes[model.HOST_SPACE]
    said = f"{report._size(host)} of temporaries in host memory (memory space 5), outside"
    xla = layout_lib.xla_layout(graph)
    memory = report.memory_figure(graph, xla, xla)
    ax = memory.axes[0]
    assert said in ax.get_title()
    host_line = [line for line in ax.get_lines() if "host memory" in line.get_label()]
    assert len(host_line) == 1 and max(host_line[0].get_ydata()) == host / report.MIB
    layout = report.layout_figure(graph, xla)
    assert said in layout.get_suptitle()
    band = layout.axes[-1]
    assert said in band.get_title()
    assert any(t.get_text().startswith("host alloc") for t in band.get_yticklabels())
