"""Our recomputation vs XLA's rematerialization on a compile-only GPU target.

    python -m benchmarks.gpu_budget --target=h100 --models=mlp:small,vit:tiny \
        --limits=0.8,0.5 --out=benchmarks/results/gpu_budget_h100

Per example: our order and placement (``olla_jax.plan``), then XLA:GPU's
rematerialization compiled under a forced memory limit at each of ``--limits``
x XLA's own temp (``olla_jax.xla_remat.search``; the points are cached in
``--cache`` by jax version, example, target and limit, so a rerun compiles
only what is new).  XLA's points that lower its temp make a front (temp,
extra FLOPs); for each of the ``--points`` kept (the least temp and the
fewest FLOPs) ours is asked for the same temp and, when that does not meet
the target, for 0.85 x it (``budget.recompute_to_budget``: kernel thunks
copied in the GPU executable, checked by the independent checker, built and
decoded again; not run, no GPU here).  The issue's target per XLA point:
ours reaches its temp with at most half its extra FLOPs, or 0.85 x its temp
with at most its extra FLOPs (``olla_jax.gpu_budget.against_xla``).  FLOPs
come from the HLO (``olla_jax.flops``); compile-only: no step time.
``--recompute_cost=time,flops`` asks ours once per cost the search may
minimise (``olla_jax.budget.candidates.copy_cost``), each its own rows.
With ``--remat_planned=1`` (the default) each of XLA's points below its temp
is also compiled again for a device description of its limit and planned by
``olla_jax.plan`` (order and placement on XLA's rematerialized program, with
``--time_limit_s``, like ours):
``gpu_budget.to_budget``'s third side, set against XLA's points on the same
terms (at XLA's FLOPs there, it meets a point at <= 0.85 x its temp, or a
point with twice its FLOPs or more at its temp).  Here each side has its own
limit; in ``plan`` they share one.
With ``--offload=1``, at each XLA point compared (temp M), host offloading
too, beside ours without it: the lever alone (``olla_jax.offload.offload``
asked for a device temp of M: the longest-idle values parked in host memory,
XLA's order and placement; its extra FLOPs: XLA's offloaded program's less the
step's, the readers computed again from a copy back), then ``plan(..., offload=True)``'s
side on that lever (``gpu_budget.offload_side``: the offloaded step ordered
and placed by us, recomputed by us on top when still over, with its own
``--time_limit_s``), each with its host temp and the bytes copied each way.
Offloading meeting a point is not recomputation meeting it: copies over PCIe
instead of FLOPs, whose time nothing here measures (compile-only).
With ``--program_remat=1``, at each XLA point compared (temp M), program
recomputation too: ``gpu_budget.program_side`` asked for M (then 0.85 M when
that misses): the step's jaxpr rewritten by ``olla_jax.program_remat`` (its
compiles kept across the example's points), its bits compared on CPU
(``program_remat.BitCheck``), ordered and placed by ``olla_jax.plan`` with
``--time_limit_s``; its extra FLOPs the compiled rewrite's less the step's.
The summary counts the XLA points each lever meets and those any lever meets.
``--render=a.json,b.json,... --out=merged``: finished runs (same settings,
models aside; a suite run in parts) rendered as one, each run's command, date
and load in the header.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
import warnings
from typing import Callable

from benchmarks import common


def _cache_load(path: str) -> dict:
    if path and os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    return {}


def _cache_save(path: str, cache: dict) -> None:
    """``cache`` merged into the file (another run may have added to it since)."""
    if path:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        merged = {**_cache_load(path), **cache}
        with open(path + ".tmp", "w") as f:
            json.dump(merged, f, indent=1, sort_keys=True)
        os.replace(path + ".tmp", path)


def xla_points(step, item: str, base, args, cache: dict) -> tuple[list[dict], int]:
    """XLA's remat at each limit (temp, total, whole-step FLOPs), from ``cache``
    or compiled; and how many were compiled now."""
    import jax
    from olla_jax import xla_remat
    limits = {f: int(f * base.xla_temp_bytes) for f in args.limits}
    # cuBLAS calls' FLOPs were counted with k = 1 before olla_jax.flops read
    # their config payloads: points of such steps cached before are stale
    tag = "|cublas-flops" if _has_cublas(base.capture) else ""
    key = {f: f"{jax.__version__}|{item}|{args.target}|{limit}{tag}"
           for f, limit in limits.items()}
    missing = [f for f in args.limits if key[f] not in cache]
    if not args.limits:
        return [], 0
    if missing:
        found = xla_remat.search(step.fn, *step.args, backend=f"gpu:{args.target}",
                                 budget_bytes=base.xla_temp_bytes, fractions=missing,
                                 static_argnums=step.static_argnums,
                                 donate_argnums=step.donate_argnums,
                                 io_bytes=base.argument_bytes + base.output_bytes)
        by_limit = {p.limit_bytes: p for p in found}
        for f in missing:
            p = by_limit.get(int(f * base.xla_temp_bytes))
            cache[key[f]] = None if p is None else {
                "limit": p.limit_bytes, "temp": p.memory.temp, "total": p.total, "flops": p.flops,
                "remat": xla_recomputed(p.compiled)}
    return [dict(cache[key[f]], fraction=f) for f in args.limits if cache[key[f]]], len(missing)


def xla_recomputed(compiled) -> str:
    """What XLA's rematerialization copied in ``compiled``'s entry: its
    clones are named ``<instruction>.remat<n>``; those that run a kernel
    (not bitcasts, tuples' elements) counted by kind, and how many have
    several results."""
    from collections import Counter
    import re
    counts, multi = Counter(), 0
    for line in compiled.as_text().splitlines():
        m = re.match(r"\s*(?:ROOT )?%(\S+) = (\(.*?\)|\S+) ([a-z-]+)\(", line)
        if not m or ".remat" not in m.group(1) or m.group(3) in ("bitcast", "get-tuple-element",
                                                                 "tuple"):
            continue
        kind = re.search(r"kind=(k\w+)", line)
        target = re.search(r'custom_call_target="([^"]+)"', line)
        counts[m.group(3) + (f" {kind.group(1)}" if kind else "")
               + (f" {target.group(1)}" if target else "")] += 1
        multi += m.group(2).startswith("(")
    if not counts:
        return "nothing"
    return (f"{sum(counts.values())} ({', '.join(f'{k} x{c}' for k, c in counts.most_common())}"
            f"; {multi} with several results)")


def _has_cublas(cap) -> bool:
    """Whether ``cap``'s module calls cuBLAS (a GEMM custom-call)."""
    from olla_jax import dumps
    try:
        module = dumps.parse_hlo_proto(cap.hlo_proto).hlo_module
    except Exception:  # noqa: BLE001 - unknown: treat as stale
        return True
    return any(i.opcode == "custom-call" and "cublas" in i.custom_call_target
               for c in module.computations for i in c.instructions)


def remat_planned(step, base, points: list[dict], args, step_flops: int) -> list[dict]:
    """Each of XLA's ``points`` below its own temp, its rematerialized program
    compiled again for a device description of its limit
    (``xla_remat.target_file``) and planned by ``olla_jax.plan`` (order and
    placement, checked, built and decoded again; no recomputation of ours):
    XLA's temp there, ours, and the extra FLOPs counted on the program planned
    (``olla_jax.gpu_budget.remat_planned`` is this side in ``plan``)."""
    import tempfile
    import olla_jax
    from olla_jax import budget, xla_remat
    io = base.argument_bytes + base.output_bytes
    got, seen = [], set()
    with tempfile.TemporaryDirectory(prefix="olla_jax_bench_remat_") as folder:
        for p in points:
            if p["temp"] >= base.xla_temp_bytes or (p["temp"], p["flops"]) in seen:
                continue
            seen.add((p["temp"], p["flops"]))
            t = time.monotonic()
            path = xla_remat.target_file(args.target, p["limit"], io, folder)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                res = olla_jax.plan(step.fn, *step.args, backend=f"gpu:{path}",
                                    time_limit_s=args.time_limit_s,
                                    static_argnums=step.static_argnums,
                                    donate_argnums=step.donate_argnums)
            ours = res.source == "olla_jax"
            got.append({"fraction": p["fraction"], "limit": p["limit"], "xla_point_temp": p["temp"],
                        "xla_temp": res.xla_best_temp_bytes, "temp": res.runs_temp_bytes,
                        "flops": max(0, budget.step_flops(res.capture) - step_flops),
                        "point_flops": max(0, p["flops"] - step_flops),
                        "ours": ours, "built": not ours or res.executable_bytes is not None,
                        "note": res.notes[-1] if res.notes else "",
                        "solve_s": round(res.solve_seconds, 1),
                        "seconds": round(time.monotonic() - t, 1)})
    return got


def _best_planned(planned: list[dict], xla_temp: int, xla_flops: int):
    """The planned point that meets the target against XLA's (temp, FLOPs)
    point, else the least temp at no more FLOPs; with its Verdict."""
    from olla_jax import gpu_budget
    ranked = []
    for q in planned:
        v = gpu_budget.against_xla(q["temp"], q["flops"], xla_temp, xla_flops)
        ranked.append((not v.met, q["flops"] > xla_flops, q["temp"], q["flops"], id(q), q, v))
    if not ranked:
        return None, None
    best = min(ranked)
    return best[-2], best[-1]


def offload_at(step, base, temp: int, args, cost: str) -> dict:
    """Host offloading asked for a device temp of ``temp``: the lever alone
    (XLA's order and placement), and ``plan(..., offload=True)``'s side on it
    (ordered and placed by us, recomputed by us on top); bytes moved each way."""
    from olla_jax import gpu_budget, offload
    t = time.monotonic()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            lever = offload.offload(step.fn, *step.args, backend=base.backend, budget=temp,
                                    static_argnums=step.static_argnums,
                                    donate_argnums=step.donate_argnums)
        except offload.OffloadError as err:
            return {"budget_temp": temp, "error": str(err),
                    "seconds": round(time.monotonic() - t, 1)}
    tr = lever.transfers
    got = {"budget_temp": temp, "cost": cost, "lever": {
        "temp": lever.temp, "xla_temp": lever.xla_temp, "values": len(lever.chosen),
        "parked": [c.name for c in lever.chosen], "host_temp": lever.host_temp,
        "to_host": tr.to_host, "to_host_bytes": tr.to_host_bytes, "to_device": tr.to_device,
        "to_device_bytes": tr.to_device_bytes, "tried": [list(x) for x in lever.tried],
        "compiler_options": dict(getattr(lever, "compiler_options", None) or {}),
        "options_temp": getattr(lever, "options_temp", None),
        "flops": lever.extra_flops, "flops_delta": lever.flops_delta,
        "seconds": round(time.monotonic() - t, 1)}}

    plan_offloaded = planner_of(step, base)
    t = time.monotonic()
    fixed = base.runs_total_bytes - base.runs_temp_bytes
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        side, seconds, note = gpu_budget.offload_side(
            base, fixed + temp, step.fn, step.args, plan_offloaded,
            static_argnums=step.static_argnums, donate_argnums=step.donate_argnums,
            time_limit_s=args.time_limit_s, recompute_cost=cost, lever=lever)
    planner_s = seconds.get("solve", 0.0) + seconds.get("verify", 0.0)
    got["side"] = None if side is None else {
        "temp": side.plan.runs_temp_bytes, "flops": side.plan.extra_flops or 0,
        "engine": side.plan.engine, "host_temp": side.plan.settings.get("host_temp_bytes"),
        "note": side.plan.notes[-1]}
    got["side_note"] = note
    got["planner_s"] = round(planner_s, 1)
    # plan()'s rule: the planner's part within 1.1 x its limit
    got["limit_kept"] = planner_s <= 1.1 * args.time_limit_s
    got["side_seconds"] = round(time.monotonic() - t, 1)
    return got


def planner_of(step, base):
    """``(fn, limit_s, compiler_options) -> Plan``: a rewrite of ``step``'s function
    (offloaded, or recomputed in the program) planned on ``step``'s arguments for
    ``base``'s target, warnings quiet: the callback the GPU budget's sides take."""
    import olla_jax

    def plan_rewrite(fn, limit_s: float, compiler_options=None):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return olla_jax.plan(fn, *step.args, backend=base.backend, time_limit_s=limit_s,
                                 static_argnums=step.static_argnums,
                                 donate_argnums=step.donate_argnums,
                                 compiler_options=compiler_options)
    return plan_rewrite


def base_plan(item: str, args):
    """The example ``item`` ("name:size") and its plan (no budget) for the
    compile-only ``args.target``, with ``args.plan_time_limit_s``."""
    import examples
    import olla_jax
    name, size = item.split(":")
    step = examples.get(name, size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        base = olla_jax.plan(step.fn, *step.args, backend=f"gpu:{args.target}",
                             time_limit_s=args.plan_time_limit_s,
                             static_argnums=step.static_argnums, donate_argnums=step.donate_argnums)
    return step, base


def program_at(step, base, temp: int, args, memo: dict) -> dict:
    """``gpu_budget.program_side`` asked for a temp of ``temp`` (the whole
    footprint less the step's arguments and outputs): the side's temp, extra
    FLOPs, values, bits and seconds (``capture_s``: program_remat's compiles and
    bit checks; ``planner_s``: our planning of the rewritten step, ``solve_s`` its
    planner's part, what the time limit bounds, ``verify_s`` its check, build and
    read-back, which plan() puts on top of the limit)."""
    from olla_jax import gpu_budget

    plan_step = planner_of(step, base)
    t = time.monotonic()
    fixed = base.runs_total_bytes - base.runs_temp_bytes
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        side, seconds, note = gpu_budget.program_side(
            base, fixed + temp, step.fn, step.args, plan_step,
            static_argnums=step.static_argnums, donate_argnums=step.donate_argnums,
            time_limit_s=args.time_limit_s, memo=memo)
    got = {"budget_temp": temp, "note": note, "capture_s": round(seconds["capture"], 1),
           "planner_s": round(seconds["solve"] + seconds["verify"], 1),
           "solve_s": round(seconds["solve"], 1), "verify_s": round(seconds["verify"], 1)}
    if side is not None:
        got.update(temp=side.plan.runs_temp_bytes, flops=side.plan.extra_flops or 0,
                   values=side.plan.settings.get("program_remat_values"),
                   bits=side.plan.settings.get("program_remat_bits"),
                   engine=side.plan.engine, note=side.plan.notes[-1])
    got["seconds"] = round(time.monotonic() - t, 1)
    return got


def run_one(item: str, args, cache: dict) -> dict:
    from olla_jax import budget, gpu_budget

    t0 = time.monotonic()
    step, base = base_plan(item, args)
    t1 = time.monotonic()
    step_flops = budget.step_flops(base.capture)
    points, compiled = xla_points(step, item, base, args, cache)
    t2 = time.monotonic()
    row = {"example": item, "xla_temp": base.xla_temp_bytes, "plan_temp": base.runs_temp_bytes,
           "step_flops": step_flops, "xla_points": points, "xla_compiled": compiled,
           "plan_s": round(t1 - t0, 1), "xla_s": round(t2 - t1, 1), "comparisons": []}
    lower = [(p["temp"], max(0, p["flops"] - step_flops)) for p in points
             if p["temp"] < base.xla_temp_bytes]
    front = gpu_budget.front(lower)
    chosen = front[:1] + front[-1:] if args.points > 1 and len(front) > 1 else front[:1]
    fixed = base.runs_total_bytes - base.runs_temp_bytes
    ours_cache: dict[tuple[int, str], dict] = {}

    def ours_at(temp: int, cost: str) -> dict:
        if (temp, cost) in ours_cache:
            return ours_cache[temp, cost]
        t = time.monotonic()
        if base.runs_temp_bytes <= temp:
            got = {"temp": base.runs_temp_bytes, "flops": 0, "recomputed": 0,
                   "note": "order and placement alone", "built": True}
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                res = budget.recompute_to_budget(
                    base, fixed + temp, measure_time=False, recompute_cost=cost,
                    time_limit_s=args.time_limit_s)
            note = res.notes[-1] if res.notes else ""
            got = {"temp": res.runs_temp_bytes, "flops": res.extra_flops or 0,
                   "recomputed": len(res.recomputed or ()), "note": note,
                   "recomputed_names": list(res.recomputed or ()),
                   # a recomputing plan is kept only once checked, built and decoded again
                   "built": not res.recomputed or res.executable_bytes is not None}
        got["budget_temp"], got["seconds"] = temp, round(time.monotonic() - t, 1)
        got["cost"] = cost
        ours_cache[temp, cost] = got
        return got

    program_memo: dict = {"at": {}}
    t3 = time.monotonic()
    planned = remat_planned(step, base, points, args, step_flops) if args.remat_planned else []
    row["remat_planned"], row["remat_planned_s"] = planned, round(time.monotonic() - t3, 1)
    for cost in args.recompute_cost:
        for xla_temp, xla_flops in chosen:
            tries = [ours_at(xla_temp, cost)]
            verdict = gpu_budget.against_xla(tries[0]["temp"], tries[0]["flops"], xla_temp,
                                             xla_flops)
            if not verdict.met:
                tries.append(ours_at(int(gpu_budget.MEMORY_SHARE * xla_temp), cost))
                second = gpu_budget.against_xla(tries[1]["temp"], tries[1]["flops"], xla_temp,
                                                xla_flops)
                if second.met:
                    verdict = second
            q, v = _best_planned(planned, xla_temp, xla_flops)
            off = None
            if args.offload:
                off = offload_at(step, base, xla_temp, args, cost)
                for part in ("lever", "side"):
                    if off.get(part):
                        w = gpu_budget.against_xla(off[part]["temp"], off[part]["flops"],
                                                   xla_temp, xla_flops)
                        off[part]["met"], off[part]["how"] = w.met, w.how
                print(json.dumps({"example": item, "xla_temp": xla_temp, "offload": off})[:1500],
                      flush=True)
            prog = None
            if args.program_remat:
                prog = []
                for temp in (xla_temp, int(gpu_budget.MEMORY_SHARE * xla_temp)):
                    got = program_memo["at"].get(temp) or program_at(step, base, temp, args,
                                                                     program_memo)
                    program_memo["at"][temp] = got
                    if "temp" in got:
                        w = gpu_budget.against_xla(got["temp"], got["flops"], xla_temp, xla_flops)
                        got = dict(got, met=w.met, how=w.how)
                    else:
                        got = dict(got, met=False, how="no side: " + got["note"])
                    prog.append(got)
                    print(json.dumps({"example": item, "xla_temp": xla_temp,
                                      "program_remat": got})[:1500], flush=True)
                    if got["met"]:
                        break
            row["comparisons"].append({"xla_remat_temp": xla_temp, "xla_remat_flops": xla_flops,
                                       "cost": cost, "ours": tries, "met": verdict.met,
                                       "offload": off, "program_remat": prog,
                                       "how": verdict.how, "planned": q,
                                       "met_planned": bool(v and v.met),
                                       "how_planned": v.how if v else "no point planned"})
    row["shares"] = []
    for cost in args.recompute_cost:
        for s in args.of_xla_temp:
            got = ours_at(int(s * base.xla_temp_bytes), cost)
            row["shares"].append({"share": s, "cost": cost, "ours": got,
                                  "met": got["temp"] <= s * base.xla_temp_bytes})
    row["ours_s"] = round(time.monotonic() - t2 - row["remat_planned_s"], 1)
    return row


def kinds(names) -> str:
    """Recomputed producers counted by name (XLA's, the digits after the
    first dot dropped), the most frequent first."""
    from collections import Counter
    counts = Counter(n.split(".")[0] for n in names)
    return ", ".join(f"{k} x{c}" for k, c in counts.most_common())


def share(flops: int, total: int) -> str:
    return f"{flops:,} ({100 * flops / total:.2f}%)" if total else f"{flops:,}"


def render(rows: list[dict], args, loads: tuple[str, str], parts: list[str] | None = None) -> str:
    """The markdown of one run; ``parts`` (a merged render, ``--render``): one line
    per run merged (its command, date and load), in place of this run's load."""
    extra = ({f"part {i}": part for i, part in enumerate(parts, 1)} if parts else
             {"load average at start / end (1/5/15 min; 2 cores shared by several helpers)":
              f"{loads[0]} ; {loads[1]}"})
    lines = common.header(
        f"Our recomputation vs XLA's rematerialization, compile-only {args.target}",
        {**extra,
         "XLA's limits": ", ".join(f"{f:g}" for f in args.limits) + " x XLA's own temp",
         "our time limit per budget": f"{args.time_limit_s:g} s (plan {args.plan_time_limit_s:g} s)"})
    lines += ["Temps in MiB; extra FLOPs with their share of the step's. Target per XLA point "
              "(temp M, extra FLOPs F): ours reaches M with <= 0.5 F, or 0.85 M with <= F. Ours "
              "is asked for M, then (when that misses) 0.85 M; each recomputing plan passed the "
              "independent checker and its rewritten executable was built and decoded again "
              "(not run: no GPU here).", ""]
    table = []
    for r in rows:
        if "error" in r:
            table.append([r["example"], f"error: {r['error']}"] + [""] * 8)
            continue
        if not r["comparisons"]:
            table.append([r["example"], common.mib(r["xla_temp"]), common.mib(r["plan_temp"]),
                          "no lower point" if args.limits else "not compiled (--limits=)",
                          "", "", "", "", "n/a", f"{r['plan_s']} / {r['xla_s']} / -"])
        for c in r["comparisons"]:
            at = c["ours"]
            table.append([
                r["example"], common.mib(r["xla_temp"]), common.mib(r["plan_temp"]),
                f"{common.mib(c['xla_remat_temp'])} at {share(c['xla_remat_flops'], r['step_flops'])}",
                c.get("cost", "time"),
                f"{common.mib(at[0]['temp'])} at {share(at[0]['flops'], r['step_flops'])}",
                (f"{common.mib(at[1]['temp'])} at {share(at[1]['flops'], r['step_flops'])}"
                 if len(at) > 1 else "-"),
                "yes" if c["met"] else "no", c["how"],
                f"{r['plan_s']} / {r['xla_s']} / {sum(t['seconds'] for t in at):.1f}"])
    lines += common.table(["example", "XLA temp", "our plan", "XLA remat point", "our cost",
                           "ours at its temp", "ours at 0.85 x", "met", "how",
                           "seconds plan / XLA / ours"], table, right={1, 2, 3, 5, 6})
    lines.append("")
    for cost in args.recompute_cost:
        comps = [(r, c) for r in rows for c in r.get("comparisons", ()) if c.get("cost") == cost]
        met = [c["met"] for _, c in comps]
        examples = {r["example"]: r for r, _ in comps}
        every = sum(1 for r in examples.values()
                    if all(c["met"] for c in r["comparisons"] if c.get("cost") == cost))
        lines.append(f"Target met with recompute_cost={cost!r} at {sum(met)} of {len(met)} XLA "
                     f"points ({every} of {len(examples)} examples at every point).")
        if args.remat_planned:
            by_plan = [c["met_planned"] for _, c in comps]
            either = [c["met"] or c["met_planned"] for _, c in comps]
            lines.append(f"  XLA's rematerialized programs planned by us meet it at {sum(by_plan)} "
                         f"of {len(by_plan)}; ours or them (gpu_budget.to_budget's sides) at "
                         f"{sum(either)} of {len(either)}.")
    if len(args.recompute_cost) > 1:
        points = {(r["example"], c["xla_remat_temp"], c["xla_remat_flops"]): False
                  for r in rows for c in r.get("comparisons", ())}
        for r in rows:
            for c in r.get("comparisons", ()):
                points[r["example"], c["xla_remat_temp"], c["xla_remat_flops"]] |= c["met"]
        lines.append(f"Met by either cost at {sum(points.values())} of {len(points)} XLA points.")
    lines += levers_met(rows, args)
    planned_rows = [(r, c) for r in rows for c in r.get("comparisons", ())]
    if args.remat_planned and planned_rows:
        lines += ["", "XLA's rematerialized programs planned by us (order and placement on the "
                      "program XLA compiles under a point's limit, compiled again for a device "
                      "description of that limit; checked, built and decoded again, not run), "
                      "the best one against each XLA point:", ""]
        table = []
        for r, c in planned_rows:
            q = c.get("planned")
            table.append([
                r["example"],
                f"{common.mib(c['xla_remat_temp'])} at {share(c['xla_remat_flops'], r['step_flops'])}",
                c.get("cost", "time"),
                (f"{q['fraction']:g}: {common.mib(q['xla_temp'])} -> {common.mib(q['temp'])} at "
                 f"{share(q['flops'], r['step_flops'])}" if q else "-"),
                "yes" if c["met_planned"] else "no", c["how_planned"],
                "yes" if c["met"] or c["met_planned"] else "no"])
        lines += common.table(["example", "XLA remat point", "our cost",
                               "planned point (limit: XLA temp -> ours at extra FLOPs)", "met",
                               "how", "met by ours or planned"], table, right={1, 3})
        lines += ["", "Planned points (limit x XLA's temp: XLA's temp there -> ours; seconds; "
                      "note):"]
        for r in rows:
            for q in r.get("remat_planned", ()):
                lines.append(f"- {r['example']} {q['fraction']:g}: {common.mib(q['xla_temp'])} -> "
                             f"{common.mib(q['temp'])} MiB at {share(q['flops'], r['step_flops'])}"
                             + ("" if q["built"] else " (NOT built)")
                             + f" ({q['solve_s']} s planner, {q['seconds']} s in all): {q['note']}")
    if args.offload:
        lines += render_offload(rows)
    if getattr(args, "program_remat", 0):
        lines += render_program(rows, args)
    lines += ["", "XLA's points (limit x its temp: temp MiB, extra FLOPs; 'cached': not compiled "
                  "in this run):"]
    for r in rows:
        if "error" in r:
            continue
        pts = "; ".join(f"{p['fraction']:g}: {common.mib(p['temp'])}, "
                        f"{max(0, p['flops'] - r['step_flops']):,}"
                        + (f", recomputes {p['remat']}" if p.get("remat") else "")
                        for p in r["xla_points"])
        cached = len(args.limits) - r["xla_compiled"]
        lines.append(f"- {r['example']}: {pts or 'none compiled'}"
                     + (f" ({cached} cached)" if cached else ""))
    shares = [(r, x) for r in rows for x in r.get("shares", ())]
    if shares:
        lines += ["", "Ours alone at a share of XLA's own temp (met: our temp within it):", ""]
        lines += common.table(
            ["example", "XLA temp", "our plan", "share", "our cost", "ours: temp",
             "ours: extra FLOPs", "met", "seconds plan / ours"],
            [[r["example"], common.mib(r["xla_temp"]), common.mib(r["plan_temp"]), f"{x['share']:g}",
              x.get("cost", "time"),
              common.mib(x["ours"]["temp"]), share(x["ours"]["flops"], r["step_flops"]),
              "yes" if x["met"] else "no", f"{r['plan_s']} / {x['ours']['seconds']}"]
             for r, x in shares], right={1, 2, 5, 6})
    asked_s = [t["seconds"] for r in rows for c in r.get("comparisons", ()) for t in c["ours"]]
    asked_s += [x["ours"]["seconds"] for r in rows for x in r.get("shares", ())]
    if asked_s:
        lines += ["", f"Ours per budget (search, check, rewrite, build and read back): at most "
                      f"{max(asked_s):.1f} s for a {args.time_limit_s:g} s limit "
                      f"({max(asked_s) / args.time_limit_s:.2f} x; {len(asked_s)} budgets)."]
    lines += ["", "Ours, per budget asked:"]
    for r in rows:
        asked = [t for c in r.get("comparisons", ()) for t in c["ours"]]
        asked += [x["ours"] for x in r.get("shares", ())]
        for t in {(t["budget_temp"], t.get("cost")): t for t in asked}.values():   # (once each)
            lines.append(f"- {r['example']} at {common.mib(t['budget_temp'])} MiB "
                         f"(recompute_cost={t.get('cost', 'time')!r}): "
                         f"{t['note']} ({t['seconds']} s)"
                         + (f"; copies of: {kinds(t['recomputed_names'])}"
                            if t.get("recomputed_names") else ""))
    return "\n".join(lines) + "\n"


def levers_met(rows: list[dict], args) -> list[str]:
    """Per XLA point (an example's temp and extra FLOPs, whatever the cost asked),
    the levers of this run that meet it, counted per lever and by any of them,
    and the points no lever meets."""
    levers = ["recomputation"]
    levers += ["XLA's program planned by us"] if args.remat_planned else []
    levers += ["host offloading (lever or side)"] if getattr(args, "offload", 0) else []
    levers += ["program recomputation"] if getattr(args, "program_remat", 0) else []
    points: dict[tuple, set] = {}
    for r in rows:
        for c in r.get("comparisons", ()):
            by = points.setdefault((r["example"], c["xla_remat_temp"], c["xla_remat_flops"]), set())
            off = c.get("offload") or {}
            by |= {name for name, ok in (
                ("recomputation", c["met"]),
                ("XLA's program planned by us", c.get("met_planned")),
                ("host offloading (lever or side)",
                 any((off.get(part) or {}).get("met") for part in ("lever", "side"))),
                ("program recomputation",
                 any(g.get("met") for g in c.get("program_remat") or ()))) if ok}
    if not points:
        return []
    n = len(points)
    per = "; ".join(f"{name} {sum(name in by for by in points.values())}" for name in levers)
    missed = [f"{ex} at {common.mib(t)} MiB" for (ex, t, _), by in points.items() if not by]
    failed = [r["example"] for r in rows if "error" in r]
    return [f"Per lever, of {n} XLA points: {per}. Met by any lever at "
            f"{sum(bool(by) for by in points.values())} of {n} XLA points"
            + ("; missed by every lever: " + ", ".join(missed) if missed else "")
            + (" (examples with an error, no points counted: " + ", ".join(failed) + ")"
               if failed else "") + "."]


def render_program(rows: list[dict], args) -> list[str]:
    """The program recomputation rows (``--program_remat=1``) and, per XLA point,
    which sides meet it."""
    lines = ["", "Program recomputation at the same XLA points (gpu_budget.program_side: the "
                 "step's jaxpr rewritten by olla_jax.program_remat for XLA's temp M, then 0.85 M "
                 "when that misses; bits compared on CPU with XLA's CSE off, against jax.jit's "
                 "compile or, where the step's own CSE-off compile differs from it, against that "
                 "compile; ordered and placed by olla_jax.plan with the time limit; checked, "
                 "built and decoded again, not run). Extra FLOPs: the compiled rewrite's less "
                 "the step's. Seconds: program_remat's compiles and bit checks / our planning "
                 "(the compiles are shared by an example's points): its planner's part, what "
                 "the time limit bounds, + the check, build and read-back, which plan() puts "
                 "on top of it.", ""]
    table = []
    for r in rows:
        for c in r.get("comparisons", ()):
            for g in c.get("program_remat") or ():
                got = (f"{common.mib(g['temp'])} at {share(g['flops'], r['step_flops'])} "
                       f"({g['values']} values)" if "temp" in g else "none")
                off = c.get("offload") or {}
                met_by = [n for n, ok in (("ours", c["met"]), ("XLA's planned", c["met_planned"]),
                                          ("offloading", any((off.get(part) or {}).get("met")
                                                             for part in ("lever", "side"))),
                                          ("program", g["met"])) if ok]
                table.append([r["example"], f"{common.mib(c['xla_remat_temp'])} at "
                                            f"{share(c['xla_remat_flops'], r['step_flops'])}",
                              common.mib(g["budget_temp"]), got, g.get("bits", "-"),
                              "yes" if g["met"] else "no", g["how"],
                              ", ".join(met_by) or "none",
                              f"{g['capture_s']} / " + (
                                  f"{g['solve_s']} + {g['verify_s']}" if "solve_s" in g
                                  else f"{g['planner_s']}")])
    lines += common.table(["example", "XLA remat point", "asked", "program side: temp at extra "
                           "FLOPs", "bits", "met", "how", "point met by", "seconds"],
                          table, right={2, 3})
    lines += ["", "Program recomputation notes:"]
    for r in rows:
        for c in r.get("comparisons", ()):
            for g in c.get("program_remat") or ():
                lines.append(f"- {r['example']} at {common.mib(g['budget_temp'])} MiB: "
                             f"{g['note']} ({g['seconds']} s)")
    return lines


def render_offload(rows: list[dict]) -> list[str]:
    """The host offloading rows (``--offload=1``) beside ours without it."""
    lines = ["", "Host offloading at the same XLA points (compile-only: built, not run; the "
                 "copies' time over PCIe is unknown, so meeting a point by offloading is NOT "
                 "recomputation meeting it). Lever alone: olla_jax.offload.offload asked for XLA's "
                 "temp M, XLA's order and placement; side: plan(..., offload=True)'s side "
                 "(gpu_budget.offload_side) on that lever, ordered and placed by us and recomputed "
                 "by us on top when still over. Extra FLOPs: the FLOPs of XLA's offloaded program "
                 "less the step's (the readers computed again from a copy back; 0 where it has "
                 "fewer), and on the side its recomputation's too. Host temp: XLA's host allocation (not in the device temp); "
                 "to host / back: bytes copied each way (copies). The offloaded steps are compiled "
                 "with the lever's XLA options where it has some (per point below: the step "
                 "without copies under them).", ""]
    table = []
    for r in rows:
        for c in r.get("comparisons", ()):
            o = c.get("offload")
            if o is None:
                continue
            ours = min(c["ours"], key=lambda t: (t["temp"], t["flops"]))
            head = [r["example"], f"{common.mib(c['xla_remat_temp'])} at "
                                  f"{share(c['xla_remat_flops'], r['step_flops'])}",
                    c.get("cost", "time"),
                    f"{common.mib(ours['temp'])} at {share(ours['flops'], r['step_flops'])}",
                    "yes" if c["met"] else "no"]
            if "error" in o:
                table.append(head + [f"error: {o['error'][:120]}"] + [""] * 8)
                continue
            lv, sd = o["lever"], o.get("side")
            table.append(head + [
                f"{common.mib(lv['temp'])} at {share(lv['flops'], r['step_flops'])} "
                f"({lv['values']} parked)",
                f"{common.mib(lv['host_temp'])}",
                f"{common.mib(lv['to_host_bytes'])} ({lv['to_host']})",
                f"{common.mib(lv['to_device_bytes'])} ({lv['to_device']})",
                "yes" if lv["met"] else "no",
                (f"{common.mib(sd['temp'])} at {share(sd['flops'], r['step_flops'])}"
                 if sd else "none"),
                ("yes" if sd["met"] else "no") if sd else "no",
                f"{o['planner_s']} ({'kept' if o['limit_kept'] else 'NOT kept'})",
                f"{lv['seconds']} / {o['side_seconds']}"])
    lines += common.table(["example", "XLA remat point", "our cost", "ours, no offload (least)",
                           "met", "lever alone: temp at extra FLOPs", "host temp", "to host MiB (copies)",
                           "back MiB (copies)", "lever met", "side: temp at extra FLOPs",
                           "side met", "side planner s (1.1 x limit)", "seconds lever / side"],
                          table, right={1, 3, 5, 6, 7, 8, 10})
    comps = [c for r in rows for c in r.get("comparisons", ()) if c.get("offload")]
    if comps:
        def count(f):
            return sum(1 for c in comps if f(c))

        def offload_met(c: dict, *parts: str) -> bool:
            """Whether any of ``parts`` (lever, side) met the point."""
            return any((c["offload"].get(part) or {}).get("met") for part in parts)
        lines += ["", f"Of {len(comps)} XLA points: ours without offloading meets "
                      f"{count(lambda c: c['met'])}; the lever alone "
                      f"{count(lambda c: offload_met(c, 'lever'))}; "
                      f"plan's offloading side {count(lambda c: offload_met(c, 'side'))}; "
                      "either offloading route but not ours "
                      f"{count(lambda c: not c['met'] and offload_met(c, 'lever', 'side'))}."]
    lines += ["", "Offloading, per point (values parked; device temps tried by count of values "
                  "parked; the side's note):"]
    for r in rows:
        for c in r.get("comparisons", ()):
            o = c.get("offload")
            if not o or "error" in o:
                continue
            tried = ", ".join(f"{k} -> {common.mib(t)}" for k, t in o["lever"]["tried"])
            parked = kinds(n.split(": ")[-1] for n in o["lever"]["parked"])
            opts = o["lever"].get("compiler_options") or {}
            under = ("" if not opts else
                     f" (offloaded steps compiled with {', '.join(f'{k}={v}' for k, v in opts.items())}"
                     + ("" if o["lever"].get("options_temp") is None else
                        f"; XLA's step without copies under them: "
                        f"{common.mib(o['lever']['options_temp'])} MiB") + ")")
            lines.append(f"- {r['example']} at {common.mib(o['budget_temp'])} MiB: "
                         f"XLA's step {common.mib(o['lever']['xla_temp'])} MiB{under}; tried {tried}; "
                         f"parked ({o['lever']['values']}, by the primitive making them): "
                         f"{parked or 'none'}; side: "
                         + (o["side"]["note"] if o.get("side") else o.get("side_note", "")))
    return lines


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--target", default="h100")
    p.add_argument("--models", default="mlp:small,vit:tiny,cnn_adam:tiny")
    p.add_argument("--limits", default="0.8,0.5",
                   help="XLA's forced memory limits, as fractions of its own temp")
    p.add_argument("--points", type=int, default=2, choices=(1, 2),
                   help="XLA points compared per example: the least temp (1), and the fewest FLOPs (2)")
    p.add_argument("--time_limit_s", type=float, default=10.0, help="our search, per budget")
    p.add_argument("--plan_time_limit_s", type=float, default=3.0)
    p.add_argument("--cache", default=os.path.join(os.path.expanduser("~"), ".cache", "olla_jax",
                                                   "xla_remat_points.json"),
                   help="XLA's points by jax version, example, target, limit ('' for none)")
    p.add_argument("--of_xla_temp", default="",
                   help="also ours alone at these shares of XLA's own temp (e.g. 0.6)")
    p.add_argument("--recompute_cost", default="flops",
                   help="what our search minimises per copy, comma-separated to ask each: "
                        "time (roofline), flops (olla_jax.budget.candidates.copy_cost)")
    p.add_argument("--remat_planned", type=int, default=1, choices=(0, 1),
                   help="also plan XLA's rematerialized program at each of its points with our "
                        "order and placement (gpu_budget.to_budget's third side)")
    p.add_argument("--offload", type=int, default=0, choices=(0, 1),
                   help="also host offloading at each XLA point compared: the lever alone and "
                        "plan(..., offload=True)'s side on it (compile-only: copies' time unknown)")
    p.add_argument("--program_remat", type=int, default=0, choices=(0, 1),
                   help="also program recomputation at each XLA point compared "
                        "(gpu_budget.program_side: the jaxpr rewritten, bits compared on CPU)")
    p.add_argument("--out", default="")
    p.add_argument("--render", default="",
                   help="comma-separated <out>.json of finished runs with the same settings "
                        "(models aside): their rows rendered as one, written to --out")
    return p


def settings(p: argparse.ArgumentParser, argv) -> argparse.Namespace:
    """The parsed arguments, lists split and costs checked."""
    args = p.parse_args(argv)
    args.limits = [float(x) for x in args.limits.split(",") if x]
    args.of_xla_temp = [float(x) for x in args.of_xla_temp.split(",") if x]
    from olla_jax.budget.candidates import check_cost
    try:
        args.recompute_cost = [check_cost(x) for x in args.recompute_cost.split(",") if x]
    except ValueError as err:
        p.error(str(err))
    if not args.recompute_cost:
        p.error("--recompute_cost needs at least one of time, flops")
    return args


def main(argv=None) -> int:
    p = parser()
    args = settings(p, argv)
    if args.render:
        if not args.out:
            p.error("--render needs --out (where the merged .md and .json go)")
        text = render_merged(args.render.split(","), args.out)
        print(text)
        return 0
    return run_models(args, run_one, render)


# settings a merged render may differ in: what ran, where it went, and the cache
_PER_PART = ("models", "out", "cache", "render")


def _part_meta(path: str, data: dict) -> tuple[str, str]:
    """A finished run's date and load line: from its .json (the date it
    started), or (a run written before they were kept there) from the header of
    the .md beside it (the date it was last written)."""
    if "date" in data and "loads" in data:
        return "started " + data["date"], " ; ".join(data["loads"])
    found = {"date": "?", "load": "?"}
    md = path[:-len(".json")] + ".md" if path.endswith(".json") else ""
    if md and os.path.exists(md):
        for line in open(md):
            if line.startswith("- date: "):
                found["date"] = "written " + line[len("- date: "):].strip()
            elif line.startswith("- load average at start / end"):
                found["load"] = line.split(": ", 1)[1].strip()
    return found["date"], found["load"]


def render_merged(paths: list[str], out: str) -> str:
    """The rows of several finished runs (their ``<out>.json``) rendered as one
    run, each run's command, date and load in the header; written to ``out``
    (.md and .json).  Runs whose settings differ beyond ``_PER_PART``, or that
    share an example, are refused: their points would not be comparable."""
    import shlex
    p = parser()
    rows, parts, commands, first = [], [], [], None
    for path in paths:
        with open(path) as f:
            data = json.load(f)
        words = shlex.split(data["command"])
        argv = words[next((i for i, w in enumerate(words) if w.startswith("--")), len(words)):]
        args = settings(p, argv)
        mine = {k: v for k, v in vars(args).items() if k not in _PER_PART}
        if first is None:
            first, base = mine, args
        elif mine != first:
            differ = sorted(k for k in mine if mine[k] != first.get(k))
            raise SystemExit(f"{path}: settings differ from {paths[0]}'s in {', '.join(differ)}")
        seen = {r["example"] for r in rows}
        again = [r["example"] for r in data["rows"] if r["example"] in seen]
        if again:
            raise SystemExit(f"{path}: {', '.join(again)} already in an earlier run")
        rows += data["rows"]
        date, load = _part_meta(path, data)
        got = [r["example"] for r in data["rows"]]
        short = [m for m in args.models.split(",") if m not in got]   # a run stopped early
        parts.append(f"`{data['command']}` ({date}; load at start / end {load})"
                     + (f"; no rows for {', '.join(short)} (not finished)" if short else ""))
        commands.append(data["command"])
    base.models = ",".join(r["example"] for r in rows)
    text = render(rows, base, ("", ""), parts=parts)
    common.write_results(out, {"rows": rows, "command": common.command_line(),
                               "parts": commands}, text)
    return text


def run_models(args, run_one: Callable, render: Callable) -> int:
    """``run_one(item, args, cache)`` for each of ``args.models`` (a failure is
    its row), XLA's points cached in ``args.cache``; the results rendered and
    written after each example, so a run cut short keeps what it did."""
    start_load, date = common.load(), common.now()
    cache = _cache_load(args.cache)
    rows = []
    for item in args.models.split(","):
        try:
            rows.append(run_one(item, args, cache))
        except Exception as err:  # noqa: BLE001 - one example's failure is its row
            traceback.print_exc()
            rows.append({"example": item, "error": f"{type(err).__name__}: {err}"[:300]})
        _cache_save(args.cache, cache)
        print(json.dumps(rows[-1])[:2000], flush=True)
        text = render(rows, args, (start_load, common.load()))
        if args.out:
            common.write_results(args.out, {"rows": rows, "command": common.command_line(),
                                            "date": date,
                                            "loads": [start_load, common.load()]}, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
