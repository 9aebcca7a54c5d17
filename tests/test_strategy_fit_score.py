"""The order search judged by what its placement can use (olla_jax/strategy.py,
``_FitScore``): after the plain objective, the threshold objective its order
is most bound by (output regions too small for the units live at its peak)
is searched from that order, and candidate orders are ranked by their fit
score before they are placed."""

from __future__ import annotations

import dataclasses
import random

from olla_jax import strategy
from olla_jax.graph import model
from olla_jax.solve import order as order_lib
from olla_jax.solve import problem as sp
from olla_jax.solve.evaluate import Evaluator
from tests.small_steps import mlp_graph


@dataclasses.dataclass
class _Posed:
    """Just enough of a ScheduleGraph for ``threshold_problem`` (the real one)."""
    problem: sp.OrderProblem

    def order_problem(self, for_bound: bool = False) -> sp.OrderProblem:
        return self.problem

    @property
    def order_problem_for_bound(self) -> sp.OrderProblem:
        return self.problem

    # no loop-body units, no gaps and no fixed units inside a block: the
    # nodes' extra is the problem's own
    _plain_extra_parts = _bound_extra_parts = ((), (), {})

    def threshold_problem(self, c: int, *, for_bound: bool = False) -> sp.OrderProblem:
        return model.ScheduleGraph.threshold_problem(self, c, for_bound=for_bound)


def _chain(region: int) -> sp.OrderProblem:
    """0 -> 1 -> 2 -> 3: two 100-byte temporaries live together at step 1,
    and an output of ``region`` bytes written at the last step (idle before)."""
    items = (sp.Item(100, (0,), (0, 1)), sp.Item(100, (1,), (1, 2)),
             sp.Item(region, (3,), (3,), region=0, live_out=True))
    return sp.OrderProblem(num_nodes=4, edges=((0, 1), (1, 2), (2, 3)), items=items,
                           node_extra=(0,) * 4, region_sizes=(region,))


def test_a_region_too_small_for_the_peak_binds_the_threshold_objective():
    """A 60-byte output counts 60 bytes free under the plain objective, but
    neither 100-byte unit fits it: the threshold at 60 counts the 200 bytes,
    scores the order 200 and is the objective to search next (once)."""
    problem = _chain(60)
    fit = strategy._FitScore(_Posed(problem), problem, Evaluator(problem))
    order = (0, 1, 2, 3)
    assert Evaluator(problem).cost(order) == 140
    assert fit.score(order) == 140      # no threshold built yet: the plain cost
    bound = fit.binding([order])
    assert bound is not None and bound.region_sizes == (0,)
    assert fit.score(order) == 200
    assert fit.binding([order]) is None      # searched already


def test_a_region_that_holds_the_units_binds_nothing():
    """A 100-byte output holds either unit: the plain objective already
    counts what the placement can use, so no threshold is searched."""
    problem = _chain(100)
    fit = strategy._FitScore(_Posed(problem), problem, Evaluator(problem))
    order = (0, 1, 2, 3)
    assert fit.binding([order]) is None
    assert fit.score(order) == Evaluator(problem).cost(order) == 100


def _bound_order(graph) -> tuple[int, ...]:
    """An order of the MLP step (not XLA's) whose placement a threshold
    binds: the 2 KiB output idle while 4 KiB units peak."""
    problem = graph.order_problem()
    fit = strategy._FitScore(graph, problem, Evaluator(problem))
    rng = random.Random(0)
    for _ in range(500):   # random topological orders
        preds = {v: {u for u, w in problem.edges if w == v} for v in range(problem.num_nodes)}
        order = []
        while len(order) < problem.num_nodes:
            ready = sorted(v for v, p in preds.items() if not p and v not in order)
            v = rng.choice(ready)
            order.append(v)
            for p in preds.values():
                p.discard(v)
        order = tuple(order)
        if order != tuple(graph.xla_order) and \
                max(fit._cost(c, order) for c in fit.caps) > Evaluator(problem).cost(order):
            return order
    raise AssertionError("no order of the MLP step that a threshold binds")


def test_the_binding_threshold_is_searched_from_the_plain_objectives_order(monkeypatch):
    """When the plain objective's order is one a threshold binds, the next
    objective is that threshold (every region no larger zeroed), started
    from that order; the plan is never worse than it placed."""
    graph = mlp_graph()
    plain = graph.order_problem()
    bound = _bound_order(graph)
    calls = []
    real = order_lib.solve_order

    def solve_order(problem, **kw):
        if problem == plain:    # the plain search "finds" the bound order
            calls.append((problem, [], bound))
            return order_lib.OrderResult(bound, Evaluator(problem).cost(bound), "fake", 0.0,
                                         False, ())
        found = real(problem, **{**kw, "time_limit_s": min(kw["time_limit_s"], 0.5)})
        calls.append((problem, [tuple(w) for w in kw["warm_starts"]], found.order))
        return found
    monkeypatch.setattr(order_lib, "solve_order", solve_order)
    solution = strategy.solve_graph(graph, time_limit_s=6.0)
    thresholds = [(p, starts) for p, starts, _ in calls[1:]
                  if p.region_sizes != plain.region_sizes and any(p.region_sizes)]
    assert thresholds, "no threshold objective was searched"
    problem, starts = thresholds[0]
    fit = strategy._FitScore(graph, plain, Evaluator(plain))
    cap = max((c for c in fit.caps if fit._cost(c, bound) > Evaluator(plain).cost(bound)),
              key=lambda c: fit._cost(c, bound))
    assert problem == graph.threshold_problem(cap)
    assert bound in starts
    pp, _ = graph.placement_problem(bound)
    from olla_jax.solve import place as place_lib
    assert solution.layout.temp_bytes <= place_lib.best_fit(pp).arena_size


def test_where_no_threshold_binds_the_quantile_thresholds_are_searched(monkeypatch):
    """When no threshold binds the orders found (``binding`` says None
    here), each threshold slot searches the region size at its quantile,
    as before (the median size first)."""
    graph = mlp_graph()
    plain = graph.order_problem()
    searched = []
    real = order_lib.solve_order

    def solve_order(problem, **kw):
        searched.append(problem)
        return real(problem, **{**kw, "time_limit_s": min(kw["time_limit_s"], 0.3)})
    monkeypatch.setattr(order_lib, "solve_order", solve_order)
    logged = []
    monkeypatch.setattr(strategy._FitScore, "binding",
                        lambda self, orders: logged.append(len(orders)) or None)
    strategy.solve_graph(graph, time_limit_s=6.0)
    caps = sorted(set(plain.region_sizes))
    assert searched[0] == plain and logged
    assert searched[1] == graph.threshold_problem(caps[round(0.5 * (len(caps) - 1))])
