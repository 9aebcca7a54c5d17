"""Exact placement engines on the placement problems that real plans hand them.

Usage: python -m benchmarks.placement_graphs [--examples mlp,cnn_adam,gpt2,densenet]
           [--size tiny] [--limit 3] [--out benchmarks/results/placement_graphs]
           [--backend cpu] [--engines canonical,cpsat,auto] [--plans_dir DIR]

Each example step is captured (CPU) and its placement problem under XLA's
own order built as ``solve_graph`` builds one for any order (idle output
regions and their occupants included).  Each engine then runs on it alone
for --limit seconds from the best-fit placement: "canonical" (the arena only, region
choices kept), "cpsat", and "auto" (place_exact's default: canonical, then
CP-SAT where blocks may use regions).  Every placement is checked with
validate_placement.  Per problem: blocks, regions, the live-bytes bound,
best-fit's arena and each engine's arena and seconds.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import common  # noqa: E402

ENGINES = ("canonical", "cpsat", "auto")


def record(names: list[str], size: str, backend: str = "cpu",
           plans_dir: Path | None = None) -> list[tuple[str, object, object]]:
    """(example, PlacementProblem, best-fit hint): each example's step captured
    (on ``backend``: CPU, or a compile-only GPU target) and its placement problem
    (with ``plans_dir``, a suite run's saved plans: under the order of the
    example's plan there, captured with the XLA scheduler it was planned on) under XLA's own order, idle output regions
    and their occupants included (what ``solve_graph`` builds for an order)."""
    import examples
    from olla_jax.capture import capture
    from olla_jax.capture.base import Backend
    from olla_jax.graph import model
    from olla_jax.solve.place import best_fit

    out = []
    for name in names:
        step = examples.get(name, size)
        saved = json.loads((plans_dir / f"{name}.json").read_text()) if plans_dir else None
        cap = capture(step.fn, *step.args, backend=backend, static_argnums=step.static_argnums,
                      donate_argnums=step.donate_argnums,
                      scheduler=saved["xla_scheduler"] if saved else "default")
        graph = model.build(cap.hlo_proto, cap.values_text, cap.live_range_text,
                            alignment=Backend.parse(backend).alignment)
        order = graph.xla_order
        if saved:
            if sorted(saved["order"]) != sorted(graph.nodes):
                raise SystemExit(f"{name}: the saved plan's order does not match the capture")
            order = tuple(graph.node_index[n] for n in saved["order"])
        problem, _ = graph.placement_problem(order)
        out.append((name, problem, best_fit(problem)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", default="mlp,cnn_adam,gpt2,densenet")
    parser.add_argument("--size", default="tiny")
    parser.add_argument("--limit", type=float, default=3.0)
    parser.add_argument("--out", type=Path, default=None, help="write OUT.md and OUT.json")
    parser.add_argument("--backend", default="cpu", help="cpu, or a compile-only GPU target (gpu:h100)")
    parser.add_argument("--engines", default=",".join(ENGINES), help="of " + ",".join(ENGINES))
    parser.add_argument("--plans_dir", type=Path, default=None,
                        help="a suite run's <out>_plans: each example under its plan's order")
    args = parser.parse_args()
    engines = tuple(args.engines.split(","))
    common.gpu_environment(args.backend)
    from olla_jax.solve.place import live_bytes_bound, place_exact, validate_placement
    from olla_jax.solve.place_model import build_model

    problems = record(args.examples.split(","), args.size, args.backend, args.plans_dir)
    lines = common.header("Exact placement engines on plans' placement problems",
                          {"examples": args.examples, "size": args.size, "backend": args.backend,
                           "orders": f"the plans in {args.plans_dir}" if args.plans_dir
                           else "XLA's",
                           "engine limit": f"{args.limit} s", "load (1/5/15 min)": common.load()})
    lines += ["Shared machine (2 cores, other jobs running): seconds are wall time.", "",
              "| example | blocks | usable regions | bound | best-fit | "
              + " | ".join(f"{e} (s)" for e in engines) + " |",
              "|---" * (5 + len(engines)) + "|"]
    print("\n".join(lines), flush=True)
    rows = []
    for name, problem, hint in problems:
        model = build_model(problem)
        usable = sum(1 for r in range(len(problem.regions))
                     if any(model.fits_region(b, r) for b in range(len(model.blocks))))
        row = dict(example=name, blocks=len(model.blocks), usable_regions=usable,
                   bound=live_bytes_bound(problem), best_fit=hint.arena_size)
        cells = []
        for engine in engines:
            t0 = time.perf_counter()
            placement = place_exact(problem, time_limit_s=args.limit, engine=engine, hint=hint)
            secs = time.perf_counter() - t0
            validate_placement(problem, placement)
            row[engine] = placement.arena_size
            row[f"{engine}_s"] = round(secs, 2)
            cells.append(f"{placement.arena_size:,} ({secs:.1f})")
        rows.append(row)
        line = (f"| {name} | {row['blocks']} | {usable} | {row['bound']:,} | {hint.arena_size:,} | "
                + " | ".join(cells) + " |")
        lines.append(line)
        print(line, flush=True)
    if args.out:
        common.write_lines_and_rows(args.out, lines, rows)


if __name__ == "__main__":
    main()
