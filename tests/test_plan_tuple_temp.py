"""When XLA:CPU puts a tuple's index table in its temp allocation (here a small
``fori_loop``'s state), the executable cannot take a new size for that
allocation: ``plan`` keeps XLA's plan and says why in its notes, with a
PlanWarning only when a plan could have saved a meaningful amount (a few bytes
of a tiny step are noise the user cannot act on, under ``olla_jax.jit`` on every
new signature), and the compiled step still computes what jax.jit's does."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import olla_jax
from olla_jax.plan import WARN_SAVING_BYTES, saving_worth_a_warning

MIB = 2 ** 20


def loop_step(x):
    return jax.lax.fori_loop(0, 3, lambda i, c: jnp.tanh(c @ c), x)


def grad_and_loop_step(p, x):
    """An MLP's gradient step beside a loop: its temp holds the loop's tuple
    table, and its layers' values leave order and placement megabytes to save."""
    def loss(p):
        h = x
        for w in p:
            h = jnp.tanh(h @ w)
        return jnp.sum(h)
    g = jax.grad(loss)(p)
    y = jax.lax.fori_loop(0, 3, lambda i, c: jnp.tanh(c @ p[0]), x)
    return [a - 0.1 * b for a, b in zip(p, g)], y


def _with_warnings(call):
    """``call()``'s result and the PlanWarnings it raised."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = call()
    return result, [str(w.message) for w in caught if issubclass(w.category, olla_jax.PlanWarning)]


def _tuple_table(plan) -> bool:
    if not any("tuple table" in n for n in plan.notes):
        pytest.skip("this XLA keeps the loop's tuple table out of its temp allocation")
    return True


def test_warning_rule_needs_a_mebibyte_and_five_percent():
    assert not saving_worth_a_warning(16452, 16388)                 # 64 B of a tiny step
    assert not saving_worth_a_warning(100 * MIB, 96 * MIB)          # 4 MiB, but 4%
    assert saving_worth_a_warning(MIB, 0)                            # the whole MiB: warn
    assert saving_worth_a_warning(14 * MIB, 12 * MIB)
    assert not saving_worth_a_warning(WARN_SAVING_BYTES - 1, 0)


def test_tiny_tuple_table_keeps_xlas_plan_with_a_note_and_no_warning():
    x = jax.random.normal(jax.random.PRNGKey(0), (64, 64)) / 8
    plan, warned = _with_warnings(lambda: olla_jax.plan(loop_step, x, time_limit_s=2))
    assert _tuple_table(plan) and plan.source == "xla"
    assert not warned, warned
    note = next(n for n in plan.notes if "tuple table" in n)
    assert "while loop's state" in note and "too little to warn about" in note
    np.testing.assert_array_equal(np.asarray(plan.compiled(x)), np.asarray(jax.jit(loop_step)(x)))
    # the drop-in: no warning on a new signature either
    jitted = olla_jax.jit(loop_step, cache=False, time_limit_s=2)
    _, warned = _with_warnings(lambda: jitted(x[:32, :32]))
    assert not warned, warned


def test_tuple_table_warns_where_a_plan_could_save_megabytes():
    p = [jax.random.normal(jax.random.PRNGKey(i), (512, 512)) for i in range(6)]
    x = jax.random.normal(jax.random.PRNGKey(9), (1024, 512))
    plan, warned = _with_warnings(lambda: olla_jax.plan(grad_and_loop_step, p, x,
                                                           time_limit_s=2))
    assert _tuple_table(plan) and plan.source == "xla"
    assert plan.xla_best_temp_bytes - plan.lower_bound_bytes >= MIB
    assert any("tuple table" in m and "could save at most" in m for m in warned), warned
