"""olla_jax.jit and olla_jax.plan as drop-ins for jax.jit: keyword, static and
donated arguments, Lowered and nnx.jit entries, the plan cache, argument checks."""

from __future__ import annotations

import importlib
import json
import os
import warnings
from pathlib import Path
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import olla_jax
from olla_jax import decorator, saved as saved_lib
from small_steps import mlp_args


def step(p, x, y, *, lr=0.01, mode="sgd"):
    def loss(p):
        h = jnp.tanh(x @ p["w1"] + p["b1"])
        return jnp.mean((h @ p["w2"] + p["b2"] - y) ** 2)
    g = jax.grad(loss)(p)
    scale = 1.0 if mode == "sgd" else 0.5
    return jax.tree.map(lambda a, b: a - lr * scale * b, p, g), loss(p)


def positional_step(p, x, y, n):
    return step(p, x, y * n)


def assert_same(got, expected):
    got, expected = jax.tree.leaves(got), jax.tree.leaves(expected)
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        assert np.asarray(a).dtype == np.asarray(b).dtype
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", olla_jax.PlanWarning)
        yield


def test_jit_keywords_static_argnames_and_donate_argnames():
    f = olla_jax.jit(step, static_argnames="mode", donate_argnames="p", time_limit_s=1,
                     cache=False)
    reference = jax.jit(step, static_argnames="mode")
    p, x, y = mlp_args(0)
    expected = reference(p, x, y, lr=0.02, mode="adam")
    got = f(p, x, y=y, lr=0.02, mode="adam")          # positional and keyword mixed
    assert_same(got, expected)
    assert all(a.is_deleted() for a in jax.tree.leaves(p)), "donated inputs are consumed"
    assert not x.is_deleted() and not y.is_deleted()
    planned = f.plan_for(*mlp_args(0)[:2], y=y, lr=0.02, mode="adam")
    assert planned is not None and planned.settings["time_limit_s"] == 1
    # same signature: the same plan, no second planning; a new static value: a new one
    p, x, y = mlp_args(1)
    assert f.plan_for(p, x, y=y, lr=0.5, mode="adam") is planned
    assert_same(f(p, x, y=y, lr=0.5, mode="adam"), reference(*mlp_args(1), lr=0.5, mode="adam"))
    # .lower() is jax's Lowered for the call, donation included
    lowered = f.lower(*mlp_args(0), lr=0.02, mode="adam")
    assert isinstance(lowered, jax.stages.Lowered)
    assert lowered.as_text() == jax.jit(step, static_argnames="mode", donate_argnames="p").lower(
        *mlp_args(0), lr=0.02, mode="adam").as_text()


def test_plan_of_a_jitted_function_with_static_arguments():
    jitted = jax.jit(positional_step, static_argnums=(3,))
    planned = olla_jax.plan(jitted, *mlp_args(0), 3.0, time_limit_s=1)
    assert planned.verified and planned.source == "olla_jax", planned.notes
    assert_same(planned.compiled(*mlp_args(0), 3.0), jitted(*mlp_args(0), 3.0))
    with pytest.raises(ValueError, match="static argument 3"):
        planned.compiled(*mlp_args(0), 4.0)
    # keyword arguments reach the function as jax.jit gives them (here an
    # olla_jax.jit object, split as its jax.jit is)
    kw = olla_jax.jit(step, static_argnames="mode", cache=False)
    p, x, y = mlp_args(2)
    by_name = olla_jax.plan(kw, p, x, kwargs={"y": y, "mode": "adam"}, time_limit_s=1)
    assert_same(by_name.compiled(p, x, y=y, mode="adam"),
                jax.jit(step, static_argnames="mode")(p, x, y=y, mode="adam"))
    with pytest.raises(ValueError, match="'mode'"):
        by_name.compiled(p, x, y=y, mode="sgd")


def test_jit_inside_other_transformations_is_left_to_jax():
    f = olla_jax.jit(lambda x, k: jnp.sin(x) * k, static_argnums=1, cache=False)
    xs = jnp.arange(12.0).reshape(3, 4)
    assert_same(jax.jit(lambda x: f(x, 2) + 1)(xs), jnp.sin(xs) * 2 + 1)
    assert_same(jax.vmap(lambda x: f(x, 3))(xs), jax.jit(lambda x: jnp.sin(x) * 3)(xs))
    assert f._plans == {}, "traced calls are not planned"


def test_debug_nans_raises_floating_point_error_as_jax_jit():
    """jax_debug_nans: jax.jit's FloatingPointError at the op, not jax's internal
    signal from the planned executable (which `except FloatingPointError` misses)."""
    f = olla_jax.jit(lambda x: jnp.log(x - 2.0), cache=False, time_limit_s=1)
    xs = jnp.ones((4, 4))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", olla_jax.PlanWarning)
        f(xs)           # planned with debug_nans off: a NaN is just a value
        jax.config.update("jax_debug_nans", True)
        try:
            with pytest.raises(FloatingPointError, match="nan"):
                f(xs)
        finally:
            jax.config.update("jax_debug_nans", False)
    assert bool(jnp.isnan(f(xs)).all())


def test_clear_cache_as_jax_jit_s():
    """jax.jit objects have clear_cache(); the drop-in too: its plans in memory go."""
    f = olla_jax.jit(lambda x: jnp.sin(x) * 2, cache=False, time_limit_s=1)
    xs = jnp.arange(12.0).reshape(3, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", olla_jax.PlanWarning)
        first = f(xs)
        assert len(f._plans) == 1
        f.clear_cache()
        assert f._plans == {}
        assert_same(f(xs), first)


def test_plan_of_a_lowered():
    jitted = jax.jit(positional_step, static_argnums=(3,))
    lowered = jitted.lower(*mlp_args(0), 3.0)
    planned = olla_jax.plan(lowered, time_limit_s=1)
    assert planned.verified, planned.notes
    # called as lowered.compile() is: the dynamic arguments only
    assert_same(planned.compiled(*mlp_args(1)), lowered.compile()(*mlp_args(1)))
    assert_same(planned.compiled(*mlp_args(1)), jitted(*mlp_args(1), 3.0))
    with pytest.raises(TypeError, match="no arguments"):
        olla_jax.plan(lowered, *mlp_args(0))


def test_plan_of_a_compiled_says_to_pass_the_lowered():
    """Not jax's pytree mismatch from calling the executable with no arguments."""
    compiled = jax.jit(positional_step, static_argnums=(3,)).lower(*mlp_args(0), 3.0).compile()
    with pytest.raises(TypeError, match=r"before XLA compiles it: pass the jax.stages.Lowered"):
        olla_jax.plan(compiled, time_limit_s=1)
    with pytest.raises(TypeError, match=r"not the .compile\(\) result"):
        olla_jax.plan(compiled, *mlp_args(0), time_limit_s=1)


def _nnx_parts():
    optax = pytest.importorskip("optax")
    nnx = pytest.importorskip("flax.nnx")

    class MLP(nnx.Module):
        def __init__(self, rngs):
            self.l1 = nnx.Linear(16, 64, rngs=rngs)
            self.l2 = nnx.Linear(64, 64, rngs=rngs)
            self.l3 = nnx.Linear(64, 4, rngs=rngs)

        def __call__(self, x):
            return self.l3(jnp.tanh(self.l2(jnp.tanh(self.l1(x)))))

    def make():
        model = MLP(nnx.Rngs(0))
        return model, nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)

    def train_step(model, opt, x, y):
        loss, grads = nnx.value_and_grad(lambda m: jnp.mean((m(x) - y) ** 2))(model)
        opt.update(model, grads)
        return loss

    x = jax.random.normal(jax.random.key(1), (64, 16))
    y = jax.random.normal(jax.random.key(2), (64, 4))
    return nnx, make, nnx.jit(train_step), x, y


def test_nnx_jit_step_is_bit_identical():
    nnx, make, nnx_step, x, y = _nnx_parts()
    # olla_jax.jit over nnx.jit plans through olla_jax.plan(nnx_step, model, opt, x, y)
    f = olla_jax.jit(nnx_step, time_limit_s=1, cache=False)
    ours, theirs = make(), make()
    planned = f.plan_for(*ours, x, y)
    assert planned.verified and planned.source == "olla_jax", planned.notes
    assert planned.compiled.wrap is not None, "nnx's Compiled moves the modules' state"
    for _ in range(2):   # the modules' state moves in and out each step
        assert_same(f(*ours, x, y), nnx_step(*theirs, x, y))
    assert_same(nnx.state(ours[0]), nnx.state(theirs[0]))
    assert_same(nnx.state(ours[1]), nnx.state(theirs[1]))
    # the plan itself, called directly, continues the same training
    assert_same(planned.compiled(*ours, x, y), nnx_step(*theirs, x, y))
    assert_same(nnx.state(ours[0]), nnx.state(theirs[0]))



@pytest.mark.slow   # 10-15 s; nnx.jit in the default run: the test above, static
# arguments: test_plan_of_a_jitted_function_with_static_arguments
def test_nnx_jit_step_with_static_arguments_is_bit_identical():
    """nnx.jit's Compiled takes the dynamic arguments only: the static ones
    (here a keyword and a positional one) are its jax.jit's, split as it splits them."""
    nnx, make, _, x, y = _nnx_parts()

    def step(model, opt, x, y, scale, *, mode="mse", w=1.0):
        err = model(x) - y
        loss_of = (lambda e: jnp.mean(e ** 2)) if mode == "mse" else (lambda e: jnp.mean(abs(e)))
        loss, grads = nnx.value_and_grad(lambda m: w * scale * loss_of(m(x) - y))(model)
        opt.update(model, grads)
        return loss + 0 * err.sum()
    nnx_step = nnx.jit(step, static_argnums=4, static_argnames="mode")
    f = olla_jax.jit(nnx_step, time_limit_s=1, cache=False)
    ours, theirs = make(), make()
    for mode in ("mse", "mae", "mse"):
        assert_same(f(*ours, x, y, 2.0, mode=mode, w=0.5),
                    nnx_step(*theirs, x, y, 2.0, mode=mode, w=0.5))
    assert len(f._plans) == 2   # one plan per static value
    assert_same(nnx.state(ours[0]), nnx.state(theirs[0]))
    planned = f.plan_for(*ours, x, y, 2.0, mode="mae", w=0.5)   # the plan already made
    with pytest.raises(ValueError, match="planned for 'mae'"):
        planned.compiled(*ours, x, y, 2.0, mode="mse", w=0.5)


# --- the cache ---------------------------------------------------------------

def _cached_file(f, *args, **kwargs):
    return f._cache / f"{f._file_key(f._key(args, kwargs))}.json"


def test_cache_key_separates_functions_donation_options_and_static_values(tmp_path):
    def train(p, x, y):
        return step(p, x, y)

    def evaluate(p, x, y):
        return step(p, x, y, lr=0.0)

    args = mlp_args(0)
    keys = {_cached_file(olla_jax.jit(fn, cache=tmp_path, **kw), *args).name
            for fn, kw in ((train, {}), (evaluate, {}), (train, {"donate_argnums": 0}),
                           (train, {"engine": "list"}), (train, {"keep_unused": True}))}
    assert len(keys) == 5
    assert _cached_file(olla_jax.jit(train, cache=tmp_path), *args) == \
        _cached_file(olla_jax.jit(train, cache=tmp_path), *mlp_args(1)), "same signature, same key"

    class Mode:   # the same repr for different values: keyed by hash and equality
        def __init__(self, v):
            self.v = v

        def __repr__(self):
            return "Mode"

        def __eq__(self, other):
            return isinstance(other, Mode) and other.v == self.v

        def __hash__(self):
            return hash(self.v)

    f = olla_jax.jit(lambda p, x, y, m: step(p, x, y), static_argnums=3, cache=tmp_path)
    assert f._key(args + (Mode(1),), {}) != f._key(args + (Mode(2),), {})
    assert _cached_file(f, *args, Mode(1)) != _cached_file(f, *args, Mode(2))
    assert f._key(args + (Mode(1),), {}) == f._key(args + (Mode(1),), {})
    assert f._key(args + (1,), {}) != f._key(args + (1.0,), {}) != f._key(args + (True,), {})

    def scaled(k):   # closures over other values are other functions
        return lambda p, x, y: step(p, x, y, lr=k)
    assert _cached_file(olla_jax.jit(scaled(0.1), cache=tmp_path), *args) != \
        _cached_file(olla_jax.jit(scaled(0.2), cache=tmp_path), *args)


def test_numpy_and_uncommitted_arrays_share_a_plan_as_under_jax_jit():
    """jax.jit lowers a NumPy array and an uncommitted jax array alike (its
    sharding is unspecified) and a committed one apart: so do our plans."""
    f = olla_jax.jit(step, time_limit_s=1, cache=False)
    p, x, y = mlp_args(0)
    as_numpy = (jax.tree.map(np.asarray, p), np.asarray(x), np.asarray(y))
    assert f._key((p, x, y), {}) == f._key(as_numpy, {})
    committed = jax.device_put(x, jax.devices()[0])
    assert committed.committed and not x.committed
    assert f._key((p, committed, y), {}) != f._key((p, x, y), {})
    expected = jax.jit(step)(p, x, y)
    assert_same(f(p, x, y), expected)
    assert_same(f(*as_numpy), expected)
    assert len(f._plans) == 1, "the NumPy call reused the first call's plan"


def test_cache_key_is_the_same_in_another_process(tmp_path):
    """The disk key must not depend on the process (hash seeds, addresses)."""
    import subprocess
    import sys
    code = ("import jax, olla_jax, small_steps\n"
            "f = olla_jax.jit(small_steps.mlp_step, static_argnums=2, cache=%r)\n"
            "a = small_steps.mlp_args(0)\n"
            "print(f._file_key(f._key((a[0], a[1], 'mode...'), {})))\n" % str(tmp_path))
    f = olla_jax.jit(__import__("small_steps").mlp_step, static_argnums=2, cache=tmp_path)
    a = mlp_args(0)
    here = f._file_key(f._key((a[0], a[1], "mode..."), {}))
    env = dict(os.environ, PYTHONHASHSEED="12345",
               PYTHONPATH=os.pathsep.join([os.path.dirname(__file__), os.environ.get(
                   "PYTHONPATH", "")]))
    there = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           env=env, check=True).stdout.split()[-1]
    assert there == here


@pytest.fixture(scope="module")
def cache_with_plan(tmp_path_factory):
    """A cache folder holding a verified plan of ``step`` (and its file)."""
    folder = tmp_path_factory.mktemp("cache")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", olla_jax.PlanWarning)
        f = olla_jax.jit(step, time_limit_s=1, cache=folder)
        planned = f.plan_for(*mlp_args(0))
    assert planned.verified, planned.notes
    path = _cached_file(f, *mlp_args(0))
    assert path.is_file()
    return folder, path, planned


def test_cache_entry_that_is_a_folder_is_replaced(cache_with_plan, tmp_path):
    _, good, _ = cache_with_plan
    f = olla_jax.jit(step, time_limit_s=1, cache=tmp_path)
    path = _cached_file(f, *mlp_args(0))
    (path / "inside").mkdir(parents=True)
    assert_same(f(*mlp_args(0)), jax.jit(step)(*mlp_args(0)))
    assert path.is_file() and saved_lib.load_plan(path).fingerprint == \
        saved_lib.load_plan(good).fingerprint


def test_plan_from_the_disk_cache_says_where_it_came_from(cache_with_plan):
    """A later process's plan from the cache is applied, not searched: its
    summary and notes say so and name the file (it read "solve time 0.0 s")."""
    folder, path, first = cache_with_plan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", olla_jax.PlanWarning)
        reused = olla_jax.jit(step, time_limit_s=1, cache=folder).plan_for(*mlp_args(0))
    assert reused.verified and reused.saved_from["path"] == str(path)
    assert reused.saved_from["searched_s"] == first.solve_seconds
    assert "applied from a saved plan" in reused.summary().splitlines()[0]
    assert any(str(path) in n for n in reused.notes), reused.notes


def test_cached_plan_the_checker_rejects_is_planned_again(cache_with_plan, tmp_path):
    _, good, first = cache_with_plan
    f = olla_jax.jit(step, time_limit_s=1, cache=tmp_path)
    path = _cached_file(f, *mlp_args(0))
    data = json.loads(good.read_text())
    data["places"] = {k: [v[0], 0] for k, v in data["places"].items()}   # everything at 0
    path.write_text(json.dumps(data))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        planned = f.plan_for(*mlp_args(0))
    assert not [w for w in caught if "rejected" in str(w.message)], "the refused entry is no news"
    assert planned.verified and planned.source == "olla_jax", planned.notes
    assert planned.planned_temp_bytes == first.planned_temp_bytes
    assert json.loads(path.read_text())["places"] != data["places"], "the bad entry is replaced"
    assert_same(f(*mlp_args(0)), jax.jit(step)(*mlp_args(0)))


def test_stale_file_in_a_read_only_cache_never_breaks_a_call(cache_with_plan, tmp_path,
                                                             monkeypatch):
    f = olla_jax.jit(positional_step, time_limit_s=1, cache=tmp_path)
    path = _cached_file(f, *mlp_args(0), 2.0)
    path.write_text('{"format": "olla_jax.plan", "version": 1, "fingerprint": "stale"}')

    def refuse(*_a, **_k):
        raise PermissionError(13, "Read-only file system")
    os.chmod(tmp_path, 0o555)   # root ignores this: refuse writes and deletes as well
    monkeypatch.setattr(saved_lib, "write_atomic", refuse)
    monkeypatch.setattr(type(path), "unlink", refuse)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            got = f(*mlp_args(0), 2.0)
    finally:
        os.chmod(tmp_path, 0o755)
    assert_same(got, jax.jit(positional_step)(*mlp_args(0), 2.0))
    assert f.plan_for(*mlp_args(0), 2.0) is not None, "planned, only not cached"
    assert any("could not cache" in str(w.message) for w in caught)
    assert path.read_text().endswith('"stale"}')


def test_write_atomic_keeps_the_old_file_when_replacing_fails(tmp_path, monkeypatch):
    path = tmp_path / "plan.json"
    saved_lib.write_atomic(path, "old")
    assert path.read_text() == "old"

    def fail(*_a):
        raise OSError("disk full")
    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError):
        saved_lib.write_atomic(path, "new")
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["plan.json"]


# --- arguments checked up front -----------------------------------------------

@pytest.mark.parametrize("options, error, match", [
    (dict(engine="nope"), ValueError, "unknown engine 'nope'"),
    (dict(time_limit_s=None), TypeError, "time_limit_s"),
    (dict(time_limit_s=-1), ValueError, "time_limit_s"),
    (dict(static_argnums=5), ValueError, "static_argnums has 5"),
    (dict(static_argnums=-4), ValueError, "static_argnums has -4"),
    (dict(static_argnums="0"), TypeError, "static_argnums"),
    (dict(donate_argnums=(0,), static_argnums=(0,)), ValueError, "both static and donated"),
    (dict(backend="cuda"), olla_jax.CaptureError, "unknown backend"),
    (dict(backend=None), olla_jax.CaptureError, "unknown backend"),
    (dict(verify_trials="2"), TypeError, "verify_trials"),
    (dict(verify_trials=0), ValueError, "verify_trials"),
    (dict(verify_trials=1), ValueError, "verify_trials"),
    (dict(memory_budget=-5), ValueError, "memory_budget"),
    (dict(memory_budget=1.5), ValueError, "memory_budget"),
    (dict(memory_budget=float("inf")), ValueError, "whole number of bytes"),
    (dict(saved="plan.json"), TypeError, "load_plan"),
    (dict(saved=saved_lib.SavedPlan("f", "cpu", "default", (), {}, {}, {}, "list", ()),
          backend="gpu:h100"), olla_jax.PlanFileError, "for backend='cpu', not 'gpu:h100'"),
    (dict(feed_back="yes"), TypeError, "feed_back"),
    (dict(compiler_options=["xla_foo"]), TypeError, "compiler_options"),
    (dict(kwargs=[1]), TypeError, "kwargs"),
    (dict(y=1), TypeError, r"no keyword argument y: the step's own keyword arguments go in kwargs"),
    (dict(budget="1GiB"), TypeError, r"no keyword argument budget \(did you mean 'memory_budget'"),
    (dict(time_limit=3), TypeError, r"time_limit \(did you mean 'time_limit_s'\?\)"),
])
def test_plan_checks_every_argument_first(options, error, match):
    with pytest.raises(error, match=match):
        olla_jax.plan(step, *mlp_args(0), **options)


@pytest.mark.parametrize("options, match", [
    (dict(budget="1GiB"), r"\['budget'\] \(did you mean 'memory_budget'\?\)"),
    (dict(time_limt_s=3), r"\(did you mean 'time_limit_s'\?\)"),
    (dict(static_argnum=1), r"\(did you mean 'static_argnums'\?\)"),
    (dict(frobnicate=1), r"\['frobnicate'\]; it takes jax.jit's arguments and"),
])
def test_jit_names_the_option_a_misspelt_keyword_most_likely_meant(options, match):
    """Not 'jax.jit refused these arguments': budget= is olla_jax's memory_budget=."""
    with pytest.raises(TypeError, match=match) as got:
        olla_jax.jit(step, **options)
    assert "jax.jit refused" not in str(got.value)


def test_plan_refuses_what_it_cannot_plan():
    with pytest.raises(TypeError, match="not a int"):
        olla_jax.plan(3, jnp.ones(3))
    with pytest.raises(olla_jax.CaptureError, match="already jax.jit-wrapped"):
        olla_jax.plan(jax.jit(step), *mlp_args(0), static_argnums=(2,))
    with pytest.raises(olla_jax.CaptureError, match=r"argument leaf \[2\]\['y'\] is a str"):
        olla_jax.plan(lambda p, x, d: x, *mlp_args(0)[:2], {"y": "text"})


def test_jit_checks_its_arguments():
    with pytest.raises(TypeError, match=r"unexpected keyword argument\(s\) \['no_such_option'\]"):
        olla_jax.jit(step, no_such_option=1)
    with pytest.raises(ValueError, match="unknown engine"):
        olla_jax.jit(step, engine="fast")
    with pytest.raises(ValueError, match="backend must be 'cpu' or 'gpu'"):
        olla_jax.jit(step, backend="gpu:h100")
    with pytest.raises(ValueError, match="jax.jit refused"):
        olla_jax.jit(step, static_argnums=7)
    with pytest.raises(TypeError, match="cache"):
        olla_jax.jit(step, cache=3)
    assert olla_jax.optimize is not None and isinstance(olla_jax.optimize(step), decorator.Jitted)


def test_jit_of_none_or_a_lowered_says_so_at_once():
    """olla_jax.jit(None) (a factory that returned None) gave back a decorator,
    whose first call then said "not a ArrayImpl" about the step's argument."""
    for wrong, match in ((None, "got None$"), (3, "of type int$"),
                         (jax.jit(jnp.sin).lower(jnp.ones(3)), r"olla_jax.plan\(lowered\)")):
        with pytest.raises(TypeError, match=match):
            olla_jax.jit(wrong)
        with pytest.raises(TypeError, match=match):
            olla_jax.optimize(wrong, time_limit_s=5)
    assert isinstance(olla_jax.jit(time_limit_s=5)(step), decorator.Jitted)
    assert isinstance(olla_jax.optimize(time_limit_s=5)(step), decorator.Jitted)


def test_plan_warnings_name_the_callers_file(monkeypatch):
    tiny = lambda x: jnp.sin(x) * 2   # noqa: E731

    def broken(*args, **kwargs):
        raise RuntimeError("solver bug")
    monkeypatch.setattr(importlib.import_module("olla_jax.plan"), "solve_graph", broken)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        olla_jax.plan(tiny, jnp.ones(8), time_limit_s=1)
        olla_jax.jit(tiny, time_limit_s=1, cache=False)(jnp.ones(16))
    plan_warnings = [w for w in caught if issubclass(w.category, olla_jax.PlanWarning)]
    assert len(plan_warnings) >= 2 and all("solver bug" in str(w.message) for w in plan_warnings)
    assert {w.filename for w in plan_warnings} == {__file__}


def test_a_step_with_nothing_to_plan_is_quiet_and_says_why_in_its_notes():
    """XLA's plan not beaten (a tiny step) is no failure: no PlanWarning from
    olla_jax.jit or olla_jax.plan, the reason in the plan's notes."""
    tiny = lambda x: jnp.sin(x) * 2   # noqa: E731 - nothing to plan: XLA's plan is kept
    f = olla_jax.jit(tiny, time_limit_s=1, cache=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        planned = olla_jax.plan(tiny, jnp.ones(8), time_limit_s=1)
        for n in (16, 32):
            assert_same(f(jnp.ones(n)), jax.jit(tiny)(jnp.ones(n)))
    assert not [w for w in caught if issubclass(w.category, olla_jax.PlanWarning)]
    assert planned.source == "xla"
    for notes in (planned.notes, f.plan_for(jnp.ones(16)).notes):
        assert any("no order and placement below XLA's best" in n for n in notes), notes


def test_cache_key_changes_with_the_planner_code(tmp_path, monkeypatch):
    """A plan cached by other olla_jax code is planned again, not reused."""
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "a.py").write_text("x = 1\n")
    (package / "sub" / "b.py").write_text("y = 2\n")
    before = decorator.source_hash(package)
    assert decorator.source_hash(package) == before
    (package / "sub" / "b.py").write_text("y = 3\n")
    assert decorator.source_hash(package) != before
    assert decorator.planner_identity() == decorator.source_hash(
        Path(decorator.__file__).resolve().parent)

    args = mlp_args(0)
    here = _cached_file(olla_jax.jit(step, cache=tmp_path), *args)
    monkeypatch.setattr(decorator, "planner_identity", lambda: "another planner")
    assert _cached_file(olla_jax.jit(step, cache=tmp_path), *args) != here


def test_a_call_jax_jit_refuses_raises_jaxs_error_and_keeps_the_warning(monkeypatch):
    """A wrong call is the caller's mistake: jax.jit's own error, no 'planning
    failed' warning; a later real planning failure still gets its warning."""
    jitted = olla_jax.jit(step, time_limit_s=1, cache=False)
    p, x, y = mlp_args(0)
    bad_calls = (((p, x, "text"), {}), ((p, x), {}), ((p, x, y), {"no_such": 1}),
                 ((p, x[:, :3], y), {}))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for args, kwargs in bad_calls:
            with pytest.raises(TypeError) as got:
                jitted(*args, **kwargs)
            with pytest.raises(TypeError) as expected:
                jax.jit(step)(*args, **kwargs)
            assert str(got.value) == str(expected.value)
        assert not [w for w in caught if issubclass(w.category, olla_jax.PlanWarning)]

        def fail(*args, **kwargs):
            raise RuntimeError("planner broke")
        monkeypatch.setattr(decorator, "plan_step", fail)
        assert_same(jitted(p, x, y), jax.jit(step)(p, x, y))
    messages = [str(w.message) for w in caught if issubclass(w.category, olla_jax.PlanWarning)]
    assert len(messages) == 1 and "planner broke" in messages[0]


@pytest.mark.parametrize("feed_back", [True, False])
def test_jit_budget_not_met_runs_the_least_memory_plan_with_a_warning(tmp_path, feed_back):
    """A missed memory_budget is no planning failure: the least-memory plan found
    runs (XLA's executable when that plan is not verified), and the warning says
    by how much the budget was missed; a later process re-applies the cached plan."""
    from small_steps import mlp_step
    budget = 1024   # below the arguments alone: no plan meets it
    for attempt in range(2 if feed_back else 1):   # the second: from the cache
        f = olla_jax.jit(mlp_step, memory_budget=budget, time_limit_s=2, cache=tmp_path,
                         feed_back=feed_back)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            got = f(*mlp_args(0))
        assert_same(got, jax.jit(mlp_step)(*mlp_args(0)))
        planned = f.plan_for(*mlp_args(0))
        assert planned is not None, "a missed budget must not fall back to plain jax.jit"
        assert planned.verified == feed_back
        missed = [str(w.message) for w in caught if "memory_budget of 1.0 KiB not met" in
                  str(w.message)]
        assert len(missed) == 1, [str(w.message) for w in caught]
        # one PlanWarning for the signature: why recomputation fell short is in it
        said = [str(w.message) for w in caught if issubclass(w.category, olla_jax.PlanWarning)]
        assert said == missed, said
        if attempt == 0:
            assert "arguments and outputs alone take" in missed[0], missed[0]
        over = planned.runs_total_bytes - budget
        assert f"{olla_jax.sizes.size_text(over)} over" in missed[0]
        assert ("running it" if feed_back else "running XLA's executable") in missed[0]


def test_cache_key_of_a_planned_call_canonicalizes_no_dtype(monkeypatch):
    """The per-call key reads a jax array's aval once, not its dtype, shape and
    weak_type properties and a canonicalized dtype per leaf (most of the drop-in's
    overhead over jax.jit on a many-leaf pytree); it is the same key either way."""
    tree = {f"w{i}": jnp.full((3,), i, dtype) for i, dtype in enumerate(
        [jnp.float32, jnp.bfloat16, jnp.int32, jnp.bool_, jnp.uint8] * 4)}
    tree["weak"] = jnp.asarray(1.0)
    f = olla_jax.jit(lambda t: jax.tree.map(lambda a: a + a, t), cache=False, time_limit_s=1)
    slow = tuple(decorator._leaf(x) for x in jax.tree.leaves(tree))
    assert_same(f(tree), jax.jit(lambda t: jax.tree.map(lambda a: a + a, t))(tree))
    calls = []
    real = jax.dtypes.canonicalize_dtype
    monkeypatch.setattr(jax.dtypes, "canonicalize_dtype",
                        lambda *a, **k: calls.append(a) or real(*a, **k))
    key = f._key((tree,), {}, calling=True)
    assert key[2] == slow and key in f._plans
    f(tree)
    assert calls == [], f"{len(calls)} dtypes canonicalized per call"
    with pytest.raises(decorator._LeftToJax):      # a ShapeDtypeStruct call is jax.jit's
        f._key((jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), tree),), {},
               calling=True)


@pytest.mark.slow   # ~6-12 s; cut from the default run for its 15-minute aim (make test-slow)
def test_jit_under_disable_jit_runs_the_function_as_jax_jit_does():
    """Under jax.disable_jit jax.jit runs the Python function (a debugging aid:
    prints and breakpoints work); the drop-in plans nothing and does the same
    (it ran the AOT executable, which jax refuses there)."""
    seen = []

    def traced(p, x, y):
        seen.append(type(x).__name__)
        return step(p, x, y)
    f = olla_jax.jit(traced, time_limit_s=1, cache=False)
    with jax.disable_jit():
        got = f(*mlp_args(0))
        expected = jax.jit(step)(*mlp_args(0))
    assert not f._plans, "nothing is planned under disable_jit"
    np.testing.assert_allclose(np.asarray(got[1]), np.asarray(expected[1]), rtol=1e-5)
    assert seen and all("Tracer" not in s for s in seen), seen


def test_a_bug_in_the_step_is_the_users_error_with_its_line():
    """olla_jax.jit raises the step's own exception, as jax.jit does; olla_jax.plan
    says it is the step's, names the user's line, and chains the exception."""
    def buggy(p, x):
        h = x @ p["w1"]
        return h + p["missing"]           # the user's bug
    line = buggy.__code__.co_firstlineno + 2
    p, x, _ = mlp_args(0)
    with pytest.raises(KeyError, match="missing"):
        olla_jax.jit(buggy, cache=False, time_limit_s=1)(p, x)
    with pytest.raises(olla_jax.CaptureError) as info:
        olla_jax.plan(buggy, p, x, time_limit_s=1)
    assert f"KeyError: 'missing' (raised at {__file__}:{line}, in buggy)" in str(info.value)
    assert isinstance(info.value.__cause__, KeyError)


def test_xla_plan_kept_by_a_search_is_cached_and_not_searched_again(tmp_path, monkeypatch):
    """Where the search finds nothing below XLA's plan, a later process keeps
    XLA's plan from the cache without searching again (it searched up to its
    whole time limit for nothing); a longer time limit searches again."""
    tiny = lambda x: jnp.sin(x) * 2   # noqa: E731 - nothing to plan: XLA's plan is kept
    first = olla_jax.jit(tiny, time_limit_s=1, cache=tmp_path).plan_for(jnp.ones(8))
    assert first.source == "xla", first.notes

    plan_module = importlib.import_module("olla_jax.plan")
    searched = []

    def search(*args):
        searched.append(args)
        raise AssertionError("searched again")
    monkeypatch.setattr(plan_module, "_warm_starts", search)
    again = olla_jax.jit(tiny, time_limit_s=1, cache=tmp_path)   # as in another process
    kept = again.plan_for(jnp.ones(8))
    assert not searched and kept is not None and kept.source == "xla", kept
    assert any("kept from the plan cache" in n for n in kept.notes), kept.notes
    assert_same(again(jnp.ones(8)), jax.jit(tiny)(jnp.ones(8)))
    assert olla_jax.jit(tiny, time_limit_s=2, cache=tmp_path).plan_for(jnp.ones(8)) is None
    assert searched, "a longer limit searches again"


_FACTORY_KEYS = """
import functools, sys
import jax, jax.numpy as jnp, optax, flax.linen as nn
import olla_jax

def make(lr):   # a step closing over an optimizer and a flax module, as factories make them
    model, opt = nn.Dense(4), optax.adam(lr)
    def step(p, s, x):
        g = jax.grad(lambda p: model.apply(p, x).sum())(p)
        u, s = opt.update(g, s, p)
        return optax.apply_updates(p, u), s
    return model, opt, step

def sgd(p, x, *, opt):
    return p - jax.grad(lambda p: (x @ p).sum())(p), opt

for lr in (1e-3, 1e-2):
    model, opt, step = make(lr)
    x = jnp.ones((2, 3))
    p = model.init(jax.random.key(0), x)
    f = olla_jax.jit(step, cache=sys.argv[1])
    g = olla_jax.jit(functools.partial(sgd, opt=opt), cache=sys.argv[1])
    print(f._file_key(f._key((p, opt.init(p), x), {})), g._file_key(g._key((x, x), {})))
"""


@pytest.mark.slow   # ~6-12 s; cut from the default run for its 15-minute aim (make test-slow)
def test_cache_key_of_a_step_closing_over_an_optimizer_and_a_module_is_the_same_in_another_process(
        tmp_path):
    """A step made by a factory (closing over an optax optimizer and a flax
    module) or a partial with an optimizer: its disk key was their hashes, by
    identity or salted per process, so no later process ever found its plan."""
    import subprocess
    import sys
    keys = [subprocess.run([sys.executable, "-c", _FACTORY_KEYS, str(tmp_path)],
                           capture_output=True, text=True, check=True,
                           env=dict(os.environ, PYTHONHASHSEED=seed)).stdout.split()
            for seed in ("1", "2")]
    assert len(keys[0]) == 4 and keys[0] == keys[1], keys
    assert len(set(keys[0])) == 4, "another learning rate is another entry"


_OBJECT_KEYS = """
import sys
import jax.numpy as jnp, olla_jax

class Scaled:   # hashed by identity, configured by its attributes
    def __init__(self, s):
        self.s, self.name = s, "scaled"
    def __call__(self, w, x):
        return jnp.tanh(x @ w) * self.s
    def step(self, w, x):
        return self(w, x)

w, x = jnp.ones((4, 4)), jnp.ones((2, 4))
for s in (2.0, 3.0, 2.0):
    for fn in (Scaled(s), Scaled(s).step):
        f = olla_jax.jit(fn, cache=sys.argv[1])
        print(f._file_key(f._key((w, x), {})))
"""


def test_cache_key_of_a_callable_object_or_bound_method_is_its_state(tmp_path):
    """Two differently configured objects of one class (same shapes) shared one
    disk entry: each planned again over the other's (the fingerprint check
    refused the other's plan). Their attributes are in the key now, read the
    same in every process."""
    import subprocess
    import sys
    keys = [subprocess.run([sys.executable, "-c", _OBJECT_KEYS, str(tmp_path)],
                           capture_output=True, text=True, check=True,
                           env=dict(os.environ, PYTHONHASHSEED=seed)).stdout.split()
            for seed in ("1", "2")]
    assert len(keys[0]) == 6 and keys[0] == keys[1], keys
    call_2, method_2, call_3, method_3, call_2_again, method_2_again = keys[0]
    assert len({call_2, method_2, call_3, method_3}) == 4, keys[0]
    assert (call_2_again, method_2_again) == (call_2, method_2), "same state, same entry"


def test_cache_key_reads_a_bounded_part_of_a_wide_closure():
    """A closed-over value of many shared parts reads at most a bounded number
    of values, the same text each time."""
    wide: list = [1.0]
    for _ in range(30):
        wide = [wide] * 10
    step = (lambda x: x * len(wide))   # noqa: E731 - closes over ``wide``
    assert decorator.function_identity(step) == decorator.function_identity(step)
    assert "#deep" in decorator._stable(wide)


_JIT_STATIC_KEYS = """
import dataclasses, sys
import jax, jax.numpy as jnp
import olla_jax

@dataclasses.dataclass(frozen=True)
class Static:   # as equinox's eqx.partition leaves a module's static part
    activation: object
    width: int

def step(w, x, static):
    return static.activation(x @ w).sum()

f = olla_jax.jit(step, static_argnums=2, cache=sys.argv[1])
w, x = jnp.ones((4, 4)), jnp.ones((2, 4))
for act in (jax.nn.relu, jax.nn.gelu):
    print(f._file_key(f._key((w, x, Static(act, 4)), {})))
"""


def test_cache_key_of_a_static_jax_jit_function_is_the_same_in_every_process(tmp_path):
    """jax.nn.relu is a jax.jit object: its key read jax's private record of it,
    whose inspect.Signature hashes salted strings, so a step with it in a
    static argument (an equinox module's static part) missed the disk cache in
    every new process."""
    import contextlib
    import io
    import subprocess
    import sys
    here = io.StringIO()   # this process's keys (its own hash salt), then another's
    with contextlib.redirect_stdout(here), mock.patch.object(sys, "argv", ["-c", str(tmp_path)]):
        exec(compile(_JIT_STATIC_KEYS, "<string>", "exec"), {"__name__": "__main__"})
    seed = "2" if os.environ.get("PYTHONHASHSEED") == "1" else "1"
    there = subprocess.run([sys.executable, "-c", _JIT_STATIC_KEYS, str(tmp_path)],
                           capture_output=True, text=True, check=True,
                           env=dict(os.environ, PYTHONHASHSEED=seed)).stdout
    keys = [here.getvalue().split(), there.split()]
    assert len(keys[0]) == 2 and keys[0] == keys[1], keys
    assert keys[0][0] != keys[0][1], "relu and gelu are two programs"
    assert "#" not in decorator._stable(jax.nn.relu)


def test_cache_key_of_a_wrapped_step_is_not_its_inner_functions():
    """jax.grad(loss), jax.vmap(loss) or a functools.wraps decorator over loss
    was keyed as loss alone (the key read under every __wrapped__): two steps
    of one project shared one disk entry and each process planned both again,
    each refusing the other's plan."""
    import functools

    def loss(w, x):
        return jnp.sum(jnp.tanh(x @ w) ** 2)

    def doubled(f):
        @functools.wraps(f)
        def g(*args):
            return f(*args) * 2
        return g

    ident = decorator.function_identity
    wrapped = (jax.grad(loss), jax.grad(loss, argnums=1), jax.value_and_grad(loss),
               jax.vmap(loss), jax.checkpoint(loss), doubled(loss), jax.jit(loss, donate_argnums=0))
    keys = [ident(loss), *map(ident, wrapped)]
    assert len(set(keys)) == len(keys), keys
    assert ident(jax.jit(loss)) == ident(loss), "jax.jit without options is the same program"
    assert ident(jax.vmap(loss)) == ident(jax.vmap(loss))
    # jax.vmap's default axis_name is a bare object(): keyed by its per-process hash
    # it missed the disk cache in every new process
    assert decorator._stable(object()) == decorator._stable(object())


def test_cache_key_of_a_closure_over_an_array_reads_its_contents(monkeypatch):
    """Steps closing over two different arrays (a mask, a table) are two
    programs; keyed by the array's type alone they shared one disk entry and
    each process planned both again."""
    def make(table):
        return lambda x: jnp.tanh(x @ table)

    ident = decorator.function_identity
    ones, twos = jnp.ones((8, 8)), jnp.full((8, 8), 2.0)
    assert ident(make(ones)) != ident(make(twos))
    assert ident(make(ones)) == ident(make(jnp.ones((8, 8)))), "same contents, same entry"
    assert ident(make(np.ones((8, 8), np.float32))) != ident(make(np.ones((8, 8))))
    more_ones = jnp.ones((8, 8))
    with jax.transfer_guard("disallow"):   # read explicitly: no implicit transfer
        assert ident(make(ones)) == ident(make(more_ones))
    monkeypatch.setattr(decorator, "_STABLE_ARRAY_BYTES", 100)   # past the bound: dtype, shape
    assert decorator._stable(ones).endswith("#unread") and ident(make(ones)) == ident(make(twos))


def test_cache_key_reads_the_names_a_function_uses():
    """``lambda x: jnp.sin(x)`` and ``lambda x: jnp.cos(x)`` have the same
    bytecode (only the attribute name differs): they shared one disk entry, and
    a step edited from one to the other kept its key."""
    ident = decorator.function_identity
    assert ident(lambda x: jnp.sin(x)) != ident(lambda x: jnp.cos(x))
    assert ident(lambda x: x.sum()) != ident(lambda x: x.mean())
    assert ident(lambda x: jnp.sin(x)) == ident(lambda x: jnp.sin(x))


def test_cache_key_reads_a_functions_default_values():
    """``def f(x, k=n)`` made per n: jax.jit traces the default in where the
    call leaves it out, but the key did not read it (one disk entry for all)."""
    def make(n):
        def f(x, k=n, *, m=n):
            return x * k * m
        return f

    def make_keyword(n):
        def f(x, *, m=n):
            return x * m
        return f

    ident = decorator.function_identity
    assert ident(make(2)) != ident(make(3)) and ident(make(2)) == ident(make(2))
    assert ident(make_keyword(2)) != ident(make_keyword(3))


def test_cache_key_reads_the_static_data_of_pytree_nodes():
    """A pytree node's static data (a flax TrainState's optimizer) is keyed by
    value: two learning rates in one optimizer's closure are two disk entries,
    the same optimizer built twice one."""
    import dataclasses
    import functools

    def sgd(lr):
        def update(w, g):
            return w - lr * g
        return update

    @functools.partial(jax.tree_util.register_dataclass, data_fields=["w"],
                       meta_fields=["update"])
    @dataclasses.dataclass
    class State:
        w: jax.Array
        update: object

    def step(state, x):
        return state.update(state.w, x)

    f = olla_jax.jit(step, cache=False)
    x = jnp.ones(3)

    def key(lr):
        return f._file_key(f._key((State(x, sgd(lr)), x), {}))
    assert key(0.1) == key(0.1) != key(0.2)


def test_a_static_nan_is_one_key():
    """NaN != NaN: keyed by its value, each call with a fresh NaN planned again."""
    f = olla_jax.jit(lambda x, a: x * a, static_argnums=1, cache=False)
    x = jnp.ones(3)
    one, other = float("nan"), float("nan")
    assert f._key((x, one), {}) == f._key((x, other), {})
    assert f._key((x, one), {}) != f._key((x, 1.0), {})
    assert f._file_key(f._key((x, one), {})) == f._file_key(f._key((x, other), {}))
