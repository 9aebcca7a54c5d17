"""Small jitted programs for the apply tests."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax import lax

from olla_jax.apply import executable


@dataclasses.dataclass(frozen=True)
class Program:
    name: str
    fn: Callable[..., Any]
    args: tuple
    compiled: Any
    raw: bytes


def _mlp():
    def loss(p, x, y):
        h = jnp.tanh(x @ p["w1"] + p["b1"])
        return jnp.mean((h @ p["w2"] + p["b2"] - y) ** 2)

    def step(p, x, y):
        g = jax.grad(loss)(p, x, y)
        return jax.tree.map(lambda a, b: a - 0.01 * b, p, g), loss(p, x, y)

    k = jax.random.split(jax.random.PRNGKey(0), 4)
    p = {"w1": jax.random.normal(k[0], (32, 64)), "b1": jnp.zeros(64),
         "w2": jax.random.normal(k[1], (64, 8)), "b2": jnp.zeros(8)}
    return jax.jit(step), (p, jax.random.normal(k[2], (16, 32)), jax.random.normal(k[3], (16, 8)))


def _scan():
    def f(h0, xs, w):
        def body(h, x):
            h = jnp.tanh(h @ w + x)
            return h, h.sum()
        return lax.scan(body, h0, xs)

    return jax.jit(f), (jnp.ones((4, 16)), jnp.ones((10, 4, 16)) * 0.1, jnp.eye(16) * 0.5)


def _dus():
    # dynamic-update-slice in place into a donated buffer, with temporaries.
    def f(buf, upd, i):
        buf = buf * 2
        for k in range(3):
            piece = jnp.sin(upd) * k + lax.dynamic_slice(buf, (i + k, 0), (4, 32)).sum()
            buf = lax.dynamic_update_slice(buf, piece, (i + 2 * k, 0))
        return buf, jnp.cos(buf).sum()

    return jax.jit(f, donate_argnums=(0,)), (jnp.ones((64, 32)), jnp.ones((4, 32)), jnp.int32(3))


def _donate():
    def f(a, b, w):
        h = jnp.tanh(a @ w)
        g = jnp.sin(h) @ w.T
        return {"a": a - 0.1 * g, "s": (g * b).sum()}

    k = jax.random.split(jax.random.PRNGKey(1), 3)
    return jax.jit(f, donate_argnums=(0,)), (jax.random.normal(k[0], (64, 32)),
                                             jax.random.normal(k[1], (64, 32)),
                                             jax.random.normal(k[2], (32, 48)))


def _zoo():
    """One instruction of many thunk kinds: sort (copy + sort thunks), top-k,
    fft, convolution, a LAPACK custom call, conditional and while (nested
    sequences).  No stateful RNG: jaxlib 0.11.2 does not give two loads of one
    executable the same RNG state, so its outputs cannot be compared."""
    def f(x, p, m, img, k):
        s = jnp.sort(x, axis=-1)
        y = lax.cond(p > 0, lambda: s * 2, lambda: s + 1)
        vals, idx = lax.top_k(x, 3)
        ch = jnp.linalg.cholesky(m @ m.T + 16 * jnp.eye(16))
        ff = jnp.abs(jnp.fft.fft(x)).astype(jnp.float32)
        conv = lax.conv(img, k, (1, 1), "SAME")

        def body(c):
            i, v = c
            return i + 1, jnp.tanh(v @ m)

        _, w = lax.while_loop(lambda c: c[0] < p + 3, body, (0, x))
        return y + ff + w, vals, idx, ch, conv.sum(), jnp.argsort(x[0])

    return jax.jit(f), (jnp.ones((8, 16)), jnp.int32(1), jnp.ones((16, 16)) * 0.1,
                        jnp.ones((2, 3, 8, 8)), jnp.ones((4, 3, 3, 3)))


BUILDERS = {"mlp": _mlp, "scan": _scan, "dus": _dus, "donate": _donate, "zoo": _zoo}


def build(name: str) -> Program:
    fn, args = BUILDERS[name]()
    compiled = fn.lower(*args).compile()
    return Program(name, fn, args, compiled, executable.serialize_compiled(compiled))


def fresh(args):
    """Device copies of args (donation consumes its inputs)."""
    return jax.tree.map(lambda x: jnp.array(x, copy=True), args)
