"""``olla_jax.plan`` takes jax.jit's ``static_argnames`` and ``donate_argnames``
as well as the positions: on CPU they go to jax.jit as they are (so they may
name keyword arguments); on a compile-only target, which compiles a positional
call, static keyword arguments are bound into the step, the others follow the
positional ones, names become positions, and a name the call does not pass is
a clear TypeError."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import olla_jax
from tests.marks import needs_plugin


def step(w, x, *, scale, act):
    h = x @ w
    return jnp.sum((jnp.tanh(h) if act == "tanh" else jax.nn.relu(h)) * scale), w - 0.1 * h.mean()


def _args():
    k = jax.random.split(jax.random.PRNGKey(0), 2)
    return jax.random.normal(k[0], (64, 64)), jax.random.normal(k[1], (32, 64))


def test_names_of_keyword_arguments_static_and_donated_on_cpu():
    w, x = _args()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plan = olla_jax.plan(step, w, x, kwargs=dict(scale=2.0, act="tanh"),
                             static_argnames="act", donate_argnames=("w",), time_limit_s=1)
    want = jax.jit(step, static_argnames="act")(w, x, scale=2.0, act="tanh")
    got = plan.compiled(jnp.array(w), x, scale=2.0, act="tanh")
    for a, b in zip(want, got):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert plan.capture.memory.alias > 0         # w was donated (by name)


def test_keyword_arguments_static_and_donated_on_a_compile_only_target():
    w, x = _args()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plan = olla_jax.plan(step, w, kwargs=dict(x=x, scale=2.0, act="tanh"),
                             backend="gpu:h100", static_argnames="act", donate_argnames="w",
                             time_limit_s=1)
    assert plan.capture.memory.alias > 0                 # w was donated (by name)
    assert "tanh" in plan.capture.hlo_text               # act="tanh" was static
    with pytest.raises(TypeError, match="neither keyword arguments"):
        olla_jax.plan(step, w, x, kwargs=dict(scale=1.0, act="relu"), backend="gpu:h100",
                      static_argnames=("mode",), time_limit_s=1)


def test_a_jax_jit_object_keeps_its_own_static_and_donated_arguments_on_a_compile_only_target():
    """A jax.jit object is compiled as its function with its own options (they
    were dropped: its static argument became a tracer and XLA's compile failed)."""
    w, x = _args()
    jitted = jax.jit(step, static_argnames="act", donate_argnums=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plan = olla_jax.plan(jitted, w, x, kwargs=dict(scale=2.0, act="tanh"),
                             backend="gpu:h100", time_limit_s=1)
    assert plan.capture.memory.alias > 0                 # w was donated by the jit's option
    assert "tanh" in plan.capture.hlo_text               # act="tanh" stayed static

    def positional(w, x, scale, act):
        return step(w, x, scale=scale, act=act)
    jitted = jax.jit(positional, static_argnums=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plan = olla_jax.plan(jitted, w, x, 2.0, "relu", backend="gpu:h100", time_limit_s=1)
    assert "tanh" not in plan.capture.hlo_text and plan.capture.memory.alias == 0


def test_keyword_arguments_with_an_nnx_jit_object_on_a_compile_only_target_say_what_to_do():
    """flax.nnx.jit keeps its options where olla_jax cannot read them: a clear
    TypeError before any compile, naming what to pass instead."""
    nnx = pytest.importorskip("flax.nnx")
    w, x = _args()
    with pytest.raises(TypeError, match="flax.nnx.jit-wrapped.*pass the plain function"):
        olla_jax.plan(nnx.jit(step, static_argnames="act"), w, x,
                      kwargs=dict(scale=2.0, act="tanh"), backend="gpu:h100", time_limit_s=1)


def test_names_must_be_strings():
    w, x = _args()
    with pytest.raises(TypeError, match="static_argnames must be a str"):
        olla_jax.plan(step, w, x, static_argnames=(1,), time_limit_s=1)


@needs_plugin
def test_a_bug_in_the_step_on_a_compile_only_target_is_the_users_error_with_its_line():
    """As on CPU: the step's own exception type, its line, not "XLA could not compile"."""

    def buggy(w, x):
        return jnp.sum(x @ w) + jax.no_such_function(w)   # the user's bug
    line = buggy.__code__.co_firstlineno + 1
    with pytest.raises(AttributeError) as info:
        olla_jax.plan(buggy, *_args(), backend="gpu:h100", time_limit_s=1)
    assert isinstance(info.value, olla_jax.CaptureError)
    assert "XLA could not compile" not in str(info.value)
    assert f"(raised at {__file__}:{line}, in buggy)" in str(info.value)


@needs_plugin
def test_argnames_of_parameters_left_to_their_defaults_are_taken_as_jax_jit_takes_them():
    """static_argnames/donate_argnames naming a parameter the call leaves to its
    default: jax.jit accepts it (the default is used), so does a compile-only target."""
    def step2(w, x, *, act="tanh", extra=None):
        return step(w, x, scale=1.0, act=act)
    w, x = _args()
    jax.jit(step2, static_argnames=("act",), donate_argnames=("extra",)).lower(w, x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plan = olla_jax.plan(step2, w, x, backend="gpu:h100", static_argnames=("act",),
                             donate_argnames=("extra",), time_limit_s=1)
    assert "tanh" in plan.capture.hlo_text
