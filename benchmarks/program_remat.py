"""Recomputation in the program (``olla_jax.program_remat``) vs XLA's rematerialization
on a compile-only GPU target (issue 20).

    python -m benchmarks.program_remat --models=vit:small,unet:small,densenet:small,mlp:small \
        --limits=0.8,0.5 --out=benchmarks/results/program_remat_h100

Per example: XLA:GPU's rematerialization under a forced memory limit at each of
``--limits`` x its own temp (``benchmarks.gpu_budget.xla_points`` and its cache);
for each of XLA's points below its temp (temp M, extra FLOPs F) ours is asked
for M and, when that misses the target, for 0.85 x M: the step's jaxpr rewritten
with long-idle values recomputed before their late readers, compiled by XLA
(one ``memo`` per example, so a set is compiled once).  The issue's target per
point: M at <= 0.5 F, or 0.85 M at <= F (``gpu_budget.against_xla``).  Then the
least temp the candidates reach (every prefix size compiled), that rewrite
compared bit for bit on CPU, and planned by ``olla_jax.plan`` (our order and
placement on top, no budget).  Extra FLOPs: ``olla_jax.flops`` on the compiled
modules, the rewrite's minus the step's (XLA's: its point's minus the step's,
as ``gpu_budget`` counts them).  Compile-only: nothing runs on a GPU; the bits
are compared on CPU (``program_remat``: CSE off so that the copies are there).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
import warnings

from benchmarks import common

MIB = 2 ** 20


def kernels(hlo_text: str) -> int:
    """Kernel launches in the entry of an optimized GPU module: fusions and custom calls."""
    entry = hlo_text[hlo_text.find("\nENTRY"):]
    return len(re.findall(r"=\s+\S+\s+(?:fusion|custom-call)\(", entry))


def _ours(r, xla_temp: int, xla_flops: int) -> dict:
    from olla_jax import gpu_budget
    v = gpu_budget.against_xla(r.temp, r.extra_flops, xla_temp, xla_flops)
    return {"budget": r.budget, "temp": r.temp, "extra_flops": r.extra_flops,
            "estimated_flops": r.estimated_flops, "values": len(r.chosen),
            "names": [c.name for c in r.chosen], "bits": r.bits, "met_budget": r.met,
            "met": v.met, "how": v.how, "seconds": round(r.seconds, 1)}


def run_one(item: str, args, cache: dict) -> dict:
    import olla_jax
    from olla_jax import budget, gpu_budget, program_remat
    from benchmarks.gpu_budget import base_plan, xla_points

    t0 = time.monotonic()
    step, base = base_plan(item, args)
    step_flops = budget.step_flops(base.capture)
    points, compiled = xla_points(step, item, base, args, cache)
    row = {"example": item, "xla_temp": base.xla_temp_bytes, "plan_temp": base.runs_temp_bytes,
           "step_flops": step_flops, "xla_points": points, "xla_compiled": compiled,
           "comparisons": []}
    memo: dict = {}
    kw = dict(backend=f"gpu:{args.target}", static_argnums=step.static_argnums,
              donate_argnums=step.donate_argnums, memo=memo, max_chain=args.max_chain,
              check=bool(args.check))
    lower = sorted({(p["temp"], max(0, p["flops"] - step_flops)) for p in points
                    if p["temp"] < base.xla_temp_bytes})
    for m, f in lower:
        r = program_remat.program_remat(step.fn, *step.args, budget=m, **kw)
        tries = [_ours(r, m, f)]
        if not tries[0]["met"]:
            r2 = program_remat.program_remat(step.fn, *step.args,
                                             budget=int(gpu_budget.MEMORY_SHARE * m), **kw)
            tries.append(_ours(r2, m, f))
        row["comparisons"].append({"xla_temp": m, "xla_flops": f, "ours": tries,
                                   "met": any(t["met"] for t in tries)})
        print(json.dumps({"example": item, "xla_temp": m, "ours": tries})[:1500], flush=True)
    least = program_remat.program_remat(step.fn, *step.args, budget=None, **kw)
    row["xla_step_temp"] = least.xla_temp
    row["ours_step_flops"] = least.step_flops
    row["candidates"] = least.candidates
    row["tried"] = [list(t) for t in least.tried]
    row["least"] = {"temp": least.temp, "extra_flops": least.extra_flops,
                    "values": len(least.chosen), "bits": least.bits,
                    "kernels": kernels(least.capture.hlo_text),
                    "kernels_step": kernels(memo["base"].hlo_text),
                    "names": [c.name for c in least.chosen],
                    "chains": [len(c.chain) for c in least.chosen],
                    "compare_seconds": round(least.compare_seconds, 1)}
    if least.chosen and args.bits:
        # one CPU comparison of the least-temp rewrite, and the control: the step
        # itself compiled as the rewrites are (CSE off)
        t = time.monotonic()
        kwb = dict(static_argnums=step.static_argnums, donate_argnums=step.donate_argnums)
        row["least"]["bits_compared"] = program_remat.compare_bits(
            least.fn, step.fn, *step.args, **kwb) or "same"
        row["least"]["bits_control"] = program_remat.compare_bits(
            step.fn, step.fn, *step.args, **kwb) or "same"
        row["least"]["bits_seconds"] = round(time.monotonic() - t, 1)
    if least.chosen and args.plan_rewrite:
        t = time.monotonic()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            planned = olla_jax.plan(least.fn, *step.args, backend=f"gpu:{args.target}",
                                    time_limit_s=args.plan_time_limit_s,
                                    static_argnums=step.static_argnums,
                                    donate_argnums=step.donate_argnums,
                                    compiler_options=least.compiler_options or None)
        row["least"]["planned_temp"] = planned.runs_temp_bytes
        row["least"]["planned_xla_temp"] = planned.xla_temp_bytes
        row["least"]["plan_seconds"] = round(time.monotonic() - t, 1)
    row["seconds"] = round(time.monotonic() - t0, 1)
    return row


def render(rows: list[dict], args, loads: tuple[str, str]) -> str:
    lines = common.header(
        f"Recomputation in the program vs XLA's rematerialization, compile-only {args.target}",
        {"load average at start / end (1/5/15 min; 2 cores shared by several helpers)":
             f"{loads[0]} ; {loads[1]}",
         "XLA's limits": ", ".join(f"{f:g}" for f in args.limits) + " x XLA's own temp",
         "chains": f"at most {args.max_chain} equations a value"})
    lines += ["Temps in MiB (XLA's temp of each compiled program); extra FLOPs by olla_jax.flops "
              "against the step's. Target per XLA point (temp M, extra FLOPs F): M at <= 0.5 F, "
              "or 0.85 M at <= F. Ours is asked for M, then (when that misses) 0.85 M. "
              "Compile-only: not run on a GPU; bits compared on CPU (CSE off): per budget with "
              "--check=1, else 'not compared' there and once for the least-temp rewrite "
              "(--bits=1). Kernels: fusions and custom calls in the entry, step -> rewrite.", ""]
    table = []
    for r in rows:
        if "error" in r:
            table.append([r["example"], f"error: {r['error']}", "", "", "", ""])
            continue
        for c in r["comparisons"]:
            ours = "; ".join(f"{t['temp'] / MIB:,.2f} at {t['extra_flops']:,} ({t['values']} "
                             f"values, bits {t['bits']}) for {t['budget'] / MIB:,.2f}"
                             for t in c["ours"])
            table.append([r["example"], f"{c['xla_temp'] / MIB:,.2f}", f"{c['xla_flops']:,}",
                          ours, "yes" if c["met"] else "no",
                          "; ".join(t["how"] for t in c["ours"])])
        if not r["comparisons"]:
            table.append([r["example"], "no point below XLA's temp", "", "", "", ""])
    lines += common.table(["example", "XLA temp", "XLA extra FLOPs",
                           "ours: temp at extra FLOPs (values, bits) for budget", "met",
                           "against XLA's point"], table, right={1, 2})
    lines += ["", "The least temp the candidates reach (all prefix sizes compiled), then ordered "
              "and placed by olla_jax.plan (no budget):", ""]
    table = []
    for r in rows:
        if "error" in r:
            continue
        q = r["least"]
        planned = (f"{q['planned_temp'] / MIB:,.2f}" if "planned_temp" in q else "-")
        table.append([r["example"], f"{r['xla_temp'] / MIB:,.2f}", f"{r['plan_temp'] / MIB:,.2f}",
                      str(r["candidates"]),
                      ", ".join(f"{k}: {t / MIB:,.2f} at {f:,}" for k, t, f in
                                sorted(r["tried"])),
                      f"{q['temp'] / MIB:,.2f} at {q['extra_flops']:,} ({q['values']})",
                      q["bits"], f"{q['kernels_step']} -> {q['kernels']}", planned])
    bits = [f"- {r['example']}: least-temp rewrite's outputs on CPU (CSE off) against "
            f"jax.jit's: {r['least']['bits_compared']}; control, the step itself with CSE off: "
            f"{r['least']['bits_control']} ({r['least']['bits_seconds']} s)"
            for r in rows if "error" not in r and "bits_compared" in r["least"]]
    lines += common.table(["example", "XLA temp", "plan temp", "candidates",
                           "sets compiled (values: temp at extra FLOPs)", "least temp",
                           "bits", "kernels", "least planned"], table, right={1, 2, 3})
    if bits:
        lines += ["", "Bits compared once (not per budget):", ""] + bits
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--target", default="h100")
    p.add_argument("--models", default="vit:small,unet:small,densenet:small,mlp:small")
    p.add_argument("--limits", default="0.8,0.5",
                   help="XLA's forced memory limits, as fractions of its own temp")
    p.add_argument("--plan_time_limit_s", type=float, default=3.0)
    p.add_argument("--max_chain", type=int, default=16,
                   help="equations recomputed for one value at most (program_remat.MAX_CHAIN)")
    p.add_argument("--check", type=int, default=1, choices=(0, 1),
                   help="program_remat's own bit check per budget (values that change the "
                        "bits on CPU left out, by bisection)")
    p.add_argument("--bits", type=int, default=1, choices=(0, 1),
                   help="compare the least-temp rewrite's bits on CPU once, and the step "
                        "with CSE off as a control")
    p.add_argument("--plan_rewrite", type=int, default=1, choices=(0, 1),
                   help="plan the least-temp rewrite with olla_jax.plan (no budget)")
    p.add_argument("--cache", default=os.path.join(os.path.expanduser("~"), ".cache", "olla_jax",
                                                   "xla_remat_points.json"),
                   help="XLA's points by jax version, example, target, limit ('' for none)")
    p.add_argument("--out", default="")
    args = p.parse_args(argv)
    args.limits = [float(x) for x in args.limits.split(",") if x]
    from benchmarks.gpu_budget import run_models
    return run_models(args, run_one, render)


if __name__ == "__main__":
    sys.exit(main())
