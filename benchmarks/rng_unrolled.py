"""Dropout steps on CPU planned with jax.random's threefry2x32 unrolled
(``olla_jax.plan``'s default ``rng_lowering="unrolled"``) against jax.jit's
program (``rng_lowering="jax"``, the rolled while loop jax lowers on CPU).

    python -m benchmarks.rng_unrolled --out=benchmarks/results/rng_unrolled

Per step and ``rng_lowering``: XLA's temp of jax.jit's program (the headline
``Plan.xla_temp_bytes``, best scheduler) and of the program planned, the temp
our executable runs with, verified (bit for bit against jax.jit's program),
its step time / that of XLA's executable of jax.jit's program
(``Plan.xla_compiled``; medians of ``--timing_repeats`` calls each,
interleaved in one process, of wall time and of the process's CPU time),
XLA's compiles (``Plan.capture_seconds``: with the unrolled lowering both
programs are compiled per scheduler), and, for budgets of 0.75 and 0.5 of
jax.jit's temp (the same budgets both ways), the temp reached, the values
recomputed and the budget plan's measured step time ratio.  Separately:
lowering plus one XLA compile of each program (a fresh function each time,
so jax caches nothing), in alternating order.
"""

from __future__ import annotations

import argparse
import time
import warnings

from benchmarks import common
from benchmarks.rng_loops import _linen_step, _mlp_step

FRACTIONS = (0.75, 0.5)


def _nnx_step(layers: int, width: int, batch: int):
    """A flax.nnx MLP with nnx.Dropout (its key in the model's Rngs), SGD by nnx.Optimizer."""
    import jax
    import jax.numpy as jnp
    import optax
    from flax import nnx

    class MLP(nnx.Module):
        def __init__(self, rngs):
            self.layers = nnx.List([nnx.Linear(width, width, rngs=rngs) for _ in range(layers)])
            self.drop = nnx.Dropout(0.1, rngs=rngs)

        def __call__(self, x):
            for layer in self.layers:
                x = self.drop(jnp.tanh(layer(x)))
            return x

    def train_step(model, opt, x):
        loss, grads = nnx.value_and_grad(lambda m: jnp.mean(m(x) ** 2))(model)
        opt.update(model, grads)
        return loss

    model = MLP(nnx.Rngs(0, dropout=1))
    opt = nnx.Optimizer(model, optax.sgd(1e-3), wrt=nnx.Param)
    return train_step, (model, opt, jax.random.normal(jax.random.key(2), (batch, width)))


def _jitted(name: str, layers: int, width: int, batch: int, fresh: bool = False):
    """The step as a jax.jit (flax.nnx.jit) object, and its arguments;
    ``fresh``: under a function jax has not seen (no cached trace or lowering)."""
    import jax
    if name == "nnx":
        from flax import nnx
        step, args = _nnx_step(layers, width, batch)
        jit = nnx.jit
    else:
        step, args = {"mlp": _mlp_step, "linen": _linen_step}[name](layers, width, batch)
        args, jit = (*args, jax.random.key(7)), jax.jit
    return jit((lambda *a: step(*a)) if fresh else step), args


def compile_seconds(name: str, shape: tuple, rounds: int = 2) -> dict:
    """Lowering + one XLA compile of jax.jit's program and of the unrolled
    one, ``rounds`` times in alternating order (A B B A): the least of each."""
    from olla_jax import calls
    times = {"jax": [], "unrolled": []}
    for r in range(rounds):
        sides = ("jax", "unrolled") if r % 2 == 0 else ("unrolled", "jax")
        for side in sides:
            jitted, args = _jitted(name, *shape, fresh=True)
            start = time.perf_counter()
            entry = calls.lower_call(jitted, args, {}, rng_lowering=side)
            entry.lowered.compile()
            times[side].append(time.perf_counter() - start)
    return {side: min(t) for side, t in times.items()}


def cpu_time_ratio(original, ours, args, repeats: int) -> float:
    """Median process CPU seconds per call (every thread of XLA's pool) of
    ``ours`` / ``original``, calls interleaved A B B A: on a loaded machine
    CPU time moves less with other processes than wall time does."""
    import statistics
    import jax
    times = {0: [], 1: []}
    fns = (original, ours)
    for fn in fns:                         # warm up
        jax.block_until_ready(fn(*args))
    for k in range(repeats):
        for i in ((0, 1) if k % 2 == 0 else (1, 0)):
            start = time.process_time()
            jax.block_until_ready(fns[i](*args))
            times[i].append(time.process_time() - start)
    return statistics.median(times[1]) / statistics.median(times[0])


def _plan(jitted, args, **options):
    import olla_jax
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return olla_jax.plan(jitted, *args, **options), True
        except olla_jax.BudgetNotMet as err:
            return err.plan, False


def measure(name: str, shape: tuple, rng_lowering: str, time_limit_s: float, repeats: int,
            budget_limit_s: float) -> dict:
    from olla_jax.apply import timing
    jitted, args = _jitted(name, *shape)
    p, _ = _plan(jitted, args, time_limit_s=time_limit_s, rng_lowering=rng_lowering)
    ratio = timing.time_ratio(p.xla_compiled, p.compiled, args, repeats=repeats).ratio
    cpu_ratio = cpu_time_ratio(p.xla_compiled, p.compiled, args, repeats)
    row = {"step": f"{name} {shape[0]}x{shape[1]} b{shape[2]}", "rng_lowering": rng_lowering,
           "jax_jit_temp": p.xla_temp_bytes, "planned_program_temp": p.xla_best_temp_bytes,
           "ours": p.runs_temp_bytes, "verified": p.verified, "source": p.source,
           "time_ratio": ratio, "cpu_time_ratio": cpu_ratio, "capture_s": p.capture_seconds,
           "fixed": p.argument_bytes + p.output_bytes - p.alias_bytes, "load": common.load()}
    # the same budgets both ways: fractions of jax.jit's program's temp
    base = p.xla_temp_bytes
    for f in FRACTIONS:
        jitted, args = _jitted(name, *shape)
        budget = int(f * base) + row["fixed"]
        b, met = _plan(jitted, args, time_limit_s=budget_limit_s, rng_lowering=rng_lowering,
                       memory_budget=budget)
        row[f"budget_{f}"] = {"target_temp": int(f * base), "temp": b.runs_temp_bytes,
                              "met": met and b.runs_total_bytes <= budget,
                              "recomputed": len(b.recomputed), "verified": b.verified,
                              "time_ratio": b.step_time_ratio}
    return row


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="rng_unrolled")
    p.add_argument("--time_limit_s", type=float, default=10.0)
    p.add_argument("--budget_time_limit_s", type=float, default=20.0)
    p.add_argument("--timing_repeats", type=int, default=50,
                   help="calls of each executable for the step time ratio (interleaved)")
    args = p.parse_args(argv)
    steps = (("mlp", (3, 256, 512)), ("linen", (2, 128, 8)), ("nnx", (3, 256, 512)))
    rows, compiles = [], {}
    for name, shape in steps:
        for rng in ("jax", "unrolled"):
            rows.append(measure(name, shape, rng, args.time_limit_s, args.timing_repeats,
                                args.budget_time_limit_s))
            print(rows[-1], flush=True)
        compiles[rows[-1]["step"]] = compile_seconds(name, shape)
    m = common.mib

    def budget_cell(r, f):
        b = r[f"budget_{f}"]
        ratio = "-" if b["time_ratio"] is None else f"{b['time_ratio']:.2f}"
        return (f"{m(b['temp'])} {'met' if b['met'] else 'missed'}, {b['recomputed']} copies, "
                f"x{ratio}{'' if b['verified'] else ', not verified'}")
    lines = common.header("Dropout steps on CPU: threefry2x32 unrolled vs jax.jit's rolled loop",
                          {"load": common.load()})
    lines += common.table(
        ["step", "rng_lowering", "XLA temp, jax.jit's program", "XLA temp, program planned",
         "ours", "verified", "step time / jax.jit's: wall, CPU", "XLA compiles s",
         "budget 0.75 of jax.jit's temp", "budget 0.5", "load"],
        [[r["step"], r["rng_lowering"], m(r["jax_jit_temp"]), m(r["planned_program_temp"]),
          m(r["ours"]), "yes" if r["verified"] else f"no ({r['source']})",
          f"{r['time_ratio']:.2f}, {r['cpu_time_ratio']:.2f}", f"{r['capture_s']:.1f}",
          budget_cell(r, 0.75), budget_cell(r, 0.5), r["load"]] for r in rows])
    lines += ["", "Lowering + one XLA compile (s, least of 2, alternating order):", ""]
    lines += common.table(["step", "jax.jit's program", "threefry unrolled"],
                          [[s, f"{c['jax']:.2f}", f"{c['unrolled']:.2f}"]
                           for s, c in compiles.items()])
    print("\n".join(lines))
    common.write_lines_and_rows(args.out, lines, {"rows": rows, "compile_s": compiles})


if __name__ == "__main__":
    main()
