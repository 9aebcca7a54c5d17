"""Which of the canonical search's restarts fit a MiniMalloc instance, per component.

Usage: python -m benchmarks.minimalloc_restarts [--instance=E] [--attempts=60]
           [--out=benchmarks/results/minimalloc_restarts_E]

For each connected component of the instance's conflict graph that is not
trivially placed, runs ``place_canonical._restart`` alone (no race, no time
share) on the section search (``_Search``) in both time directions, attempt
0, 1, 2, ... at the instance's capacity, and lists the attempts that fit,
with the rule, ranking, fit and tie-breaking each used, and this process's
CPU seconds since the first attempt of that search.  It tells a portfolio
that never reaches a winning restart within its share of the limit from a
search that has none.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import common  # noqa: E402
from olla_jax.solve import place_canonical as pc  # noqa: E402
from olla_jax.solve.csv_io import read_csv  # noqa: E402
from olla_jax.solve.place_model import build_model  # noqa: E402

DATA = ROOT / "benchmarks" / "data" / "minimalloc"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instance", default="E")
    parser.add_argument("--capacity", type=int, default=1048576)
    parser.add_argument("--attempts", type=int, default=60)
    parser.add_argument("--out", type=Path, default=None, help="write OUT.md and OUT.json")
    args = parser.parse_args()
    problem = read_csv(DATA / f"{args.instance}.1048576.csv").problem
    model = build_model(problem)
    conf = [np.asarray(c, dtype=np.int64) for c in model.conflicts]
    lines = common.header(f"Restarts of the section search on MiniMalloc {args.instance}",
                          {"capacity": args.capacity, "attempts per search": args.attempts,
                           "load (1/5/15 min)": common.load()})
    lines += ["CPU seconds: this process's, from the search's first attempt (a shared machine "
              "slows wall time, not these).", "",
              "| component | blocks | sections | live peak | direction | fits at attempt (rule, "
              "ranking, fit, ties, CPU s) | attempts run | CPU s |", "|---|---|---|---|---|---|---|---|"]
    rows = []
    for k, comp in enumerate(pc._components(conf, len(model.blocks))):
        pos = {int(g): i for i, g in enumerate(comp.tolist())}
        sizes = np.array([model.blocks[g].size for g in comp], dtype=np.int64)
        segs = [model.blocks[g].segments for g in comp]
        end = max(e for s in segs for _, e in s)
        cconf = [np.array([pos[j] for j in conf[g].tolist()], dtype=np.int64) for g in comp.tolist()]
        for direction, ss in (("forward", segs),
                              ("reversed", [tuple(sorted((end - e, end - s) for s, e in x))
                                            for x in segs])):
            search = pc._Search(sizes, ss, cconf, model.alignment)
            if search.live_bound() > args.capacity or len(comp) < 2:
                continue
            wins, c0 = [], time.process_time()
            for att in range(args.attempts):
                got = pc._restart(search, args.capacity, time.monotonic() + 3600, att)
                if got is not pc._LIMIT and got is not None:
                    at = pc.schedule(att)
                    wins.append(dict(
                        attempt=att, rule=at.rule, ranking=at.ranking, fit=str(at.fit),
                        ties="fixed" if at.seed is None else "random", luby=at.luby,
                        cpu_s=round(time.process_time() - c0, 2)))
                if got is None:
                    break                     # proven: nothing fits
            row = dict(component=k, blocks=len(comp), sections=search.n_sec,
                       live=search.live_bound(), direction=direction, wins=wins,
                       attempts=att + 1, cpu_s=round(time.process_time() - c0, 2))
            rows.append(row)
            found = "; ".join(f"{w['attempt']} ({w['rule']}, {w['ranking']}, {w['fit']}, "
                              f"{w['ties']}, {w['cpu_s']})" for w in wins) or "none"
            line = (f"| {k} | {len(comp)} | {search.n_sec} | {row['live']:,} | {direction} | "
                    f"{found} | {row['attempts']} | {row['cpu_s']} |")
            lines.append(line)
            print(line, flush=True)
    if args.out:
        common.write_lines_and_rows(args.out, lines, rows)


if __name__ == "__main__":
    main()
