"""olla_jax.scan_remat: a scan's residual stacks found in the post-autodiff jaxpr,
recomputed in the backward scan bit for bit, and the plan() side that meets a
budget only with them."""

from __future__ import annotations

import numpy as np
import pytest

jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402

import olla_jax  # noqa: E402
from olla_jax import scan_remat  # noqa: E402

L, B, S, D = 4, 2, 64, 32


def _layer(x, w):
    h = x / jnp.sqrt(jnp.mean(x * x, -1, keepdims=True) + 1e-6)   # rmsnorm: sqrt then divide
    a = jax.nn.softmax(jnp.einsum("bsd,btd->bst", h @ w["q"], h @ w["k"]), -1)
    x = x + jnp.einsum("bst,btd->bsd", a, h)
    return x + jnp.tanh(x @ w["m"]), None


def _loss(p, x):
    x, _ = jax.lax.scan(_layer, x, p)
    return jnp.mean(x * x)


def sgd_step(p, x):
    loss, g = jax.value_and_grad(_loss)(p, x)
    return jax.tree.map(lambda a, b: a - 0.1 * b, p, g), loss


def _args():
    k = jax.random.split(jax.random.PRNGKey(0), 4)
    p = {n: jax.random.normal(kk, (L, D, D)) * 0.1 for n, kk in zip("qkm", k)}
    return p, jax.random.normal(k[3], (B, S, D))


def _bits(tree):
    return [np.asarray(x).tobytes() for x in jax.tree.leaves(tree)]


def test_stacks_of_the_forward_scan_read_by_the_backward_one():
    traced = scan_remat.trace(sgd_step, _args())
    found = scan_remat.residual_stacks(traced.closed)
    eqns = traced.closed.jaxpr.eqns
    shapes = {s.shape for s in found}
    assert (L, B, S, S) in shapes          # the attention probabilities, per layer
    for s in found:
        assert eqns[s.forward].primitive.name == "scan" == eqns[s.backward].primitive.name
        assert not eqns[s.forward].params["reverse"] and eqns[s.backward].params["reverse"]
        assert s.shape[0] == L and s.flops > 0
    # the carried layer input is what the others are recomputed from: never dropped
    body = eqns[found[0].forward].params["jaxpr"].jaxpr
    nc, nk = eqns[found[0].forward].params["num_consts"], eqns[found[0].forward].params["num_carry"]
    carry_stack = [k for k, y in enumerate(body.outvars[nk:], nk) if y is body.invars[nc]]
    assert carry_stack and carry_stack[0] not in {s.output for s in found}
    assert [s.score for s in found] == sorted((s.score for s in found), reverse=True)


def test_all_stacks_dropped_same_bits_less_temp():
    args = _args()
    traced = scan_remat.trace(sgd_step, args)
    found = scan_remat.residual_stacks(traced.closed)
    step = scan_remat.rewrite(sgd_step, args, found, traced=traced)
    before, after = (jax.jit(f).lower(*args).compile() for f in (sgd_step, step))
    assert _bits(before(*args)) == _bits(after(*args))
    saved = sum(s.nbytes for s in found)
    assert (after.memory_analysis().temp_size_in_bytes
            <= before.memory_analysis().temp_size_in_bytes - saved // 2)
    # the forward scan no longer emits them
    fwd = [e for e in jax.make_jaxpr(step)(*args).jaxpr.eqns
           if e.primitive.name == "scan" and not e.params["reverse"]]
    assert len(fwd[0].outvars) == len(traced.closed.jaxpr.eqns[found[0].forward].outvars) \
        - len(found)
    assert scan_remat.extra_flops(traced.closed, found) >= max(s.flops for s in found)


@pytest.mark.slow   # ~20 s: the refusal logic is tested fast with fake compiles below
def test_without_the_barriers_the_bits_differ_and_that_set_is_refused(monkeypatch):
    # XLA turns the recomputed x / sqrt(v) into x * rsqrt(v): the gradients differ in
    # their last bits; the lever's child comparison must refuse that rewrite (a smaller
    # set that keeps the bits may be used instead, else nothing is dropped).
    # (min_bytes=0: the small sqrt stack is dropped too, so the divide is recomputed with it)
    monkeypatch.setattr(scan_remat, "_apart", lambda values: values)
    args = _args()
    result = scan_remat.scan_remat(sgd_step, *args, min_bytes=0)
    assert result.candidates in {k for k, _ in result.refused}     # all of them: refused
    assert all("differs" in why for _, why in result.refused)
    if result.dropped:
        assert result.identical and len(result.dropped) < result.candidates
        assert _bits(jax.jit(result.fn)(*args)) == _bits(jax.jit(sgd_step)(*args))
        assert "gave other bits" in result.notes()[0]
    else:
        assert result.differs and not result.identical and result.fn is sgd_step
        assert result.temp == result.xla_temp and "differ" in result.notes()[0]


@pytest.mark.slow   # ~12 s: the lever end to end runs in the plan test below, the
# rewrite of every stack in test_all_stacks_dropped_same_bits_less_temp
def test_lever_meets_a_temp_budget_and_compares_bits():
    args = _args()
    # every stack dropped, the small ones too: the barriers keep the bits (see the test above)
    result = scan_remat.scan_remat(sgd_step, *args, budget=0, min_bytes=0)
    assert result.identical and not result.differs and result.dropped
    assert result.temp < result.xla_temp and result.met is False
    assert _bits(jax.jit(result.fn)(*args)) == _bits(jax.jit(sgd_step)(*args))


def test_a_step_without_scans_has_nothing_to_drop(monkeypatch):
    def plain(w, x):
        return jax.grad(lambda w: jnp.sum(jnp.tanh(x @ w)))(w)
    args = (jnp.ones((256, 256)), jnp.ones((256, 256)))
    assert scan_remat.residual_stacks(scan_remat.trace(plain, args).closed) == ()

    def no_compile(*_, **__):
        raise AssertionError("a step without candidates is traced, not compiled")
    from olla_jax.capture import record
    monkeypatch.setattr(record, "capture", no_compile)
    result = scan_remat.scan_remat(plain, *args, budget=1)
    assert result.xla_temp is None and result.met is None
    assert not result.dropped and result.fn is plain and "no residual" in result.notes()[0]


def test_jitted_step_is_inlined():
    traced = scan_remat.trace(jax.jit(sgd_step), _args())
    assert scan_remat.residual_stacks(traced.closed)


def test_plan_rejects_a_non_bool_flag():
    with pytest.raises(TypeError, match="scan_remat"):
        olla_jax.plan(sgd_step, *_args(), scan_remat="yes")


def test_scan_remat_without_a_budget_is_refused():
    # it is a side of a budget: without one it would be silently ignored
    for call in (lambda: olla_jax.plan(sgd_step, *_args(), scan_remat=True),
                 lambda: olla_jax.jit(sgd_step, scan_remat=True)):
        with pytest.raises(ValueError, match="memory_budget"):
            call()


def test_plan_meets_a_budget_only_with_scan_remat(monkeypatch):
    args = _args()
    free = olla_jax.plan(sgd_step, *args, time_limit_s=5)
    budget = free.runs_total_bytes - free.runs_temp_bytes + free.runs_temp_bytes // 2
    with pytest.raises(olla_jax.BudgetNotMet) as missed:
        olla_jax.plan(sgd_step, *args, time_limit_s=5, memory_budget=budget)
    # the way out is named, with the stacks' bytes (a trace, no compile)
    stacks = scan_remat.residual_stacks(scan_remat.trace(sgd_step, args).closed)
    from olla_jax.sizes import size_text
    assert any(r.startswith("scan_remat=True") and size_text(sum(s.nbytes for s in stacks)) in r
               for r in missed.value.reasons)
    # the lever's compiles and bit comparison count in the call's capture and
    # verification seconds (here made long enough to see)
    import dataclasses
    real = scan_remat.scan_remat

    def slow(*a, **k):
        found = real(*a, **k)
        return dataclasses.replace(found, seconds=found.seconds + 1000,
                                   compare_seconds=found.compare_seconds + 2000)
    monkeypatch.setattr(scan_remat, "scan_remat", slow)
    met = olla_jax.plan(sgd_step, *args, time_limit_s=5, memory_budget=budget, scan_remat=True)
    assert met.runs_total_bytes <= budget
    assert met.capture_seconds >= 1000 and met.verify_seconds >= 2000
    assert any("scan rematerialization" in n and "bit for bit" in n for n in met.notes)
    assert _bits(met.compiled(*args)) == _bits(jax.jit(sgd_step)(*args))
    # the lever's FLOPs are the plan's extra FLOPs (with the planner's own), split in the notes
    lever = met.settings["scan_remat_flops"]
    assert lever > 0 and met.extra_flops >= lever and met.settings["scan_remat_stacks"] >= 1
    split = f"extra FLOPs {met.extra_flops:,}: {lever:,} of scan"
    assert any(n.startswith(split) for n in met.notes)
    assert f"{met.extra_flops:,} extra FLOPs" in met.summary()
    assert "scan residual stack" in met.summary()
    # its program is not jax.jit's: timed against XLA's executable of the user's step
    assert met.step_time_ratio is not None and met.step_time_ratio > 0
    assert f"{met.step_time_ratio:.3f} x XLA's" in met.summary()
    # the headline compares with XLA's temp for jax.jit's program, not the rewrite's
    assert met.xla_temp_bytes == free.xla_temp_bytes > met.xla_best_temp_bytes
    assert "XLA temp, jax.jit's program (best)" in met.summary()
    assert "scan stacks recomputed" in met.summary()


@pytest.mark.slow   # a plan, the lever's compiles and a second plan that misses too
def test_a_budget_missed_with_scan_remat_gives_the_lower_plan():
    # below what dropping every stack reaches: the error's plan is the rewrite's,
    # below the plan without it (it gave the plain plan's total)
    args = _args()
    free = olla_jax.plan(sgd_step, *args, time_limit_s=5)
    budget = free.runs_total_bytes - free.runs_temp_bytes + 1
    with pytest.raises(olla_jax.BudgetNotMet) as missed:
        olla_jax.plan(sgd_step, *args, time_limit_s=5, memory_budget=budget, scan_remat=True)
    least = missed.value.plan
    assert least.settings.get("scan_remat_stacks", 0) >= 1
    assert least.runs_total_bytes < free.runs_total_bytes
    assert missed.value.least_bytes == least.runs_total_bytes
    assert any("misses it too" in r for r in missed.value.reasons)
    assert _bits(least.compiled(*args)) == _bits(jax.jit(sgd_step)(*args))


def _ln_block(x, w):
    # the carried x is not stacked: jax keeps x - mean (computed twice in the body) instead
    mu = jnp.mean(x, -1, keepdims=True)
    n = (x - mu) / jnp.sqrt(jnp.mean((x - mu) ** 2, -1, keepdims=True) + 1e-5)
    return x + jnp.tanh(n @ w["a"]) @ w["b"], None


def ln_step(p, x):
    loss, g = jax.value_and_grad(lambda p: jnp.mean(jax.lax.scan(_ln_block, x, p)[0] ** 2))(p)
    return jax.tree.map(lambda a, b: a - 0.1 * b, p, g), loss


def test_stacks_recomputed_from_an_anchor_when_the_carry_is_not_stacked():
    k = jax.random.split(jax.random.PRNGKey(1), 3)
    args = ({"a": jax.random.normal(k[0], (L, 128, 512)) * 0.05,
             "b": jax.random.normal(k[1], (L, 512, 128)) * 0.05},
            jax.random.normal(k[2], (64, 128)))
    traced = scan_remat.trace(ln_step, args)
    found = scan_remat.residual_stacks(traced.closed)
    assert (L, 64, 512) in {s.shape for s in found}      # tanh's output and its derivative
    step = scan_remat.rewrite(ln_step, args, found, traced=traced)
    before, after = (jax.jit(f).lower(*args).compile() for f in (ln_step, step))
    assert _bits(before(*args)) == _bits(after(*args))
    assert (after.memory_analysis().temp_size_in_bytes
            < before.memory_analysis().temp_size_in_bytes - sum(s.nbytes for s in found) // 2)


@pytest.mark.slow
def test_a_budget_missed_with_scan_remat_says_what_it_dropped():
    with pytest.raises(olla_jax.BudgetNotMet) as info:
        olla_jax.plan(sgd_step, *_args(), time_limit_s=5, memory_budget=100_000,
                      scan_remat=True)
    assert any("scan rematerialization" in r for r in info.value.reasons)


def test_bind_equation_evaluates_a_jaxpr_as_jax_does():
    from jax.extend import core as jex

    from olla_jax import jax_compat
    closed = jax.make_jaxpr(sgd_step)(*_args())
    env = dict(zip(closed.jaxpr.invars, jax.tree.leaves(_args())))
    for eqn in closed.jaxpr.eqns:
        ins = [v.val if isinstance(v, jex.Literal) else env[v] for v in eqn.invars]
        env.update(zip(eqn.outvars, jax_compat.bind_equation(eqn, ins)))
    ours = [env[v] for v in closed.jaxpr.outvars]
    assert _bits(ours) == _bits(jax.core.eval_jaxpr(closed.jaxpr, closed.consts,
                                                    *jax.tree.leaves(_args())))
    scans = [e for e in closed.jaxpr.eqns if e.primitive.name == "scan"]
    p = jax_compat.scan_params(scans[0])
    assert p.length == L and p.reverse is False and p.body.jaxpr.eqns


@pytest.mark.slow   # ~50 s; the default run plans scan_remat in test_plan_meets_a_budget_only...
def test_flax_step_with_keyword_static_and_donated_arguments():
    # jax.jit's contract on the side: x by keyword, lr a static keyword, params donated by name
    nn = pytest.importorskip("flax.linen")

    class Layer(nn.Module):
        @nn.compact
        def __call__(self, x, _):
            h = x / jnp.sqrt(jnp.mean(x * x, -1, keepdims=True) + 1e-6)
            q, k = nn.Dense(D, use_bias=False)(h), nn.Dense(D, use_bias=False)(h)
            x = x + jnp.einsum("bst,btd->bsd", jax.nn.softmax(jnp.einsum(
                "bsd,btd->bst", q, k), -1), h)
            return x + jnp.tanh(nn.Dense(D, use_bias=False)(x)), None

    stack = nn.scan(Layer, variable_axes={"params": 0}, split_rngs={"params": True}, length=L)

    def step(params, x, *, lr):
        loss, g = jax.value_and_grad(
            lambda p: jnp.mean(stack().apply(p, x, None)[0] ** 2))(params)
        return jax.tree.map(lambda a, b: a - lr * b, params, g), loss

    x = jax.random.normal(jax.random.PRNGKey(3), (B, S, D))
    params = stack().init(jax.random.PRNGKey(4), x, None)
    jitted = jax.jit(step, static_argnames="lr", donate_argnames="params")
    ref = _bits(jitted(jax.tree.map(jnp.copy, params), x=x, lr=0.1))
    mem = jitted.lower(params, x=x, lr=0.1).compile().memory_analysis()
    budget = (mem.argument_size_in_bytes + mem.output_size_in_bytes - mem.alias_size_in_bytes
              + mem.temp_size_in_bytes // 2)
    met = olla_jax.plan(step, params, kwargs={"x": x, "lr": 0.1}, static_argnames="lr",
                        donate_argnames="params", time_limit_s=5, memory_budget=budget,
                        scan_remat=True)
    assert met.runs_total_bytes <= budget and met.alias_bytes > 0     # still donated
    assert met.settings["scan_remat_stacks"] >= 1
    assert met.step_time_ratio is not None      # timed with x given by keyword
    assert _bits(met.compiled(jax.tree.map(jnp.copy, params), x=x, lr=0.1)) == ref


@pytest.mark.slow
def test_jit_takes_scan_remat_and_does_not_cache_its_plans(tmp_path):
    with pytest.raises(TypeError, match="scan_remat"):
        olla_jax.jit(sgd_step, scan_remat="yes")
    args = _args()
    mem = jax.jit(sgd_step).lower(*args).compile().memory_analysis()
    budget = (mem.argument_size_in_bytes + mem.output_size_in_bytes
              + mem.temp_size_in_bytes // 2)
    plain = olla_jax.jit(sgd_step, memory_budget=budget, cache=tmp_path)
    step = olla_jax.jit(sgd_step, memory_budget=budget, scan_remat=True, time_limit_s=5,
                        cache=tmp_path)
    assert step._identity != plain._identity        # its own entries in the cache
    met = step.plan_for(*args)
    assert met.runs_total_bytes <= budget and met.settings["scan_remat_stacks"] >= 1
    assert _bits(step(*args)) == _bits(jax.jit(sgd_step)(*args))
    assert not list(tmp_path.rglob("*.json"))       # not jax.jit's program: not cached


def _flax_ln_block(x, w):
    # a layer norm as flax.linen's nn.LayerNorm writes it: rsqrt(var) * scale first (the
    # [B, S, 1] and [1, 1, D] values are stacked, their [B, S, D] product too), then
    # (x - mean) * that
    mean = jnp.mean(x, -1, keepdims=True)
    var = jnp.mean(jnp.square(x), -1, keepdims=True) - jnp.square(mean)
    mul = jax.lax.rsqrt(var + 1e-6) * w["g"].reshape(1, 1, -1)
    return x + jnp.tanh(((x - mean) * mul) @ w["m"]), None


def flax_ln_grad(p, x):
    return jax.grad(lambda p: jnp.mean(jax.lax.scan(_flax_ln_block, x, p)[0] ** 2))(p)


def test_recomputed_broadcast_of_kept_slices_keeps_the_backward_reductions():
    # Recomputing rsqrt(var) * scale in the backward body broadcasts the same two slices
    # that the scale's and the variance's gradients reduce against; unless the slices the
    # recomputation reads are kept apart, XLA merges those broadcasts and the reductions
    # change their last bits (every stack recomputed by one elementwise equation, alone).
    k = jax.random.split(jax.random.PRNGKey(4), 3)
    args = ({"m": jax.random.normal(k[0], (L, D, D)) * 0.1,
             "g": 1 + 0.1 * jax.random.normal(k[1], (L, D))},
            jax.random.normal(k[2], (B, S, D)))
    traced = scan_remat.trace(flax_ln_grad, args)
    single = [s for s in scan_remat.residual_stacks(traced.closed, min_bytes=0)
              if s.flops == np.prod(s.shape)]
    assert len(single) >= 2
    expected = _bits(jax.jit(flax_ln_grad)(*args))
    for s in single:
        step = scan_remat.rewrite(flax_ln_grad, args, [s], traced=traced)
        assert _bits(jax.jit(step)(*args)) == expected, s.name


def test_scan_inside_jax_checkpoint_is_found_and_recomputed():
    # jax.checkpoint around the whole forward: after autodiff its recomputation and the
    # backward scan sit in one remat equation, whose forward scan still stacks residuals
    # for the backward one; the trace inlines it as it does jit calls
    fwd = jax.checkpoint(lambda p, x: jax.lax.scan(_layer, x, p)[0])

    def step(p, x):
        return jax.grad(lambda p: jnp.mean(fwd(p, x) ** 2))(p)
    args = _args()
    traced = scan_remat.trace(step, args)
    found = scan_remat.residual_stacks(traced.closed)
    assert (L, B, S, S) in {s.shape for s in found}
    rewritten = scan_remat.rewrite(step, args, found, traced=traced)
    before, after = (jax.jit(f).lower(*args).compile() for f in (step, rewritten))
    assert _bits(before(*args)) == _bits(after(*args))
    assert (after.memory_analysis().temp_size_in_bytes
            < before.memory_analysis().temp_size_in_bytes - sum(s.nbytes for s in found) // 2)


def test_a_set_whose_bits_differ_falls_back_to_a_smaller_one(monkeypatch):
    # (refine=False: the plain doubling's fallback) bf16 steps do this: one stack's recomputation (the attention logits) changes the
    # last bits, the top stacks without it do not; the set with the least temp differs
    # here, the next one is kept instead of dropping nothing
    real, calls = scan_remat._differs, []

    def first_differs(cap, *rest):
        calls.append(cap.memory.temp)
        return "outputs differ (test)" if len(calls) == 1 else real(cap, *rest)
    monkeypatch.setattr(scan_remat, "_differs", first_differs)
    args = _args()
    result = scan_remat.scan_remat(sgd_step, *args, budget=0, refine=False)
    assert len(calls) == 2 and calls[0] < calls[1]
    assert result.dropped and result.identical and not result.differs
    assert result.temp == calls[1] < result.xla_temp
    assert len(result.dropped) < max(k for k, _ in result.tried)
    assert "gave other bits" in result.notes()[0] and "outputs differ (test)" in result.notes()[0]
    assert _bits(jax.jit(result.fn)(*args)) == _bits(jax.jit(sgd_step)(*args))


def test_a_scan_body_under_checkpoint_has_nothing_to_drop_and_the_note_says_why():
    # nnx.remat / nn.remat / jax.checkpoint on the body: the forward scan stacks only its
    # carry; the note a missed budget carries says so instead of "0 candidate(s)"
    def step(p, x):
        body = jax.checkpoint(_layer)
        return jax.grad(lambda p: jnp.mean(jax.lax.scan(body, x, p)[0] ** 2))(p)
    result = scan_remat.scan_remat(step, *_args(), budget=1)
    assert result.candidates == 0 and not result.dropped
    assert "no residual stack" in result.notes()[0] and "jax.checkpoint" in result.notes()[0]

@pytest.mark.slow
def test_scan_remat_for_a_gpu_target_chooses_by_its_temp_and_says_where_bits_were_compared():
    """For a compile-only GPU target the set is chosen by that target's XLA temp (not
    CPU's), the bits are compared on CPU, and the notes and summary say both."""
    from olla_jax.capture import record
    args = _args()
    gpu_temp = record.capture(sgd_step, *args, backend="gpu:h100").memory.temp
    cpu_temp = record.capture(sgd_step, *args, backend="cpu").memory.temp
    assert gpu_temp != cpu_temp    # else this test could not tell the two apart
    result = scan_remat.scan_remat(sgd_step, *args, budget=0, min_bytes=0, backend="gpu:h100")
    assert result.backend == "gpu:h100" and result.xla_temp == gpu_temp
    assert result.dropped and result.identical and result.temp < gpu_temp
    assert result.temp == dict(result.tried)[len(result.dropped)]
    note = result.notes()[0]
    assert "on gpu:h100" in note and "on CPU only" in note and "built, not run" in note
    # plan() on the target: the lever's set chosen by the GPU temp, the summary says so
    free = olla_jax.plan(sgd_step, *args, backend="gpu:h100", time_limit_s=5)
    budget = free.runs_total_bytes - free.runs_temp_bytes + free.runs_temp_bytes // 2
    met = olla_jax.plan(sgd_step, *args, backend="gpu:h100", time_limit_s=5,
                        memory_budget=budget, scan_remat=True)
    assert met.runs_total_bytes <= budget and met.settings["scan_remat_stacks"] >= 1
    assert any("on gpu:h100" in n and "built, not run" in n for n in met.notes)
    assert "outputs equal jax.jit's on CPU" in met.summary()


def test_scan_remat_refuses_a_backend_it_cannot_compile_for():
    with pytest.raises(olla_jax.OllaJaxError, match="compile-only"):
        scan_remat.scan_remat(sgd_step, *_args(), budget=0, backend="gpu")


def _fake_compiles(monkeypatch, differs_with=None):
    """``record.capture`` without XLA: the temp is jax.jit's less the bytes of the
    stacks dropped; ``_differs`` says other bits for sets holding ``differs_with``.
    Returns the list of the sets compiled (names)."""
    from types import SimpleNamespace

    from olla_jax.capture import record
    base_temp, compiled = 10 * 2 ** 20, []
    real_rewrite = scan_remat.rewrite

    def rewrite(fn, args, dropped, **kw):
        step = real_rewrite(fn, args, dropped, **kw)
        step.dropped = tuple(dropped)
        return step

    def capture(step, *args, **kw):
        dropped = getattr(step, "dropped", ())
        compiled.append({s.name for s in dropped})
        return SimpleNamespace(memory=SimpleNamespace(temp=base_temp - sum(s.nbytes for s in dropped)),
                               names={s.name for s in dropped}, executable=None)

    def differs(cap, *_):
        return "other bits (test)" if differs_with in cap.names else ""
    monkeypatch.setattr(scan_remat, "rewrite", rewrite)
    monkeypatch.setattr(record, "capture", capture)
    monkeypatch.setattr(scan_remat, "_differs", differs)
    return base_temp, compiled


def test_refine_finds_the_smallest_prefix_that_meets_the_budget(monkeypatch):
    # the doubling overshoots (8 stacks meet the budget, 4 do not): the smallest prefix
    # that meets it is found in a bounded number of extra compiles, and costs fewer FLOPs
    base_temp, compiled = _fake_compiles(monkeypatch)
    monkeypatch.setattr(scan_remat, "REFINE_MIN_SHARE", 0.0)    # this step's stacks are cheap
    args = _args()
    stacks = scan_remat.residual_stacks(scan_remat.trace(sgd_step, args).closed, min_bytes=0)
    cum = np.cumsum([s.nbytes for s in stacks])
    smallest = 6
    assert cum[3] < cum[smallest - 1] and cum[smallest - 2] < cum[smallest - 1] < cum[7]
    budget = base_temp - int(cum[smallest - 2] + cum[smallest - 1]) // 2
    plain = scan_remat.scan_remat(sgd_step, *args, budget=budget, min_bytes=0, refine=False)
    doubling = len(compiled)
    fine = scan_remat.scan_remat(sgd_step, *args, budget=budget, min_bytes=0)
    assert [k for k, _ in plain.tried] == [1, 2, 4, 8] and len(plain.dropped) == 8
    assert len(fine.dropped) == smallest and fine.met and fine.identical
    assert fine.dropped == stacks[:smallest]
    assert fine.extra_flops < plain.extra_flops
    assert len(fine.tried) <= 4 + scan_remat.REFINE_PROBES
    assert len(compiled) - doubling == len(fine.tried) + 1      # and jax.jit's own
    assert [set(n) for n in fine.tried_sets] == compiled[doubling + 1:]
    assert f"chosen in {len(fine.tried)} compile(s) of rewrites (1, 2, 4, 8, " in fine.notes()[0]
    # where the FLOPs a probe can save are under that share of the step's, none is spent
    traced = scan_remat.trace(sgd_step, args)
    saved = scan_remat.extra_flops(traced.closed, stacks[:8]) - scan_remat.extra_flops(
        traced.closed, stacks[:5])
    step_flops = sum(scan_remat.eqn_flops(e) for e in traced.closed.jaxpr.eqns)
    monkeypatch.setattr(scan_remat, "REFINE_MIN_SHARE", saved / step_flops)
    gated = scan_remat.scan_remat(sgd_step, *args, budget=budget, min_bytes=0)
    assert gated.tried == plain.tried and gated.dropped == plain.dropped


def test_a_stack_that_changes_the_bits_is_found_and_left_out(monkeypatch):
    # one stack's recomputation changes the bits (a bf16 chain does): instead of giving
    # way to a smaller prefix without it (2 stacks here), it is found by bisection and
    # every other stack is dropped
    args = _args()
    stacks = scan_remat.residual_stacks(scan_remat.trace(sgd_step, args).closed, min_bytes=0)
    bad = stacks[2].name
    _fake_compiles(monkeypatch, differs_with=bad)
    plain = scan_remat.scan_remat(sgd_step, *args, budget=0, min_bytes=0, refine=False)
    assert len(plain.dropped) == 2 and not plain.left_out
    fine = scan_remat.scan_remat(sgd_step, *args, budget=0, min_bytes=0)
    assert fine.left_out == (bad,) and fine.identical
    assert {s.name for s in fine.dropped} == {s.name for s in stacks} - {bad}
    assert fine.temp < plain.temp
    assert all("other bits (test)" == why for _, why in fine.refused)
    assert len(fine.refused) <= 1 + scan_remat.CULPRIT_PROBES
    assert f"left out: {bad}" in fine.notes()[0]


def _bf16_layer(x, w):
    bf = jnp.bfloat16
    w = jax.tree.map(lambda a: a.astype(bf), w)
    h = (x / jnp.sqrt(jnp.mean(x * x, -1, keepdims=True) + 1e-6)).astype(bf)
    a = jax.nn.softmax(jnp.einsum("bsd,btd->bst", h @ w["q"], h @ w["k"]), -1)
    x = x + jnp.einsum("bst,btd->bsd", a, h).astype(x.dtype)
    return x + jnp.tanh(x.astype(bf) @ w["m"]).astype(x.dtype), None


def bf16_step(p, x):
    loss, g = jax.value_and_grad(lambda p: jnp.mean(jax.lax.scan(_bf16_layer, x, p)[0] ** 2))(p)
    return jax.tree.map(lambda a, b: a - 0.1 * b, p, g), loss


@pytest.mark.slow
def test_bf16_stacks_that_change_the_bits_are_left_out_and_the_later_ones_dropped():
    # a bf16 layer: recomputing some stacks changes the gradients' last bits (every set
    # holding one is refused); they are found and left out, and stacks after the first
    # of them in the order are dropped, which no prefix of the order that keeps the bits
    # (the plain doubling's choice) holds
    args = _args()
    stacks = scan_remat.residual_stacks(scan_remat.trace(bf16_step, args).closed, min_bytes=0)
    result = scan_remat.scan_remat(bf16_step, *args, budget=0, min_bytes=0)
    assert result.left_out and result.refused and result.identical
    names = [s.name for s in stacks]
    first = min(names.index(n) for n in result.left_out)
    assert any(names.index(s.name) > first for s in result.dropped)
    assert not set(result.left_out) & {s.name for s in result.dropped}
    assert _bits(jax.jit(result.fn)(*args)) == _bits(jax.jit(bf16_step)(*args))


@pytest.mark.slow
def test_bf16_bits_differ_through_excess_precision():
    # the diagnosis: XLA:CPU computes bf16 ops in float32 and drops the bf16 round trips
    # between them (xla_allow_excess_precision, on by default); a bf16 value recomputed in
    # the backward body is rounded where the forward rounded it no longer: other bits.
    # With it off for both programs, every stack dropped keeps jax.jit's bits.
    args = _args()
    traced = scan_remat.trace(bf16_step, args)
    stacks = scan_remat.residual_stacks(traced.closed, min_bytes=0)
    step = scan_remat.rewrite(bf16_step, args, stacks, traced=traced)
    same = []
    for options in ({}, {"xla_allow_excess_precision": False}):
        before, after = (jax.jit(f).lower(*args).compile(compiler_options=options)
                         for f in (bf16_step, step))
        same.append(_bits(before(*args)) == _bits(after(*args)))
    assert same == [False, True]


def _jit_rnn_layer_step(p, xs):
    # layers in a scan, each a jax.jit function running an RNN over time in an inner
    # scan: the outer forward body is one call whose outputs are the inner scan's
    # stacks, all computed from the layer input, which the body does not stack
    @jax.jit
    def layer(seq, w):
        def cell(h, x):
            h = jnp.tanh(x + h @ w)
            return h, h
        _, ys = jax.lax.scan(cell, jnp.zeros(seq.shape[1:]), seq)
        return seq + ys * ys, None

    def loss(p):
        return jnp.mean(jax.lax.scan(layer, xs, p)[0] ** 2)
    return jax.grad(loss)(p)


def _jit_rnn_layer_args():
    r = np.random.RandomState(3)      # no jax compile for the arguments
    return (jnp.asarray(r.normal(size=(L, 64, 64)) * 0.05, jnp.float32),
            jnp.asarray(r.normal(size=(16, 8, 64)), jnp.float32))


def test_stacks_of_an_inner_scan_in_a_jitted_layer_are_candidates():
    traced = scan_remat.trace(_jit_rnn_layer_step, _jit_rnn_layer_args())
    found = scan_remat.residual_stacks(traced.closed)
    assert (L, 16, 8, 64) in {s.shape for s in found}


@pytest.mark.slow   # ~5 s: two compiles of nested scans
def test_stacks_of_an_inner_scan_in_a_jitted_layer_are_recomputed():
    args = _jit_rnn_layer_args()
    traced = scan_remat.trace(_jit_rnn_layer_step, args)
    forward = [e for e in traced.closed.jaxpr.eqns
               if e.primitive.name == "scan" and not e.params["reverse"]][0]
    assert "scan" in {e.primitive.name for e in forward.params["jaxpr"].jaxpr.eqns}  # inlined
    found = scan_remat.residual_stacks(traced.closed)
    assert (L, 16, 8, 64) in {s.shape for s in found}
    # each recomputes the layer's inner scan: its FLOPs times the time steps, per layer
    assert min(s.flops for s in found) >= L * 16 * 2 * 8 * 64 * 64
    step = scan_remat.rewrite(_jit_rnn_layer_step, args, found, traced=traced)
    before, after = (jax.jit(f).lower(*args).compile() for f in (_jit_rnn_layer_step, step))
    assert _bits(before(*args)) == _bits(after(*args))
    # the layer input is stacked instead (one stack for those dropped)
    assert (after.memory_analysis().temp_size_in_bytes
            < before.memory_analysis().temp_size_in_bytes - sum(s.nbytes for s in found) // 2)


def test_two_scan_pairs_each_keep_their_candidates():
    # an encoder scan and a decoder scan (which reads the encoder's output) in one step:
    # each backward scan gets the stacks of its own forward scan
    def block(x, w):
        return x + jnp.tanh(x @ w[0]) @ w[1], None

    def step(p, x):
        def loss(p):
            enc = jax.lax.scan(block, x, p["enc"])[0]
            return jnp.mean(jax.lax.scan(lambda h, w: block(h + enc, w), x, p["dec"])[0] ** 2)
        return jax.grad(loss)(p)
    r = np.random.RandomState(4)
    w = lambda: (jnp.asarray(r.normal(size=(L, 64, 256)) * 0.1, jnp.float32),  # noqa: E731
                 jnp.asarray(r.normal(size=(L, 256, 64)) * 0.1, jnp.float32))
    args = ({"enc": w(), "dec": w()}, jnp.asarray(r.normal(size=(128, 64)), jnp.float32))
    found = scan_remat.residual_stacks(scan_remat.trace(step, args).closed)
    pairs = {(s.forward, s.backward) for s in found}
    assert len(pairs) == 2 and len({f for f, _ in pairs}) == 2 == len({b for _, b in pairs})
