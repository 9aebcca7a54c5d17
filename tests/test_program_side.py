"""Program recomputation as a side of a GPU memory budget
(``gpu_budget.program_side``, ``to_budget(plan_program=...)``): asked for XLA's
temp (the budget less arguments and outputs), the rewritten step planned by the
callback, kept only where it beats the other sides, its bits verdict in the
notes.  Fakes only: no compile."""

from __future__ import annotations

import dataclasses
import types

import pytest

pytest.importorskip("jax")

from olla_jax import gpu_budget, program_remat  # noqa: E402
from tests.test_gpu_budget import _fake_plan  # noqa: E402

BITS = ("same as the step compiled with CSE off; the step's own CSE-off compile differs "
        "from jax.jit's in 92 of 1024 bytes of its output 0 (float32[256], the first that differs)")


def _lever(monkeypatch, flops: int, chosen=("e3.0: dot_general",), asked=None):
    def lever(fn, *args, budget, **kw):
        if asked is not None:
            asked.append(budget)
        return types.SimpleNamespace(chosen=chosen, fn="rewritten step", temp=760, candidates=4,
                                     extra_flops=flops, bits=BITS, seconds=12.0, tried=((1, 760, flops),),
                                     compiler_options={})
    monkeypatch.setattr(program_remat, "program_remat", lever)


def _sides(monkeypatch):
    """``to_budget``'s fakes: ours at 850 bytes with 5 extra FLOPs (over an
    800-byte budget), XLA's remat at 700 with 200."""
    from olla_jax import budget as budget_lib
    from olla_jax import xla_remat
    from olla_jax.capture import record

    def memory(temp):
        return types.SimpleNamespace(total=temp, temp=temp, argument=0, output=0, alias=0)
    monkeypatch.setattr(xla_remat, "search", lambda *a, **k: [
        xla_remat.RematPoint(None, memory(1000), 100, None),
        xla_remat.RematPoint(500, memory(700), 300, None)])
    monkeypatch.setattr(record, "serialize_executable", lambda compiled: b"")
    monkeypatch.setattr(budget_lib, "recompute_to_budget", lambda result, budget, **kw: (
        _fake_plan(850, solve_seconds=result.solve_seconds + 10.0, extra_flops=5)))

    @dataclasses.dataclass(frozen=True)
    class Compiled:
        executable: object = None
    return _fake_plan(950, compiled=Compiled())


def _plan_program(limits):
    def plan(fn, limit_s, **kw):
        assert fn == "rewritten step"
        limits.append(limit_s)
        return _fake_plan(740, xla_best_temp_bytes=760, solve_seconds=3.0)
    return plan


def test_program_recomputation_is_kept_where_it_meets_the_budget_with_fewest_flops(monkeypatch):
    result = _sides(monkeypatch)
    _lever(monkeypatch, flops=30)
    limits: list[float] = []
    got = gpu_budget.to_budget(result, 800, lambda x: x, (), time_limit_s=40.0,
                               plan_program=_plan_program(limits))
    assert (got.runs_total_bytes, got.extra_flops) == (740, 30)
    assert got.engine == "program-remat+list" and got.xla_best_temp_bytes == 1000
    assert limits and limits[0] <= 40.0 - 10.0
    said = got.notes[-1]
    assert "3 sides" in said and "program recomputation: total" in said
    assert f"(kept; bits {BITS})" in said
    assert any("ordered and placed by us" in n and BITS in n for n in got.notes)


def test_program_recomputation_with_more_flops_leaves_the_kept_plan_as_it_was(monkeypatch):
    result = _sides(monkeypatch)
    before = gpu_budget.to_budget(result, 800, lambda x: x, ())
    _lever(monkeypatch, flops=300)
    got = gpu_budget.to_budget(result, 800, lambda x: x, (), plan_program=_plan_program([]))
    assert (got.engine, got.runs_total_bytes, got.extra_flops) == (
        before.engine, before.runs_total_bytes, before.extra_flops) == ("xla-remat", 700, 200)
    assert "program recomputation: total" in got.notes[-1] and BITS in got.notes[-1]


def test_the_budget_it_asks_for_is_xlas_temp_the_footprint_less_arguments_and_outputs(
        monkeypatch):
    asked: list[int] = []
    _lever(monkeypatch, flops=30, asked=asked)
    result = _fake_plan(950, argument_bytes=300, output_bytes=100)
    side, seconds, note = gpu_budget.program_side(result, 1200, lambda x: x, (),
                                                  _plan_program([]))
    assert asked == [1200 - 400] and side is not None and note == ""
    assert side.plan.settings["program_remat_bits"] == BITS
    assert seconds["solve"] == 3.0
    side, _, note = gpu_budget.program_side(result, 400, lambda x: x, (), _plan_program([]))
    assert side is None and "arguments and outputs alone" in note


def test_nothing_chosen_is_no_side_and_says_why(monkeypatch):
    _lever(monkeypatch, flops=0, chosen=())
    side, _, note = gpu_budget.program_side(_fake_plan(950), 800, lambda x: x, (),
                                            _plan_program([]))
    assert side is None and note.startswith("program recomputation: nothing kept") and BITS in note


def test_program_recomputation_is_not_tried_after_a_free_fit_or_without_time():
    free = gpu_budget.Side("ours", types.SimpleNamespace(runs_total_bytes=700, extra_flops=0))
    over = gpu_budget.Side("ours", types.SimpleNamespace(runs_total_bytes=900, extra_flops=5))
    ran: list[float] = []
    got = gpu_budget.program_after(free, 30.0, ran.append, 800)
    assert got[0] is None and ran == [] and "no extra FLOPs" in got[2]
    got = gpu_budget.program_after(over, gpu_budget.REMAT_MIN_S / 2, ran.append, 800)
    assert got[0] is None and ran == [] and "s of the limit left" in got[2]
    gpu_budget.program_after(over, 10.0, ran.append, 800)
    assert ran == [10.0]


@pytest.mark.parametrize("options, says", [
    (dict(backend="cpu", memory_budget="1MiB"), "compile-only GPU"),
    (dict(memory_budget=None), "side of a memory budget"),
    (dict(memory_budget="1MiB", recompute=False), "recompute=True"),
    (dict(memory_budget="1MiB", program_remat=1), "True or False"),
    (dict(memory_budget="1MiB", num_devices=2), "single-device")])
def test_program_remat_options_are_checked_before_compiling(options, says):
    import jax.numpy as jnp

    import olla_jax
    args = (jax_struct((64, 64)),)
    with pytest.raises((ValueError, TypeError), match=says):
        olla_jax.plan(jnp.tanh, *args, **{"backend": "gpu:h100", "program_remat": True,
                                          **options})


def jax_struct(shape):
    import jax
    import jax.numpy as jnp
    return jax.ShapeDtypeStruct(shape, jnp.float32)


@pytest.mark.parametrize("options, error, says", [
    (dict(memory_budget="1MiB"), ValueError, "compile-only GPU targets such as "
                                             "backend='gpu:h100', not 'cpu'"),
    (dict(), ValueError, "not 'cpu'"),
    (dict(memory_budget="1MiB", program_remat=1), TypeError, "True or False")])
def test_jit_takes_program_remat_and_refuses_it_as_plan_does(options, error, says):
    """olla_jax.jit runs the step here (cpu or the local gpu): plan's rule
    (compile-only GPU targets) refuses it at decoration, before any compile."""
    import jax.numpy as jnp

    import olla_jax
    with pytest.raises(error, match=says):
        olla_jax.jit(jnp.tanh, backend="cpu", **{"program_remat": True, **options})


def test_jit_without_program_remat_keeps_its_cache_key():
    import jax.numpy as jnp

    import olla_jax
    assert (olla_jax.jit(jnp.tanh, backend="cpu", program_remat=False)._identity
            == olla_jax.jit(jnp.tanh, backend="cpu")._identity)


def test_program_remat_compiles_are_kept_across_budgeted_calls_on_one_program(monkeypatch):
    """plan()'s GPU sides get one program_remat memo per program (the step's
    module fingerprint, target, argument roles, options), so a second budget
    reuses the first's compiles; clear_cache() and OLLA_JAX_PLAN_MEMO=0 drop it."""
    import importlib

    import olla_jax
    from olla_jax.capture.base import Backend
    plan_lib = importlib.import_module("olla_jax.plan")
    memos = []
    monkeypatch.setattr(gpu_budget, "to_budget",
                        lambda result, budget, *a, program_memo=None, **kw: memos.append(
                            program_memo) or result)

    def stage(hlo_text, budget, program_remat=True, options=None):
        result = types.SimpleNamespace(capture=types.SimpleNamespace(hlo_text=hlo_text))
        step = types.SimpleNamespace(fn=None, args=(), static_argnums=(), donate_argnums=())
        plan_lib._recompute_stage(result, step, Backend.parse("gpu:h100"), {}, None, budget, 10.0,
                                  "keep", options, "flops", False, 2, lambda *a: None,
                                  program_remat=program_remat)
    olla_jax.clear_cache()
    stage("HloModule a", 100)
    stage("HloModule a", 80)
    stage("HloModule b", 80)
    stage("HloModule a", 80, options={"xla_foo": 1})
    stage("HloModule a", 80, program_remat=False)
    assert memos[0] is memos[1] and isinstance(memos[0], dict)
    assert memos[2] is not memos[0] and memos[3] is not memos[0] and memos[4] is None
    olla_jax.clear_cache()
    stage("HloModule a", 100)
    assert memos[5] is not memos[0]
    monkeypatch.setenv("OLLA_JAX_PLAN_MEMO", "0")
    stage("HloModule a", 100)
    assert memos[6] is None
