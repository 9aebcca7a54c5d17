"""The solve stage on a shared machine as a quiet one would run it: every clock on CPU time.

    python -m benchmarks.cpu_clock_solve --models=densenet,resnet50,unet --time_limit_s=10 \
        --out=benchmarks/results/cpu_clock_solve_order

Per example: capture its graph (``olla_jax.plan`` with a short limit, no
feed-back), then ``strategy.solve_graph`` on it with ``time.monotonic`` and
``time.perf_counter`` (which the stages and engines read) and the deadline's clock replaced by this
process's CPU time, so that a limit of 10 s is 10 s of CPU however many jobs
share the cores (a 10 s wall-clock limit at load 15 on 2 cores gives the
planner about 1.5 s).  Measures the search, not the machine: CP-SAT's worker
threads, when any, count as CPU time too.  Figures in MiB; cpu s and wall s
are the solve's own.
"""

from __future__ import annotations

import os
import sys
import time

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import common  # noqa: E402


def parse_args(argv=None):
    p = common.parser(__doc__, models="densenet,resnet50,unet", size="small", time_limit_s=10.0,
                      backend="cpu", out="benchmarks/results/cpu_clock_solve")
    p.add_argument("--capture_s", type=float, default=1.0, help="plan()'s limit for the capture")
    p.add_argument("--code", default="this checkout", help="which code ran (said in the header)")
    return p.parse_args(argv)


def run_one(name: str, args) -> dict:
    import examples
    from olla_jax import strategy
    step = examples.get(name, args.size)
    p = common.plan_quietly(step, backend=args.backend, time_limit_s=args.capture_s,
                           feed_back=False)
    graph, xla = p.graph, p.xla_best_temp_bytes
    if graph is None:   # plan() kept XLA's plan before building the graph (a loaded machine)
        raise SystemExit(f"{name}: plan() kept no graph at --capture_s={args.capture_s:g} "
                         f"({'; '.join(p.notes) or 'no note'}); give the capture more time")
    load_start = common.load()
    # Both wall clocks the solve reads: the stages' deadlines (time.monotonic)
    # and the budgets some engines measure their own use by (time.perf_counter:
    # the exact placement's, the chain bound's), else those ran on wall time.
    real = time.monotonic, time.perf_counter
    time.monotonic = time.perf_counter = time.process_time
    try:
        t, w = time.process_time(), real[1]()
        s = strategy.solve_graph(graph, xla_temp_bytes=xla, deadline=strategy.Deadline(
            args.time_limit_s, clock=time.process_time))
        cpu, wall = time.process_time() - t, real[1]() - w
    finally:
        time.monotonic, time.perf_counter = real
    return dict(model=name, instructions=len(graph.nodes), xla_best=xla,
                arena=s.layout.temp_bytes, bound=s.lower_bound_bytes, live=s.live_bytes,
                least_live=s.least_live_bytes, engine=s.engine, cpu_s=cpu, wall_s=wall,
                load_start=load_start, load_end=common.load())


def main(argv=None):
    args = parse_args(argv)
    common.gpu_environment(args.backend)
    rows = []
    for name in common.model_names(args.models):
        rows.append(run_one(name, args))
        print(rows[-1], flush=True)
    lines = common.header("The solve stage on CPU time", {
        "time limit": f"{args.time_limit_s:g} s of CPU time (the solve's every clock)",
        "backend": args.backend,
        "code": args.code,
        "note": "2 cores shared with other jobs: wall s is what the solve took here"})
    lines += common.table(
        ["model", "instr", "XLA best", "arena", "bound", "gap %", "order live", "least live",
         "engine", "cpu s", "wall s", "load start", "load end"],
        [[r["model"], r["instructions"], common.mib(r["xla_best"]), common.mib(r["arena"]),
          common.mib(r["bound"]), common.pct((r["arena"] - r["bound"]) / r["arena"]),
          common.mib(r["live"]), common.mib(r["least_live"]), r["engine"], f"{r['cpu_s']:.1f}",
          f"{r['wall_s']:.1f}", r["load_start"], r["load_end"]] for r in rows])
    common.write_results(args.out, {"command": common.command_line(), "rows": rows},
                         "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
