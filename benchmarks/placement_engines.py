"""Placement engines compared: best-fit vs the canonical search vs CP-SAT vs the OLLA location ILP.

Usage: python benchmarks/placement_engines.py [--sizes 100 500 1000 5000] [--limit 20]
           [--ilp-max 1000] [--out benchmarks/results/placement_engines.md]

Interval sets (seeded):
  random    uniform starts, mostly short lives, sizes log-uniform 64 B .. 1 MiB;
  training  a forward/backward sweep, four steps per layer: activations live from
            their layer's forward steps to its backward steps, plus temporaries
            and gradients living 1-6 steps, sizes in 4 KiB multiples.
Every placement is checked with validate_placement.  "gap" is arena / live-bytes
bound - 1.  The exact engines start from best-fit and run up to --limit seconds.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from olla_jax.solve.place import best_fit, live_bytes_bound, place_exact, validate_placement  # noqa: E402
from olla_jax.solve.problem import Interval, PlacementProblem  # noqa: E402


def random_intervals(n: int, seed: int = 0) -> PlacementProblem:
    rng = np.random.default_rng(seed)
    horizon = max(10, n // 2)
    starts = rng.integers(0, horizon, n)
    lives = np.minimum(rng.geometric(0.08, n), horizon)
    sizes = np.exp(rng.uniform(np.log(64), np.log(1 << 20), n)).astype(np.int64)
    return PlacementProblem(tuple(Interval(int(s), int(a), int(a + d - 1))
                                  for s, a, d in zip(sizes, starts, lives)))


def training_intervals(n: int, seed: int = 0) -> PlacementProblem:
    """About n buffers from a forward/backward sweep over n // 6 layers, four
    steps per layer: activations live from their forward to their backward
    steps, temporaries and gradients for 1-6 steps around them."""
    rng = np.random.default_rng(seed)
    layers = max(1, n // 6)
    last = 8 * layers - 1
    ivs = []

    def kib(lo: int, hi: int) -> int:
        return int(rng.integers(lo, hi)) * 4096

    def short(at: int) -> tuple[int, int]:
        start = at + int(rng.integers(0, 4))
        return start, min(last, start + int(rng.integers(0, 6)))

    for layer in range(layers):
        fwd, bwd = 4 * layer, last - 4 * layer - 3          # first step of each phase
        ivs.append(Interval(kib(4, 256), fwd + int(rng.integers(0, 4)), bwd + int(rng.integers(0, 4))))
        for at in (fwd, fwd, bwd, bwd):                     # temporaries
            ivs.append(Interval(kib(1, 64), *short(at)))
        ivs.append(Interval(kib(1, 128), max(0, bwd - 2), bwd + int(rng.integers(0, 4))))  # gradient
    return PlacementProblem(tuple(ivs))


def pairs_live_together(p: PlacementProblem) -> int:
    starts = np.array([iv.start for iv in p.intervals])
    ends = np.array([iv.end for iv in p.intervals])
    order = np.argsort(starts)
    s, e = starts[order], ends[order]
    # for each interval, the later-starting ones that start before it ends
    return int((np.searchsorted(s, e, side="right") - np.arange(len(s)) - 1).sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 500, 1000, 5000])
    parser.add_argument("--limit", type=float, default=20.0, help="seconds per exact engine")
    parser.add_argument("--ilp-max", type=int, default=1000, help="skip the ILP above this many buffers")
    parser.add_argument("--out", type=Path, default=None, help="also write the table here")
    args = parser.parse_args()
    lines = ["# Placement engines: arena / live-bytes bound and time", "",
             "Command: `python benchmarks/placement_engines.py " + " ".join(sys.argv[1:]) + "`", "",
             "| set | buffers | pairs | live-bytes bound | engine | arena | gap | seconds |",
             "|---|---|---|---|---|---|---|---|"]
    print("\n".join(lines), flush=True)
    for kind, make in (("random", random_intervals), ("training", training_intervals)):
        for size in args.sizes:
            p = make(size)
            bound = live_bytes_bound(p)
            pairs = pairs_live_together(p)
            t0 = time.perf_counter()
            greedy = best_fit(p)
            runs = [("best_fit", greedy, time.perf_counter() - t0)]
            for engine in ("canonical", "cpsat", "ilp-highs", "ilp-cbc"):
                if engine.startswith("ilp") and len(p.intervals) > args.ilp_max:
                    runs.append((engine, None, 0.0))
                    continue
                t0 = time.perf_counter()
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    found = place_exact(p, time_limit_s=args.limit, engine=engine, hint=greedy)
                crashed = any("failed, keeping the hint" in str(w.message) for w in caught)
                runs.append((engine + (" (crashed: hint kept)" if crashed else ""), found,
                             time.perf_counter() - t0))
            for engine, pl, secs in runs:
                if pl is None:
                    row = f"| {kind} | {len(p.intervals)} | {pairs} | {bound} | {engine} | skipped (> --ilp-max) | | |"
                else:
                    validate_placement(p, pl)
                    gap = pl.arena_size / bound - 1 if bound else 0.0
                    row = (f"| {kind} | {len(p.intervals)} | {pairs} | {bound} | {engine} | {pl.arena_size} | "
                           f"{100 * gap:.2f}% | {secs:.2f} |")
                lines.append(row)
                print(row, flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
