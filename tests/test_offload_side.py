"""Host offloading as a side of a memory budget (``olla_jax.plan(...,
offload=True)``): refused with the reason where it cannot work, kept only
where it meets the budget with fewer extra FLOPs or where no side meets it,
its host bytes and copies in the notes (compile-only H100)."""

from __future__ import annotations

import dataclasses
import types
import warnings

import pytest

jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402

import olla_jax  # noqa: E402
from olla_jax import gpu_budget  # noqa: E402
from tests.marks import needs_plugin  # noqa: E402

S = jax.ShapeDtypeStruct
ARGS = (S((1024, 512), jnp.float32), S((512, 512), jnp.float32), S((512, 2048), jnp.float32))


def park_across(x, w, u):
    """``h`` (a matmul's output, 2 MiB) idle across three wide blocks, read by
    the last matmul: parking it lowers the peak in the middle."""
    h = x @ w
    y = jnp.tanh(h)
    for _ in range(3):
        y = jnp.tanh(jnp.tanh(y @ u) @ u.T)
    return (y @ h.T).sum()


def test_cpu_refuses_offload_saying_jax_drops_memory_kinds():
    with pytest.raises(ValueError, match="jax drops memory kinds"):
        olla_jax.plan(park_across, *ARGS, backend="cpu", memory_budget="1MiB", offload=True)


@pytest.mark.parametrize("options, says", [
    (dict(), "side of a memory budget"),
    (dict(memory_budget="1MiB", recompute=False), "recompute=True"),
    (dict(memory_budget="1MiB", offload=1), "True or False"),
    (dict(memory_budget="1MiB", num_devices=2), "single-device")])
def test_offload_options_are_checked_before_compiling(options, says):
    with pytest.raises((ValueError, TypeError), match=says):
        olla_jax.plan(park_across, *ARGS, backend="gpu:h100", **{"offload": True, **options})


def _side(name, total, flops, host=False):
    plan = types.SimpleNamespace(runs_total_bytes=total, extra_flops=flops)
    return gpu_budget.Side(name, plan, moves_to_host=host)


def test_offloading_is_kept_only_with_fewer_flops_or_where_nothing_else_fits():
    ours, off = _side("ours", 90, 5), _side("offload", 80, 0, host=True)
    assert gpu_budget.choose([ours, off], 100) is off            # fewer extra FLOPs
    free = _side("order", 95, 0)
    assert gpu_budget.choose([free, off], 100) is free           # a tie: no copies wins
    over = _side("ours", 120, 5)
    assert gpu_budget.choose([over, off], 100) is off            # the only one that fits
    assert gpu_budget.choose([over, _side("offload", 130, 0, True)], 100) is over


@needs_plugin
@pytest.mark.slow   # 15-30 s on 2 shared cores: XLA's remat search and the offload lever compile ~15 times
def test_h100_budget_met_by_offloading_with_no_extra_flops():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        base = olla_jax.plan(park_across, *ARGS, backend="gpu:h100", time_limit_s=5,
                             feed_back=False)
        io = base.runs_total_bytes - base.runs_temp_bytes
        # order and placement alone reach 18 MiB; recomputation meets it with
        # extra FLOPs (16 MiB), offloading with none (16 MiB and a few KiB)
        budget = io + base.xla_temp_bytes * 33 // 40
        got = olla_jax.plan(park_across, *ARGS, backend="gpu:h100", time_limit_s=5,
                            memory_budget=budget, offload=True)
    assert got.runs_total_bytes <= budget and got.extra_flops == 0
    assert got.engine.startswith("offload+")
    assert got.settings["host_temp_bytes"] > 0 and got.settings["to_host_bytes"] > 0
    note = next(n for n in got.notes if n.startswith("host offloading"))
    assert "host temp" in note and "0 extra FLOPs from offloading" in note
    assert "not run: the copies' time is unknown" in note
    assert got.solve_seconds <= 1.1 * 5


def test_to_budget_keeps_offloading_that_meets_the_budget_with_no_flops(monkeypatch):
    """Ours misses the budget, XLA's remat meets it at 200 extra FLOPs, the
    offloaded step planned by us meets it with none: offloading is kept, with
    its host bytes and copies in the notes, XLA's own temp as the reference,
    the lever's compiles counted as XLA's and its planning as the planner's,
    within what the other sides left of the limit."""
    import dataclasses
    import time

    from olla_jax import budget as budget_lib
    from olla_jax import offload, xla_remat
    from olla_jax.capture import record
    from tests.test_gpu_budget import _fake_plan
    clock = [100.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])

    def memory(temp):
        return types.SimpleNamespace(total=temp, temp=temp, argument=0, output=0, alias=0)

    def search(*args, **kwargs):
        clock[0] += 30.0
        return [xla_remat.RematPoint(None, memory(1000), 100, None),
                xla_remat.RematPoint(500, memory(700), 300, None)]
    monkeypatch.setattr(xla_remat, "search", search)
    monkeypatch.setattr(record, "serialize_executable", lambda compiled: b"")
    monkeypatch.setattr(budget_lib, "recompute_to_budget", lambda result, budget, **kw: (
        _fake_plan(850, solve_seconds=result.solve_seconds + 10.0, extra_flops=0)))
    lever_budgets = []

    def lever(fn, *args, budget, **kw):
        clock[0] += 40.0
        lever_budgets.append(budget)
        return types.SimpleNamespace(
            chosen=("a", "b"), fn="offloaded step", temp=820, xla_temp=1000, host_temp=3 * 2**20,
            transfers=offload.Transfers(2, 2, 5 * 2**20, 5 * 2**20, 4), tried=((2, 820),))
    monkeypatch.setattr(offload, "offload", lever)
    asked = []

    def plan_offloaded(fn, limit_s):
        asked.append((fn, limit_s))
        return _fake_plan(780, xla_best_temp_bytes=820, xla_default_temp_bytes=820,
                          solve_seconds=3.0, verify_seconds=1.0, capture_seconds=20.0)
    @dataclasses.dataclass(frozen=True)
    class Compiled:
        executable: object = None
    result = _fake_plan(950, compiled=Compiled())
    got = gpu_budget.to_budget(result, 800, lambda x: x, (), time_limit_s=40.0,
                               plan_offloaded=plan_offloaded)
    assert lever_budgets == [800]                       # no arguments or outputs here
    # last, in what ours left of the limit (its 10 s of search)
    assert asked == [("offloaded step", (40.0 - 10.0) * gpu_budget.OFFLOAD_PLAN_SHARE)]
    assert got.engine == "offload+list" and got.extra_flops == 0
    assert got.runs_total_bytes == 780 and got.xla_best_temp_bytes == 1000
    assert got.settings["host_temp_bytes"] == 3 * 2**20 and got.settings["to_host_bytes"] == 5 * 2**20
    note = next(n for n in got.notes if n.startswith("host offloading"))
    assert "2 value(s) parked" in note and "5.00 MiB copied to host" in note
    assert "not run: the copies' time is unknown" in note
    assert "3 sides" in got.notes[-1] and "host offloading: total" in got.notes[-1]
    assert got.solve_seconds == 2.0 + 10.0 + 3.0
    assert got.capture_seconds == 5.0 + 30.0 + 40.0 + 20.0

    # not asked for: XLA's remat is kept
    got = gpu_budget.to_budget(result, 800, lambda x: x, (), time_limit_s=40.0)
    assert got.engine == "xla-remat" and got.extra_flops == 200


def test_a_missed_budget_says_host_offloading_was_tried_too():
    import importlib
    from tests.small_steps import FakePlan
    plan_lib = importlib.import_module("olla_jax.plan")   # olla_jax.plan is also the function
    tried = str(plan_lib._budget_error(FakePlan(3000, {}), 1000, True, offload=True))
    assert "(trying order, placement, recomputation and host offloading) needs" in tried
    assert "host offloading" not in str(plan_lib._budget_error(FakePlan(3000, {}), 1000, True))


def test_recomputation_on_top_of_offloading_warns_nobody_and_says_why_in_the_note(monkeypatch):
    """The offloaded side may not be kept: why our recomputation could not
    lower it goes in its note, not in a PlanWarning about recomputation that
    the kept plan may well use."""
    from olla_jax import budget as budget_lib
    from olla_jax import offload
    from olla_jax.result import warn
    from tests.test_gpu_budget import _fake_plan

    def not_tried(result, budget, **kw):
        warn("olla_jax recomputation: XLA's temp allocation cannot be resized here")
        return _fake_plan(result.planned_temp_bytes, notes=result.notes + (
            "XLA's temp allocation cannot be resized here",))
    monkeypatch.setattr(budget_lib, "recompute_to_budget", not_tried)
    monkeypatch.setattr(offload, "offload", lambda fn, *a, **kw: types.SimpleNamespace(
        chosen=("a",), fn="offloaded step", temp=900, xla_temp=1000, host_temp=2**20,
        transfers=offload.Transfers(1, 1, 2**20, 2**20, 2), tried=((1, 900),)))
    graph = types.SimpleNamespace()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        side, _, _ = gpu_budget.offload_side(
            _fake_plan(950), 800, lambda x: x, (), lambda fn, s: _fake_plan(900, graph=graph),
            time_limit_s=40.0)
    assert "did not lower it: XLA's temp allocation cannot be resized here" in side.plan.notes[-1]


def test_planning_the_offloaded_step_warns_nobody(monkeypatch):
    """Its share of the limit is not the user's: a met budget once warned "the
    time limit of 1.8 s is too short" under a 10 s limit (the note keeps it)."""
    from olla_jax import offload
    from olla_jax.result import warn
    from tests.test_gpu_budget import _fake_plan
    monkeypatch.setattr(offload, "offload", lambda fn, *a, **kw: types.SimpleNamespace(
        chosen=("a",), fn="offloaded step", temp=700, xla_temp=1000, host_temp=2**20,
        transfers=offload.Transfers(1, 1, 2**20, 2**20, 2), tried=((1, 700),)))

    def short(fn, limit_s):
        warn(f"no time to plan: the time limit of {limit_s:g} s is too short")
        return _fake_plan(700, notes=(f"no time to plan: the time limit of {limit_s:g} s",))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        side, _, _ = gpu_budget.offload_side(_fake_plan(950), 800, lambda x: x, (), short,
                                             time_limit_s=10.0)
    assert any(n.startswith("no time to plan") for n in side.plan.notes)


def test_the_offloaded_step_is_planned_with_the_levers_compiler_options(monkeypatch):
    """The lever compiles the offloaded step without XLA's latency-hiding
    scheduler (with it one copy raised the device temp); its plan compiles it so too."""
    from olla_jax import offload
    from tests.test_gpu_budget import _fake_plan
    lever = types.SimpleNamespace(
        chosen=("a",), fn="offloaded step", temp=700, xla_temp=1000, host_temp=2**20,
        transfers=offload.Transfers(1, 1, 2**20, 2**20, 2), tried=((1, 700),),
        compiler_options=dict(offload.NO_LATENCY_HIDING))
    asked = []

    def plan_offloaded(fn, limit_s, compiler_options=None):
        asked.append(compiler_options)
        return _fake_plan(700)
    gpu_budget.offload_side(_fake_plan(950), 800, lambda x: x, (), plan_offloaded,
                            time_limit_s=10.0, lever=lever)
    assert asked == [offload.NO_LATENCY_HIDING]


def test_the_side_counts_the_offloaded_programs_extra_flops(monkeypatch):
    """The readers computed again from a copy back are FLOPs the offloaded
    program runs and the step did not: the side's extra FLOPs count them (with
    our recomputation's), and its note gives XLA's program's signed difference."""
    from olla_jax import offload
    from tests.test_gpu_budget import _fake_plan

    def lever(delta):
        return types.SimpleNamespace(
            chosen=("a",), fn="offloaded step", temp=700, xla_temp=1000, host_temp=2**20,
            transfers=offload.Transfers(1, 1, 2**20, 2**20, 2), tried=((1, 700),),
            flops_delta=delta)
    got = {}
    for delta in (40, -25, None):
        side, _, _ = gpu_budget.offload_side(
            _fake_plan(950), 800, lambda x: x, (), lambda fn, s: _fake_plan(700, extra_flops=3),
            time_limit_s=10.0, lever=lever(delta))
        got[delta] = side.plan
    assert got[40].extra_flops == 43 and "40 extra FLOPs from offloading" in got[40].notes[-1]
    assert "+40 FLOPs against the step as given" in got[40].notes[-1]
    assert got[-25].extra_flops == 3 and "-25 FLOPs against" in got[-25].notes[-1]
    assert got[None].extra_flops == 3 and "offloading's FLOPs not counted" in got[None].notes[-1]


def test_offloading_that_lowers_nothing_says_what_each_try_reached_in_mib(monkeypatch):
    from olla_jax import offload
    from tests.test_gpu_budget import _fake_plan
    monkeypatch.setattr(offload, "offload", lambda fn, *a, **kw: types.SimpleNamespace(
        chosen=(), fn=None, temp=50 * 2**20, xla_temp=50 * 2**20, host_temp=0, transfers=None,
        tried=((1, 86 * 2**20), (2, 50 * 2**20 + 4096))))
    side, _, note = gpu_budget.offload_side(_fake_plan(950), 800, lambda x: x, (),
                                            lambda fn, s: None, time_limit_s=10.0)
    assert side is None
    assert "1 -> 86.00 MiB, 2 -> 50.00 MiB" in note and "90177536" not in note


def test_a_lever_already_captured_is_used_not_captured_again(monkeypatch):
    from olla_jax import offload
    from tests.test_gpu_budget import _fake_plan

    def capture_again(*a, **kw):
        raise AssertionError("the lever was captured again")
    monkeypatch.setattr(offload, "offload", capture_again)
    lever = types.SimpleNamespace(chosen=(), fn=None, temp=50 * 2**20, xla_temp=50 * 2**20,
                                  host_temp=0, transfers=None, tried=((1, 77 * 2**20),))
    side, _, note = gpu_budget.offload_side(_fake_plan(950), 800, lambda x: x, (),
                                            lambda fn, s: None, time_limit_s=10.0, lever=lever)
    assert side is None and "1 -> 77.00 MiB" in note


def _three_sides(monkeypatch, ours_flops: int):
    """``to_budget``'s fakes on a fake clock: ours (10 s of search) at 850
    bytes with ``ours_flops`` (within an 800-byte budget when 0: 780 then),
    XLA's remat at 700 with 200 extra FLOPs, XLA's program at a higher limit
    planned by us to 780 with 50; the offload lever (40 s of compiles) and
    the offloaded step's planning (15 s, 820 bytes, 0 FLOPs).  The limits
    ``plan_on`` and ``plan_offloaded`` were given, and the lever's calls."""
    import re
    import time

    from olla_jax import budget as budget_lib
    from olla_jax import offload, xla_remat
    from olla_jax.capture import record
    from tests.test_gpu_budget import _fake_plan
    clock = [100.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])

    def memory(temp):
        return types.SimpleNamespace(total=temp, temp=temp, argument=0, output=0, alias=0)
    monkeypatch.setattr(xla_remat, "search", lambda *a, **k: [
        xla_remat.RematPoint(None, memory(1000), 100, None),
        xla_remat.RematPoint(800, memory(900), 150, None),
        xla_remat.RematPoint(500, memory(700), 300, None)])
    monkeypatch.setattr(record, "serialize_executable", lambda compiled: b"")
    monkeypatch.setattr(budget_lib, "recompute_to_budget", lambda result, budget, **kw: (
        _fake_plan(850 if ours_flops else 780, solve_seconds=result.solve_seconds + 10.0,
                   extra_flops=ours_flops)))
    calls = dict(plan_on=[], plan_offloaded=[], lever=0)

    def plan_on(path, limit_s):
        calls["plan_on"].append(limit_s)
        assert re.search(r"device_memory_size", open(path).read())
        return _fake_plan(780, xla_default_temp_bytes=900, xla_best_temp_bytes=900,
                          solve_seconds=4.0, verify_seconds=1.5)

    def lever(fn, *args, budget, **kw):
        clock[0] += 40.0
        calls["lever"] += 1
        return types.SimpleNamespace(
            chosen=("a",), fn="offloaded step", temp=820, xla_temp=1000, host_temp=2**20,
            transfers=offload.Transfers(1, 1, 2**20, 2**20, 2), tried=((1, 820),))
    monkeypatch.setattr(offload, "offload", lever)

    def plan_offloaded(fn, limit_s):
        calls["plan_offloaded"].append(limit_s)
        return _fake_plan(820, xla_best_temp_bytes=820, solve_seconds=15.0, verify_seconds=1.0)

    @dataclasses.dataclass(frozen=True)
    class Compiled:
        executable: object = None
    result = _fake_plan(950, compiled=Compiled())

    def run(offload_too: bool):
        return gpu_budget.to_budget(result, 800, lambda x: x, (), time_limit_s=40.0,
                                    plan_on=plan_on,
                                    plan_offloaded=plan_offloaded if offload_too else None)
    return run, calls


def test_offloading_runs_after_the_other_sides_in_the_time_they_leave(monkeypatch):
    """Before: offloading ran first on a share of the limit, taken from the
    others (gpt2:small's XLA remat planned by us had 4.7 s, was not tried).
    Now the others get what they get without it, and keep what they keep
    when offloading does not beat them (here: it misses the budget)."""
    run, calls = _three_sides(monkeypatch, ours_flops=5)
    alone = run(False)
    both = run(True)
    assert calls["plan_on"][0] == calls["plan_on"][1]      # the same share either way
    assert calls["lever"] == 1
    # what ours (10 s) and XLA's program planned (4 s; its 1.5 s build comes on top, as
    # plan() counts builds) left of 40 s
    assert calls["plan_offloaded"] == [(40.0 - 10.0 - 4.0) * gpu_budget.OFFLOAD_PLAN_SHARE]
    assert (alone.runs_total_bytes, alone.extra_flops) == (780, 50)
    assert (both.runs_total_bytes, both.extra_flops, both.engine) == (780, 50, alone.engine)
    assert "host offloading: total" in both.notes[-1] and "4 sides" in both.notes[-1]


def test_offloading_is_not_tried_where_a_side_meets_the_budget_with_no_flops(monkeypatch):
    run, calls = _three_sides(monkeypatch, ours_flops=0)
    got = run(True)
    assert calls["lever"] == 0 and calls["plan_offloaded"] == []
    assert got.extra_flops == 0 and got.runs_total_bytes == 780
    assert any("host offloading not tried: our recomputation meets the budget with no extra "
               "FLOPs" in n for n in got.notes)


def test_offloading_is_not_tried_without_time_left():
    over = gpu_budget.Side("ours", types.SimpleNamespace(runs_total_bytes=900, extra_flops=5))
    ran = []
    got = gpu_budget.offload_after(over, 2 * gpu_budget.REMAT_MIN_S - 0.1,
                                   lambda limit_s: ran.append(limit_s), 800)
    assert got[0] is None and ran == [] and "s of the limit left" in got[2]
    gpu_budget.offload_after(over, 10.0, lambda limit_s: ran.append(limit_s), 800)
    assert ran == [10.0]
