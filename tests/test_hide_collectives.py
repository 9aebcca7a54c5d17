"""strategy.hide_collectives: XLA's order drawn in goes first, with all the time."""

from __future__ import annotations

import functools
import time

import pytest

jax = pytest.importorskip("jax")

from olla_jax import strategy  # noqa: E402
from tests.marks import needs_plugin  # noqa: E402
from olla_jax.graph import layout as layout_lib, overlap  # noqa: E402
from small_steps import regather_step  # noqa: E402


@functools.lru_cache(maxsize=1)
def _step():
    s = regather_step()
    return s.graph, s.step


@needs_plugin
def test_xla_order_drawn_in_is_retimed_first_with_the_whole_limit(monkeypatch):
    graph, step = _step()
    edges = graph.order_problem().edges
    drawn = overlap.just_in_time(graph.xla_order, step.node_seconds, step.collectives, edges)
    assert drawn != tuple(graph.xla_order), "the tiny step gives just_in_time nothing to move"
    calls = []
    retime = overlap.retime

    def recording(order, *args, deadline=None, **kw):
        calls.append((tuple(order), deadline))
        return retime(order, *args, deadline=deadline, **kw)

    monkeypatch.setattr(overlap, "retime", recording)
    other = tuple(reversed(graph.xla_order))   # any second order: only its turn matters
    orders = {"xla": layout_lib.xla_layout(graph), "other": other}
    deadline = time.monotonic() + 30
    hidden = strategy.hide_collectives(graph, step, orders, step.allowance("hidden"),
                                       deadline=deadline)
    # first, and given all the time to the deadline but its placement's share
    assert calls[0][0] == drawn
    assert calls[0][1] >= deadline - strategy.FIRST_FIT_SHARE * 30
    assert len(calls) > 1 and all(d < deadline for _, d in calls[1:])   # the rest: shares
    assert hidden.met


@needs_plugin
def test_when_the_first_try_takes_the_limit_its_plan_is_kept(monkeypatch):
    graph, step = _step()
    clock = [0.0]
    monkeypatch.setattr(strategy.time, "monotonic", lambda: clock[0])
    retime = overlap.retime

    def slow(order, *args, deadline=None, **kw):
        out = retime(order, *args, deadline=None, **kw)
        clock[0] = 11.0   # this re-timing ran past the whole limit (10 s) and its placement
        return out

    monkeypatch.setattr(overlap, "retime", slow)
    orders = {"xla": layout_lib.xla_layout(graph), "other": tuple(graph.xla_order)}
    hidden = strategy.hide_collectives(graph, step, orders, step.allowance("hidden"),
                                       deadline=10.0)
    assert hidden.source.startswith("xla+jit") and hidden.met
