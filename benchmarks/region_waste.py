"""Where a plan's order loses region space, at the moment its region-fit floor is highest.

    python -m benchmarks.region_waste --backend=gpu:h100 --models=unet,resnet18 \
        --time_limit_s=20 --out=benchmarks/results/region_waste_h100
    python -m benchmarks.region_waste --backend=cpu --models=unet --time_limit_s=10 \
        --out=benchmarks/results/region_waste_cpu

Per example, in its own process: the plan at ``time_limit_s``; then, untimed,
on its chosen order's placement problem, the moment where the region-fit
relaxation (``place_check``'s flow of blocks into the regions free then,
each block only into a region it fits for its whole life) leaves the most
bytes in the arena.  At that moment: the live bytes, the regions' free
bytes, what the flow moves into them, what whole blocks move (CP-SAT's
multiple knapsack, proven), and the region-sized blocks that fit a free
region by size but not by life because the very instruction that writes
that region's output reads them (so in no order can they sit there; the
threshold relaxations of the bound still count that space as theirs).
The gaps: bound -> flow floor (what the flow alone sees), flow -> whole
blocks (packing whole blocks), whole blocks -> placed (the placement).
"""

from __future__ import annotations

import bisect
import os
import sys

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import common  # noqa: E402


def parse_args(argv=None):
    p = common.parser(__doc__, worker=True, models="unet", backend="cpu", size="small",
                      time_limit_s=10.0, out="benchmarks/results/region_waste")
    p.add_argument("--exact_s", type=float, default=10.0,
                   help="CP-SAT's time for the whole-block assignment at the moment")
    return p.parse_args(argv)


def run_one(name: str, args) -> dict:
    import numpy as np

    import examples
    from olla_jax.solve import place_check as pc

    step = examples.get(name, args.size)
    p = common.plan_quietly(step, time_limit_s=args.time_limit_s, backend=args.backend)
    g, order = p.graph, tuple(p.layout.order)
    pp, owners = g.placement_problem(order)
    ivs, regions = pp.intervals, pp.regions
    grouped = {i for grp in pp.same_offset for i in grp}
    idx = [i for i, iv in enumerate(ivs) if iv.size > 0 and i not in grouped]
    start = np.array([ivs[i].start for i in idx], dtype=np.int64)
    end = np.array([ivs[i].end for i in idx], dtype=np.int64)
    size = np.array([ivs[i].size for i in idx], dtype=np.int64)
    caps = np.array([r.capacity for r in regions], dtype=np.int64)
    by_size = size[:, None] <= caps[None, :]
    fits = by_size.copy()
    for r, region in enumerate(regions):
        occ = [o for o in region.occupants if o.size > 0]
        if not occ:
            continue
        for b in np.nonzero(by_size[:, r])[0].tolist():
            row = np.array([o.start <= end[b] and start[b] <= o.end for o in occ])
            if row.any():
                fits[b, r] = size[b] <= pc._widest_gap(region, occ, row, pp.alignment)
    moments = np.unique(start)
    best = None
    for k in moments.tolist():
        on = np.nonzero((start <= k) & (k <= end))[0]
        free = np.array([pc._region_free(reg, np.array([k]))[0] for reg in regions],
                        dtype=np.int64)
        live = int(size[on].sum())
        flow = pc._flow_out(size[on], fits[on], free) if len(regions) else 0.0
        if best is None or live - flow > best[0]:
            best = (live - flow, k, on, free, live, flow)
    _, k, on, free, live, flow = best
    whole = pc._assign_out(size[on], fits[on], free, args.exact_s) if len(regions) else 0.0
    # Region-sized blocks kept out of a free region by its writer reading them.
    layout = g.flat_layout(order)
    steps = sorted((layout[n], n) for n in order)
    at = [s for s, _ in steps]
    barred = []
    for b in on.tolist():
        shut = [r for r in np.nonzero(by_size[b] & ~fits[b] & (free >= size[b]))[0].tolist()]
        if not shut:
            continue
        node = steps[bisect.bisect_right(at, int(end[b])) - 1][1]
        unit = g.units[owners[idx[b]]]
        reads = any(node in g.values[v].touches for v in unit.values)
        writes = [r for r in shut if any(o.start == end[b] for o in regions[r].occupants)]
        if reads and writes:
            barred.append({"size": int(size[b]), "life": [int(start[b]), int(end[b])],
                           "writer": g.nodes[node], "regions": len(writes)})
    return dict(model=name, backend=args.backend, limit_s=args.time_limit_s,
                planned=p.planned_temp_bytes, arena=p.layout.temp_bytes, bound=p.lower_bound_bytes,
                moment=int(k), live=live, region_free=int(free.sum()), flow=int(flow),
                whole=int(whole), flow_floor=int(live - flow), whole_floor=int(live - whole),
                barred=barred, load=common.load())


# Barred blocks at least this large are listed one by one (all count in the total).
BARRED_SHOWN = 1 << 16


def worker(args) -> None:
    common.write_worker_result(args.worker_out, lambda: run_one(args.worker, args),
                               lambda msg: {"model": args.worker, "error": msg})


def markdown(rows, args, meta) -> str:
    lines = common.header(f"Region space lost at the order's highest region-fit moment, size {args.size}", {
        "backend": args.backend, "time limit per model": f"{args.time_limit_s:g} s",
        "loads (1/5/15 min) per model": "; ".join(f"{r['model']}: {r.get('load', '-')}" for r in rows)},
        command=meta["command"], machine_info=meta["machine"], date=meta["date"])
    lines += ["MiB. moment: the step of the chosen order's placement problem where the flow floor "
              "is highest; live: bytes live then; free: the regions' free bytes then; flow: what "
              "a flow of blocks into regions they fit for their whole life moves; whole: the "
              "same with whole blocks (CP-SAT's proven bound); flow floor = live - flow, whole "
              "floor = live - whole (no placement of this order goes below it); barred: "
              "region-sized blocks live then that a free region fits by size, shut out because "
              "the instruction writing that region's output reads them (every order).", ""]
    cols = ["model", "bound", "flow floor", "whole floor", "placed", "moment", "live", "free",
            "flow", "whole", "barred blocks (total; those of 64 KiB or more: size MiB x regions, writer)"]
    body = []
    for r in rows:
        if "error" in r:
            body.append([r["model"], *["-"] * 9, "ERROR " + r["error"][:200]])
            continue
        big = sorted((b for b in r["barred"] if b["size"] >= BARRED_SHOWN), key=lambda b: -b["size"])
        barred = (f"{sum(b['size'] for b in r['barred']) / 2**20:.2f} MiB in "
                  f"{len(r['barred'])} blocks; " if r["barred"] else "") + (", ".join(
                      f"{b['size'] / 2**20:.3f} x {b['regions']} ({b['writer']})" for b in big) or "-")
        body.append([r["model"], common.mib(r["bound"]), common.mib(r["flow_floor"]),
                     common.mib(r["whole_floor"]), common.mib(r["arena"]), r["moment"],
                     common.mib(r["live"]), common.mib(r["region_free"]), common.mib(r["flow"]),
                     common.mib(r["whole"]), barred])
    lines += common.table(cols, body, right=set(range(1, 10)))
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    args = parse_args(argv)
    if common.begin(args, worker):
        return
    common.run_rows("benchmarks.region_waste", common.model_names(args.models),
                    common.forward(args, "size", "time_limit_s", "backend", "exact_s"),
                    lambda spec, msg: {"model": spec, "error": msg},
                    lambda rows, run: markdown(rows, args, run), args.out, timeout_s=1800,
                    settings=vars(args))


if __name__ == "__main__":
    main()
