"""Our recomputation against XLA's rematerialization on compile-only GPU targets.

The issue's terms (``gpu_budget.against_xla``), XLA's front, and a value
XLA:GPU also holds at a bitcast of it (most of a transformer's idle
activations on H100: the GEMM fusion reading it takes the bitcast), which
is recomputed, passes the independent checker, and is built and read back.
"""

from __future__ import annotations

import warnings

import pytest

jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402

from olla_jax import gpu_budget  # noqa: E402
from tests.marks import needs_plugin  # noqa: E402

S = jax.ShapeDtypeStruct


def test_against_xla_meets_either_term_and_says_which():
    # XLA's point: temp 100 at 1000 extra FLOPs
    half = gpu_budget.against_xla(100, 500, 100, 1000)
    assert half.met and "its memory" in half.how
    less = gpu_budget.against_xla(85, 1000, 100, 1000)
    assert less.met and "0.850 x its memory" in less.how
    assert not gpu_budget.against_xla(86, 600, 100, 1000).met     # neither term
    assert not gpu_budget.against_xla(101, 0, 100, 1000).met       # more memory, even for free
    assert not gpu_budget.against_xla(50, 1001, 100, 1000).met     # less memory, more FLOPs
    # XLA lowered its temp without recomputing: only memory at no FLOPs meets it
    assert gpu_budget.against_xla(100, 0, 100, 0).met
    assert not gpu_budget.against_xla(10, 1, 100, 0).met
    with pytest.raises(ValueError, match="non-negative"):
        gpu_budget.against_xla(-1, 0, 100, 0)


def test_front_keeps_the_points_nothing_beats_on_both():
    points = [(100, 50), (90, 80), (120, 10), (100, 60), (95, 80), (130, 10)]
    assert gpu_budget.front(points) == [(90, 80), (100, 50), (120, 10)]
    assert gpu_budget.front([]) == []


def viewed_step(x, w1, w2, w3):
    a = x @ w1                                  # idle across the peak
    c = jnp.tanh((x * a.sum()) @ w2)            # the peak: 8 MiB while a waits
    d = c[:, :256] * c[:, 256:512]
    e = a.reshape(1024, 512) @ (w3 * d.sum())   # a's late reader, through a bitcast of it
    return (d * e[:, :1].repeat(2, 0)[:2048, :1]).astype(jnp.bfloat16)


VIEWED_ARGS = (S((2048, 256), jnp.float32), S((256, 256), jnp.float32),
               S((256, 1024), jnp.float32), S((512, 256), jnp.float32))


@pytest.mark.slow
@needs_plugin
def test_a_value_held_at_a_bitcast_is_recomputed_checked_and_read_back():
    import olla_jax
    from olla_jax import budget, checked, dumps
    from olla_jax.budget import recompute_plan
    from olla_jax.apply import gpu_executable, gpu_readback
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        base = olla_jax.plan(viewed_step, *VIEWED_ARGS, backend="gpu:h100", time_limit_s=1,
                             feed_back=False)
    g, cap = base.graph, base.capture
    records = {r.key: r for r in dumps.parse_values(cap.values_text).values()}
    module = {i.name: i for c in gpu_executable.decode(cap.executable).hlo_module.computations
              for i in c.instructions}

    def bitcasts(c):
        return [p.instruction for p in records[g.values[c.value].key].positions
                if module[p.instruction].opcode == "bitcast"]
    held = [c for c in budget.candidates(g, cap) if bitcasts(c)]
    assert held, "no candidate is held at a bitcast of it"
    c = max(held, key=lambda c: g.values[c.value].size)
    order = base.layout.order if base.layout is not None else g.xla_order
    step = recompute_plan.step_index(g, order)
    users = sorted(c.users, key=lambda n: step[n])
    assert g.node_index[bitcasts(c)[0]] in users          # the bitcast reads it (no thunk)
    # the copy runs before the value's last reader: ``users`` ends with slots
    # on GPU (readers of values recomputed from it), which read nothing of it
    last = max(k for k, u in enumerate(users) if u not in c.slots)
    assert step[users[last]] > step[g.node_index[bitcasts(c)[0]]]  # read after the bitcast
    plan = budget.plan_of(g, order, [(c, last)])
    (r,) = plan.layout.recomputes
    assert checked.rejection(cap, plan.layout, alignment=g.alignment) is None
    outcome = checked.apply(cap, plan.layout, backend="gpu:h100", what="the recomputation")
    assert outcome.raw is not None, outcome.reason
    assert gpu_readback.compare(outcome.raw, plan.layout) is None
    names = [t.thunk_info.profile_annotation
             for t in gpu_executable.decode(outcome.raw).thunks]
    assert names.count(r.producer) == 2


@needs_plugin
def test_xla_remat_search_skips_xlas_own_compile_when_told_the_io_bytes():
    from olla_jax import xla_remat

    def f(x):
        return jnp.tanh(x @ x.T).sum(0)
    x = S((256, 256), jnp.float32)
    points = xla_remat.search(f, x, backend="gpu:h100", budget_bytes=2**20, fractions=(0.5,),
                              io_bytes=256 * 256 * 4 + 256 * 4)
    assert [p.limit_bytes for p in points] == [2**19]      # no point of XLA's own limit
    assert points[0].flops > 0


@needs_plugin
def test_xla_remat_search_keeps_xlas_cannot_reach_warnings_off_stderr(capfd, monkeypatch):
    """A limit XLA cannot reach makes XLA:GPU log "Can't reduce memory use
    below" on stderr at each compile; the search asks for such limits on
    purpose: they go to absl's log, not the user's terminal."""
    from absl import logging as absl_logging

    from olla_jax import xla_remat
    logged = []

    def f(x):
        return jnp.tanh(x @ x.T).sum(0)
    x = S((256, 256), jnp.float32)
    monkeypatch.setattr(absl_logging, "info", lambda msg, *a: logged.append(msg % a))
    points = xla_remat.search(f, x, backend="gpu:h100", budget_bytes=2**20, fractions=(0.01,),
                              io_bytes=256 * 256 * 4 + 256 * 4)
    assert points[0].memory.temp > 2**20 // 100            # XLA could not reach it
    assert "Can't reduce memory use below" not in capfd.readouterr().err
    assert any("Can't reduce memory use below" in line for line in logged), logged


def test_a_plan_file_keeps_a_copys_workspace_and_done():
    """A recomputation read back from a plan file is the one saved, scratch
    (a library call's workspace) and done_before included; a file without
    them (older) reads as before."""
    from olla_jax import saved
    from olla_jax.graph.layout import Recompute
    rs = (Recompute(3, "custom-call.2", "fusion.7", ("fusion.7", "fusion.9"), (7, 256), 1024,
                    scratch=((25, (7, 10485760)),)),
          Recompute(4, "all-gather-start", "fusion.8", ("fusion.8",), (7, 0), 512,
                    done_before="fusion.8"),
          Recompute(5, "fusion.1", "fusion.9", ("fusion.9",), (7, 4096), 64))
    plan = saved.SavedPlan("f" * 64, "gpu:h100", "default", ("a",), {}, {}, {}, "auto", (),
                           tuple(saved.recompute_record(r) for r in rs))
    again = saved.from_json(plan.to_json())
    assert tuple(saved.recompute_of(r) for r in again.recomputes) == rs
    older = plan.to_json().replace('"scratch"', '"unknown_key"')
    assert saved.recompute_of(saved.from_json(older).recomputes[0]).scratch == ()


def test_step_flops_are_counted_once_per_capture(monkeypatch):
    import types
    from olla_jax import flops
    from olla_jax.budget import feed_back
    calls = []
    monkeypatch.setattr(flops, "compiled_flops", lambda compiled: calls.append(compiled) or 7)
    caps = [types.SimpleNamespace(compiled=object()) for _ in range(6)]
    assert [feed_back.step_flops(c) for c in caps + caps[-1:]] == [7] * 7
    assert len(calls) == 6
    assert len(feed_back._STEP_FLOPS) <= feed_back._STEP_FLOPS_KEPT


def test_xlas_remat_search_counts_as_xlas_compiles_not_the_planners(monkeypatch):
    """XLA's rematerialization is searched by compiling the step under several
    limits: those seconds are XLA's compiles (``capture_seconds``), kept or
    not, never the planner's ``solve_seconds`` (which the limit bounds)."""
    import dataclasses
    import time
    import types

    from olla_jax import xla_remat
    from olla_jax.budget import feed_back
    from olla_jax.capture import record
    clock = [100.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])

    def memory(total):
        return types.SimpleNamespace(total=total, temp=total, argument=0, output=0, alias=0)

    def search(*args, **kwargs):
        clock[0] += 30.0
        return [xla_remat.RematPoint(None, memory(1000), 10, None),
                xla_remat.RematPoint(500, memory(400), 12, None)]
    monkeypatch.setattr(xla_remat, "search", search)
    monkeypatch.setattr(record, "serialize_executable", lambda compiled: b"")

    @dataclasses.dataclass(frozen=True)
    class Compiled:
        executable: object = None

    @dataclasses.dataclass(frozen=True)
    class Result:
        backend: str = "gpu:h100"
        runs_total_bytes: int = 900
        solve_seconds: float = 2.0
        capture_seconds: float = 5.0
        notes: tuple = ()
        compiled: Compiled = Compiled()
        planned_temp_bytes: int = 900
        achieved_temp_bytes: int = 900
        argument_bytes: int = 0
        output_bytes: int = 0
        alias_bytes: int = 0
        lower_bound_bytes: int = 0
        source: str = "olla"
        engine: str = "list"
        verified: bool = False
        layout: object = None
        executable_bytes: bytes = b""
        extra_flops: int = 0
    kept = feed_back.xla_remat_to_budget(Result(), 500, lambda x: x, ())
    assert kept.engine == "xla-remat" and kept.planned_temp_bytes == 400
    assert (kept.solve_seconds, kept.capture_seconds) == (2.0, 35.0)

    def failing(*args, **kwargs):
        clock[0] += 30.0
        raise RuntimeError("no limit compiled")
    monkeypatch.setattr(xla_remat, "search", failing)
    with pytest.warns(UserWarning):
        got = feed_back.xla_remat_to_budget(Result(), 500, lambda x: x, ())
    assert (got.solve_seconds, got.capture_seconds) == (2.0, 35.0)


# --- XLA's rematerialized program under our order and placement ---------------

def _mlp_step(ws, x):
    def loss(ws, x):
        h = x
        for w in ws:
            h = jnp.tanh(h @ w) + h
        return (h * h).sum()
    g = jax.grad(loss)(ws, x)
    return [w - 0.1 * gw for w, gw in zip(ws, g)]


MLP_ARGS = ([S((512, 512), jnp.float32)] * 6, S((2048, 512), jnp.float32))


@pytest.mark.slow
@needs_plugin
def test_xlas_remat_program_is_captured_and_planned_for_its_target_file(tmp_path):
    """The program XLA rematerializes under a forced limit, compiled again for
    a device description of that limit (a target file), is the one planned:
    the capture's temp and FLOPs are XLA's at that point, our order and
    placement go below its temp, and the plan is checked, built and decoded
    again.  On this step XLA's remat at 5 MB holds 48 MiB; order and
    placement there reach 36 MiB (0.75 x) at its FLOPs."""
    import olla_jax
    from olla_jax import budget, xla_remat
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        own, point = xla_remat.search(_mlp_step, *MLP_ARGS, backend="gpu:h100",
                                      budget_bytes=10**7, fractions=(0.5,))
        assert point.flops > own.flops                      # XLA recomputed
        path = xla_remat.target_file("h100", point.limit_bytes,
                                     own.memory.argument + own.memory.output, str(tmp_path))
        got = olla_jax.plan(_mlp_step, *MLP_ARGS, backend=f"gpu:{path}", time_limit_s=3)
    assert got.xla_best_temp_bytes == point.memory.temp     # the same program
    assert budget.step_flops(got.capture) == point.flops
    assert got.source == "olla_jax" and got.runs_temp_bytes <= 0.85 * point.memory.temp
    assert got.executable_bytes is not None                  # built and decoded again


def _fake_plan(total: int, **kw):
    from olla_jax.result import Plan
    fields = dict(backend="gpu:h100", xla_default_temp_bytes=1000, xla_best_temp_bytes=1000,
                  xla_scheduler="default", planned_temp_bytes=total, lower_bound_bytes=0,
                  argument_bytes=0, output_bytes=0, alias_bytes=0, solve_seconds=2.0,
                  engine="list", settings={}, source="olla_jax", achieved_temp_bytes=None,
                  verified=False, notes=(), compiled=None, xla_compiled=None,
                  capture_seconds=5.0, verify_seconds=1.0)
    fields.update(kw)
    return Plan(**fields)


def test_to_budget_keeps_xlas_remat_planned_by_us_when_it_has_the_fewest_flops(monkeypatch):
    """Three sides: ours misses the budget, XLA's remat meets it at 200 extra
    FLOPs, XLA's program at a higher limit (50 extra FLOPs, 900 bytes) is
    over it, and order and placement bring that one to 780: it is kept, with
    XLA's FLOPs there, XLA's own temp as the reference, the others' figures in
    the notes, and every second counted (its compile with XLA's, its
    planning with the planner's, within what ours left of the limit)."""
    import dataclasses
    import re
    import time
    import types

    from olla_jax import budget as budget_lib
    from olla_jax import xla_remat
    from olla_jax.capture import record
    clock = [100.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])

    def memory(temp):
        return types.SimpleNamespace(total=temp, temp=temp, argument=0, output=0, alias=0)
    points = [xla_remat.RematPoint(None, memory(1000), 100, None),
              xla_remat.RematPoint(800, memory(900), 150, None),
              xla_remat.RematPoint(640, memory(900), 150, None),    # the same program again
              xla_remat.RematPoint(500, memory(700), 300, None)]

    def search(*args, **kwargs):
        clock[0] += 30.0
        return points
    monkeypatch.setattr(xla_remat, "search", search)
    monkeypatch.setattr(record, "serialize_executable", lambda compiled: b"")
    limits = []

    def recompute_to_budget(result, budget, *, time_limit_s, **kw):
        limits.append(time_limit_s)
        return _fake_plan(850, solve_seconds=result.solve_seconds + 10.0, engine="list+recompute",
                          extra_flops=0, notes=(
                              "recomputed 1 value: 0 extra FLOPs; not fed back: rewritten "
                              "gpu:h100 executable built (5 bytes, decoded again); not run: a "
                              "compile-only target has no GPU here",))
    monkeypatch.setattr(budget_lib, "recompute_to_budget", recompute_to_budget)
    asked = []

    def plan_on(path, limit_s):
        memory_size = int(re.search(r"device_memory_size:\s*(\d+)", open(path).read()).group(1))
        asked.append((memory_size, limit_s))
        paths.append(path)
        return _fake_plan(780, xla_default_temp_bytes=900, xla_best_temp_bytes=900,
                          backend=f"gpu:{path}", solve_seconds=4.0, verify_seconds=1.5,
                          capture_seconds=20.0,   # as apply.feed_back words a build
                          notes=(f"not fed back: rewritten gpu:{path} executable built",))
    paths = []
    @dataclasses.dataclass(frozen=True)
    class Compiled:
        executable: object = None
    result = _fake_plan(950, compiled=Compiled())
    got = gpu_budget.to_budget(result, 800, lambda x: x, (), time_limit_s=40.0,
                               plan_on=plan_on)
    assert [m for m, _ in asked] == [xla_remat.device_memory_for(800, 0)]   # met: no more tries
    assert asked[0][1] <= 40.0 - 10.0 and limits[0] <= 40.0 * (1 - gpu_budget.REMAT_PLAN_SHARE)
    assert got.runs_total_bytes == 780 and got.extra_flops == 50
    assert got.engine == "xla-remat+list" and got.backend == "gpu:h100"
    assert got.xla_best_temp_bytes == 1000
    assert "3 sides" in got.notes[-1] and "200 extra FLOPs" in got.notes[-1]
    assert got.solve_seconds == 2.0 + 10.0 + 4.0
    assert got.capture_seconds == 5.0 + 30.0 + 20.0
    # the device description written for the limit: named by its limit, and gone
    import os
    assert not any(paths[0] in n or "/tmp" in n for n in got.notes), got.notes
    assert any("rewritten gpu:h100 with XLA's memory limit at 800 B executable built" in n
               for n in got.notes), got.notes
    assert not os.path.exists(paths[0])
    # a side not kept: what it did is said, not the executable built for it
    assert "recomputed 1 value: 0 extra FLOPs" in got.notes, got.notes
    assert not any("(5 bytes" in n for n in got.notes), got.notes

    # without a planner for the target files, XLA's remat is kept as before
    got = gpu_budget.to_budget(result, 800, lambda x: x, (), time_limit_s=40.0)
    assert got.engine == "xla-remat" and got.extra_flops == 200
    # each limit tried says what XLA's total was there, with its unit
    (said,) = [n for n in got.notes if n.startswith("XLA's rematerialization with its memory")]
    assert "limits tried: 0.0 MiB -> total 0.0 MiB, " in said, said
    assert "2 sides" in got.notes[-1] and limits[-1] > limits[0]
    # the executable built for our order and placement is not the one XLA's remat keeps
    built = "not fed back: rewritten gpu:h100 executable built (9 bytes, decoded again)"
    got = gpu_budget.to_budget(dataclasses.replace(result, notes=(built,)), 800, lambda x: x, (),
                               time_limit_s=40.0)
    assert got.engine == "xla-remat" and built not in got.notes
    assert f"our order and placement (not kept): {built}" in got.notes, got.notes


def test_remat_planned_says_none_was_tried_when_no_time_was_left():
    """Not "none below XLA's temp there" when no program was planned at all."""
    import types

    from olla_jax import xla_remat
    m = types.SimpleNamespace(total=900, temp=900, argument=0, output=0, alias=0)
    points = [xla_remat.RematPoint(None, m, 100, None), xla_remat.RematPoint(800, m, 150, None)]

    def plan_on(path, limit_s):
        raise AssertionError("no time was left to plan")
    side, _, note = gpu_budget.remat_planned(_fake_plan(950), points, points[1:], 800, plan_on,
                                             time_limit_s=0.5)
    assert side is None
    assert note.startswith("XLA's rematerialized programs planned by us: none tried ("), note
    assert "0.0 MiB: not tried (0.5 s left of the limit, " in note, note


def test_remat_candidates_one_per_program_fewest_flops_first_and_within_reach():
    import types

    from olla_jax import xla_remat

    def point(limit, temp, flops):
        m = types.SimpleNamespace(total=temp, temp=temp, argument=0, output=0, alias=0)
        return xla_remat.RematPoint(limit, m, flops, None)
    own = point(None, 1000, 100)
    same = [point(800, 900, 150), point(700, 900, 150)]
    far = point(600, 2000, 120)                 # over the budget by more than order can save
    fits = point(500, 700, 300)
    dearer = point(400, 650, 400)               # more FLOPs than XLA's pick, which fits
    got = gpu_budget.remat_candidates([own, *same, far, fits, dearer], 800)
    assert [(p.limit_bytes, p.flops) for p in got] == [(800, 150), (500, 300)]
    assert gpu_budget.remat_candidates([own], 800) == []


@pytest.mark.slow
@needs_plugin
def test_plan_meets_a_budget_with_xlas_remat_under_our_order_where_xla_alone_cannot(monkeypatch):
    """Through ``olla_jax.plan``: with our recomputation left out (it gives
    back the plan it got), a budget 45 MiB of temp that XLA's remat misses
    (48 MiB at best) is met by XLA's program at a higher limit (52 MiB there)
    under our order and placement, at XLA's FLOPs there; before, the call
    raised BudgetNotMet."""
    import olla_jax
    from olla_jax import budget as budget_lib
    monkeypatch.setattr(budget_lib, "recompute_to_budget", lambda result, *a, **k: result)
    io = sum(4 * 512 * 512 for _ in range(6)) * 2 + 4 * 2048 * 512   # arguments + outputs
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = olla_jax.plan(_mlp_step, *MLP_ARGS, backend="gpu:h100", time_limit_s=8,
                            memory_budget=io + 45 * 2**20)
    assert got.engine.startswith("xla-remat+") and got.runs_temp_bytes <= 45 * 2**20
    assert got.extra_flops > 0 and got.backend == "gpu:h100"
    assert "3 sides" in got.notes[-1], got.notes
    assert got.executable_bytes is not None
