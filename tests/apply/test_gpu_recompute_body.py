"""Recomputation inside a while loop's body on a compile-only GPU target.

Gradient accumulation over micro-batches (lax.scan): XLA:GPU holds each
layer's activation from the forward pass to its weight gradient, across the
body's peak, and reads it there through a bitcast (what the GEMM fusion
reads).  A copy of its kernel thunk runs again inside the while thunk's body
sequence, before the bitcast (no thunk: before the body's next one): the
rewritten executable is built, decoded again and read back against the plan,
and the independent checker refuses wrong body claims.  Not run: no GPU here.
"""

from __future__ import annotations

import dataclasses
import warnings

import pytest

jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402
from jax import lax  # noqa: E402

from olla_jax.capture import gpu  # noqa: E402

needs_plugin = pytest.mark.skipif(gpu.cuda_plugin() is None,
                                  reason="jax's CUDA plugin is not installed")
S = jax.ShapeDtypeStruct


def _loss(w, x, y):
    h = x
    for wi in w:
        h = jnp.tanh(h @ wi)
    return jnp.mean((h - y) ** 2)


def _micro(w):
    def micro(acc, xy):
        value, grads = jax.value_and_grad(_loss)(w, *xy)
        return jax.tree.map(jnp.add, acc, (value, grads)), None
    return micro


def accumulating_step(w, xs, ys):
    zero = (jnp.zeros(()), jax.tree.map(jnp.zeros_like, w))
    (total, grads), _ = lax.scan(_micro(w), zero, (xs, ys))
    return [wi - 0.1 * gi for wi, gi in zip(w, grads)], total


def with_entry_value(w, xs, ys):
    """The same, with an entry value read before the loop and after it."""
    a = xs[0] @ w[0]
    zero = (jnp.sum(jnp.tanh(a)), jax.tree.map(jnp.zeros_like, w))
    (total, grads), _ = lax.scan(_micro(w), zero, (xs, ys))
    return [wi - 0.1 * gi for wi, gi in zip(w, grads)], total + jnp.sum(a * a)


ARGS = ([S((256, 256), jnp.float32)] * 4, S((4, 1024, 256), jnp.float32),
        S((4, 1024, 256), jnp.float32))


@pytest.fixture(scope="module")
def base():
    import olla_jax
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return olla_jax.plan(accumulating_step, *ARGS, backend="gpu:h100", time_limit_s=2)


@pytest.fixture(scope="module")
def recomputed(base):
    """The budget a body copy meets: 1 MiB below the plan's temp (one
    activation), asked of ``recompute_to_budget`` as ``plan`` does."""
    from olla_jax import budget
    fixed = base.runs_total_bytes - base.runs_temp_bytes
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return budget.recompute_to_budget(base, fixed + base.runs_temp_bytes - 2 ** 20,
                                          time_limit_s=10, measure_time=False)


def _body_thunks(raw):
    from olla_jax.apply import gpu_executable
    decoded = gpu_executable.decode(raw)
    (loop,) = [t for t in decoded.thunks if t.WhichOneof("impl") == "while_thunk"]
    return decoded, loop.while_thunk.body_thunk_sequence.thunks


@needs_plugin
def test_body_values_read_through_a_bitcast_are_candidates(base):
    from olla_jax.budget import body
    cands = body.candidates(base.graph, base.capture)
    assert cands, "no body candidate on the GPU target"
    assert all(c.producer not in base.graph.node_index for c in cands)
    # a split before a bitcast, which runs no thunk
    assert any(c.readers[k].startswith("bitcast") for c in cands for k in c.splits)


@needs_plugin
def test_a_body_copy_meets_the_budget_built_and_read_back(base, recomputed):
    from olla_jax.apply import gpu_readback, gpu_rewrite
    plan = recomputed
    assert plan.runs_temp_bytes <= base.runs_temp_bytes - 2 ** 20, plan.notes
    assert plan.executable_bytes is not None and not plan.verified
    assert any("not run" in n for n in plan.notes), plan.notes
    inner = [r for r in plan.layout.recomputes if r.producer not in plan.graph.node_index]
    assert inner, plan.layout.recomputes
    assert gpu_readback.compare(plan.executable_bytes, plan.layout) is None
    _, before = _body_thunks(base.capture.executable)
    decoded, after = _body_thunks(plan.executable_bytes)
    names = [t.thunk_info.profile_annotation for t in after]
    assert len(after) == len(before) + len(inner)
    for r in inner:
        first, copy = [k for k, n in enumerate(names) if n == r.producer]
        a = gpu_rewrite.kernel_arguments(after[first])
        b = gpu_rewrite.kernel_arguments(after[copy])
        early = plan.layout.early_place(r.value)
        for (sa, wa), (sb, wb) in zip(a, b):
            assert wa == wb
            if wa:      # the copy writes the value at the plan's place
                assert (sa.buffer_allocation_index, sa.offset) == early
                assert (sb.buffer_allocation_index, sb.offset) == r.place
            else:       # and reads what the first run read
                assert (sa.buffer_allocation_index, sa.offset) == \
                    (sb.buffer_allocation_index, sb.offset)
        readers = [k for k, n in enumerate(names) if n in r.late_users]
        assert readers and all(k > copy for k in readers)
        assert any((s.buffer_allocation_index, s.offset) == r.place
                   for k in readers for s, w in gpu_rewrite.kernel_arguments(after[k]) if not w)
    ids = [t.thunk_info.thunk_id for t in after]
    assert len(set(ids)) == len(ids)
    assert decoded.allocations[plan.graph.temp_allocation].size == plan.planned_temp_bytes


@needs_plugin
def test_readback_finds_a_body_copy_that_is_not_where_the_plan_says(recomputed):
    from olla_jax.apply import gpu_readback
    plan = recomputed
    k, r = next((k, r) for k, r in enumerate(plan.layout.recomputes)
                if r.producer not in plan.graph.node_index)

    def wrong(**changes):
        recs = list(plan.layout.recomputes)
        recs[k] = dataclasses.replace(r, **changes)
        return dataclasses.replace(plan.layout, recomputes=tuple(recs))
    moved = wrong(place=(r.place[0], r.place[1] + 256))
    assert "not the plan's place" in gpu_readback.compare(plan.executable_bytes, moved)
    _, thunks = _body_thunks(plan.executable_bytes)
    later = wrong(before=thunks[-1].thunk_info.profile_annotation)    # the body's last
    assert "just before" in gpu_readback.compare(plan.executable_bytes, later)


@needs_plugin
def test_the_checker_refuses_wrong_body_claims(base, recomputed):
    from olla_jax import check, checked
    plan = recomputed
    cap = base.capture
    claims = checked.candidate_plan(plan.layout)
    k, claim = next((k, c) for k, c in enumerate(claims.recomputes)
                    if c.producer not in plan.graph.node_index)
    check.check_plan(cap.hlo_proto, cap.values_text, cap.live_range_text, claims, alignment=256)

    def refused(match, **changes):
        recs = list(claims.recomputes)
        recs[k] = dataclasses.replace(claim, **changes)
        with pytest.raises(check.PlanRejected, match=match):
            check.check_plan(cap.hlo_proto, cap.values_text, cap.live_range_text,
                             dataclasses.replace(claims, recomputes=tuple(recs)), alignment=256)
    # a late reader left out (it would read the first run's bytes, reused)
    refused("declared a late reader", late_users=claim.late_users[:-1])
    # a reader outside the loop body
    refused("not in the body", late_users=(*claim.late_users, plan.graph.nodes[-1]))
    # the copy on the bytes of the largest value, live with it in the body
    graph = plan.graph
    step = graph.flat.index(claim.before)
    live = max((v for v in graph.values.values() if v.allocation == graph.temp_allocation
                and v.xla_range[0] < step <= v.xla_range[1] and v.id != claim.value),
               key=lambda v: v.size)
    refused("overlap", place=plan.layout.early_place(live.id))


@needs_plugin
def test_an_entry_copy_and_a_body_copy_in_one_executable():
    """Inserting an entry copy rebuilds the entry thunks, the while thunk
    among them: the body copy goes into the rebuilt loop's body."""
    import olla_jax
    from olla_jax import checked
    from tests.small_steps import entry_and_body_copy
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        base = olla_jax.plan(with_entry_value, *ARGS, backend="gpu:h100", time_limit_s=2)
    graph, cap = base.graph, base.capture
    rp = entry_and_body_copy(graph, cap, base.layout.order)
    assert checked.rejection(cap, rp.layout, alignment=256) is None
    out = checked.apply(cap, rp.layout, backend=base.backend)
    assert out.raw is not None and "not run" in out.reason, out.reason
    _, thunks = _body_thunks(out.raw)
    inner = next(r for r in rp.layout.recomputes if r.producer not in graph.node_index)
    assert [t.thunk_info.profile_annotation for t in thunks].count(inner.producer) == 2
