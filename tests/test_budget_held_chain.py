"""``budget.held_at_peak`` under a chain of copies: a copy made just after
its operand's copy reads that copy (``recompute_plan.add_entry_picks``), so
the operand's own place is not kept alive until then, and the live bytes
named at the peak are the plan's own (``RecomputePlan.arena_live``)."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import pytest

from olla_jax import budget


def chained(x, w, u, w1, v1, o):
    h = x @ w                                       # read by tanh, and late
    g = jnp.tanh(h)                                 # read by a dot, and late with h
    s = jnp.sum(g @ u)
    t = jnp.cos(jnp.sin((x * s) @ w1) @ v1) @ o     # the peak, where h and g idle
    return jnp.sum(h * g * t[:, None])


def _args():
    k = jax.random.split(jax.random.PRNGKey(0), 6)
    return (jax.random.normal(k[0], (256, 128)), jax.random.normal(k[1], (128, 512)) / 8,
            jax.random.normal(k[2], (512, 8)), jax.random.normal(k[3], (128, 1024)),
            jax.random.normal(k[4], (1024, 2048)) / 32, jax.random.normal(k[5], (2048,)))


@pytest.fixture(scope="module")
def chain():
    from olla_jax.capture.record import capture
    from olla_jax.graph import model
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cap = capture(chained, *_args())
    graph = model.build(cap.hlo_proto, cap.values_text, cap.live_range_text)
    cands = budget.candidates(graph, cap, feeders=False)
    by_value = {c.value: c for c in cands}
    late = graph.node_index[graph.nodes[graph.xla_order[-1]]]
    # g's candidate reads h's: both read by the last reader of h and g
    pairs = [(by_value[o], c) for c in cands for o in c.operands
             if o in by_value and len(c.users) == 2 and len(by_value[o].users) == 2 and
             set(c.users) & set(by_value[o].users)]
    assert pairs, [graph.nodes[c.producer] for c in cands]
    return cap, graph, pairs[0], late


def test_held_at_peak_reads_a_chains_operand_from_its_copy(chain):
    cap, graph, (h, g), _ = chain
    order = graph.xla_order
    step = {n: i for i, n in enumerate(order)}
    both = set(h.users) & set(g.users)
    reader = max(both, key=step.__getitem__)
    picks = [(c, sorted(c.users, key=step.__getitem__).index(reader)) for c in (h, g)]
    got = budget.plan_of(graph, order, picks)
    assert {r.value for r in got.layout.recomputes} == {h.value, g.value}
    held = budget.held_at_peak(graph, cap, got.layout)
    # (the old count kept h's first place alive until g's copy, across the peak)
    assert held.arena_live == got.arena_live
    assert sum(b for _, b in held.by_reason) == held.arena_live
