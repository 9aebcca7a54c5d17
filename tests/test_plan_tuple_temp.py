"""When XLA:CPU puts a tuple's index table in its temp allocation (here a small
``fori_loop``'s state), the executable cannot take a new size for that
allocation: ``plan`` keeps XLA's plan with a warning that says why, and the
compiled step still computes what jax.jit's does."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import olla_jax


def loop_step(x):
    return jax.lax.fori_loop(0, 3, lambda i, c: jnp.tanh(c @ c), x)


def test_tuple_table_in_temp_keeps_xlas_plan_and_says_why():
    x = jax.random.normal(jax.random.PRNGKey(0), (64, 64)) / 8
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plan = olla_jax.plan(loop_step, x, time_limit_s=2)
    messages = [str(w.message) for w in caught]
    if not any("tuple table" in m for m in messages):
        pytest.skip("this XLA keeps the loop's tuple table out of its temp allocation")
    assert plan.source == "xla"
    assert any("while loop's state" in m for m in messages), messages
    np.testing.assert_array_equal(np.asarray(plan.compiled(x)), np.asarray(jax.jit(loop_step)(x)))
