"""What an order's placement floor is made of: its live bytes at the peak and what regions can take then.

    python -m benchmarks.peak_packing --model=unet --size=small --time_limit_s=8 --seeds=0,1,2,3 \
        --exact_s=30 --out=benchmarks/results/peak_packing_unet

One example, captured once (``plan()`` at the limit, no feed-back); then per
seed, ``strategy.solve_graph`` on that graph at the limit (the graph build is
not in it, unlike ``plan()``), and, untimed, the chosen order's figures (MiB):
live = by the order objective; peak = its placement problem's live-bytes
bound (every idle output byte free to any block); fit = its region-fit floor
(``place_check.region_fit_bound``, fast passes), exact = the same with a
CP-SAT assignment pass of ``exact_s`` (both proven: no placement of that
order does better); at the step where live bytes less the regions' free
bytes peak: the live bytes, the regions' free bytes, and what a best-fit
decreasing packing of the blocks live then into the regions' free bytes
leaves unpacked (loss: free bytes no block fits into; a packing found, not
the optimum).  Writes ``<out>.md`` and ``<out>.json``.
"""

from __future__ import annotations

import os
import sys

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import common  # noqa: E402


def parse_args(argv=None):
    p = common.parser(__doc__, size="small", time_limit_s=8.0, out=None)
    p.add_argument("--model", default="unet")
    p.add_argument("--seeds", default="0,1,2,3")
    p.add_argument("--exact_s", type=float, default=30.0)
    return p.parse_args(argv)


def peak_packing(pp) -> dict:
    """At the step where live bytes less the regions' free bytes peak: live,
    free, and the bytes a best-fit decreasing packing leaves in the arena."""
    import numpy as np

    from olla_jax.solve import place_check
    start = np.array([iv.start for iv in pp.intervals], dtype=np.int64)
    end = np.array([iv.end for iv in pp.intervals], dtype=np.int64)
    size = np.array([iv.size for iv in pp.intervals], dtype=np.int64)
    steps = np.arange(int(end.max()) + 1)
    free = np.stack([place_check._region_free(r, steps) for r in pp.regions], axis=1) \
        if pp.regions else np.zeros((len(steps), 0), dtype=np.int64)
    live = np.array([size[(start <= t) & (end >= t)].sum() for t in steps.tolist()])
    t = int(np.argmax(live - free.sum(axis=1)))
    room = free[t].astype(np.int64).copy()
    packed = 0
    for i in sorted(np.flatnonzero((start <= t) & (end >= t)).tolist(), key=lambda i: -size[i]):
        fits = np.flatnonzero(room >= size[i])
        if len(fits):
            r = fits[np.argmin(room[fits])]
            room[r] -= size[i]
            packed += int(size[i])
    return dict(step=t, live_then=int(live[t]), free_then=int(free[t].sum()),
                unpacked_then=int(live[t]) - packed)


def main(argv=None) -> None:
    args = parse_args(argv)
    import examples
    from olla_jax import strategy
    from olla_jax.solve import place_check
    load_start = common.load()
    p = common.plan_quietly(examples.get(args.model, args.size), backend="cpu",
                            time_limit_s=args.time_limit_s, feed_back=False)
    g = p.graph
    rows = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        sol = strategy.solve_graph(g, time_limit_s=args.time_limit_s, seed=seed)
        pp = g.placement_problem(sol.layout.order)[0]
        rows.append(dict(seed=seed, planned=sol.layout.temp_bytes, bound=sol.lower_bound_bytes,
                         live=sol.live_bytes, peak=place_check.live_bytes_bound(pp),
                         fit=place_check.region_fit_bound(pp),
                         exact=place_check.region_fit_bound(pp, exact_s=args.exact_s),
                         source=sol.engine, **peak_packing(pp)))
        print(rows[-1], flush=True)
    lines = common.header(f"Placement floor at the peak: {args.model}, size {args.size}",
                          {"time limit": f"{args.time_limit_s:g} s (solve_graph, per seed)",
                           "exact pass": f"{args.exact_s:g} s",
                           "load (1/5/15 min) at start, end": f"{load_start}; {common.load()}"})
    lines += [__doc__.split("\n\n", 2)[2].strip(), ""]
    lines += common.table(
        ["seed", "planned", "bound", "live", "peak", "fit", "exact", "step", "live then",
         "free then", "unpacked then", "loss", "source"],
        [[r["seed"], *(common.mib(r[k]) for k in ("planned", "bound", "live", "peak", "fit",
                                                  "exact")),
          r["step"], common.mib(r["live_then"]), common.mib(r["free_then"]),
          common.mib(r["unpacked_then"]),
          common.mib(r["unpacked_then"] - (r["live_then"] - r["free_then"])), r["source"]]
         for r in rows],
        right=set(range(0, 12)))
    if args.out:
        common.write_lines_and_rows(args.out, lines, rows)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
