"""GPU rewrite: thunks embedded in dynamic-slice thunks address the thunk's own
allocations, not the executable's (issue 23.4).

A scanned step's loop slices its stacked operands with dynamic-slice thunks
whose embedded copies read "fake" allocation 0, 1, ... (one per argument, the
size of the slice).  The rewrite once relocated those slices as if they were
the executable's allocations of the same index: it refused the scanned Llama
step ("device_to_device_copy_thunk ... [0, 8192) lies outside allocation 0 of
4096 bytes", allocation 0 being a donated parameter), and a slice that did fit
would have been moved to the wrong bytes.  Compile-only, no GPU.
"""

from __future__ import annotations

import warnings

import pytest

jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402

from olla_jax.apply import gpu_executable, gpu_rewrite  # noqa: E402
from olla_jax.apply.edits import ExecutableEdit, fixed_kind  # noqa: E402
from tests.marks import needs_plugin  # noqa: E402

EMBEDDING = ("dynamic_slice_thunk", "dynamic_slice_fusion_thunk")


def _loss(x, ws):
    h, _ = jax.lax.scan(lambda h, w: (jnp.tanh(h @ w), None), x, ws)
    return jnp.sum(h * h)


def updated(x, ws):
    """Returns the stacked weights: the output allocation is allocation 0, the
    index of an embedded copy's fake source allocation."""
    return ws - 0.1 * jax.grad(_loss, argnums=1)(x, ws)


def squared_gradient(x, ws):
    """Returns a scalar: allocation 1 is x (2 KiB), smaller than the 16 KiB slice
    an embedded copy writes to its fake allocation 1."""
    g = jax.grad(_loss, argnums=1)(x, ws)
    return jnp.sum(g * g)


def _raw(fn):
    from olla_jax.capture import capture
    return capture(fn, jnp.zeros((8, 64)), jnp.zeros((2, 64, 64)), backend="gpu:h100").executable


def _embedded(thunks):
    """(outer thunk, embedded thunk) pairs, at any depth."""
    for thunk in thunks:
        inner = list(gpu_rewrite._nested(thunk))
        if gpu_rewrite.thunk_kind(thunk) in EMBEDDING:
            yield from ((thunk, t) for t in inner)
        yield from _embedded(inner)


@needs_plugin
def test_identity_rewrite_of_a_scanned_step_is_accepted():
    raw = _raw(squared_gradient)
    decoded = gpu_executable.decode(raw)
    sizes = {a.index: a.size for a in decoded.allocations}
    embedded = list(_embedded(decoded.thunks))
    assert embedded, "the scanned step has no dynamic-slice thunk: this test checks nothing"
    # The trap: an embedded slice larger than the executable's allocation of the same index.
    assert any(s.offset + s.size > sizes[s.buffer_allocation_index]
               for _, t in embedded for _, s in gpu_rewrite._slices(t))
    identity = ExecutableEdit(order=gpu_rewrite.entry_order(decoded),
                              relocate=lambda name, a, o, s: (a, o),
                              relocate_logical=lambda b, a, o: (a, o))
    assert gpu_rewrite.rewrite(raw, identity) == raw


@needs_plugin
def test_only_the_executables_own_slices_are_relocated():
    raw = _raw(updated)
    decoded = gpu_executable.decode(raw)
    embedded = list(_embedded(decoded.thunks))
    assert embedded
    # The trap: an embedded slice names fake allocation 0, the index of the step's output.
    assert any(s.buffer_allocation_index == 0 for _, t in embedded
               for _, s in gpu_rewrite._slices(t))
    asked = []

    def relocate(name, a, o, s):
        asked.append((name, a, o, s))
        return a, o
    edit = ExecutableEdit(order=gpu_rewrite.entry_order(decoded), relocate=relocate,
                          relocate_logical=lambda b, a, o: (a, o))
    assert gpu_rewrite.rewrite(raw, edit) == raw
    every = [s for t in _all(decoded.thunks) for _, s in gpu_rewrite._slices(t)]
    fake = [s for _, t in embedded for _, s in gpu_rewrite._slices(t)]
    assert len(asked) == len(every) - len(fake)
    # A dynamic-slice thunk's own arguments (the real bytes) are among those asked about.
    own = {(s.buffer_allocation_index, s.offset, s.size) for outer, _ in embedded
           for _, s in gpu_rewrite._slices(outer)}
    assert own <= {(a, o, s) for _, a, o, s in asked}


def _all(thunks):
    for thunk in thunks:
        yield thunk
        yield from _all(list(gpu_rewrite._nested(thunk)))


@pytest.mark.slow
@needs_plugin
def test_scanned_sharded_llama_step_with_constraint_is_rewritten():
    """The probe of issue 23: scanned, no remat, FSDP on 8 devices, activations constrained."""
    import olla_jax
    from examples import llama
    step = llama.make_step(llama.Config(layers=2, d_model=32, heads=4, kv_heads=2, seq=16,
                                        batch=8, vocab=64, scan=True, remat=False,
                                        constrain=True))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = olla_jax.plan(step.fn, *step.args, backend="gpu:h100", time_limit_s=2,
                          donate_argnums=step.donate_argnums, num_devices=8,
                          in_shardings=llama.shardings(step, "fsdp", 8), collective_overlap="free")
    assert not any("refused" in n for n in p.notes), p.notes
    assert p.source == "olla_jax" and p.executable_bytes is not None, p.notes
