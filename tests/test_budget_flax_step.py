"""A memory budget on a flax/optax step with donated parameters and keyword
arguments, as a user writes it: a recomputed copy never lands in a donated
parameter's idle bytes (the independent checker refuses it there), and the
plan meets the budget, verified and timed."""

from __future__ import annotations

import warnings

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
import pytest

import olla_jax
from olla_jax import budget, check
from olla_jax.budget import recompute_plan
from olla_jax.plan import candidate_plan
from olla_jax.solve import problem as sp


class _Block(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.gelu(nn.Dense(64)(x))
        return nn.LayerNorm()(x + nn.Dense(x.shape[-1])(h))


class _Net(nn.Module):
    @nn.compact
    def __call__(self, x):
        for _ in range(2):
            x = _Block()(x)
        return nn.Dense(10)(x.mean(1))


def _step(params, state, x, y):
    def loss_fn(p):
        logits = _Net().apply(p, x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    loss, g = jax.value_and_grad(loss_fn)(params)
    upd, state = optax.adamw(1e-3).update(g, state, params)
    return optax.apply_updates(params, upd), state, loss


@pytest.fixture(scope="module")
def donated_flax():
    x = jax.random.normal(jax.random.key(1), (4, 16, 32))
    y = jnp.arange(4) % 10
    params = _Net().init(jax.random.key(0), x)
    state = optax.adamw(1e-3).init(params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", olla_jax.PlanWarning)
        plan = olla_jax.plan(_step, params, state, x, y, donate_argnums=(0, 1),
                             time_limit_s=2, feed_back=False)
    return plan, budget.candidates(plan.graph, plan.capture)


def _in_parameter(graph, state, placement) -> bool:
    """Whether ``placement`` puts a copy (or its scratch) in a parameter's bytes."""
    return any(r != sp.ARENA and graph.allocations[graph.regions[r]].kind == "parameter"
               for r in placement.region[len(state.intervals):])


def test_copies_best_fit_puts_in_donated_parameters_move_to_the_arena(donated_flax,
                                                                      monkeypatch):
    plan, cands = donated_flax
    graph, cap = plan.graph, plan.capture
    order = graph.xla_order
    step = recompute_plan.step_index(graph, order)
    spans = graph.unit_spans(order)
    chosen = []         # whether best-fit's own placement of each plan had a copy there
    real = recompute_plan.copies_outside_parameters

    def recording(graph_, state, placement):
        chosen.append(_in_parameter(graph_, state, placement))
        return real(graph_, state, placement)
    monkeypatch.setattr(recompute_plan, "copies_outside_parameters", recording)
    moved = 0
    for c in cands:
        if moved >= 3:
            break
        users = sorted(c.users, key=lambda n: step[n])
        interval_of_unit = recompute_plan.new_state(graph, order).interval_of_unit
        for k in range(1, len(users)):
            if step[users[k - 1]] + 1 >= step[users[k]] or not all(
                    recompute_plan.operand_intact(graph, spans, step, interval_of_unit, o,
                                                  2 * step[users[k]]) for o in c.operands):
                continue
            got = budget.plan_of(graph, order, [(c, k)])
            assert all(graph.allocations[r.place[0]].kind != "parameter"
                       for r in got.layout.recomputes)
            if chosen[-1]:
                moved += 1
                check.check_plan(cap.hlo_proto, cap.values_text, cap.live_range_text,
                                 candidate_plan(got.layout), alignment=graph.alignment)
    assert moved, "best-fit put some copy in a donated parameter's bytes: the case tested"


def test_budget_of_a_keyword_call_with_donation_is_met_verified_and_timed(donated_flax):
    plan, _ = donated_flax
    x = jax.random.normal(jax.random.key(1), (4, 16, 32))
    params = _Net().init(jax.random.key(0), x)
    state = optax.adamw(1e-3).init(params)
    fixed = plan.argument_bytes + plan.output_bytes - plan.alias_bytes
    budget_bytes = fixed + int(0.85 * plan.planned_temp_bytes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", olla_jax.PlanWarning)
        got = olla_jax.plan(_step, params, state, x, kwargs=dict(y=jnp.arange(4) % 10),
                            donate_argnums=(0, 1), memory_budget=budget_bytes, time_limit_s=4)
    assert got.runs_total_bytes <= budget_bytes
    assert got.recomputed and got.verified
    assert got.step_time_ratio is not None and got.step_time_ratio > 0
    assert got.settings["time_limit_s"] == 4, "the summary states the call's limit"
