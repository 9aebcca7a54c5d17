"""Plan every example step and compare with XLA and with a greedy baseline.

    python -m benchmarks.suite --backend=cpu --size=small --time_limit_s=30 --models=all \
        --out=benchmarks/results/suite_cpu
    python -m benchmarks.suite --backend=gpu:h100 ...      (in /work/venv-gpu: compile-only)

Per model: instructions and buffers of the scheduling graph; temp bytes of XLA's
default scheduler, of XLA's best scheduler, of a baseline (the best memory-aware
list schedule, then greedy best-fit placement), of our plan (planned; achieved =
read back from the rewritten, verified executable on CPU); the proven lower bound;
gap = (planned - bound) / planned; reductions; solve seconds; verification; the
step-time ratio ours/XLA (CPU, verified plans only).  Each model runs in its own
process so a crash is a row with the error.  Writes ``<out>.md`` and ``<out>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import common  # noqa: E402


def parse_args(argv=None):
    p = common.parser(__doc__, worker=True, backend="cpu", size="small", time_limit_s=30.0,
                      models="all", out=None)
    p.add_argument("--timing_repeats", type=int, default=20, help="calls per side for the step-time ratio")
    p.add_argument("--timing_budget_s", type=float, default=60.0,
                   help="fewer repeats for slow steps, so timing takes about this long")
    p.add_argument("--model_timeout_s", type=float, default=0, help="per-model limit (0: 12x time limit + 600)")
    p.add_argument("--render", default=None, help="rewrite the markdown of a finished run's <out>.json")
    p.add_argument("--merge", default=None, help="with --render: rows of a rerun (<out>.json) replace these")
    p.add_argument("--plans_dir", default=None, help="where each plan is saved (default <out>_plans)")
    p.add_argument("--evidence", default=None,
                   help="a benchmarks.gap_evidence <out>.json: its long searches and stronger "
                        "bounds say, per model it ran, whether the gap is the plan's or the bound's")
    return p.parse_args(argv)


# ---------------------------------------------------------------------------
# one model (runs in a child process)

def baseline_temp(graph) -> tuple[int, float]:
    """Temp of the memory-aware list schedule + best-fit placement, and its seconds."""
    from olla_jax.solve import list_schedule, place
    t0 = time.perf_counter()
    order = list_schedule.best_list_schedule(graph.order_problem()).order
    pp, _ = graph.placement_problem(order)
    arena = place.best_fit(pp).arena_size
    return (common.round_up(arena, graph.alignment) if arena else 0), time.perf_counter() - t0


def run_one(name: str, args) -> dict:
    import examples
    from olla_jax.apply.timing import time_ratio

    row = {"model": name, "backend": args.backend}
    t0 = time.perf_counter()
    step = examples.get(name, args.size)
    row["description"] = step.description
    timer = common.Timer()
    p = common.plan_quietly(step, backend=args.backend, time_limit_s=args.time_limit_s)
    row.update(instructions=len(p.graph.nodes) if p.graph else None,
               buffers=len(p.graph.units) if p.graph else None,
               xla_default=p.xla_default_temp_bytes, xla_best=p.xla_best_temp_bytes,
               xla_scheduler=p.xla_scheduler, planned=p.planned_temp_bytes,
               achieved=p.achieved_temp_bytes if args.backend == "cpu" else None,
               bound=p.lower_bound_bytes, gap=p.gap, engine=p.engine, compile_s=timer.compile_s, phases=timer.seconds,
               solve_s=timer.solve_s(), plan_s=p.solve_seconds,
               capture_s=getattr(p, "capture_seconds", None),
               verify_s=getattr(p, "verify_seconds", None),
               live=p.settings.get("live_bytes"), best_fit=p.settings.get("best_fit_bytes"),
               source=p.source, verified=p.verified, notes=list(p.notes),
               argument_bytes=p.argument_bytes, output_bytes=p.output_bytes, alias_bytes=p.alias_bytes)
    row["least_live"] = p.settings.get("least_live_bytes")
    row["stage_ends_s"] = p.settings.get("stage_ends_s")   # which stage overran the limit
    if p.layout is not None and p.graph is not None:
        # After the timed part: our arena, and the live-bytes peak of the chosen
        # order's placement problem (what no placement of that order can beat),
        # to tell the plan's placement loss from the order's distance to the bound.
        from olla_jax.solve import place_check
        row["arena"] = p.layout.temp_bytes
        pp = p.graph.placement_problem(p.layout.order)[0]
        row["placement_live"] = place_check.live_bytes_bound(pp)
        row["placement_fit"], row["placement_fit_exact_s"] = order_floor(
            pp, p.layout.temp_bytes, exact=p.gap is not None and p.gap > GAP_TARGET)
    if args.plans_dir and p.capture is not None:
        os.makedirs(args.plans_dir, exist_ok=True)
        p.save(os.path.join(args.plans_dir, f"{name}.json"))  # benchmarks.breakdown reads these
    row["baseline"], row["baseline_s"] = baseline_temp(p.graph) if p.graph else (None, None)
    row["time_ratio"] = None
    if p.verified and args.backend == "cpu":
        # Repeats capped so that timing takes about a minute, whatever the step's cost.
        import jax
        import jax.numpy as jnp
        # donation eats args; static ones (plain Python values) stay as they are
        fresh = jax.tree.map(lambda x: jnp.array(x, copy=True) if isinstance(x, jax.Array) else x,
                             step.args)
        t1 = time.perf_counter()
        jax.block_until_ready(p.xla_compiled(*fresh))
        one = time.perf_counter() - t1
        repeats = max(3, min(args.timing_repeats, int(args.timing_budget_s / (2 * one + 1e-9))))
        r = time_ratio(p.xla_compiled, p.compiled, step.args, repeats=repeats, warmup=1)
        row.update(time_ratio=r.ratio, time_ratio_min=r.ratio_of_minima, xla_step_s=r.original_s,
                   timing_repeats=repeats)
    row["wall_s"] = time.perf_counter() - t0
    row["load"] = common.load()
    return row


def worker(args) -> None:
    common.write_worker_result(args.worker_out, lambda: run_one(args.worker, args),
                               lambda msg: {"model": args.worker, "backend": args.backend,
                                            "error": msg})


# ---------------------------------------------------------------------------
# the table

def _ratio(a, b):
    return None if a is None or not b else a / b


# The chosen order's region-fit floor, after the timed part: its exact pass
# (each live block whole into one region it fits, CP-SAT) gets this long on a
# row whose gap is over GAP_TARGET and whose arena is above the fast floor
# (where the verdict could blame placement).  On unet (CPU, small) the floor
# of an order placed at 89.375 MiB, live bytes 85.24, was 88.93 after 5 s
# and the arena itself after 30 s.
FIT_EXACT_S = 30.0
GAP_TARGET = 0.02


def order_floor(pp, arena: int, exact: bool) -> tuple[int | None, float]:
    """The chosen order's region-fit floor (``place_check.region_fit_bound``:
    no placement of that order goes below it, proven), with the exact pass
    when ``exact`` and the arena is above the fast floor, and the seconds
    that pass was given (0: none); None on an order too large for it."""
    from olla_jax.solve import place_check
    from olla_jax.strategy import FIT_BOUND_MAX_INTERVALS   # the region-fit bound's memory
    if len(pp.intervals) > FIT_BOUND_MAX_INTERVALS:
        return None, 0.0
    fit = place_check.region_fit_bound(pp)
    if not exact or arena <= fit:
        return fit, 0.0
    return max(fit, place_check.region_fit_bound(pp, exact_s=FIT_EXACT_S)), FIT_EXACT_S


def gap_split(r: dict) -> dict | None:
    """Where the gap (planned - bound) lies, for a row with our arena: the
    placement's loss (our arena above the chosen order's floor: the plan's)
    and the order's floor above the bound (the order search's or the
    bound's: which one, only a proof of the best order can tell).  The
    order's floor: the most of its live-bytes peak, its region-fit floor
    (rows that have it) and the bound.  ``is``: "none" within 2% of the
    bound, else the larger part.  Fractions of planned; None for a row
    without the figures."""
    if "error" in r or not r.get("planned") or r.get("arena") is None or r.get("placement_live") is None:
        return None
    planned, arena, live, bound = r["planned"], r["arena"], r["placement_live"], r["bound"]
    kept_xla = arena > planned     # XLA's plan handed back: ours lost by (arena - planned)
    # No placement of the order goes below its peak, its region-fit floor nor
    # the bound (the peak counts idle output space as free, even where no
    # block live then fits it: the region-fit floor counts only what can).
    floor = max(live, r.get("placement_fit") or 0, bound or 0)
    placement = max(0, arena - floor) / planned
    order = max(0, min(floor, planned) - bound) / planned
    verdict = ("none" if r["gap"] <= GAP_TARGET else
               "placement" if placement >= order else "order or bound")
    return {"placement": placement, "order": order, "kept_xla": kept_xla, "is": verdict}


def _floor_cell(r: dict) -> str:
    """The order floor column: MiB, with its exact pass's seconds when it had one
    ('-' for rows from runs before the column)."""
    if r.get("placement_fit") is None:
        return "-"
    exact = r.get("placement_fit_exact_s") or 0
    return common.mib(r["placement_fit"]) + (f" (exact {exact:g} s)" if exact else "")


def load_evidence(path: str | None) -> dict[str, dict]:
    """Rows of a benchmarks.gap_evidence run, by model (none without a path)."""
    if not path:
        return {}
    with open(path) as f:
        return {r["model"]: r for r in json.load(f)["rows"] if "error" not in r}


def evidence_columns(r: dict, evidence: dict[str, dict]) -> list[str]:
    """Long-search arena, best proven bound and the verdict of gap_evidence for
    this row's model (its own run: compare its planned with this row's)."""
    from benchmarks import gap_evidence
    e = evidence.get(r["model"])
    if e is None:
        return ["-", "-", "-"]
    return [common.mib(e["long"]), common.mib(max(e["bound_plus"], r["bound"] or 0)),
            f"{gap_evidence.verdict(e)['is_']} (its {e['limit_s']:g} s plan: {common.mib(e['planned'])})"]


def summarise(rows: list[dict], backend: str) -> dict:
    ok = [r for r in rows if "error" not in r]
    ours = "achieved" if backend == "cpu" else "planned"
    s = {"models": len(rows), "planned_ok": len(ok),
         "verified": sum(bool(r.get("verified")) for r in ok)}
    for key in ("planned", "achieved", "baseline"):
        if key == "achieved" and backend != "cpu":
            continue
        for ref in ("xla_default", "xla_best"):
            g = common.geomean(_ratio(r.get(key), r[ref]) for r in ok)
            s[f"geomean_{key}/{ref}"] = g
    s["ours"] = ours
    s["within_2pct_of_bound"] = sum(r["gap"] <= GAP_TARGET for r in ok)
    splits = [gap_split(r) for r in ok]
    s["gap_is_placement"] = sum(1 for g in splits if g and g["is"] == "placement")
    s["gap_is_order_or_bound"] = sum(1 for g in splits if g and g["is"] == "order or bound")
    times = sorted(r["solve_s"] for r in ok if r.get("solve_s") is not None)
    if times:
        s["solve_s_median"] = statistics.median(times)
        s["solve_s_max"] = times[-1]
    return s


def markdown(rows: list[dict], summary: dict, args, meta: dict) -> str:
    cpu = args.backend == "cpu"
    extra = {"backend": args.backend, "example size": args.size,
             "time limit per model": f"{args.time_limit_s:g} s (plan(time_limit_s=...))",
             "load average (1/5/15 min) at start, end": f"{meta['load_start']}; {meta.get('load_end', '-')} "
             "(a load near or above the core count means other jobs shared the machine: solve "
             "quality under a wall-clock limit and step times are then affected)"}
    if meta.get("rendered"):
        extra["gap evidence added by"] = f"`{meta['rendered']}`"
    for i, rerun in enumerate(meta.get("reruns", []), 1):
        extra[f"rerun {i} merged"] = (f"`{rerun.split(' (', 1)[0]}` ({rerun.split(' (', 1)[1]} "
                                      "(its first attempt failed in this benchmark script, since fixed)")
    lines = common.header(f"olla_jax suite: {args.backend}, size {args.size}", extra,
                          command=meta["command"], machine_info=meta["machine"], date=meta["date"])
    lines += ["Temps in MiB. baseline: best memory-aware list schedule + best-fit placement on the "
              "same memory model. gap = (planned - bound) / planned. red. = reduction of our temp "
              "(achieved on CPU, planned on GPU) vs XLA. time = step time ours/XLA (median of "
              f"up to {args.timing_repeats} interleaved calls each, fewer for slow steps so that timing "
              f"takes about {args.timing_budget_s:g} s; verified CPU plans only). solve s = "
              "the planner's own time (graph build + `solve_graph`: order search, placement, bound; "
              "timed by wrapping those functions; not XLA's compiles, the check, rewrite and "
              "verification), to compare with the time limit.", ""]
    cols = ["model", "backend", "instr", "buffers", "XLA default", "XLA best", "baseline",
            "planned", "achieved", "bound", "gap %", "red. vs default %", "red. vs best %",
            "solve s", "verified", "time", "notes"]
    body = []
    for r in rows:
        if "error" in r:
            body.append([r["model"], r["backend"], *["-"] * 14, "ERROR: " + r["error"][:300]])
            continue
        ours = r["achieved"] if cpu else r["planned"]
        body.append([
            r["model"], r["backend"], r["instructions"] or "-", r["buffers"] or "-",
            common.mib(r["xla_default"]), f"{common.mib(r['xla_best'])} ({r['xla_scheduler']})",
            common.mib(r["baseline"]), common.mib(r["planned"]), common.mib(r["achieved"]),
            common.mib(r["bound"]), f"{100 * r['gap']:.2f}",
            common.pct(1 - ours / r["xla_default"]) if r["xla_default"] else "-",
            common.pct(1 - ours / r["xla_best"]) if r["xla_best"] else "-",
            f"{common.solve_seconds(r):.1f}",
            "yes" if r["verified"] else "no",
            f"{r['time_ratio']:.3f}" if r.get("time_ratio") else "-",
            "; ".join(r["notes"])[:300] or "-"])
    lines += common.table(cols, body, right=set(range(2, 16)))
    gap_body = []
    evidence = load_evidence(getattr(args, "evidence", None))
    for r in rows:
        g = gap_split(r)
        if g is None:
            continue
        gap_body.append([r["model"], common.mib(r["planned"]), common.mib(r["arena"]),
                         common.mib(r["placement_live"]), _floor_cell(r), common.mib(r.get("live")),
                         common.mib(r.get("least_live")), common.mib(r["bound"]),
                         f"{100 * r['gap']:.2f}", f"{100 * g['placement']:.2f}",
                         f"{100 * g['order']:.2f}",
                         g["is"] + (" (XLA's plan kept)" if g["kept_xla"] else "")])
        if evidence:
            gap_body[-1] += evidence_columns(r, evidence)
    if gap_body:
        lines += ["", "## Where the gap is", "",
                  "arena = our plan's arena (planned is XLA's where ours lost); order peak = the "
                  "chosen order's live-bytes peak in its placement problem (no placement of that "
                  "order does better, but it counts idle output space as free even where no block "
                  "live then fits it); order floor = the chosen order's region-fit floor "
                  "(place_check.region_fit_bound: region space counted only where whole blocks live "
                  "then fit it; 'exact N s': with its CP-SAT assignment pass given N s, run where "
                  "the gap is over 2% and the arena above the fast passes' floor; proven either way: no "
                  "placement of that order does better); order live = the order peak by the order "
                  "objective; least live = "
                  "the least order-objective live bytes of any order searched (the order objective "
                  "counts idle output space as free: not comparable with the bound). floor = "
                  "max(order peak, order floor, bound). placement % = (arena - floor) / planned: the plan's loss "
                  "to placement; order-bound % = (min(floor, planned) - bound) / planned: the order "
                  "search's or the bound's (a proof of the best order would tell which). gap is: "
                  "none (gap <= 2%) or the larger part." + (
                      f" long arena, bound+, evidence: from `{args.evidence}` (benchmarks.gap_evidence:"
                      " the same step planned with a much longer search, and the best bound proven"
                      " there; its verdict)." if evidence else ""), ""]
        lines += common.table(["model", "planned", "arena", "order peak", "order floor",
                               "order live", "least live",
                               "bound", "gap %", "placement %", "order-bound %", "gap is",
                               *(["long arena", "bound+", "evidence"] if evidence else [])],
                              gap_body, right=set(range(1, 11)) | ({12, 13} if evidence else set()))
    n = summary["planned_ok"]
    lines += ["", "## Summary", "",
              f"- models: {summary['models']}, planned without error: {n}, "
              f"verified and fed back: {summary['verified']}"]
    for key in ("achieved", "planned", "baseline"):
        for ref in ("xla_default", "xla_best"):
            g = summary.get(f"geomean_{key}/{ref}")
            if g is not None:
                lines.append(f"- geomean temp {key}/{ref.replace('_', ' ')}: {g:.4f} "
                             f"(reduction {100 * (1 - g):.1f}%)")
    lines.append(f"- within 2% of the lower bound: {summary['within_2pct_of_bound']} of {n}")
    if "gap_is_placement" in summary:
        lines.append(f"- the rest: the gap is mostly placement in {summary['gap_is_placement']}, "
                     f"the order's live bytes above the bound in {summary['gap_is_order_or_bound']}")
    if summary.get("solve_s_median") is not None:
        lines.append(f"- planner time (solve s): median {summary['solve_s_median']:.1f} s, "
                     f"max {summary['solve_s_max']:.1f} s")
    if cpu:
        lines.append("- 'achieved' is XLA's best temp where the plan was not applied (fallback), so "
                     "the achieved geomeans are what a user gets; 'planned' is what the model says.")
    return "\n".join(lines) + "\n"


def write(out: str, rows: list[dict], args, meta: dict) -> str:
    summary = summarise(rows, args.backend)
    text = markdown(rows, summary, args, meta)
    with open(out + ".json", "w") as f:
        json.dump({**meta, "settings": vars(args), "rows": rows, "summary": summary}, f, indent=1)
    with open(out + ".md", "w") as f:
        f.write(text)
    return text


def render(path: str, merge: str | None = None, evidence: str | None = None) -> None:
    """Rewrite ``<out>.md`` from ``<out>.json`` (same run, same figures); with ``merge``,
    rows of another run (same settings) replace this run's rows of the same models."""
    data = json.load(open(path))
    args = argparse.Namespace(**data["settings"])
    meta = {k: data[k] for k in ("command", "machine", "date", "load_start", "load_end", "reruns",
                                 "rendered") if k in data}
    if evidence:
        args.evidence = evidence
        meta["rendered"] = common.command_line()
    rows = data["rows"]
    if merge:
        other = json.load(open(merge))
        if {k: v for k, v in other["settings"].items() if k in ("backend", "size", "time_limit_s")} != \
                {k: v for k, v in data["settings"].items() if k in ("backend", "size", "time_limit_s")}:
            raise SystemExit("the runs to merge have different settings")
        new = {r["model"]: r for r in other["rows"]}
        rows = [new.get(r["model"], r) for r in rows]
        meta.setdefault("reruns", []).append(f"{other['command']} ({other['date']}): "
                                             f"{', '.join(new)} replaced")
    write(path[:-len(".json")], rows, args, meta)


def main(argv=None) -> None:
    args = parse_args(argv)
    if common.begin(args, worker):
        return
    if args.render:
        render(args.render, args.merge, args.evidence)
        return
    models = common.model_names(args.models)
    out = args.out or f"benchmarks/results/suite_{args.backend.replace(':', '_')}"
    timeout = args.model_timeout_s or 12 * args.time_limit_s + 600
    log = common.start_log(out + ".log")
    meta = common.run_meta()
    flags = [*common.forward(args, "backend", "size", "time_limit_s", "timing_repeats",
                             "timing_budget_s"), f"--plans_dir={args.plans_dir or out + '_plans'}"]
    rows = []
    for name in models:
        t0 = time.perf_counter()
        row = common.run_worker("benchmarks.suite", name, flags,
                                lambda msg, name=name: {"model": name, "backend": args.backend,
                                                        "error": msg[:300]},
                                timeout_s=timeout, log=log)
        rows.append(row)
        if "error" in row:
            print(f"{name:12s} ERROR {row['error'][:200]}  ({time.perf_counter() - t0:.0f} s)", flush=True)
        else:
            print(f"{name:12s} xla {common.mib(row['xla_best'])} planned {common.mib(row['planned'])} "
                  f"achieved {common.mib(row['achieved'])} bound {common.mib(row['bound'])} "
                  f"gap {100 * row['gap']:.1f}% verified {row['verified']} "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
        write(out, rows, args, meta)
    meta["load_end"] = common.load()
    print(write(out, rows, args, meta).split("## Summary", 1)[1])


if __name__ == "__main__":
    main()
