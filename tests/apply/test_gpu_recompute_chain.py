"""A chain in the GPU executable: a value recomputed before a slot (a node
that does not read it) so that the copy of a value computed from it, made
just after, reads its copy.

Compile-only for the shipped H100 description (no GPU): the rewritten
executable is built and decoded again, not run.  The step is an MLP's
gradient (two blocks): ``h = y @ w1`` is read by ``a = gelu(h)`` and late by gelu's
derivative; ``a`` is read by the GEMMs after it.  Both are dropped and run
again before a reader of ``a``: ``h``'s copy (before a slot of ``h``, placed
off its first bytes) and ``a``'s copy, which must read ``h``'s copy there.
"""

from __future__ import annotations

import dataclasses
import warnings

import pytest

jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402

from olla_jax.apply import gpu_executable, gpu_readback, gpu_rewrite  # noqa: E402
from tests.marks import needs_plugin  # noqa: E402

S = jax.ShapeDtypeStruct


def mlp_step(x, w1, w2, w3, w4):
    def loss(ws):
        y = x
        for a, b in zip(ws[::2], ws[1::2]):
            y = y + jax.nn.gelu(y @ a) @ b
        return jnp.sum(y * y)
    grads = jax.grad(loss)((w1, w2, w3, w4))
    return tuple(w - 0.1 * d for w, d in zip((w1, w2, w3, w4), grads))


ARGS = (S((2048, 256), jnp.float32), S((256, 1024), jnp.float32), S((1024, 256), jnp.float32),
        S((256, 1024), jnp.float32), S((1024, 256), jnp.float32))


@pytest.fixture(scope="module")
def chained():
    import olla_jax
    from olla_jax import budget
    from olla_jax.budget import recompute_plan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        base = olla_jax.plan(mlp_step, *ARGS, backend="gpu:h100", time_limit_s=1,
                             feed_back=False)
    g, cap = base.graph, base.capture
    order = base.layout.order if base.layout is not None else g.xla_order
    step = recompute_plan.step_index(g, order)
    cands = {c.value: c for c in budget.candidates(g, cap)}
    # a: a candidate whose operand h is a candidate with a slot at one of a's
    # readers; both copied before it, h's copy placed off its first bytes
    for a in cands.values():
        users_a = sorted(a.users, key=lambda n: step[n])
        for k, reader in enumerate(users_a):
            for h in (cands[o] for o in a.operands if o in cands):
                if reader not in h.slots or not recompute_plan.late_part_ok(g, step, h, reader):
                    continue
                users_h = sorted(h.users, key=lambda n: step[n])
                found = recompute_plan.plan_of(g, order, [(h, users_h.index(reader)), (a, k)])
                copy_h = next(r for r in found.layout.recomputes if r.value == h.value)
                if copy_h.place == found.layout.early_place(h.value):
                    continue
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    plan = budget.feed_back_plan(base, found, measure_time=False)
                return base, plan, h, a
    pytest.fail("no candidate reads a candidate with a slot at one of its readers, "
                "copied off its first bytes")


@needs_plugin
def test_a_copy_before_a_slot_is_read_by_the_chained_copy(chained):
    base, plan, h, a = chained
    g = base.graph
    assert plan.executable_bytes is not None, plan.notes
    recs = {r.value: r for r in plan.layout.recomputes}
    rh, ra = recs[h.value], recs[a.value]
    assert rh.before == ra.before                  # both just before a reader of a
    assert g.node_index[rh.before] in h.slots      # which does not read h
    assert rh.late_users and all(g.node_index[u] not in h.slots for u in rh.late_users)
    decoded = gpu_executable.decode(plan.executable_bytes)
    names = [t.thunk_info.profile_annotation for t in decoded.thunks]
    copy_a = [k for k, n in enumerate(names) if n == ra.producer][1]
    copy_h = [k for k, n in enumerate(names) if n == rh.producer][1]
    assert copy_h < copy_a
    reads = [s for s, written in gpu_rewrite.kernel_arguments(decoded.thunks[copy_a])
             if not written]
    place = rh.place
    assert any(s.buffer_allocation_index == place[0] and
               place[1] <= s.offset < place[1] + rh.size for s in reads), \
        "the copy of a does not read h's copy"
    assert gpu_readback.compare(plan.executable_bytes, plan.layout) is None


@needs_plugin
def test_read_back_refuses_a_chained_copy_that_reads_the_first_place(chained):
    # the plan's layout without the chain: the copy of a reading h's copy is
    # then not what it asked (a copy reads what its first run read)
    base, plan, h, a = chained
    unchained = dataclasses.replace(plan.layout, recomputes=tuple(
        r for r in plan.layout.recomputes if r.value != h.value))
    assert gpu_readback.compare(plan.executable_bytes, unchained) is not None
