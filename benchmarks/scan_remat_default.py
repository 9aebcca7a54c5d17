"""What ``scan_remat`` on by default would cost (olla_jax.scan_remat, issue 20).

For each scan example: the trace that finds the candidate stacks (what a
missed budget pays for the BudgetNotMet hint: a trace, no compile), the
candidates and their bytes, and, with a budget of the arguments, outputs and
``--budget_fraction`` x XLA's temp, ``plan()``'s wall seconds and outcome
without and with ``scan_remat=True`` (what default-on would add where the
budget is missed and candidates exist).

    python -m benchmarks.scan_remat_default --out=benchmarks/results/scan_remat_default
"""

from __future__ import annotations

import os
import sys
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import common  # noqa: E402

CASES = ("lstm:tiny", "lstm:small", "llama:scan", "llama:scan_remat")


def _step(case: str):
    name, size = case.split(":")
    if name == "llama":
        from examples import llama
        return llama.make_step(llama.Config(scan=True, remat=size == "scan_remat"))
    import examples
    return examples.get(name, size)


def run(case: str, time_limit_s: float, fraction: float) -> dict:
    import jax
    import olla_jax
    from olla_jax import scan_remat
    step = _step(case)
    fn, args, donate = step.fn, tuple(step.args), tuple(step.donate_argnums)
    row = {"model": case, "load_start": common.load()}
    t0 = time.monotonic()
    closed = scan_remat.trace(fn, args).closed
    stacks = scan_remat.residual_stacks(closed)
    row.update(trace_s=time.monotonic() - t0, candidates=len(stacks),
               candidate_bytes=sum(s.nbytes for s in stacks))
    mem = jax.jit(fn, donate_argnums=donate).lower(*args).compile().memory_analysis()
    temp = mem.temp_size_in_bytes
    budget = int(mem.argument_size_in_bytes + mem.output_size_in_bytes
                 - mem.alias_size_in_bytes + fraction * temp)
    row.update(xla_temp=temp, budget=budget)
    for key, flag in (("plain", False), ("scan_remat", True)):
        t0 = time.monotonic()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                met = olla_jax.plan(fn, *args, donate_argnums=donate, time_limit_s=time_limit_s,
                                    memory_budget=budget, scan_remat=flag)
                row[key] = {"met": True, "total": met.runs_total_bytes,
                            "extra_flops": met.extra_flops}
            except olla_jax.BudgetNotMet as err:
                row[key] = {"met": False, "total": err.plan.runs_total_bytes,
                            "hint": any(r.startswith("scan_remat=True") for r in err.reasons)}
        row[key]["seconds"] = time.monotonic() - t0
    row["load_end"] = common.load()
    return row


def main(argv=None) -> None:
    p = common.parser(__doc__, time_limit_s=10.0, out="benchmarks/results/scan_remat_default")
    p.add_argument("--cases", default=",".join(CASES))
    p.add_argument("--budget_fraction", type=float, default=0.5)
    args = p.parse_args(argv)
    common.gpu_environment("cpu")
    print(f"$ {common.command_line()}", flush=True)
    meta = common.run_meta()
    rows = []
    for case in args.cases.split(","):
        row = run(case, float(args.time_limit_s), args.budget_fraction)
        print(row, flush=True)
        rows.append(row)
    mib = common.mib

    def said(b):
        out = f"{'met' if b['met'] else 'missed'} {mib(b['total'])}, {b['seconds']:.1f} s"
        return out + (", hint" if b.get("hint") else "")
    table = common.table(
        ["case", "trace s", "candidates", "XLA temp", "budget", "scan_remat=False",
         "scan_remat=True"],
        [[r["model"], f"{r['trace_s']:.2f}", f"{r['candidates']} ({mib(r['candidate_bytes'])})",
          mib(r["xla_temp"]), mib(r["budget"]), said(r["plain"]), said(r["scan_remat"])]
         for r in rows], right={1, 3, 4})
    lines = common.header("scan_remat by default: what it would cost",
                          {"loads (1/5/15 min)": common.row_loads(rows),
                           "time_limit_s": args.time_limit_s,
                           "budget": f"arguments + outputs - aliased + {args.budget_fraction:g} "
                                     "x XLA's temp"},
                          command=meta["command"], machine_info=meta["machine"],
                          date=meta["date"])
    lines += table + ["", "trace s: scan_remat.trace + residual_stacks (the hint's cost); "
                      "plan columns: outcome, total (MiB), wall seconds of the whole plan() "
                      "call; hint: BudgetNotMet names scan_remat=True."]
    text = "\n".join(lines) + "\n"
    print(text)
    common.write_results(args.out, {**meta, "load_end": common.load(), "rows": rows}, text)


if __name__ == "__main__":
    main()
