"""The chain bound (solve.bound_chain) on and off, on the same graphs.

    python -m benchmarks.bound_chain_ab --models=unet,densenet,lstm --time_limit_s=10 \
        --repeats=2 --out=benchmarks/results/bound_chain_ab_cpu

Per example, in its own process: the planner's graph (one ``olla_jax.plan``
at ``--capture_limit_s``), then ``strategy.solve_graph`` on it at
``time_limit_s`` with the chain bound off (``CHAIN_PROBLEMS = 0``) and on,
alternately, ``repeats`` times each, after one warm-up solve: the same graph, the same machine
moments, so the difference is the chain's (on a loaded machine the search's
luck still varies from run to run).  Figures in MiB; wall: the solve's
seconds (to compare with the limit).
"""

from __future__ import annotations

import os
import sys
import time

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import common  # noqa: E402


def parse_args(argv=None):
    p = common.parser(__doc__, worker=True, models="unet,densenet,lstm", backend="cpu",
                      size="small", time_limit_s=10.0, out="benchmarks/results/bound_chain_ab_cpu")
    p.add_argument("--capture_limit_s", type=float, default=2.0)
    p.add_argument("--repeats", type=int, default=2)
    return p.parse_args(argv)


def run_one(name: str, args) -> dict:
    import examples
    from olla_jax import strategy

    step = examples.get(name, args.size)
    p = common.plan_quietly(step, backend=args.backend, time_limit_s=args.capture_limit_s,
                            feed_back=False)
    strategy.solve_graph(p.graph, time_limit_s=1.0)   # warm-up (imports, first calls): not kept
    runs = []
    kept = strategy.CHAIN_PROBLEMS
    try:
        for k in range(args.repeats):
            for on in (False, True):
                strategy.CHAIN_PROBLEMS = kept if on else 0
                load = common.load()
                t0 = time.monotonic()
                sol = strategy.solve_graph(p.graph, time_limit_s=args.time_limit_s, seed=k)
                runs.append(dict(chain=on, planned=sol.layout.temp_bytes,
                                 bound=sol.lower_bound_bytes, wall=time.monotonic() - t0,
                                 load=load))
    finally:
        strategy.CHAIN_PROBLEMS = kept
    return dict(model=name, backend=args.backend, runs=runs)


def worker(args) -> None:
    common.write_worker_result(args.worker_out, lambda: run_one(args.worker, args),
                               lambda msg: {"model": args.worker, "error": msg})


def render(rows: list, run: dict) -> str:
    mib = common.mib
    lines = common.header("The chain bound on and off, on the same graphs", {
        "backend": ", ".join(sorted({r.get("backend", "cpu") for r in rows})),
        "note": "2 cores shared with other helpers' jobs (loads per run below)"},
        command=run["command"], machine_info=run["machine"])
    lines += [__doc__.split("\n\n", 2)[2].strip(), ""]
    body = []
    for r in rows:
        if "error" in r:
            body.append([r["model"], "-", "-", "-", "-", "-", "-", "ERROR: " + r["error"][:200]])
            continue
        for x in r["runs"]:
            gap = 100 * (x["planned"] - x["bound"]) / x["planned"] if x["planned"] else 0.0
            body.append([r["model"], "on" if x["chain"] else "off", mib(x["planned"]),
                         mib(x["bound"]), f"{gap:.2f}", f"{x['wall']:.1f}", x["load"], ""])
    lines += common.table(["model", "chain", "planned", "bound", "gap %", "wall s", "load 1/5/15",
                           "notes"], body, right={2, 3, 4, 5})
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    args = parse_args(argv)
    if common.begin(args, worker):
        return
    flags = common.forward(args, "backend", "size", "time_limit_s", "capture_limit_s", "repeats")
    common.run_rows("benchmarks.bound_chain_ab", common.model_names(args.models), flags,
                    lambda spec, msg: {"model": spec, "error": msg}, render, args.out,
                    timeout_s=4 * args.repeats * args.time_limit_s + 1800)


if __name__ == "__main__":
    main()
