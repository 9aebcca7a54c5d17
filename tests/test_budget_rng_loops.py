"""A dropout step on CPU as jax.jit compiles it (``rng_lowering="jax"``; by
default olla_jax plans threefry2x32 unrolled, tests/test_rng_lowering.py): jax
lowers threefry2x32 to a rolled while loop, so the random bits are a loop's
results, which recomputation does not copy; ``budget.held_at_peak`` names
those loops and why they stay."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp

import olla_jax
from olla_jax import budget
from olla_jax.budget.floors import LOOP_HELD
from tests.small_steps import dropout_step


_step = dropout_step


def test_held_at_peak_names_the_prng_loops_holding_dropout_bits():
    ks = jax.random.split(jax.random.key(0), 4)
    params = [jax.random.normal(k, (128, 128)) * 0.05 for k in ks[:3]]
    x = jax.random.normal(ks[3], (256, 128))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plan = olla_jax.plan(_step, params, x, jax.random.key(7), time_limit_s=1,
                             feed_back=False, rng_lowering="jax")
    held = budget.held_at_peak(plan.graph, plan.capture)
    loop_bytes = dict(held.by_reason).get(LOOP_HELD, 0)
    assert loop_bytes > 0, held.describe()
    # each loop named, with the jax.random call that made it, its bytes summing to the reason's
    assert held.loops and sum(b for _, _, b in held.loops) == loop_bytes
    assert all(name.startswith("while") and "_bernoulli" in op for name, op, _ in held.loops)
    text = held.describe()
    assert "loops held: while" in text and "jax.random" in text, text


def test_a_scan_loop_held_at_the_peak_is_named_without_the_prng_note():
    from tests.small_steps import planned_accumulate
    base = planned_accumulate(4)
    held = budget.held_at_peak(base.graph, base.capture, base.layout)
    text = held.describe()
    assert held.loops and all(name.startswith("while") for name, _, _ in held.loops), text
    assert "jax.random" not in text
