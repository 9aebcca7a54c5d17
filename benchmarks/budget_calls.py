"""Separate budgeted plan() calls in one process: are they monotone, with the plan memo and without?

    python -m benchmarks.budget_calls --steps=flax_lm,lm_adamw:small \
        --fractions=0.9,0.75,0.6,0.5 --time_limit_s=5 --out=benchmarks/results/budget_calls

Per step, call order (descending, then ascending budgets) and memo setting
(``OLLA_JAX_PLAN_MEMO=0``: each call's own search, the old behaviour; on:
``olla_jax.plan_memo``), one fresh process makes one plan() call per budget,
budget = arguments + outputs - donated + f x XLA's temp (f in ``--fractions``),
each its own search of ``--time_limit_s``; the settings run one after the
other, the memo's first on every other step.  A violation is a pair of calls
where the lower budget got a plan of more memory than the higher one (met or
not: a missed budget's plan, ``BudgetNotMet.plan``, counts); one where the
lower budget's plan is also of less extra cost (a cheaper plan found later,
which the memo's rule prefers) is counted apart.  XLA's compiles are shared
within a process (``capture.record.sharing_compiles``): they are the same in
both settings.  ``flax_lm``: budget_share's 6-layer flax linen LM with optax
adam.  Figures in MiB (the step's total).  The results are written after
each process (a run stopped early keeps what it made); mlp:small's processes
took about 10 minutes each at load 5-7 (its verifications).
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
    p = common.parser(__doc__, time_limit_s=5.0, out="benchmarks/results/budget_calls")
    p.add_argument("--steps", default="flax_lm,lm_adamw:small",
                   help="flax_lm (benchmarks.budget_share's) or example:size, comma-separated")
    p.add_argument("--fractions", default="0.9,0.75,0.6,0.5",
                   help="budget temp as fractions of XLA's temp")
    p.add_argument("--orders", default="descending,ascending")
    p.add_argument("--worker", default=None, help=common.argparse.SUPPRESS)
    p.add_argument("--render", default=None,
                   help="a run's .json: write its .md (and .json) again with this code")
    return p.parse_args(argv)


def _step(spec: str):
    if spec == "flax_lm":
        from benchmarks.budget_share import flax_lm
        fn, args, static = flax_lm()
        return fn, args, static, ()
    import examples
    name, _, size = spec.partition(":")
    ex = examples.get(name, size or "small")
    return ex.fn, ex.args, ex.static_argnums, ex.donate_argnums


def worker(job: dict) -> dict:
    """The calls of one (step, order, memo) in this process."""
    import warnings

    import olla_jax
    from olla_jax import plan_memo
    from olla_jax.capture import record
    assert plan_memo.enabled() == job["memo"], (plan_memo.enabled(), job)
    fn, args, static, donate = _step(job["step"])
    options = dict(static_argnums=static, donate_argnums=donate)
    calls = []
    with record.sharing_compiles(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        xla = olla_jax.plan(fn, *args, time_limit_s=0.3, feed_back=False, **options)
        fixed = xla.argument_bytes + xla.output_bytes - xla.alias_bytes
        for fraction in job["fractions"]:
            budget = fixed + int(fraction * xla.xla_temp_bytes)
            load_start, t0 = common.load(), time.monotonic()
            try:
                p = olla_jax.plan(fn, *args, time_limit_s=job["limit"], memory_budget=budget,
                                  **options)
                met = True
            except olla_jax.BudgetNotMet as err:
                p, met = err.plan, False
            calls.append(dict(
                fraction=fraction, budget=budget, total=p.runs_total_bytes, met=met,
                extra_flops=p.extra_flops, cost=p.settings.get("recompute_extra_cost"),
                recomputed=len(p.recomputed), verified=p.verified,
                earlier=bool(p.settings.get("from_earlier_call")), solve_s=p.solve_seconds,
                verify_s=p.verify_seconds, wall_s=time.monotonic() - t0,
                load_start=load_start, load_end=common.load()))
    return dict(xla_total=xla.xla_total_bytes, calls=calls)


def _cost(call: dict) -> float:
    """The extra cost plan() ranks plans by (``recompute_extra_cost``; 0: none)."""
    if call["cost"] is not None:
        return call["cost"]
    return 0.0 if not call["extra_flops"] else float("inf")


def violations(calls: list[dict]) -> dict[str, int]:
    """Pairs of calls (in the order made) where the lower budget got the plan
    of more memory: ``later`` where the later call had the lower budget (what
    the memo prevents; ``cheaper``: of those, the later plan of less extra
    cost, which the memo's rule prefers), ``earlier`` where the earlier call
    had it (a later search found less memory than an earlier call had)."""
    out = {"later": 0, "cheaper": 0, "earlier": 0}
    for i, a in enumerate(calls):
        for b in calls[i + 1:]:
            if b["budget"] < a["budget"] and b["total"] > a["total"]:
                out["later"] += 1
                out["cheaper"] += _cost(b) < _cost(a)
            elif b["budget"] > a["budget"] and b["total"] < a["total"]:
                out["earlier"] += 1
    return out


def run_child(job: dict) -> dict:
    env = {**os.environ, "OLLA_JAX_PLAN_MEMO": "1" if job["memo"] else "0",
           "JAX_PLATFORMS": "cpu"}
    return common.child_row(job, [sys.executable, "-m", "benchmarks.budget_calls"], cwd=HERE,
                            env=env, timeout=1800)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    if args.render:
        with open(args.render) as f:
            data = json.load(f)
        write(args.out, data, data["runs"], data.get("load_end", "?"))
        return
    print(f"$ {common.command_line()}", flush=True)
    meta = common.run_meta()
    fractions = [float(f) for f in args.fractions.split(",")]
    runs = []
    for i, step in enumerate(args.steps.split(",")):
        for order in args.orders.split(","):
            ordered = sorted(fractions, reverse=order == "descending")
            for memo in ((False, True) if i % 2 == 0 else (True, False)):
                got = run_child(dict(step=step, order=order, memo=memo, fractions=ordered,
                                     limit=args.time_limit_s))
                runs.append(got)
                print(json.dumps({k: v for k, v in got.items() if k != "calls"}), flush=True)
                write(args.out, meta, runs, common.load(), quiet=True)   # kept if stopped
    write(args.out, meta, runs, common.load())


def write(out: str, meta: dict, runs: list[dict], load_end: str, quiet: bool = False) -> None:
    """``<out>.md`` and ``<out>.json`` of ``runs`` (the violations counted here)."""
    for r in runs:
        r["violations"] = violations(r["calls"])
    limit = runs[0]["limit"] if runs else None
    lines = common.header("Separate budgeted plan() calls in one process: monotone?",
                          {"time limit per call": f"{limit:g} s",
                           "load at start": meta["load_start"], "load at end": load_end},
                          command=meta["command"], machine_info=meta["machine"],
                          date=meta["date"])
    lines += ["Per process: its calls in order, each `budget MiB -> total MiB` (met: `ok`, "
              "else `miss`; `+F`: extra GFLOPs recomputed; `*`: a plan an earlier call found, "
              "applied again). Violations, pairs of calls where the lower budget got more "
              "memory: *later*, the later call had the lower budget (what the memo prevents; "
              "in brackets, those where the later plan is of less extra cost, which the memo's "
              "rule keeps); *earlier*, the earlier call had it (a later search found less "
              "memory than the earlier call had: no memo of past plans can undo that).", ""]
    body = []
    for r in runs:
        cells = " ; ".join(
            f"{common.mib(c['budget'])} -> {common.mib(c['total'])} {'ok' if c['met'] else 'miss'}"
            + (f" +{c['extra_flops'] / 1e9:.3g}" if c["extra_flops"] else "")
            + ("*" if c["earlier"] else "") for c in r["calls"])
        v = r["violations"]
        body.append([r["step"], r["order"], "on" if r["memo"] else "off", cells,
                     sum(c["met"] for c in r["calls"]),
                     f"{v['later']} ({v['cheaper']})", v["earlier"],
                     f"{max(c['solve_s'] for c in r['calls']):.2f}",
                     f"{sum(c['wall_s'] for c in r['calls']):.0f}",
                     f"{r['calls'][0]['load_start']} -> {r['calls'][-1]['load_end']}"])
    lines += common.table(["step", "order", "memo", "calls", "met", "later (cheaper)",
                           "earlier", "max planner s", "wall s", "load"], body,
                          right={4, 5, 6, 7, 8})
    lines += [""]
    for memo in (False, True):
        mine = [r for r in runs if r["memo"] == memo]
        count = {k: sum(r["violations"][k] for r in mine) for k in ("later", "cheaper", "earlier")}
        lines.append(f"- memo {'on' if memo else 'off'}: {count['later']} later violations "
                     f"({count['cheaper']} of less extra cost), {count['earlier']} earlier, "
                     f"{sum(c['met'] for r in mine for c in r['calls'])} of "
                     f"{sum(len(r['calls']) for r in mine)} budgets met, "
                     f"{sum(c['earlier'] for r in mine for c in r['calls'])} plans from an "
                     "earlier call, total of the plans "
                     f"{common.mib(sum(c['total'] for r in mine for c in r['calls']))} MiB")
    common.write_results(out, dict(meta, load_end=load_end, runs=runs), "\n".join(lines) + "\n")
    if not quiet:
        print("\n".join(lines))


if __name__ == "__main__":
    main()
