"""A while loop nested in a while body (a scan inside a scan): the rewrite finds
the values its thunk reads (its predicate) though the graph does not delimit its block."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import olla_jax


def _inner(ws, x):
    h, _ = jax.lax.scan(lambda h, w: (jnp.tanh(h @ w) + h, None), x, ws)
    return jnp.mean(h ** 2)


def nested_scans(ws, xs):
    return jax.lax.scan(lambda c, x: (c + _inner(ws, x), None), 0.0, xs)[0]


def test_plan_of_nested_scans_is_applied_and_bit_identical():
    ws = jax.random.normal(jax.random.key(0), (6, 32, 32)) * 0.1
    xs = jax.random.normal(jax.random.key(1), (4, 16, 32))
    plan = olla_jax.plan(nested_scans, ws, xs, time_limit_s=2)
    assert not any("rewrite refused" in note for note in plan.notes), plan.notes
    assert plan.source == "xla" or plan.verified, plan.notes
    np.testing.assert_array_equal(np.asarray(plan.compiled(ws, xs)),
                                  np.asarray(jax.jit(nested_scans)(ws, xs)))
