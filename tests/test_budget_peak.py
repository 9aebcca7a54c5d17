"""What holds the arena's peak, and why it may not be recomputed
(``budget.refusals``, ``budget.held_at_peak``): the reasons a missed budget's
row gives."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import pytest

import olla_jax
from olla_jax import budget


def _plan(fn, *args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", olla_jax.PlanWarning)
        return olla_jax.plan(fn, *args, time_limit_s=1, feed_back=False, **kw)


def _scan_step(w, xs):
    """A scan whose stacked per-step results (made inside the loop) are read
    after it: the loop's results hold the arena."""
    def body(h, x):
        h = jnp.tanh(h @ w + x)
        return h, h
    _, hs = jax.lax.scan(body, jnp.zeros((64, 256)), xs)
    return jnp.sum(jnp.tanh(hs) * hs)


@pytest.fixture(scope="module")
def scan_plan():
    return _plan(_scan_step, jnp.ones((256, 256)) * 0.01, jnp.ones((16, 64, 256)))


def test_refusals_and_candidates_split_the_values(scan_plan):
    graph, cap = scan_plan.graph, scan_plan.capture
    picked = {c.value for c in budget.candidates(graph, cap)}
    why = budget.refusals(graph, cap)
    assert not picked & set(why)
    assert picked | set(why) == set(graph.values)
    assert any("loop" in text for text in why.values())


def test_loop_results_at_the_peak_are_named(scan_plan):
    held = budget.held_at_peak(scan_plan.graph, scan_plan.capture, scan_plan.layout)
    assert held.arena_live == sum(b for _, b in held.by_reason) > 0
    top, _ = held.by_reason[0]
    assert "loop" in top, held
    assert "MiB" in held.describe()
