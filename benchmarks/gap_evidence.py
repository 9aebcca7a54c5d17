"""Where the gap to the bound is: the plan's (a longer search does better) or the bound's.

    python -m benchmarks.gap_evidence --models=densenet,remat,lm_adamw,mlp_mixer,vit \
        --size=small --time_limit_s=10 --long_s=180 --out=benchmarks/results/gap_evidence_cpu
    python -m benchmarks.gap_evidence --backend=gpu:h100 --models=resnet18,unet ...  (compile-only)

Per example, in its own process: capture and plan at ``time_limit_s`` (no
feed-back: the plan's figures, nothing run); then ``solve_graph`` on the same
graph with ``long_s`` (orders, placement and the min-cut bound all get more
time); then CP-SAT on the reduced problem (``solve.bound_reduced``: the biggest
items of the largest-threshold bound problem, as many as keep at most
``reduced_nodes`` nodes), ``reduced_s``, whose proven bound sees one order
rather than each node alone.

Figures (MiB): planned = our arena at the limit; long = our arena after the
long search, long live = its order's live bytes (placement problem's peak:
no placement of that order does better); bound = the plan's; bound+ = the best
proven here (the long solve's min-cut, the reduced CP-SAT bounds).  plan's
part = (planned - long) / planned: memory a longer search found, so the plan
left it; bound's part = (bound+ - bound) / planned; unresolved = (long - bound+) / planned: the bound's or a search's that
neither run could settle; of the long plan's own part, placement = (long -
max(long live, bound+)) / planned.
"""

from __future__ import annotations

import os
import sys
import time

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import common  # noqa: E402

CLOSE = 0.02   # within 2% of planned: the suite's target


def parse_args(argv=None):
    p = common.parser(__doc__, worker=True, models="densenet,remat,lm_adamw,mlp_mixer,vit",
                      backend="cpu", size="small", time_limit_s=10.0,
                      out="benchmarks/results/gap_evidence_cpu")
    p.add_argument("--long_s", type=float, default=180.0)
    p.add_argument("--reduced_s", type=float, default=45.0)
    p.add_argument("--reduced_nodes", type=int, default=150)
    p.add_argument("--render", default=None, help="rewrite <out>.md from a finished run's <out>.json")
    return p.parse_args(argv)


def run_one(name: str, args) -> dict:
    import examples
    from olla_jax import strategy
    from olla_jax.solve import bound_reduced, place_check

    step = examples.get(name, args.size)
    p = common.plan_quietly(step, backend=args.backend, time_limit_s=args.time_limit_s,
                            feed_back=False)
    g = p.graph
    row = dict(model=name, backend=args.backend, instructions=len(g.nodes), limit_s=args.time_limit_s,
               planned=p.planned_temp_bytes, xla_best=p.xla_best_temp_bytes,
               arena=p.layout.temp_bytes if p.layout is not None else None,
               bound=p.lower_bound_bytes, solve_s=p.solve_seconds, load_start=common.load())
    t0 = time.monotonic()
    long = strategy.solve_graph(g, time_limit_s=args.long_s, xla_temp_bytes=p.xla_best_temp_bytes)
    row.update(long_s=args.long_s, long_solve_s=time.monotonic() - t0, long=long.layout.temp_bytes,
               long_order_live=long.live_bytes,
               long_live=place_check.live_bytes_bound(g.placement_problem(long.layout.order)[0]),
               long_bound=long.lower_bound_bytes)
    reduced = []
    sizes = sorted({0, *g.order_problem().region_sizes})
    for c in sizes[-1:]:   # the plain problem's pinned items alone keep hundreds of nodes
        problem = g.threshold_problem(c, for_bound=True)
        min_size = bound_reduced.min_size_for(problem, args.reduced_nodes)
        r = bound_reduced.reduced_cpsat_bound(problem, min_size, time_limit_s=args.reduced_s,
                                              hint=long.layout.order)
        reduced.append(dict(threshold=c, min_size=min_size, nodes=r.kept_nodes, items=r.kept_items,
                            value=r.value, order_cost=r.order_cost, optimal=r.optimal,
                            seconds=r.seconds))
    row["reduced"] = reduced
    row["bound_plus"] = max([row["bound"], row["long_bound"], *(r["value"] for r in reduced)])
    row["load_end"] = common.load()
    return row


def worker(args) -> None:
    common.write_worker_result(args.worker_out, lambda: run_one(args.worker, args),
                               lambda msg: {"model": args.worker, "error": msg})


def verdict(r: dict) -> dict:
    """The parts of the gap (fractions of planned) and which side it is on:
    plan's (a longer search found that much less), bound's (a bound proven
    here rose that much), unresolved (the long plan above the best bound) and,
    of that, the long plan's placement loss."""
    planned, long, bound = r["planned"], r["long"], r["bound_plus"]
    plan_part = max(0, planned - long) / planned
    bound_part = max(0, bound - r["bound"]) / planned
    unresolved = max(0, long - bound) / planned
    placement = max(0, long - max(r["long_live"], bound)) / planned
    if (planned - r["bound"]) <= CLOSE * planned:
        is_ = "none (within 2%)"
    elif unresolved <= CLOSE:
        is_ = ("plan's: the long search closes it" if plan_part >= bound_part
               else "bound's: the bound proven here closes it")
    elif plan_part > CLOSE and plan_part >= unresolved:
        is_ = "mostly the plan's"
    elif placement >= unresolved - placement:
        is_ = "plan's placement: the long order's live bytes are near bound+"
    else:
        ratio = r["long_s"] / r["limit_s"]
        is_ = f"unresolved: a {ratio:g}x longer search stays {100 * unresolved:.1f}% above bound+"
    return dict(plan_part=plan_part, bound_part=bound_part, unresolved=unresolved,
                placement=placement, is_=is_)


def render(rows: list, run: dict) -> str:
    mib = common.mib
    lines = common.header("Where the gap to the bound is: long searches and reduced CP-SAT bounds", {
        "backend": ", ".join(sorted({r.get("backend", "cpu") for r in rows})),
        "loads (1/5/15 min) per model": common.row_loads(rows),
        "note": "2 cores shared with other helpers' jobs (loads above 2 mean the searches got less "
                "than a core): what a wall-clock limit buys is then less"},
        command=run["command"], machine_info=run["machine"])
    lines += [__doc__.split("\n\n", 3)[3].strip(), ""]
    body = []
    for r in rows:
        if "error" in r:
            body.append([r["model"], *["-"] * 12, "ERROR: " + r["error"][:200]])
            continue
        v = verdict(r)
        red = "; ".join(f"c={mib(x['threshold'])}: >= {mib(x['min_size'])} ({x['nodes']} nodes) "
                        f"{mib(x['value'])}{' opt' if x['optimal'] else ''}" for x in r["reduced"])
        body.append([r["model"], r["instructions"], mib(r["planned"]), f"{r['solve_s']:.1f}",
                     mib(r["long"]), f"{r['long_solve_s']:.0f}", mib(r["long_live"]),
                     mib(r["bound"]), mib(r["long_bound"]), red, mib(r["bound_plus"]),
                     f"{100 * (r['planned'] - r['bound']) / r['planned']:.2f}",
                     f"{100 * v['plan_part']:.2f} / {100 * v['bound_part']:.2f} / "
                     f"{100 * v['unresolved']:.2f} / {100 * v['placement']:.2f}", v["is_"]])
    lines += common.table(["model", "instr", "planned", "solve s", "long", "long s", "long live",
                           "bound", "long bound", "reduced CP-SAT bounds", "bound+", "gap %",
                           "plan's / bound's / unresolved / long placement %", "gap is"],
                          body, right=set(range(1, 9)) | {10, 11})
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.render:   # same rows, same command; the table as this code draws it
        import json
        data = json.load(open(args.render))
        with open(args.render[:-len(".json")] + ".md", "w") as f:
            f.write(render(data["rows"], data))
        return
    if common.begin(args, worker):
        return
    flags = common.forward(args, "backend", "size", "time_limit_s", "long_s", "reduced_s",
                           "reduced_nodes")
    common.run_rows("benchmarks.gap_evidence", common.model_names(args.models), flags,
                    lambda spec, msg: {"model": spec, "error": msg}, render, args.out,
                    timeout_s=args.long_s + 2 * args.reduced_s + 900)


if __name__ == "__main__":
    main()
