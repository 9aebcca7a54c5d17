"""Memory budgets on a compile-only GPU target: our recomputation vs XLA's remat.

    python -m benchmarks.gpu_budget --target=h100 --fraction=0.8 \
        --models=mlp:small,vit:tiny,cnn_adam:tiny --out=benchmarks/results/gpu_budget_h100

Per example: our order and placement (``olla_jax.plan``), then a budget of
arguments + outputs - donated + ``fraction`` x that plan's temp, met two ways
on the same plan: our recomputation (``budget.recompute_to_budget``: kernel
thunks copied in the GPU executable, checked, built and read back; not run,
no GPU here) and XLA:GPU's rematerialization under a searched memory limit
(``budget.xla_remat_to_budget``).  Printed: temp and extra FLOPs of each
(FLOPs from the HLO, ``olla_jax.flops``).  Compile-only: no step time.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings

from benchmarks import common


def run_one(name: str, size: str, args) -> dict:
    import examples
    import olla_jax
    from olla_jax import budget

    step = examples.get(name, size)
    backend = f"gpu:{args.target}"
    t0 = time.monotonic()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        base = olla_jax.plan(step.fn, *step.args, backend=backend, time_limit_s=args.time_limit_s,
                             static_argnums=step.static_argnums, donate_argnums=step.donate_argnums)
        fixed = base.runs_total_bytes - base.runs_temp_bytes
        target = fixed + int(args.fraction * base.runs_temp_bytes)
        t1 = time.monotonic()
        ours = budget.recompute_to_budget(base, target, time_limit_s=args.time_limit_s,
                                          measure_time=False)
        t2 = time.monotonic()
        xla = budget.xla_remat_to_budget(base, target, step.fn, step.args,
                                         static_argnums=step.static_argnums,
                                         donate_argnums=step.donate_argnums)
        t3 = time.monotonic()
    step_flops = budget._step_flops(base.capture)
    return {
        "example": f"{name}:{size}", "xla_temp": base.xla_temp_bytes,
        "plan_temp": base.runs_temp_bytes, "budget_temp": target - fixed,
        "ours_temp": ours.runs_temp_bytes, "ours_flops": ours.extra_flops,
        "ours_recomputed": len(ours.recomputed), "ours_note": ours.notes[-1] if ours.notes else "",
        "xla_remat_temp": xla.runs_temp_bytes, "xla_remat_flops": xla.extra_flops,
        "xla_remat_note": xla.notes[-1] if xla.notes else "", "step_flops": step_flops,
        "plan_s": round(t1 - t0, 1), "ours_s": round(t2 - t1, 1), "xla_s": round(t3 - t2, 1),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--target", default="h100")
    p.add_argument("--fraction", type=float, default=0.8)
    p.add_argument("--models", default="mlp:small,vit:tiny,cnn_adam:tiny")
    p.add_argument("--time_limit_s", type=float, default=3.0)
    p.add_argument("--out", default="")
    args = p.parse_args(argv)
    rows = []
    for item in args.models.split(","):
        name, size = item.split(":")
        rows.append(run_one(name, size, args))
        print(rows[-1], flush=True)
    lines = common.header(
        f"Memory budgets on compile-only {args.target}: our recomputation vs XLA's rematerialization",
        {"load average (1/5/15 min; 2 cores shared by several helpers)": common.load(),
         "budget": f"arguments + outputs - donated + {args.fraction} x our plan's temp"})
    lines += ["Temps in MiB; extra FLOPs as a share of the step's. Ours is built, checked and read "
              "back, not run (no GPU here).", ""]

    def share(flops, total):
        return f"{flops:,} ({100 * flops / total:.1f}%)" if total else f"{flops:,}"
    table = [[r["example"], common.mib(r["xla_temp"]), common.mib(r["plan_temp"]),
              common.mib(r["budget_temp"]), common.mib(r["ours_temp"]),
              share(r["ours_flops"], r["step_flops"]), common.mib(r["xla_remat_temp"]),
              share(r["xla_remat_flops"], r["step_flops"]), f"{r['ours_s']} / {r['xla_s']}"]
             for r in rows]
    lines += common.table(["example", "XLA temp", "our plan", "budget", "ours: temp",
                           "ours: extra FLOPs", "XLA remat: temp", "XLA remat: extra FLOPs",
                           "seconds ours / XLA"], table, right={1, 2, 3, 4, 5, 6, 7})
    lines += ["", "Notes:"]
    for r in rows:
        lines.append(f"- {r['example']}: ours: {r['ours_note']}")
        lines.append(f"- {r['example']}: XLA: {r['xla_remat_note']}")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        common.write_results(args.out, {"rows": rows, "command": common.command_line()}, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
