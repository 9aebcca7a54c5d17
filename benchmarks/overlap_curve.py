"""Sharded steps (compile-only GPUs): per-device temp against exposed communication.

    python -m benchmarks.overlap_curve --out=benchmarks/results/overlap_curve_h100

For each example step, FSDP-style on ``--devices`` H100s (``benchmarks.multi_device``'s
shardings), the points of the trade curve under ``olla_jax.graph.overlap``'s
cost model (roofline instructions, ring collectives over NVLink, one link shared
first come first served): XLA's latency-hiding order and its order without the
latency-hiding scheduler (``xla_gpu_enable_latency_hiding_scheduler=false``) as
reference points, and ours with ``collective_overlap`` = "keep", "free",
"hidden" (exposed <= XLA's) and ``ExposedAtMost(a)`` for a from 0 (hide all
that re-timing can) to all of the step's communication.  Planned figures: the
per-device executables are built, not run (no GPU here).

With ``--orders_only`` no search runs (nothing depends on the time limit or
the machine's load): XLA's order, the same order with every done moved right
after its start (no overlap at all), and that order re-timed by
``overlap.retime`` to each allowance, each placed best-fit; the table gives the
live-bytes peak of the order (the order problem's objective), the placed temp
and the exposed communication.
"""

from __future__ import annotations

import sys

from benchmarks import common


def parse_args(argv=None):
    p = common.parser(__doc__, worker=True, models="lm_adamw,gpt2", size="small",
                      time_limit_s=8.0, out="overlap_curve")
    p.add_argument("--devices", type=int, default=8)
    p.add_argument("--sharding", default="fsdp")
    p.add_argument("--target", default="h100")
    p.add_argument("--combine_threshold_bytes", type=int, default=None,
                   help="XLA's collective combiners' thresholds (all-gather, reduce-scatter, "
                        "all-reduce); 0 keeps one collective per array; default: XLA's")
    p.add_argument("--orders_only", action="store_true")
    return p.parse_args(argv)


def _row(model, label, p, allowance=None) -> dict:
    s = p.settings
    return {"model": model, "point": label, "allowance_s": allowance,
            "xla": p.xla_default_temp_bytes, "planned": p.planned_temp_bytes,
            "exposed_s": s.get("exposed_s"), "exposed_s_xla": s.get("exposed_s_xla"),
            "comm_s": s.get("comm_s"), "compute_s": s.get("compute_s"),
            "pairs": s.get("async_pairs", 0), "source": p.source, "engine": p.engine,
            "built": p.executable_bytes is not None, "notes": list(p.notes)}


def step_of(model: str, args):
    """The example step and its in_shardings: an ``examples`` name at ``--size``,
    or ``llama:LAYERSxD`` (``examples/llama.py``, per-block remat, unrolled,
    batch 16, seq 256, vocab 8192 as in ``benchmarks/sharded_llm.py``)."""
    if model.startswith("llama:"):
        from examples import llama
        layers, d = (int(x) for x in model.split(":", 1)[1].lower().split("x"))
        heads = max(1, d // 64)
        step = llama.make_step(llama.Config(layers=layers, d_model=d, heads=heads,
                                            kv_heads=max(1, heads // 2), seq=256, batch=16,
                                            vocab=8192, scan=False, remat=True))
        return step, llama.shardings(step, args.sharding, args.devices)
    import examples
    from benchmarks.multi_device import in_shardings
    step = examples.get(model, args.size)
    return step, in_shardings(step, args.sharding, args.devices)


def run_model(model: str, args) -> list[dict]:
    from benchmarks.sharded_llm import _reuse_compiles
    from olla_jax.graph import collectives
    _reuse_compiles()   # the points share XLA's compiles of the step
    step, shardings = step_of(model, args)
    options = {}
    if args.combine_threshold_bytes is not None:
        options = {f"xla_gpu_{kind}_combine_threshold_bytes": args.combine_threshold_bytes
                   for kind in ("all_gather", "reduce_scatter", "all_reduce")}

    def plan(mode, **extra):
        extra["compiler_options"] = {**options, **extra.get("compiler_options", {})}
        return common.plan_quietly(step, backend=f"gpu:{args.target}",
                                   time_limit_s=args.time_limit_s, num_devices=args.devices,
                                   in_shardings=shardings, collective_overlap=mode, **extra)
    rows = []
    hidden = plan("hidden")
    s = hidden.settings
    default = hidden.xla_default_temp_bytes
    rows.append({"model": model, "point": "XLA latency-hiding order", "allowance_s": None,
                 "xla": default, "planned": default,
                 "exposed_s": s.get("exposed_s_xla_default", s.get("exposed_s_xla")),
                 "exposed_s_xla": s.get("exposed_s_xla_default", s.get("exposed_s_xla")),
                 "comm_s": s.get("comm_s_xla_default", s.get("comm_s")),
                 "compute_s": s.get("compute_s"),
                 "pairs": s.get("async_pairs", 0), "source": "xla", "engine": "xla",
                 "built": True, "notes": []})
    if hidden.xla_scheduler == "uncombined":
        rows.append({"model": model, "point": "XLA, one collective per array (combiners off)",
                     "allowance_s": None, "xla": default, "planned": hidden.xla_best_temp_bytes,
                     "exposed_s": s.get("exposed_s_xla"), "exposed_s_xla": s.get("exposed_s_xla"),
                     "comm_s": s.get("comm_s"), "compute_s": s.get("compute_s"),
                     "pairs": s.get("async_pairs", 0), "source": "xla", "engine": "xla",
                     "built": True, "notes": []})
    from benchmarks.sharded_llm import LHS_OFF   # on H100 targets both flags must be off
    flat = plan("keep", compiler_options=dict(LHS_OFF))
    f = flat.settings
    rows.append({"model": model, "point": "XLA order, no latency-hiding scheduler",
                 "allowance_s": None, "xla": default,
                 "planned": flat.xla_default_temp_bytes,
                 "exposed_s": f.get("exposed_s_xla_default", f.get("exposed_s_xla")),
                 "exposed_s_xla": f.get("exposed_s_xla_default", f.get("exposed_s_xla")),
                 "comm_s": f.get("comm_s_xla_default", f.get("comm_s")),
                 "compute_s": f.get("compute_s"), "pairs": f.get("async_pairs", 0),
                 "source": "xla", "engine": "xla", "built": True, "notes": []})
    rows.append(_row(model, "ours, keep", plan("keep")))
    rows.append(_row(model, "ours, free", plan("free")))
    rows.append(_row(model, "ours, hidden (<= XLA's)", hidden, s.get("exposed_allowance_s")))
    xla_s, comm_s = s.get("exposed_s_xla") or 0.0, s.get("comm_s") or 0.0
    for label, a in (("0", 0.0), ("XLA's / 2", xla_s / 2),
                     ("halfway to all", xla_s + (comm_s - xla_s) / 2), ("all", comm_s)):
        rows.append(_row(model, f"ours, exposed <= {label}",
                         plan(collectives.ExposedAtMost(a)), a))
    return rows


def orders_only(model: str, args) -> list[dict]:
    """XLA's order and the no-overlap order re-timed to allowances (module doc)."""
    from olla_jax.capture import gpu, record
    from olla_jax import dumps
    from olla_jax.graph import collectives, layout as layout_lib, model as model_lib, overlap
    from olla_jax.solve import place as place_lib
    from olla_jax.solve import problem as sp
    step, shardings = step_of(model, args)
    options = {}
    if args.combine_threshold_bytes is not None:
        options = {f"xla_gpu_{kind}_combine_threshold_bytes": args.combine_threshold_bytes
                   for kind in ("all_gather", "reduce_scatter", "all_reduce")}
    cap = record.capture(step.fn, *step.args, backend=f"gpu:{args.target}",
                         static_argnums=step.static_argnums, donate_argnums=step.donate_argnums,
                         compiler_options=options,
                         spmd=dict(num_devices=args.devices, out_shardings=None, mesh_axes=None,
                                   in_shardings=shardings))
    graph = model_lib.build(cap.hlo_proto, cap.values_text, cap.live_range_text,
                            alignment=256)
    module = dumps.parse_hlo_proto(cap.hlo_proto).hlo_module
    pairs = collectives.async_pairs(module)
    cost = overlap.device_cost(gpu._target_path(args.target).read_text())
    sm = overlap.step_model(module, graph, pairs, cost, args.devices)
    problem = graph.order_problem()

    def row(label, order, allowance=None, temp=None):
        e = sm.exposure(order)
        if temp is None:
            pp, owners = graph.placement_problem(order)
            temp = layout_lib.realize(graph, order, place_lib.best_fit(pp), owners).temp_bytes
        return {"model": model, "point": label, "allowance_s": allowance, "xla": cap.memory.temp,
                "planned": temp, "order_peak": sp.order_cost(problem, order),
                "exposed_s": e.exposed_s, "comm_s": e.comm_s, "compute_s": e.compute_s,
                "pairs": len(pairs), "source": "xla" if temp == cap.memory.temp else "best-fit",
                "notes": []}
    rows = [row("XLA's order (XLA's placement)", graph.xla_order, temp=cap.memory.temp)]
    collapsed = list(graph.xla_order)
    for c in sm.collectives:
        collapsed.remove(c.done)
        collapsed.insert(collapsed.index(c.start) + 1, c.done)
    sp.check_topological(problem, collapsed)
    rows.append(row("XLA's order, no overlap (done right after start)", collapsed))
    xla_s, comm_s = sm.xla.exposed_s, sm.xla.comm_s
    for label, a in (("halfway to all", xla_s + (comm_s - xla_s) / 2), ("XLA's", xla_s),
                     ("XLA's / 2", xla_s / 2), ("0", 0.0)):
        for name, start in (("no-overlap order", collapsed), ("XLA's order", graph.xla_order)):
            r = overlap.retime(start, sm.node_seconds, sm.collectives, problem.edges, a,
                               lambda o: sp.order_cost(problem, o))
            rows.append(row(f"{name} re-timed, exposed <= {label} ({r.moves} moves)",
                            r.order, a))
    return rows


def worker(args) -> None:
    common.write_worker_result(
        args.worker_out, lambda: (orders_only if args.orders_only else run_model)(args.worker, args),
        lambda msg: error_rows(args.worker, msg[:500]))


def error_rows(model: str, msg: str) -> list[dict]:
    return [{"model": model, "point": "-", "error": msg}]


def _us(x) -> str:
    return "-" if x is None else f"{x * 1e6:,.1f}"


def markdown(rows, args, run) -> str:
    machine, command = run["machine"], run["command"]
    lines = common.header(
        f"Memory against exposed communication: {args.devices} x {args.target}, "
        f"{args.sharding} (compile-only)",
        {"example size": args.size, "plan time limit": f"{args.time_limit_s:g} s",
         "collective combine threshold": "XLA's" if args.combine_threshold_bytes is None
         else f"{args.combine_threshold_bytes} bytes",
         "load average (1 / 5 / 15 min, when written)": common.load()},
        command=command, machine_info=machine)
    lines += ["Per-device temp in MiB; exposed = communication the compute stream waits for, "
              "in microseconds, under olla_jax.graph.overlap's cost model (roofline per "
              "instruction from the device description; ring collectives over NVLink 4, 450 GB/s "
              "one way per GPU; one link, first come first served). allowed = the exposure "
              "asked for. XLA rows: XLA's own order and placement. 'ours' rows: planned, the "
              "per-device executable built (not run: no GPU here); where no plan below XLA's "
              "was found the row is XLA's (source xla). The machine was shared with other "
              "jobs (load above): times are not comparable, figures are. order peak (--orders_only): "
              "the order's live-bytes peak (the order problem's objective); temp there: that "
              "order placed best-fit (XLA's own placement for XLA's order).", ""]
    table = []
    for r in rows:
        if "error" in r:
            table.append([r["model"], r["point"], f"ERROR: {r['error'][:200]}"] + [""] * 7)
            continue
        table.append([r["model"], r["point"], _us(r["allowance_s"]), common.mib(r["planned"]),
                      f"{r['planned'] / r['xla']:.3f}" if r["xla"] else "-",
                      common.mib(r["order_peak"]) if "order_peak" in r else "-",
                      _us(r["exposed_s"]), _us(r["comm_s"]), _us(r["compute_s"]), r["source"]])
    lines += common.table(["model", "point", "allowed", "temp", "temp/XLA's", "order peak",
                           "exposed", "comm", "compute", "source"], table,
                          right={2, 3, 4, 5, 6, 7, 8})
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    args = parse_args(argv)
    if common.begin(args, worker, backend="gpu"):
        return
    flags = common.forward(args, "size", "devices", "target", "sharding", "time_limit_s",
                           "combine_threshold_bytes", "orders_only")
    common.run_rows("benchmarks.overlap_curve", common.model_names(args.models), flags,
                    error_rows, lambda rows, run: markdown(rows, args, run), args.out,
                    timeout_s=1800)


if __name__ == "__main__":
    main(sys.argv[1:])
