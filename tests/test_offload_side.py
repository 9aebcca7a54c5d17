"""Host offloading as a side of a memory budget (``olla_jax.plan(...,
offload=True)``): refused with the reason where it cannot work, kept only
where it meets the budget with fewer extra FLOPs or where no side meets it,
its host bytes and copies in the notes (compile-only H100)."""

from __future__ import annotations

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
