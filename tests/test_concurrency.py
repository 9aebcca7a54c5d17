"""The optimized callable of a plan called from many threads at once.

``plan.compiled`` runs a rewritten executable whose buffers olla_jax placed;
XLA:CPU runs concurrent calls of one executable with separate buffers, and
each call's outputs must be exactly those of XLA's own executable.
"""

from __future__ import annotations

import concurrent.futures
import threading
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import olla_jax
from _fuzz import bit_identical, fresh
from small_steps import mlp_args as _args, mlp_step as _step

THREADS = 8
CALLS = 20


@pytest.fixture(scope="module")
def planned():
    with warnings.catch_warnings():
        warnings.simplefilter("error", olla_jax.PlanWarning)
        plan = olla_jax.plan(_step, *_args(0), time_limit_s=1.0)
    # The rewritten executable, not XLA's, is what runs below.
    assert plan.verified and plan.source == "olla_jax", plan.notes
    assert plan.achieved_temp_bytes < plan.xla_best_temp_bytes
    return plan


def _hammer(call, inputs, expected):
    """THREADS threads, CALLS calls each, all released together."""
    barrier = threading.Barrier(THREADS)

    def worker(t):
        barrier.wait()
        bad = []
        for c in range(CALLS):
            k = (t + c) % len(inputs)
            got = call(*inputs[k])
            jax.block_until_ready(got)
            diff = bit_identical(got, expected[k])
            if diff:
                bad.append(f"thread {t} call {c} (inputs {k}): {diff}")
        return bad

    with concurrent.futures.ThreadPoolExecutor(THREADS) as pool:
        results = list(pool.map(worker, range(THREADS)))
    return [b for r in results for b in r]


def test_same_inputs_from_eight_threads(planned):
    args = _args(0)
    expected = jax.jit(_step)(*args)
    assert _hammer(planned.compiled, [args], [expected]) == []


def test_different_inputs_from_eight_threads(planned):
    """Each thread cycles through different inputs: a call that read another
    call's buffers would show up as a mismatch."""
    inputs = [_args(s) for s in range(5)]
    xla = jax.jit(_step)
    expected = [xla(*a) for a in inputs]
    assert _hammer(planned.compiled, inputs, expected) == []


def test_donated_arguments_from_eight_threads():
    """With donation every call consumes its own fresh copy of the inputs."""
    def f(a, w):
        h = jnp.tanh(a @ w)
        g = jnp.sin(h) @ w.T
        return a - 0.1 * g, (g * a).sum()

    k = jax.random.split(jax.random.PRNGKey(3), 2)
    args = (jax.random.normal(k[0], (64, 32)), jax.random.normal(k[1], (32, 48)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", olla_jax.PlanWarning)
        plan = olla_jax.plan(f, *args, time_limit_s=1.0, donate_argnums=(0,))
    expected = jax.jit(f, donate_argnums=(0,))(*fresh(args))
    assert _hammer(lambda *a: plan.compiled(*fresh(a)), [args], [expected]) == []


def test_two_plans_at_once():
    """plan() itself from two threads (two compiles, two verification children)."""
    args = [_args(1), _args(2)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", olla_jax.PlanWarning)
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            plans = list(pool.map(lambda a: olla_jax.plan(_step, *a, time_limit_s=1.0), args))
    for plan, a in zip(plans, args):
        assert plan.verified or plan.notes
        assert bit_identical(plan.compiled(*a), jax.jit(_step)(*a)) == ""
