"""``plan_of`` refuses, in words, a copy that no reader reads (a copy before
a slot that no reader of the value follows): its life would end before it
starts.  The searches never pick one (``late_part_ok``, ``copies_read``); a
caller handing one in got the placement checker's "interval ends before it
starts" instead."""

from __future__ import annotations

import dataclasses
import warnings

import jax.numpy as jnp
import pytest

import olla_jax
from olla_jax import budget
from olla_jax.budget import recompute_plan


def step_fn(x, w):
    a = jnp.tanh(x @ w)
    b = jnp.sin(a @ w)
    c = jnp.cos(b @ w)
    return (c * a).sum() + b.sum()


@pytest.fixture(scope="module")
def planned():
    x = jnp.ones((64, 64), jnp.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plan = olla_jax.plan(step_fn, x, x, time_limit_s=0.5, feed_back=False)
    graph = plan.graph
    order = plan.layout.order if plan.layout is not None else graph.xla_order
    step = recompute_plan.step_index(graph, order)
    cands = budget.candidates(graph, plan.capture)
    for c in cands:     # a value with a node after its last reader, and a gap before it
        users = sorted(c.users, key=lambda n: step[n])
        after = [n for n in order if step[n] > step[users[-1]]]
        if after and step[users[-1]] > step[c.producer] + 1:
            return graph, order, step, c, after[-1]
    pytest.fail("the step has a value read late with a node after its last reader")


def test_a_copy_before_a_slot_with_no_reader_after_it_is_refused_in_words(planned):
    graph, order, step, c, late = planned
    slotted = dataclasses.replace(c, users=c.users + (late,), slots=(late,))
    users = sorted(slotted.users, key=lambda n: step[n])
    assert users[-1] == late
    with pytest.raises(ValueError, match="no reader of its own"):
        budget.plan_of(graph, order, [(slotted, len(users) - 1)])


def test_a_copy_before_the_last_reader_still_builds(planned):
    graph, order, step, c, late = planned
    slotted = dataclasses.replace(c, users=c.users + (late,), slots=(late,))
    users = sorted(slotted.users, key=lambda n: step[n])
    plan = budget.plan_of(graph, order, [(slotted, len(users) - 2)])   # its last reader
    (r,) = plan.layout.recomputes
    assert r.before == graph.nodes[users[-2]] and graph.nodes[late] not in r.late_users
