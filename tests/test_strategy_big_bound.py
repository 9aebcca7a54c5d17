"""A big graph's lower bound (olla_jax/strategy.py, _lower_bound with big=True):
min-cuts cost seconds each there and few run, so the forced-live floor takes
BIG_PROBE_SHARE of the time and the thresholds go largest first, the plain
one (0) last (on the 10k-instruction transformer the two largest proved the
bound; at 40k the floor alone ran and the bound was 19% below XLA's plan)."""

from __future__ import annotations

import pytest

from olla_jax import strategy
from olla_jax.graph import model
from olla_jax.solve import bounds
from tests.small_steps import mlp_graph


@pytest.fixture(scope="module")
def graph():
    return mlp_graph()


def _run(graph, monkeypatch, big: bool, min_cut_node_s: float = 0.0):
    monkeypatch.setattr(strategy, "RESIDENT_NODE_PAIR_S", 1e9)   # the forced-live floor
    monkeypatch.setattr(strategy, "MIN_CUT_NODE_S", min_cut_node_s)
    now = [1000.0]
    probe_given, caps = [], []
    real_probe, real_threshold = bounds.probe_bound, model.ScheduleGraph.threshold_problem

    def probe_bound(*a, **kw):
        probe_given.append(kw["time_limit_s"])
        return real_probe(*a, **kw)

    def threshold_problem(self, c, **kw):
        caps.append(c)
        return real_threshold(self, c, **kw)
    monkeypatch.setattr(bounds, "probe_bound", probe_bound)
    monkeypatch.setattr(model.ScheduleGraph, "threshold_problem", threshold_problem)
    value = strategy._lower_bound(graph, graph.order_problem(), [graph.xla_order],
                                  lambda: now[0], 1100.0, big=big)   # a clock that stands still
    return value, probe_given, caps


def test_a_big_graph_runs_its_thresholds_largest_first_and_the_plain_one_last(graph,
                                                                               monkeypatch):
    thresholds = sorted({0, *graph.order_problem().region_sizes})
    assert len(thresholds) >= 3
    value, probe_given, caps = _run(graph, monkeypatch, big=True)
    assert value > 0
    assert caps == thresholds[::-1]
    assert probe_given == [pytest.approx(strategy.BIG_PROBE_SHARE * 100.0)]


def test_a_small_graph_keeps_the_largest_then_the_plain_one(graph, monkeypatch):
    thresholds = sorted({0, *graph.order_problem().region_sizes})
    value, _, caps = _run(graph, monkeypatch, big=False)
    assert value > 0
    assert caps[:2] == [thresholds[-1], 0]


def test_a_big_graph_with_no_time_for_a_min_cut_gives_the_floor_all_of_it(graph, monkeypatch):
    # At a 30 s limit, load 14, the 10k-instruction transformer's floor got
    # half (0.4 s: 0 bytes) and no min-cut started in the other half.
    value, probe_given, caps = _run(graph, monkeypatch, big=True,
                                    min_cut_node_s=1.0 / len(graph.nodes) * 1e3)
    assert caps == []
    assert probe_given == [pytest.approx(100.0)]


@pytest.mark.parametrize("sweep", [True, False])
def test_a_big_graph_starts_no_threshold_search_with_a_share_below_the_list_stage(
        graph, monkeypatch, sweep):
    """On 100k nodes (synthetic, 60 s limit) a threshold objective given 0.84 s
    took 9.4 s (its problem, evaluator, warm starts: as the list stage's 9.6 s)
    and the bound lost its stage.  On a big graph (sweep mode) none starts with
    a share below what the list stage took; small graphs keep theirs."""
    import time
    from olla_jax.solve import list_schedule
    from olla_jax.solve import order as order_lib
    if sweep:
        monkeypatch.setattr(strategy, "SWEEP_MIN_PAIRS", 0)
        monkeypatch.setattr(strategy, "PAIR_US", 1e9)
    spent = [0.0]

    def clock():
        return time.monotonic() + spent[0]
    list_s, searched = 1.5, []
    real_list, real_order = list_schedule.best_list_schedule, order_lib.solve_order

    def best_list_schedule(*a, **kw):
        spent[0] += list_s
        return real_list(*a, **kw)

    def solve_order(problem, **kw):
        searched.append(kw["time_limit_s"])
        spent[0] += kw["time_limit_s"]
        return real_order(problem, **{**kw, "time_limit_s": 0.01, "engine": "list"})
    monkeypatch.setattr(list_schedule, "best_list_schedule", best_list_schedule)
    monkeypatch.setattr(order_lib, "solve_order", solve_order)
    monkeypatch.setattr(bounds, "min_cut_bound", lambda problem, **kw: bounds.Bound(
        0, (), "stub", 0.0, True))
    strategy.solve_graph(graph, deadline=strategy.Deadline(20.0, clock=clock))
    assert searched and searched[0] >= list_s
    if sweep:
        assert len(searched) == 1, searched
    else:
        assert len(searched) > 1 and min(searched) < list_s, searched
