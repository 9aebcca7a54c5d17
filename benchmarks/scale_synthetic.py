"""The solve stage alone on synthetic deep graphs of up to 100k+ nodes (no XLA, no dumps).

    python -m benchmarks.scale_synthetic --layers=2500,12500 --time_limit_s=60

XLA's own compile of a 100k-instruction step takes hours on a shared 2-core
machine (benchmarks/results/scale_100k.md), so this builds the planner's input
directly (``olla_jax.graph.synthetic.deep_graph``: an unrolled train step
of L layers, 6 nodes each; see its docstring).  Runs ``strategy.solve_graph`` with a ``Deadline``
and prints its seconds against the limit and the process's peak RSS.  Graph
building (parsing XLA's dumps) is not in it: see benchmarks/scale.py.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from olla_jax.graph.synthetic import deep_graph  # noqa: E402


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--layers", default="2500")
    p.add_argument("--time_limit_s", type=float, default=60.0)
    p.add_argument("--log", action="store_true", help="the solve's stage log (absl)")
    p.add_argument("--out", default="", help="also write the lines to <out>.md, with the command")
    args = p.parse_args(argv)
    from benchmarks import common
    lines = []
    if args.out:
        lines = ["# olla_jax: solve_graph alone on synthetic deep graphs", "",
                 f"- command: `{common.command_line()}`", f"- date: {common.now()}",
                 f"- load average at start (1/5/15 min): {common.load()} (2 cores shared with "
                 "4 other helpers' jobs: times are inflated)", "",
                 "Graphs made by `benchmarks/scale_synthetic.py` (no XLA: see its docstring); "
                 "solve = `strategy.solve_graph` on a `Deadline` of the limit (graph building "
                 "from XLA's dumps not included); peak RSS of the process so far.", ""]
    if args.log:
        from absl import logging as absl_logging
        absl_logging.set_verbosity(absl_logging.INFO)
    from olla_jax.strategy import Deadline, solve_graph
    for layers in map(int, args.layers.split(",")):
        t0 = time.monotonic()
        graph = deep_graph(layers)
        built = time.monotonic() - t0
        t1 = time.monotonic()
        solution = solve_graph(graph, deadline=Deadline(args.time_limit_s))
        solve = time.monotonic() - t1
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        line = (f"layers {layers}: {len(graph.nodes)} nodes, {len(graph.units)} units "
                f"(made in {built:.1f} s); solve {solve:.1f} s of {args.time_limit_s:g} "
                f"({solve / args.time_limit_s:.2f} x), planned {solution.layout.temp_bytes} bytes, "
                f"bound {solution.lower_bound_bytes}, engine {solution.engine}, "
                f"peak RSS {rss:.2f} GiB")
        print(line, flush=True)
        if args.out:
            lines.append(f"- {line}")
            with open(args.out + ".md", "w") as f:
                f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
