"""Order engines: valid orders, exact costs, never worse than a warm start,
optimal on graphs small enough for brute force."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings, strategies as st

from olla_jax.solve.cpsat_order import solve_cpsat
from olla_jax.solve.dag import Dag
from olla_jax.solve.evaluate import Evaluator
from olla_jax.solve.ilp_order import solve_ilp
from olla_jax.solve.list_schedule import RULES, list_schedule
from olla_jax.solve.order import solve_order
from olla_jax.solve.problem import Item, OrderProblem, check_topological, order_cost
from olla_jax.solve.search import improve
from test_order_problems import brute_force, problems, problems_with_order


def _check(problem, result, warm):
    check_topological(problem, result.order)
    assert result.cost == order_cost(problem, result.order)
    assert result.cost <= order_cost(problem, warm)
    costs = [c for _, c in result.history]
    assert costs == sorted(costs, reverse=True) and costs[-1] == result.cost


@settings(max_examples=200, deadline=None)
@given(problems(max_nodes=10), st.sampled_from(RULES), st.integers(0, 3))
def test_list_rules_give_valid_orders(problem, rule, seed):
    check_topological(problem, list_schedule(problem, rule))
    check_topological(problem, list_schedule(problem, rule, noise=0.5, seed=seed))


@settings(max_examples=40, deadline=None)
@given(problems_with_order(max_nodes=8), st.sampled_from(["list", "lns", "auto", "cpsat"]))
def test_solve_order_is_valid_and_never_worse_than_warm_start(case, engine):
    problem, warm = case
    result = solve_order(problem, warm_starts=[warm], time_limit_s=0.5, engine=engine)
    _check(problem, result, warm)


@settings(max_examples=60, deadline=None)
@given(problems(max_nodes=6))
def test_cpsat_reaches_the_brute_force_optimum(problem):
    best = brute_force(problem)
    res = solve_cpsat(problem, hint=Dag.of(problem).topo, time_limit_s=10)
    cost = order_cost(problem, res.order)
    assert cost <= res.objective            # the model never underestimates
    if res.exact:
        assert res.optimal and res.objective == cost == best
        result = solve_order(problem, time_limit_s=10, engine="cpsat")
        assert result.cost == best and (result.proven_optimal or best == 0)


@settings(max_examples=25, deadline=None)
@given(problems(max_nodes=6))
def test_ilp_with_one_step_per_node_reaches_the_optimum(problem):
    best = brute_force(problem)
    res = solve_ilp(problem, start=Dag.of(problem).topo, steps=problem.num_nodes,
                    solver_name="HIGHS", time_limit_s=20, compute_lp=True)
    check_topological(problem, res.order)
    assert res.optimal and res.objective == order_cost(problem, res.order) == best
    assert res.lp_bound is not None and res.lp_bound <= best + 1e-6


@settings(max_examples=40, deadline=None)
@given(problems_with_order(max_nodes=9))
def test_ilp_with_shared_steps_overestimates_safely(case):
    problem, warm = case
    res = solve_ilp(problem, start=warm, solver_name="HIGHS", time_limit_s=10)
    check_topological(problem, res.order)
    assert order_cost(problem, res.order) <= res.objective


@pytest.mark.parametrize("engine", ["ilp-cbc", "ilp-highs"])
def test_ilp_engines_reach_the_optimum_from_a_bad_start(engine):
    problem = _diamond_chain(2)
    warm = [0, 1, 2, 3, 4, 5, 6, 7]   # big branch first in both diamonds
    ilp = solve_ilp(problem, start=warm, steps=problem.num_nodes,
                    solver_name=engine.split("-")[1].upper(), time_limit_s=20)
    assert ilp.optimal and ilp.objective == brute_force(problem) < order_cost(problem, warm)
    result = solve_order(problem, warm_starts=[warm], time_limit_s=20, engine=engine)
    _check(problem, result, warm)


def _diamond_chain(k: int) -> OrderProblem:
    """k diamonds in a row, a -> (b, c) -> d: b frees 30 and makes 50, c frees 30
    and makes 5, so running c first lowers each diamond's peak."""
    items, edges = [], []
    for i in range(k):
        a, b, c, d = 4 * i, 4 * i + 1, 4 * i + 2, 4 * i + 3
        edges += [(a, b), (a, c), (b, d), (c, d)] + ([(a - 1, a)] if i else [])
        items += [Item(30, (a,), (a, b)), Item(30, (a,), (a, c)), Item(50, (b,), (b, d)),
                  Item(5, (c,), (c, d)), Item(10, (d,), (d, d + 1) if i + 1 < k else (d,))]
    return OrderProblem(4 * k, tuple(edges), tuple(items), (0,) * (4 * k))


def test_search_is_deterministic_for_a_seed():
    problem = _diamond_chain(30)
    ev, dag = Evaluator(problem), Dag.of(problem)
    runs = [improve(ev, dag, dag.topo, deadline=time.monotonic() + 60, seed=5, max_rounds=12)
            for _ in range(2)]
    assert runs[0] == runs[1]
    assert ev.cost(runs[0]) <= ev.cost(dag.topo)


def test_time_limit_is_respected_on_a_big_graph():
    problem = _diamond_chain(1500)   # 6000 nodes
    start = time.monotonic()
    result = solve_order(problem, time_limit_s=3.0, engine="auto")
    assert time.monotonic() - start < 3.5
    check_topological(problem, result.order)


def test_bad_inputs_are_named():
    problem = OrderProblem(3, ((0, 1), (1, 2)), (), (0, 0, 0))
    with pytest.raises(ValueError, match="edge 1->2"):
        solve_order(problem, warm_starts=[[0, 2, 1]])
    with pytest.raises(ValueError, match="cycle"):
        solve_order(OrderProblem(2, ((0, 1), (1, 0)), (), (0, 0)))
    with pytest.raises(ValueError, match="engine"):
        solve_order(problem, engine="gurobi")
    with pytest.raises(ValueError, match="edge 0->5"):
        solve_order(OrderProblem(3, ((0, 5),), (), (0, 0, 0)))


def test_polish_skips_the_list_schedules(monkeypatch):
    # Node 0 makes a 100-byte value read by nodes 1..8; node 9 an 80-byte
    # output.  From the order with the output first, the moves reach 100
    # bytes; a polish runs no list schedule (the warm start came from a
    # search already).
    from olla_jax.solve import order as order_lib
    k = 8
    edges = tuple((0, r) for r in range(1, k + 1))
    items = (Item(100, (0,), (0, *range(1, k + 1))), Item(80, (k + 1,), (k + 1,), live_out=True))
    problem = OrderProblem(k + 2, edges, items, (0,) * (k + 2))
    warm = (0, k + 1, *range(1, k + 1))
    listed = []
    real = order_lib.list_schedules

    def spy(*a, **kw):
        listed.append(1)
        return real(*a, **kw)
    monkeypatch.setattr(order_lib, "list_schedules", spy)
    result = solve_order(problem, warm_starts=[warm], time_limit_s=2.0, engine="lns", polish=True)
    _check(problem, result, warm)
    assert not listed
    assert result.cost == 100
    solve_order(problem, warm_starts=[warm], time_limit_s=0.5, engine="lns")
    assert listed   # without polish the list schedules run as before


def test_min_cut_moves_start_from_the_memory_aware_list_order_then_the_best(monkeypatch):
    # Where min-cut moves end depends on their start, not on its cost: they
    # run from the least order of the memory-aware rules first (here above
    # the warm start), then from the best order.
    from olla_jax.solve import cut_move
    from olla_jax.solve import list_schedule as ls
    problem = _diamond_chain(20)
    warm = Dag.of(problem).topo
    memory_aware = min((r for ref in (warm, None)
                        for r in ls.list_schedules(problem, reference=ref)
                        if r.rule in ls.MEMORY_RULES), key=lambda r: r.cost)
    starts = []

    def spy(ev, order, **kw):
        starts.append(tuple(order))
        return tuple(order)
    monkeypatch.setattr(cut_move, "improve", spy)
    result = solve_order(problem, warm_starts=[warm], time_limit_s=1.0, engine="lns")
    _check(problem, result, warm)
    assert starts[0] == memory_aware.order
    if memory_aware.order != starts[-1]:
        assert len(starts) == 2
    assert set(ls.MEMORY_RULES) == set(ls.RULES) - {"dfs", "post-order"}
    best = ls.best_list_schedule(problem)
    assert best.cost == min(r.cost for r in ls.list_schedules(problem))
