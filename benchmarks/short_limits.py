"""plan()'s planner part against short time limits, two checkouts alternating.

    python -m benchmarks.short_limits --old=/tmp/shorttime/old \
        --steps=mlp:tiny,cnn_adam:small,lm_adamw:small,resnet18:small,unet:small,lstm:small \
        --limits=0.01,0.1,0.3,1 --budget_limits=0.3,1 --rounds=1 \
        --out=benchmarks/results/short_limits
    python -m benchmarks.short_limits --old=/tmp/shorttime/old \
        --steps=cnn_adam:small,lm_adamw:small,resnet18:small,unet:small --limits=10 \
        --budget_limits= --rounds=1 --out=benchmarks/results/short_limits_10s

Per round, step (``example:size``) and limit, the ``--old`` checkout's
plan() and this one's, one after the other (the order alternating by
round), each in a fresh process (a user's first call) with ``feed_back=False``
(the verification is outside the limit): the planner's part
(``Plan.solve_seconds``) and its ratio to the limit, whether XLA's plan was
kept, whether an order search ran, the planned total (arguments, outputs,
temp; MiB).  ``--budget_limits``: the same with ``memory_budget`` at
``--budget_share`` of XLA's total (BudgetNotMet counted as a result: its
plan's figures).  Writes ``<out>.md`` and ``<out>.json``.
"""

from __future__ import annotations

import json
import os
import sys

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import common  # noqa: E402

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_args(argv=None):
    p = common.parser(__doc__, worker=True, out="benchmarks/results/short_limits", old=None)
    p.add_argument("--steps", default="mlp:tiny,lm_adamw:small,unet:small")
    p.add_argument("--limits", default="0.01,0.1,0.3,1")
    p.add_argument("--budget_limits", default="0.3,1")
    p.add_argument("--budget_share", type=float, default=0.9)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--render", default=None,
                   help="no runs: the tables of the JSON rows in this file (a run's printed "
                        "log, e.g. one stopped before its end)")
    p.add_argument("--render_note", default="", help="with --render: where its rows came from")
    return p.parse_args(argv)


def worker(job: dict) -> dict:
    """One plan() in this process, on the code at ``job['code']``."""
    olla_jax = common.olla_jax_at(job["code"])
    import importlib
    import warnings
    import examples
    plan_mod = importlib.import_module("olla_jax.plan")
    name, _, size = job["step"].partition(":")
    ex = examples.get(name, size or "tiny")
    budget = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if job["budget_share"]:
            from olla_jax.capture import capture
            m = capture(ex.fn, *ex.args, static_argnums=ex.static_argnums).memory
            budget = int(job["budget_share"] * (m.argument + m.output - m.alias + m.temp))
        load_start = common.load()
        error = ""
        try:
            p = olla_jax.plan(ex.fn, *ex.args, static_argnums=ex.static_argnums,
                              time_limit_s=job["limit"], memory_budget=budget, feed_back=False)
        except plan_mod.BudgetNotMet as err:
            p, error = err.plan, "BudgetNotMet"
    stages = p.settings.get("stage_ends_s") or {}
    short = next((n for n in p.notes if n.startswith("no time to plan")), "")
    return dict(total=p.runs_total_bytes, solve_s=p.solve_seconds, kept_xla=p.source == "xla",
                order_search=any(k.startswith("order search") for k in stages), budget=budget,
                error=error, no_time=short[:160], load_start=load_start, load_end=common.load())


def run_child(job: dict) -> dict:
    return common.child_row(job, [sys.executable, os.path.abspath(__file__), "--old=-"],
                            cwd=job["code"], timeout=900, keep_crash=True)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    codes = {"old": os.path.abspath(args.old), "new": HERE}
    limits = [(float(x), 0.0) for x in args.limits.split(",") if x]
    limits += [(float(x), args.budget_share) for x in args.budget_limits.split(",") if x]
    if args.render:
        with open(args.render) as f:
            rows = [json.loads(line) for line in f if line.startswith("{")]
        print("\n".join(write(args, rows)))
        return
    rows = []
    for r in range(args.rounds):
        for step in args.steps.split(","):
            for limit, share in limits:
                for code in (("old", "new") if r % 2 == 0 else ("new", "old")):
                    got = run_child(dict(code=codes[code], step=step, limit=limit,
                                         budget_share=share))
                    rows.append(dict(got, round=r, which=code))
                    print(json.dumps({k: v for k, v in rows[-1].items() if k != "code"}),
                          flush=True)
                    write(args, rows)   # each row: a run stopped early keeps its tables
    print("\n".join(write(args, rows)))


def write(args, rows: list[dict]) -> list[str]:
    """``<out>.md`` and ``<out>.json`` of ``rows``; the lines of the first."""
    extra = {"old": f"{args.old} (the checkout compared against)", "new": "this checkout"}
    if args.render:
        extra["rows"] = args.render_note or f"read from {args.render}"
    lines = common.header("plan()'s planner part against short time limits", extra)
    lines += ["Planner s: Plan.solve_seconds (fresh process, feed_back=False). Budget: "
              f"{args.budget_share:g} x XLA's total where given. MiB: the planned total.", "",
              "| round | step | limit s | budget MiB | code | planner s | ratio | kept XLA's "
              "| order search | total MiB | result | load start -> end |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for x in rows:
        if "crashed" in x:
            lines.append(f"| {x['round']} | {x['step']} | {x['limit']:g} | | {x['which']} | "
                         f"crashed: {x['crashed'][-200:]!r} | | | | | | |")
            continue
        budget = f"{x['budget'] / 2**20:.2f}" if x["budget"] else "-"
        result = x["error"] or ("no time to plan" if x["no_time"] else "plan")
        lines.append(f"| {x['round']} | {x['step']} | {x['limit']:g} | {budget} | {x['which']} "
                     f"| {x['solve_s']:.3f} | {x['solve_s'] / x['limit']:.2f} | {x['kept_xla']} "
                     f"| {x['order_search']} | {x['total'] / 2**20:.2f} | {result} | "
                     f"{x['load_start']} -> {x['load_end']} |")
    done = [x for x in rows if "crashed" not in x]
    lines += ["", "Over 1.1 x the limit, by code: " + ", ".join(
        f"{c} {sum(x['solve_s'] > 1.1 * x['limit'] for x in done if x['which'] == c)} of "
        f"{sum(x['which'] == c for x in done)}" for c in ("old", "new")),
        "Worst ratio, by code: " + ", ".join(
        f"{c} {max((x['solve_s'] / x['limit'] for x in done if x['which'] == c), default=0):.2f}"
        for c in ("old", "new"))]
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(args.out + ".json", "w") as f:
        json.dump(rows, f, indent=1)
    return lines


if __name__ == "__main__":
    main()
