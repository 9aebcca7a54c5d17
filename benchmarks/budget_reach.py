"""What a memory budget needs recomputed that today's candidates leave out.

    python -m benchmarks.budget_reach --models=lstm --fraction=0.75 \
        --out=benchmarks/results/budget_reach_lstm

Per model (its own process): the order-and-placement plan, the budget's temp
(fraction x XLA's best temp), and lower bounds of the temp of any plan
(``budget.recompute_floor``, under any order) that recomputes (a) nothing,
(b) today's candidates (``budget.candidates``), (c) every value whose unit is
made outside loops and calls (any producer, tuple- or loop-held values
included: a relaxation of what a copy of an entry instruction could do,
whatever the rewrite can do today); then what holds the plan's arena peak
(``budget.held_at_peak``) and the largest units live there that (b) leaves
out and (c) would take, with why they are refused.  A budget below (c)'s
floor needs values made inside loops recomputed (a second run of a loop).
Writes ``<out>.md`` and ``<out>.json``.
"""

from __future__ import annotations

import os
import sys

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import common  # noqa: E402


def parse_args(argv=None):
    p = common.parser(__doc__, size="small", models="lstm", time_limit_s=10.0,
                      out="benchmarks/results/budget_reach")
    p.add_argument("--fraction", type=float, default=0.75)
    return p.parse_args(argv)


def run_one(name: str, args) -> dict:
    import examples
    from olla_jax import budget
    from olla_jax.budget.candidates import Candidate

    step = examples.get(name, args.size)
    base = common.plan_quietly(step, time_limit_s=args.time_limit_s)
    graph = base.graph
    cands = budget.candidates(graph, base.capture)
    refused = budget.refusals(graph, base.capture)
    entry_made = []
    for unit in graph.units:
        vals = [graph.values[v] for v in unit.values]
        if unit.movable and unit.size and not any(v.live_in or v.live_out for v in vals) and \
                all(graph.block_length(v.def_node) == 1 for v in vals):
            first = min(vals, key=lambda v: v.def_node)
            entry_made.append(Candidate(first.id, first.def_node, (), (), 0, 0.0))
    limit = args.time_limit_s
    floors = {"nothing": budget.recompute_floor(graph, [], time_limit_s=limit),
              "candidates": budget.recompute_floor(graph, cands, time_limit_s=limit),
              "made outside loops": budget.recompute_floor(graph, entry_made, time_limit_s=limit)}
    held = budget.held_at_peak(graph, base.capture, base.layout)
    # the largest units live at the plan's arena peak that (c) takes and (b) does not
    order = base.layout.order if base.layout is not None else graph.xla_order
    spans = graph.unit_spans(order)
    start = graph.flat_layout(order)
    peak_node = graph.node_index[held.node]
    t = start[peak_node] + graph.block_length(peak_node) - 1
    cand_units = {graph.unit_of_value[c.value] for c in cands}
    left_out = []
    for c in entry_made:
        u = graph.unit_of_value[c.value]
        if u in cand_units or not any(a <= t <= b for a, b in spans[u]):
            continue
        readers = sorted({graph.nodes[n] for v in graph.units[u].values
                          for n in graph.values[v].touches} - {graph.nodes[c.producer]})
        left_out.append({"value": graph.nodes[c.producer], "bytes": graph.units[u].size,
                         "why": refused.get(c.value, "-"), "readers": readers[:6]})
    left_out.sort(key=lambda r: -r["bytes"])
    return {"model": name, "xla_best": base.xla_best_temp_bytes, "temp": base.runs_temp_bytes,
            "target": int(args.fraction * base.xla_best_temp_bytes),
            "working_set": budget.working_set_bound(graph)[0], "floors": floors,
            "candidates": len(cands), "made_outside_loops": len(entry_made),
            "peak": held.describe(top=6), "left_out_at_peak": left_out[:10]}


def render(rows: list[dict], args) -> list[str]:
    lines = common.header(f"olla_jax memory budgets: what {args.fraction:g} x XLA's best needs "
                          "recomputed", {"load average at start": common.load()})
    lines += ["Temps in MiB.  floor (x): no plan recomputing only (x) needs less temp, under any "
              "order (budget.recompute_floor).  (c) is a relaxation: any value of a unit made "
              "outside loops and calls, whatever the rewrite can copy today.", ""]
    cols = ["model", "XLA best", "budget temp", "plan", "working set", "floor: nothing",
            "floor: candidates", "floor: made outside loops"]
    lines += common.table(cols, [[r["model"], common.mib(r["xla_best"]), common.mib(r["target"]),
                                  common.mib(r["temp"]), common.mib(r["working_set"]),
                                  common.mib(r["floors"]["nothing"]),
                                  common.mib(r["floors"]["candidates"]),
                                  common.mib(r["floors"]["made outside loops"])] for r in rows],
                          right=set(range(1, len(cols))))
    lines += ["", "Where the budget is below floor (b): today's candidates cannot reach it under any "
              "order.  Where it is also below floor (c), values made inside loops must be recomputed: "
              "a loop's results (a scan's stacked outputs, written in place by every iteration) exist "
              "only once the whole loop has run, so only a second run of the loop recreates them.  "
              "Between (c) and (b), the values to recompute are made by entry instructions but "
              "held or read where a copy cannot serve (the reasons below).  A value that while loops "
              "read through their carried tuple, unchanged, is a candidate: a copy made just before "
              "a later loop is what that loop's body and condition thunks read (they address the "
              "carried bytes directly; a tuple runs no thunk on CPU), and the checker re-derives "
              "that every reader inside the loop reads the copy (budget.candidates.loop_reads)."]
    for r in rows:
        lines += ["", f"{r['model']}: {r['peak']}", "",
                  "Live at that peak, made outside loops, not a candidate today:", ""]
        lines += [f"- {x['value']} ({common.mib(x['bytes'])} MiB): {x['why']}; read by "
                  f"{', '.join(x['readers'])}" for x in r["left_out_at_peak"]]
    return lines


def main(argv=None):
    args = parse_args(argv)
    rows = [run_one(name, args) for name in common.model_names(args.models)]
    lines = render(rows, args)
    common.write_lines_and_rows(args.out, lines, rows)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
