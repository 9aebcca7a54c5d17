"""Random order problems for the order-engine tests, and brute force over them."""

from __future__ import annotations

import itertools

from hypothesis import given, strategies as st

from olla_jax.solve.problem import ARENA, Item, OrderProblem, check_topological, order_cost


@st.composite
def problems(draw, max_nodes: int = 7, max_regions: int = 2) -> OrderProblem:
    """A DAG (edges follow a hidden random topological order) with random items:
    sizes, several defs, touches before defs, regions, live_in/live_out."""
    n = draw(st.integers(0, max_nodes))
    hidden = draw(st.permutations(range(n)))
    pairs = [(hidden[i], hidden[j]) for i in range(n) for j in range(i + 1, n)]
    edges = tuple(p for p in pairs if draw(st.integers(0, 3)) == 0)
    regions = tuple(draw(st.lists(st.integers(0, 120), max_size=max_regions)))
    nodes = st.integers(0, max(0, n - 1))
    items = []
    for _ in range(draw(st.integers(0, 2 * n))):
        defs = tuple(sorted(set(draw(st.lists(nodes, max_size=2)))))
        touches = tuple(sorted(set(draw(st.lists(nodes, max_size=3))) | set(defs[:draw(st.integers(0, 1))])))
        region = draw(st.sampled_from([ARENA, ARENA, *range(len(regions))]))
        items.append(Item(draw(st.integers(0, 100)), defs, touches, region,
                          live_in=draw(st.integers(0, 6)) == 0, live_out=draw(st.integers(0, 6)) == 0))
    extra = tuple(draw(st.lists(st.integers(0, 40), min_size=n, max_size=n)))
    return OrderProblem(n, edges, tuple(items), extra, regions)


@st.composite
def problems_with_order(draw, max_nodes: int = 7):
    """A problem and a random valid order of it."""
    problem = draw(problems(max_nodes))
    order, left = [], set(range(problem.num_nodes))
    while left:
        ready = sorted(v for v in left if not any(u in left for u, w in problem.edges if w == v))
        v = draw(st.sampled_from(ready))
        order.append(v)
        left.remove(v)
    return problem, order


def brute_force(problem: OrderProblem) -> int:
    """The optimal cost, by trying every permutation."""
    best = None
    for perm in itertools.permutations(range(problem.num_nodes)):
        try:
            check_topological(problem, perm)
        except ValueError:
            continue
        cost = order_cost(problem, perm)
        best = cost if best is None else min(best, cost)
    return best


@given(problems_with_order())
def test_generated_orders_are_topological(case):
    problem, order = case
    check_topological(problem, order)
