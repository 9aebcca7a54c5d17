"""Memory budgets on the example steps: order and placement, then recomputation.

    python -m benchmarks.budget --size=small --fractions=0.75,0 --models=all \
        --out=benchmarks/results/budget_cpu

Per model: XLA's best temp (the better of XLA:CPU's two schedulers), our
order-and-placement temp, then for each fraction f a budget of
arguments + outputs - donated + f x XLA's best temp (f = 0: as little as
recomputation reaches), met by ``olla_jax.budget.recompute_to_budget`` on top
of the order-and-placement plan: temp reached (read from the rewritten,
verified executable), its ratio to XLA's best, the working-set bound (no plan
running the same kernels needs less temp), values recomputed, extra FLOPs (from
the HLO by olla_jax.flops, as a share of the step's) and the step time
ours/XLA (median of interleaved calls).  Each model runs in its own process.
Writes ``<out>.md`` and ``<out>.json``.

``--curve``: the Pareto curve (memory vs extra cost vs step time) instead:

    python -m benchmarks.budget --curve --models=lm_adamw \
        --fractions=1.0,0.9,0.8,0.7,0.6,0 --out=benchmarks/results/budget_curve_cpu

one ladder of budgets on one plan's graph and order (``budget.ladder``,
monotone by construction: a lower budget keeps the higher one's plan when its
own is worse), each plan fed back (``budget.feed_back_plan``) and timed.
"""

from __future__ import annotations

import os
import sys
import time

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import common  # noqa: E402


def parse_args(argv=None):
    p = common.parser(__doc__, worker=True, size="small", models="all", time_limit_s=20.0,
                      out="benchmarks/results/budget_cpu")
    p.add_argument("--fractions", default="0.75,0",
                   help="budget temp as fractions of XLA's best temp; 0: the least reachable")
    p.add_argument("--engines", default="cpsat",
                   help="recomputation searches side by side: greedy, cpsat, mip (comma-separated)")
    p.add_argument("--timing_repeats", type=int, default=20)
    p.add_argument("--timing_budget_s", type=float, default=30.0)
    p.add_argument("--render", default=None,
                   help="a run's .json: write its .md again with this code (same rows, same command)")
    p.add_argument("--curve", action="store_true",
                   help="the Pareto curve: one monotone ladder (budget.ladder) over the fractions "
                        "on one captured graph and order, each point fed back and timed")
    return p.parse_args(argv)


def run_one(name: str, args) -> list[dict]:
    import warnings
    import examples
    from olla_jax import budget

    step = examples.get(name, args.size)
    base = common.plan_quietly(step, time_limit_s=args.time_limit_s)
    fixed = base.argument_bytes + base.output_bytes - base.alias_bytes
    floor, where = budget.working_set_bound(base.graph, base.capture) if base.graph else (None, "")
    # no plan recomputing only the candidates goes below this, under any order
    remat_floor = (budget.recompute_floor(base.graph, budget.candidates(base.graph, base.capture),
                                          time_limit_s=args.time_limit_s / 2,
                                          capture=base.capture)
                   if base.graph else None)
    total_flops = budget.step_flops(base.capture)
    rows = []
    for engine, fraction in [(e, float(f)) for e in args.engines.split(",")
                             for f in args.fractions.split(",")]:
        target_temp = int(fraction * base.xla_best_temp_bytes)
        row = {"model": name, "engine": engine, "fraction": fraction,
               "xla_best": base.xla_best_temp_bytes,
               "order_placement": base.runs_temp_bytes, "working_set": floor,
               "recompute_floor": remat_floor,
               "working_set_at": where, "step_flops": total_flops}
        t0 = time.perf_counter()
        if fraction > 0 and base.runs_temp_bytes <= target_temp:
            result = base
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                result = budget.recompute_to_budget(
                    base, fixed + max(target_temp, 1), args=step.args,
                    static_argnums=step.static_argnums, time_limit_s=args.time_limit_s,
                    measure_time=False, engine=engine)
        row.update(recompute_s=time.perf_counter() - t0, temp=result.runs_temp_bytes,
                   recomputed=len(result.recomputed), extra_flops=result.extra_flops,
                   verified=result.verified, notes=list(result.notes[len(base.notes):]),
                   met=fraction > 0 and result.runs_temp_bytes <= target_temp)
        row["time_ratio"] = None
        if not row["met"] and result.graph is not None:
            # what holds the arena's peak, and why it is not recomputed
            row["peak_held"] = budget.held_at_peak(result.graph, result.capture,
                                                   result.layout).describe()
        if result.recomputed:
            ratio, repeats = _time(result, step, args)
            row.update(time_ratio=ratio, timing_repeats=repeats)
        rows.append(row)
    return rows


def _time(result, step, args) -> tuple[float, int]:
    """(step time ours/XLA, repeats): the median of interleaved calls."""
    import jax
    import jax.numpy as jnp
    from olla_jax.apply.timing import time_ratio
    # the executables take the dynamic arguments only (a static one would become an array)
    dynamic = tuple(a for i, a in enumerate(step.args) if i not in set(step.static_argnums))
    fresh = jax.tree.map(lambda x: jnp.array(x, copy=True), dynamic)
    t1 = time.perf_counter()
    jax.block_until_ready(result.xla_compiled.executable(*fresh))
    one = time.perf_counter() - t1
    repeats = max(3, min(args.timing_repeats, int(args.timing_budget_s / (2 * one + 1e-9))))
    r = time_ratio(result.xla_compiled.executable, result.compiled.executable, dynamic,
                   repeats=repeats, warmup=1)
    return r.ratio, repeats


def run_curve(name: str, args) -> list[dict]:
    """One ladder of budgets (fractions, highest first) on one plan's graph
    and order (``budget.ladder``: monotone by construction), each distinct
    plan fed back (checked, rewritten, verified in a child) and timed."""
    import warnings
    import examples
    from olla_jax import budget

    step = examples.get(name, args.size)
    base = common.plan_quietly(step, time_limit_s=args.time_limit_s)
    if base.graph is None:
        raise RuntimeError(f"no memory model of {name}: {'; '.join(base.notes)}")
    graph = base.graph
    order = base.layout.order if base.layout is not None else graph.xla_order
    cands = budget.candidates(graph, base.capture)
    fractions = sorted((float(f) for f in args.fractions.split(",")), reverse=True)
    fractions = [f for f in fractions if f > 0] + [f for f in fractions if f <= 0]
    targets = [max(1, int(f * base.xla_best_temp_bytes)) for f in fractions]
    t0 = time.perf_counter()
    plans = budget.ladder(graph, order, cands, targets, time_limit_s=args.time_limit_s,
                          engine=args.engines.split(",")[0], base_temp=base.runs_temp_bytes)
    ladder_s = time.perf_counter() - t0
    total_flops = budget.step_flops(base.capture)
    fed = {}                            # plan identity -> row fields
    rows = []
    for fraction, target, found in zip(fractions, targets, plans):
        row = {"model": name, "curve": True, "fraction": fraction, "target": target,
               "xla_best": base.xla_best_temp_bytes, "order_placement": base.runs_temp_bytes,
               "step_flops": total_flops, "ladder_s": ladder_s,
               "planned": found.temp_bytes if found else base.runs_temp_bytes,
               "extra_cost_s": found.extra_cost_s if found else 0.0,
               "how": found.how if found else "order and placement"}
        # the ladder hands one plan to several budgets (a higher one's kept, or a
        # lower one's that meets a budget its own search missed)
        key = None if found is None else id(found)
        row["own_plan"] = found is None or all(found is not p for p in plans[:len(rows)])
        if key not in fed:
            if found is None:
                fed[key] = dict(temp=base.runs_temp_bytes, recomputed=0, extra_flops=0,
                                verified=base.verified, time_ratio=None, notes=[])
            else:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    got = budget.feed_back_plan(base, found, args=step.args,
                                                static_argnums=step.static_argnums,
                                                measure_time=False)
                fed[key] = dict(temp=got.runs_temp_bytes, recomputed=len(got.recomputed),
                                extra_flops=got.extra_flops, verified=got.verified,
                                notes=list(got.notes[len(base.notes):]), time_ratio=None)
                if got.recomputed:
                    fed[key]["time_ratio"], fed[key]["timing_repeats"] = _time(got, step, args)
        row.update(fed[key])
        row["met"] = fraction > 0 and row["temp"] <= target
        rows.append(row)
        print(f"{name} f={fraction:g}: temp {row['temp']} (planned {row['planned']}), "
              f"{row['recomputed']} recomputed, time {row['time_ratio']}", flush=True)
    temps = [r["temp"] for r in rows]
    for r in rows:
        r["monotone"] = all(a >= b for a, b in zip(temps, temps[1:]))
    return rows


def _rendered(meta: dict) -> dict:
    """The header line naming the --render command that wrote the markdown again, if one did."""
    return {"markdown rewritten by": f"`{meta['rendered_by']}` (same rows)"} \
        if meta.get("rendered_by") else {}


def curve_markdown(rows: list[dict], args, meta: dict) -> str:
    lines = common.header(f"olla_jax recomputation curve: cpu, size {args.size}", {
        "fractions": args.fractions, "engine": args.engines.split(",")[0],
        "time limit per point": f"{args.time_limit_s:g} s",
        "load average at start, end": f"{meta['load_start']}; {meta['load_end']}",
        **_rendered(meta)}, command=meta["command"], machine_info=meta["machine"], date=meta["date"])
    lines += ["Temps in MiB. One plan of the step (order and placement), then one ladder of "
              "budgets on its graph and order, highest first (olla_jax.budget.ladder: a lower "
              "budget keeps the higher one's plan when its own would need more temp, or the same "
              "for more cost, and a budget its own search missed takes the cheapest plan a lower "
              "one found that meets it); budget temp = fraction x XLA's best temp (fraction 0: as little "
              "as recomputation reaches). temp: read from the rewritten executable, verified "
              "bit-for-bit in a child (planned: the plan's own figure). extra FLOPs % of the "
              "step (olla_jax.flops); extra cost: "
              "the roofline estimate of the copies (ms); time: step time ours/XLA (median of "
              "interleaved calls).", ""]
    cols = ["model", "fraction", "budget temp", "planned", "temp", "temp/XLA best", "recomputed",
            "extra FLOPs %", "extra cost ms", "time", "verified", "met", "plan"]
    body = []
    for r in rows:
        if "error" in r:
            body.append([r["model"], *["-"] * 11, "ERROR: " + r["error"][:200]])
            continue
        body.append([r["model"], f"{r['fraction']:g}", common.mib(r["target"]),
                     common.mib(r["planned"]), common.mib(r["temp"]),
                     f"{r['temp'] / r['xla_best']:.3f}",
                     r["recomputed"],
                     f"{100 * r['extra_flops'] / r['step_flops']:.1f}" if r["step_flops"] else "-",
                     f"{1e3 * r['extra_cost_s']:.3f}",
                     f"{r['time_ratio']:.3f}" if r.get("time_ratio") else "-",
                     "yes" if r["verified"] else "no",
                     "-" if r["fraction"] == 0 else ("yes" if r["met"] else "no"),
                     r["how"] if r["own_plan"] else f"{r['how']} (the same plan as a higher budget's)"])
    lines += common.table(cols, body)
    for name in dict.fromkeys(r["model"] for r in rows if "error" not in r):
        sel = [r for r in rows if r["model"] == name and "error" not in r]
        lines += ["", f"- {name}: XLA best temp {common.mib(sel[0]['xla_best'])} MiB, order and "
                      f"placement {common.mib(sel[0]['order_placement'])} MiB; ladder searched in "
                      f"{sel[0]['ladder_s']:.0f} s; temp monotone non-increasing down the ladder: "
                      + ("yes" if sel[0]["monotone"] else "NO")]
    return "\n".join(lines) + "\n"


def worker(args) -> None:
    run = run_curve if args.curve else run_one
    common.write_worker_result(args.worker_out, lambda: run(args.worker, args),
                               lambda msg: [{"model": args.worker, "error": msg}])


def markdown(rows: list[dict], args, meta: dict) -> str:
    lines = common.header(f"olla_jax memory budgets: cpu, size {args.size}", {
        "fractions": args.fractions, "engines": args.engines, "time limit": f"{args.time_limit_s:g} s",
        "load average at start, end": f"{meta['load_start']}; {meta['load_end']}",
        **_rendered(meta)}, command=meta["command"], machine_info=meta["machine"], date=meta["date"])
    lines += ["Temps in MiB. budget = arguments + outputs - donated + fraction x XLA best temp "
              "(fraction 0: the least recomputation reaches). ours/XLA best: temp reached over "
              "XLA's best temp. working set: no plan running the same kernels needs less temp "
              "(the largest operands + results of one instruction, less all output space). "
              "floor: no plan recomputing only the values that qualify needs less temp, under any "
              "order (budget.recompute_floor: order lower bounds with each such value live only at "
              "the steps that write or read it). "
              "extra FLOPs % of the step (counted from the HLO, olla_jax.flops). time = step time ours/XLA.", ""]
    cols = ["model", "engine", "fraction", "XLA best", "order+placement", "ours", "ours/XLA best",
            "working set", "floor", "floor/XLA best", "recomputed", "extra FLOPs %", "time", "verified", "met", "notes"]
    body = []
    for r in rows:
        if "error" in r:
            body.append([r["model"], *["-"] * 14, "ERROR: " + r["error"][:200]])
            continue
        share = (f"{100 * r['extra_flops'] / r['step_flops']:.1f}" if r["step_flops"] else "-")
        body.append([r["model"], r.get("engine", "-"), f"{r['fraction']:g}",
                     common.mib(r["xla_best"]),
                     common.mib(r["order_placement"]), common.mib(r["temp"]),
                     f"{r['temp'] / r['xla_best']:.3f}" if r["xla_best"] else "-",
                     common.mib(r["working_set"]),
                     common.mib(r["recompute_floor"]) if r.get("recompute_floor") is not None else "-",
                     f"{r['recompute_floor'] / r['xla_best']:.3f}"
                     if r.get("recompute_floor") is not None and r["xla_best"] else "-",
                     r["recomputed"], share,
                     f"{r['time_ratio']:.3f}" if r.get("time_ratio") else "-",
                     "yes" if r["verified"] else "no",
                     "-" if r["fraction"] == 0 else ("yes" if r["met"] else "no"),
                     "; ".join(r["notes"])[:200] or "-"])
    lines += common.table(cols, body)
    held = [r for r in rows if r.get("peak_held")]
    if held:
        lines += ["", "Over budget: what is live in the arena where it peaks under the plan, by why "
                      "it is not recomputed (budget.held_at_peak):", ""]
        lines += [f"- {r['model']}, fraction {r['fraction']:g}: {r['peak_held']}" for r in held]
    ok = [r for r in rows if "error" not in r]
    for engine, fraction in sorted({(r.get("engine", "-"), r["fraction"]) for r in ok},
                                   key=lambda x: (x[0], -x[1])):
        sel = [r for r in ok if r["fraction"] == fraction and r.get("engine", "-") == engine]
        g = common.geomean(r["temp"] / r["xla_best"] for r in sel if r["xla_best"])
        met = sum(r["met"] for r in sel)
        t = [r["time_ratio"] for r in sel if r.get("time_ratio")]
        lines += ["", f"- {engine}, fraction {fraction:g}: geomean temp ours/XLA best "
                      f"{g:.3f}" if g else f"- {engine}, fraction {fraction:g}: -"]
        if fraction > 0:
            lines[-1] += f"; budget met on {met} of {len(sel)}"
        if t:
            lines[-1] += f"; step time ratio {min(t):.3f}-{max(t):.3f} where recomputed"
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    args = parse_args(argv)
    common.gpu_environment("cpu")
    if args.worker:
        return worker(args)
    if args.render:
        import json
        import shlex
        data = json.load(open(args.render))
        made = parse_args(shlex.split(data["meta"]["command"])[3:])   # after "python -m benchmarks.budget"
        data["meta"]["rendered_by"] = common.command_line()
        with open(args.render[:-len(".json")] + ".md", "w") as f:
            f.write((curve_markdown if made.curve else markdown)(data["rows"], made, data["meta"]))
        return
    names = common.model_names(args.models)
    meta = common.run_meta()
    rows = []
    for name in names:
        flags = common.forward(args, "size", "fractions", "engines", "time_limit_s",
                               "timing_repeats", "timing_budget_s", "curve")
        t0 = time.perf_counter()
        got = common.run_worker("benchmarks.budget", name, flags,
                                lambda message: [{"model": name, "error": message}])
        rows += got
        print(f"{name}: {time.perf_counter() - t0:.0f} s "
              + "; ".join(f"f={r.get('fraction')}: {r.get('temp')} ({r.get('recomputed')} recomputed)"
                          if "error" not in r else r["error"] for r in got), flush=True)
        if name != names[-1]:     # an interrupted run keeps the models that finished
            meta["load_end"] = common.load()
            common.write_results(args.out, {"meta": meta, "rows": rows},
                                 (curve_markdown if args.curve else markdown)(rows, args, meta))
    meta["load_end"] = common.load()
    text = (curve_markdown if args.curve else markdown)(rows, args, meta)
    common.write_results(args.out, {"meta": meta, "rows": rows}, text)
    print(text)


if __name__ == "__main__":
    main()
