"""The incremental evaluator and window cutting agree with problem.py's semantics."""

from __future__ import annotations

from hypothesis import given, settings, strategies as st

from olla_jax.solve.evaluate import Evaluator, moved
from olla_jax.solve.list_schedule import list_schedule
from olla_jax.solve.problem import order_cost, step_profile
from olla_jax.solve.window import window_problem
from test_order_problems import problems, problems_with_order


@settings(max_examples=300, deadline=None)
@given(problems(max_nodes=9), st.randoms(use_true_random=False))
def test_cost_and_profile_match_problem(problem, rnd):
    order = list(range(problem.num_nodes))   # cost is defined for any permutation
    rnd.shuffle(order)
    ev = Evaluator(problem)
    assert ev.profile(order).tolist() == step_profile(problem, order)
    assert ev.cost(order) == order_cost(problem, order)


@settings(max_examples=300, deadline=None)
@given(problems(max_nodes=9), st.data())
def test_moving_a_block_is_scored_exactly(problem, data):
    n = problem.num_nodes
    order = data.draw(st.permutations(range(n)))
    ev = Evaluator(problem)
    state = ev.state(order)
    for _ in range(4):
        length = data.draw(st.integers(1, max(1, n)))
        if length > n:
            return
        src = data.draw(st.integers(0, n - length))
        dst = data.draw(st.integers(0, n - length))
        lo, seg = moved(state.order, src, dst, length)
        new = state.order.copy()
        new[lo:lo + len(seg)] = seg
        profile = step_profile(problem, new.tolist())
        assert ev.window_profile(state, lo, seg).tolist() == profile[lo:lo + len(seg)]
        peak = max(profile)
        assert ev.window_score(state, lo, seg) == (peak, profile.count(peak))
        moved_block = state.order[src:src + length].tolist()
        assert new[dst:dst + length].tolist() == moved_block


@settings(max_examples=300, deadline=None)
@given(problems_with_order(max_nodes=9), st.data())
def test_window_problem_reproduces_the_profile(case, data):
    problem, order = case
    n = problem.num_nodes
    if n == 0:
        return
    lo = data.draw(st.integers(0, n - 1))
    hi = data.draw(st.integers(lo, n - 1))
    ev = Evaluator(problem)
    win = window_problem(ev, ev.state(order), lo, hi)
    sub_order = list_schedule(win.problem, "growth", noise=1.0, seed=data.draw(st.integers(0, 99)))
    full = win.splice(order, sub_order)
    assert step_profile(win.problem, sub_order) == step_profile(problem, full)[lo:hi + 1]
