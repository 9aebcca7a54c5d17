"""Lower bounds against brute force over every topological order."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from olla_jax.solve.bounds import (Bound, dinic_max_flow, min_cut_bound, ortools_max_flow,
                                   simple_bound)
from olla_jax.solve.problem import ARENA, Item, OrderProblem, order_cost, step_profile


def all_orders(problem: OrderProblem):
    preds = [set() for _ in range(problem.num_nodes)]
    for u, v in problem.edges:
        preds[v].add(u)

    def extend(prefix, done):
        if len(prefix) == problem.num_nodes:
            yield list(prefix)
            return
        for v in range(problem.num_nodes):
            if v not in done and preds[v] <= done:
                prefix.append(v)
                done.add(v)
                yield from extend(prefix, done)
                prefix.pop()
                done.discard(v)

    yield from extend([], set())


def optimum(problem: OrderProblem) -> int:
    return min(order_cost(problem, order) for order in all_orders(problem))


@st.composite
def order_problems(draw, chain: bool = False, max_nodes: int = 7):
    n = draw(st.integers(1, max_nodes))
    if chain:
        edges = tuple((i, i + 1) for i in range(n - 1))
    else:
        pairs = [(u, v) for u in range(n) for v in range(u + 1, n)]
        edges = tuple(p for p in pairs if draw(st.booleans()) and draw(st.booleans()))
    region_sizes = tuple(draw(st.lists(st.integers(1, 120), max_size=2)))
    nodes = st.integers(0, n - 1)
    items = []
    for _ in range(draw(st.integers(0, 7))):
        defs = tuple(draw(st.lists(nodes, min_size=0 if not chain else 1, max_size=2, unique=True)))
        touches = defs + tuple(draw(st.lists(nodes, max_size=3)))
        region = draw(st.sampled_from([ARENA, ARENA, *range(len(region_sizes))]))
        items.append(Item(size=draw(st.integers(0, 100)), defs=defs, touches=touches,
                          region=region, live_in=draw(st.booleans()) and draw(st.booleans()),
                          live_out=draw(st.booleans()) and draw(st.booleans())))
    extra = tuple(draw(st.lists(st.integers(0, 40), min_size=n, max_size=n)))
    return OrderProblem(n, edges, tuple(items), extra, region_sizes)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(order_problems())
def test_bounds_never_exceed_brute_force_optimum(problem):
    opt = optimum(problem)
    simple = simple_bound(problem)
    cut = min_cut_bound(problem, flow="ortools")
    own = min_cut_bound(problem, flow="dinic")
    assert simple.value <= cut.value <= opt
    assert own.value == cut.value
    assert cut.complete
    # every node's reported value is a bound on that node's cost in every order
    for order in all_orders(problem):
        for node, cost in zip(order, step_profile(problem, order)):
            assert cut.per_node[node] <= cost
            assert simple.per_node[node] <= cost


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(order_problems(), st.integers(0, 400))
def test_a_floor_only_skips_nodes_that_cannot_beat_it(problem, floor):
    full = min_cut_bound(problem).value
    assert max(floor, min_cut_bound(problem, floor=floor).value) == max(floor, full)


@st.composite
def dataflow_problems(draw, max_nodes: int = 7):
    """Each node defines a value read by some later nodes; at most one pinned
    item per region; touches include defs.  The model is exact on these."""
    n = draw(st.integers(2, max_nodes))
    region_sizes = tuple(draw(st.lists(st.integers(1, 150), max_size=2)))
    free_regions = list(range(len(region_sizes)))
    edges, items = set(), []
    for u in range(n):
        readers = draw(st.lists(st.integers(u + 1, n - 1), max_size=2, unique=True)) if u < n - 1 else []
        edges.update((u, v) for v in readers)
        region = ARENA
        if free_regions and draw(st.booleans()):
            region = free_regions.pop()
        items.append(Item(draw(st.integers(1, 100)), defs=(u,), touches=(u, *readers), region=region,
                          live_out=region != ARENA or draw(st.booleans())))
    extra = tuple(draw(st.lists(st.integers(0, 40), min_size=n, max_size=n)))
    return OrderProblem(n, tuple(sorted(edges)), tuple(items), extra, region_sizes)


@settings(max_examples=200, deadline=None)
@given(dataflow_problems())
def test_per_node_minimum_is_exact(problem):
    """Unpruned, each node's value is the least cost it has in any order."""
    least = [None] * problem.num_nodes
    for order in all_orders(problem):
        for node, cost in zip(order, step_profile(problem, order)):
            least[node] = cost if least[node] is None else min(least[node], cost)
    for flow in ("ortools", "dinic"):
        cut = min_cut_bound(problem, flow=flow, prune=False)
        assert list(cut.per_node) == least
    assert min_cut_bound(problem).value == max(least)


@settings(max_examples=150, deadline=None)
@given(order_problems(chain=True))
def test_min_cut_is_exact_on_chains(problem):
    """A chain has one order: every node's minimum is its cost in that order."""
    order = list(range(problem.num_nodes))
    cut = min_cut_bound(problem)
    assert cut.value == order_cost(problem, order)


def test_min_cut_finds_the_order_that_beats_the_simple_bound():
    # Two independent chains, each defines a big value that the other chain's
    # first node overlaps unless one chain finishes first.
    items = (
        Item(100, defs=(0,), touches=(0, 1)),
        Item(100, defs=(2,), touches=(2, 3)),
    )
    p = OrderProblem(4, ((0, 1), (2, 3)), items, (0, 0, 0, 0))
    assert simple_bound(p).value == 100
    assert min_cut_bound(p).value == 100 == optimum(p)
    # make the interleaving costly: the bound must see 200 once both must overlap
    items2 = items + (Item(100, defs=(0,), touches=(0, 3)),)
    p2 = OrderProblem(4, ((0, 1), (2, 3)), items2, (0, 0, 0, 0))
    assert min_cut_bound(p2).value == optimum(p2) == 200


def test_closure_forbids_running_a_reader_before_its_producer():
    # Node 3 is best run after 1 (which frees y), but 1 needs 0, whose output x
    # stays live until 2, a descendant of 3.  So node 3 always sees 100 bytes.
    items = (Item(100, defs=(0,), touches=(0, 1, 2)), Item(100, defs=(), touches=(1,), live_in=True))
    p = OrderProblem(4, ((0, 1), (0, 2), (3, 2)), items, (0, 0, 0, 0))
    assert min_cut_bound(p, prune=False).per_node[3] == 100
    assert min_cut_bound(p).value == optimum(p) == 200


def test_idle_region_capacity_is_subtracted_only_when_it_must_be():
    # region 0 (capacity 50) holds an output defined by node 1; temp of size 80
    # lives at node 0.  Running 0 first leaves the region idle: cost 30.
    items = (Item(80, defs=(0,), touches=(0,)), Item(10, defs=(1,), touches=(1,), region=0,
                                                       live_out=True))
    p = OrderProblem(2, (), items, (0, 0), region_sizes=(50,))
    assert optimum(p) == 30
    assert min_cut_bound(p).value == 30
    assert simple_bound(p).value == 30


def test_time_limit_returns_a_valid_partial_bound():
    rng = np.random.default_rng(1)
    p = random_dag_problem(rng, 300)
    full = min_cut_bound(p)
    partial = min_cut_bound(p, time_limit_s=0.0)
    assert not partial.complete
    assert partial.value == simple_bound(p).value <= full.value
    assert full.complete


def test_cycle_is_rejected():
    p = OrderProblem(2, ((0, 1), (1, 0)), (), (0, 0))
    with pytest.raises(ValueError, match="cycle"):
        min_cut_bound(p)


def test_unknown_flow_engine_is_rejected():
    with pytest.raises(ValueError, match="flow engine"):
        min_cut_bound(OrderProblem(1, (), (), (0,)), flow="magic")


def random_dag_problem(rng: np.random.Generator, n: int) -> OrderProblem:
    """A layered DAG where each node defines one value read by a few later nodes."""
    edges, items = set(), []
    for v in range(1, n):
        for u in rng.choice(v, size=min(v, int(rng.integers(1, 3))), replace=False):
            edges.add((int(u), v))
    succ = {}
    for u, v in edges:
        succ.setdefault(u, []).append(v)
    for u in range(n):
        items.append(Item(int(rng.integers(1, 1000)), defs=(u,), touches=(u, *succ.get(u, ()))))
    return OrderProblem(n, tuple(sorted(edges)), tuple(items), tuple([0] * n))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_flow_engines_agree(seed):
    rng = np.random.default_rng(seed)
    n = 60
    tails = rng.integers(0, n, 400)
    heads = rng.integers(0, n, 400)
    caps = rng.integers(0, 50, 400)
    keep = tails != heads
    args = (n, tails[keep], heads[keep], caps[keep], 0, 1)
    assert dinic_max_flow(*args) == ortools_max_flow(*args)


def test_min_cut_beats_simple_on_random_dags_and_stays_below_a_real_order():
    rng = np.random.default_rng(5)
    p = random_dag_problem(rng, 200)
    cut = min_cut_bound(p)
    assert isinstance(cut, Bound) and cut.complete
    assert simple_bound(p).value <= cut.value <= order_cost(p, list(range(p.num_nodes)))
