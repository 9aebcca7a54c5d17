"""The time limit as a limit, and placement judged against the order's live bytes.

    python -m benchmarks.time_limit --models=cnn_adam,unet,resnet50,densenet,remat --size=small \
        --time_limit_s=5 --out=benchmarks/results/time_limit_5s
    python -m benchmarks.time_limit --models=remat,lm_adamw,resnet50,unet,densenet,vit \
        --size=small --time_limit_s=10 --offline_exact_s=10 --out=benchmarks/results/placement_floor_10s
    python -m benchmarks.time_limit --models=unet,lstm --size=small --time_limit_s=10 \
        --floor_exact_s=10 --out=benchmarks/results/time_limit_10s_floor
    python -m benchmarks.time_limit --models=unet,lstm,densenet --size=small --time_limit_s=10 \
        --out=benchmarks/results/time_limit_10s_fit_score
    python -m benchmarks.time_limit --backend=gpu:h100 --models=grad_accum,resnet18,unet \
        --size=small --time_limit_s=20 --offline_exact_s=10 --out=benchmarks/results/place_h100_fit

Per example, in its own process: the limit; the planner's part of ``plan()``
(``Plan.solve_seconds``: graph build, order search, bound, placement) and its
ratio to the limit; XLA's compiles (``capture_seconds``) and the check, rewrite
and verification (``verify_seconds``), which the limit does not cover; the
chosen order's live bytes (the order objective, a lower bound on its arena),
its arena by best-fit and as placed, and the placement overhead (placed / live
- 1); the least live bytes of any order searched; whether an exact placement
engine ran; planned vs XLA's best; the proven bound; with --offline_exact_s,
what the repair's exact engine reaches on the chosen order with that much time
to itself (untimed, after the plan: a plan cut short vs one at its order's
floor).  Writes ``<out>.md`` and ``<out>.json``.
"""

from __future__ import annotations

import os
import sys
import time

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import common  # noqa: E402


def parse_args(argv=None):
    p = common.parser(__doc__, worker=True, models="cnn_adam,unet,resnet50,densenet,remat",
                      backend="cpu", size="small", time_limit_s=5.0,
                      out="benchmarks/results/time_limit_5s")
    p.add_argument("--offline_exact_s", type=float, default=0.0,
                   help="after the plan (untimed): the exact engine the repair uses, given this "
                        "many seconds on the chosen order from best-fit (0: skip)")
    p.add_argument("--floor_exact_s", type=float, default=0.0,
                   help="after the plan (untimed): the chosen order's floor with the region "
                        "assignment at its highest moments solved whole by CP-SAT "
                        "(place_check.region_fit_bound(exact_s=...)), within this many seconds "
                        "(0: skip)")
    return p.parse_args(argv)


def run_one(name: str, args) -> dict:
    import json
    import examples

    step = examples.get(name, args.size)
    t0 = time.monotonic()
    p = common.plan_quietly(step, time_limit_s=args.time_limit_s, backend=args.backend)
    s = p.settings
    row = dict(model=name, limit_s=args.time_limit_s, solve_s=p.solve_seconds,
               capture_s=p.capture_seconds, verify_s=p.verify_seconds,
               plan_wall_s=time.monotonic() - t0,
               instructions=len(p.graph.nodes) if p.graph else None,
               live=s.get("live_bytes"), least_live=s.get("least_live_bytes"),
               best_fit=s.get("best_fit_bytes"), exact_tried=s.get("exact_placement_tried"),
               planned=p.planned_temp_bytes, xla_best=p.xla_best_temp_bytes,
               bound=p.lower_bound_bytes, source=p.source, engine=p.engine,
               verified=p.verified, notes=list(p.notes), load=common.load(),
               stage_ends=s.get("stage_ends_s"))
    # the arena of our plan even when XLA's was kept: planned is XLA's then
    if p.layout is not None:
        row["arena"] = p.layout.temp_bytes
        # After the timed part: the placement's own bound for the chosen order
        # (the most bytes live at once, less region space; units too big for
        # any region counted whole), which the order objective can undercut.
        from olla_jax.solve import place_check
        pp, _ = p.graph.placement_problem(p.layout.order)
        row["placement_live"] = place_check.live_bytes_bound(pp)
        # The same with region space counted only where a block could use
        # it for its whole life: the arena no placement of this order goes below.
        row["placement_fit"] = place_check.region_fit_bound(pp)
        # The order's costs under the threshold objectives (only units larger
        # than a region size count, only regions that large hold them): the
        # most of them, and that size (what strategy._FitScore ranks by).
        from olla_jax.solve.evaluate import Evaluator
        sizes = sorted({c for c in p.graph.order_problem().region_sizes if c > 0})
        costs = {c: Evaluator(p.graph.threshold_problem(c)).cost(p.layout.order) for c in sizes}
        if costs:
            binding = max(costs, key=costs.get)
            row.update(threshold_score=costs[binding], threshold_size=binding)
        if args.floor_exact_s > 0:
            # The same with whole blocks assigned to regions (a multiple
            # knapsack per moment, CP-SAT's proven bound): still no placement
            # of this order goes below it.
            t1 = time.monotonic()
            row["placement_floor"] = place_check.region_fit_bound(pp, exact_s=args.floor_exact_s)
            row["placement_floor_s"] = time.monotonic() - t1
        if args.offline_exact_s > 0:
            # What the repair's engine reaches on this order with the whole
            # time to itself (tells a plan cut short from one at its floor).
            from olla_jax import strategy
            from olla_jax.solve import place as place_lib
            hint = place_lib.best_fit(pp)
            t1 = time.monotonic()
            exact = place_lib.place_exact(pp, time_limit_s=args.offline_exact_s, hint=hint,
                                          engine=strategy.REPAIR_ENGINE,
                                          floor=row["placement_fit"])
            row.update(offline_best_fit=hint.arena_size, offline_exact=exact.arena_size,
                       offline_exact_s=time.monotonic() - t1)
    json.dumps(row)
    return row


def worker(args) -> None:
    common.write_worker_result(args.worker_out, lambda: run_one(args.worker, args),
                               lambda msg: {"model": args.worker, "error": msg})


def _pct(x):
    return "-" if x is None else f"{100 * x:.1f}"


def markdown(rows, args, meta) -> str:
    lines = common.header(f"Time limit and placement vs live bytes, size {args.size}", {
        "backend": getattr(args, "backend", "cpu"),
        "time limit per model": f"{args.time_limit_s:g} s",
        "load average (1/5/15 min) at start, end": f"{meta['load_start']}; {meta.get('load_end', '-')} "
        "(2 cores shared with other jobs: timings and what a wall-clock limit allows are affected)"},
        command=meta["command"], machine_info=meta["machine"], date=meta["date"])
    lines += ["MiB. planner s = Plan.solve_seconds (graph build + solve_graph: what the limit "
              "bounds); capture s = XLA's compiles and dumps; verify s = check, rewrite, "
              "bit-for-bit verification. live = the chosen order's live bytes by the order "
              "objective (what the search minimises); placement live = the same order's live-bytes "
              "bound of its placement problem (computed after the plan, untimed; higher where a "
              "unit is too big for the regions the objective counts as free); fit live = the same "
              "with region space counted only where a block live then fits for its whole life "
              "(place_check.region_fit_bound: no placement of this order goes below it); "
              "thr score = the most of the same order's costs under the threshold objectives "
              "(only units larger than a region size count, only regions that large hold "
              "them), at region size thr size (MiB); "
              "best-fit, placed = its arena before and after the exact engine; overhead = placed "
              "/ placement live - 1, fit overhead = placed / fit live - 1 (what placement lost at "
              "most). least live = least live bytes of any order searched. planned = what the "
              "plan runs with (XLA's when kept). offline exact (with --offline_exact_s, untimed, "
              "after the plan): best-fit of the chosen order, then the repair's exact engine "
              "on it with that many seconds to itself, stopping at fit live (and its seconds). "
              "floor (with --floor_exact_s, untimed, after the plan): fit live with the blocks "
              "live at its highest moments assigned whole to regions (CP-SAT's proven bound on a "
              "multiple knapsack; no placement of this order goes below it), floor overhead = "
              "placed / floor - 1.", ""]
    cols = ["model", "instr", "limit s", "planner s", "wall/limit", "capture s", "verify s",
            "live", "placement live", "fit live", "thr score", "thr size", "best-fit", "placed",
            "overhead %",
            "fit overhead %", "floor", "floor overhead %", "offline exact", "least live", "exact tried", "planned",
            "XLA best", "planned/XLA", "bound", "source"]
    body = []
    for r in rows:
        if "error" in r:
            body.append([r["model"], *["-"] * 24, "ERROR " + r["error"][:200]])
            continue
        arena = r.get("arena")
        body.append([r["model"], r["instructions"], f"{r['limit_s']:g}", f"{r['solve_s']:.2f}",
                     f"{r['solve_s'] / r['limit_s']:.2f}", f"{r['capture_s']:.1f}",
                     f"{r['verify_s']:.1f}", common.mib(r["live"]),
                     common.mib(r.get("placement_live")), common.mib(r.get("placement_fit")),
                     common.mib(r.get("threshold_score")),
                     f"{r['threshold_size'] / 2**20:.3f}" if r.get("threshold_size") else "-",
                     common.mib(r["best_fit"]), common.mib(arena),
                     _pct(arena / r["placement_live"] - 1) if arena and r.get("placement_live")
                     else "-",
                     _pct(arena / r["placement_fit"] - 1) if arena and r.get("placement_fit")
                     else "-",
                     f"{common.mib(r['placement_floor'])} ({r['placement_floor_s']:.1f} s)"
                     if r.get("placement_floor") else "-",
                     _pct(arena / r["placement_floor"] - 1) if arena and r.get("placement_floor")
                     else "-",
                     f"{common.mib(r['offline_exact'])} ({r['offline_exact_s']:.1f} s)"
                     if r.get("offline_exact") else "-",
                     common.mib(r["least_live"]), "yes" if r["exact_tried"] else "no",
                     common.mib(r["planned"]), common.mib(r["xla_best"]),
                     f"{r['planned'] / r['xla_best']:.3f}" if r["xla_best"] else "-",
                     common.mib(r["bound"]), r["source"]])
    lines += common.table(cols, body, right=set(range(1, 25)))
    ok = [r for r in rows if "error" not in r]
    if ok:
        worst = max(r["solve_s"] / r["limit_s"] for r in ok)
        lines += ["", f"- worst planner wall / limit: {worst:.2f} (target <= 1.1)",
                  f"- plans more than 2% above their order's live bytes: "
                  f"{sum(1 for r in ok if r.get('arena') and r.get('placement_live') and r['arena'] > 1.02 * r['placement_live'])}"
                  f" of {len(ok)}",
                  f"- plans more than 2% above their order's region-fit bound: "
                  f"{sum(1 for r in ok if r.get('arena') and r.get('placement_fit') and r['arena'] > 1.02 * r['placement_fit'])}"
                  f" of {len(ok)}"]
        if any(r.get("placement_floor") for r in ok):
            lines += [f"- plans more than 2% above their order's floor: "
                      f"{sum(1 for r in ok if r.get('arena') and r.get('placement_floor') and r['arena'] > 1.02 * r['placement_floor'])}"
                      f" of {sum(1 for r in ok if r.get('placement_floor'))}"]
        lines += ["", "Stage ends, seconds from the planner's start (solve_graph's stages; "
                  "Solution.stage_ends, 'start' = the graph build before them):", ""]
        lines += [f"- {r['model']}: " + ", ".join(f"{k} {v:.2f}" for k, v in r["stage_ends"].items())
                  for r in ok if r.get("stage_ends")]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    args = parse_args(argv)
    if common.begin(args, worker):
        return
    flags = common.forward(args, "size", "time_limit_s", "backend", "offline_exact_s",
                           "floor_exact_s")
    common.run_rows("benchmarks.time_limit", common.model_names(args.models), flags,
                    lambda spec, msg: {"model": spec, "error": msg},
                    lambda rows, run: markdown(rows, args, run), args.out, timeout_s=1800,
                    settings=vars(args))


if __name__ == "__main__":
    main()
