"""Best-fit cut short by its deadline: the blocks left are stacked, the
placement stays valid, and the planner's first placement takes the cut."""

from __future__ import annotations

import time

import numpy as np

from olla_jax.solve.place import best_fit, validate_placement
from olla_jax.solve.place_greedy import _CLOCK_EVERY
from olla_jax.solve.problem import Interval, Occupant, PlacementProblem, Region


def _disjoint(n: int = 200) -> PlacementProblem:
    """``n`` blocks of 128 bytes, none live with another: best-fit needs 128."""
    return PlacementProblem(tuple(Interval(128, 2 * k, 2 * k) for k in range(n)))


def test_best_fit_past_its_deadline_stacks_the_blocks_left():
    problem = _disjoint()
    whole = best_fit(problem, deadline=time.monotonic() - 1.0)     # not cut: the first order runs
    assert whole.arena_size == 128
    cut = best_fit(problem, deadline=time.monotonic() - 1.0, cut=True)
    validate_placement(problem, cut)
    # The first _CLOCK_EVERY blocks by best-fit (one slot), the rest one on another.
    assert cut.arena_size == 128 * (1 + len(problem.intervals) - _CLOCK_EVERY)


def test_cut_placement_is_valid_with_regions_and_alignment():
    rng = np.random.default_rng(1)
    ivs = tuple(Interval(int(rng.integers(1, 40)) * 100, int(s), int(s) + int(rng.integers(0, 30)))
                for s in rng.integers(0, 200, 300))
    regions = (Region(4096, (Occupant(0, 1000, 50, 60),)), Region(2048))
    problem = PlacementProblem(ivs, regions, 256)
    cut = best_fit(problem, deadline=time.monotonic() - 1.0, cut=True)
    validate_placement(problem, cut)
    assert cut.arena_size >= best_fit(problem).arena_size


def test_best_fit_before_its_deadline_is_not_cut():
    problem = _disjoint()
    assert best_fit(problem, deadline=time.monotonic() + 60.0, cut=True).arena_size == 128


def test_planner_first_placement_is_cut_at_the_finish():
    from olla_jax import strategy
    ticks = iter(range(10**6))
    cost = strategy._Cost(lambda: float(next(ticks)))   # each look at this clock: 1 s later
    problem = _disjoint()
    placed = cost.best_fit(problem, until=0.0, cut=0.0)
    validate_placement(problem, placed)
    assert placed.arena_size > 128
    assert cost.best_fit(problem, until=0.0).arena_size == 128



def _deep_graph():
    """A six-layer tanh MLP's training step, as a schedule graph (a few dozen units)."""
    import warnings

    import jax
    import jax.numpy as jnp

    from olla_jax.capture.record import capture
    from olla_jax.graph import model

    def step(ws, x):
        def loss(ws):
            h = x
            for w in ws:
                h = jnp.tanh(h @ w)
            return jnp.mean(h ** 2)
        return [w - 0.1 * g for w, g in zip(ws, jax.grad(loss)(ws))]

    args = ([jnp.ones((64, 64)) * 0.01 for _ in range(6)], jnp.ones((32, 64)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cap = capture(step, *args, scheduler="memory")
    return model.build(cap.hlo_proto, cap.values_text, cap.live_range_text)


def test_solve_graph_ends_near_its_limit_when_best_fit_is_slow(monkeypatch):
    """Every block costs best-fit PER_BLOCK_S here (one sort order: several
    limits on this step); the first placement is cut at the finish, so the
    solve ends near its limit where it used to run a whole sort order."""
    from olla_jax import strategy
    from olla_jax.solve import place_greedy

    graph = _deep_graph()
    per_block_s, limit = 0.2, 1.5
    for name in ("_tightest", "tightest_gap"):
        def call(*a, _real=getattr(place_greedy, name), **k):
            time.sleep(per_block_s)
            return _real(*a, **k)
        monkeypatch.setattr(place_greedy, name, call)
    monkeypatch.setattr(place_greedy, "_CLOCK_EVERY", 1)
    t0 = time.monotonic()
    solution = strategy.solve_graph(graph, time_limit_s=limit)
    wall = time.monotonic() - t0
    problem, _ = graph.placement_problem(solution.layout.order)
    assert len(problem.intervals) * per_block_s > 2 * limit   # uncut, one sort order passes it
    assert wall <= 1.1 * limit + 1.0, wall     # uncut: 11 s (loaded machine)
