"""``sink.improve(pairs=True)``: a node that frees bytes when run earlier but
sits just after its one-consumer producer is hoisted with it."""

from __future__ import annotations

import time

from olla_jax.solve import problem as sp
from olla_jax.solve import sink
from olla_jax.solve.dag import Dag
from olla_jax.solve.evaluate import Evaluator


def _step() -> sp.OrderProblem:
    """0 makes an activation X (read by 1 at once and by 7 at the end); 1 makes
    a gradient G; 2-5 a chain of temporaries (the peak, with X still live);
    6 copies G into C, whose one consumer is 7, a weight gradient's dot
    reading X and C (its 1-byte result an output).  7 alone cannot move up
    (6 is just before it), 6 alone frees nothing; together, just after 1,
    they end X before the peak."""
    items = (sp.Item(100, (0,), (0, 1, 7)),          # X
             sp.Item(10, (1,), (1, 6)),              # G
             sp.Item(50, (2,), (2, 3)), sp.Item(50, (3,), (3, 4)),
             sp.Item(50, (4,), (4, 5)),
             sp.Item(10, (6,), (6, 7)),              # C
             sp.Item(1, (7,), (7,), live_out=True))  # the dot's result
    edges = ((0, 1), (1, 6), (2, 3), (3, 4), (4, 5), (6, 7), (0, 7), (1, 2))
    return sp.OrderProblem(num_nodes=8, edges=edges, items=items, node_extra=(0,) * 8)


def test_pair_hoist_ends_a_long_life_single_moves_cannot():
    problem = _step()
    ev, dag = Evaluator(problem), Dag.of(problem)
    order = tuple(range(8))
    deadline = time.monotonic() + 10
    alone = sink.improve(ev, dag, order, deadline=deadline)
    paired = sink.improve(ev, dag, order, deadline=deadline, pairs=True)
    assert ev.cost(paired) < ev.cost(alone) == ev.cost(order)
    pos = {n: i for i, n in enumerate(paired)}
    assert pos[6] + 1 == pos[7] and pos[7] < pos[2]
    assert all(pos[u] < pos[v] for u, v in problem.edges)
