"""The joint engine against the separate order search + placement, same time limit.

    python -m benchmarks.joint --size=tiny --models=cnn_adam,mlp,lm_adamw,gpt2,resnet18 \
        --time_limit_s=20 --out=benchmarks/results/joint

Per model: the scheduling graph of XLA's best CPU schedule, then
``solve_graph(engine="auto")`` and ``solve_graph(engine="joint")`` with the same
time limit; temp bytes planned, the proven bound, what produced the plan and
the seconds taken.  Steps with loops are marked unsupported by the joint model.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import common  # noqa: E402


def main(argv=None) -> None:
    args = common.parser(__doc__, size="tiny", models="cnn_adam,mlp,lm_adamw,gpt2,resnet18",
                         time_limit_s=20.0, out="benchmarks/results/joint").parse_args(argv)
    common.gpu_environment("cpu")
    import warnings
    import examples
    from olla_jax.capture.record import capture
    from olla_jax.graph import model
    from olla_jax.solve import joint
    plan_mod = importlib.import_module("olla_jax.plan")
    meta = common.run_meta()
    rows = []
    for name in common.model_names(args.models):
        step = examples.get(name, args.size)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            caps = [capture(step.fn, *step.args, static_argnums=step.static_argnums,
                            donate_argnums=step.donate_argnums, scheduler=s)
                    for s in ("default", "memory")]
        best = min(caps, key=lambda c: c.memory.temp)
        graph = model.build(best.hlo_proto, best.values_text, best.live_range_text)
        starts = plan_mod._warm_starts(graph, [c for c in caps if c is not best])
        row = {"model": name, "instructions": len(graph.nodes), "xla_best": best.memory.temp,
               "joint_supported": joint.unsupported(graph) is None}
        for engine in ("auto", "joint"):
            t0 = time.perf_counter()
            sol = plan_mod.solve_graph(graph, warm_starts=starts, time_limit_s=args.time_limit_s,
                                       engine=engine)
            row[engine] = {"temp": sol.layout.temp_bytes, "bound": sol.lower_bound_bytes,
                           "source": sol.engine, "seconds": time.perf_counter() - t0}
        rows.append(row)
        print(json.dumps(row), flush=True)
    meta["load_end"] = common.load()
    lines = common.header(f"olla_jax joint engine vs separate search: cpu, size {args.size}", {
        "time limit": f"{args.time_limit_s:g} s each",
        "load average at start, end": f"{meta['load_start']}; {meta['load_end']}"},
        command=meta["command"], machine_info=meta["machine"], date=meta["date"])
    lines += ["Temp in bytes as planned on the memory model (not fed back). source: what produced "
              "the winning order (\"joint\" when the joint model beat the separate search).", ""]
    body = [[r["model"], r["instructions"], r["xla_best"], r["auto"]["temp"], r["joint"]["temp"],
             r["joint"]["source"], r["auto"]["bound"], "yes" if r["joint_supported"] else "no (loops)",
             f"{r['auto']['seconds']:.1f}", f"{r['joint']['seconds']:.1f}"] for r in rows]
    lines += common.table(["model", "instr", "XLA best", "separate", "joint", "joint source",
                           "bound", "joint model applies", "separate s", "joint s"], body)
    better = sum(r["joint"]["temp"] < r["auto"]["temp"] for r in rows)
    lines += ["", f"- joint below separate on {better} of {len(rows)}"]
    common.write_results(args.out, {"meta": meta, "rows": rows}, "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
