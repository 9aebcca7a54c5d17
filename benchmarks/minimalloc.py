"""MiniMalloc's challenging benchmarks (A-K) through ``olla_jax.place``.

Usage: python -m benchmarks.minimalloc [--time_limit_s=10] [--capacity=1048576]
           [--instances=ABCDEFGHIJK] [--out=benchmarks/results/minimalloc]

Each instance (benchmarks/data/minimalloc/*.csv, from google/minimalloc,
Apache-2.0) is placed with ``olla_jax.place(buffers, capacity=...)``: best-fit,
then the canonical search (the section search raced against the ordered
search), stopping at the first placement that fits.  Every
placement is checked by ``validate_placement``.  Per instance: buffers, the
live-bytes bound, whether it fits, the arena, seconds, and the equivalent CLI
command.  With --out, writes OUT.md and OUT.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import common  # noqa: E402
from olla_jax.placement import place  # noqa: E402
from olla_jax.solve.csv_io import CapacityError, read_csv  # noqa: E402
from olla_jax.solve.place_check import live_bytes_bound, validate_placement  # noqa: E402

DATA = ROOT / "benchmarks" / "data" / "minimalloc"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--time_limit_s", type=float, default=10.0)
    parser.add_argument("--capacity", type=int, default=1048576)
    parser.add_argument("--instances", default="ABCDEFGHIJK")
    parser.add_argument("--out", type=Path, default=None, help="write OUT.md and OUT.json")
    args = parser.parse_args()
    lines = common.header("MiniMalloc challenging benchmarks through olla_jax.place",
                          {"capacity": args.capacity, "time limit": f"{args.time_limit_s} s",
                           "load (1/5/15 min)": common.load()})
    lines += ["Seconds are wall time on a shared machine; CPU seconds are this process's own.", "",
              "| instance | buffers | live-bytes bound | fits | arena | seconds | CPU seconds | command |",
              "|---|---|---|---|---|---|---|---|"]
    print("\n".join(lines), flush=True)
    rows = []
    for name in args.instances:
        path = DATA / f"{name}.{args.capacity}.csv"
        if not path.exists():
            path = DATA / f"{name}.1048576.csv"
        problem = read_csv(path).problem
        buffers = [(iv.start, iv.end + 1, iv.size) for iv in problem.intervals]
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            placement = place(buffers, capacity=args.capacity, time_limit_s=args.time_limit_s)
            fits, arena = True, placement.arena_size
            validate_placement(problem, placement)
        except CapacityError as err:
            fits, arena = False, err.best
        secs, cpu = time.perf_counter() - t0, time.process_time() - c0
        command = (f"olla-jax place --csv={path.relative_to(ROOT)} --out=/tmp/{name}.out.csv "
                   f"--capacity={args.capacity} --time_limit_s={args.time_limit_s:g}")
        row = dict(instance=name, buffers=len(buffers), bound=live_bytes_bound(problem), fits=fits,
                   arena=arena, seconds=round(secs, 2), cpu_seconds=round(cpu, 2), command=command)
        rows.append(row)
        line = (f"| {name} | {row['buffers']} | {row['bound']:,} | {'yes' if fits else 'no'} | "
                f"{arena:,} | {secs:.2f} | {cpu:.2f} | `{command}` |")
        lines.append(line)
        print(line, flush=True)
    total = f"{sum(r['fits'] for r in rows)} of {len(rows)} fit, {sum(r['seconds'] for r in rows):.1f} s in all"
    lines += ["", total]
    print("\n" + total)
    if args.out:
        common.write_lines_and_rows(args.out, lines, rows)


if __name__ == "__main__":
    main()
