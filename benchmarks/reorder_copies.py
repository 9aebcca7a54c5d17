"""Whether another order lets recomputation meet XLA's points for less (issue 20).

For each example and each of XLA's limits on a compile-only GPU target, on
our model of the step (``budget.model.model_problem``: the live bytes of
best-fit's arena): the least live peak within ``--share`` x XLA's extra FLOPs
on several orders (our plan's, XLA's, our plan's with sink moves and pair
hoists), then, on the order with the least, the order searched again with
those copies as parts of its problem (``budget.reorder``: sink moves, then
the large-neighbourhood search, for ``--time_limit_s``), the copies moved
with their readers and the plan placed again by best-fit.  Last, what is
live at the peak of that problem: the largest values, each a candidate
(picked or not, its FLOPs) or why not.  Live bytes, not a placement, except
"placed" (best-fit's temp); nothing is built or checked: a diagnosis.

    python -m benchmarks.reorder_copies --models=vit:small --limits=0.8 \
        --out=benchmarks/results/reorder_copies_vit
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import common  # noqa: E402
from benchmarks.remat_sets import plan_and_point, points_parser, run_points  # noqa: E402

MIB = 2**20


def run_one(item: str, limit: float, args) -> dict:
    import numpy as np

    from olla_jax.budget import reorder as ro
    from olla_jax.budget.candidates import FLOPS_PER_S, named_refusals, screen
    from olla_jax.budget.model import model_problem
    from olla_jax.budget.recompute_plan import plan_of
    from olla_jax.solve import problem as sp
    from olla_jax.solve import recompute as rm
    from olla_jax.solve import sink
    from olla_jax.solve.dag import Dag
    from olla_jax.solve.evaluate import Evaluator
    base, point, xla_flops = plan_and_point(item, limit, args)
    graph, cap = base.graph, base.capture
    if base.layout is None:
        raise SystemExit(f"{item}: its plan kept no order; try a longer --plan_time_limit_s")
    cands, why = screen(graph, cap, "flops")
    why = named_refusals(graph, cands, why)
    cap_cost = int(args.share * xla_flops * 1e9 / FLOPS_PER_S)
    row = {"example": item, "limit": limit, "point_temp": point.memory.temp,
           "point_flops": xla_flops, "plan_temp": base.runs_temp_bytes, "orders": []}
    ours = tuple(base.layout.order)
    problem0 = graph.order_problem()
    ev0, dag0 = Evaluator(problem0), Dag.of(problem0)
    orders = {"our plan's": ours, "XLA's": tuple(graph.xla_order)}
    orders["our plan's with sink moves"] = tuple(sink.improve(
        ev0, dag0, ours, deadline=time.monotonic() + args.time_limit_s / 4, pairs=True))
    best = None
    for label, order in orders.items():
        built = model_problem(graph, order, cands)
        if built is None:
            continue
        problem, keys, _ = built
        sol = rm.least_peak_within(problem, cap_cost, time_limit_s=args.time_limit_s)
        picks = [(c, k) for (c, ks), j in zip(keys, sol.picks) if j >= 0 for k in ks[j]]
        placed = plan_of(graph, order, picks)
        got = {"order": label, "peak": sol.peak, "optimal": sol.optimal,
               "flops": placed.extra_flops, "placed": placed.temp_bytes, "copies": len(picks)}
        row["orders"].append(got)
        if best is None or sol.peak < best[0]:
            best = (sol.peak, label, order, picks)
    if best is None:
        return row
    _, label, order, picks = best
    parked = ro.parked_units(graph, order)
    t = time.monotonic()
    new = ro.reorder(graph, order, picks, deadline=time.monotonic() + args.time_limit_s,
                     parked=parked)
    seconds = time.monotonic() - t
    moved = ro.moved_picks(graph, order, new, picks, cands)
    placed = plan_of(graph, new, moved)
    problem = ro.copies_problem(graph, order, picks, parked)
    ev = Evaluator(problem)
    row["reorder"] = {"from": label, "peak_before": ev.cost(list(order)),
                      "peak_after": ev.cost(list(new)), "changed": new != order,
                      "copies": len(picks), "kept": len(moved), "placed": placed.temp_bytes,
                      "flops": placed.extra_flops, "seconds": round(seconds, 1)}
    # what is live at the peak of the copies' problem, on the searched order
    problem = ro.copies_problem(graph, new, moved, parked)
    profile = np.asarray(Evaluator(problem).profile(list(new)))
    at = int(np.argmax(profile))
    lives = sp.live_intervals(problem, new)
    unit_of_item = {i: u for u, i in ro.arena_items(graph, problem).items()}
    cand_of = {c.value: c for c in cands}
    picked = {c.value for c, _ in moved}
    held = []
    for i, (it, (s, e)) in enumerate(zip(problem.items, lives)):
        if it.region != sp.ARENA or not it.size or not s <= at <= e:
            continue
        unit = unit_of_item.get(i)
        if unit is None:
            held.append({"value": "a copy", "mib": it.size / MIB, "ours": "recomputed here"})
            continue
        v = graph.units[unit].values[0]
        c = cand_of.get(v)
        ours = (why.get(v, "not a candidate") if c is None else
                f"candidate, {c.flops:,} FLOPs, {'picked' if v in picked else 'not picked'}")
        held.append({"value": graph.nodes[graph.values[v].def_node], "mib": it.size / MIB,
                     "ours": ours})
    row["peak_node"] = graph.nodes[new[at]]
    row["held"] = sorted(held, key=lambda h: -h["mib"])[:args.held]
    row["held_total"] = len(held)
    return row


def render(rows, args, loads) -> str:
    lines = common.header(
        f"Recomputation on other orders, compile-only {args.target}",
        {"load average at start / end (1/5/15 min; 2 cores shared by several helpers)":
             f"{loads[0]} ; {loads[1]}",
         "model": f"least live peak within {args.share:g} x XLA's extra FLOPs, costed by FLOPs, "
                  f"each solve and the order search at most {args.time_limit_s:g} s"})
    for r in rows:
        lines += [f"## {r['example']} at {r['limit']} x XLA's temp: XLA {r['point_temp'] / MIB:,.2f}"
                  f" MiB at {r['point_flops']:,} extra FLOPs (our plan without copies "
                  f"{r['plan_temp'] / MIB:,.2f})", "",
                  "| order | live peak MiB | optimal | copies | extra FLOPs (x XLA's) | placed MiB |",
                  "|---|---:|---|---:|---:|---:|"]
        for o in r["orders"]:
            lines.append(f"| {o['order']} | {o['peak'] / MIB:,.2f} | {'yes' if o['optimal'] else 'no'}"
                         f" | {o['copies']} | {o['flops']:,} ({o['flops'] / max(1, r['point_flops']):.2f})"
                         f" | {o['placed'] / MIB:,.2f} |")
        lines.append("")
        g = r.get("reorder")
        if g is None:
            lines += ["No candidate has a copy on these orders.", ""]
            continue
        lines.append(f"Searched again with those copies, from {g['from']} order ({g['seconds']} s): "
                     f"the copies' problem's peak {g['peak_before'] / MIB:,.2f} -> "
                     f"{g['peak_after'] / MIB:,.2f} MiB ({'order changed' if g['changed'] else 'order kept'}),"
                     f" {g['kept']} of {g['copies']} copies still valid, placed "
                     f"{g['placed'] / MIB:,.2f} MiB at {g['flops']:,} extra FLOPs.")
        lines += ["", f"Live at that peak (before {r['peak_node']}; the {len(r['held'])} largest of "
                      f"{r['held_total']}):", "", "| value | MiB | ours |", "|---|---:|---|"]
        for h in r["held"]:
            lines.append(f"| {h['value']} | {h['mib']:.2f} | {h['ours']} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = points_parser(__doc__, time_limit_s=20.0, plan_time_limit_s=10.0,
                      time_help="per model solve, and the order search")
    p.add_argument("--share", type=float, default=0.5, help="of XLA's extra FLOPs")
    p.add_argument("--held", type=int, default=16, help="values listed at the peak")
    args = p.parse_args(argv)
    return run_points(run_one, render, args)


if __name__ == "__main__":
    raise SystemExit(main())
