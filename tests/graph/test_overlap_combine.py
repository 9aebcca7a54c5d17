"""Combined collectives: found, and the uncombined compile added as a baseline."""

from __future__ import annotations

import importlib
import warnings

import pytest

from olla_jax.capture import gpu

plan_lib = importlib.import_module("olla_jax.plan")   # olla_jax.plan is also the function

pytestmark = pytest.mark.skipif(gpu.cuda_plugin() is None,
                                reason="jax's CUDA plugin is not installed")


def test_combined_step_gets_an_uncombined_baseline_and_the_same_exposure_both_ways():
    from jax.sharding import PartitionSpec as P

    from olla_jax import dumps
    from olla_jax.capture.base import Backend
    from olla_jax.graph import collectives, model, overlap
    from small_steps import dp_args, dp_step

    args = dp_args()
    spmd = dict(num_devices=2, in_shardings=([P("x")] * 4, P("x"), P("x")))
    step = plan_lib._step(dp_step, args, {}, Backend.parse("gpu:h100"), (), (), spmd)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        caps = plan_lib._baselines(step, Backend.parse("gpu:h100"), None, spmd)
    default = dumps.parse_hlo_proto(caps[0].hlo_proto).hlo_module
    assert collectives.combined_pairs(default)   # XLA combined the layers' collectives
    assert [c.scheduler for c in caps] == ["default", plan_lib.UNCOMBINED]
    uncombined = dumps.parse_hlo_proto(caps[1].hlo_proto).hlo_module
    assert not collectives.combined_pairs(uncombined)
    assert len(collectives.async_pairs(uncombined)) > len(collectives.async_pairs(default))
    # XLA's order's exposure read from the module's schedule = from the graph.
    cost = overlap.device_cost(gpu._target_path("h100").read_text())
    graph = model.build(caps[0].hlo_proto, caps[0].values_text, caps[0].live_range_text)
    by_graph = overlap.step_model(default, graph, collectives.async_pairs(default), cost, 2).xla
    by_schedule = overlap.module_exposure(default, cost, 2)
    assert by_schedule.exposed_s == pytest.approx(by_graph.exposed_s)
    assert by_schedule.comm_s == pytest.approx(by_graph.comm_s) and by_schedule.comm_s > 0
