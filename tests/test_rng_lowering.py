"""Dropout steps on CPU: jax.random's threefry2x32 planned unrolled
(``rng_lowering``), reported and verified against jax.jit's own program."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import olla_jax
from olla_jax import budget, calls, jax_compat
from olla_jax.budget.floors import LOOP_HELD
from tests.small_steps import dropout_step


_step = dropout_step


def _plain(params, x):
    return [w - 1e-3 * g for w, g in zip(params, jax.grad(
        lambda p: jnp.mean(jnp.tanh(x @ p[0] @ p[1]) ** 2))(params))]


def _args(width=128, batch=256):
    ks = jax.random.split(jax.random.key(0), 4)
    params = [jax.random.normal(k, (width, width)) * 0.05 for k in ks[:3]]
    return params, jax.random.normal(ks[3], (batch, width)), jax.random.key(7)


def _same(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _loops(lowered) -> int:
    return jax_compat.rolled_loops(lowered.as_text())


def _plan(fn, *args, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return olla_jax.plan(fn, *args, time_limit_s=2, **options)


def test_the_prng_is_found_in_the_jaxpr_only_where_the_step_uses_it():
    params, x, key = _args()
    assert jax_compat.uses_prng(jax.jit(_step).trace(params, x, key).jaxpr)
    assert jax_compat.uses_prng(jax.jit(_step).trace(params, x, jax.random.PRNGKey(3)).jaxpr)
    assert not jax_compat.uses_prng(jax.jit(_plain).trace(params[:2], x).jaxpr)


def test_lower_call_unrolls_threefry_even_after_the_user_jitted_the_same_function():
    params, x, key = _args()
    user = jax.jit(_step)
    expected = user(params, x, key)            # jax traced, lowered and cached it
    rolled = _loops(user.lower(params, x, key))
    assert rolled > 0                           # jax's CPU lowering: while loops
    entry = calls.lower_call(user, (params, x, key), {}, rng_lowering="unrolled")
    assert entry.jax_lowered is not None and _loops(entry.jax_lowered) == rolled
    assert _loops(entry.lowered) < rolled       # the PRNG's loops are gone
    assert _same(entry.lowered.compile()(params, x, key), expected)
    # the user's jit is untouched: same loops, same outputs
    assert _loops(user.lower(params, x, key)) == rolled
    assert _loops(jax.jit(_step).lower(params, x, key)) == rolled
    assert _same(user(params, x, key), expected)


def test_lower_call_leaves_a_step_without_jax_random_as_it_was():
    params, x, _ = _args()
    ours = calls.lower_call(jax.jit(_plain), (params[:2], x), {}, rng_lowering="unrolled")
    theirs = calls.lower_call(jax.jit(_plain), (params[:2], x), {}, rng_lowering="jax")
    assert ours.jax_lowered is None
    assert ours.lowered.as_text() == theirs.lowered.as_text()


def test_a_step_without_jax_random_plans_the_same_module_either_way():
    params, x, _ = _args()
    ours = _plan(_plain, params[:2], x, feed_back=False)
    theirs = _plan(_plain, params[:2], x, feed_back=False, rng_lowering="jax")
    assert ours.capture.hlo_text == theirs.capture.hlo_text
    assert ours.capture.jax_program is None and ours.jax_program_temp_bytes is None
    assert "rng_lowering" not in ours.settings


def test_dropout_step_planned_unrolled_is_verified_and_bit_identical_to_jax_jit():
    params, x, key = _args()
    user = jax.jit(_step)
    expected = user(params, x, key)
    result = _plan(user, params, x, key)
    assert result.settings.get("rng_lowering") == "unrolled"
    # XLA's figures of both programs; the headline is jax.jit's
    assert result.jax_program_temp_bytes > result.xla_best_temp_bytes
    assert result.xla_temp_bytes == result.jax_program_temp_bytes
    assert result.xla_total_bytes == (result.jax_program_temp_bytes + result.argument_bytes
                                      + result.output_bytes - result.alias_bytes)
    assert result.capture.reference is result.capture.jax_program
    assert "jax.jit's program" in result.summary()
    assert result.verified and result.runs_temp_bytes < result.jax_program_temp_bytes
    assert _same(result.compiled(params, x, key), expected)
    # XLA's executable the step is compared (and timed) with is jax.jit's program's
    assert result.xla_compiled.memory_analysis().temp_size_in_bytes == \
        result.jax_program_temp_bytes
    # the user's jit, after our plan: still jax's rolled loops, same outputs
    assert _loops(user.lower(params, x, key)) > 0
    assert _same(user(params, x, key), expected)


def test_rng_lowering_jax_plans_jax_jits_program():
    params, x, key = _args()
    result = _plan(_step, params, x, key, feed_back=False, rng_lowering="jax")
    assert result.jax_program_temp_bytes is None and result.capture.jax_program is None
    assert result.xla_temp_bytes == result.xla_best_temp_bytes
    assert "while" in result.capture.hlo_text


def test_a_bad_rng_lowering_is_refused_before_compiling():
    params, x, key = _args()
    with pytest.raises(ValueError, match="rng_lowering must be one of 'unrolled', 'jax'"):
        olla_jax.plan(_step, params, x, key, rng_lowering="rolled")
    with pytest.raises(ValueError, match="rng_lowering"):
        olla_jax.jit(_step, rng_lowering="rolled")


def test_olla_jax_jit_passes_rng_lowering_on(tmp_path):
    params, x, key = _args()
    fn = olla_jax.jit(_step, time_limit_s=2, cache=str(tmp_path), feed_back=False,
                      rng_lowering="jax")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = fn.plan_for(params, x, key)
    assert result.jax_program_temp_bytes is None and "while" in result.capture.hlo_text


def test_verification_compares_with_jax_jits_program_not_the_planned_one():
    """A capture whose jax.jit program computes other outputs: the rewritten
    executable of the planned program must then fail verification."""
    import dataclasses
    from olla_jax.apply import feed_back
    from olla_jax.graph.layout import xla_layout

    def other(params, x, key):      # same signature, other bits (keep rate 0.8)
        return [w + 1.0 for w in _step(params, x, key)]
    params, x, key = _args()
    result = _plan(_step, params, x, key, feed_back=False)
    cap = result.capture
    assert feed_back.apply_layout(cap, xla_layout(result.graph), args=(params, x, key)).ok
    wrong = _plan(other, params, x, key, feed_back=False, rng_lowering="jax").capture
    outcome = feed_back.apply_layout(dataclasses.replace(cap, jax_program=wrong),
                                     xla_layout(result.graph), args=(params, x, key))
    assert not outcome.ok and "jax.jit's program" in outcome.reason


def test_unrolled_dropout_bits_are_fusions_recomputation_can_copy():
    """Rolled, the masks' bits are while loops' results held at the peak;
    unrolled, XLA fuses them into the dropout's select, a recomputation candidate."""
    from olla_jax.budget.candidates import op_names
    params, x, key = _args()
    rolled = _plan(_step, params, x, key, feed_back=False, rng_lowering="jax")
    unrolled = _plan(_step, params, x, key, feed_back=False)

    def loop_held(p) -> int:
        return dict(budget.held_at_peak(p.graph, p.capture).by_reason).get(LOOP_HELD, 0)
    assert loop_held(rolled) > 0 and loop_held(unrolled) == 0
    assert " while(" in rolled.capture.hlo_text and " while(" not in unrolled.capture.hlo_text
    g = unrolled.graph
    candidates = {g.nodes[c.producer] for c in budget.candidates(g, unrolled.capture)}
    dropped = [n for n, op in op_names(unrolled.capture, g.nodes).items()
               if op.endswith("jvp(jit(_where))/select_n")]
    assert dropped and set(dropped) <= candidates, (dropped, candidates)


def test_jax_imported_and_used_before_olla_jax():
    code = (
        "import warnings, jax, jax.numpy as jnp, numpy as np\n"
        "def step(w, x, key):\n"
        "    keep = jax.random.bernoulli(key, 0.9, (x.shape[0], w.shape[1]))\n"
        "    return jax.grad(lambda w: jnp.mean(jnp.where(keep, jnp.tanh(x @ w), 0.) ** 2))(w)\n"
        "w, x, key = jnp.ones((64, 64)) * .01, jnp.ones((128, 64)), jax.random.key(1)\n"
        "user = jax.jit(step); want = user(w, x, key)\n"
        "import olla_jax\n"
        "warnings.simplefilter('ignore')\n"
        "p = olla_jax.plan(user, w, x, key, time_limit_s=1)\n"
        "assert p.jax_program_temp_bytes is not None, p.notes\n"
        "assert np.array_equal(p.compiled(w, x, key), want)\n"
        "assert 'stablehlo.while' in user.lower(w, x, key).as_text()\n"
        "print('ok', p.verified)\n")
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0 and "ok" in done.stdout, done.stderr[-2000:]


def test_xla_plan_of_the_unrolled_program_runs_only_verified(monkeypatch):
    """Where no order and placement beats XLA's plan of the unrolled program
    but that is below jax.jit's, XLA's own plan of it is fed back and verified
    against jax.jit's program; with rng_lowering="jax" the same is XLA's plan."""
    import dataclasses
    plan_module = sys.modules["olla_jax.plan"]
    from olla_jax.graph.layout import xla_layout
    real = plan_module.solve_graph

    def xla_only(graph, **kw):      # a solver that finds nothing below XLA's plan
        return dataclasses.replace(real(graph, **kw), layout=xla_layout(graph), engine="xla")
    monkeypatch.setattr(plan_module, "solve_graph", xla_only)
    params, x, key = _args()
    expected = jax.jit(_step)(params, x, key)
    result = _plan(_step, params, x, key)
    assert result.source == "olla_jax" and result.verified
    assert result.runs_temp_bytes == result.xla_best_temp_bytes < result.jax_program_temp_bytes
    assert any("XLA's own plan of it is fed back" in n for n in result.notes)
    assert _same(result.compiled(params, x, key), expected)
    kept = _plan(_step, params, x, key, rng_lowering="jax")
    assert kept.source == "xla" and kept.runs_temp_bytes == kept.xla_temp_bytes


def test_a_plan_not_fed_back_runs_jax_jits_program():
    params, x, key = _args()
    result = _plan(_step, params, x, key, feed_back=False)
    assert result.jax_program_temp_bytes is not None
    assert result.compiled.executable is result.capture.jax_program.compiled


@pytest.mark.slow
def test_flax_nnx_dropout_step_planned_unrolled_is_bit_identical():
    nnx = pytest.importorskip("flax.nnx")
    optax = pytest.importorskip("optax")

    class MLP(nnx.Module):
        def __init__(self, rngs):
            self.layers = nnx.List([nnx.Linear(64, 64, rngs=rngs) for _ in range(2)])
            self.drop = nnx.Dropout(0.1, rngs=rngs)

        def __call__(self, x):
            for layer in self.layers:
                x = self.drop(jnp.tanh(layer(x)))
            return x

    def make():
        model = MLP(nnx.Rngs(0, dropout=1))
        return model, nnx.Optimizer(model, optax.sgd(1e-3), wrt=nnx.Param)

    def train_step(model, opt, x):
        loss, grads = nnx.value_and_grad(lambda m: jnp.mean(m(x) ** 2))(model)
        opt.update(model, grads)
        return loss
    x = jnp.ones((128, 64))
    model, opt = make()
    expected = [nnx.jit(train_step)(model, opt, x) for _ in range(2)]
    model, opt = make()
    result = _plan(nnx.jit(train_step), model, opt, x)
    assert result.jax_program_temp_bytes is not None and result.verified, result.notes
    assert [result.compiled(model, opt, x) for _ in range(2)] == expected


def test_a_jax_without_the_internals_keeps_jax_jits_program(monkeypatch):
    """Where jax's threefry lowering rule is not where jax 0.10 keeps it (a
    later jax), the step is planned as jax.jit lowers it, quietly."""
    from jax._src.random import threefry2x32
    monkeypatch.delattr(threefry2x32, "_threefry2x32_lowering_rule")
    params, x, key = _args()
    entry = calls.lower_call(jax.jit(_step), (params, x, key), {}, rng_lowering="unrolled")
    assert entry.jax_lowered is None and _loops(entry.lowered) > 0


@pytest.mark.slow   # ~6-12 s; cut from the default run for its 15-minute aim (make test-slow)
def test_a_saved_unrolled_plan_is_applied_again_and_says_so(tmp_path):
    params, x, key = _args()
    first = _plan(_step, params, x, key)
    first.save(tmp_path / "p.json")
    saved = olla_jax.load_plan(tmp_path / "p.json")
    assert "jax_program_temp_bytes" in saved.summary()
    again = _plan(_step, params, x, key, saved=saved)
    assert again.verified and again.runs_temp_bytes == first.runs_temp_bytes
    assert again.jax_program_temp_bytes == first.jax_program_temp_bytes
    with pytest.raises(olla_jax.PlanFileError, match="rng_lowering"):
        _plan(_step, params, x, key, saved=saved, rng_lowering="jax")


@pytest.mark.parametrize("above", [0, 64 * 1024], ids=["at", "above"])
def test_an_unrolled_program_not_below_jax_jits_runs_jax_jits_program(monkeypatch, above):
    """Where XLA plans the unrolled program at or above jax.jit's own (forced:
    jax.jit's program's figure set to the unrolled one's best, or below it, and
    a solver that finds nothing below XLA's plan), no plan is kept: the step
    runs XLA's executable of jax.jit's program, the rolled loop, same outputs."""
    import dataclasses
    plan_module = sys.modules["olla_jax.plan"]
    from olla_jax.graph.layout import xla_layout
    real_solve, real_compile = plan_module.solve_graph, plan_module._compile_baselines

    def xla_only(graph, **kw):
        return dataclasses.replace(real_solve(graph, **kw), layout=xla_layout(graph), engine="xla")

    def rigged(*args, **kw):        # jax.jit's program's temp: the unrolled best, less `above`
        caps = real_compile(*args, **kw)
        temp = min(c.memory.temp for c in caps) - above
        return [dataclasses.replace(c, jax_program=dataclasses.replace(
            c.jax_program, memory=dataclasses.replace(c.jax_program.memory, temp=temp)))
            for c in caps]
    monkeypatch.setattr(plan_module, "solve_graph", xla_only)
    monkeypatch.setattr(plan_module, "_compile_baselines", rigged)
    params, x, key = _args(width=64, batch=64)
    expected = jax.jit(_step)(params, x, key)
    result = _plan(_step, params, x, key)
    assert result.jax_program_temp_bytes == result.xla_best_temp_bytes - above
    assert result.source == "xla" and not result.verified
    assert result.runs_temp_bytes == result.xla_temp_bytes == result.jax_program_temp_bytes
    assert any("jax.jit's own program is kept" in n for n in result.notes), result.notes
    assert result.compiled.executable is result.xla_compiled.executable
    assert " while(" in result.compiled.executable.as_text()    # jax.jit's rolled loops
    assert _same(result.compiled(params, x, key), expected)


@pytest.mark.slow   # ~6-12 s; cut from the default run for its 15-minute aim (make test-slow)
def test_a_compile_only_gpu_target_lowers_the_dropout_step_as_jax_does(monkeypatch):
    """threefry2x32 is unrolled for CPU only: for ``gpu:h100`` the step is
    lowered by jax.jit alone, the same module with either rng_lowering."""
    lowered_texts, unrolled_calls = [], []
    real_lower = calls.lower_traced

    def recording(jitted, args, kwargs):
        lowered = real_lower(jitted, args, kwargs)
        lowered_texts.append(lowered.as_text())
        return lowered
    monkeypatch.setattr(calls, "lower_traced", recording)
    monkeypatch.setattr(jax_compat, "lower_threefry_unrolled",
                        lambda traced: unrolled_calls.append(traced))
    params, x, key = _args(width=64, batch=64)
    plans = {}
    for rng in ("unrolled", "jax"):
        lowered_texts.clear()
        plans[rng] = _plan(_step, params, x, key, backend="gpu:h100", feed_back=False,
                           rng_lowering=rng)
        plans[rng + " lowered"] = list(lowered_texts)
    assert not unrolled_calls
    assert plans["unrolled lowered"] and plans["unrolled lowered"] == plans["jax lowered"]
    assert plans["unrolled"].capture.hlo_text == plans["jax"].capture.hlo_text
    assert plans["unrolled"].jax_program_temp_bytes is None
    assert plans["unrolled"].capture.jax_program is None
    assert "rng_lowering" not in plans["unrolled"].settings


def test_jax_jits_program_is_compiled_without_dumps_to_the_same_figures(monkeypatch):
    """Beside the unrolled program, jax.jit's own is compiled for its figures and
    executable only (capture.base.ProgramCompile): no dump folder, the same
    memory figures as a compile with dumps, an executable to verify against."""
    from olla_jax.capture import base, record
    params, x, key = _args(width=64, batch=64)
    entry = calls.lower_call(jax.jit(_step), (params, x, key), {}, rng_lowering="unrolled")
    dumped = record.capture_lowered(entry.jax_lowered, scheduler="memory")
    folders = []
    real = record.tempfile.mkdtemp
    monkeypatch.setattr(record.tempfile, "mkdtemp", lambda *a, **k: folders.append(1) or real(*a, **k))
    plain = record.compile_without_dumps(entry.jax_lowered, scheduler="memory")
    assert not folders and isinstance(plain, base.ProgramCompile)
    assert plain.memory == dumped.memory and plain.executable
    with record.sharing_compiles() as store:     # olla_jax.batch's probes compile it once
        first = record.compile_without_dumps(entry.jax_lowered, scheduler="memory")
        again = record.compile_without_dumps(entry.jax_lowered, scheduler="memory")
    assert again is first and (store.misses, store.hits) == (1, 1)
    result = _plan(_step, params, x, key, feed_back=False)
    assert isinstance(result.capture.jax_program, base.ProgramCompile)
    assert result.capture.jax_program.scheduler == result.capture.scheduler


def test_an_unrolled_program_whose_results_differ_plans_jax_jits_program(monkeypatch):
    """Where XLA's executable of the unrolled program does not reproduce jax.jit's
    results (forced: the unrolled lowering is of a step that scales its outputs;
    seen on a diffusion UNet step, XLA compiling the arithmetic after the random
    bits differently), jax.jit's program is planned (verified where a plan applies), not XLA's
    executable kept after a plan of the other program failed its verification
    (this small step's rolled program holds a tuple table in temp, so no plan of
    it applies; the diffusion step's did and was verified)."""
    real = calls.threefry_unrolled

    def other(params, x, key):
        return [w * 1.0001 for w in _step(params, x, key)]
    monkeypatch.setattr(calls, "threefry_unrolled",
                        lambda jitted, args, kwargs, lowered: real(jax.jit(other), args, kwargs,
                                                                   lowered))
    params, x, key = _args(width=64, batch=64)
    expected = jax.jit(_step)(params, x, key)
    result = _plan(_step, params, x, key)
    assert result.jax_program_temp_bytes is None and "while" in result.capture.hlo_text
    assert any("does not reproduce jax.jit's results" in n for n in result.notes), result.notes
    assert result.xla_temp_bytes == result.xla_best_temp_bytes
    assert result.compiled.executable is result.xla_compiled.executable
    assert _same(result.compiled(params, x, key), expected)
