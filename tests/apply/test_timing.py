"""time_ratio() runs both executables interleaved."""

from __future__ import annotations

import math

from olla_jax.apply import controls, cpu_rewrite, executable, load, timing


def test_time_ratio_of_mirrored_mlp(programs):
    p = programs["mlp"]
    new = cpu_rewrite.rewrite(p.raw, controls.mirror_edit(executable.decode(p.raw)))
    # Loading in this process is safe: the same edit is verified in test_verify.
    rewritten = load.load_compiled(p.compiled, new)
    result = timing.time_ratio(p.compiled, rewritten, p.args, repeats=10)
    assert result.repeats == 10
    assert math.isfinite(result.ratio) and result.ratio > 0
    assert result.original_s > 0 and result.rewritten_s > 0


def test_time_ratio_of_a_keyword_call_from_its_flat_leaves():
    """A step planned with keyword arguments is verified on its flat leaves;
    timing rebuilds the call from the executable's input tree (it raised a
    pytree mismatch, so such budget plans had no measured step time)."""
    import jax
    import jax.numpy as jnp

    from olla_jax.budget import feed_back

    def step(w, *, x, scale):
        return {"y": jnp.tanh(x @ w) * scale}

    compiled = jax.jit(step).lower(jnp.ones((8, 8)), x=jnp.ones((4, 8)), scale=2.0).compile()
    leaves = jax.tree_util.tree_leaves(((jnp.ones((8, 8)),), {"x": jnp.ones((4, 8)),
                                                               "scale": 2.0}))
    args, kwargs = feed_back._as_called(compiled, leaves)
    assert len(args) == 1 and sorted(kwargs) == ["scale", "x"]
    result = timing.time_ratio(compiled, compiled, args, repeats=4, kwargs=kwargs)
    assert math.isfinite(result.ratio) and result.ratio > 0
    plain = jax.jit(lambda w, x: jnp.tanh(x @ w)).lower(jnp.ones((8, 8)), jnp.ones((4, 8)))
    args, kwargs = feed_back._as_called(plain.compile(), (jnp.ones((8, 8)), jnp.ones((4, 8))))
    assert len(args) == 2 and kwargs == {}      # a positional call stays as it is
