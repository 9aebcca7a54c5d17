"""capture.record.sharing_compiles: one compile per module, within the context only."""

import contextvars

import jax.numpy as jnp

from olla_jax.capture import record


def _step(x):
    return jnp.tanh(x @ x.T).sum()


def test_the_same_module_is_compiled_once_within_and_again_outside():
    x = jnp.ones((8, 8), jnp.float32)
    with record.sharing_compiles() as store:
        first = record.capture(_step, x)
        again = record.capture(_step, x)
        other_scheduler = record.capture(_step, x, scheduler="memory")
    assert again is first
    assert other_scheduler is not first
    assert (store.hits, store.misses) == (1, 2)
    assert record.capture(_step, x) is not first     # outside: compiled afresh
    assert (store.hits, store.misses) == (1, 2)


def test_without_a_store_each_capture_compiles():
    """The default (no sharing_compiles around the call; tests/conftest.py
    shares the session's compiles, so a fresh context stands for a user's)."""
    x = jnp.ones((8, 8), jnp.float32)
    bare = contextvars.Context()
    first = bare.run(record.capture, _step, x)
    assert bare.run(record._SHARED_COMPILES.get) is None
    assert bare.run(record.capture, _step, x) is not first


def test_a_keyword_call_is_not_served_a_positional_calls_compile():
    # f(w, x) and f(w, x=x) lower to the same module text; their executables
    # take their arguments differently
    import jax

    def step(w, x):
        return jnp.tanh(x @ w).sum()
    w = x = jnp.ones((8, 8), jnp.float32)
    with record.sharing_compiles() as store:
        positional = record.capture_lowered(jax.jit(step).lower(w, x))
        keyword = record.capture_lowered(jax.jit(step).lower(w, x=x))
    assert store.misses == 2 and keyword is not positional
    assert float(keyword.compiled(w, x=x)) == float(positional.compiled(w, x))
