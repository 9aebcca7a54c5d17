"""advise_donation: candidates from shapes, kept only when XLA's measured total goes down."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

import olla_jax
from olla_jax.capture import capture

REPO = Path(__file__).resolve().parents[1]


def params_and_batch():
    k = jax.random.split(jax.random.key(0), 4)
    params = {"w1": jax.random.normal(k[0], (32, 64)), "w2": jax.random.normal(k[1], (64, 8))}
    batch = (jax.random.normal(k[2], (16, 32)), jax.random.normal(k[3], (16, 8)))
    return params, batch


def nbytes(tree) -> int:
    return sum(leaf.nbytes for leaf in jax.tree_util.tree_leaves(tree))


def total(fn, *args, **kw) -> int:
    return capture(fn, *args, **kw).memory.total


def decay(params, batch):
    """An update that can run in place: donating params saves all of their bytes."""
    return jax.tree.map(lambda w: w * 0.99, params)


def sgd(params, batch):
    x, y = batch

    def loss(p):
        return jnp.mean((jnp.tanh(x @ p["w1"]) @ p["w2"] - y) ** 2)
    grads = jax.grad(loss)(params)
    return jax.tree.map(lambda p, g: p - 0.1 * g, params, grads)


def test_in_place_update_saves_the_params_bytes():
    params, batch = params_and_batch()
    advice = olla_jax.advise_donation(decay, params, batch)
    assert advice.donate_argnums == (0,)
    assert [c.index for c in advice.candidates] == [0]      # the batch matches no output
    (cand,) = advice.candidates
    assert cand.suggested and cand.reusable_bytes == nbytes(params)
    assert {leaf.path for leaf in cand.leaves} == {"['w1']", "['w2']"}
    assert advice.saved_bytes == nbytes(params)
    assert advice.alias_bytes_after == nbytes(params) and advice.alias_bytes_before == 0


def test_sgd_step_suggests_params_and_figures_are_xla_s():
    params, batch = params_and_batch()
    advice = olla_jax.advise_donation(sgd, params, batch)
    assert advice.donate_argnums == (0,) and advice.suggested == (0,)
    # The figures are XLA's totals, compiled here independently.
    assert advice.bytes_before == total(sgd, params, batch)
    assert advice.bytes_after == total(sgd, params, batch, donate_argnums=(0,))
    assert advice.saved_bytes == advice.bytes_before - advice.bytes_after > 0
    # XLA aliases every parameter; the saving may be less (temporaries it parked in
    # the output buffers need room of their own), never more.
    assert advice.alias_bytes_after == nbytes(params)
    assert advice.saved_bytes <= nbytes(params)
    text = advice.summary()
    assert "donate_argnums=(0,)" in text and "must not be used again" in text
    assert "to jax.jit, olla_jax.jit or olla_jax.plan" in text   # the decorator by its name


def test_a_typed_prng_key_argument_is_advised_on_not_a_raw_type_error():
    """A step taking ``jax.random.key`` (a VAE's noise, DP-SGD's) raised
    "Cannot interpret 'key<fry>' as a data type" from the leaf matching; the key
    that the step returns is a candidate like any leaf."""
    def noisy(x, key):   # the key handed on, as a training loop carries it
        return x * 2, key

    advice = olla_jax.advise_donation(noisy, jnp.zeros(256), jax.random.key(0))
    (key_leaf,) = next(c for c in advice.candidates if c.index == 1).leaves
    assert key_leaf.dtype == "key<fry>" and key_leaf.bytes == 8
    assert "key<fry>" in advice.summary()


def test_aliased_but_no_saving_is_not_suggested():
    a, b = jnp.ones((64, 64)), jnp.ones((64, 64))

    def matmul(a, b):       # the product cannot be written over an operand it still reads
        return a @ b
    advice = olla_jax.advise_donation(matmul, a, b)
    assert [c.index for c in advice.candidates] == [0, 1]
    assert not any(c.suggested for c in advice.candidates)
    assert advice.donate_argnums == () and advice.saved_bytes == 0
    for c in advice.candidates:
        assert c.measured_total_bytes == total(matmul, a, b, donate_argnums=(c.index,))
        assert c.measured_saved_bytes <= 0 and "did not go down" in c.note
    assert "nothing to add" in advice.summary()


def test_static_args_are_never_candidates():
    params, _ = params_and_batch()
    like = jax.ShapeDtypeStruct((32, 64), jnp.float32)    # hashable, so it can be static

    def fn(like, params, scale):
        return params["w1"] * scale + jnp.zeros(like.shape, like.dtype)
    # ``like`` comes first and has the output's shape and dtype: only being static keeps it out.
    advice = olla_jax.advise_donation(fn, like, params, 2.0, static_argnums=(0, 2))
    assert [c.index for c in advice.candidates] == [1]
    with pytest.raises(ValueError, match="static and donated"):
        olla_jax.advise_donation(fn, like, params, 2.0, static_argnums=(0, 2), donate_argnums=(0,))


def test_user_donation_is_kept_and_claims_its_outputs():
    params, batch = params_and_batch()
    advice = olla_jax.advise_donation(decay, params, batch, donate_argnums=(0,))
    assert advice.donate_argnums == (0,) and advice.suggested == () and not advice.candidates
    assert advice.bytes_before == advice.bytes_after == total(decay, params, batch,
                                                              donate_argnums=(0,))


def test_errors_say_what_to_do():
    params, batch = params_and_batch()
    with pytest.raises(ValueError, match="plain function"):
        olla_jax.advise_donation(jax.jit(decay), params, batch)
    with pytest.raises(ValueError, match="out of range"):
        olla_jax.advise_donation(decay, params, batch, donate_argnums=(5,))
    with pytest.raises(TypeError, match="compiler_options must be a dict"):   # was dict()'s own
        olla_jax.advise_donation(decay, params, batch, compiler_options="xla_foo")


def olla(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-m", "olla_jax", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.slow   # ~20 s; test_cli.py runs `donate` on a user module by default
def test_cli_donate():
    result = olla("donate", "--example=mlp", "--size=tiny")
    assert result.returncode == 0, result.stderr
    assert "olla_jax donation advice (cpu)" in result.stdout
    assert "argument 0:" in result.stdout and "total:" in result.stdout
    usage = olla("donate")
    assert usage.returncode == 2 and "--example" in usage.stderr


# ---------------------------------------------------------------------------
# A donated step is planned, checked, fed back and exact (issue 18).

def _fresh(tree):
    """Device copies: a donated call consumes its inputs."""
    return jax.tree_util.tree_map(lambda x: jnp.array(x, copy=True), tree)


def _bits(tree):
    import numpy as np
    return [(np.asarray(x).dtype, np.asarray(x).tobytes()) for x in jax.tree_util.tree_leaves(tree)]


def test_donated_flax_step_is_planned_fed_back_and_exact():
    import warnings

    import examples
    step = examples.get("cnn_adam", "tiny")      # flax CNN + optax Adam: (params, opt_state, batch)
    donate = (0, 1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", olla_jax.PlanWarning)
        plan = olla_jax.plan(step.fn, *_fresh(step.args), donate_argnums=donate, time_limit_s=3)
    assert not [w for w in caught if issubclass(w.category, olla_jax.PlanWarning)], plan.notes
    assert plan.alias_bytes > 0                   # XLA aliased the donated inputs to outputs
    assert plan.source == "olla_jax" and plan.verified, plan.notes
    assert not any("checker rejected" in n for n in plan.notes)
    assert plan.achieved_temp_bytes == plan.planned_temp_bytes < plan.xla_best_temp_bytes
    # The plan puts values in donated parameters' idle bytes, as XLA itself does.
    graph = plan.graph
    donated_allocs = {a.index for a in graph.allocations if a.kind == "parameter" and a.live_out}
    assert donated_allocs
    moved_in = {v for v, (alloc, _) in plan.layout.places.items()
                if alloc in donated_allocs and graph.values[v].allocation != alloc}
    assert moved_in, "no value was moved into a donated parameter's allocation"
    # Same results as jax.jit with the same donation, bit for bit; the donation is honoured.
    ours_args, xla_args = _fresh(step.args), _fresh(step.args)
    ours = plan.compiled(*ours_args)
    xla = jax.jit(step.fn, donate_argnums=donate)(*xla_args)
    assert _bits(ours) == _bits(xla)
    assert all(x.is_deleted() for x in jax.tree_util.tree_leaves(ours_args[:2]))


def test_rewrite_lets_values_into_a_donated_parameter_only():
    """XLA parks temporaries in a donated parameter's allocation (it is not read-only);
    the rewrite may put values there too, but moves nothing XLA put in a parameter."""
    from olla_jax.apply import edits
    from olla_jax import dumps
    params, batch = params_and_batch()
    cap = capture(sgd, params, batch, donate_argnums=(0,))
    allocs = list(dumps.parse_hlo_proto(cap.hlo_proto).buffer_assignment.buffer_allocations)
    sizes = {a.index: a.size for a in allocs}
    donated = next(a for a in allocs if a.is_entry_computation_parameter and a.maybe_live_out)
    kept = next(a for a in allocs if a.is_entry_computation_parameter and not a.maybe_live_out)
    temp = next(a for a in allocs if not edits.fixed_kind(a) and not a.maybe_live_out)
    assert edits.donated(donated) and not edits.donated(kept)
    edits.check_move("v", temp.index, 0, donated.index, 0, 64, allocs, sizes, 64)   # accepted
    with pytest.raises(edits.RewriteError, match="parameter"):
        edits.check_move("v", temp.index, 0, kept.index, 0, 64, allocs, sizes, 64)
    with pytest.raises(edits.RewriteError, match="parameter"):
        edits.check_move("v", donated.index, 0, temp.index, 0, 64, allocs, sizes, 64)
