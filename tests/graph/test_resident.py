"""Lower bounds from what must be resident at one step (olla_jax.graph.resident):
valid (never above XLA's temp or a placement of XLA's order), and meaningful
where the min-cut relaxation degenerates: a step inside one while loop, a
model whose many outputs' idle space the relaxation counts as free."""

from __future__ import annotations

import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import examples
import olla_jax
from olla_jax import budget
from olla_jax.capture import capture
from olla_jax.graph import model, resident
from olla_jax.solve import place
from olla_jax.solve.bounds import dinic_max_flow

# --- parking: the max-flow with nested eligibility ---------------------------


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 90), max_size=6), st.lists(st.integers(0, 120), max_size=4))
def test_parkable_is_the_max_flow_of_units_into_regions_they_fit(sizes, caps):
    # source -> unit (its size) -> every region at least its size -> sink (capacity)
    n_units, n_regions = len(sizes), len(caps)
    tails, heads, capacity = [], [], []
    for i, s in enumerate(sizes):
        tails.append(0), heads.append(2 + i), capacity.append(s)
        for r, c in enumerate(caps):
            if s <= c:
                tails.append(2 + i), heads.append(2 + n_units + r), capacity.append(10**9)
    for r, c in enumerate(caps):
        tails.append(2 + n_units + r), heads.append(1), capacity.append(c)
    flow = dinic_max_flow(2 + n_units + n_regions, np.array(tails, dtype=np.int64),
                          np.array(heads, dtype=np.int64), np.array(capacity, dtype=np.int64), 0, 1)
    assert resident._parkable(np.array(sizes, dtype=np.int64), np.array(caps, dtype=np.int64)) == flow


def test_parking_never_beats_a_real_packing():
    # Two units of 6 cannot share a region of 10, and no unit fits a region of 5.
    assert resident._parkable(np.array([6, 6]), np.array([10, 5])) == 10
    assert resident._parkable(np.array([6]), np.array([5, 5])) == 0


# --- steps ---------------------------------------------------------------------

D_IN, D_H, D_OUT, MICRO, ROWS = 64, 512, 16, 4, 8


def scan_step(p, x, y):
    """Gradient accumulation over micro-batches with lax.scan: XLA's entry is
    little more than one while loop; its body holds the work."""
    def micro(acc, xy):
        def loss(p):
            h = jnp.tanh(xy[0] @ p["w1"] + p["b1"])
            return jnp.mean((h @ p["w2"] - xy[1]) ** 2)
        value, grads = jax.value_and_grad(loss)(p)
        return jax.tree.map(jnp.add, acc, (value, grads)), None

    zero = (jnp.zeros(()), jax.tree.map(jnp.zeros_like, p))
    (total, grads), _ = jax.lax.scan(micro, zero, (x, y))
    return jax.tree.map(lambda a, b: a - 0.01 * b, p, grads), total


def scan_args():
    k = jax.random.split(jax.random.PRNGKey(0), 4)
    p = {"w1": jax.random.normal(k[0], (D_IN, D_H)), "b1": jnp.zeros(D_H),
         "w2": jax.random.normal(k[1], (D_H, D_OUT))}
    return (p, jax.random.normal(k[2], (MICRO, ROWS, D_IN)),
            jax.random.normal(k[3], (MICRO, ROWS, D_OUT)))


C, LAYERS = 64, 3


def conv_step(ws, x):
    """SGD on a stack of equal 3x3 convolutions, at a size where the weights
    (outputs) dwarf the activations (the shape of a Keras ResNet-50 on small
    images): the min-cut relaxation parks every gradient in some idle output."""
    def loss(ws):
        h = x
        for w in ws:
            h = jax.nn.relu(jax.lax.conv_general_dilated(h, w, (1, 1), "SAME",
                                                         dimension_numbers=("NHWC", "HWIO", "NHWC")))
        return jnp.mean(h ** 2)
    grads = jax.grad(loss)(ws)
    return [w - 0.01 * g for w, g in zip(ws, grads)]


def conv_args():
    k = jax.random.split(jax.random.PRNGKey(1), LAYERS + 1)
    return ([0.1 * jax.random.normal(k[i], (3, 3, C, C)) for i in range(LAYERS)],
            jax.random.normal(k[-1], (1, 4, 4, C)))


@functools.lru_cache(maxsize=None)
def graph_of(name: str):
    if name == "scan":
        cap = capture(scan_step, *scan_args(), donate_argnums=(0,))
    elif name == "conv":
        cap = capture(conv_step, *conv_args())
    else:
        step = examples.get(name, "tiny")
        cap = capture(step.fn, *step.args, static_argnums=step.static_argnums,
                      donate_argnums=step.donate_argnums)
    return model.build(cap.hlo_proto, cap.values_text, cap.live_range_text)


def xla_order_arena(graph) -> int:
    """The arena best-fit needs for XLA's own order: an upper bound of the optimum."""
    pp, _ = graph.placement_problem(graph.xla_order)
    return place.best_fit(pp).arena_size


def assert_valid(graph) -> int:
    floor = resident.floor_bound(graph)
    own = budget.working_set_bound(graph)[0]
    xla_temp = graph.allocations[graph.temp_allocation].size if graph.temp_allocation >= 0 else 0
    ceiling = min(xla_temp, xla_order_arena(graph))
    for value in (floor.value, own, resident.resident_bound(graph).value,
                  resident.last_writer_bound(graph).value):
        assert 0 <= value <= ceiling
    assert own <= resident.resident_bound(graph).value  # fewer units surely live without `across`
    return floor.value


FAST = ("scan", "conv", "lstm")   # each compiles its step: the rest (grad_accum 6 s) are slow


@pytest.mark.parametrize("name", FAST)
def test_bound_never_exceeds_xla_or_a_placement_of_its_order(name):
    assert_valid(graph_of(name))


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in examples.names() if n not in FAST])
def test_bound_never_exceeds_xla_or_a_placement_of_its_order_slow(name):
    assert_valid(graph_of(name))


def test_a_scan_steps_bound_holds_its_loop_carried_accumulator():
    graph = graph_of("scan")
    # The donated parameters' buffers hold them until the update after the
    # loop, so the accumulated gradients (as large as the parameters) sit in
    # the arena for the whole loop; the loop body needs more on top.
    params = 4 * (D_IN * D_H + D_H + D_H * D_OUT)
    found = resident.resident_bound(graph)
    assert found.value >= params > 1024
    assert graph.block_length(found.node) > 1, "the peak is inside the loop's block"
    # The budget's working set (no values across nodes) sees the same loop.
    assert budget.working_set_bound(graph)[0] >= params
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", olla_jax.PlanWarning)
        plan = olla_jax.plan(scan_step, *scan_args(), donate_argnums=(0,), time_limit_s=2,
                             feed_back=False)
    assert params <= plan.lower_bound_bytes <= plan.planned_temp_bytes <= plan.xla_best_temp_bytes
    assert plan.gap < 0.5


def test_the_last_weight_update_keeps_its_gradient_in_the_arena():
    graph = graph_of("conv")
    weight = 4 * 3 * 3 * C * C
    # Whichever update runs last, the other updated weights fill their outputs,
    # so its gradient (a convolution's result, as large as a weight) has no
    # idle output to sit in.
    assert resident.last_writer_bound(graph).value >= weight
    assert resident.floor_bound(graph).value >= weight
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", olla_jax.PlanWarning)
        plan = olla_jax.plan(conv_step, *conv_args(), time_limit_s=2, feed_back=False)
    assert weight <= plan.lower_bound_bytes <= plan.planned_temp_bytes


def test_min_cut_alone_degenerates_on_the_conv_step():
    """What the floor adds: the min-cut relaxation of the same graph proves
    less than one weight (so the test above can fail without it)."""
    from olla_jax.solve import bounds
    graph = graph_of("conv")
    weight = 4 * 3 * 3 * C * C
    proven = max(bounds.min_cut_bound(p, time_limit_s=5).value for p in graph.bound_problems())
    assert proven < weight
