"""The overlap cost model (olla_jax/graph/overlap.py) on hand-built cases, and
collective_overlap="hidden" on a small compile-only sharded step."""

from __future__ import annotations

import itertools
import random
import warnings

import pytest

from olla_jax.graph import collectives, overlap
from olla_jax.solve import problem as sp

H100_TEXT = """gpu_device_info { name: "X" core_count: 10 fpus_per_core: 4 clock_rate_ghz: 2.0
  memory_bandwidth: 1000 device_interconnect_info { active_links: 2 }
  matrix_unit_description { rate_infos { key: 16 value { clock_rate_ghz: 1.0 units_per_core: 2
  ops_per_clock: 8 } } } }"""


def test_device_cost_reads_the_description_and_the_link_rule():
    cost = overlap.device_cost(H100_TEXT)
    assert cost.vector_flops == 10 * 4 * 2 * 2.0e9
    assert cost.matrix_flops == {16: 10 * 2 * 1.0e9 * 8 * 2}
    assert cost.memory_bandwidth == 1000
    assert cost.link_bandwidth == 2 * overlap.NVLINK_LINK_BYTES_PER_S_ONE_WAY
    assert overlap.device_cost(H100_TEXT, link_bandwidth=7.0).link_bandwidth == 7.0
    with pytest.raises(overlap.DeviceDescriptionError, match="active_links"):
        overlap.device_cost(H100_TEXT.replace("active_links", "links"))
    with pytest.raises(overlap.DeviceDescriptionError, match="memory_bandwidth"):
        overlap.device_cost(H100_TEXT.replace("memory_bandwidth", "bw"))


def test_shipped_h100_description_gives_nvlink4():
    from olla_jax.capture import gpu
    cost = overlap.device_cost(gpu._target_path("h100").read_text())
    assert cost.link_bandwidth == 450e9           # 18 links x 25 GB/s one way
    assert 9.8e14 < cost.matrix_flops[16] < 1.0e15  # the datasheet's dense BF16


def test_ring_bytes_by_kind_and_group():
    # 8 devices, 800 bytes in: reduce-scatter sends 7/8 of its input, all-reduce twice that.
    assert overlap.link_bytes("reduce-scatter", 800, 100, 8) == 700
    assert overlap.link_bytes("all-gather", 100, 800, 8) == 700
    assert overlap.link_bytes("all-reduce", 800, 800, 8) == 1400
    assert overlap.link_bytes("collective-permute", 800, 800, 8) == 800
    assert overlap.link_bytes("all-reduce", 800, 800, 1) == 0        # nobody to talk to
    assert overlap.link_bytes("copy", 800, 800, 8) == 0              # a host copy: no link time


def C(start, done, seconds):
    return overlap.Collective(start=start, done=done, kind="all-reduce", group=2,
                              link_bytes=seconds, seconds=seconds)


def test_exposed_time_one_collective():
    # nodes: 0 start, 1 compute 3 s, 2 done, 3 compute 1 s; the collective takes 5 s.
    secs = [0, 3.0, 0, 1.0]
    e = overlap.exposure([0, 1, 2, 3], secs, [C(0, 2, 5.0)])
    assert e.exposed_s == pytest.approx(2.0) and e.per_collective == (pytest.approx(2.0),)
    assert e.compute_s == 4.0 and e.comm_s == 5.0 and e.step_s == pytest.approx(6.0)
    assert overlap.exposure([0, 2, 1, 3], secs, [C(0, 2, 5.0)]).exposed_s == pytest.approx(5.0)
    assert overlap.exposure([0, 1, 3, 2], secs, [C(0, 2, 4.0)]).exposed_s == 0.0


def test_exposed_time_two_collectives_share_the_link_in_start_order():
    # 0 start A, 1 start B, 2 compute 4 s, 3 done A, 4 done B; A 3 s, B 3 s on one link:
    # B runs from 3 to 6, the compute ends at 4, so B waits 2 s and A none.
    secs = [0, 0, 4.0, 0, 0]
    e = overlap.exposure([0, 1, 2, 3, 4], secs, [C(0, 3, 3.0), C(1, 4, 3.0)])
    assert e.per_collective == (0.0, pytest.approx(2.0))
    # Each alone would be hidden: the sum of max(0, comm - compute) would say 0.
    assert all(overlap.exposure([0, 1, 2, 3, 4], secs, [c]).exposed_s == 0
               for c in (C(0, 3, 3.0), C(1, 4, 3.0)))


def _random_dag(rng, n):
    edges = {(u, v) for u, v in itertools.combinations(range(n), 2) if rng.random() < 0.15}
    return sorted(edges)


def test_retime_hides_a_collective_and_keeps_every_edge():
    # x (1 s) -> start -> done -> y; a, b, c (2 s each) independent of the pair.
    #   0 x, 1 start, 2 done, 3 y, 4 a, 5 b, 6 c; the collective takes 3 s.
    secs = [1.0, 0, 0, 1.0, 2.0, 2.0, 2.0]
    edges = [(0, 1), (1, 2), (2, 3)]
    order = [0, 1, 2, 3, 4, 5, 6]
    coll = [C(1, 2, 3.0)]
    assert overlap.exposure(order, secs, coll).exposed_s == 3.0
    r = overlap.retime(order, secs, coll, edges, 0.0, lambda o: 0)
    assert r.exposure.exposed_s == 0.0 and r.moves >= 1
    sp.check_topological(sp.OrderProblem(7, tuple(edges), (), (0,) * 7), r.order)
    assert r.order.index(3) > r.order.index(2)        # y still after the done
    # Only as far as needed: two of the 2 s nodes hide 3 s, the third stays out.
    between = r.order[r.order.index(1) + 1:r.order.index(2)]
    assert sum(secs[n] for n in between) == 4.0


def test_retime_picks_the_move_cheapest_in_memory():
    # 0 a (2 s), 1 start, 2 done, 3 b (2 s); the collective takes 2 s: moving the
    # done after b or the start before a hides it; the memory cost decides.
    secs, edges, coll = [2.0, 0, 0, 2.0], [(1, 2)], [C(1, 2, 2.0)]
    late_done_is_dear = overlap.retime([0, 1, 2, 3], secs, coll, edges, 0.0,
                                       lambda o: list(o).index(2))
    assert late_done_is_dear.order == (1, 0, 2, 3) and late_done_is_dear.exposure.exposed_s == 0
    early_start_is_dear = overlap.retime([0, 1, 2, 3], secs, coll, edges, 0.0,
                                         lambda o: 10 - list(o).index(1))
    assert early_start_is_dear.order == (0, 1, 3, 2)
    assert early_start_is_dear.memory == 9
    # Within the allowance already: nothing moves.
    kept = overlap.retime([0, 1, 2, 3], secs, coll, edges, 2.0, lambda o: 0)
    assert kept.order == (0, 1, 2, 3) and kept.moves == 0
    late = overlap.retime([0, 1, 2, 3], secs, coll, edges, 0.0, lambda o: 0, deadline=0.0)
    assert late.moves == 0   # past its deadline: nothing moves


def test_retime_never_breaks_dependencies_on_random_dags():
    rng = random.Random(0)
    for trial in range(30):
        n = 14
        edges = _random_dag(rng, n)
        order = sp.topological_order(n, edges)
        secs = [rng.choice([0.0, 0.5, 1.0, 2.0]) for _ in range(n)]
        pairs = [(u, v) for u, v in edges if v - u >= 2][:3]
        colls = []
        for u, v in pairs:
            secs[u] = secs[v] = 0.0
            colls.append(C(u, v, rng.choice([1.0, 3.0])))
        if not colls:
            continue
        problem = sp.OrderProblem(n, tuple(edges), (), (0,) * n)
        before = overlap.exposure(order, secs, colls).exposed_s
        r = overlap.retime(order, secs, colls, edges, 0.0, lambda o: 0)
        sp.check_topological(problem, r.order)
        assert r.exposure.exposed_s <= before
        assert r.exposure == overlap.exposure(r.order, secs, colls)


def test_exposure_modes_are_checked():
    assert collectives.keep_fraction("hidden") == 0.0
    assert collectives.exposure_mode("hidden")
    assert collectives.exposure_mode(collectives.ExposedAtMost(1e-3))
    assert not collectives.exposure_mode("keep") and not collectives.exposure_mode(0.5)
    for bad in (-1.0, "1", True, float("nan")):
        with pytest.raises(ValueError, match="ExposedAtMost"):
            collectives.ExposedAtMost(bad)


def test_hidden_mode_on_a_sharded_step_exposes_no_more_than_xla():
    from olla_jax.capture import gpu
    if gpu.cuda_plugin() is None:
        pytest.skip("jax's CUDA plugin is not installed")
    from jax.sharding import PartitionSpec as P

    import olla_jax
    from small_steps import dp_args, dp_step

    ARGS = dp_args()
    SHARDING = ([P("x")] * 4, P("x"), P("x"))  # FSDP-style: weights gathered per layer
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = olla_jax.plan(dp_step, *ARGS, backend="gpu:h100", time_limit_s=3, num_devices=2,
                          in_shardings=SHARDING, collective_overlap="hidden")
    s = p.settings
    assert s["async_pairs"] >= 1 and s["comm_s"] > 0 and s["compute_s"] > 0
    assert s["exposed_s"] <= s["exposed_s_xla"] + 1e-12
    assert s["exposed_allowance_s"] == s["exposed_s_xla"]
    assert p.planned_temp_bytes <= p.xla_best_temp_bytes
    # The cost model's view of the step's pairs: FSDP on 2 devices gathers
    # weights and reduces gradients over groups of 2, each moving half its data.
    from olla_jax import dumps
    module = dumps.parse_hlo_proto(p.capture.hlo_proto).hlo_module
    pairs = collectives.async_pairs(module)
    cost = overlap.device_cost(gpu._target_path("h100").read_text())
    colls = overlap.collectives(module, pairs, p.graph.node_index, cost, 2)
    assert len(colls) == len(pairs) and {c.group for c in colls} == {2}
    assert {c.kind for c in colls} & {"all-gather", "reduce-scatter", "all-reduce"}
    gathers = [c for c in colls if c.kind == "all-gather"]
    assert gathers and all(c.link_bytes > 0 and c.link_bytes % (256 * 256 * 4 / 2) == 0
                           for c in gathers)   # halves of 256x256 f32 weights
    assert s["comm_s"] == pytest.approx(sum(c.seconds for c in colls))
