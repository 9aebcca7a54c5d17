"""Whether other kinds of copies would let ours meet XLA's points (issue 20).

For each example and each of XLA's limits on a compile-only GPU target, on
our model of the step (``budget.model.model_problem`` on our plan's order,
the live bytes of best-fit's arena, offset as ``benchmarks.remat_sets``
offsets its budget): the least live peak within 0.5 and 1 x XLA's extra
FLOPs with our GPU candidates, then with each of ``candidates.GPU_EXTRA``
added (feeders recomputed for a copy as on CPU; values XLA parked in an
output allocation; feeders whose operand has readers of its own too).  Last, at the peak of the base solve within 0.5 x: the
values held there that the model cannot drop (not candidates, or candidates
with no copy that may run on this order, e.g. a GEMM written in place over a
copy of its residual, which it reads), each with the FLOPs of the kernels
that make it, against the FLOPs the share leaves: any copy of one costs at
least that.  Live bytes, not a placement; nothing is built or
checked: a diagnosis.  With ``--orders=search`` (the default) the model runs
on each order ``budget.search`` gives it (``timed_search.search_orders``: our
plan's, with sink moves, XLA's), not on our plan's alone: on mlp:small at
H100's 96 MiB point the least peak within XLA's FLOPs was 128 MiB on ours,
96 on XLA's.  The other orders are solved with the product's candidates
alone (none of the extra kinds); the held values are those of our plan's order.

    python -m benchmarks.remat_kinds --models=vit:small --limits=0.8 \\
        --out=benchmarks/results/remat_kinds_vit
"""

from __future__ import annotations

import dataclasses
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import common  # noqa: E402
from benchmarks.remat_sets import plan_and_point, points_parser, run_points  # noqa: E402

MIB = 2**20
SHARES = (0.5, 1.0)


def entry_flops(compiled) -> dict[str, int]:
    """Entry instruction name -> its FLOPs (``olla_jax.flops``) in ``compiled``."""
    from olla_jax import flops as flops_lib
    from olla_jax import protos
    module = protos.message_class("xla.HloModuleProto")()
    module.ParseFromString(compiled.runtime_executable().hlo_modules()[0]
                           .as_serialized_hlo_module_proto())
    by_id = {i.id: i for c in module.computations for i in c.instructions}
    comps = {c.id: c for c in module.computations}
    return {i.name: flops_lib.instruction_flops(i, by_id, comps, ())
            for i in comps[module.entry_computation_id].instructions}


def no_option(graph, order, c) -> str:
    """Why candidate ``c`` has no copy that may run on ``order`` (the checks
    of ``budget.model.model_problem``, the first that fails before every reader)."""
    from olla_jax.budget.recompute_plan import (
        copy_time, late_part_ok, new_state, operand_intact, read_times, step_index)
    state, step = new_state(graph, order), step_index(graph, order)
    spans = graph.unit_spans(order)
    if graph.unit_of_value[c.value] not in state.interval_of_unit:
        return "a candidate, its unit not an interval of this order"
    _, start, end = state.intervals[state.interval_of_unit[graph.unit_of_value[c.value]]]
    users = sorted(c.users, key=lambda n: step[n])
    times = read_times(c, users, step)
    fails = []
    for k in range(len(users)):
        at = copy_time(graph, step, users[k])
        if not (start <= times[k] and times[k] + 1 <= at - 1 and at <= end):
            fails.append("no idle gap before a reader")
        elif not late_part_ok(graph, step, c, users[k]):
            fails.append("values written over it in place run before the copy's readers")
        else:
            bad = [graph.nodes[graph.values[o].def_node] for o in c.operands
                   if not operand_intact(graph, spans, step, state.interval_of_unit, o, at)]
            fails.append(f"its operand {', '.join(bad)} is overwritten before the late readers")
    gaps = [f for f in fails if f != "no idle gap before a reader"]
    return "a candidate, no copy on this order: " + (sorted(set(gaps))[0] if gaps else
                                                     "no idle gap before a reader")


def named_orders(graph, order, args) -> list[tuple[str, tuple[int, ...]]]:
    """(label, order) of each order the model runs on: our plan's alone
    (``--orders=plan``), or each one ``budget.search`` plans on (``search``)."""
    import time
    from olla_jax.budget.timed_search import search_orders
    if args.orders == "plan":
        return [("ours", order)]
    now = time.monotonic()
    found = search_orders(graph, order, (now + args.sink_s / 2, now + args.sink_s))
    xla = tuple(graph.xla_order)
    return [("ours" if i == 0 else "XLA's" if o == xla else f"ours, sink moves {i}", o)
            for i, o in enumerate(found)]


def run_one(item: str, limit: float, args) -> dict:
    import numpy as np

    from olla_jax.budget.candidates import FLOPS_PER_S, named_refusals, screen
    from olla_jax.budget.model import model_problem
    from olla_jax.budget.recompute_plan import new_state
    from olla_jax.solve import recompute as rm
    base, point, xla_flops = plan_and_point(item, limit, args)
    graph, cap = base.graph, base.capture
    order = tuple(base.layout.order if base.layout is not None else graph.xla_order)
    row = {"example": item, "limit": limit, "point_temp": point.memory.temp,
           "point_flops": xla_flops, "variants": []}
    peak_of_base = None
    # the other orders with the product's candidates alone (their solves add up)
    others = named_orders(graph, order, args)[1:]
    for extra, (label, on) in [((), ("ours", order)), *(((), o) for o in others),
                               *((e, ("ours", order)) for e in
                                 (("feeders",), ("parked",), ("feeders", "parked"),
                                  ("shared_feeders",)))]:
        cands, why = screen(graph, cap, "flops", gpu_extra=extra)
        built = model_problem(graph, on, cands)
        if built is None:
            continue
        problem, keys, placed = built
        none = [-1] * len(problem.choices)
        offset = int(rm.profile(problem, none).max()) - placed.arena_size
        problem = dataclasses.replace(problem, budget=point.memory.temp + offset)
        got = {"extra": "+".join(extra) or "none", "order": label, "candidates": len(cands)}
        for share in SHARES:
            sol = rm.least_peak_within(problem, int(share * xla_flops * 1e9 / FLOPS_PER_S),
                                       time_limit_s=args.time_limit_s)
            flops = sum(keys[k][0].flops * len(keys[k][1][j]) for k, j in enumerate(sol.picks)
                        if j >= 0)
            need = problem.budget - (1 - (1 if share == 0.5 else 0.85)) * point.memory.temp
            got[str(share)] = {"peak": sol.peak - offset, "asks": int(need - offset),
                               "flops": flops, "optimal": sol.optimal}
            if not extra and share == 0.5 and on == order:
                peak_of_base = (problem, sol, cands, why)
        row["variants"].append(got)
    if peak_of_base is None:
        return row
    problem, sol, cands, why = peak_of_base
    why = named_refusals(graph, cands, why)
    profile = rm.profile(problem, sol.picks)
    t = int(np.argmax(profile))
    ends = list(problem.ends)
    for c, k in zip(problem.choices, sol.picks):
        for i, e in (c.options[k].extend if k >= 0 else ()):
            ends[i] = max(ends[i], e)
    owners = new_state(graph, order).owners
    chosen = {c.interval for c in problem.choices}
    cand_of = {c.value: c for c in cands}
    cost = entry_flops(cap.compiled)
    held = []
    for i, size in enumerate(problem.sizes):
        values = graph.units[owners[i]].values
        if not size or not problem.starts[i] <= t <= ends[i] or i in chosen:
            continue
        makers = sorted({graph.nodes[graph.values[v].def_node] for v in values})
        held.append({"values": makers, "mib": size / MIB,
                     "flops": sum(cost.get(m, 0) for m in makers),
                     "why": "; ".join(sorted({no_option(graph, order, cand_of[v]) if v in cand_of
                                              else why.get(v, "not a candidate") for v in values}))})
    row["held_at"] = graph.nodes[order[(t - 1) // 2]] if t > 0 else "-"
    row["held_peak"] = int(profile[t]) - (problem.budget - point.memory.temp)
    row["held"] = sorted(held, key=lambda h: (-h["mib"], h["flops"]))
    return row


def render(rows, args, loads) -> str:
    lines = common.header(
        f"Other kinds of copies against XLA's points, compile-only {args.target}",
        {"load average at start / end (1/5/15 min; 2 cores shared by several helpers)":
             f"{loads[0]} ; {loads[1]}",
         "model": f"least live peak within 0.5 and 1 x XLA's extra FLOPs, costed by FLOPs, "
                  f"each solve at most {args.time_limit_s:g} s, on "
                  + ("our plan's order" if args.orders == "plan" else
                     f"each order budget.search plans on (sink moves {args.sink_s:g} s)")})
    for r in rows:
        lines += [f"## {r['example']} at {r['limit']} x XLA's temp: XLA {r['point_temp'] / MIB:,.2f} MiB "
                  f"at {r['point_flops']:,} extra FLOPs", "",
                  "| candidates also | order | count | within 0.5 x: peak (target asks) | FLOPs x XLA's "
                  "| within 1 x: peak (target asks) | FLOPs x XLA's |",
                  "|---|---|---:|---:|---:|---:|---:|"]
        for v in r["variants"]:
            cells = []
            for share in SHARES:
                f = v[str(share)]
                cells += [f"{f['peak'] / MIB:,.2f} ({f['asks'] / MIB:,.2f}){'' if f['optimal'] else ' not proven'}",
                          f"{f['flops'] / max(1, r['point_flops']):.2f}"]
            lines.append(f"| {v['extra']} | {v.get('order', 'ours')} | {v['candidates']} | "
                         + " | ".join(cells) + " |")
        if "held" in r:
            lines += ["", f"Held at the base solve's peak within 0.5 x ({r['held_peak'] / MIB:,.2f} MiB, "
                          f"before {r['held_at']}) that the model cannot drop; the share leaves "
                          f"{int(0.5 * r['point_flops']):,} FLOPs:", "",
                      "| made by | MiB | their FLOPs | why not |", "|---|---:|---:|---|"]
            for h in r["held"]:
                lines.append(f"| {', '.join(h['values'])} | {h['mib']:.2f} | {h['flops']:,} | {h['why']} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = points_parser(__doc__, time_limit_s=20.0, plan_time_limit_s=3.0)
    p.add_argument("--orders", default="search", choices=("plan", "search"),
                   help="the model on our plan's order alone, or on each budget.search plans on")
    p.add_argument("--sink_s", type=float, default=4.0,
                   help="seconds for the sink-moved orders (budget.search gives 0.1 x its limit)")
    args = p.parse_args(argv)
    return run_points(run_one, render, args)


if __name__ == "__main__":
    raise SystemExit(main())
