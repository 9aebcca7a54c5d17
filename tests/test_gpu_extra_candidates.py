"""GPU candidates with other kinds added (``candidates.screen``'s ``gpu_extra``).

"parked": values XLA parked in an output allocation's idle bytes, left out on
GPU by default (reason ``_PARKED``), become candidates; "feeders": a copy's
operand read by its producer alone, made from intact inputs, is recomputed
for it (as on CPU).  A diagnosis (``benchmarks/remat_kinds.py``), off by default.
"""

from __future__ import annotations

import warnings

import pytest

jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402

from olla_jax.budget.candidates import _PARKED, screen, thunk_kinds_text  # noqa: E402
from tests.marks import needs_plugin  # noqa: E402

S = jax.ShapeDtypeStruct


def test_an_unknown_kind_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="'feeders', 'parked'"):
        screen(None, None, "flops", gpu_extra=("offload",))


def step(x, w1, w2, p):
    h = p @ w1                          # made from intact inputs, read by one reduction alone
    g = jnp.exp(h).sum(axis=1)
    y = jnp.tanh(x @ w2)
    return (y * g[:, None]) @ w2 + y


ARGS = (S((512, 256), jnp.float32), S((256, 256), jnp.float32), S((256, 256), jnp.float32),
        S((512, 256), jnp.float32))


@pytest.fixture(scope="module")
def base():
    import olla_jax
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return olla_jax.plan(step, *ARGS, backend="gpu:h100", time_limit_s=2, feed_back=False)


@needs_plugin
def test_parked_values_become_candidates_only_when_asked(base):
    g, cap = base.graph, base.capture
    plain, why = screen(g, cap, "flops")
    parked = {v for v, text in why.items() if text == _PARKED}
    assert parked, "the step parks no value in an output allocation"
    with_parked, why2 = screen(g, cap, "flops", gpu_extra=("parked",))
    assert {c.value for c in with_parked} == {c.value for c in plain} | parked
    assert not any(text == _PARKED for text in why2.values())


@needs_plugin
def test_feeders_on_gpu_only_when_asked(base):
    g, cap = base.graph, base.capture
    plain, _ = screen(g, cap, "flops")
    assert not any(c.feeders for c in plain)
    fed, _ = screen(g, cap, "flops", gpu_extra=("feeders", "parked"))
    with_feeder = [c for c in fed if c.feeders]
    assert with_feeder, "no copy got a feeder"
    for c in with_feeder:
        by_value = {d.value: d for d in fed}
        assert all(f not in c.operands for f in c.feeders)     # the copy reads the feeder's operands
        assert c.flops >= sum(by_value[f].flops for f in c.feeders if f in by_value)


def shared_step(x, w1, w2, p):
    h = p @ w1                          # made from intact inputs, read by two kernels
    a = jnp.tanh(h @ w2)
    b = jnp.exp(h).sum(axis=1)
    return (a * x) @ w2 + b[:, None]


@needs_plugin
def test_shared_feeders_take_an_operand_with_readers_of_its_own():
    import olla_jax
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        planned = olla_jax.plan(shared_step, *ARGS, backend="gpu:h100", time_limit_s=2,
                                feed_back=False)
    g, cap = planned.graph, planned.capture
    fed, _ = screen(g, cap, "flops", gpu_extra=("feeders",))
    shared, _ = screen(g, cap, "flops", gpu_extra=("shared_feeders",))
    by_value = {c.value: c for c in shared}
    with_shared = [c for c in shared if any(by_value[f].readers != (c.producer,)
                                            for f in c.feeders if f in by_value)]
    assert with_shared, "no copy got a feeder with readers of its own"
    assert not any(c.feeders for c in fed if c.value in {d.value for d in with_shared})
    for c in with_shared:
        assert all(f in by_value for f in c.feeders)   # the operand stays a candidate


def test_thunk_kinds_text_names_each_kind_once():
    # the read-back's kinds end in "_thunk": a reason read "runs
    # device_to_device_copy_thunk thunk" before
    assert thunk_kinds_text(["device_to_device_copy_thunk"]) == \
        "a device_to_device_copy thunk"
    assert thunk_kinds_text(["kernel", "gemm"]) == "a kernel/gemm thunk"
    assert thunk_kinds_text([]) == "no thunk"
