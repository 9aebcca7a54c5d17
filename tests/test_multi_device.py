"""Sharded steps on several compile-only GPUs: async collective pairs and overlap.

Needs jax's CUDA plugin (``pip install '.[gpu]'``), no GPU.
"""

from __future__ import annotations

import warnings

import pytest

jax = pytest.importorskip("jax")
from jax.sharding import PartitionSpec as P  # noqa: E402

import olla_jax  # noqa: E402
from tests.marks import needs_plugin  # noqa: E402
from olla_jax.graph import collectives  # noqa: E402
from small_steps import dp_args, dp_step  # noqa: E402


ARGS = dp_args()
SHARDING = ([P("x")] * 4, P("x"), P("x"))  # FSDP-style: weights gathered per layer


def _plan(overlap):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return olla_jax.plan(dp_step, *ARGS, backend="gpu:h100", time_limit_s=3, num_devices=2,
                             in_shardings=SHARDING, collective_overlap=overlap)


@needs_plugin
def test_keep_holds_xlas_overlap_and_free_may_drop_it():
    keep = _plan("keep")
    assert keep.settings["async_pairs"] >= 1, keep.capture.hlo_text[:2000]
    assert keep.settings["pairs_kept"] == keep.settings["async_pairs"]
    assert keep.planned_temp_bytes <= keep.xla_best_temp_bytes
    if keep.source == "olla_jax":
        order = keep.layout.order_names
        xla = keep.graph.nodes
        for pair in collectives.async_pairs(olla_jax.dumps.parse_hlo_proto(
                keep.capture.hlo_proto).hlo_module):
            inside = xla[xla.index(pair.start) + 1:xla.index(pair.done)]
            s, d = order.index(pair.start), order.index(pair.done)
            assert all(s < order.index(n) < d for n in inside)
        assert keep.settings["overlapped_flops"] >= keep.settings["overlapped_flops_xla"]
        assert keep.executable_bytes is not None  # the per-device executable was rewritten
    free = _plan("free")
    assert free.settings["pairs_kept"] == 0
    assert free.planned_temp_bytes <= keep.planned_temp_bytes


def test_overlap_settings_are_checked():
    assert collectives.keep_fraction("keep") == 1.0
    assert collectives.keep_fraction("free") == 0.0
    assert collectives.keep_fraction(0.25) == 0.25
    for bad in ("some", 1.5, -0.1, True):
        with pytest.raises(ValueError):
            collectives.keep_fraction(bad)
    with pytest.raises(ValueError):
        olla_jax.plan(dp_step, *ARGS, collective_overlap="sometimes")


def test_bad_device_counts_are_refused():
    for bad in (0, -2, "4", 2.0):
        with pytest.raises(ValueError, match="num_devices"):
            olla_jax.plan(dp_step, *ARGS, backend="gpu:h100", num_devices=bad,
                          in_shardings=SHARDING)


def test_sharded_steps_need_a_gpu_target():
    from olla_jax.capture import CaptureError
    with pytest.raises(CaptureError, match="compile-only GPU"):
        olla_jax.plan(dp_step, *ARGS, backend="cpu", num_devices=2, in_shardings=SHARDING)


def test_pairs_to_keep_takes_the_most_overlapped_first():
    pairs = [collectives.AsyncPair("s1", "d1", "all-reduce-start"),
             collectives.AsyncPair("s2", "d2", "all-gather-start")]
    nodes = ["s1", "a", "d1", "s2", "b", "c", "d2"]
    weights = {"a": 10, "b": 30, "c": 30}
    assert collectives.overlapped_flops(nodes, pairs, weights) == 70
    assert collectives.pairs_to_keep(nodes, pairs, weights, 0.5) == [pairs[1]]
    assert set(collectives.pairs_to_keep(nodes, pairs, weights, 0.9)) == set(pairs)
    assert collectives.pairs_to_keep(nodes, pairs, weights, 0.0) == []
    edges = collectives.overlap_edges(nodes, [pairs[0]])
    assert set(edges) == {(0, 1), (1, 2)}


@needs_plugin
@pytest.mark.slow
def test_a_budget_below_the_plan_is_met_by_recomputation_on_a_sharded_step():
    free = _plan("free")
    budget = int(0.8 * free.runs_total_bytes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = olla_jax.plan(dp_step, *ARGS, backend="gpu:h100", time_limit_s=3, num_devices=2,
                          in_shardings=SHARDING, collective_overlap="free", memory_budget=budget)
    assert p.runs_total_bytes <= budget < free.runs_total_bytes
    assert p.extra_flops > 0 and p.executable_bytes is not None   # kernel copies, built


def test_in_shardings_count_is_checked_against_keyword_arguments_before_compiling():
    def step(params, x, *, y):
        return dp_step(params, x, y)
    with pytest.raises(ValueError, match=r"3 dynamic arguments \(argument 0, argument 1, "
                                         r"keyword 'y'\).*static_argnames"):
        olla_jax.plan(step, *ARGS[:2], kwargs={"y": ARGS[2]}, backend="gpu:h100",
                      num_devices=2, in_shardings=SHARDING[:2])


@needs_plugin
def test_a_budget_search_compiles_the_sharded_step_once(monkeypatch):
    import importlib
    from olla_jax.capture import gpu
    planner = importlib.import_module("olla_jax.plan")
    compiles, plans = [], []
    compile_for_target, plan_once = gpu.compile_for_target, planner._plan

    def counted(*args, **kwargs):
        compiles.append(kwargs.get("compiler_options"))
        return compile_for_target(*args, **kwargs)

    def planned(*args, **kwargs):
        plans.append(kwargs.get("collective_overlap"))
        return plan_once(*args, **kwargs)
    monkeypatch.setattr(gpu, "compile_for_target", counted)
    monkeypatch.setattr(planner, "_plan", planned)
    with warnings.catch_warnings(), pytest.raises(olla_jax.BudgetNotMet) as err:
        warnings.simplefilter("ignore")
        olla_jax.plan(dp_step, *ARGS, backend="gpu:h100", time_limit_s=4, num_devices=2,
                      in_shardings=SHARDING, memory_budget=1024, recompute=False)
    plan = err.value.plan
    assert len(plans) > 1                          # overlap given up stage by stage ...
    assert len(compiles) == len(plan.settings["schedulers"])   # ... on the first compiles
    assert plan.capture_seconds > 0


@needs_plugin
def test_a_shard_map_over_a_local_mesh_is_told_to_use_the_targets_mesh():
    """shard_map over this machine's devices cannot be compiled for H100s: the
    error says which mesh to build instead, and is still jax's ValueError."""
    from functools import partial
    from olla_jax.capture import gpu
    local = jax.make_mesh((1,), ("x",))

    def step(w):
        @partial(jax.shard_map, mesh=local, in_specs=P("x"), out_specs=P("x"))
        def inner(w):
            return jnp.tanh(w)
        return inner(w)
    import jax.numpy as jnp
    with pytest.raises(ValueError, match=r"gpu_mesh\('h100', 2, \{'x': 2\}\)"):
        olla_jax.plan(step, jax.ShapeDtypeStruct((8, 8), "float32"), backend="gpu:h100",
                      num_devices=2, in_shardings=P("x"))
    # the mesh it names works
    mesh = gpu.gpu_mesh("h100", 2, {"x": 2})

    def good(w):
        return jax.shard_map(jnp.tanh, mesh=mesh, in_specs=P("x"), out_specs=P("x"))(w)
    olla_jax.plan(good, jax.ShapeDtypeStruct((8, 8), "float32"), backend="gpu:h100",
                  num_devices=2, in_shardings=P("x"), time_limit_s=1)
