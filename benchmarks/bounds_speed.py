"""Run time of the per-node min-cut bound: OR-tools max-flow vs the own Dinic.

Usage: python benchmarks/bounds_speed.py [--sizes 1000 5000 10000] [--limit 120]
           [--out benchmarks/results/bounds_speed.md]

Synthetic DAGs (seeded):
  training  forward layers of parallel branches, activations kept for the
            backward pass, per-layer optimizer updates of live-in/live-out weights,
            one output region per layer for the updated weights;
  local     each node reads 1-3 values defined by the previous 30 nodes;
  random    each node reads 1-2 values defined by any earlier nodes.
"seconds" is the whole bound; "ms per max-flow" divides it by the flows solved.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from olla_jax.solve.bounds import min_cut_bound, simple_bound  # noqa: E402
from olla_jax.solve.problem import ARENA, Item, OrderProblem  # noqa: E402


def training_dag(num_nodes: int, seed: int = 0, branches: int = 4) -> OrderProblem:
    """A forward/backward/update graph of about ``num_nodes`` nodes.

    Per layer: ``branches`` forward nodes and a join; in the backward pass
    ``branches`` nodes reading the incoming gradient and their forward
    activation, a join producing the next gradient and the weight gradient, and
    an update writing the new weights into that layer's output region.
    """
    rng = np.random.default_rng(seed)
    layers = max(1, num_nodes // (2 * branches + 3))
    edges: list[tuple[int, int]] = []
    items: list[Item] = []
    region_sizes: list[int] = []
    count = 0

    def kib(lo: int, hi: int) -> int:
        return int(rng.integers(lo, hi)) * 1024

    def node(*preds: int) -> int:
        nonlocal count
        edges.extend((u, count) for u in preds)
        count += 1
        return count - 1

    acts, joins, prev = [], [], None
    for _ in range(layers):
        outs = [node(*([prev] if prev is not None else [])) for _ in range(branches)]
        prev = node(*outs)
        acts.append(outs)
        joins.append(prev)
    readers: dict[int, list[int]] = {}
    grad_def, grad_size = prev, kib(1, 64)        # loss gradient, defined by the last join
    for layer in reversed(range(layers)):
        bwd = [node(grad_def, acts[layer][b]) for b in range(branches)]
        items.append(Item(grad_size, defs=(grad_def,), touches=(grad_def, *bwd)))
        for b, v in enumerate(bwd):
            readers.setdefault(acts[layer][b], []).append(v)
        join = node(*bwd)
        for v in bwd:
            items.append(Item(kib(1, 64), defs=(v,), touches=(v, join)))
        upd = node(join)
        w = kib(4, 256)
        region_sizes.append(w)
        items.append(Item(w, defs=(), touches=(upd, *bwd), live_in=True))      # old weights
        items.append(Item(w, defs=(upd,), touches=(upd,), region=len(region_sizes) - 1,
                          live_out=True))                                     # new weights
        items.append(Item(w, defs=(join,), touches=(join, upd)))             # weight gradient
        grad_def, grad_size = join, kib(1, 64)
    for layer, outs in enumerate(acts):
        nxt = joins[layer]
        for v in outs:
            items.append(Item(kib(8, 128), defs=(v,), touches=(v, nxt, *readers.get(v, ()))))
        items.append(Item(kib(1, 64), defs=(nxt,), touches=(nxt, *([joins[layer + 1]] if layer + 1 < layers else []))))
    extra = tuple(int(x) for x in rng.integers(0, 4, count) * 1024)
    return OrderProblem(count, tuple(edges), tuple(items), extra, tuple(region_sizes))


def local_dag(num_nodes: int, seed: int = 0, window: int = 30) -> OrderProblem:
    """Each node reads 1-3 values defined among the previous ``window`` nodes."""
    rng = np.random.default_rng(seed)
    readers: dict[int, list[int]] = {}
    edges = set()
    for v in range(1, num_nodes):
        lo = max(0, v - window)
        for u in rng.choice(np.arange(lo, v), size=min(v - lo, int(rng.integers(1, 4))), replace=False):
            edges.add((int(u), v))
            readers.setdefault(int(u), []).append(v)
    items = tuple(Item(int(rng.integers(1, 256)) * 1024, defs=(u,), touches=(u, *readers.get(u, ())),
                       region=ARENA, live_out=u >= num_nodes - 3) for u in range(num_nodes))
    return OrderProblem(num_nodes, tuple(sorted(edges)), items, tuple([0] * num_nodes))


def random_dag(num_nodes: int, seed: int = 0) -> OrderProblem:
    """Each node reads 1-2 values defined by any earlier nodes (long-range: a
    worst case for pruning, nearly every node needs its own max-flow)."""
    rng = np.random.default_rng(seed)
    readers: dict[int, list[int]] = {}
    edges = set()
    for v in range(1, num_nodes):
        for u in rng.choice(v, size=min(v, int(rng.integers(1, 3))), replace=False):
            edges.add((int(u), v))
            readers.setdefault(int(u), []).append(v)
    items = tuple(Item(int(rng.integers(1, 1000)), defs=(u,), touches=(u, *readers.get(u, ())))
                  for u in range(num_nodes))
    return OrderProblem(num_nodes, tuple(sorted(edges)), items, tuple([0] * num_nodes))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000, 10000])
    parser.add_argument("--limit", type=float, default=120.0, help="time limit per bound (s)")
    parser.add_argument("--out", type=Path, default=None, help="also write the table here")
    args = parser.parse_args()
    lines = ["# Min-cut lower bound: run time by max-flow engine", "",
             "Command: `python benchmarks/bounds_speed.py " + " ".join(sys.argv[1:]) + "`", "",
             "| graph | nodes | items | simple bound | min-cut bound | engine | seconds | max-flows | ms per max-flow | complete |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    print("\n".join(lines), flush=True)
    for kind, make in (("training", training_dag), ("local", local_dag), ("random", random_dag)):
        for size in args.sizes:
            p = make(size)
            simple = simple_bound(p)
            for flow in ("ortools", "dinic"):
                t0 = time.perf_counter()
                b = min_cut_bound(p, flow=flow, time_limit_s=args.limit)
                secs = time.perf_counter() - t0
                per_flow = f"{1000 * b.seconds / b.flows:.1f}" if b.flows else "-"
                row = (f"| {kind} | {p.num_nodes} | {len(p.items)} | {simple.value} | {b.value} | {flow} | "
                       f"{secs:.2f} | {b.flows} | {per_flow} | {b.complete} |")
                lines.append(row)
                print(row, flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
