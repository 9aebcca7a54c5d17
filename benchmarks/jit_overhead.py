"""What a call of ``olla_jax.jit`` costs on top of ``jax.jit`` once the step is planned.

    python -m benchmarks.jit_overhead [--leaves=200] [--calls=200] [--rounds=30] [--out=PATH]

One step over a pytree of ``--leaves`` small arrays (the shape of a model's
parameters with the compute taken away), planned once, then called in rounds:
each round times ``--calls`` calls of jax.jit and of olla_jax.jit in turn (the
outputs waited for at the end of the round) and of the drop-in's cache key
alone.  On a shared machine one round's figures swing by several times, so the
rounds are short and many: the ratio is olla_jax.jit's over jax.jit's in the
same round, and the summary gives the median ratio over the rounds and each
side's fastest round.
"""

from __future__ import annotations

import os
import tempfile
import time
import warnings

from benchmarks import common


def _step(tree):
    return {k: v * 2.0 + 1.0 for k, v in tree.items()}


def main() -> None:
    p = common.parser(__doc__, out=None)
    p.add_argument("--leaves", type=int, default=200)
    p.add_argument("--calls", type=int, default=200)
    p.add_argument("--rounds", type=int, default=30)
    args = p.parse_args()
    common.gpu_environment("cpu")
    meta = common.run_meta()
    print(f"$ {meta['command']}", flush=True)
    import jax
    import jax.numpy as jnp
    import olla_jax

    tree = {f"w{i:04d}": jnp.full((8,), float(i)) for i in range(args.leaves)}
    plain = jax.jit(_step)
    with tempfile.TemporaryDirectory() as cache, warnings.catch_warnings():
        warnings.simplefilter("ignore", olla_jax.PlanWarning)
        ours = olla_jax.jit(_step, cache=cache, time_limit_s=2)
        jax.block_until_ready((plain(tree), ours(tree)))     # compiled and planned
        plan = ours.plan_for(tree)
        for a, b in zip(jax.tree.leaves(plain(tree)), jax.tree.leaves(ours(tree))):
            assert (a == b).all()

        def timed(fn) -> float:
            out = None
            t0 = time.perf_counter()
            for _ in range(args.calls):
                out = fn(tree)
            jax.block_until_ready(out)
            return (time.perf_counter() - t0) / args.calls * 1e6

        def key_only(t):
            return ours._key((t,), {})
        rounds = []
        for _ in range(args.rounds):
            rounds.append({"jax_jit_us": timed(plain), "olla_jit_us": timed(ours),
                           "key_us": timed(key_only)})
    ratios = sorted(r["olla_jit_us"] / r["jax_jit_us"] for r in rounds)
    median = ratios[len(ratios) // 2]
    fastest = {k: min(r[k] for r in rounds) for k in rounds[0]}
    load = common.load()
    lines = common.header("olla_jax.jit's per-call overhead", {
        "leaves": args.leaves, "calls per round": args.calls, "rounds": args.rounds,
        "plan": f"{plan.source}, verified {plan.verified}",
        "load (1/5/15 min) at the start": meta["load_start"], "at the end": load},
        command=meta["command"], machine_info=meta["machine"], date=meta["date"])
    lines += [f"median ratio olla_jax.jit / jax.jit over the rounds: {median:.2f} x "
              f"(quartiles {ratios[len(ratios) // 4]:.2f}-{ratios[3 * len(ratios) // 4]:.2f}); "
              f"fastest round of each: jax.jit {fastest['jax_jit_us']:.1f} us, olla_jax.jit "
              f"{fastest['olla_jit_us']:.1f} us, the cache key alone {fastest['key_us']:.1f} us "
              "per call", ""]
    lines += common.table(["round", "jax.jit us/call", "olla_jax.jit us/call", "ratio",
                           "key alone us/call"],
                          [[i + 1, f"{r['jax_jit_us']:.1f}", f"{r['olla_jit_us']:.1f}",
                            f"{r['olla_jit_us'] / r['jax_jit_us']:.2f}", f"{r['key_us']:.1f}"]
                           for i, r in enumerate(rounds)], right={0, 1, 2, 3, 4})
    print("\n".join(lines))
    if args.out:
        common.write_results(args.out, dict(meta, rounds=rounds, leaves=args.leaves,
                                            load_end=load), "\n".join(lines) + "\n")


if __name__ == "__main__":
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    main()
