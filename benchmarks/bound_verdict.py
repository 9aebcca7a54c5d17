"""Per example: is the gap to the bound the bound's or the plan's?

    python -m benchmarks.bound_verdict --backend=cpu --models=unet,lstm,densenet \
        --time_limit_s=10 --out=benchmarks/results/bound_verdict_cpu
    python -m benchmarks.bound_verdict --backend=gpu:h100 --models=resnet18,unet --time_limit_s=20 ...

Per example, in its own process: plan at ``time_limit_s`` (no feed-back;
where the plan keeps no layout, the planner's solve of its graph at that
limit); then on the same graph, with time to finish: every threshold problem's
min-cut and the chosen order's cost there (``order - cut``: the most the
chosen order is above a threshold's relaxation: 0 means the order is
optimal for every one of them); CP-SAT asked whether any order of the two
strongest threshold problems, reduced (``solve.bound_cpsat``), is below the
plan; the same with whole blocks parked in regions (``park``, the plain
problem); the chain bound (``solve.bound_chain``: pairs and triples of the
costliest nodes in every sequence) on the two strongest threshold problems;
the chosen order's own placement floor (``place_check.region_fit_bound``
with its exact pass: no placement of that order does better); with
``--assign_s``, its whole-life floor (``solve.bound_assign``: each block in
one place for its whole life, offsets relaxed, from the plan's regions:
``proven`` no placement of the order beats, ``found`` what the relaxation
allows); with ``--class_s``, its region-class floor (``solve.place_classes``:
each block for its whole life in the arena or in one class of regions, the
regions of one capacity together; ``proven``, ``found`` as above) and the
arena the placement search reaches from those class choices
(``from classes``: a placement of the same order, checked); with
``--list_s``, the list schedules' orders (``solve.list_schedule``, every
rule: their order costs tie on some steps) and their region-fit floors, and
the one with the least floor placed (best-fit, then the exact engine for
that many seconds, checked: ``list order``); and, with
``--long_s``, the planner again on the same graph with that limit, from the
chosen order (``long``: its arena and bound).  Figures in MiB.

gap is: "closed" (a bound proven here is within 2% of the plan), "the
plan's" (the longer solve's arena is within 2% of a bound proven here: an
order and placement that close it exist, the search at the limit missed
them), "the order choice's" (the list order placed here is more than 2%
below the plan: an order the planner could have taken), "the placement
search's" (a placement of the chosen order found
here, from its class choices, is more than 2% below the plan: the planner's
placement of that order, not the order or the bound, lost it), "this
order's placement" (its floor is above the bound+ by more than 2%: a better
placement of it, or another order, may close it; where its floor meets the
plan, only another order can), "order or bound" (the chosen order is
above some threshold's relaxation: a better order or a tighter bound).
"""

from __future__ import annotations

import os
import sys
import time

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import common  # noqa: E402

CLOSE = 0.02


def parse_args(argv=None):
    p = common.parser(__doc__, worker=True, models="unet,lstm,densenet", backend="cpu",
                      size="small", time_limit_s=10.0, out="benchmarks/results/bound_verdict_cpu")
    p.add_argument("--prove_s", type=float, default=30.0, help="CP-SAT's time per problem")
    p.add_argument("--prove_nodes", type=int, default=120)
    p.add_argument("--long_s", type=float, default=0.0,
                   help="also solve the same graph again with this limit (0: not)")
    p.add_argument("--assign_s", type=float, default=0.0,
                   help="the chosen order's whole-life floor (solve.bound_assign) within this "
                        "many seconds (0: not)")
    p.add_argument("--class_s", type=float, default=0.0,
                   help="the chosen order's region-class floor (solve.place_classes) within "
                        "this many seconds, then the placement search from its choices for as "
                        "long (0: not)")
    p.add_argument("--list_s", type=float, default=0.0,
                   help="the list schedules' orders: region-fit floors, and the least placed "
                        "by the exact engine within this many seconds (0: not)")
    p.add_argument("--render", default=None,
                   help="rewrite <out>.md from a finished run's <out>.json (its rows and command)")
    return p.parse_args(argv)


def run_one(name: str, args) -> dict:
    import examples
    from olla_jax import strategy
    from olla_jax.solve import bound_chain, bound_cpsat, bounds, place_check
    from olla_jax.solve.problem import order_cost

    step = examples.get(name, args.size)
    load_start = common.load()
    p = common.plan_quietly(step, backend=args.backend, time_limit_s=args.time_limit_s,
                            feed_back=False)
    g = p.graph
    if p.layout is not None:
        order, planned, bound = p.layout.order, p.layout.temp_bytes, p.lower_bound_bytes
    else:
        # No layout kept (XLA's plan won, or a compile-only target): the
        # planner's own solve of the same graph at the same limit instead.
        sol = strategy.solve_graph(g, time_limit_s=args.time_limit_s)
        order, planned, bound = sol.layout.order, sol.layout.temp_bytes, sol.lower_bound_bytes
    cuts = []
    for c in sorted({0, *g.order_problem().region_sizes}):
        problem = g.threshold_problem(c, for_bound=True)
        cut = bounds.min_cut_bound(problem, time_limit_s=60, orders=[order])
        cuts.append(dict(c=c, cut=cut.value, complete=cut.complete,
                         order=order_cost(problem, order)))
    proofs = []
    for row in sorted(cuts, key=lambda r: -r["cut"])[:2]:
        found = bound_cpsat.prove(g.threshold_problem(row["c"], for_bound=True), planned,
                                  floor=bound, max_nodes=args.prove_nodes,
                                  time_limit_s=args.prove_s)
        proofs.append(dict(c=row["c"], park=False, value=found.value, status=found.status,
                           nodes=found.kept_nodes, seconds=found.seconds))
    found = bound_cpsat.prove(g.threshold_problem(0, for_bound=True), planned, floor=bound,
                              max_nodes=args.prove_nodes, park=True, time_limit_s=args.prove_s)
    proofs.append(dict(c=0, park=True, value=found.value, status=found.status,
                       nodes=found.kept_nodes, seconds=found.seconds))
    chains = []
    for row in sorted(cuts, key=lambda r: -r["cut"])[:2]:
        found = bound_chain.search_bound(g.threshold_problem(row["c"], for_bound=True), [order],
                                         time_limit_s=args.prove_s, floor=row["cut"])
        chains.append(dict(c=row["c"], value=max(row["cut"], found.value), flows=found.flows,
                           seconds=found.seconds, complete=found.complete))
    long = None
    if args.long_s > 0:
        t0 = time.monotonic()
        sol = strategy.solve_graph(g, warm_starts=[order], time_limit_s=args.long_s)
        long = dict(limit_s=args.long_s, planned=sol.layout.temp_bytes,
                    bound=sol.lower_bound_bytes, live=sol.live_bytes,
                    seconds=time.monotonic() - t0)
    pp = g.placement_problem(order)[0]
    t0 = time.monotonic()
    fit = place_check.region_fit_bound(pp, exact_s=5.0)
    fit_s = time.monotonic() - t0
    assign = None
    if args.assign_s > 0:
        assign = _whole_life(g, order, p.layout, args.assign_s)
    classes = _classes(g, order, p.layout, args.class_s) if args.class_s > 0 else None
    listed = _list_orders(g, args.list_s) if args.list_s > 0 else None
    return dict(classes=classes, listed=listed,
                model=name, backend=args.backend, limit_s=args.time_limit_s, planned=planned,
                bound=bound, solve_s=p.solve_seconds, cuts=cuts, proofs=proofs, chains=chains,
                long=long,
                live=place_check.live_bytes_bound(pp), fit=fit, fit_s=fit_s, assign=assign,
                load_start=load_start, load_end=common.load())


# The whole-life floor keeps this many of the order's largest blocks (at
# least their size: the others left out, a relaxation).
ASSIGN_BLOCKS = 600


def _whole_life(g, order, layout, time_limit_s: float) -> dict:
    """``solve.bound_assign.whole_life_floor`` of ``order``'s placement problem,
    from the regions ``layout`` (the plan's, when it is of this order) gave."""
    from olla_jax.solve import bound_assign
    pp, owner = g.placement_problem(order)
    hint = _plan_regions(g, order, layout, owner)
    sizes = sorted((iv.size for iv in pp.intervals), reverse=True)
    min_size = sizes[min(len(sizes), ASSIGN_BLOCKS) - 1] if sizes else 0
    t0 = time.monotonic()
    found = bound_assign.whole_life_floor(pp, time_limit_s=time_limit_s, min_size=min_size,
                                          hint=hint)
    return dict(proven=found.proven, found=found.found, status=found.status,
                blocks=found.blocks, min_size=min_size, hinted=hint is not None,
                seconds=time.monotonic() - t0)


def _plan_regions(g, order, layout, owner):
    """The regions ``layout`` (the plan's, when it is of ``order``) gave the
    placement problem's intervals, as a Placement (offsets 0), else None."""
    from olla_jax.solve.problem import ARENA, Placement
    if layout is None or tuple(layout.order) != tuple(order):
        return None
    index = {a: r for r, a in enumerate(g.regions)}
    regs = [index.get(layout.places[g.units[u].values[0]][0], ARENA) for u in owner]
    return Placement(tuple(regs), tuple(0 for _ in regs), 0)


def _classes(g, order, layout, time_limit_s: float) -> dict:
    """``solve.place_classes.class_floor`` of ``order``'s placement problem
    (from the plan's regions), then ``place_exact`` from its ``class_start``
    for as long; the placement found is checked (``validate_placement``)."""
    from olla_jax.solve import place, place_check, place_classes
    pp, owner = g.placement_problem(order)
    hint = _plan_regions(g, order, layout, owner)
    t0 = time.monotonic()
    found = place_classes.class_floor(pp, time_limit_s=time_limit_s, hint=hint)
    floor_s = time.monotonic() - t0
    start = place_classes.class_start(pp, found.classes)
    t0 = time.monotonic()
    placed = place.place_exact(pp, time_limit_s=time_limit_s, hint=start,
                               floor=max(found.proven, place_check.live_bytes_bound(pp)))
    place_check.validate_placement(pp, placed)
    return dict(proven=found.proven, found=found.found, status=found.status,
                blocks=found.blocks, seconds=floor_s, start=start.arena_size,
                placed=placed.arena_size, place_s=time.monotonic() - t0,
                hinted=hint is not None)


def _list_orders(g, time_limit_s: float) -> dict:
    """Each list schedule's order (every rule) with its order cost and
    region-fit floor; the one with the least floor placed by best-fit and
    then ``place_exact`` within ``time_limit_s`` (checked)."""
    from olla_jax.solve import list_schedule, place, place_check
    rows, problems = [], {}
    for found in list_schedule.list_schedules(g.order_problem()):
        pp, _ = g.placement_problem(found.order)
        problems[found.rule] = pp
        rows.append(dict(rule=found.rule, cost=found.cost,
                         floor=place_check.region_fit_bound(pp)))
    least = min(rows, key=lambda r: r["floor"])
    pp = problems[least["rule"]]
    t0 = time.monotonic()
    start = place.best_fit(pp)
    placed = place.place_exact(pp, time_limit_s=time_limit_s, hint=start, floor=least["floor"])
    place_check.validate_placement(pp, placed)
    return dict(rows=rows, rule=least["rule"], floor=least["floor"], best_fit=start.arena_size,
                placed=placed.arena_size, seconds=time.monotonic() - t0)


def worker(args) -> None:
    common.write_worker_result(args.worker_out, lambda: run_one(args.worker, args),
                               lambda msg: {"model": args.worker, "error": msg})


def verdict(r: dict) -> tuple[int, int, str]:
    """(bound+, most the order is above a threshold's min-cut, gap is)."""
    planned = r["planned"]
    long = r.get("long")
    best = max([r["bound"], *(c["cut"] for c in r["cuts"]), *(x["value"] for x in r["proofs"]),
                *(x["value"] for x in r.get("chains", ())), long["bound"] if long else 0])
    above = max(c["order"] - c["cut"] for c in r["cuts"])
    if planned - best <= CLOSE * planned:
        return best, above, "closed: the bound proven here is within 2% of the plan"
    if long and long["planned"] - best <= CLOSE * long["planned"]:
        return best, above, (f"the plan's: the planner at {long['limit_s']:g} s found "
                             f"{common.mib(long['planned'])}, within 2% of the bound")
    listed = r.get("listed")
    if listed and listed["placed"] < (1 - CLOSE) * planned:
        return best, above, (f"the order choice's: the {listed['rule']} list order (order cost "
                             f"as the others') places at {common.mib(listed['placed'])}, its "
                             f"region-fit floor {common.mib(listed['floor'])}, where the plan's "
                             f"order has {common.mib(r['fit'])}")
    classes = r.get("classes")
    if classes and classes["placed"] < (1 - CLOSE) * planned:
        return best, above, (f"the placement search's: this order placed from its class choices "
                             f"reaches {common.mib(classes['placed'])} (the plan "
                             f"{common.mib(planned)}); its floors: {common.mib(r['fit'])} per "
                             f"moment, {common.mib(classes['proven'])} by classes")
    if above <= 0:
        floor = max(r["fit"], (r.get("assign") or {}).get("proven", 0),
                    (classes or {}).get("proven", 0))
        where = ("the order's own fit: no placement of it is 2% below the plan, only "
                 "another order can be" if floor >= (1 - CLOSE) * planned
                 else "a better placement of it or another order")
        return best, above, (f"placement: the order is optimal for every threshold relaxation; "
                             f"its own floor {common.mib(floor)}: {where}")
    return best, above, "order or bound: the order is above a threshold's relaxation"


def render(rows: list, run: dict) -> str:
    mib = common.mib
    lines = common.header("Whose is the gap to the bound: the bound's or the plan's", {
        "backend": ", ".join(sorted({r.get("backend", "cpu") for r in rows})),
        "loads (1/5/15 min) per model": common.row_loads(rows),
        "note": "2 cores shared with other helpers' jobs: the plans at the limit are what a "
                "loaded machine gives"}, command=run["command"], machine_info=run["machine"])
    lines += [__doc__.split("\n\n", 2)[2].strip(), ""]
    body = []
    for r in rows:
        if "error" in r:
            body.append([r["model"], *["-"] * 14, "ERROR: " + r["error"][:200]])
            continue
        best, above, is_ = verdict(r)
        proofs = "; ".join(f"{'park ' if x['park'] else ''}c={mib(x['c'])}: {mib(x['value'])} "
                           f"{x['status']} ({x['nodes']} nodes, {x['seconds']:.1f} s)"
                           for x in r["proofs"])
        chains = "; ".join(f"c={mib(x['c'])}: {mib(x['value'])} ({x['flows']} flows, "
                           f"{x['seconds']:.1f} s{'' if x['complete'] else ', stopped'})"
                           for x in r.get("chains", ())) or "-"
        long = r.get("long")
        long_s = (f"{mib(long['planned'])} (bound {mib(long['bound'])}, {long['seconds']:.0f} s)"
                  if long else "-")
        a = r.get("assign")
        assign = (f"{mib(a['proven'])} proven, {mib(a['found'])} found ({a['blocks']} blocks "
                  f"of {mib(a['min_size'])}+, {a['seconds']:.0f} s"
                  f"{', from the plan' if a['hinted'] else ''})" if a else "-")
        c = r.get("classes")
        cls = (f"{mib(c['proven'])} proven, {mib(c['found'])} found ({c['blocks']} blocks, "
               f"{c['seconds']:.0f} s{', from the plan' if c['hinted'] else ''})" if c else "-")
        from_cls = (f"{mib(c['placed'])} (start {mib(c['start'])}, {c['place_s']:.0f} s)"
                    if c else "-")
        li = r.get("listed")
        list_s = (f"{li['rule']}: {mib(li['placed'])} (floor {mib(li['floor'])}, best-fit "
                  f"{mib(li['best_fit'])}, {li['seconds']:.0f} s); floors "
                  + ", ".join(f"{x['rule']} {mib(x['floor'])}" for x in li["rows"]) if li else "-")
        body.append([r["model"], mib(r["planned"]), mib(r["bound"]),
                     mib(max(c["cut"] for c in r["cuts"])), mib(above), proofs, chains,
                     mib(r["live"]), mib(r["fit"]), assign, cls, from_cls, list_s, long_s,
                     mib(best), is_])
    lines += common.table(["model", "planned", "bound", "best min-cut", "order - cut", "CP-SAT",
                           "chain", "order live", "order floor", "whole-life floor",
                           "class floor", "from classes", "list order", "long", "bound+",
                           "gap is"],
                          body, right={1, 2, 3, 4, 7, 8, 14})
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.render:
        import json
        with open(args.render + ".json") as f:
            run = json.load(f)
        common.write_results(args.render, run, render(run["rows"], run)
                             + f"\n(rendered again by `{common.command_line()}`)\n")
        return
    if common.begin(args, worker):
        return
    flags = common.forward(args, "backend", "size", "time_limit_s", "prove_s", "prove_nodes",
                           "long_s", "assign_s", "class_s", "list_s")
    common.run_rows("benchmarks.bound_verdict", common.model_names(args.models), flags,
                    lambda spec, msg: {"model": spec, "error": msg}, render, args.out,
                    timeout_s=8 * args.prove_s + 2 * args.long_s + 2 * args.assign_s
                    + 3 * args.class_s + 2 * args.list_s + 1800)


if __name__ == "__main__":
    main()
