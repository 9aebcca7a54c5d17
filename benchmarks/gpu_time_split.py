"""How a budgeted plan() on a compile-only GPU target splits its one time limit, two checkouts alternating.

    python -m benchmarks.gpu_time_split --old=/tmp/gputime/base \
        --examples=gpt2:small,lm_adamw:small,resnet18:small --limits=10,30 --fraction=0.8 \
        --out=benchmarks/results/gpu_time_split

Per example: the budget is the step's arguments and outputs plus
``--fraction`` x XLA's temp (a plan() with no budget, this checkout).  Then
per limit T, ``olla_jax.plan(..., backend=--target, memory_budget=budget,
time_limit_s=T)`` with the whole T (the first order and placement, our
recomputation search, XLA's rematerialization planned by us, sharing it as
plan() splits it), on the ``--old`` checkout's code and this one's, one
after the other (the order swapped at each row).  Each plan() runs in a
fresh child process.  Reported: whether the budget was met, the total and
temp reached (MiB), the extra FLOPs of the side kept, the seconds our
recomputation search was given (``budget.recompute_to_budget``'s
``time_limit_s``) and took (its planner seconds), the planner's part of the
whole call (``Plan.solve_seconds``, against T), the builds and XLA's compiles
(``verify_seconds``, ``capture_seconds``), and the load before and after.
Compile-only: the executables are built and read back, not run.
"""

from __future__ import annotations

import json
import os
import sys
import time

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import common  # noqa: E402

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_args(argv=None):
    p = common.parser(__doc__, worker=True, out="benchmarks/results/gpu_time_split", old=None)
    p.add_argument("--examples", default="gpt2:small,lm_adamw:small,resnet18:small")
    p.add_argument("--target", default="gpu:h100")
    p.add_argument("--limits", default="10,30")
    p.add_argument("--fraction", type=float, default=0.8,
                   help="the budget: arguments and outputs + this x XLA's temp")
    p.add_argument("--new_first", type=int, default=0, choices=(0, 1),
                   help="1: this checkout's code first at the first row (a second round's order)")
    return p.parse_args(argv)


def _step(spec: str):
    import importlib
    name, _, size = spec.partition(":")
    return importlib.import_module(f"examples.{name}").make_step(size or "small")


def worker(job: dict) -> dict:
    """One plan() in this process, on the code at ``job['code']``: with no
    budget (``job['budget']`` None: XLA's temp and the step's io), else with it."""
    olla_jax = common.olla_jax_at(job["code"])
    import warnings
    from olla_jax import budget as budget_lib
    st = _step(job["example"])
    args = st.abstract_args()
    options = dict(backend=job["target"], static_argnums=st.static_argnums,
                   donate_argnums=st.donate_argnums)
    warnings.simplefilter("ignore")
    if job["budget"] is None:
        p = olla_jax.plan(st.fn, *args, time_limit_s=5.0, feed_back=False, **options)
        return dict(xla_temp=p.xla_temp_bytes, io=p.runs_total_bytes - p.runs_temp_bytes)
    searches = []
    real = budget_lib.recompute_to_budget

    def recompute_to_budget(result, budget, **kw):
        got = real(result, budget, **kw)
        searches.append(dict(limit_s=round(kw.get("time_limit_s", 0.0), 2),
                             search_s=round(got.solve_seconds - result.solve_seconds, 2),
                             build_s=round(got.verify_seconds - result.verify_seconds, 2)))
        return got
    budget_lib.recompute_to_budget = recompute_to_budget
    load_start, t0 = common.load(), time.monotonic()
    try:
        p = olla_jax.plan(st.fn, *args, time_limit_s=job["limit"],
                          memory_budget=job["budget"], **options)
        met = True
    except olla_jax.BudgetNotMet as err:
        p, met = err.plan, False
    said = [n for n in p.notes if "not searched" in n or "not tried" in n or "none tried" in n]
    sides = next((n for n in p.notes if " side by side (" in n), "")
    return dict(met=met, total=p.runs_total_bytes, temp=p.runs_temp_bytes,
                extra_flops=p.extra_flops, engine=p.engine, solve_s=round(p.solve_seconds, 2),
                verify_s=round(p.verify_seconds, 2), capture_s=round(p.capture_seconds, 1),
                wall_s=round(time.monotonic() - t0, 1), searches=searches,
                short=[n[:300] for n in said], sides=sides,
                load_start=load_start, load_end=common.load())


def run_child(job: dict) -> dict:
    return common.child_row(job, [sys.executable, os.path.abspath(__file__), "--old=-"],
                            cwd=job["code"], timeout=1500, keep_crash=True)


def render(rows: list[dict], args, meta: dict) -> str:
    lines = common.header("A budgeted plan()'s one time limit on a compile-only GPU target",
                          {"old": f"{args.old} (the checkout compared against)",
                           "new": "this checkout", "target": args.target,
                           "budget": f"io + {args.fraction:g} x XLA's temp"}, command=meta["cmd"])
    lines += ["", "ours s: the limit our recomputation search was given -> its planner seconds "
              "(- where it was not called). planner s: Plan.solve_seconds (the whole call's, "
              "against the limit). builds s: verify_seconds; XLA s: capture_seconds. MiB: the "
              "step's total (arguments, outputs, temp).", "",
              "| example | limit s | code | met | total MiB | budget MiB | temp MiB | extra GFLOPs "
              "| kept | ours s | planner s | builds s | XLA s | load start -> end |",
              "|---|---:|---|---|---:|---:|---:|---:|---|---|---:|---:|---:|---|"]
    for x in rows:
        if "crashed" in x:
            lines.append(f"| {x['example']} | {x['limit']:g} | {x['which']} | crashed: "
                         f"{x['crashed'][-200:]} |")
            continue
        ours = ", ".join(f"{s['limit_s']:.2f} -> {s['search_s']:.2f}" for s in x["searches"]) \
            or "-"
        lines.append(f"| {x['example']} | {x['limit']:g} | {x['which']} | {x['met']} | "
                     f"{common.mib(x['total'])} | {common.mib(x['budget'])} | "
                     f"{common.mib(x['temp'])} | {x['extra_flops'] / 1e9:.2f} | {x['engine']} | "
                     f"{ours} | {x['solve_s']:.2f} | {x['verify_s']:.1f} | {x['capture_s']:.0f} | "
                     f"{x['load_start']} -> {x['load_end']} |")
    lines += ["", "Each side's figures, as the plan's notes give them:", ""]
    for x in rows:
        if x.get("sides"):
            lines.append(f"- {x['example']} {x['limit']:g} s {x['which']}: {x['sides']}")
    lines += ["", "What each plan said of a side not searched or not tried:", ""]
    for x in rows:
        for n in x.get("short", []):
            lines.append(f"- {x['example']} {x['limit']:g} s {x['which']}: {n}")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    meta = {"cmd": common.command_line()}
    print(f"$ {meta['cmd']}", flush=True)
    codes = {"old": os.path.abspath(args.old), "new": HERE}
    limits = [float(x) for x in args.limits.split(",") if x]
    rows, k = [], args.new_first
    for example in args.examples.split(","):
        base = run_child(dict(code=HERE, example=example, target=args.target, budget=None,
                              limit=0))
        if "crashed" in base:
            print(f"{example}: {base['crashed'][-500:]}", flush=True)
            continue
        budget = base["io"] + int(args.fraction * base["xla_temp"])
        for limit in limits:
            for which in (("old", "new") if k % 2 == 0 else ("new", "old")):
                got = run_child(dict(code=codes[which], example=example, target=args.target,
                                     budget=budget, limit=limit))
                rows.append(dict(got, which=which, xla_temp=base["xla_temp"]))
                print(json.dumps(rows[-1]), flush=True)
                common.write_results(args.out, dict(meta, rows=rows), render(rows, args, meta))
            k += 1
    print(render(rows, args, meta))


if __name__ == "__main__":
    main()
