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
from olla_jax.capture import gpu  # noqa: E402

needs_plugin = pytest.mark.skipif(gpu.cuda_plugin() is None,
                                  reason="jax's CUDA plugin is not installed")
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
