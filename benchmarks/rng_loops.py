"""How much of a dropout step's peak jax.random's PRNG loops hold, and what
recomputation could reach if a whole loop could be copied.

    python -m benchmarks.rng_loops --out=benchmarks/results/rng_loops

On CPU jax lowers threefry2x32 (the default PRNG) to a rolled while loop, so
dropout's random bits are a loop's results; a recomputed copy reruns one
kernel, never a loop (``budget.candidates``).  Per step and key impl: XLA's
temp, the arena peak under XLA's order and the bytes there made by loops or
calls (``budget.held_at_peak``, LOOP_HELD), and two lower bounds
(``budget.recompute_floor``): recomputing the candidates, and the same with
every movable unit holding a loop's or call's values allowed too (a relaxation:
what copying whole loops could at best reach, not a plan).
"""

from __future__ import annotations

import argparse
import dataclasses

from benchmarks import common


def _mlp_step(layers: int, width: int, batch: int):
    import jax
    import jax.numpy as jnp

    def loss(params, x, key):
        for i, (w, b) in enumerate(params):
            x = jnp.tanh(x @ w + b)
            keep = jax.random.bernoulli(jax.random.fold_in(key, i), 0.9, x.shape)
            x = jnp.where(keep, x / 0.9, 0.0)
        return jnp.mean(x ** 2)

    def step(params, x, key):
        g = jax.grad(loss)(params, x, key)
        return [(w - 1e-3 * gw, b - 1e-3 * gb) for (w, b), (gw, gb) in zip(params, g)]
    ks = jax.random.split(jax.random.key(0), layers + 1)
    params = [(jax.random.normal(ks[i], (width, width)) * 0.05, jnp.zeros(width))
              for i in range(layers)]
    return step, (params, jax.random.normal(ks[-1], (batch, width)))


def _linen_step(layers: int, width: int, batch: int):
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    class Block(nn.Module):
        @nn.compact
        def __call__(self, x, train):
            h = nn.SelfAttention(num_heads=4, dropout_rate=0.1, deterministic=not train)(x)
            x = nn.LayerNorm()(x + nn.Dropout(0.1, deterministic=not train)(h))
            h = nn.Dropout(0.1, deterministic=not train)(nn.Dense(width)(nn.gelu(nn.Dense(4 * width)(x))))
            return nn.LayerNorm()(x + h)

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x, train):
            for _ in range(layers):
                x = Block()(x, train)
            return x.mean()

    x = jax.random.normal(jax.random.key(1), (batch, 64, width))
    params = Net().init(jax.random.key(0), x, False)

    def step(params, x, key):
        g = jax.grad(lambda p: Net().apply(p, x, True, rngs={"dropout": key}))(params)
        return jax.tree.map(lambda p, q: p - 1e-3 * q, params, g)
    return step, (params, x)


STEPS = {"mlp": _mlp_step, "linen": _linen_step}


def measure(name: str, impl: str, layers: int, width: int, batch: int) -> dict:
    import warnings
    import jax
    import olla_jax
    from olla_jax import budget
    from olla_jax.budget.floors import LOOP_HELD
    step, args = STEPS[name](layers, width, batch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = olla_jax.plan(step, *args, jax.random.key(7, impl=impl), time_limit_s=3,
                          feed_back=False)
    g, cap = p.graph, p.capture
    held = budget.held_at_peak(g, cap)
    cands = budget.candidates(g, cap)
    loop_units = {g.unit_of_value[v.id] for v in g.values.values()
                  if g.block_length(v.def_node) != 1}
    extra = [dataclasses.replace(cands[0], value=g.units[u].values[0])
             for u in sorted(loop_units) if g.units[u].movable] if cands else []
    return {"step": f"{name} {layers}x{width} b{batch}", "impl": impl,
            "xla_temp": p.xla_total_bytes, "peak": held.arena_live,
            "loops_held": dict(held.by_reason).get(LOOP_HELD, 0),
            "floor": budget.recompute_floor(g, cands, time_limit_s=5, capture=cap),
            "floor_loops": budget.recompute_floor(g, list(cands) + extra, time_limit_s=5,
                                                  capture=cap),
            "held": held.describe(top=3), "load": common.load()}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="rng_loops")
    args = p.parse_args(argv)
    rows = [measure(n, impl, *shape) for n, shape in (("mlp", (3, 256, 512)), ("linen", (2, 128, 8)))
            for impl in ("threefry2x32", "rbg")]
    m = common.mib
    lines = common.header("Dropout steps: bytes jax.random's loops hold at the peak", {"load": common.load()})
    lines += common.table(["step", "key impl", "XLA temp", "arena peak (XLA order)",
                           "held by loops", "floor: candidates", "floor: + loop values", "load"],
                          [[r["step"], r["impl"], m(r["xla_temp"]), m(r["peak"]), m(r["loops_held"]),
                            m(r["floor"]), m(r["floor_loops"]), r["load"]] for r in rows])
    lines += ["", "held_at_peak, per row:"] + [f"- {r['step']} {r['impl']}: {r['held']}" for r in rows]
    print("\n".join(lines))
    common.write_lines_and_rows(args.out, lines, rows)


if __name__ == "__main__":
    main()
