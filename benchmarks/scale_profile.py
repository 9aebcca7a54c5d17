"""Profile the planner's part of plan() on a stored capture (see benchmarks/scale.py --capture_dir).

    python -m benchmarks.scale_profile /tmp/captures/transformer-80-<key>.pkl --time_limit_s=10

Runs what plan() runs after XLA's compiles, stage by stage, on the same clock:
graph build, solve_graph (order search, bound, placement), the independent
check; prints the seconds of each, the process's peak RSS, and with
``--cprofile=N`` the N functions with the most cumulative time.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pickle
import pstats
import resource
import sys
import time

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("capture")
    p.add_argument("--time_limit_s", type=float, default=10.0)
    p.add_argument("--alignment", type=int, default=256, help="the backend's (gpu: 256)")
    p.add_argument("--cprofile", type=int, default=0, help="print the top N by cumulative time")
    p.add_argument("--check", action="store_true", help="also run the independent checker")
    args = p.parse_args(argv)
    from absl import logging as absl_logging
    absl_logging.set_verbosity(absl_logging.INFO)
    from olla_jax import checked
    from olla_jax.graph import model
    from olla_jax.plan import _warm_starts
    from olla_jax.strategy import Deadline, solve_graph
    with open(args.capture, "rb") as f:
        stored = pickle.load(f)
    caps = stored["captures"]
    best = min(caps, key=lambda c: c.memory.temp)
    print(f"loaded {args.capture}: compile {stored['compile_s']:.1f} s, rss {rss_gib():.2f} GiB",
          flush=True)
    prof = cProfile.Profile() if args.cprofile else None
    if prof:
        prof.enable()
    t0, c0 = time.monotonic(), time.process_time()
    deadline = Deadline(args.time_limit_s)
    graph = model.build(best.hlo_proto, best.values_text, best.live_range_text,
                        alignment=args.alignment)
    t_graph, c_graph = time.monotonic() - t0, time.process_time() - c0
    print(f"graph: {len(graph.nodes)} nodes, {len(graph.units)} units, {len(graph.edges)} edges "
          f"in {t_graph:.1f} s ({c_graph:.1f} CPU s), rss {rss_gib():.2f} GiB", flush=True)
    starts = _warm_starts(graph, [c for c in caps if c is not best])
    solution = solve_graph(graph, warm_starts=starts, xla_temp_bytes=best.memory.temp,
                           deadline=deadline)
    t_solve, c_solve = time.monotonic() - t0, time.process_time() - c0
    print(f"solve: {t_solve:.1f} s ({c_solve:.1f} CPU s: on a loaded machine the wall clock runs "
          f"ahead) of {args.time_limit_s:g} ({t_solve / args.time_limit_s:.2f} x), "
          f"planned {solution.layout.temp_bytes} vs XLA {best.memory.temp}, bound "
          f"{solution.lower_bound_bytes}, engine {solution.engine}, rss {rss_gib():.2f} GiB",
          flush=True)
    if args.check:  # after solved_at in plan(): not the planner's time
        t1 = time.monotonic()
        rejected = checked.rejection(best, solution.layout, alignment=graph.alignment)
        print(f"check: {time.monotonic() - t1:.1f} s ({rejected or 'accepted'}), "
              f"rss {rss_gib():.2f} GiB", flush=True)
    if prof:
        prof.disable()
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats("cumulative").print_stats(args.cprofile)
        print(out.getvalue())


if __name__ == "__main__":
    main()
