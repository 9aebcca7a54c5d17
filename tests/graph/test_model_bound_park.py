"""Whole units parked in a bound's regions at one node (``solve.bound_park``,
``graph.park``): an output's idle space takes only units that fit it whole
and that are not read by its writer (or after it).  Checked against brute
force (every order, every whole-unit choice of arena or an output idle over
the unit's life), against placements of random orders, and on a step where
the bound rises: two 1 KiB temporaries live beside one idle 1.5 KiB output,
which the fluid count (and the subset sums: a 1/2 KiB unit lives later)
let them share."""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent))
sys.path.insert(0, str(Path(__file__).parent))
from small_steps import random_order  # noqa: E402
from test_model_bound_fill import KIB, _brute_force, _graph, _min_cut  # noqa: E402

from olla_jax import strategy
from olla_jax.graph import park
from olla_jax.solve import bound_park, bounds, place


def _park_value(graph) -> int:
    """The most ``node_minimum`` proves over every threshold and single node."""
    best = 0
    for c in sorted({0, *graph.order_problem().region_sizes}):
        found = park.park_problem(graph, c)
        cuts = bounds.NodeCuts(found.problem)
        for n in sorted(found.nodes):
            value, exact = bound_park.node_minimum(found, n, time_limit_s=10,
                                                   floor=max(0, cuts.before(n)[0]))
            assert exact
            best = max(best, value)
    return best


def _two_live_one_output():
    # n0 writes A (1 KiB), n1 writes B (1 KiB), n2 reads both; n3 writes E
    # (1/2 KiB), n4 reads it; n5 writes the 1.5 KiB output.  At n1-n2 the
    # output is idle and A and B are live: whole, one of them fits it.  The
    # subset sums count 1.5 KiB fillable (1 + 1/2 KiB units exist).
    return _graph([(KIB, 0, 2), (KIB, 1, 2), (KIB // 2, 3, 4)], [(KIB + KIB // 2, 5)],
                  {(0, 1), (1, 2), (2, 3), (3, 4), (4, 5)}, 6)


def test_an_idle_output_takes_whole_units_live_then():
    graph = _two_live_one_output()
    assert _min_cut(graph) == KIB // 2          # the fluid count: 2 - 1.5 KiB
    assert _park_value(graph) == KIB
    assert _brute_force(graph) == KIB


def test_the_plan_bound_rises_and_stays_under_the_plan():
    graph = _two_live_one_output()
    solution = strategy.solve_graph(graph, time_limit_s=3)
    assert solution.lower_bound_bytes == KIB     # before: 1/2 KiB
    assert solution.layout.temp_bytes >= solution.lower_bound_bytes


def test_park_up_raises_a_threshold_from_the_orders_costliest_nodes():
    graph = _two_live_one_output()
    per_cap = {0: KIB // 2}
    order = random_order(graph, 0)
    value = strategy._park_up(graph, per_cap, KIB // 2, [order], time.monotonic,
                              time.monotonic() + 5)
    assert value == KIB and per_cap[0] == value


def _random_graphs(seed: int, count: int):
    """Small random steps: temporaries of 1-3 KiB, 1-3 outputs of about that."""
    rng = random.Random(seed)
    sizes = [KIB, 2 * KIB, 3 * KIB]
    for _ in range(count):
        n = rng.randrange(4, 7)
        edges = {(rng.randrange(i), i) for i in range(1, n)}
        temps = []
        for _ in range(rng.randrange(2, 5)):
            d = rng.randrange(n - 1)
            last = rng.randrange(d + 1, n)
            edges.add((d, last))
            temps.append((rng.choice(sizes), d, last))
        outputs = [(rng.choice(sizes) + rng.choice((0, 0, KIB // 4)), rng.randrange(n))
                   for _ in range(rng.randrange(1, 4))]
        yield _graph(temps, outputs, edges, n)


def test_random_graphs_park_bound_at_most_the_optimum_and_placed_orders():
    raised = barred = 0
    for trial, graph in enumerate(_random_graphs(11, 15)):
        value = _park_value(graph)
        assert value <= _brute_force(graph), trial
        for seed in range(2):
            order = random_order(graph, seed)
            placed = place.place(graph.placement_problem(order)[0], time_limit_s=1)
            assert value <= placed.arena_size, (trial, seed)
        raised += value > _min_cut(graph)
        barred += any(park.park_problem(graph, c).barred
                      for c in sorted({0, *graph.order_problem().region_sizes}))
    assert raised, "no random graph where parking whole units raised the bound"
    assert barred, "no random graph with a unit read at or after an output's writer"


def test_an_orders_prefix_is_a_whole_feasible_hint_and_changes_no_minimum():
    """The hint (``node_minimum``'s ``hints``: an order's prefix, its units
    packed best-fit) sets every variable of the model consistently: CP-SAT
    with every variable fixed to it finds that solution, at the cost the hint
    claims, never below the minimum; and the minimum with hints is the one
    without."""
    from ortools.sat.python import cp_model
    hinted_any = 0
    for trial, graph in enumerate(_random_graphs(5, 10)):
        for c in sorted({0, *graph.order_problem().region_sizes}):
            found = park.park_problem(graph, c)
            for n in sorted(found.nodes):
                plain = bound_park.node_minimum(found, n, time_limit_s=10)
                assert plain[1]
                for seed in range(2):
                    order = random_order(graph, seed)
                    prefix = set(order[:order.index(n)])
                    assert bound_park.node_minimum(found, n, time_limit_s=10,
                                                   hints=[prefix]) == plain
                    built = bound_park._model(found, n, floor=0, anc=None, desc=None,
                                              hints=[prefix])
                    if isinstance(built, int):
                        continue
                    m, hinted = built
                    solver = cp_model.CpSolver()
                    solver.parameters.fix_variables_to_their_hinted_value = True
                    solver.parameters.num_workers = 1
                    assert solver.solve(m) == cp_model.OPTIMAL, (trial, c, n, seed)
                    assert round(solver.objective_value) == hinted >= plain[0]
                    hinted_any += 1
    assert hinted_any > 20


def test_park_up_starts_no_node_whose_set_up_would_pass_its_end(monkeypatch):
    """A park model's set-up is not interruptible (3.2 s on remat's, H100):
    with a set-up estimate past the time given, no node is started."""
    graph = _two_live_one_output()
    monkeypatch.setattr(strategy, "PARK_SETUP_US", 1e9)
    calls = []
    monkeypatch.setattr(bound_park, "node_minimum",
                        lambda *a, **k: calls.append(1) or (KIB, True))
    value = strategy._park_up(graph, {0: KIB // 2}, KIB // 2, [random_order(graph, 0)],
                              time.monotonic, time.monotonic() + 5)
    assert value == KIB // 2 and not calls
