"""examples/llama.py: the sharded Llama-style example family (issue 23)."""

from __future__ import annotations

import warnings

import pytest

jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

from examples import common, llama  # noqa: E402

TINY = dict(layers=2, d_model=32, heads=4, kv_heads=2, seq=16, batch=8, vocab=64)


def _real_args(c):
    params = jax.jit(llama.init, static_argnums=1)(common.KEY, c)
    return params, jax.jit(llama.optimizer().init)(params), common.tokens((c.batch, c.seq), c.vocab)


def _stacked(params):
    return dict(params, blocks=jax.tree.map(lambda *xs: jnp.stack(xs), *params["blocks"]))


def test_forward_is_causal_grouped_and_the_same_scanned():
    c = llama.Config(**TINY)
    params, _, tokens = _real_args(c)
    forward = jax.jit(lambda p, t: llama.forward(p, t, c))
    logits = forward(params, tokens)
    changed = tokens.at[:, -1].set((tokens[:, -1] + 1) % c.vocab)
    again = forward(params, changed)
    np.testing.assert_allclose(np.asarray(logits[:, :-1]), np.asarray(again[:, :-1]), atol=1e-5)
    assert not np.allclose(np.asarray(logits[:, -1]), np.asarray(again[:, -1]))
    assert params["blocks"][0]["wk"].shape == (c.d_model, c.kv_heads * c.head_dim)
    scanned = llama.Config(**TINY, scan=True, remat=True)
    np.testing.assert_allclose(np.asarray(jax.jit(lambda p, t: llama.forward(p, t, scanned))(
        _stacked(params), tokens)), np.asarray(logits), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_scanned_and_unrolled_train_steps_agree():
    unrolled = llama.Config(**TINY, scan=False, remat=False)
    scanned = llama.Config(**TINY, scan=True, remat=True)
    params, opt_state, tokens = _real_args(unrolled)
    stacked = _stacked(params)
    a = jax.jit(llama.train_step_fn(unrolled))(params, opt_state, tokens)
    b = jax.jit(llama.train_step_fn(scanned))(stacked, llama.optimizer().init(stacked), tokens)
    assert np.isfinite(float(a[2])) and float(a[2]) > 0
    np.testing.assert_allclose(float(a[2]), float(b[2]), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(a[0]["blocks"][1]["wq"]),
                               np.asarray(b[0]["blocks"]["wq"][1]), rtol=1e-4, atol=1e-6)


def test_shardings_split_what_divides():
    step = llama.make_step(llama.Config(**TINY, scan=True))
    params, opt_state, tokens = llama.shardings(step, "fsdp", 8)
    assert tokens == P("x")
    assert params["blocks"]["w_gate"] == P(None, None, "x")   # (layers, d, ffn): ffn is largest
    assert params["embed"] == P("x")
    dp = llama.shardings(step, "dp", 8)
    assert all(s == P() for s in jax.tree.leaves(dp[:2], is_leaf=lambda s: isinstance(s, P)))
    with pytest.raises(ValueError, match="sharding"):
        llama.shardings(step, "tp", 8)
    with pytest.raises(ValueError, match="batch"):
        llama.shardings(step, "dp", 3)
    with pytest.raises(ValueError, match="kv_heads"):
        llama.Config(heads=4, kv_heads=3)


@pytest.mark.slow
@pytest.mark.parametrize("scan", [False, True])
def test_the_family_plans_for_8_compile_only_gpus(scan):
    olla_jax = pytest.importorskip("olla_jax")
    from olla_jax.capture import gpu
    if gpu.cuda_plugin() is None:
        pytest.skip("jax's CUDA plugin is not installed")
    step = llama.make_step(llama.Config(**TINY, scan=scan, remat=True, constrain=scan))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = olla_jax.plan(step.fn, *step.args, backend="gpu:h100", time_limit_s=2,
                          donate_argnums=step.donate_argnums, num_devices=8,
                          in_shardings=llama.shardings(step, "fsdp", 8), collective_overlap="free")
    assert p.settings["async_pairs"] >= 1            # FSDP: gathers and reductions overlap
    assert p.planned_temp_bytes <= p.xla_best_temp_bytes
    assert not any("not applied" in n or "rejected" in n or "failed" in n for n in p.notes), p.notes
