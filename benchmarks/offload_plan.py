"""Host offloading and olla_jax's planning together, on a compile-only GPU target.

    python -m benchmarks.offload_plan --examples=lm_adamw:small,gpt2:small \
        --out=benchmarks/results/offload_plan

Issue 20.4, step 3.  Per example step, in one run: XLA's device temp for the
step as given; ``olla_jax.plan`` alone (order and placement); the offloading
lever alone (``olla_jax.offload.offload``: the longest-idle values parked in
host memory, XLA's order and placement); and the offloaded step planned by
``olla_jax.plan`` (the device temp ordered and placed by olla_jax, the host
allocation, memory space 5, left where XLA put it).  For lm_adamw, also the
steps that offload themselves (``jax.checkpoint`` per block with an offloading
policy, ``benchmarks/offload_reach.py``), XLA's temp against olla_jax's plan.  Compile-only: the
rewritten executables are built and decoded again, not run (no GPU here), so
nothing says how long the copies take.

With ``--budget_fraction=F``, instead: ``olla_jax.plan`` under a memory budget
of the step's arguments and outputs plus F x XLA's device temp, with its usual
sides (order and placement, then our recomputation and XLA's
rematerialization, ``olla_jax.gpu_budget``) and again with ``offload=True``
(host offloading as one more side), in the same run:

    python -m benchmarks.offload_plan --examples=gpt2:small,vit:small \
        --budget_fraction=0.6 --time_limit_s=20 --out=benchmarks/results/offload_side
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
import traceback
import warnings
from typing import Any

from benchmarks import common


def _plan(fn, args, static, donate, target: str, limit: float) -> dict:
    from olla_jax.plan import plan
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = plan(fn, *args, backend=target, static_argnums=static, donate_argnums=donate,
                 time_limit_s=limit)
    host = sum(p.graph.other_space_bytes.values()) if p.graph is not None else None
    return {"xla_temp": p.xla_temp_bytes, "temp": p.planned_temp_bytes,
            "bound": p.lower_bound_bytes or None, "source": p.source, "host_temp": host,
            "built": p.executable_bytes is not None, "solve_s": round(p.solve_seconds, 1),
            "notes": list(p.notes), "seconds": round(time.perf_counter() - t0, 1)}


def _row(r: dict[str, Any], run) -> dict[str, Any]:
    """``r`` with what ``run()`` returns (or its error, one line), its seconds
    and the load after it."""
    t0 = time.perf_counter()
    try:
        r.update(run())
    except Exception as err:  # noqa: BLE001 - the error is the answer
        r["error"] = traceback.format_exception_only(type(err), err)[-1].strip()[:600]
    r.setdefault("seconds", round(time.perf_counter() - t0, 1))
    r["load"] = common.load()
    return r


def measure(spec: str, target: str, limit: float, max_values: int | None,
            user_routes: bool = True) -> list[dict]:
    from olla_jax import offload
    name, _, size = spec.partition(":")
    st = importlib.import_module(f"examples.{name}").make_step(size or "small")
    args, static, donate = st.abstract_args(), st.static_argnums, st.donate_argnums
    rows: list[dict[str, Any]] = []

    def row(route: str, run) -> None:
        r = _row({"example": spec, "route": route}, run)
        rows.append(r)
        print(f"{spec} | {route}: temp {common.mib(r.get('temp'))} MiB, host "
              f"{common.mib(r.get('host_temp'))} MiB {r.get('error', '')[:200]} "
              f"({r['seconds']} s, load {r['load']})", flush=True)

    row("olla_jax.plan (order and placement)",
        lambda: _plan(st.fn, args, static, donate, target, limit))
    lever = {}

    def offloaded() -> dict:
        res = offload.offload(st.fn, *args, backend=target, static_argnums=static,
                              donate_argnums=donate, max_values=max_values)
        lever["result"] = res
        return {"xla_temp": res.xla_temp, "temp": res.temp, "host_temp": res.host_temp,
                "values": len(res.chosen), "to_host_bytes": res.transfers.to_host_bytes,
                "summary": res.summary()}
    row("olla_jax.offload (XLA's order and placement)", offloaded)
    if "result" in lever:
        row("olla_jax.offload, then olla_jax.plan",
            lambda: _plan(lever["result"].fn, args, static, donate, target, limit))
    if name == "lm_adamw" and user_routes:
        # Steps that offload themselves (jax.checkpoint policies), planned as they are.
        from benchmarks import offload_reach
        for policy_name, policy in offload_reach._policies().items():
            if "offload" not in policy_name:
                continue
            fn = offload_reach.checkpointed_step(policy)
            row(f"jax.checkpoint per block, {policy_name}: olla_jax.plan",
                lambda fn=fn: _plan(fn, args, static, donate, target, limit))
    return rows


def _budget_plan(fn, args, static, donate, target: str, limit: float, budget: int,
                 offload: bool) -> dict:
    import olla_jax
    t0 = time.perf_counter()
    met = True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            p = olla_jax.plan(fn, *args, backend=target, static_argnums=static,
                              donate_argnums=donate, time_limit_s=limit, memory_budget=budget,
                              offload=offload)
        except olla_jax.BudgetNotMet as err:
            met, p = False, err.plan
    return {"xla_temp": p.xla_temp_bytes, "temp": p.runs_temp_bytes, "total": p.runs_total_bytes,
            "budget": budget, "met": met, "extra_flops": p.extra_flops, "engine": p.engine,
            "host_temp": p.settings.get("host_temp_bytes"),
            "to_host_bytes": p.settings.get("to_host_bytes"),
            "to_device_bytes": p.settings.get("to_device_bytes"),
            "solve_s": round(p.solve_seconds, 1), "capture_s": round(p.capture_seconds, 1),
            "verify_s": round(p.verify_seconds, 1), "notes": list(p.notes),
            "seconds": round(time.perf_counter() - t0, 1)}


def measure_budget(spec: str, target: str, limit: float, fraction: float) -> list[dict]:
    """The example's step planned under io + ``fraction`` x XLA's temp, without
    and with host offloading as a side."""
    name, _, size = spec.partition(":")
    st = importlib.import_module(f"examples.{name}").make_step(size or "small")
    args, static, donate = st.abstract_args(), st.static_argnums, st.donate_argnums
    from olla_jax.plan import plan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        base = plan(st.fn, *args, backend=target, static_argnums=static, donate_argnums=donate,
                    time_limit_s=limit, feed_back=False)
    io = base.runs_total_bytes - base.runs_temp_bytes
    budget = io + int(fraction * base.xla_temp_bytes)
    rows = []
    for offload in (False, True):
        route = "plan, budget: our sides" + (" + host offloading (offload=True)" if offload else "")
        r = _row({"example": spec, "route": route, "io": io},
                 lambda: _budget_plan(st.fn, args, static, donate, target, limit, budget,
                                      offload))
        rows.append(r)
        print(f"{spec} | {route}: total {common.mib(r.get('total'))} MiB of budget "
              f"{common.mib(budget)}, extra FLOPs {r.get('extra_flops')}, {r.get('engine')} "
              f"{r.get('error', '')[:200]} ({r['seconds']} s, load {r['load']})", flush=True)
    return rows


def render_budget(rows: list[dict], header: list[str]) -> str:
    lines = list(header)
    cols = ["example", "route", "XLA device temp MiB", "budget MiB", "total MiB", "met",
            "device temp MiB", "vs XLA temp", "extra FLOPs", "kept", "host temp MiB",
            "to host MiB", "back MiB", "planner s", "seconds", "load"]
    body = []
    for r in rows:
        xla = r.get("xla_temp")
        body.append([r["example"], r["route"], common.mib(xla), common.mib(r.get("budget")),
                     common.mib(r.get("total")), {True: "yes", False: "no"}.get(r.get("met"), ""),
                     common.mib(r.get("temp")),
                     f"{r['temp'] / xla:.3f}" if r.get("temp") is not None and xla else "",
                     f"{r['extra_flops']:,}" if r.get("extra_flops") is not None else "",
                     r.get("engine", ""), common.mib(r.get("host_temp")),
                     common.mib(r.get("to_host_bytes")), common.mib(r.get("to_device_bytes")),
                     r.get("solve_s", ""), r.get("seconds", ""), r.get("load", "")])
    lines += common.table(cols, body, right={2, 3, 4, 6, 7, 8, 10, 11, 12, 13, 14})
    lines.append("")
    lines.append("Budget: the step's arguments and outputs plus the fraction of XLA's device temp; "
                 "total: device bytes (host temp not counted); planner s: the planner's part, "
                 "which time_limit_s bounds (XLA's compiles and the builds not in it).")
    lines.append("")
    for r in rows:
        if r.get("error"):
            lines.append(f"- {r['example']}, {r['route']}: error `{r['error']}`")
        for note in r.get("notes", ()):
            lines.append(f"- {r['example']}, {r['route']}: note: {note}")
    return "\n".join(lines) + "\n"


def render(rows: list[dict], header: list[str]) -> str:
    lines = list(header)
    cols = ["example", "route", "XLA device temp MiB", "device temp MiB", "vs XLA",
            "vs XLA, step as given", "lower bound MiB", "host temp MiB", "planned by", "executable", "seconds", "load"]
    body = []
    given: dict[str, int] = {}
    for r in rows:
        xla = r.get("xla_temp")
        if xla:
            given.setdefault(r["example"], xla)     # the first row's: the step as given
        ratio = f"{r['temp'] / xla:.3f}" if r.get("temp") is not None and xla else ""
        first = given.get(r["example"])
        vs_given = f"{r['temp'] / first:.3f}" if r.get("temp") is not None and first else ""
        built = ("" if "built" not in r else
                 "built, decoded again, not run" if r["built"] else "XLA's")
        body.append([r["example"], r["route"], common.mib(xla), common.mib(r.get("temp")), ratio,
                     vs_given, common.mib(r.get("bound")), common.mib(r.get("host_temp")),
                     r.get("source", "XLA" if "error" not in r else ""), built,
                     r.get("seconds", ""), r.get("load", "")])
    lines += common.table(cols, body, right={2, 3, 4, 5, 6, 7, 10})
    lines.append("")
    lines.append("XLA device temp: of the step the row plans or offloads (the step as given, "
                 "the step olla_jax.offload chose, or the jax.checkpoint step); 'vs XLA, step "
                 "as given': against the first row's XLA temp of that example.")
    lines.append("")
    for r in rows:
        if r.get("error"):
            lines.append(f"- {r['example']}, {r['route']}: error `{r['error']}`")
        if r.get("summary"):
            lines.append(f"- {r['example']}: {r['summary']}")
        for note in r.get("notes", ()):
            lines.append(f"- {r['example']}, {r['route']}: note: {note}")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--examples", default="lm_adamw:small,gpt2:small",
                   help="example:size, comma separated (examples/<example>.py make_step)")
    p.add_argument("--target", default="gpu:h100")
    p.add_argument("--time_limit_s", type=float, default=10.0, help="olla_jax.plan's limit")
    p.add_argument("--max_values", type=int, default=-1,
                   help="olla_jax.offload's most values (-1: all candidates)")
    p.add_argument("--user_routes", type=int, default=1,
                   help="also plan lm_adamw's own offloading steps (jax.checkpoint policies "
                        "of benchmarks/offload_reach.py)")
    p.add_argument("--budget_fraction", type=float, default=0.0,
                   help="instead: olla_jax.plan under io + this x XLA's temp, with and without "
                        "offload=True (0: off)")
    p.add_argument("--out", default="")
    args = p.parse_args(argv)
    common.gpu_environment(args.target)
    load_before = common.load()
    rows = []
    if args.budget_fraction > 0:
        for spec in [s for s in args.examples.split(",") if s]:
            rows += measure_budget(spec, args.target, args.time_limit_s, args.budget_fraction)
        header = common.header(
            "Host offloading as a side of a memory budget (olla_jax.plan offload=True)",
            {"target": f"{args.target} (compile-only: built, not run; the copies' time is "
                       "unknown)",
             "budget": f"arguments + outputs + {args.budget_fraction:g} x XLA's device temp",
             "olla_jax.plan time limit": f"{args.time_limit_s:g} s",
             "load average (1/5/15 min) at the start and end; per row in the table":
                 f"{load_before}, {common.load()}"})
        text = render_budget(rows, header)
        print(text)
        if args.out:
            common.write_results(args.out, {"command": common.command_line(), "rows": rows},
                                 text)
        return 0
    for spec in [s for s in args.examples.split(",") if s]:
        rows += measure(spec, args.target, args.time_limit_s,
                        None if args.max_values < 0 else args.max_values, bool(args.user_routes))
    header = common.header(
        "Host offloading and olla_jax's planning together (issue 20.4)",
        {"target": f"{args.target} (compile-only: built, not run; temp and host bytes are "
                   "XLA's figures and olla_jax's plan)",
         "olla_jax.plan time limit": f"{args.time_limit_s:g} s",
         "load average (1/5/15 min) at the start and end; per row in the table":
             f"{load_before}, {common.load()}"})
    text = render(rows, header)
    common.print_and_write(text, rows, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
