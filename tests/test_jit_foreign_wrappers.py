"""olla_jax.jit and olla_jax.plan over jit wrappers other than jax.jit, as model
libraries make them (equinox's ``filter_jit`` makes every leaf that is not an
array static), reduced here to plain jax."""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import olla_jax
from tests.marks import needs_plugin


def _is_array(x: Any) -> bool:
    return isinstance(x, (jax.Array, np.ndarray, np.generic))


def _split(args: tuple) -> tuple[list, tuple, Any]:
    """Array leaves (traced) and the others (static, by value), as filter_jit splits."""
    leaves, tree = jax.tree_util.tree_flatten(args)
    dynamic = [x if _is_array(x) else None for x in leaves]
    static = tuple(None if _is_array(x) else x for x in leaves)
    return dynamic, static, tree


@dataclasses.dataclass(frozen=True)
class _Compiled:
    compiled: Any

    def __call__(self, *args):
        dynamic, _, _ = _split(args)
        return self.compiled(dynamic)


@dataclasses.dataclass(frozen=True)
class _Lowered:
    lowered: Any

    def compile(self, compiler_options=None):
        return _Compiled(self.lowered.compile(compiler_options=compiler_options))

    def as_text(self):
        return self.lowered.as_text()


class StaticLeavesJit:
    """A jit wrapper whose non-array leaves are static (baked into the program)."""

    def __init__(self, fn: Callable):
        self.fn = fn

        def inner(dynamic, static, tree):
            leaves = [d if s is None else s for d, s in zip(dynamic, static)]
            return fn(*jax.tree_util.tree_unflatten(tree, leaves))
        self._inner = jax.jit(inner, static_argnums=(1, 2))

    def __call__(self, *args):
        dynamic, static, tree = _split(args)
        return self._inner(dynamic, static, tree)

    def lower(self, *args):
        dynamic, static, tree = _split(args)
        return _Lowered(self._inner.lower(dynamic, static, tree))


def scaled(x, a, act):
    return act(x * a).sum() * 2.0 + x


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", olla_jax.PlanWarning)
        yield


def test_a_wrappers_static_python_scalar_is_part_of_the_signature():
    """2.0 and 3.0 are two programs to such a wrapper: the second call ran the
    first's plan (the scalar keyed by its type only), a wrong result."""
    wrapped = StaticLeavesJit(scaled)
    jitted = olla_jax.jit(wrapped, time_limit_s=1, cache=False)
    x = jnp.linspace(-1.0, 1.0, 64).reshape(8, 8)
    for a in (2.0, 3.0, 2.0):
        np.testing.assert_array_equal(np.asarray(jitted(x, a, jax.nn.relu)),
                                      np.asarray(wrapped(x, a, jax.nn.relu)))
    assert len(jitted._plans) == 2


def test_a_wrappers_static_function_leaf_is_part_of_the_signature():
    """relu and relu6 are both jax custom_jvp objects: one type, two programs."""
    wrapped = StaticLeavesJit(scaled)
    jitted = olla_jax.jit(wrapped, time_limit_s=1, cache=False)
    x = jnp.linspace(-4.0, 4.0, 64).reshape(8, 8)
    for act in (jax.nn.relu, jax.nn.relu6):
        np.testing.assert_array_equal(np.asarray(jitted(x, 5.0, act)),
                                      np.asarray(wrapped(x, 5.0, act)))


def test_a_wrappers_static_leaves_key_the_disk_cache_by_value(tmp_path):
    """Another process (here: another Jitted over the same folder) must not take
    the plan cached for another static value."""
    x = jnp.linspace(-4.0, 4.0, 64).reshape(8, 8)
    wrapped = StaticLeavesJit(scaled)
    olla_jax.jit(wrapped, time_limit_s=1, cache=tmp_path)(x, 2.0, jax.nn.relu)
    later = olla_jax.jit(StaticLeavesJit(scaled), time_limit_s=1, cache=tmp_path)
    np.testing.assert_array_equal(np.asarray(later(x, 3.0, jax.nn.relu6)),
                                  np.asarray(wrapped(x, 3.0, jax.nn.relu6)))
    assert len(list(tmp_path.glob("*.json"))) == 2


def test_jax_jits_python_scalars_stay_dynamic_one_plan():
    """For jax.jit a Python float is a traced argument: one plan for every value."""
    jitted = olla_jax.jit(lambda x, a: x * a, time_limit_s=1, cache=False)
    x = jnp.ones((4, 4))
    for a in (2.0, 3.0):
        np.testing.assert_array_equal(np.asarray(jitted(x, a)), np.asarray(x * a))
    assert len(jitted._plans) == 1


def test_a_wrappers_own_attributes_do_not_replace_the_jitted_objects():
    """functools.update_wrapper copies the wrapped object's __dict__: a wrapper
    holding its inner jit as ``_jitted`` (or a ``_backend``) replaced olla_jax's own,
    so the call lowered the inner jit with the outer call's arguments."""
    wrapped = StaticLeavesJit(scaled)
    wrapped._jitted, wrapped._backend = wrapped._inner, "tpu"
    jitted = olla_jax.jit(wrapped, time_limit_s=1, cache=False)
    x = jnp.linspace(-1.0, 1.0, 64).reshape(8, 8)
    np.testing.assert_array_equal(np.asarray(jitted(x, 2.0, jax.nn.relu)),
                                  np.asarray(wrapped(x, 2.0, jax.nn.relu)))
    assert jitted.plan_for(x, 2.0, jax.nn.relu) is not None


@needs_plugin
def test_a_compile_only_target_refuses_a_wrapper_with_static_leaves_saying_what_to_do():
    """A compile-only target compiles the wrapper's function under jax.jit: the
    wrapper's static leaves (its function) were refused as 'not an array ...
    mark it static (static_argnums)', though the wrapper marks them itself."""
    x = jnp.ones((8, 8))
    with pytest.raises(TypeError, match=r"argument leaf \[1\] is a float, not an array(.|\n)*"
                                        r"not jax\.jit(.|\n)*backend='cpu'(.|\n)*static_argnums"):
        olla_jax.plan(StaticLeavesJit(scaled), x, 2.0, jax.nn.relu, backend="gpu:h100",
                      time_limit_s=1)


def test_largest_batch_takes_a_wrapper_whose_compiled_holds_jaxs():
    """The quick probes read memory_analysis() of the wrapper's Compiled, which
    holds jax's (equinox's does): an AttributeError traceback before."""
    def make_step(b, wrap):
        return wrap(scaled), (jnp.ones((b, 64)), 2.0, jax.nn.relu)

    def plain(fn):
        return jax.jit(fn, static_argnums=(1, 2))

    capacity = 64 * 1024
    got = olla_jax.largest_batch(lambda b: make_step(b, StaticLeavesJit),
                                 capacity_bytes=capacity, modes=("xla",), high=256)
    expected = olla_jax.largest_batch(lambda b: make_step(b, plain), capacity_bytes=capacity,
                                      modes=("xla",), high=256)
    assert got.largest("xla") == expected.largest("xla") is not None


def test_largest_batch_takes_a_jax_jit_with_its_own_static_argnums():
    """The full compiles checked the arguments without the jit's own static
    positions: 'argument leaf [1] is a str, not an array ... mark it static'."""
    def step(x, act):
        return getattr(jax.nn, act)(x).sum()

    report = olla_jax.largest_batch(
        lambda b: (jax.jit(step, static_argnums=1), (jnp.ones((b, 64)), "relu")),
        capacity_bytes=64 * 1024, modes=("xla",), high=256)
    assert report.largest("xla") is not None
