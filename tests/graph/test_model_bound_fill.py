"""A bound's output region holds at most what whole units larger than the
threshold can fill of it (``ScheduleGraph._fillable``): a 2.25 KiB output
idle while a 2 KiB and a 1 KiB temporary are live takes 2 KiB of them, so
the arena needs 1 KiB, where the fluid count (2.25 KiB idle) said 0.75.
The raised bound is checked against the least arena of every order and
every whole-unit placement (brute force), against a verified plan, and on
random graphs against plans of random orders."""

from __future__ import annotations

import itertools
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent))
from small_steps import random_order  # noqa: E402

from olla_jax import strategy
from olla_jax.graph import model
from olla_jax.solve import bounds, place
from olla_jax.solve.problem import order_cost

KIB = 1024


def _graph(temps, outputs, edges, order_len, alignment=256):
    """A ScheduleGraph of ``order_len`` nodes (XLA's order: node ids).
    ``temps``: (size, def node, last touch) of movable units in the arena;
    ``outputs``: (size, writer node) of output allocations, each written
    once and live to the end."""
    values, units = {}, []
    allocations = [model.Allocation(0, 0, "temp")]
    offset = 0
    for size, d, last in temps:
        vid = len(values)
        values[vid] = model.Value(id=vid, key=f"t{vid}", size=size, allocation=0, offset=offset,
                                  xla_range=(d, last), def_node=d, touches=frozenset({d, last}),
                                  live_in=False, live_out=False)
        units.append(model.Unit(len(units), (vid,), 0, offset, size, (0,), True))
        offset += size
    allocations[0] = model.Allocation(0, offset, "temp")
    for size, w in outputs:
        a = len(allocations)
        allocations.append(model.Allocation(a, size, "output", live_out=True))
        vid = len(values)
        values[vid] = model.Value(id=vid, key=f"o{vid}", size=size, allocation=a, offset=0,
                                  xla_range=(w, order_len - 1), def_node=w,
                                  touches=frozenset({w}), live_in=False, live_out=True)
        units.append(model.Unit(len(units), (vid,), a, 0, size, (0,), False))
    names = tuple(f"n{i}" for i in range(order_len))
    return model.ScheduleGraph(nodes=names, flat=names, block_end=tuple(range(order_len)),
                               edges=tuple(sorted(edges)), values=values, units=tuple(units),
                               allocations=tuple(allocations), temp_allocation=0,
                               alignment=alignment)


def _min_cut(graph) -> int:
    return max(bounds.min_cut_bound(graph.threshold_problem(c, for_bound=True),
                                    time_limit_s=30).value
               for c in sorted({0, *graph.order_problem().region_sizes}))


def _brute_force(graph) -> int:
    """The least arena over every order and every choice of each movable unit
    whole in the arena or in one output region idle over its whole life
    (offsets ignored: a relaxation of placement, so at most the optimum)."""
    n = len(graph.nodes)
    movable = [u for u in graph.units if u.movable]
    outs = [u for u in graph.units if not u.movable]
    best = None
    for order in itertools.permutations(range(n)):
        pos = {node: k for k, node in enumerate(order)}
        if any(pos[a] > pos[b] for a, b in graph.edges):
            continue
        spans = []
        for u in movable:
            v = graph.values[u.values[0]]
            spans.append((pos[v.def_node], max(pos[t] for t in v.touches)))
        written = [pos[graph.values[o.values[0]].def_node] for o in outs]
        for where in itertools.product(range(-1, len(outs)), repeat=len(movable)):
            ok, arena = True, 0
            for r in range(len(outs)):
                ins = [k for k, w in enumerate(where) if w == r]
                if any(spans[k][1] >= written[r] or movable[k].size > outs[r].size for k in ins):
                    ok = False
                    break
                for t in range(n):
                    if sum(movable[k].size for k in ins if spans[k][0] <= t <= spans[k][1]) \
                            > outs[r].size:
                        ok = False
            if not ok:
                continue
            for t in range(n):
                arena = max(arena, sum(movable[k].size for k, w in enumerate(where)
                                       if w == -1 and spans[k][0] <= t <= spans[k][1]))
            best = arena if best is None else min(best, arena)
    return best


def _two_temps_one_output():
    # n0 writes A (2 KiB), n1 writes B (1 KiB), n2 reads both, n3 writes the
    # 2.25 KiB output after them.
    return _graph([(2 * KIB, 0, 2), (KIB, 1, 2)], [(2 * KIB + KIB // 4, 3)],
                  {(0, 1), (1, 2), (2, 3)}, 4)


def test_a_region_counts_only_what_whole_units_fill_of_it():
    graph = _two_temps_one_output()
    problem = graph.threshold_problem(0, for_bound=True)
    assert problem.region_sizes == (2 * KIB,)     # fluid: 2.25 KiB
    assert _min_cut(graph) == KIB                  # the fluid count proved 0.75 KiB
    assert _brute_force(graph) == KIB


def test_the_raised_bound_is_at_most_a_verified_plan():
    graph = _two_temps_one_output()
    solution = strategy.solve_graph(graph, time_limit_s=2)
    assert solution.lower_bound_bytes == KIB
    assert solution.layout.temp_bytes >= KIB


def test_random_graphs_bound_at_most_the_optimum_and_placed_orders():
    """On random small graphs: the min-cut bound is at most the brute-force
    optimum, and every bound problem's cost of a random order at most that
    order's placed arena (a placement the solver found for it)."""
    rng = random.Random(7)
    sizes = [KIB, 2 * KIB, 3 * KIB]
    raised = 0
    for trial in range(15):
        n = rng.randrange(4, 7)
        edges = {(rng.randrange(i), i) for i in range(1, n)}
        temps = []
        for _ in range(rng.randrange(2, 5)):
            d = rng.randrange(n - 1)
            last = rng.randrange(d + 1, n)
            edges.add((d, last))
            temps.append((rng.choice(sizes), d, last))
        outputs = [(rng.choice(sizes) + rng.choice((0, KIB // 4, KIB // 2)), rng.randrange(n))
                   for _ in range(rng.randrange(1, 3))]
        graph = _graph(temps, outputs, edges, n)
        assert _min_cut(graph) <= _brute_force(graph), trial
        for seed in range(2):
            order = random_order(graph, seed)
            placed = place.place(graph.placement_problem(order)[0], time_limit_s=1)
            for c in sorted({0, *graph.order_problem().region_sizes}):
                problem = graph.threshold_problem(c, for_bound=True)
                assert order_cost(problem, order) <= placed.arena_size, (trial, seed, c)
        fluid = sum(size for size, _ in outputs)
        raised += sum(graph.threshold_problem(0, for_bound=True).region_sizes) < fluid
    assert raised, "no random graph had a region that whole units could not fill"
