"""budget.recompute_floor never above a plan that exists, on a step with a loop.

Gradient accumulation over a lax.scan: XLA puts most of the loop body's
values in the output buffers (written only after the loop), so the body
needs almost no temp.  The threshold problems (``ScheduleGraph.threshold_problem``)
count in the arena only units larger than their threshold, and no region that
small as idle; they counted the loop body's units of every size in the nodes'
extra all the same, and the floor (and the order bound) came out far above
the plan: 60.81 MiB against a verified 10.31 on grad_accum small."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import pytest

import olla_jax
from olla_jax import budget
from olla_jax.solve import bounds


def _accumulating_step(ws, xs):
    def loss(ws, x):
        h = x
        for w in ws:
            h = jnp.tanh(h @ w)
        return (h ** 2).mean()

    def body(acc, x):
        return jax.tree.map(jnp.add, acc, jax.grad(loss)(ws, x)), None
    acc, _ = jax.lax.scan(body, jax.tree.map(jnp.zeros_like, ws), xs)
    # three outputs per weight (an optimizer's state, say): room for the body
    return [w - 0.1 * a for w, a in zip(ws, acc)], [a * a for a in acc], [a + 1 for a in acc]


@pytest.fixture(scope="module")
def scanned():
    ws = [jnp.full((128, 128), 0.01) for _ in range(4)]
    xs = jnp.ones((4, 64, 128))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", olla_jax.PlanWarning)
        plan = olla_jax.plan(_accumulating_step, ws, xs, time_limit_s=1)
    return plan


def test_loop_bodies_in_output_space_keep_the_floor_below_the_plan(scanned):
    graph = scanned.graph
    assert any(graph.block_length(n) > 1 for n in range(len(graph.nodes)))
    temp = scanned.runs_temp_bytes      # the executable that runs (XLA's, here: 80 bytes)
    # the loop body's units are in the nodes' extra, larger than this plan's temp:
    # counted in full at every threshold, they made the bound exceed it
    assert max(graph.order_problem_for_bound.node_extra) > temp
    for problem in graph.bound_problems():
        assert bounds.simple_bound(problem).value <= temp
        assert bounds.min_cut_bound(problem, time_limit_s=1).value <= temp
    cands = budget.candidates(graph, scanned.capture)
    assert budget.recompute_floor(graph, cands, time_limit_s=1) <= temp
    assert budget.recompute_floor(graph, [], time_limit_s=1) <= temp


def test_a_threshold_counts_only_loop_units_above_it(scanned):
    graph = scanned.graph
    sizes = sorted({0, *graph.order_problem().region_sizes})
    assert len(sizes) > 1
    base = graph.order_problem_for_bound.node_extra
    assert graph.threshold_problem(0, for_bound=True).node_extra == base
    top = graph.threshold_problem(sizes[-1], for_bound=True).node_extra
    inner = graph._inner_units()
    # every loop-body unit here is at most the largest region: none counts there
    assert all(graph.units[u].size <= sizes[-1] for u in inner)
    assert all(x <= 0 for x in top) and max(base) > 0
