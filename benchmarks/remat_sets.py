"""What XLA's rematerialization recomputes against what ours may, at XLA's points.

For each example and each of XLA's limits on a compile-only GPU target: the
kernels XLA's rematerialized program copies (``<name>.remat<n>``) with their
FLOPs (``olla_jax.flops``) and, per kernel, whether its value is a candidate
of ours (``budget.candidates``) or why not; then, on our model of the same
step (``budget.model.model_problem`` on the order our plan keeps, the live
bytes of best-fit's arena, offset as ``choose_model`` offsets its budget):
XLA's set alone (its least peak), the least extra cost that meets XLA's temp,
and the least peak within half XLA's extra FLOPs and within all of them (the
issue's target: XLA's temp at <= half its FLOPs, or 0.85 x its temp at <= its
FLOPs).  The model's figures are live bytes, not a placement; FLOPs are summed
over the copies picked.  Nothing is built or checked here: it is a diagnosis.

    python -m benchmarks.remat_sets --models=vit:small --limits=0.8 \
        --out=benchmarks/results/remat_sets_vit
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import sys
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import common  # noqa: E402

MIB = 2**20


def xla_copies(compiled) -> list[tuple[str, str, int]]:
    """(clone, original instruction, FLOPs) of each kernel XLA's
    rematerialization copied into ``compiled``'s entry."""
    from olla_jax import flops as flops_lib
    from olla_jax import protos
    module = protos.message_class("xla.HloModuleProto")()
    module.ParseFromString(compiled.runtime_executable().hlo_modules()[0]
                           .as_serialized_hlo_module_proto())
    by_id = {i.id: i for c in module.computations for i in c.instructions}
    comps = {c.id: c for c in module.computations}
    entry = comps[module.entry_computation_id]
    out = []
    for i in entry.instructions:
        if ".remat" in i.name and i.opcode not in ("bitcast", "get-tuple-element", "tuple"):
            out.append((i.name, re.sub(r"\.remat\d*", "", i.name),
                        flops_lib.instruction_flops(i, by_id, comps, ())))
    return out


def plan_and_point(item: str, limit: float, args):
    """(our plan of ``item`` on the GPU target, XLA's remat point at ``limit``,
    its extra FLOPs): what both diagnoses start from."""
    import examples
    import olla_jax
    from olla_jax import budget, xla_remat
    name, size = item.split(":")
    step = examples.get(name, size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        base = olla_jax.plan(step.fn, *step.args, backend=f"gpu:{args.target}",
                             time_limit_s=args.plan_time_limit_s,
                             static_argnums=step.static_argnums, donate_argnums=step.donate_argnums)
    point = xla_remat.search(step.fn, *step.args, backend=f"gpu:{args.target}",
                             budget_bytes=base.xla_temp_bytes, fractions=[limit],
                             static_argnums=step.static_argnums, donate_argnums=step.donate_argnums,
                             io_bytes=base.argument_bytes + base.output_bytes)[0]
    if base.graph is None or base.capture is None:
        raise SystemExit(f"{item}: its plan kept no memory model ({'; '.join(base.notes)[:300]}); "
                         "try a longer --plan_time_limit_s")
    return base, point, point.flops - budget.step_flops(base.capture)


def run_points(run_one, render, args) -> int:
    """``run_one``'s row for each example and limit of ``args`` (each with its
    seconds), rendered by ``render`` with the machine's load before and
    after, printed and, with ``--out``, written."""
    loads = [common.load()]
    rows = []
    for item in [m for m in args.models.split(",") if m]:
        for limit in [float(x) for x in args.limits.split(",") if x]:
            t = time.monotonic()
            rows.append(run_one(item, limit, args))
            rows[-1]["seconds"] = round(time.monotonic() - t, 1)
    loads.append(common.load())
    text = render(rows, args, loads)
    common.print_and_write(text, rows, args.out)
    return 0


def run_one(item: str, limit: float, args) -> dict:
    from olla_jax.budget.candidates import FLOPS_PER_S
    from olla_jax.budget.candidates import named_refusals, screen
    from olla_jax.budget.model import model_problem
    from olla_jax.solve import recompute as rm
    base, point, xla_flops = plan_and_point(item, limit, args)
    graph, cap = base.graph, base.capture
    cands, why = screen(graph, cap, args.recompute_cost)
    why = named_refusals(graph, cands, why)
    by_producer = {graph.nodes[c.producer]: c for c in cands}
    values_of = {}
    for v in graph.values.values():
        values_of.setdefault(graph.nodes[v.def_node], []).append(v)
    copies = []
    for clone, orig, flops in xla_copies(point.compiled):
        vs = values_of.get(orig, [])
        status = ("candidate" if orig in by_producer else
                  "; ".join(sorted({why.get(v.id, "?") for v in vs})) or "not in our graph")
        copies.append({"clone": clone, "flops": flops, "mib": round(sum(v.size for v in vs) / MIB, 2),
                       "ours": status})
    order = base.layout.order if base.layout is not None else graph.xla_order
    built = model_problem(graph, order, cands)
    row = {"example": item, "limit": limit, "xla_temp": base.xla_temp_bytes,
           "plan_temp": base.runs_temp_bytes, "point_temp": point.memory.temp,
           "point_flops": xla_flops, "xla_copies": copies, "candidates": len(cands),
           "on_our_order": base.layout is not None}
    if built is None:
        return row
    problem, keys, placed = built
    none = [-1] * len(problem.choices)
    offset = int(rm.profile(problem, none).max()) - placed.arena_size
    problem = dataclasses.replace(problem, budget=point.memory.temp + offset)

    def figures(sol, chosen=None) -> dict:
        flops = sum(keys[k][0].flops * len(keys[k][1][j]) for k, j in enumerate(sol.picks)
                    if j >= 0) if chosen is None else chosen
        return {"peak": sol.peak, "flops": flops, "met": sol.met, "optimal": sol.optimal,
                "seconds": round(sol.seconds, 1)}
    xla_names = {re.sub(r"\.remat\d*", "", c["clone"]) for c in copies}
    sel = [k for k, (c, _) in enumerate(keys) if graph.nodes[c.producer] in xla_names]
    sub = dataclasses.replace(problem, choices=tuple(problem.choices[k] for k in sel))
    sol = rm.least_peak_within(sub, 2**62, time_limit_s=args.time_limit_s)
    row["xla_set"] = figures(sol, sum(keys[k][0].flops * len(keys[k][1][j])
                                      for k, j in zip(sel, sol.picks) if j >= 0))
    row["model_budget"] = problem.budget
    row["least_cost"] = figures(rm.solve(problem, time_limit_s=args.time_limit_s))
    unit = 1e9 / FLOPS_PER_S if args.recompute_cost == "flops" else None
    if unit is not None:
        for share in (0.5, 1.0):
            sol = rm.least_peak_within(problem, int(share * xla_flops * unit),
                                       time_limit_s=args.time_limit_s)
            row[f"least_peak_{share}"] = figures(sol)
    return row


def render(rows, args, loads) -> str:
    lines = common.header(
        f"XLA's recomputed kernels against ours, compile-only {args.target}",
        {"load average at start / end (1/5/15 min; 2 cores shared by several helpers)":
             f"{loads[0]} ; {loads[1]}",
         "our model": f"costed by {args.recompute_cost!r}, each solve at most {args.time_limit_s:g} s"})
    for r in rows:
        lines.append(f"## {r['example']} at {r['limit']} x XLA's temp: XLA {r['point_temp'] / MIB:,.2f} MiB "
                     f"at {r['point_flops']:,} extra FLOPs (XLA's own temp {r['xla_temp'] / MIB:,.2f}, "
                     f"our plan {r['plan_temp'] / MIB:,.2f}, on "
                     f"{'our plan' if r['on_our_order'] else 'XLA'}'s order; {r['candidates']} candidates)")
        lines += ["", "| XLA's copy | FLOPs | MiB | ours |", "|---|---:|---:|---|"]
        for c in sorted(r["xla_copies"], key=lambda c: -c["flops"]):
            lines.append(f"| {c['clone']} | {c['flops']:,} | {c['mib']:.2f} | {c['ours']} |")
        lines.append("")
        if "least_cost" not in r:
            lines += ["No candidate has a copy that may run on this order.", ""]
            continue
        target = r["point_temp"]

        def text(f) -> str:
            return (f"live peak {f['peak'] / MIB:,.2f} MiB at {f['flops']:,} FLOPs "
                    f"({f['flops'] / max(1, r['point_flops']):.2f} x XLA's)"
                    f"{', optimal' if f['optimal'] else ''} ({f['seconds']} s)")
        lines.append(f"Our model (live bytes; its budget for XLA's temp "
                     f"{r['model_budget'] / MIB:,.2f} MiB):")
        lines.append(f"- XLA's set alone, least peak: {text(r['xla_set'])}")
        lines.append(f"- least cost meeting XLA's temp: {text(r['least_cost'])}"
                     f"{'' if r['least_cost']['met'] else ' (not met)'}")
        for share in (0.5, 1.0):
            f = r.get(f"least_peak_{share}")
            if f is not None:
                need = r["model_budget"] - (1 - (1 if share == 0.5 else 0.85)) * target
                lines.append(f"- least peak within {share:g} x XLA's FLOPs: {text(f)}; the target "
                             f"asks {need / MIB:,.2f}")
        lines.append("")
    return "\n".join(lines) + "\n"


def points_parser(doc: str, *, time_limit_s: float, plan_time_limit_s: float,
                  time_help: str = "per model solve") -> argparse.ArgumentParser:
    """The flags the diagnoses of XLA's remat points share (this module,
    reorder_copies, remat_kinds): which points, and how long each solve runs."""
    p = argparse.ArgumentParser(description=doc.split("\n")[0])
    p.add_argument("--target", default="h100")
    p.add_argument("--models", default="vit:small")
    p.add_argument("--limits", default="0.8", help="XLA's limits, as shares of its own temp")
    p.add_argument("--time_limit_s", type=float, default=time_limit_s, help=time_help)
    p.add_argument("--plan_time_limit_s", type=float, default=plan_time_limit_s)
    p.add_argument("--out", default="")
    return p


def main(argv=None) -> int:
    p = points_parser(__doc__, time_limit_s=60.0, plan_time_limit_s=3.0)
    p.add_argument("--recompute_cost", default="flops", choices=("time", "flops"))
    args = p.parse_args(argv)
    return run_points(run_one, render, args)


if __name__ == "__main__":
    raise SystemExit(main())
