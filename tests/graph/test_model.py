"""The memory model agrees with XLA, and the checker rejects unsafe plans."""

from __future__ import annotations

import collections
import dataclasses
import functools

import pytest

import examples
from small_steps import random_order
from olla_jax import check
from olla_jax.capture import capture
from olla_jax import dumps
from olla_jax.graph import fidelity, model

MODELS = ("mlp", "cnn_adam", "lm_adamw", "lstm")
# lm_adamw's captures (8 s each) run with make test-slow; its donated fidelity stays
MODELS_FAST = [pytest.param(n, marks=pytest.mark.slow) if n == "lm_adamw" else n for n in MODELS]


def _gpu_plugin() -> bool:
    from olla_jax.capture import gpu
    return gpu.cuda_plugin() is not None


@functools.lru_cache(maxsize=None)
def captured(name: str, backend: str, scheduler: str = "default"):
    step = examples.get(name, "tiny")
    return capture(step.fn, *step.args, backend=backend, scheduler=scheduler,
                   static_argnums=step.static_argnums, donate_argnums=step.donate_argnums)


def graph_of(cap):
    return model.build(cap.hlo_proto, cap.values_text, cap.live_range_text)


def xla_plan(graph):
    return check.CandidatePlan(order=graph.nodes, places={}, allocation_sizes={})


def assert_faithful(cap):
    graph = graph_of(cap)
    report = fidelity.replay_xla(graph)
    # The arena XLA's own places need is XLA's temp allocation, byte for byte.
    assert report.replayed_arena_bytes == cap.memory.temp == report.xla_temp_bytes
    # The model's live bytes for XLA's order never exceed XLA's temp.
    assert report.order_peak_bytes <= cap.memory.temp
    assert report.flat_peak_bytes <= cap.memory.temp
    # Nothing XLA placed on shared bytes is live together in the model.
    assert report.conflicts == ()
    # The independent checker accepts XLA's own plan.
    check.check_plan(cap.hlo_proto, cap.values_text, cap.live_range_text, xla_plan(graph))
    return graph


@pytest.mark.parametrize("scheduler", ["default", "memory"])
@pytest.mark.parametrize("name", MODELS_FAST)
def test_fidelity_cpu(name, scheduler):
    graph = assert_faithful(captured(name, "cpu", scheduler))
    assert len(graph.nodes) > 10 and any(u.movable for u in graph.units)


@pytest.mark.skipif(not _gpu_plugin(), reason="needs the compile-only GPU extra: pip install '.[gpu]'")
@pytest.mark.parametrize("name", MODELS_FAST)
def test_fidelity_h100(name):
    assert_faithful(captured(name, "gpu:h100"))


def test_scan_has_its_own_inner_liveness():
    graph = graph_of(captured("lstm", "cpu"))
    loops = [n for n in range(len(graph.nodes)) if graph.block_length(n) > 1]
    assert loops, "the scan model should have a while loop with a body block"
    problem = graph.order_problem()
    # The loop body's temporaries are counted at their inner peak, not summed.
    inner = graph._inner_units()
    for node in loops:
        summed = sum(graph.units[u].size for u, n in inner.items() if n == node)
        assert problem.node_extra[node] <= summed


def test_bound_problem_never_counts_more_than_the_estimate():
    graph = graph_of(captured("lstm", "cpu"))
    estimate, bound = graph.order_problem(), graph.order_problem(for_bound=True)
    assert all(b <= e for b, e in zip(bound.node_extra, estimate.node_extra))


# ---------------------------------------------------------------------------
# The checker on plans that must be rejected.

def _two_live_temp_values(graph):
    """Two temp values live at the same XLA step, in different units."""
    temp = [v for v in graph.values.values() if v.allocation == graph.temp_allocation]
    for a in temp:
        for b in temp:
            if graph.unit_of_value[a.id] != graph.unit_of_value[b.id] and a.offset != b.offset \
                    and a.xla_range[0] <= b.xla_range[1] and b.xla_range[0] <= a.xla_range[1]:
                return a, b
    raise AssertionError("no two temp values live together")


def _check(cap, plan):
    check.check_plan(cap.hlo_proto, cap.values_text, cap.live_range_text, plan)


def test_checker_rejects_overlap():
    cap = captured("cnn_adam", "cpu", "memory")
    graph = graph_of(cap)
    a, b = _two_live_temp_values(graph)
    moved = {v: (b.allocation, b.offset) for v in graph.units[graph.unit_of_value[a.id]].values}
    with pytest.raises(check.PlanRejected, match="overlap"):
        _check(cap, dataclasses.replace(xla_plan(graph), places=moved))


def test_checker_rejects_reversed_order():
    cap = captured("mlp", "cpu")
    graph = graph_of(cap)
    with pytest.raises(check.PlanRejected, match="before its predecessor"):
        _check(cap, dataclasses.replace(xla_plan(graph), order=tuple(reversed(graph.nodes))))


def test_checker_rejects_split_in_place_pair_misalignment_and_overflow():
    cap = captured("lstm", "cpu")
    graph = graph_of(cap)
    temp = graph.temp_allocation
    size = graph.allocations[temp].size
    pair = next(u for u in graph.units if u.movable and len(u.values) > 1
                and u.allocation == temp)
    first = pair.values[0]
    with pytest.raises(check.PlanRejected, match="split"):
        _check(cap, dataclasses.replace(xla_plan(graph), places={first: (temp, size)},
                                        allocation_sizes={temp: size + 2 * pair.size + 64}))
    with pytest.raises(check.PlanRejected, match="multiple of 64"):
        _check(cap, dataclasses.replace(xla_plan(graph),
                                        places={v: (temp, size + 8) for v in pair.values},
                                        allocation_sizes={temp: size + pair.size + 64}))
    with pytest.raises(check.PlanRejected, match="does not fit"):
        _check(cap, dataclasses.replace(xla_plan(graph),
                                        places={v: (temp, size) for v in pair.values}))


def test_checker_pins_outputs():
    cap = captured("mlp", "cpu")
    graph = graph_of(cap)
    out = next(v for v in graph.values.values() if v.live_out)
    with pytest.raises(check.PlanRejected, match="must stay"):
        _check(cap, dataclasses.replace(xla_plan(graph),
                                        places={out.id: (graph.temp_allocation, 0)}))


def test_dump_parsers_refuse_garbage():
    with pytest.raises(dumps.DumpFormatError):
        dumps.parse_values("Used values:\n<1 x @0>\n positions:\n  ???, bad\n garbage\n")
    with pytest.raises(dumps.DumpFormatError):
        dumps.parse_live_ranges("nothing here")
    with pytest.raises(ValueError):
        dumps.parse_hlo_proto(b"\x00\x01garbage")


def test_simulation_of_xla_plan_matches_xla():
    from olla_jax.graph import layout as layout_lib, simulate
    cap = captured("cnn_adam", "cpu", "memory")
    sim = simulate.simulate(layout_lib.xla_layout(graph_of(cap)))
    assert sim.arena_bytes == cap.memory.temp
    assert 0 < sim.live_peak_bytes <= sim.arena_bytes
    assert 0.0 <= sim.fragmentation < 1.0


def test_threshold_bound_problems_keep_only_what_regions_cannot_hold():
    graph = graph_of(captured("cnn_adam", "cpu", "memory"))
    problems = graph.bound_problems()
    assert problems[0].region_sizes == graph.order_problem(for_bound=True).region_sizes
    largest = max(problems[0].region_sizes, default=0)
    last = problems[-1]
    assert all(s == 0 for s in last.region_sizes)
    assert all(i.size > largest for i in last.items if i.region == -1)


# ---------------------------------------------------------------------------
# Donated variants: a donated parameter's allocation is also its output's, and
# XLA parks temporaries there in between (issue 18).

DONATED_FAST = ("mlp", "cnn_adam", "lstm")   # lm_adamw (5-6 s each) with make test-slow
# The order-level model counts an outer value that dies inside a loop body as
# live for the whole body, while XLA reuses its bytes there: for lstm donated,
# memory scheduler, that is 8 bytes above XLA's temp at the while (the flat
# replay, the arena and the conflicts agree with XLA).  Not a donation defect.
ORDER_LEVEL_OVERCOUNT = {("lstm", "memory")}


def donated_variant(step):
    """The step with every dynamic argument but the last (the batch) donated."""
    dynamic = [i for i in range(len(step.args)) if i not in step.static_argnums]
    return dataclasses.replace(step, donate_argnums=tuple(dynamic[:-1]))


@functools.lru_cache(maxsize=None)
def captured_donated(name: str, scheduler: str):
    step = donated_variant(examples.get(name, "tiny"))
    return capture(step.fn, *step.args, scheduler=scheduler,
                   static_argnums=step.static_argnums, donate_argnums=step.donate_argnums)


def spread_plan(graph, order):
    """``order`` with every movable unit given bytes of its own in the temp
    allocation: only what no plan moves can still overlap."""
    places, end = {}, 0
    for unit in graph.units:
        if unit.movable:
            places.update({v: (graph.temp_allocation, end + off)
                           for v, off in zip(unit.values, unit.member_offsets)})
            end += -(-unit.size // 64) * 64
    return check.CandidatePlan(order=tuple(graph.nodes[n] for n in order), places=places,
                               allocation_sizes={graph.temp_allocation: end})


def _donated_params(name):
    out = []
    for s in ("default", "memory"):
        marks = [] if name in DONATED_FAST else [pytest.mark.slow]
        if (name, s) in ORDER_LEVEL_OVERCOUNT:
            marks.append(pytest.mark.xfail(strict=True, raises=AssertionError,
                                           reason="order-level model over-counts a loop body"))
        out.append(pytest.param(name, s, marks=marks, id=f"{name}-{s}"))
    return out


@pytest.mark.parametrize("name,scheduler", [p for n in examples.names() for p in _donated_params(n)])
def test_fidelity_donated(name, scheduler):
    cap = captured_donated(name, scheduler)
    assert cap.memory.alias > 0, "the donation did not take"
    graph = assert_faithful(cap)
    donated = [a for a in graph.allocations if a.kind == "parameter" and a.live_out]
    assert donated and all(a.index in graph.regions for a in donated)
    # What no plan moves (inputs, outputs, what XLA parked between them) never
    # shares bytes while live, in any order the model allows; the independent
    # checker agrees once everything movable has bytes of its own.
    for seed in range(3):
        order = random_order(graph, seed)
        assert fidelity.fixed_conflicts(graph, order) == ()
        if graph.temp_allocation >= 0:
            _check(cap, spread_plan(graph, order))
