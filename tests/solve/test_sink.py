"""Sink and hoist moves: each node next to its first consumer or last producer."""

from __future__ import annotations

import time

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from olla_jax.solve import sink
from olla_jax.solve.dag import Dag
from olla_jax.solve.evaluate import Evaluator
from olla_jax.solve.problem import Item, OrderProblem, check_topological, order_cost


def _kernels_made_early() -> OrderProblem:
    # A chain 0 -> 1 -> ... -> 5 holds a 4-byte value at each step.  Nodes 6
    # and 7 each make a 10-byte value from nothing (like a kernel reversed from
    # a parameter) that only node 4 (for 6) and node 5 (for 7) read.
    edges = ((0, 1), (1, 2), (2, 3), (3, 4), (4, 5), (6, 4), (7, 5))
    chain = tuple(Item(4, (k,), (k, k + 1)) for k in range(5))
    kernels = (Item(10, (6,), (6, 4)), Item(10, (7,), (7, 5)))
    return OrderProblem(8, edges, chain + kernels, (0,) * 8)


def _improve(problem, order, seconds=5.0):
    return sink.improve(Evaluator(problem), Dag.of(problem), order,
                        deadline=time.monotonic() + seconds)


def test_values_made_early_move_next_to_their_reader():
    p = _kernels_made_early()
    early = (6, 7, 0, 1, 2, 3, 4, 5)           # as a scheduler running ready nodes first would
    moved = _improve(p, early)
    check_topological(p, moved)
    assert order_cost(p, early) == 28
    assert order_cost(p, moved) == 18          # one kernel and the chain's two values at most
    assert moved.index(6) == moved.index(4) - 1
    assert moved.index(7) == moved.index(5) - 1


def test_an_order_with_nothing_to_move_comes_back_unchanged():
    p = _kernels_made_early()
    best = (0, 1, 2, 3, 6, 4, 7, 5)
    assert _improve(p, best) == best


def test_a_passed_deadline_returns_the_order_given():
    p = _kernels_made_early()
    early = (6, 7, 0, 1, 2, 3, 4, 5)
    assert sink.improve(Evaluator(p), Dag.of(p), early, deadline=time.monotonic() - 1) == early


def _readers_of_one_value(k: int) -> OrderProblem:
    # Node 0 makes a 100-byte value that nodes 1..k read; node k+1 makes an
    # 80-byte output.  Only the last reader frees the value, so hoisting a
    # reader next to node 0 pays only once the readers after it have moved:
    # one hoist a round, the last reader first.
    edges = tuple((0, r) for r in range(1, k + 1))
    items = (Item(100, (0,), (0, *range(1, k + 1))), Item(80, (k + 1,), (k + 1,), live_out=True))
    return OrderProblem(k + 2, edges, items, (0,) * (k + 2))


def test_moves_that_pay_only_after_others_go_on_past_four_rounds():
    k = 8
    p = _readers_of_one_value(k)
    late = (0, k + 1, *range(1, k + 1))       # the output made before the readers
    moved = _improve(p, late)
    check_topological(p, moved)
    assert order_cost(p, late) == 180
    assert order_cost(p, moved) == 100        # every reader before the output (4 rounds: 180)
    assert moved.index(k + 1) == k + 1
    # a cap on the rounds still holds
    capped = sink.improve(Evaluator(p), Dag.of(p), late, deadline=time.monotonic() + 5,
                          max_rounds=4)
    assert order_cost(p, capped) == 180


@st.composite
def _problems(draw):
    n = draw(st.integers(2, 12))
    edges = tuple(sorted({(u, v) for u in range(n) for v in range(u + 1, n)
                          if draw(st.booleans()) and draw(st.booleans())}))
    items = []
    for _ in range(draw(st.integers(1, 10))):
        d = draw(st.integers(0, n - 1))
        touches = tuple(sorted({d, *draw(st.lists(st.integers(d, n - 1), max_size=3))}))
        items.append(Item(draw(st.integers(1, 50)), (d,), touches))
    return OrderProblem(n, edges, tuple(items), (0,) * n)


def _random_topological(p: OrderProblem, keys: list[int]) -> list[int]:
    indeg = [0] * p.num_nodes
    for _, v in p.edges:
        indeg[v] += 1
    order = []
    while len(order) < p.num_nodes:
        node = min((v for v in range(p.num_nodes) if indeg[v] == 0 and v not in order),
                   key=keys.__getitem__)
        order.append(node)
        for u, v in p.edges:
            if u == node:
                indeg[v] -= 1
    return order


@settings(max_examples=60, deadline=None)
@given(_problems(), st.lists(st.integers(0, 100), min_size=12, max_size=12))
def test_moves_keep_the_order_valid_and_never_raise_peak_or_sum(p, keys):
    order = _random_topological(p, keys)
    moved = _improve(p, order)
    check_topological(p, moved)
    ev = Evaluator(p)
    assert (order_cost(p, moved), int(np.sum(ev.profile(moved)))) <= \
        (order_cost(p, order), int(np.sum(ev.profile(order))))
