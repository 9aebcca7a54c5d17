"""A sharded Llama-style train step on 8 compile-only H100s: unrolled, scanned, remat, overlap.

    python -m benchmarks.sharded_llm --sizes=2x256,4x256,8x512 \\
        --out=benchmarks/results/sharded_llm_h100x8

Issue 23's example family (``examples/llama.py``: RMSNorm, rotary, grouped-query
attention, SwiGLU, AdamW; parameters and optimizer state donated) compiled for
``--devices`` H100s without a GPU, in two shardings: "fsdp" (parameters and
optimizer state split, batch split) and "dp" (batch split, the rest
replicated).  Each row is one depth x width, sharding and remat setting (each
block under ``jax.checkpoint`` or not); its per-device temp figures:

- unrolled XLA: the unrolled step as XLA plans it (latency-hiding scheduler on);
- LHS off: the same with XLA's latency-hiding scheduler off (on H100 targets
  that takes both ``xla_gpu_enable_latency_hiding_scheduler=False`` and
  ``xla_gpu_enable_analytical_sol_latency_estimator=False``);
- keep / free: ``olla_jax.plan(collective_overlap="keep" | "free")`` on the
  unrolled step (keep: every instruction XLA runs between an async collective's
  start and done stays between them; free: that overlap may be collapsed);
- scanned XLA: the same model with its blocks under ``jax.lax.scan``.

Planned figures: the rewritten per-device executable is built and decoded, not
run (no GPU here).  Each row runs in its own process.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
import warnings

from benchmarks import common

LHS_OFF = {"xla_gpu_enable_latency_hiding_scheduler": False,
           "xla_gpu_enable_analytical_sol_latency_estimator": False}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="2x256,4x256",
                   help="layers x d_model, comma-separated (heads = d/64, kv_heads = heads/2)")
    p.add_argument("--shardings", default="fsdp,dp")
    p.add_argument("--remat", default="1,0", help="per-block jax.checkpoint: 1, 0 or both")
    p.add_argument("--devices", type=int, default=8)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--target", default="h100")
    p.add_argument("--time_limit_s", type=float, default=10.0)
    p.add_argument("--out", default="sharded_llm")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--worker_out", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def config(spec: str, args, *, scan: bool):
    from examples import llama
    layers, d, _, remat = spec.split(":")
    heads = max(1, int(d) // 64)
    return llama.Config(layers=int(layers), d_model=int(d), heads=heads,
                        kv_heads=max(1, heads // 2), seq=args.seq, batch=args.batch,
                        vocab=args.vocab, scan=scan, remat=remat == "1")


def _reuse_compiles() -> None:
    """plan(keep) and plan(free) compile the same step: compile it once (benchmark-only patch)."""
    import importlib
    plan_mod = importlib.import_module("olla_jax.plan")
    original, memo = plan_mod._baselines, {}

    def cached(step, backend, compiler_options, spmd=None):
        key = (id(step.fn), repr(compiler_options), repr(spmd))
        if key not in memo:
            memo[key] = original(step, backend, compiler_options, spmd)
        return memo[key]
    plan_mod._baselines = cached


def run_one(spec: str, args) -> dict:
    import olla_jax
    from examples import llama
    from olla_jax.capture import capture
    _, _, kind, _ = spec.split(":")
    _reuse_compiles()
    row: dict = {"spec": spec}
    unrolled = llama.make_step(config(spec, args, scan=False))
    scanned = llama.make_step(config(spec, args, scan=True))
    row["description"] = unrolled.description
    backend = f"gpu:{args.target}"

    def spmd(step):
        return dict(num_devices=args.devices, in_shardings=llama.shardings(step, kind, args.devices))

    for overlap in ("keep", "free"):
        t0 = time.monotonic()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            p = olla_jax.plan(unrolled.fn, *unrolled.args, backend=backend,
                              time_limit_s=args.time_limit_s, donate_argnums=unrolled.donate_argnums,
                              collective_overlap=overlap, **spmd(unrolled))
        row["xla"] = p.xla_best_temp_bytes
        row["instructions"] = len(p.graph.nodes) if p.graph else None
        row["pairs"] = p.settings.get("async_pairs", 0)
        row[overlap] = p.planned_temp_bytes
        row[f"{overlap}_built"] = p.executable_bytes is not None
        row[f"{overlap}_source"] = p.source
        row[f"{overlap}_notes"] = [n[:300] for n in p.notes]
        row[f"{overlap}_s"] = round(time.monotonic() - t0, 1)
    for name, step, options in (("lhs_off", unrolled, LHS_OFF), ("scanned", scanned, None)):
        t0 = time.monotonic()
        cap = capture(step.fn, *step.args, backend=backend, donate_argnums=step.donate_argnums,
                      compiler_options=options, spmd=spmd(step))
        row[name] = cap.memory.temp
        row[f"{name}_s"] = round(time.monotonic() - t0, 1)
    return row


def worker(args) -> None:
    common.gpu_environment("gpu")
    try:
        row = run_one(args.worker, args)
    except Exception as err:  # noqa: BLE001 - reported in the table
        traceback.print_exc()
        row = {"spec": args.worker, "error": f"{type(err).__name__}: {err}"[:500]}
    row["load"] = common.load()
    with open(args.worker_out, "w") as f:
        json.dump(row, f)


def markdown(rows, args, machine, command) -> str:
    lines = common.header(
        f"Sharded Llama-style step on {args.devices} x {args.target} (compile-only)",
        {"batch / seq / vocab": f"{args.batch} / {args.seq} / {args.vocab} (heads d/64, kv heads "
                                "half of them, fp32, AdamW, params + optimizer state donated)",
         "plan time limit": f"{args.time_limit_s:g} s",
         "note": "the machine (2 cores) was shared with other jobs: times are indicative"},
        command=command, machine_info=machine)
    lines += ["Per-device temp in MiB. unrolled XLA = latency-hiding scheduler on; LHS off = "
              "both flags off; keep / free = olla_jax.plan(collective_overlap=...) on the unrolled "
              "step; scanned = XLA on the scanned step (same sharding and remat). 'built': the "
              "rewritten per-device executable for keep / free was built and decoded (not run: "
              "no GPU here). When no plan below XLA's was found, keep/free = XLA's figure.", ""]
    table = []
    for r in rows:
        layers, d, kind, remat = r["spec"].split(":")
        head = [layers, d, kind, "yes" if remat == "1" else "no"]
        if "error" in r:
            table.append(head + [f"ERROR: {r['error'][:200]}"] + [""] * 7)
            continue
        table.append(head + [r["instructions"], r["pairs"], common.mib(r["xla"]),
                             common.mib(r["lhs_off"]), common.mib(r["keep"]), common.mib(r["free"]),
                             common.mib(r["scanned"]),
                             f"{'yes' if r['keep_built'] else 'no'} / "
                             f"{'yes' if r['free_built'] else 'no'}",
                             f"{r['keep_s']:.0f} / {r['free_s']:.0f} / {r['scanned_s']:.0f}",
                             r.get("load", "")])
    lines += common.table(["layers", "d", "sharding", "remat", "instr", "async pairs",
                           "unrolled XLA", "LHS off", "keep", "free", "scanned XLA",
                           "built", "s: keep/free/scan", "load"], table,
                          right={0, 1, 4, 5, 6, 7, 8, 9, 10})
    notes = [f"- {r['spec']}: {n}" for r in rows for n in
             dict.fromkeys(r.get("keep_notes", []) + r.get("free_notes", []))]
    if notes:
        lines += ["", "Notes from olla_jax.plan:", ""] + notes
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.worker:
        return worker(args)
    common.gpu_environment("gpu")
    command, machine = common.command_line(), common.machine()
    flags = [f"--devices={args.devices}", f"--batch={args.batch}", f"--seq={args.seq}",
             f"--vocab={args.vocab}", f"--target={args.target}",
             f"--time_limit_s={args.time_limit_s}"]
    rows = []
    for size in args.sizes.split(","):
        layers, d = size.lower().split("x")
        for kind in args.shardings.split(","):
            for remat in args.remat.split(","):
                spec = f"{int(layers)}:{int(d)}:{kind}:{remat}"
                row = common.run_worker("benchmarks.sharded_llm", spec, flags,
                                        lambda msg, s=spec: {"spec": s, "error": msg},
                                        timeout_s=1800)
                print(json.dumps(row), flush=True)
                rows.append(row)
                common.write_results(args.out, {"command": command, "machine": machine,
                                                "rows": rows}, markdown(rows, args, machine, command))
    print(open(args.out + ".md").read())


if __name__ == "__main__":
    main(sys.argv[1:])
