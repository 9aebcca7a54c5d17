"""Memory budgets: order and placement first, then recomputation, checked,
fed back and bit-identical; a budget that cannot be met is refused clearly."""

from __future__ import annotations

import dataclasses
import json
import re
import warnings

import jax
import numpy as np
import pytest

import examples
import olla_jax
from olla_jax import budget, check
from olla_jax.budget import recompute_plan
from olla_jax.apply import cpu_rewrite, feed_back
from olla_jax.capture import capture
from olla_jax.plan import BudgetNotMet, candidate_plan


def _bits(tree):
    return [(np.asarray(x).dtype, np.asarray(x).tobytes()) for x in jax.tree_util.tree_leaves(tree)]


def _plan(step, time_limit_s=3, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", olla_jax.PlanWarning)
        return olla_jax.plan(step.fn, *step.args, static_argnums=step.static_argnums,
                             donate_argnums=step.donate_argnums, time_limit_s=time_limit_s, **kw)


@pytest.fixture(scope="module")
def vit(vit_base):
    # The unbudgeted plan (vit_base, shared to save a plan of vit in the
    # default suite) gives the fixed bytes of XLA's best capture and the bound.
    step, base = vit_base
    fixed = base.argument_bytes + base.output_bytes - base.alias_bytes
    # Below the proven lower bound, which order and placement alone can reach
    # (sink moves often do), so only recomputation meets it; 8 s give the
    # order search room to end near that bound even on a loaded machine, since
    # recomputation starts from the order found. (16 s: plan()'s one limit
    # covers the order search and the recomputation, 8 s each as before.)
    bound = base.lower_bound_bytes
    target = fixed + int(0.95 * bound)
    return step, target, _plan(step, time_limit_s=16, memory_budget=target)


def test_recomputation_meets_the_budget_bit_for_bit(vit):
    step, target, plan = vit
    assert plan.recomputed, plan.notes
    assert plan.verified and plan.source == "olla_jax"
    assert plan.runs_total_bytes <= target
    assert plan.achieved_temp_bytes == plan.planned_temp_bytes
    assert plan.lower_bound_bytes <= plan.planned_temp_bytes
    assert plan.extra_flops > 0
    assert any("recomputed" in n for n in plan.notes)
    ours = plan.compiled(*step.args)
    xla = jax.jit(step.fn, static_argnums=step.static_argnums)(*step.args)
    assert _bits(ours) == _bits(xla)
    from olla_jax.graph.layout import recompute_count
    said = recompute_count(plan.layout).text     # "N values (M copies)"
    assert re.search(r"recomputed, extra FLOPs +" + re.escape(f"{said}, "), plan.summary())
    assert any(n.startswith(f"recomputed {said} ") for n in plan.notes), plan.notes


def test_checker_accepts_the_recomputation_and_rejects_broken_ones(vit):
    _, _, plan = vit
    cap, layout = plan.capture, plan.layout
    args = (cap.hlo_proto, cap.values_text, cap.live_range_text)
    check.check_plan(*args, candidate_plan(layout))
    claim = candidate_plan(layout).recomputes[0]

    def with_claim(new):
        base = candidate_plan(layout)
        return dataclasses.replace(base, recomputes=(new,) + base.recomputes[1:])

    # A late reader left reading the first copy (which is dead by then).
    dropped = dataclasses.replace(claim, late_users=claim.late_users[1:])
    with pytest.raises(check.PlanRejected):
        check.check_plan(*args, with_claim(dropped))
    # The second copy written over a value live at the same time: the first
    # copy's own place while it is still read (clone run before its producer).
    early = layout.early_place(claim.value)
    producer_first = dataclasses.replace(claim, before=claim.producer)
    with pytest.raises(check.PlanRejected):
        check.check_plan(*args, with_claim(producer_first))
    # Another value's bytes: the operand the clone reads lives at the clone's time.
    others = [p for v, p in layout.places.items() if v != claim.value and p != early]
    overlapping = [p for p in others if p[0] == claim.place[0]]
    rejected = 0
    for place in overlapping[:20]:
        try:
            check.check_plan(*args, with_claim(dataclasses.replace(claim, place=place)))
        except check.PlanRejected:
            rejected += 1
    assert rejected > 0
    # A value nobody defines there.
    with pytest.raises(check.PlanRejected):
        check.check_plan(*args, with_claim(dataclasses.replace(claim, producer=claim.before)))


def test_recomputed_plan_carries_the_recomputing_executable(vit):
    """``executable_bytes`` is the executable with the copied thunks, the one
    ``compiled`` runs (not the order-and-placement plan's from before)."""
    from olla_jax.apply import executable, load
    step, _, plan = vit
    assert plan.recomputed and plan.executable_bytes is not None

    def thunks(raw):
        return len(executable.decode(raw).thunk_sequence.thunks)
    assert thunks(plan.executable_bytes) == thunks(plan.capture.executable) + len(plan.recomputed)
    runs = executable.serialize_compiled(plan.compiled.executable)
    assert thunks(runs) == thunks(plan.executable_bytes)
    loaded = load.load_compiled(plan.capture.compiled, plan.executable_bytes)
    assert loaded.memory_analysis().temp_size_in_bytes == plan.achieved_temp_bytes
    assert _bits(loaded(*step.args)) == _bits(plan.compiled(*step.args))


def test_saved_plan_keeps_its_recomputation(vit, tmp_path):
    step, _, plan = vit
    path = tmp_path / "vit.json"
    plan.save(path)
    # `olla-jax show`'s summary names the recomputing plan's bound for what it is
    assert "lower_bound (working set)" in olla_jax.load_plan(path).summary()
    again = _plan(step, saved=olla_jax.load_plan(path))
    assert again.verified and again.layout.recomputes == plan.layout.recomputes
    assert again.achieved_temp_bytes == plan.achieved_temp_bytes
    # what it recomputes, at what cost, as the plan that was saved says
    assert again.recomputed == plan.recomputed and again.extra_flops == plan.extra_flops > 0
    assert "lower bound (working set)" in again.summary()
    older = json.loads(path.read_text())             # a file saved before they were kept
    for key in ("recomputed", "extra_flops"):
        del older["figures"][key]
    path.write_text(json.dumps(older))
    again = _plan(step, saved=olla_jax.load_plan(path))
    assert again.recomputed and any("older olla_jax" in n for n in again.notes)


def test_rewrite_refuses_what_it_cannot_copy(vit):
    _, _, plan = vit
    from olla_jax.apply import executable
    r = plan.layout.recomputes[0]
    edit = feed_back.edit_of(plan.layout)
    bad = dataclasses.replace(edit, clones=(dataclasses.replace(edit.clones[0],
                                                                 producer="no_such_instruction"),))
    with pytest.raises(cpu_rewrite.RewriteError):
        cpu_rewrite.rewrite(plan.capture.executable, bad)
    late_first = dataclasses.replace(edit, clones=(dataclasses.replace(
        edit.clones[0], before=plan.graph.nodes[0]),))
    with pytest.raises(cpu_rewrite.RewriteError):
        cpu_rewrite.rewrite(plan.capture.executable, late_first)
    # The accepted edit adds exactly one thunk per recomputed value.
    raw = cpu_rewrite.rewrite(plan.capture.executable, edit)
    before = len(executable.decode(plan.capture.executable).thunk_sequence.thunks)
    assert len(executable.decode(raw).thunk_sequence.thunks) == before + len(plan.layout.recomputes)
    assert r.producer in plan.recomputed


def test_unchecked_clone_over_live_bytes_is_caught_by_verification(vit):
    """Safety net: a recomputation whose copy overwrites a live value (the
    checker would refuse it) gives different outputs, and the bit-for-bit
    verification refuses the executable."""
    step, target, plan = vit
    graph = plan.graph
    # the plan's recomputations, and the greedy's (the model may pick other values)
    fixed = plan.argument_bytes + plan.output_bytes - plan.alias_bytes
    greedy = budget.choose(graph, plan.layout.order, budget.candidates(graph, plan.capture),
                           target - fixed, time_limit_s=3)
    layouts = [plan.layout] + ([greedy.layout] if greedy is not None else [])

    def victims(layout, r):
        node = graph.node_index[r.before]
        return [v for v in graph.values.values()
                if node in v.touches and v.id != r.value and v.allocation == graph.temp_allocation
                and v.size >= r.size]
    # Put the late copy on an operand of the consumer that is live when it runs.
    found = [(layout, k, vs[0]) for layout in layouts for k, r in enumerate(layout.recomputes)
             if (vs := victims(layout, r))]
    assert found
    layout, k, victim = found[0]
    recomputes = list(layout.recomputes)
    recomputes[k] = dataclasses.replace(recomputes[k], place=layout.early_place(victim.id))
    bad = dataclasses.replace(layout, recomputes=tuple(recomputes))
    outcome = feed_back.apply_layout(plan.capture, bad, args=step.args, trials=1)
    assert not outcome.ok


def test_budget_met_by_order_and_placement_needs_no_recomputation():
    step = examples.get("cnn_adam", "tiny")
    plan = _plan(step)
    met = _plan(step, memory_budget=plan.runs_total_bytes)
    assert met.recomputed == () and met.runs_total_bytes <= plan.runs_total_bytes


def test_budget_that_cannot_be_met_is_refused_with_the_least_reached():
    step = examples.get("cnn_adam", "tiny")
    xla = capture(step.fn, *step.args)
    fixed = xla.memory.argument + xla.memory.output - xla.memory.alias
    floor_budget = fixed + 1024
    with pytest.raises(BudgetNotMet) as info:   # unreachable at any limit: 1 s is enough
        _plan(step, time_limit_s=1, memory_budget=floor_budget)
    err = info.value
    assert err.least_bytes > floor_budget
    assert err.plan.runs_total_bytes == err.least_bytes
    assert ("MiB" in str(err) or "KiB" in str(err)) and "budget" in str(err)
    floor, where = budget.working_set_bound(err.plan.graph)
    assert floor <= err.plan.runs_temp_bytes and where


@jax.grad
def _two_products(w, x):
    return jax.numpy.tanh(jax.numpy.tanh(x @ w) @ w.T).sum()


def test_summary_says_whether_the_budget_was_met():
    # A budgeted plan's summary named no budget: plan_for's plan under
    # olla_jax.jit, or err.plan, read like any plan, met or not.
    x, w = np.ones((128, 256), np.float32), np.ones((256, 512), np.float32)
    budget = 700_000     # below the arguments and outputs: never met
    with pytest.raises(BudgetNotMet) as info:
        olla_jax.plan(_two_products, w, x, memory_budget=budget, time_limit_s=0.5,
                      feed_back=False, recompute=False)
    missed = info.value.plan
    over = olla_jax.sizes.size_text(missed.runs_total_bytes - budget)
    assert f"memory budget" in missed.summary() and f"NOT met: {over} over" in missed.summary()
    met = dataclasses.replace(missed, settings=dict(missed.settings, memory_budget=160 << 20))
    assert re.search(r"memory budget +160\.00 MiB, met\n", met.summary()), met.summary()
    unbudgeted = {k: v for k, v in missed.settings.items() if k != "memory_budget"}
    assert "memory budget" not in dataclasses.replace(missed, settings=unbudgeted).summary()


def test_budget_missed_by_a_saved_plan_says_nothing_was_searched(tmp_path):
    # With saved=, the plan is applied as it is; the error claimed "the best plan
    # found (trying order, placement and recomputation)" though none was tried.
    x, w = np.ones((128, 256), np.float32), np.ones((256, 512), np.float32)
    kw = dict(time_limit_s=0.5, feed_back=False)
    first = olla_jax.plan(_two_products, w, x, **kw)
    first.save(tmp_path / "p.json")
    with pytest.raises(BudgetNotMet) as info:
        olla_jax.plan(_two_products, w, x, saved=olla_jax.load_plan(tmp_path / "p.json"),
                      memory_budget=700_000, **kw)
    assert str(info.value).startswith("the saved plan, applied as it is"), str(info.value)
    assert "plan without saved= to search" in str(info.value)


@pytest.mark.parametrize("bad", [0, -5, 1.5, "1 GBs", True, float("nan"), "-1MiB"])
def test_budget_must_be_positive_bytes(bad):
    step = examples.get("mlp", "tiny")
    with pytest.raises(ValueError, match="memory_budget=.*: give a positive size in bytes"):
        olla_jax.plan(step.fn, *step.args, memory_budget=bad)


def test_budget_takes_a_size_string_as_the_cli_does():
    step = examples.get("mlp", "tiny")
    plan = _plan(step, time_limit_s=2, memory_budget="160MiB", feed_back=False)
    assert plan.runs_total_bytes <= 160 << 20


def _gpu_plugin():
    from olla_jax.capture import gpu
    return gpu.cuda_plugin() is not None


@pytest.mark.slow   # ~6-12 s; cut from the default run for its 15-minute aim (make test-slow)
@pytest.mark.skipif(not _gpu_plugin(), reason="needs jax's CUDA plugin (pip install 'olla_jax[gpu]')")
def test_gpu_budget_uses_xla_rematerialization_under_a_forced_limit():
    from olla_jax import xla_remat
    step = examples.get("lm_adamw", "tiny")
    base = xla_remat.search(step.fn, *step.args, backend="gpu:h100", budget_bytes=1,
                            static_argnums=step.static_argnums, fractions=())[0]
    assert base.flops > 0 and base.limit_bytes is None
    fixed = base.memory.argument + base.memory.output - base.memory.alias
    budget_bytes = fixed + int(0.8 * base.memory.temp)
    points = xla_remat.search(step.fn, *step.args, backend="gpu:h100", budget_bytes=budget_bytes,
                              static_argnums=step.static_argnums, fractions=(0.8,))
    assert len(points) == 2
    chosen = xla_remat.best(points, budget_bytes)
    fitting = [p for p in points if p.total <= budget_bytes]
    if fitting:
        assert chosen.total <= budget_bytes and chosen.flops == min(p.flops for p in fitting)
    else:
        assert chosen.total == min(p.total for p in points)
    with pytest.raises(Exception, match="compile-only"):
        xla_remat.search(step.fn, *step.args, backend="cpu", budget_bytes=budget_bytes)


def test_flops_count_matmuls_and_convolutions():
    from olla_jax import flops
    m, k, n = 64, 48, 32
    x, w = jax.numpy.ones((m, k)), jax.numpy.ones((k, n))
    compiled = jax.jit(lambda a, b: a @ b).lower(x, w).compile()
    assert flops.compiled_flops(compiled) == 2 * m * k * n
    img, ker = jax.numpy.ones((2, 3, 16, 16)), jax.numpy.ones((8, 3, 3, 3))
    conv = jax.jit(lambda a, b: jax.lax.conv(a, b, (1, 1), "VALID")).lower(img, ker).compile()
    assert flops.compiled_flops(conv) == 2 * (2 * 8 * 14 * 14) * (3 * 3) * 3


# --- recomputation chosen by a model (olla_jax.solve.recompute) --------------

@pytest.fixture(scope="module")
def vit_base(planned_example):
    """vit tiny planned without a budget (order and placement only; one plan
    a session, shared with the other budget tests: tests/conftest.py)."""
    return planned_example("vit")


def _base(vit_base):
    _, plan = vit_base
    graph = plan.graph
    order = plan.layout.order if plan.layout is not None else graph.xla_order
    return plan, graph, order, budget.candidates(graph, plan.capture)


def _a_chain(graph, order, cands):
    """(A, ka, B, kb): B's copy reads A's copy (A is B's operand, copied first)."""
    by = {c.value: c for c in cands}
    step = recompute_plan.step_index(graph, order)
    state = recompute_plan.new_state(graph, order)
    spans = graph.unit_spans(order)

    def intact(c, t):
        return all(o in by or recompute_plan.operand_intact(graph, spans, step, state.interval_of_unit,
                                                     o, 2 * t) for o in c.operands)
    for b in cands:
        ub = sorted(b.users, key=lambda n: step[n])
        for a in (by[o] for o in b.operands if o in by):
            ua = sorted(a.users, key=lambda n: step[n])
            for ka, kb in ((i, j) for i in range(len(ua)) for j in range(len(ub))):
                ta, tb = step[ua[ka]], step[ub[kb]]
                early_a = step[a.producer] if ka == 0 else step[ua[ka - 1]]
                early_b = step[b.producer] if kb == 0 else step[ub[kb - 1]]
                if ta <= tb and early_a + 1 < ta and early_b < tb and \
                        step[b.producer] <= early_a and intact(a, ta) and intact(b, tb):
                    return a, ka, b, kb
    return None


def test_chained_recomputation_is_checked_and_bit_identical(vit_base):
    step, _ = vit_base
    base, graph, planned, cands = _base(vit_base)
    # the order found depends on the machine's load: XLA's own order as well
    found = [(order, c) for order in (planned, graph.xla_order)
             if (c := _a_chain(graph, order, cands)) is not None]
    assert found, "vit tiny has a value whose operand can be recomputed first"
    order, (a, ka, b, kb) = found[0]
    found = budget.plan_of(graph, order, [(b, kb), (a, ka)])
    # the operand's copy runs first, and the rewrite points B's copy at it
    assert [r.value for r in found.layout.recomputes] == [a.value, b.value]
    clones = feed_back.edit_of(found.layout).clones
    assert clones[0].operands == () and len(clones[1].operands) == 1
    assert check.check_plan(base.capture.hlo_proto, base.capture.values_text,
                            base.capture.live_range_text, candidate_plan(found.layout),
                            alignment=graph.alignment)
    outcome = feed_back.apply_layout(base.capture, found.layout, args=step.args,
                                     static_argnums=step.static_argnums, trials=1)
    assert outcome.ok, outcome.reason


def test_budget_ladder_is_monotone_and_checked(vit_base):
    base, graph, order, cands = _base(vit_base)
    top = base.runs_temp_bytes
    targets = [top, int(0.9 * top), int(0.8 * top), int(0.6 * top), 1]
    plans = budget.ladder(graph, order, cands, targets, time_limit_s=5)   # (1.5 s: short on a loaded machine)
    temps = [top if p is None else p.temp_bytes for p in plans]
    assert temps == sorted(temps, reverse=True), temps
    assert temps[-1] < top
    for p in plans:
        if p is not None:
            assert check.check_plan(base.capture.hlo_proto, base.capture.values_text,
                                    base.capture.live_range_text, candidate_plan(p.layout),
                                    alignment=graph.alignment)


def test_recompute_engine_must_be_known(vit_base):
    _, plan = vit_base
    with pytest.raises(ValueError, match="engine"):
        budget.recompute_to_budget(plan, plan.runs_total_bytes, engine="simplex")
