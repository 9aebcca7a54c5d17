"""The largest batch that fits, per example: XLA, our order and placement, recomputation.

    python -m benchmarks.batch --size=tiny --models=all --capacity_factor=4 \
        --out=benchmarks/results/batch_cpu
    python -m benchmarks.batch --size=tiny --models=cnn_adam,unet --search=bisect \
        --out=benchmarks/results/batch_search_bisect      (the earlier search, for its seconds)
    python -m benchmarks.batch --size=tiny --models=all --mode_time_s=60 --reach_time_s=45 \
        --model_timeout_s=480 --out=benchmarks/results/batch_cpu_suite   (the whole suite in
        about an hour on a loaded 2-core machine)

Per model the capacity is ``capacity_factor`` x XLA's total (temp + arguments
+ outputs - aliased) at the example's own batch size, so each model is asked
for a batch about that many times larger.  ``olla_jax.largest_batch`` then
searches each mode (``--search``: predict from measured totals, or the
earlier doubling and bisection; every probe is recorded): xla
(XLA's best plan), olla (our order and placement, planned figures), recompute
(``plan(memory_budget=capacity)``: recomputation fed back, verified, kept only
within ``--step_time_limit`` x XLA's step time).  Each model runs in its own
process; the result files are rewritten after each model, so a run cut short
keeps the models it finished (the others are listed as not run).  Writes
``<out>.md`` and ``<out>.json``.

Time: XLA's compiles dominate (two schedulers per probed batch, 10-25 s each
on a loaded machine); they are made once per batch and shared by the modes and
the floor search (``olla_jax.batch.CaptureCache``).  ``--mode_time_s`` stops
ours and recomputation (never XLA's search, the ratios' denominator) from
starting another probe; an answer cut short is the largest batch seen to fit,
printed ">= ".  ``--reach_time_s`` runs ``olla_jax.batch.reachable_batch``: the
"Memory model" section splits the step into what is fixed (parameters,
optimizer state) and what grows per sample, and says per example whether
``--target`` x XLA's batch is out of reach for any plan that runs the step's
kernels (the arguments, outputs and one instruction's operands and results
alone exceed the capacity there).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import common  # noqa: E402


def parse_args(argv=None):
    p = common.parser(__doc__, worker=True, size="tiny", models="all", time_limit_s=5.0,
                      out="benchmarks/results/batch_cpu")
    p.add_argument("--modes", default="xla,olla,recompute")
    p.add_argument("--capacity_factor", type=float, default=4.0)
    p.add_argument("--step_time_limit", type=float, default=1.10)
    p.add_argument("--search", default="predict", choices=("predict", "bisect"))
    p.add_argument("--xla_probes", default="quick", choices=("quick", "full"),
                   help="XLA's search (predict): compiles for their figures alone, its answer "
                        "and the batch above it then compiled in full (quick), or every probe "
                        "in full, with XLA's dumps (full, the earlier search)")
    p.add_argument("--plan_probes", default="quick", choices=("quick", "full"),
                   help="ours and recomputation (predict): plans of compiles at LLVM -O0, only "
                        "what is fed back, verified and timed planned again in full (quick), or "
                        "every plan of full compiles (full, the earlier search)")
    p.add_argument("--model_timeout_s", type=float, default=0, help="per model (0: none)")
    p.add_argument("--mode_time_s", type=float, default=0,
                   help="per mode and model: no probe starts after it; the answer is then the "
                        "largest batch seen to fit, marked as a lower bound (0: none)")
    p.add_argument("--time_s", type=float, default=0,
                   help="per model, the whole search (XLA's included): no probe starts after "
                        "it, answers found so far are kept as lower bounds (0: --model_timeout_s "
                        "less a margin for the probe running, when that is given)")
    p.add_argument("--hints", default=None,
                   help="A.json,B.json: earlier runs of this benchmark; per model, each mode's "
                        "complete answer there (the first file that has one) and the batch above "
                        "it are probed first: two probes settle an answer that has not moved")
    p.add_argument("--reach_time_s", type=float, default=0,
                   help="seconds for the working-set floor search per model (0: skip it)")
    p.add_argument("--target", type=float, default=1.5,
                   help="the batch ratio to XLA's the floor is checked against")
    p.add_argument("--render", default=None,
                   help="rewrite <out>.md from a finished (or cut short) run's <out>.json; "
                        "several (A.json,B.json: runs of the same settings on other models) "
                        "are merged into --out")
    p.add_argument("--compare", default=None,
                   help="BEFORE.json,AFTER.json: probes, seconds and answers of two runs, per "
                        "model both ran (written to <out>.md)")
    return p.parse_args(argv)


def run_one(name: str, args, started: float | None = None) -> dict:
    """One model's row; ``started``: time.monotonic() when the worker began (its
    --time_s counts from then: the capacity's compiles come out of it too)."""
    import warnings
    import examples
    import olla_jax

    from olla_jax import batch as batch_lib
    base = examples.make(name, args.size)
    cache = batch_lib.CaptureCache()   # XLA's compiles, shared by the modes and the floor search
    with warnings.catch_warnings():   # XLA's figures (the search's quick compiles, cached)
        warnings.simplefilter("ignore")
        step = batch_lib._step_of(base, 0)
        cpu = batch_lib.Backend.parse("cpu")
        total = (cache.quick_total(step, cpu) if getattr(args, "xla_probes", "quick") == "quick"
                 else cache.xla_total(step, cpu))
    capacity = int(args.capacity_factor * total)
    unit = batch_unit(name, args.size)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = olla_jax.largest_batch(lambda b: examples.make(name, args.size, unit * b),
                                        capacity_bytes=capacity, modes=tuple(args.modes.split(",")),
                                        time_limit_s=args.time_limit_s,
                                        step_time_limit=args.step_time_limit,
                                        search=args.search, cache=cache,
                                        mode_time_s=args.mode_time_s or None,
                                        time_s=time_left(args, started),
                                        reach_time_s=args.reach_time_s or None,
                                        reach_target=args.target,
                                        hints=hints_for(name, args.hints, unit),
                                        quick_xla=getattr(args, "xla_probes", "quick") == "quick",
                                        quick_plans=getattr(args, "plan_probes",
                                                            "quick") == "quick")
    scale = (lambda b: b if b is None else unit * b)
    search_seconds = time.perf_counter() - t0
    reach = None
    xla = report.largest("xla")
    found = report.reach   # the working-set floor's search, run inside (it caps recomputation)
    if found is not None and xla:
        import math
        target = max(xla + 1, math.ceil(args.target * xla))   # in units, as the search counts
        reach = {"batch": scale(found.batch), "smallest_failing": scale(found.smallest_failing),
                 "complete": found.complete, "seconds": found.seconds,
                 "target_batch": scale(target),
                 "points": [{"batch": scale(p.batch), "io": p.io_bytes, "xla_temp": p.xla_temp,
                             "floor_temp": p.floor_temp, "where": p.where}
                            for p in found.points]}
    return {"model": name, "own_batch_total": total, "capacity": capacity, "batch_unit": unit,
            "largest": {m: scale(b) for m, b in report.largest_batches.items()},
            "totals": {r.mode: r.total_bytes for r in report.results},
            "notes": {r.mode: r.note for r in report.results if r.note},
            "complete": {r.mode: r.complete for r in report.results},
            "report_notes": list(report.notes), "reach": reach,
            "search_seconds": search_seconds,
            "probes": [{"mode": p.mode, "batch": scale(p.batch), "total": p.total_bytes, "fits": p.fits,
                        "seconds": p.seconds, "note": p.note} for p in report.probes],
            "seconds": time.perf_counter() - t0}


def hints_for(name: str, paths: str | None, unit: int) -> dict[str, int]:
    """Per mode, ``name``'s complete answer in the first of ``paths`` that has one
    (in the search's units), else the largest lower bound a run cut short found
    (a hint is only probed first: the answer is still the search's own); the
    floor search's as "reach"."""
    import json
    found: dict[str, int] = {}
    bounds: dict[str, int] = {}   # answers cut short: a hint where no run finished the mode
    for path in (paths.split(",") if paths else ()):
        with open(path) as f:
            rows = [r for r in json.load(f)["rows"] if r.get("model") == name and "error" not in r]
        for r in rows:
            done = r.get("complete", {})
            for mode, batch in r.get("largest", {}).items():
                if batch and mode not in found and batch // unit >= 1:
                    if done.get(mode, True):
                        found[mode] = batch // unit
                    else:
                        bounds[mode] = max(bounds.get(mode, 0), batch // unit)
            reach = r.get("reach")
            if reach and reach.get("complete") and reach.get("batch") and "reach" not in found:
                found["reach"] = reach["batch"] // unit
    return {**bounds, **found}


# Seconds kept from --model_timeout_s for the probe running when the search's
# own time ends (a recomputing probe fed back, verified and timed on a loaded machine).
TIMEOUT_MARGIN_S = 240


def time_left(args, started: float | None) -> float | None:
    """--time_s less what the worker has spent already (at least a second: the
    search then reports what it had, lower bounds, instead of nothing); None: no limit."""
    if not args.time_s:
        return None
    spent = time.monotonic() - started if started is not None else 0.0
    return max(args.time_s - spent, 1.0)


def model_time_s(args) -> float:
    """The search's own time per model: --time_s, else --model_timeout_s less the
    margin (the search stops itself and reports lower bounds, before the worker is killed)."""
    if args.time_s:
        return args.time_s
    if args.model_timeout_s:
        return max(args.model_timeout_s - TIMEOUT_MARGIN_S, args.model_timeout_s / 2)
    return 0


def batch_unit(name: str, size: str) -> int:
    """The step the example's batch comes in (grad_accum: its micro-batch count);
    the search then counts in units of it, and batches are reported in samples."""
    import re
    import examples
    try:
        examples.make(name, size, 1)
    except ValueError as err:
        found = re.search(r"multiple of (\d+)", str(err))
        if found:
            return int(found.group(1))
        raise
    return 1


def worker(args) -> None:
    import signal

    def terminated(signum, frame):   # a row that says so, not a worker gone without a word
        raise RuntimeError(f"the worker got signal {signum} (SIGTERM) from outside the benchmark "
                           "(its own time limit kills with SIGKILL); rerun this model")
    signal.signal(signal.SIGTERM, terminated)
    started = time.monotonic()
    common.write_worker_result(args.worker_out, lambda: run_one(args.worker, args, started),
                               lambda msg: {"model": args.worker, "error": msg})


def probe_kinds(rows: list[dict], saved: dict[str, str]) -> tuple[str, str]:
    """(XLA's probes, ours and recomputation's): "quick" or "full", as the runs'
    flags gave them, else as their probes' notes show (a flag left at its
    default is not on the command line), else "full" (runs before the flags)."""
    notes = [(p["mode"], p.get("note", "")) for r in rows for p in r.get("probes", ())]
    seen_xla = any(m == "xla" and n.startswith("figures only") for m, n in notes)
    seen_plans = any(m != "xla" and "figures-only compiles" in n for m, n in notes)
    return (saved.get("xla_probes", "quick" if seen_xla else "full"),
            saved.get("plan_probes", "quick" if seen_plans else "full"))


STOPPED: list[int] = []   # the signal that stopped this run, if one did


def stop_workers(signum, frame) -> None:
    """SIGTERM to the run: its running worker (a child of this process) is
    killed, no further one started, and the run exits through ``private_tmp``'s
    clean-up (the exception raised here can be swallowed where it lands, e.g.
    in a garbage-collection callback: the flag and the kill do not depend on it)."""
    import signal
    STOPPED.append(signum)
    for child in _children():
        try:
            os.kill(child, signal.SIGKILL)
        except OSError:
            pass
    raise SystemExit(128 + signum)


def _children() -> list[int]:
    """This process's children's ids (Linux /proc; none found elsewhere)."""
    me, found = os.getpid(), []
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else ():
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[1]) == me:
                found.append(int(entry))
    return found


@contextlib.contextmanager
def private_tmp():
    """Within: temporary files of this process and of the workers it starts (XLA's
    dump folders, the worker's result file) go to a folder of their own, removed
    on the way out, also where a worker killed at its timeout left some."""
    import shutil
    import tempfile
    folder = tempfile.mkdtemp(prefix="olla_jax_batch_")
    saved_env, saved_dir = os.environ.get("TMPDIR"), tempfile.tempdir
    os.environ["TMPDIR"], tempfile.tempdir = folder, folder
    try:
        yield folder
    finally:
        tempfile.tempdir = saved_dir
        if saved_env is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = saved_env
        shutil.rmtree(folder, ignore_errors=True)


def step_time(row: dict) -> str:
    """The measured step time of the recomputing plan at the recompute answer
    ("no recomputation" when that batch needed none)."""
    import re
    batch = row["largest"].get("recompute")
    if not batch:
        return "-"
    for p in reversed(row["probes"]):   # the confirmation comes after the memory-only probe
        if p["mode"] == "recompute" and p["batch"] == batch:
            found = re.search(r"step time ([0-9.]+) x", p["note"])
            return f"{found.group(1)} x XLA's" if found else "no recomputation"
    return "no recomputation"


def markdown(rows: list[dict], args, meta: dict) -> str:
    modes = args.modes.split(",")
    lines = common.header(f"olla_jax largest batch: cpu, size {args.size}", {
        "capacity": f"{args.capacity_factor:g} x XLA's total at the example's own batch",
        "time limit per plan": f"{args.time_limit_s:g} s",
        "step time limit (recompute)": f"{args.step_time_limit:g} x XLA's at the same batch "
                                       "(measured where a batch the search settled on "
                                       "recomputes: the fed-back executable and XLA's, 30 "
                                       "interleaved calls a side in one process, fastest over "
                                       "fastest; where that is over the limit, two more rounds "
                                       "and the median of the three)",
        "search": args.search + (f", XLA's probes {args.xla_probes}, ours and "
                                 f"recomputation's {getattr(args, 'plan_probes', 'full')}"
                                 if args.search == "predict" else "") + (f"; probed first: each mode's answer in `{args.hints}` and "
                                 "the batch above it" if getattr(args, "hints", None) else ""),
        "load average at start, end": f"{meta['load_start']}; {meta['load_end']}",
        **({"merged by": f"`{meta['rendered']}`"} if meta.get("rendered") else {})},
        command=meta["command"], machine_info=meta["machine"], date=meta["date"])
    reach_on = any(r.get("reach") for r in rows)
    cols = ["model", "capacity MiB"] + [f"{m} batch" for m in modes] + \
        [f"{m}/xla" for m in modes if m != "xla"] + \
        (["step time at recompute batch"] if "recompute" in modes else []) + \
        (["floor batch", "floor/xla"] if reach_on else []) + ["probes", "seconds"]
    body = []
    for r in rows:
        if "error" in r:
            body.append([r["model"], *["-"] * (len(cols) - 2), "ERROR " + r["error"][:150]])
            continue
        xla = r["largest"].get("xla")
        done = r.get("complete", {})
        at_least = {m: "" if done.get(m, True) else ">= " for m in modes}
        ratios = [f"{at_least[m]}{r['largest'][m] / xla:.2f}" if xla and r["largest"].get(m)
                  else "-" for m in modes if m != "xla"]
        reach = r.get("reach")
        floor = []
        if reach_on:
            b = reach and reach.get("batch")
            mark = "" if reach and reach["complete"] else ">= "
            floor = [f"{mark}{b}" if b else "-", f"{mark}{b / xla:.2f}" if b and xla else "-"]
        body.append([r["model"], common.mib(r["capacity"]),
                     *[f"{at_least[m]}{r['largest'][m]}" if r["largest"].get(m) is not None
                       else "-" for m in modes],
                     *ratios, *([step_time(r)] if "recompute" in modes else []), *floor,
                     len(r["probes"]), f"{r['seconds']:.0f}"])
    lines += common.table(cols, body)
    ok = [r for r in rows if "error" not in r and r["largest"].get("xla")]
    for m in modes:
        if m == "xla":
            continue
        ratios = [r["largest"][m] / r["largest"]["xla"] for r in ok if r["largest"].get(m)]
        target = getattr(args, "target", 1.5)
        hit = sum(x >= target for x in ratios)
        if ratios:
            lines.append(f"\n- {m}: batch ratio to XLA's {min(ratios):.2f}-{max(ratios):.2f}, "
                         f"geomean {common.geomean(ratios):.2f}; at least {target:g}x on {hit} "
                         f"of {len(ok)}")
    if reach_on:
        lines += ["", *memory_model(rows, args)]
    if meta.get("missing"):
        lines.append(f"\n- not run (the run ended first): {', '.join(meta['missing'])}")
    held = []
    for r in rows:
        if "error" in r:
            continue
        for m in modes:
            batch = r["largest"].get(m)
            over = [p for p in r["probes"] if p["mode"] == m and not p["fits"]
                    and (batch is None or p["batch"] > batch)]
            if over:
                p = min(over, key=lambda p: p["batch"])
                held.append(f"- {r['model']} {m}: batch {p['batch']}: {common.mib(p['total'])}"
                            + (f"; {p['note']}" if p["note"] else ""))
    if held:
        lines += ["", "What held each batch (the least failing probe above the answer; MiB):",
                  *held]
    notes = [f"- {r['model']} {m}: {n}" for r in rows if "error" not in r
             for m, n in r.get("notes", {}).items()]
    if notes:
        lines += ["", "Notes:", *notes]
    return "\n".join(lines) + "\n"


def memory_model(rows: list[dict], args) -> list[str]:
    """Per example: what is fixed and what grows with the batch, and whether the
    target ratio is out of reach for any plan that runs the step's kernels."""
    target = getattr(args, "target", 1.5)
    lines = [f"Memory model (computed from XLA's compiles; the floor is `budget.working_set_bound`: "
             "the temp one instruction needs for its operands and results, which order, placement "
             "and recomputation by kernel copies all keep; arguments + outputs - aliased are "
             "kept by every plan; larger batches are assumed to need no less, as the search "
             "assumes). Fixed = the line's intercept through the least and the largest batch XLA "
             "fits (parameters, optimizer state); per sample = its slope (the batch's data, "
             "activations):", ""]
    cols = ["model", "xla batch", "capacity MiB", "fixed MiB", "args+outputs per sample",
            "XLA temp per sample", "floor per sample", f"at {target:g} x XLA's batch: "
            "args+outputs + floor, MiB", "verdict"]
    body, out_of_reach, ruled, open_ = [], 0, [], []
    for r in rows:
        reach = r.get("reach") if "error" not in r else None
        xla = r.get("largest", {}).get("xla") if "error" not in r else None
        if not reach or not xla:
            continue
        pts = {p["batch"]: p for p in reach["points"]}
        px, pt = pts.get(xla), pts.get(reach["target_batch"])
        lo = min(pts)
        fixed = slope_io = slope_t = slope_w = None
        if px and lo < xla:
            p0 = pts[lo]
            slope_io = (px["io"] - p0["io"]) / (xla - lo)
            slope_t = (px["xla_temp"] - p0["xla_temp"]) / (xla - lo)
            slope_w = (px["floor_temp"] - p0["floor_temp"]) / (xla - lo)
            fixed = px["io"] - slope_io * xla
        need = pt["io"] + pt["floor_temp"] if pt else None
        recompute = r["largest"].get("recompute") or r["largest"].get("olla") or xla
        reached = recompute / xla >= target
        if need is None:
            verdict = "floor at the target batch not computed (time ran out)"
        elif need > r["capacity"]:
            out_of_reach += 1
            what = ("the arguments + outputs alone exceed the capacity" if pt["io"] > r["capacity"]
                    else f"args+outputs {common.mib(pt['io'])} MiB and {pt['where']} alone "
                    f"{common.mib(pt['floor_temp'])} MiB of temp")
            verdict = (f"out of reach for any plan of these kernels: at batch "
                       f"{reach['target_batch']} {what}")
            ruled.append(r["model"])
        else:
            verdict = (("reached" if reached else "not ruled out by the floor")
                       + f" (floor fits up to batch {'>= ' if not reach['complete'] else ''}"
                       f"{reach['batch']}, {reach['batch'] / xla:.2f} x)")
            if not reached:
                open_.append(r["model"])
        fmt = (lambda x: "-" if x is None else f"{x / 2**10:,.1f} KiB")
        body.append([r["model"], xla, common.mib(r["capacity"]), common.mib(fixed) if fixed is not None
                     else "-", fmt(slope_io), fmt(slope_t), fmt(slope_w),
                     common.mib(need) if need is not None else "-", verdict])
    lines += common.table(cols, body)
    lines.append(f"\n- {target:g} x XLA's batch out of reach for any plan of these kernels on "
                 f"{out_of_reach} of {len(body)}" + (f" ({', '.join(ruled)})" if ruled else "")
                 + (f"; not reached and not ruled out by the floor: {', '.join(open_)}"
                    if open_ else ""))
    return lines


def compare(args) -> None:
    """Two runs side by side (e.g. --search=bisect and --search=predict)."""
    import json
    runs = []
    for path in args.compare.split(","):
        with open(path) as f:
            runs.append((path, json.load(f)))
    (before_path, before), (after_path, after) = runs
    rows_after = {r["model"]: r for r in after["rows"] if "error" not in r}
    lines = [f"# largest batch: two searches compared", "",
             f"- command: `{common.command_line()}`",
             *[f"- {label}: `{path}`: `{run['meta']['command']}`, {run['meta']['date']}, load "
               f"{run['meta']['load_start']}; {run['meta'].get('load_end', '-')}"
               for label, (path, run) in zip(("before", "after"), runs)], "",
             "| model | before: probes | before: seconds | after: probes | after: seconds | "
             "seconds after/before | before: xla, olla, recompute | after: xla, olla, recompute |",
             "|---|---:|---:|---:|---:|---:|---|---|"]
    for r in before["rows"]:
        a = rows_after.get(r["model"])
        if "error" in r or a is None:
            continue
        answers = [", ".join(str(x["largest"].get(m)) for m in ("xla", "olla", "recompute"))
                   for x in (r, a)]
        lines.append(f"| {r['model']} | {len(r['probes'])} | {r['seconds']:.0f} | "
                     f"{len(a['probes'])} | {a['seconds']:.0f} | "
                     f"{a['seconds'] / r['seconds']:.2f} | {answers[0]} | {answers[1]} |")
    text = "\n".join(lines) + "\n"
    with open(args.out + ".md", "w") as f:
        f.write(text)
    print(text)


def main(argv=None) -> None:
    args = parse_args(argv)
    common.gpu_environment("cpu")
    if args.compare:
        return compare(args)
    if args.render:
        import json
        runs = []
        for path in args.render.split(","):
            with open(path) as f:
                runs.append(json.load(f))
        done = runs[0]
        meta, rows = dict(done["meta"]), list(done["rows"])
        for other in runs[1:]:   # more runs of the same settings: their models join the table
            have = {r["model"] for r in rows if "error" not in r}
            again = [r for r in other["rows"] if r["model"] not in have]
            redone = {r["model"] for r in again if "error" not in r}
            listed = {r["model"] for r in rows}
            rows = [r for r in rows if r["model"] not in redone] + [   # a rerun replaces an error
                r for r in again if "error" not in r or r["model"] not in listed]
            meta["command"] += f"`; `{other['meta']['command']}"
            meta["load_start"] += f" (and {other['meta']['load_start']})"
            meta["load_end"] = f"{meta.get('load_end', '-')} (and {other['meta'].get('load_end', '-')})"
        ran = {r["model"] for r in rows}
        meta["missing"] = [m for run in runs for m in run["meta"].get("missing", [])
                           if m not in ran]
        meta["missing"] = list(dict.fromkeys(meta["missing"]))
        meta["rendered"] = common.command_line()
        done = {"meta": meta, "rows": rows}
        saved = dict(arg.lstrip("-").split("=", 1) for arg in meta["command"].split()
                     if arg.startswith("--") and "=" in arg)
        for key in ("size", "modes", "search"):
            setattr(args, key, saved.get(key, getattr(args, key)))
        args.xla_probes, args.plan_probes = probe_kinds(rows, saved)
        for key in ("capacity_factor", "time_limit_s", "step_time_limit", "target"):
            setattr(args, key, float(saved.get(key, getattr(args, key))))
        out = args.out if "," in args.render else args.render[:-len(".json")]
        common.write_results(out, done, markdown(rows, args, meta))
        return None
    if args.worker:
        return worker(args)
    import signal
    signal.signal(signal.SIGTERM, stop_workers)
    meta = common.run_meta()
    rows = []
    names = common.model_names(args.models)
    flags = [*common.forward(args, "size", "modes", "mode_time_s", "reach_time_s", "hints",
                             "target", "capacity_factor", "time_limit_s", "step_time_limit",
                             "search", "xla_probes", "plan_probes"),
             f"--time_s={model_time_s(args)}"]
    for i, name in enumerate(names):
        if STOPPED:
            break
        with private_tmp():
            row = common.run_worker("benchmarks.batch", name, flags,
                                    lambda message: {"model": name, "error": message},
                                    timeout_s=args.model_timeout_s or None)
        rows.append(row)
        print(name, row.get("largest", row.get("error")), f"{row.get('seconds', 0):.0f} s",
              flush=True)
        # Written after each model: a run cut short keeps what it finished.
        meta["load_end"] = common.load()
        meta["missing"] = names[i + 1:]
        text = markdown(rows, args, meta)
        common.write_results(args.out, {"meta": meta, "rows": rows}, text)
    print(text)


if __name__ == "__main__":
    main()
