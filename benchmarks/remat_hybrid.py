"""XLA's remat at a milder limit, planned by us, then our recomputation on top (issue 20).

For each example and each of XLA's limits (its point: temp M, extra FLOPs F)
on a compile-only GPU target: XLA's rematerialized program at each of
``--mild`` x XLA's own temp (fewer extra FLOPs than F), compiled again for a
device description of that limit and planned by ``olla_jax.plan`` (order and
placement, as ``gpu_budget.remat_planned``), then recomputed by ours on top
(``budget.recompute_to_budget`` on that plan: checked, built, decoded again)
to each of the target's two terms: M within 0.5 F, and 0.85 M within F.  The
extra FLOPs of such a hybrid are XLA's at the milder limit plus our copies'
(counted on that program); ``gpu_budget.against_xla`` judges the sum.  A
mild program whose FLOPs alone are over a term's share is not recomputed for
it.  A diagnosis of a side ``gpu_budget.to_budget`` does not have.

    python -m benchmarks.remat_hybrid --models=vit:small --limits=0.8 \\
        --mild=0.95,0.9,0.85 --out=benchmarks/results/remat_hybrid_vit
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import common  # noqa: E402
from benchmarks.remat_sets import points_parser, run_points  # noqa: E402

_BASES: dict = {}     # example -> (step, plan, FLOPs, {mild limit: (plan, XLA's FLOPs, s)})


def _base(item: str, args):
    """The step, our plan of it, its FLOPs, and its mild programs planned so far."""
    import examples
    import olla_jax
    from olla_jax import budget
    if item not in _BASES:
        name, size = item.split(":")
        step = examples.get(name, size)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            base = olla_jax.plan(step.fn, *step.args, backend=f"gpu:{args.target}",
                                 time_limit_s=args.plan_time_limit_s,
                                 static_argnums=step.static_argnums,
                                 donate_argnums=step.donate_argnums)
        _BASES[item] = (step, base, budget.step_flops(base.capture), {})
    return _BASES[item]


def _mild_program(item: str, fraction: float, args):
    """XLA's program at ``fraction`` x its own temp, planned by us (order and
    placement), with its extra FLOPs over the step's; planned once per example."""
    import olla_jax
    from olla_jax import budget, xla_remat
    step, base, step_flops, mild = _base(item, args)
    if fraction not in mild:
        t = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="olla_jax_bench_hybrid_") as folder, \
                warnings.catch_warnings():
            warnings.simplefilter("ignore")
            path = xla_remat.target_file(args.target, int(fraction * base.xla_temp_bytes),
                                         base.argument_bytes + base.output_bytes, folder)
            got = olla_jax.plan(step.fn, *step.args, backend=f"gpu:{path}",
                                time_limit_s=args.time_limit_s,
                                static_argnums=step.static_argnums,
                                donate_argnums=step.donate_argnums)
        mild[fraction] = (got, max(0, budget.step_flops(got.capture) - step_flops),
                          round(time.monotonic() - t, 1))
    return mild[fraction]


def run_one(item: str, limit: float, args) -> dict:
    from olla_jax import budget, gpu_budget, xla_remat
    step, base, step_flops, _ = _base(item, args)
    point = xla_remat.search(step.fn, *step.args, backend=f"gpu:{args.target}",
                             budget_bytes=base.xla_temp_bytes, fractions=[limit],
                             static_argnums=step.static_argnums, donate_argnums=step.donate_argnums,
                             io_bytes=base.argument_bytes + base.output_bytes)[0]
    xla_temp, xla_flops = point.memory.temp, max(0, point.flops - step_flops)
    terms = ((xla_temp, gpu_budget.FLOPS_SHARE * xla_flops),
             (int(gpu_budget.MEMORY_SHARE * xla_temp), xla_flops))
    tries = []
    for fraction in args.mild:
        planned, mild_flops, plan_s = _mild_program(item, fraction, args)
        fixed = planned.runs_total_bytes - planned.runs_temp_bytes
        for temp, allowed in terms:
            row = {"mild": fraction, "mild_xla_temp": planned.xla_best_temp_bytes,
                   "mild_temp": planned.runs_temp_bytes, "xla_flops": mild_flops,
                   "plan_s": plan_s, "goal_temp": temp, "allowed": allowed}
            if mild_flops > allowed:
                tries.append(dict(row, skipped="XLA's FLOPs there alone are over the share"))
                continue
            t = time.monotonic()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                got = (planned if planned.runs_temp_bytes <= temp else budget.recompute_to_budget(
                    planned, fixed + temp, measure_time=False, recompute_cost=args.recompute_cost,
                    time_limit_s=args.time_limit_s))
            ours = got.extra_flops or 0
            verdict = gpu_budget.against_xla(got.runs_temp_bytes, mild_flops + ours, xla_temp,
                                             xla_flops)
            tries.append(dict(row, temp=got.runs_temp_bytes, ours_flops=ours,
                              copies=len(got.recomputed or ()),
                              built=not got.recomputed or got.executable_bytes is not None,
                              met=verdict.met, how=verdict.how,
                              seconds=round(time.monotonic() - t, 1)))
    return {"example": item, "limit": limit, "xla_own_temp": base.xla_temp_bytes,
            "step_flops": step_flops, "xla_temp": xla_temp, "xla_flops": xla_flops,
            "tries": tries, "met": any(t.get("met") for t in tries)}


def render(rows: list[dict], args, loads) -> str:
    lines = common.header(
        f"XLA's remat at a milder limit + our recomputation on top, compile-only {args.target}",
        {"load average at start / end (1/5/15 min; 2 cores shared by several helpers)":
             f"{loads[0]} ; {loads[1]}",
         "milder limits": ", ".join(f"{f:g}" for f in args.mild) + " x XLA's own temp",
         "time limits": f"each mild program's plan and each recomputation {args.time_limit_s:g} s "
                        f"recompute_cost={args.recompute_cost!r}"})
    lines += ["Temps in MiB. Target per XLA point (temp M, extra FLOPs F): M within 0.5 F, or "
              "0.85 M within F; a hybrid's FLOPs are XLA's at the milder limit plus our copies' "
              "on that program.", ""]
    table = []
    for r in rows:
        for t in r["tries"]:
            table.append([
                r["example"], f"{r['limit']:g}: {common.mib(r['xla_temp'])} at {r['xla_flops']:,}",
                f"{common.mib(t['goal_temp'])} within {t['allowed']:,.0f}",
                f"{t['mild']:g}: {common.mib(t['mild_xla_temp'])} -> {common.mib(t['mild_temp'])} "
                f"at {t['xla_flops']:,}",
                "-" if "skipped" in t else
                f"{common.mib(t['temp'])} at +{t['ours_flops']:,} ({t['copies']} copies"
                + ("" if t["built"] else ", NOT built") + ")",
                "-" if "skipped" in t else f"{t['xla_flops'] + t['ours_flops']:,}",
                t.get("skipped") or ("yes" if t["met"] else "no") + f" ({t['how']})",
                f"{t['plan_s']} / {t.get('seconds', '-')}"])
    lines += common.table(["example", "XLA point (limit: M at F)", "term asked",
                           "mild program (limit: XLA temp -> ours at XLA's FLOPs)",
                           "ours on top: temp at +FLOPs", "hybrid FLOPs", "met",
                           "seconds plan / ours"], table, right={4, 5})
    met = [r for r in rows if r["met"]]
    named = ", ".join(f"{r['example']} {r['limit']:g}" for r in met)
    lines += ["", f"Points met by a hybrid: {len(met)} of {len(rows)}"
              + (f" ({named})" if met else "") + "."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = points_parser(__doc__, time_limit_s=20.0, plan_time_limit_s=3.0,
                      time_help="each mild program's plan, and each recomputation on it")
    p.add_argument("--mild", default="0.95,0.9,0.85",
                   help="XLA's milder limits, as shares of its own temp")
    p.add_argument("--recompute_cost", default="flops", choices=("time", "flops"))
    args = p.parse_args(argv)
    args.mild = [float(x) for x in args.mild.split(",") if x]
    return run_points(run_one, render, args)


if __name__ == "__main__":
    raise SystemExit(main())
