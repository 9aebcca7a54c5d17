"""Compare the order engines on synthetic training-step graphs.

Graphs: a forward pass (MLP chain, residual CNN, or transformer blocks), the
backward pass mirroring it (each op's backward reads its output gradient and the
saved inputs), gradient accumulation where a value has several users, and one
optimizer update per parameter writing new weights and two moments into output
regions (live out) with a temporary while it runs. Program order (forward,
backward, then all updates) is the warm start every engine gets.

    python benchmarks/order_engines.py [--time 30] [--suites small,large] [--engines list,cpsat,...]
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import sys
import time

from olla_jax.solve.order import ENGINES, solve_order
from olla_jax.solve.problem import Item, OrderProblem, order_cost


@dataclasses.dataclass
class _Builder:
    """Grows a forward graph, then derives backward and optimizer nodes."""
    edges: set = dataclasses.field(default_factory=set)
    extra: list = dataclasses.field(default_factory=list)
    values: list = dataclasses.field(default_factory=list)     # [size, producer, readers, region, live_out]
    forward: list = dataclasses.field(default_factory=list)    # (node, input values, out value, params)
    params: list = dataclasses.field(default_factory=list)     # parameter sizes
    regions: list = dataclasses.field(default_factory=list)

    def _node(self, inputs, extra=0):
        v = len(self.extra)
        self.extra.append(extra)
        for x in inputs:
            size, prod, readers, _, _ = self.values[x]
            readers.append(v)
            if prod is not None:
                self.edges.add((prod, v))
        return v

    def _value(self, size, producer, region=-1, live_out=False):
        self.values.append([size, producer, [], region, live_out])
        return len(self.values) - 1

    def input(self, size):
        return self._value(size, None)

    def op(self, inputs, size, param_sizes=(), extra=0):
        node = self._node(inputs, extra)
        out = self._value(size, node)
        ps = []
        for s in param_sizes:
            self.params.append(s)
            ps.append(len(self.params) - 1)
        self.forward.append((node, tuple(inputs), out, tuple(ps)))
        return out

    def finish(self) -> OrderProblem:
        """Add the backward pass (input gradients and each parameter gradient as
        separate nodes, like two dots) and the optimizer updates."""
        last = self.forward[-1][2]
        grads: dict[int, list[int]] = {last: [self.op_plain([last], self.values[last][0])]}
        for node, inputs, out, ps in reversed(self.forward):
            if out not in grads:
                continue
            g = self._sum(grads.pop(out))
            needs = [x for x in inputs if self.values[x][1] is not None]
            if needs:
                bnode = self._node([g, *inputs], extra=self.values[g][0] // 4)
                for x in needs:
                    grads.setdefault(x, []).append(self._value(self.values[x][0], bnode))
            for p in ps:
                pnode = self._node([g, *inputs])
                pg = self._value(self.params[p], pnode)
                unode = self._node([pg], extra=self.params[p])
                for _ in range(3):  # new weight, first and second moment
                    self.regions.append(self.params[p])
                    self._value(self.params[p], unode, region=len(self.regions) - 1, live_out=True)
        items = []
        for size, prod, readers, region, live_out in self.values:
            defs = () if prod is None else (prod,)
            items.append(Item(size, defs, tuple(sorted(set(defs) | set(readers))), region,
                              live_in=prod is None, live_out=live_out))
        return OrderProblem(len(self.extra), tuple(sorted(self.edges)), tuple(items),
                            tuple(self.extra), tuple(self.regions))

    def op_plain(self, inputs, size):
        node = self._node(inputs)
        return self._value(size, node)

    def _sum(self, parts):
        while len(parts) > 1:
            a, b = parts.pop(), parts.pop()
            parts.insert(0, self.op_plain([a, b], self.values[a][0]))
        return parts[0]


def mlp(layers: int, width: int = 1 << 20, seed: int = 0) -> OrderProblem:
    rng = random.Random(seed)
    b = _Builder()
    x = b.input(width)
    for _ in range(layers):
        w = width * rng.choice((1, 2, 4)) // 2
        h = b.op([x], w, param_sizes=(w // 8,))
        x = b.op([h], w, extra=w // 16)
    return b.finish()


def cnn(blocks: int, act: int = 1 << 22) -> OrderProblem:
    """Residual blocks (conv-bn-relu-conv-bn-add-relu); the spatial size halves every 4 blocks."""
    b = _Builder()
    x = b.input(act)
    size = act
    for i in range(blocks):
        if i and i % 4 == 0:
            size //= 2
            x = b.op([x], size, param_sizes=(size // 64,))
        c1 = b.op([x], size, param_sizes=(size // 32,), extra=size // 8)
        n1 = b.op([c1], size, param_sizes=(256,))
        r1 = b.op([n1], size)
        c2 = b.op([r1], size, param_sizes=(size // 32,), extra=size // 8)
        n2 = b.op([c2], size, param_sizes=(256,))
        x = b.op([b.op([n2, x], size)], size)
    return b.finish()


def transformer(layers: int, d: int = 1 << 18, heads: int = 4, seq_ratio: int = 2) -> OrderProblem:
    """Pre-LN blocks: attention with per-head score chains, and an MLP."""
    b = _Builder()
    x = b.input(d)
    scores = d * seq_ratio
    for _ in range(layers):
        h = b.op([x], d, param_sizes=(1024,))
        q = b.op([h], d, param_sizes=(d // 4,))
        k = b.op([h], d, param_sizes=(d // 4,))
        v = b.op([h], d, param_sizes=(d // 4,))
        mixed = []
        for _ in range(heads):
            s = b.op([q, k], scores, extra=scores // 8)
            p = b.op([s], scores)
            mixed.append(b.op([p, v], d // heads))
        o = b.op(mixed, d, param_sizes=(d // 4,))
        x = b.op([x, o], d)
        h2 = b.op([x], d, param_sizes=(1024,))
        u = b.op([h2], 4 * d, param_sizes=(d,))
        g = b.op([u], 4 * d)
        dn = b.op([g], d, param_sizes=(d,))
        x = b.op([x, dn], d)
    b.op([x], d // 8, param_sizes=(d // 2,))  # head
    return b.finish()


def breadth_first(problem: OrderProblem) -> list[int]:
    """Nodes by longest-path depth (then id): XLA:CPU's default favours this.
    Node ids are a topological order in these graphs, which the loop relies on."""
    depth = [0] * problem.num_nodes
    for u, v in sorted(problem.edges, key=lambda e: e[1]):
        depth[v] = max(depth[v], depth[u] + 1)
    return sorted(range(problem.num_nodes), key=lambda v: (depth[v], v))


SUITES = {
    "small": [("mlp-8", lambda: mlp(8)), ("cnn-4", lambda: cnn(4)),
              ("transformer-1", lambda: transformer(1)), ("transformer-2", lambda: transformer(2)),
              ("cnn-12", lambda: cnn(12)), ("transformer-6", lambda: transformer(6))],
    "large": [("transformer-24", lambda: transformer(24)), ("cnn-100", lambda: cnn(100)),
              ("transformer-120", lambda: transformer(120)),
              ("transformer-260", lambda: transformer(260))],
}
# engines worth running per graph size (the whole-graph models cannot even start on big graphs)
MAX_NODES = {"cpsat": 2500, "ilp-highs": 500, "ilp-cbc": 500}


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--time", type=float, default=30.0, help="seconds per engine and graph")
    parser.add_argument("--suites", default="small,large")
    parser.add_argument("--engines", default=",".join(e for e in ENGINES))
    args = parser.parse_args(argv)
    engines = args.engines.split(",")
    print(f"`python benchmarks/order_engines.py {' '.join(argv)}`".replace(" `", "`"))
    print()
    print("Cost = peak arena bytes (problem.order_cost). Delta vs the best list schedule "
          "(negative = better). Warm starts: breadth-first and program order.")
    print()
    print("| graph | nodes | items | engine | cost | vs best list | seconds | proven | produced by |")
    print("|---|---:|---:|---|---:|---:|---:|---|---|")
    for suite in args.suites.split(","):
        for name, build in SUITES[suite]:
            problem = build()
            warm = [breadth_first(problem), list(range(problem.num_nodes))]
            bfs = order_cost(problem, warm[0])
            listed = solve_order(problem, warm_starts=(), time_limit_s=args.time, engine="list")
            rows = [("breadth-first", bfs, 0.0, False, "warm start")]
            for engine in engines:
                if problem.num_nodes > MAX_NODES.get(engine, 1 << 30):
                    continue
                t = time.monotonic()
                res = solve_order(problem, warm_starts=warm, time_limit_s=args.time, engine=engine,
                                  seed=0)
                rows.append((engine, res.cost, time.monotonic() - t, res.proven_optimal, res.engine))
            for engine, cost, secs, proven, source in rows:
                delta = 100.0 * (cost - listed.cost) / listed.cost if listed.cost else 0.0
                print(f"| {name} | {problem.num_nodes} | {len(problem.items)} | {engine} | {cost:,} "
                      f"| {delta:+.3f}% | {secs:.1f} | {'yes' if proven else ''} | {source} |",
                      flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
