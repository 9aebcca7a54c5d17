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
- uncombined XLA: the unrolled step compiled with XLA's collective combiners
  off (one collective per array), which ``olla_jax.plan`` adds as a baseline
  when XLA combined collectives (a combined reduce-scatter waits for every
  layer's gradient); the plans below are made on the lower of the two;
- keep / free / hidden: ``olla_jax.plan(collective_overlap="keep" | "free" |
  "hidden")`` on the unrolled step (keep: every instruction XLA runs between an
  async collective's start and done stays between them; free: that overlap may
  be collapsed; hidden: no more exposed communication than XLA's order of the
  default compile under ``olla_jax.graph.overlap``'s cost model);
- scanned XLA: the same model with its blocks under ``jax.lax.scan``.

Exposed communication (microseconds, the cost model): XLA's default compile,
XLA's uncombined compile, and each plan.  Solve seconds: ``Plan.solve_seconds``
(the planner's part, bounded by the time limit; XLA's compiles are apart).
What is live at the temp peak of the "hidden" plan is broken down by kind.

Planned figures: the rewritten per-device executable is built and decoded, not
run (no GPU here).  Each row runs in its own process.
"""

from __future__ import annotations

import sys
import time
import warnings

from benchmarks import common

LHS_OFF = {"xla_gpu_enable_latency_hiding_scheduler": False,
           "xla_gpu_enable_analytical_sol_latency_estimator": False}


def parse_args(argv=None):
    p = common.parser(__doc__, worker=True, time_limit_s=10.0, out="sharded_llm")
    p.add_argument("--sizes", default="2x256,4x256",
                   help="layers x d_model, comma-separated (heads = d/64, kv_heads = heads/2)")
    p.add_argument("--shardings", default="fsdp,dp")
    p.add_argument("--remat", default="1,0", help="per-block jax.checkpoint: 1, 0 or both")
    p.add_argument("--devices", type=int, default=8)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--target", default="h100")
    p.add_argument("--budget", type=float, default=None,
                   help="also plan 'hidden' with memory_budget = this fraction of the hidden "
                        "plan's total bytes (exposure ladder, then our recomputation)")
    p.add_argument("--overlaps", default="keep,free,hidden",
                   help="which collective_overlap plans to make (hidden is needed for --regather "
                        "and --budget)")
    p.add_argument("--regather", type=int, default=0,
                   help="1: also re-gather on the hidden plan's order (olla_jax.graph.regather): "
                        "its placed temp, exposure and how many all-gathers run twice")
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


def peak_breakdown(p) -> list[tuple[str, int]]:
    """What is live at the temp peak of a plan's order, by kind: gathered
    parameters (all-gather results), full-size arrays waiting for or in a
    reduce-scatter / all-reduce, other collective buffers, the rest by opcode."""
    from olla_jax import dumps
    from olla_jax.graph import collectives, overlap
    graph, layout = p.graph, p.layout
    if graph is None or layout is None:
        return []
    module = dumps.parse_hlo_proto(p.capture.hlo_proto).hlo_module
    comps = {c.id: c for c in module.computations}
    entry = comps[module.entry_computation_id]
    by_name = {i.name: i for i in entry.instructions}
    by_id = {i.id: i for i in entry.instructions}
    index = graph.node_index
    kind_of_start = {}
    operand_of = {}
    for pair in collectives.async_pairs(module):
        start = by_name[pair.start]
        kind = overlap.collective_kind(start, comps)
        for name in (pair.start, pair.done):
            if name in index:
                kind_of_start[index[name]] = kind
        for o in start.operand_ids:
            if o in by_id and by_id[o].name in index:
                operand_of[index[by_id[o].name]] = kind
    order = layout.order
    spans = graph.unit_spans(order)
    horizon = len(graph.flat)
    delta = [0] * (horizon + 1)
    for u in graph.units:
        if u.movable:
            for a, b in spans[u.id]:
                delta[a] += u.size
                delta[b + 1] -= u.size
    live, cur = [], 0
    for x in delta[:-1]:
        cur += x
        live.append(cur)
    peak = max(range(horizon), key=live.__getitem__)
    out: dict[str, int] = {}
    for u in graph.units:
        if not u.movable or not any(a <= peak <= b for a, b in spans[u.id]):
            continue
        d = graph.values[u.values[0]].def_node
        if d in kind_of_start:
            kind = kind_of_start[d]
            what = ("gathered parameters (all-gather buffers)" if kind == "all-gather"
                    else f"{kind} buffers")
        elif d in operand_of:
            what = f"operands of {operand_of[d]}s (full-size, waiting or in flight)"
        else:
            what = f"other: {by_name[graph.nodes[d]].opcode if graph.nodes[d] in by_name else '?'}"
        out[what] = out.get(what, 0) + u.size
    return sorted(out.items(), key=lambda kv: -kv[1])


def regathered(p, args) -> dict:
    """The hidden plan's order with re-gathers (``olla_jax.graph.regather``),
    placed best-fit: its temp, exposure under the same cost model and allowance
    as "hidden", the copies' link time.  A figure of the plan only: no checker
    claim or executable rewrite runs the copies yet."""
    from olla_jax import check, checked, dumps
    from olla_jax.capture import gpu
    from olla_jax.graph import collectives, layout as layout_lib, overlap, regather
    from olla_jax.solve import place as place_lib
    from olla_jax.solve.evaluate import Evaluator
    if p.graph is None:
        return {"regather_error": "the hidden plan has no graph"}
    t0 = time.monotonic()
    order = p.layout.order if p.layout is not None else p.graph.xla_order
    module = dumps.parse_hlo_proto(p.capture.hlo_proto).hlo_module
    cost = overlap.device_cost(gpu._target_path(args.target).read_text())
    model = overlap.step_model(module, p.graph, collectives.async_pairs(module), cost,
                               args.devices)
    allowance = p.settings.get("exposed_s_xla_default", p.settings.get("exposed_s_xla"))
    source = p.source if p.layout is not None else "xla (the plan fell back)"
    if p.layout is None:
        # The plan's own re-timing did not finish in its limit: draw XLA's order
        # in and re-time it here (what "hidden" does, outside the plan's limit).
        order_problem = p.graph.order_problem()
        edges = order_problem.edges
        drawn = overlap.just_in_time(order, model.node_seconds, model.collectives, edges)
        retimed = overlap.retime(drawn, model.node_seconds, model.collectives, edges, allowance,
                                 Evaluator(order_problem).cost,
                                 deadline=time.monotonic() + 120)
        if retimed.exposure.exposed_s <= allowance + overlap.EPS:
            order, source = retimed.order, "xla, drawn in and re-timed here (outside the plan)"
    sync = collectives.sync_starts(module)
    plain = regather.plan(p.graph, order, model, allowance, exclude=sync, max_regathers=0)
    problem, owners = plain.placement_problem(p.graph)
    plain_temp = layout_lib.realize(p.graph, plain.order, place_lib.best_fit(problem),
                                    owners).temp_bytes
    rp = regather.plan(p.graph, order, model, allowance, exclude=sync)
    problem, owners = rp.placement_problem(p.graph)
    layout = layout_lib.realize(p.graph, rp.order, place_lib.best_fit(problem), owners)
    layout = regather.with_copies(p.graph, rp, layout, model)
    try:
        report = check.check_plan(p.capture.hlo_proto, p.capture.values_text,
                                  p.capture.live_range_text, checked.candidate_plan(layout),
                                  alignment=p.graph.alignment)
        verdict = f"accepted (temp live peak {common.mib(report.peak_bytes.get(p.graph.temp_allocation, 0))} MiB)"
    except check.PlanRejected as err:
        verdict = f"rejected: {err}"[:300]
        built = "not built: the checker rejected it"
    else:
        from olla_jax.apply import feed_back
        outcome = feed_back.apply_layout(p.capture, layout, backend=f"gpu:{args.target}")
        built = outcome.reason[:300]
    return {"regather": layout.temp_bytes, "regather_exposed": rp.exposure.exposed_s,
            "regather_from": source, "regather_order_temp": plain_temp,
            "regather_order_exposed": plain.exposure.exposed_s,
            "regather_check": verdict, "regather_built": built,
            "regather_allowance": allowance, "regather_count": len(rp.regathers),
            "regather_exposed_before": model.exposure(order).exposed_s,
            "regather_link_s": rp.link_s, "regather_peak_live": rp.peak,
            "regather_peak_live_before": rp.peak_before,
            "regather_s": round(time.monotonic() - t0, 1)}


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

    for overlap in args.overlaps.split(","):
        t0 = time.monotonic()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            p = olla_jax.plan(unrolled.fn, *unrolled.args, backend=backend,
                              time_limit_s=args.time_limit_s, donate_argnums=unrolled.donate_argnums,
                              collective_overlap=overlap, **spmd(unrolled))
        s = p.settings
        row["xla"] = p.xla_default_temp_bytes
        row["xla_best"] = p.xla_best_temp_bytes
        row["xla_scheduler"] = p.xla_scheduler
        row["instructions"] = len(p.graph.nodes) if p.graph else None
        row["pairs"] = s.get("async_pairs", 0)
        row["exposed_xla_default"] = s.get("exposed_s_xla_default", s.get("exposed_s_xla"))
        row["exposed_xla_best"] = s.get("exposed_s_xla")
        row[overlap] = p.planned_temp_bytes
        row[f"{overlap}_exposed"] = s.get("exposed_s")
        row[f"{overlap}_built"] = p.executable_bytes is not None
        row[f"{overlap}_source"] = p.source
        row[f"{overlap}_engine"] = p.engine
        row[f"{overlap}_notes"] = [n[:300] for n in p.notes]
        row[f"{overlap}_solve_s"] = round(p.solve_seconds, 1)
        row[f"{overlap}_solve_cpu_s"] = round(s.get("solve_cpu_s", float("nan")), 1)
        row[f"{overlap}_capture_s"] = round(p.capture_seconds, 1)
        row[f"{overlap}_s"] = round(time.monotonic() - t0, 1)
        if overlap == "hidden":
            row["hidden_peak"] = peak_breakdown(p)
            hidden_total = p.runs_total_bytes
            if args.regather:
                row.update(regathered(p, args))
    if args.budget:
        budget = int(args.budget * hidden_total)
        row.update(budget=budget, budget_from=hidden_total)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                b = olla_jax.plan(unrolled.fn, *unrolled.args, backend=backend,
                                  time_limit_s=args.time_limit_s,
                                  donate_argnums=unrolled.donate_argnums,
                                  collective_overlap="hidden", memory_budget=budget,
                                  **spmd(unrolled))
            row.update(budget_total=b.runs_total_bytes, budget_extra_flops=b.extra_flops,
                       budget_exposed=b.settings.get("exposed_s"),
                       budget_notes=[n[:300] for n in b.notes[-3:]])
        except olla_jax.BudgetNotMet as err:
            row.update(budget_total=err.least_bytes,
                       budget_notes=[str(err)[:400]])
    for name, step, options in (("lhs_off", unrolled, LHS_OFF), ("scanned", scanned, None)):
        t0 = time.monotonic()
        cap = capture(step.fn, *step.args, backend=backend, donate_argnums=step.donate_argnums,
                      compiler_options=options, spmd=spmd(step))
        row[name] = cap.memory.temp
        row[f"{name}_s"] = round(time.monotonic() - t0, 1)
    return row


def worker(args) -> None:
    common.write_worker_result(
        args.worker_out, lambda: {**run_one(args.worker, args), "load": common.load()},
        lambda msg: {"spec": args.worker, "error": msg[:500], "load": common.load()})


def markdown(rows, args, run) -> str:
    machine, command = run["machine"], run["command"]
    lines = common.header(
        f"Sharded Llama-style step on {args.devices} x {args.target} (compile-only)",
        {"batch / seq / vocab": f"{args.batch} / {args.seq} / {args.vocab} (heads d/64, kv heads "
                                "half of them, fp32, AdamW, params + optimizer state donated)",
         "plan time limit": f"{args.time_limit_s:g} s",
         "note": "the machine (2 cores) was shared with other jobs: times are indicative"},
        command=command, machine_info=machine)
    lines += ["Per-device temp in MiB. XLA default = the unrolled step as jax.jit compiles it "
              "(latency-hiding scheduler on); XLA uncombined = the same with XLA's collective "
              "combiners off (one collective per array; '-' when XLA combined nothing); LHS off = "
              "both latency-hiding flags off; keep / free / hidden = olla_jax.plan("
              "collective_overlap=...) on the unrolled step, planned on the lower of XLA's two "
              "compiles; scanned = XLA on the scanned step (same sharding and remat). "
              "hidden/scan: the ratio the issue targets (<= 1.3). Exposed: microseconds of "
              "communication the compute stream waits for under olla_jax.graph.overlap's cost "
              "model. Solve s: Plan.solve_seconds (the planner's part, what the time limit bounds; "
              "XLA's compiles are not in it), wall clock, and in brackets the planner's CPU "
              "seconds (Plan.settings['solve_cpu_s']: on a shared machine the wall clock "
              "includes waiting for a core). 'built': the rewritten per-device executables for "
              "keep / free / hidden were built and decoded (not run: no GPU here). When no plan "
              "below XLA's was found, the figure is XLA's.", ""]
    table = []
    for r in rows:
        layers, d, kind, remat = r["spec"].split(":")
        head = [layers, d, kind, "yes" if remat == "1" else "no"]
        if "error" in r:
            table.append(head + [f"ERROR: {r['error'][:200]}"] + [""] * 12)
            continue

        def us(x):
            return "-" if x is None else f"{x * 1e6:,.0f}"
        uncombined = common.mib(r["xla_best"]) if r.get("xla_scheduler") == "uncombined" else "-"
        table.append(head + [r["instructions"], r["pairs"], common.mib(r["xla"]), uncombined,
                             common.mib(r["lhs_off"]), common.mib(r.get("keep")), common.mib(r.get("free")),
                             common.mib(r.get("hidden")), common.mib(r["scanned"]),
                             f"{r['hidden'] / r['scanned']:.2f}" if "hidden" in r else "-",
                             f"{us(r['exposed_xla_default'])} / {us(r['exposed_xla_best'])} / "
                             f"{us(r.get('hidden_exposed'))}",
                             " / ".join(f"{r[f'{m}_solve_s']:.1f} ({r.get(f'{m}_solve_cpu_s', 0):.1f})"
                                        if f"{m}_solve_s" in r else "-"
                                        for m in ("keep", "free", "hidden")),
                             " / ".join("yes" if r.get(f"{m}_built") else "no"
                                        for m in ("keep", "free", "hidden")),
                             r.get("load", "")])
    lines += common.table(["layers", "d", "sharding", "remat", "instr", "async pairs",
                           "XLA default", "XLA uncombined", "LHS off", "keep", "free", "hidden",
                           "scanned XLA", "hidden/scan", "exposed us: XLA / XLA unc. / hidden",
                           "solve s (CPU s): keep/free/hidden", "built", "load"], table,
                          right={0, 1, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13})
    for r in rows:
        if r.get("budget"):
            lines += ["", f"Memory budget ({r['spec']}): {common.mib(r['budget'])} MiB total "
                          f"(the hidden plan's {common.mib(r['budget_from'])} x "
                          f"{args.budget:g}) -> {common.mib(r.get('budget_total'))} MiB, extra "
                          f"FLOPs {r.get('budget_extra_flops', '-')}, exposed "
                          f"{(r.get('budget_exposed') or 0) * 1e6:,.0f} us; "
                          + " | ".join(r.get("budget_notes", []))]
    for r in rows:
        if r.get("regather") is not None:
            lines += ["", f"Re-gathering ({r['spec']}) on the order of {r['regather_from']}: "
                          f"that order placed best-fit without copies "
                          f"{common.mib(r.get('regather_order_temp'))} MiB "
                          f"({(r.get('regather_order_temp') or 0) / r['scanned']:.2f} x scanned, "
                          f"{(r.get('regather_order_exposed') or 0) * 1e6:,.0f} us exposed); "
                          f"with re-gathers placed temp "
                          f"{common.mib(r['regather'])} MiB, {r['regather'] / r['scanned']:.2f} x "
                          f"scanned (live-bytes peak {common.mib(r['regather_peak_live_before'])} "
                          f"-> {common.mib(r['regather_peak_live'])} MiB); exposed "
                          f"{r['regather_exposed'] * 1e6:,.0f} us, allowed "
                          f"{r['regather_allowance'] * 1e6:,.0f} us (XLA's default compile; "
                          f"never more than the order's own, "
                          f"{r['regather_exposed_before'] * 1e6:,.0f} us); "
                          f"{r['regather_count']} all-gathers run twice, adding "
                          f"{r['regather_link_s'] * 1e6:,.0f} us of link time; "
                          f"{r['regather_s']} s. Checker: "
                          f"{r['regather_check']}. Executable: {r.get('regather_built')}."]
        elif r.get("regather_error"):
            lines += ["", f"Re-gathering ({r['spec']}): {r['regather_error']}"]
    for r in rows:
        if r.get("hidden_peak"):
            lines += ["", f"What is live at the temp peak of the 'hidden' plan ({r['spec']}), MiB:",
                      ""]
            lines += [f"- {common.mib(b)}  {what}" for what, b in r["hidden_peak"]]
    notes = [f"- {r['spec']}: {n}" for r in rows for n in
             dict.fromkeys(r.get("keep_notes", []) + r.get("free_notes", [])
                           + r.get("hidden_notes", []))]
    if notes:
        lines += ["", "Notes from olla_jax.plan:", ""] + notes
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    args = parse_args(argv)
    if common.begin(args, worker, backend="gpu"):
        return
    flags = common.forward(args, "devices", "batch", "seq", "vocab", "target", "time_limit_s",
                           "budget", "regather", "overlaps")
    sizes = [size.lower().split("x") for size in args.sizes.split(",")]
    specs = [f"{int(layers)}:{int(d)}:{kind}:{remat}" for layers, d in sizes
             for kind in args.shardings.split(",") for remat in args.remat.split(",")]
    common.run_rows("benchmarks.sharded_llm", specs, flags,
                    lambda spec, msg: {"spec": spec, "error": msg},
                    lambda rows, run: markdown(rows, args, run), args.out, timeout_s=1800)


if __name__ == "__main__":
    main(sys.argv[1:])
