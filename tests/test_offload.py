"""olla_jax.offload: idle values from the jaxpr, the rewrite, the transfers read
from XLA's HLO, and the lever on the compile-only H100 target (no GPU needed)."""

from __future__ import annotations

import numpy as np
import pytest

jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402

from olla_jax import jaxpr_walk, offload  # noqa: E402
from olla_jax.capture import gpu  # noqa: E402
from tests.marks import needs_plugin  # noqa: E402
from tests.small_steps import OFFLOAD_ARGS, park_across  # noqa: E402

ARGS = OFFLOAD_ARGS


def chain(x, w):
    """``h`` is read at once and again only at the end, by a matmul: idle across the chain."""
    h = jnp.tanh(x @ w)
    y = h
    for _ in range(6):
        y = jnp.tanh(y @ w)
    small = jnp.sum(x, axis=1)          # 1 KiB: under MIN_BYTES
    return (y.T @ h).sum() + small.sum()


def test_longest_idle_value_comes_first():
    traced = offload.trace(chain, ARGS)
    found = offload.idle_values(traced.closed)
    assert found, "h is idle across six matmuls"
    top = found[0]
    assert top.shape == (256, 512) and top.nbytes == 256 * 512 * 4
    eqns = traced.closed.jaxpr.eqns
    assert eqns[top.defined_at].primitive.name == "tanh"
    # h is read by the first matmul, then idle until the last one
    assert eqns[top.back_before].primitive.name == "dot_general"
    assert top.gap >= 6 * 2
    assert all(c.nbytes >= offload.MIN_BYTES for c in found)
    assert [c.score for c in found] == sorted((c.score for c in found), reverse=True)
    # without the filter, elementwise values XLA fuses away are candidates too
    assert len(offload.idle_values(traced.closed, kinds=None)) >= len(found)


def test_rewrite_keeps_the_results_on_cpu():
    x = jax.random.normal(jax.random.key(0), (256, 512))
    w = jax.random.normal(jax.random.key(1), (512, 512)) * 0.05
    traced = offload.trace(chain, (x, w))
    parked = offload.idle_values(traced.closed)[:2]
    step = offload.rewrite(chain, (x, w), parked)
    # The same values up to rounding, not bit for bit: the moves are tied with
    # optimization barriers, which change how XLA fuses the program, and a sum's
    # order with it (one machine here gave 1 ulp on a final sum of -4,644.44).
    np.testing.assert_allclose(np.asarray(jax.jit(step)(x, w)), np.asarray(jax.jit(chain)(x, w)),
                               rtol=1e-6)


def test_transfers_read_copies_to_and_from_host_space():
    hlo = """
  %a = f32[256,512]{1,0} fusion(%p), kind=kLoop
  %cs = (f32[256,512]{1,0:S(5)}, f32[256,512]{1,0}, u32[]) copy-start(%a)
  %cd = f32[256,512]{1,0:S(5)} copy-done(%cs)
  %cs2 = (f32[256,512]{1,0}, f32[256,512]{1,0:S(5)}, u32[]) copy-start(%cd)
  %h = bf16[8,4]{1,0:S(5)} copy(%b)
  %b = bf16[8,4]{1,0} add(%q, %q)
"""
    t = offload.transfers(hlo)
    assert (t.to_host, t.to_device) == (2, 1)
    assert t.to_host_bytes == 256 * 512 * 4 + 8 * 4 * 2
    assert t.to_device_bytes == 256 * 512 * 4
    assert offload.transfers("%x = f32[4]{0} add(%y, %y)").to_host == 0


def test_cpu_backend_is_refused_with_the_reason():
    with pytest.raises(offload.OffloadError, match="compile-only GPU"):
        offload.offload(chain, *ARGS, backend="cpu")


@needs_plugin
def test_h100_moves_need_the_barriers_and_lower_device_temp():
    traced = offload.trace(park_across, ARGS)
    parked = offload.idle_values(traced.closed, kinds=None)[:1]
    figures = {}
    for tie in (False, True):
        step = offload.rewrite(park_across, ARGS, parked, traced=traced, tie=tie)
        compiled = gpu.compile_for_target(step, ARGS, target="h100")
        figures[tie] = (compiled.memory_analysis().temp_size_in_bytes,
                        offload.transfers(compiled.as_text()))
    assert figures[False][1].to_host == 0          # XLA folds bare moves away
    assert figures[True][1].to_host == 1 and figures[True][1].to_device == 1
    assert figures[True][1].to_host_bytes == parked[0].nbytes
    assert figures[True][0] < figures[False][0]


@needs_plugin
def test_offload_meets_a_budget_below_xla_on_h100():
    from olla_jax import flops
    compiled = gpu.compile_for_target(park_across, ARGS, target="h100")
    base = compiled.memory_analysis().temp_size_in_bytes
    result = offload.offload(park_across, *ARGS, backend="gpu:h100", budget=base - 1,
                             max_values=1, kinds=None)
    assert result.xla_temp == base
    assert result.met and result.temp < base and len(result.chosen) == 1
    assert result.host_temp > 0 and result.transfers.to_host == 1
    assert "built, not run" in result.summary()
    # the offloaded program's FLOPs against the step's, as XLA compiled both
    delta = flops.compiled_flops(result.capture.compiled) - flops.compiled_flops(compiled)
    assert result.flops_delta == delta and result.extra_flops == max(0, delta)
    assert f"{delta:+,} FLOPs against the step as given" in result.summary()


@pytest.mark.slow   # about a minute on 2 shared cores: two CPU compiles of a training step
def test_rewritten_training_step_keeps_its_results_on_cpu():
    from examples import lm_adamw
    st = lm_adamw.make_step("tiny")
    traced = offload.trace(st.fn, st.args, st.static_argnums)
    parked = offload.idle_values(traced.closed)[:4]
    assert len(parked) == 4
    step = offload.rewrite(st.fn, st.args, parked, static_argnums=st.static_argnums,
                           traced=traced)
    ours = jax.jit(step, static_argnums=st.static_argnums)(*st.args)
    xla = jax.jit(st.fn, static_argnums=st.static_argnums)(*st.args)
    assert jax.tree.structure(ours) == jax.tree.structure(xla)
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(xla)):   # bit for bit on CPU
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_offload_budget_is_read_as_every_size_and_checked_before_compiling(monkeypatch):
    from olla_jax.capture import record

    class Compiled(Exception):
        pass

    def no_compile(*args, **kwargs):
        raise Compiled
    monkeypatch.setattr(record, "capture", no_compile)
    for bad in (True, 2.5, -5, "lots"):
        with pytest.raises(ValueError, match="budget"):
            offload.offload(park_across, *ARGS, backend="gpu:h100", budget=bad)
    for good in ("1.5MiB", 2e6, 0, None):
        with pytest.raises(Compiled):
            offload.offload(park_across, *ARGS, backend="gpu:h100", budget=good)


def test_the_modules_the_readme_names_are_reached_from_a_bare_import():
    import subprocess
    import sys
    code = ("import jax, olla_jax\n"
            "print(olla_jax.offload.offload.__name__, olla_jax.gpu_budget.__name__)\n"
            "try:\n    olla_jax.no_such_module\nexcept AttributeError as e:\n    print('ok', e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    assert "offload olla_jax.gpu_budget" in out and "ok module 'olla_jax'" in out


def relu_mlp_loss(params, x):
    """A ReLU MLP's loss: XLA keeps each matmul's output (bias added) and
    recomputes the ReLU and its mask from it inside the readers."""
    for w, b in params:
        x = jax.nn.relu(x @ w + b)
    return (x ** 2).sum()


RELU_MLP_ARGS = ([(jax.ShapeDtypeStruct((256, 256), jnp.float32),
                   jax.ShapeDtypeStruct((256,), jnp.float32))] * 4,
                 jax.ShapeDtypeStruct((512, 256), jnp.float32))


def relu_mlp_step(params, x):
    return jax.grad(relu_mlp_loss)(params, x)


def test_materialized_names_read_the_scoped_entry_computation():
    traced = offload.trace(lambda x, w: jnp.tanh(x @ w) @ w, ARGS)
    eqns = traced.closed.jaxpr.eqns
    assert [e.primitive.name for e in eqns] == ["dot_general", "tanh", "dot_general"]
    hlo = """
%fused (p: f32[256,512]) -> f32[256,512] {
  ROOT %t = f32[256,512]{1,0} tanh(%p), metadata={op_name="jit(f)/olla_e1/tanh"}
}

ENTRY %main (a: f32[256,512], b: f32[512,512]) -> f32[256,512] {
  %a = f32[256,512]{1,0} parameter(0), metadata={op_name="a[0]"}
  %split = f32[4,256,512]{2,1,0} fusion(%a, %b), kind=kCustom, metadata={op_name="jit(f)/olla_e0/dot_general"}
  %d = f32[256,512]{1,0} fusion(%split), kind=kLoop, metadata={op_name="jit(f)/olla_e0/dot_general"}
  ROOT %r = (f32[256,512]{1,0}, f32[8]{0}) fusion(%d, %b), kind=kCustom, metadata={op_name="jit(f)/olla_e2/dot_general"}
}
"""
    # e1 (tanh) only inside a fusion: XLA keeps no buffer of it; a tuple result counts
    assert offload.materialized_names(hlo, traced.closed) == {"e0.0: dot_general",
                                                              "e2.0: dot_general"}


def test_materialized_names_take_none_of_same_sized_outputs_when_fewer_buffers():
    pair = jax.jit(lambda a: (jnp.sin(a), jnp.cos(a)))
    traced = offload.trace(lambda x: pair(x), ARGS[:1])
    assert len(traced.closed.jaxpr.eqns) == 1 and len(traced.closed.jaxpr.eqns[0].outvars) == 2
    line = ('  %f{} = f32[256,512]{{1,0}} fusion(%a), kind=kLoop, '
            'metadata={{op_name="jit(f)/olla_e0/jit(<lambda>)/sin"}}\n')
    one = "ENTRY %main {\n" + line.format(1) + "}\n"
    two = "ENTRY %main {\n" + line.format(1) + line.format(2) + "}\n"
    assert offload.materialized_names(one, traced.closed) == frozenset()
    assert len(offload.materialized_names(two, traced.closed)) == 2


def test_materialized_pick_parks_the_pre_activation_and_rederives_the_relu():
    traced = offload.trace(relu_mlp_step, RELU_MLP_ARGS)
    eqns = traced.closed.jaxpr.eqns
    names = jaxpr_walk.names(traced.closed.jaxpr)
    # as XLA:GPU's step keeps them: the matmuls' outputs, nothing elementwise
    kept = frozenset(n for n in names.values() if n.endswith("dot_general"))
    found = offload.materialized_idle_values(traced.closed, kept)
    assert found
    first = found[0]
    # the matmul's output with the bias added: XLA adds it in the matmul's epilogue
    # (the buffer it keeps, named after the matmul)
    made = eqns[first.defined_at]
    assert made.primitive.name == "add"
    producers = {u: e.primitive.name for e in eqns for u in e.outvars}
    assert "dot_general" in {producers.get(u) for u in made.invars}
    # the ReLU and its mask are computed again on the copy back
    again = {eqns[j].primitive.name for j in first.rederive}
    assert "gt" in again and len(again) >= 2
    assert first.defined_at < min(first.rederive) <= first.park_after
    # the jaxpr pick parks a value XLA fuses away instead (the ReLU's output)
    old = offload.idle_values(traced.closed)[0]
    assert eqns[old.defined_at].primitive.name == "custom_jvp_call"
    assert old.name not in {c.name for c in found}


@pytest.mark.slow   # about 2 s alone (5 s at load 7): two CPU compiles of a training step
def test_rewrite_with_rederived_values_keeps_the_results_on_cpu():
    keys = jax.random.split(jax.random.key(0), 7)
    params = [(jax.random.normal(keys[2 * i], (32, 32)) * 0.3,
               jax.random.normal(keys[2 * i + 1], (32,)) * 0.1) for i in range(3)]
    x = jax.random.normal(keys[6], (16, 32))
    traced = offload.trace(relu_mlp_step, (params, x))
    names = jaxpr_walk.names(traced.closed.jaxpr)
    kept = frozenset(n for n in names.values() if n.endswith("dot_general"))
    parked = offload.materialized_idle_values(traced.closed, kept, min_bytes=1024)[:2]
    assert any(c.rederive for c in parked)
    step = offload.rewrite(relu_mlp_step, (params, x), parked, traced=traced, materialized=kept)
    for a, b in zip(jax.tree.leaves(jax.jit(step)(params, x)),
                    jax.tree.leaves(jax.jit(relu_mlp_step)(params, x))):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


@pytest.mark.slow   # about 15 s: six compile-only H100 compiles of a small training step
@needs_plugin
def test_parking_what_xla_keeps_does_not_raise_device_temp_on_h100():
    # the lever as it was: the jaxpr's pick, XLA's default options
    old = offload.offload(relu_mlp_step, *RELU_MLP_ARGS, backend="gpu:h100", budget=0,
                          max_values=1, pick="jaxpr", latency_hiding=True)
    new = offload.offload(relu_mlp_step, *RELU_MLP_ARGS, backend="gpu:h100", budget=0,
                          max_values=1)
    assert old.xla_temp == new.xla_temp
    # the ReLU's output parked: XLA materializes it to copy it and keeps its input
    # (its device temp rose by 1 KiB here, by 15 MiB on vit:small)
    assert old.tried[0][1] >= old.xla_temp
    # the pre-activation parked (the ReLU and its mask derived again on the copy
    # back), compiled without XLA's latency-hiding scheduler
    assert new.tried[0][1] < 0.8 * new.xla_temp
    assert new.options_temp == new.xla_temp      # the options alone change nothing here
