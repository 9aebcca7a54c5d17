"""Graph building stays near-linear on deep steps (olla_jax/graph/model.py):
the in-place edges of a k-member unit and the alias sweep of ``_units``,
each checked against the quadratic rule it replaces, on random inputs."""

from __future__ import annotations

import random

from olla_jax.graph import model


def _value(i, alloc, offset, size, s, e, def_node, touches, live_in=False):
    return model.Value(id=i, key=f"v{i}", size=size, allocation=alloc, offset=offset,
                       xla_range=(s, e), def_node=def_node, touches=frozenset(touches),
                       live_in=live_in, live_out=False)


def _accumulator(k: int, extra_readers: int, seed: int) -> model.ScheduleGraph:
    """A unit of k members written in place one after another (node 3i defines
    member i; a few nodes after it read it), as a deep step's gradient sum."""
    rng = random.Random(seed)
    values, n = {}, 3 * k + 3
    for i in range(k):
        d = 3 * i
        readers = {d + rng.randint(0, 2) for _ in range(extra_readers)}
        values[i] = _value(i, 0, 0, 64, d, d + 2, d, {d, *readers})
    unit = model.Unit(id=0, values=tuple(values), allocation=0, offset=0, size=64,
                      member_offsets=(0,) * k, movable=True)
    return model.ScheduleGraph(nodes=tuple(f"n{i}" for i in range(n)),
                               flat=tuple(f"n{i}" for i in range(n)),
                               block_end=tuple(range(n)), edges=(), values=values, units=(unit,),
                               allocations=(model.Allocation(0, 64, "temp"),),
                               temp_allocation=0)


def _all_pairs_edges(graph):
    """The rule as first written: every touch of an earlier member before every later def."""
    edges = set()
    for unit in graph.units:
        vals = sorted((graph.values[v] for v in unit.values), key=lambda v: v.xla_range[0])
        for i, a in enumerate(vals):
            for b in vals[i + 1:]:
                if b.def_node != a.def_node and not b.live_in:
                    edges.update((t, b.def_node) for t in a.touches if t < b.def_node)
    return edges


def _closure(n, edges):
    succ = [[] for _ in range(n)]
    for u, v in edges:
        succ[u].append(v)
    reach = []
    for s in range(n):
        seen, stack = set(), [s]
        while stack:
            for w in succ[stack.pop()]:
                if w not in seen:
                    seen.add(w)
                    stack.append(w)
        reach.append(seen)
    return reach


def test_in_place_edges_allow_the_same_orders_as_all_pairs():
    for seed in range(5):
        graph = _accumulator(12, 3, seed)
        fast, full = model._in_place_edges(graph), _all_pairs_edges(graph)
        assert fast <= full
        n = len(graph.nodes)
        assert _closure(n, fast) == _closure(n, full)


def test_in_place_edges_grow_linearly_with_the_members():
    counts = [len(model._in_place_edges(_accumulator(k, 2, 0))) for k in (50, 100, 200)]
    full = len(_all_pairs_edges(_accumulator(200, 2, 0)))
    assert counts[2] <= 2.2 * counts[1] <= 2.2 * 2.2 * counts[0]
    assert counts[2] * 20 < full   # the quadratic rule: ~k^2 / 2 edges


def _units_by_all_pairs(values):
    """Rule 1 as first written: values of one allocation sharing bytes while both live."""
    pairs = set()
    vals = sorted(values.values(), key=lambda v: v.xla_range[0])
    for i, a in enumerate(vals):
        for b in vals[i + 1:]:
            if a.allocation == b.allocation and a.xla_range[1] >= b.xla_range[0] \
                    and a.offset < b.offset + b.size and b.offset < a.offset + a.size:
                pairs.add((a.id, b.id))
    groups = {v: {v} for v in values}
    for a, b in pairs:
        merged = groups[a] | groups[b]
        for v in merged:
            groups[v] = merged
    return sorted({tuple(sorted(g)) for g in groups.values()})


def test_alias_sweep_ties_the_same_values_as_all_pairs():
    allocations = (model.Allocation(0, 1 << 20, "temp"), model.Allocation(1, 1 << 16, "temp"))
    for seed in range(20):
        rng = random.Random(seed)
        values = {}
        for i in range(120):
            s = rng.randint(0, 200)
            size = rng.choice([64, 128, 256, 4096, 60000])
            values[i] = _value(i, rng.randint(0, 1), rng.randrange(0, 1 << 16, 64), size, s,
                               s + rng.randint(0, 30), 0, {0})
        units = model._units(values, {}, allocations, {}, {})
        assert sorted(u.values for u in units) == _units_by_all_pairs(values)
