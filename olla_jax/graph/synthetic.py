"""A synthetic ScheduleGraph shaped like an unrolled train step, built without XLA.

The planner's input at any size in a second: the scale benchmark
(benchmarks/scale_synthetic.py) plans it at 100k+ nodes, and tests use small
ones.  L layers, 6 nodes each (forward and its activation, backward and its
input gradient, weight gradient, update): forward activations saved for the
backward pass, gradients passed down, one output allocation per layer written
by its update at the end (idle before, so it can hold temporaries).  XLA's
order is the node order, one flat step a node.
"""

from __future__ import annotations

import dataclasses

from olla_jax.graph import model


def deep_graph(layers: int, act: int = 65536, weight: int = 65536):
    """A ScheduleGraph of an unrolled step: 6 nodes a layer (see the module docstring)."""
    names, edges, values, units = [], set(), {}, []
    allocations = [model.Allocation(0, 0, "temp")]

    def node(name):
        names.append(name)
        return len(names) - 1

    def value(def_node, touches, size, alloc=0, offset=0, live_out=False):
        vid = len(values)
        values[vid] = model.Value(id=vid, key=f"v{vid}", size=size, allocation=alloc,
                                  offset=offset, xla_range=(def_node, def_node),
                                  def_node=def_node, touches=frozenset({def_node, *touches}),
                                  live_in=False, live_out=live_out)
        return vid

    fwd, mid = [], []
    prev = None
    for i in range(layers):
        a = node(f"fwd{i}")
        b = node(f"act{i}")
        if prev is not None:
            edges.add((prev, a))
        edges.add((a, b))
        fwd.append(a)
        mid.append(b)
        prev = b
    grad = prev
    bwd = []
    for i in reversed(range(layers)):
        g = node(f"bwd{i}")
        h = node(f"bwd_act{i}")
        w = node(f"wgrad{i}")
        edges.update({(grad, g), (mid[i], g), (fwd[i], h), (g, h), (h, w), (mid[i], w)})
        bwd.append((i, g, h, w))
        grad = h
    updates = []
    for i, g, h, w in bwd:
        u = node(f"update{i}")
        edges.add((w, u))
        updates.append((i, u))
    n = len(names)
    # Values, with XLA's order (node ids) as the flat schedule: one step a node.
    vid_of = {}
    for i in range(layers):
        vid_of[("x", i)] = value(fwd[i], {mid[i]}, act)                       # pre-activation
        vid_of[("a", i)] = value(mid[i], {fwd[i + 1]} if i + 1 < layers else set(), act)
    bwd_of = {i: (g, h, w) for i, g, h, w in bwd}
    for i, g, h, w in bwd:
        vid_of[("g", i)] = value(g, {h}, act)
        vid_of[("h", i)] = value(h, {w} | ({bwd_of[i - 1][0]} if i else set()), act)
        vid_of[("w", i)] = value(w, set(), weight)
    for i, u in updates:
        allocations.append(model.Allocation(len(allocations), weight, "output", live_out=True))
        vid_of[("u", i)] = value(u, set(), weight, alloc=len(allocations) - 1, live_out=True)
    # touches of consumers, XLA ranges from the touches
    consumers: dict[int, set[int]] = {v: set() for v in values}
    update_of = dict(updates)
    for i in range(layers):
        g, h, w = bwd_of[i]
        consumers[vid_of[("x", i)]].add(h)
        consumers[vid_of[("a", i)]] |= {g, w}
        consumers[vid_of[("w", i)]].add(update_of[i])
    offset = 0
    for vid, v in list(values.items()):
        touches = set(v.touches) | consumers[vid]
        last = n - 1 if v.live_out else max(touches)
        values[vid] = dataclasses.replace(v, touches=frozenset(touches),
                                          xla_range=(v.def_node, last),
                                          offset=offset if v.allocation == 0 else 0)
        if v.allocation == 0:
            offset += v.size
    allocations[0] = model.Allocation(0, offset, "temp")
    for vid, v in values.items():
        units.append(model.Unit(id=len(units), values=(vid,), allocation=v.allocation,
                                offset=v.offset, size=v.size, member_offsets=(0,),
                                movable=v.allocation == 0))
    return model.ScheduleGraph(nodes=tuple(names), flat=tuple(names), block_end=tuple(range(n)),
                               edges=tuple(sorted(edges)), values=values, units=tuple(units),
                               allocations=tuple(allocations), temp_allocation=0, alignment=256)
