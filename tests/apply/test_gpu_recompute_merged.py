"""Copies of several results of one multi-result fusion run before one
instruction are one launch: it writes each at its own copy's place, none of
them at a scratch place (the plan counts no scratch for them), and the
independent checker re-derives it (one step; each other result claimed once).

cnn_adam:small compiled for the shipped H100 description (compile-only, no
GPU): a max-pool's zeros, one fusion with no operands and two results, run at
the start and read again only by the backward pass; XLA's own
rematerialization copies that fusion once for both readers.
"""

from __future__ import annotations

import dataclasses
import importlib
import warnings

import pytest

jax = pytest.importorskip("jax")

from olla_jax.apply import gpu_executable, gpu_readback  # noqa: E402
from olla_jax.capture import gpu  # noqa: E402

needs_plugin = pytest.mark.skipif(gpu.cuda_plugin() is None,
                                  reason="jax's CUDA plugin is not installed")


@pytest.fixture(scope="module")
def merged():
    import examples
    import olla_jax
    from olla_jax.budget import feed_back_plan
    cands_mod = importlib.import_module("olla_jax.budget.candidates")
    rp = importlib.import_module("olla_jax.budget.recompute_plan")
    step = examples.get("cnn_adam", "small")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        base = olla_jax.plan(step.fn, *step.args, backend="gpu:h100", time_limit_s=1,
                             static_argnums=step.static_argnums,
                             donate_argnums=step.donate_argnums)
    g = base.graph
    order = g.xla_order
    at = rp.step_index(g, order)
    cands = cands_mod.candidates(g, base.capture)
    # two candidates, results of one fusion, each the other's scratch, read
    # again after a gap: the largest such pair
    pairs = [(c, d) for c in cands for d in cands
             if c.producer == d.producer and c.value < d.value and d.value in c.scratch
             and not c.operands]
    assert pairs, "no operand-less multi-result fusion with two recomputable results"
    c, d = max(pairs, key=lambda p: g.values[p[0].value].size)
    late = min(n for n in c.readers if at[n] > at[c.producer] + 1)
    users_c = sorted(c.users, key=lambda n: at[n])
    users_d = sorted(d.users, key=lambda n: at[n])
    assert late in users_d and late in d.slots    # a sibling's reader: a slot of d
    picks = [(c, users_c.index(late)), (d, users_d.index(late))]
    alone = rp.plan_of(g, order, picks[:1])
    plan = rp.plan_of(g, order, picks)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fed = feed_back_plan(base, plan, measure_time=False)
    return base, plan, alone, fed, c, d


@pytest.mark.slow       # cnn_adam:small compiled for H100 and planned: ~30 s
@needs_plugin
def test_two_results_copied_before_one_instruction_are_one_launch(merged):
    from olla_jax import checked
    base, plan, alone, fed, c, d = merged
    ra, rb = [r for r in plan.layout.recomputes if r.value in (c.value, d.value)]
    assert ra.before == rb.before and ra.scratch == () and rb.scratch == ()
    # alone, the copy writes the other result at a scratch place of its own
    ((other, _),) = [r for r in alone.layout.recomputes if r.value == c.value][0].scratch
    assert other == d.value
    assert checked.rejection(base.capture, plan.layout, alignment=256) is None
    assert fed.executable_bytes is not None, fed.notes
    after = gpu_executable.decode(fed.executable_bytes)
    names = [t.thunk_info.profile_annotation for t in after.thunks]
    assert names.count(ra.producer) == 2        # the first run and one copy
    assert gpu_readback.compare(fed.executable_bytes, plan.layout) is None


@pytest.mark.slow
@needs_plugin
def test_checker_and_readback_hold_a_merged_launch_to_the_plan(merged):
    from olla_jax import checked
    base, plan, _, fed, c, d = merged
    recs = plan.layout.recomputes
    i = next(k for k, r in enumerate(recs) if r.value == d.value)
    a = next(r for r in recs if r.value == c.value)
    # the sibling's copy over the first's: both written by one launch, both live
    over = dataclasses.replace(recs[i], place=a.place)
    bad = dataclasses.replace(plan.layout, recomputes=recs[:i] + (over,) + recs[i + 1:])
    assert checked.rejection(base.capture, bad, alignment=256) is not None
    # the same result also claimed as scratch of the launch
    dup = dataclasses.replace(a, scratch=((d.value, recs[i].place),))
    bad = dataclasses.replace(plan.layout, recomputes=tuple(dup if r is a else r for r in recs))
    assert "no other result" in (checked.rejection(base.capture, bad, alignment=256) or "")
    # the read-back: the plan's sibling place moved, the executable's not
    moved = dataclasses.replace(recs[i], place=(recs[i].place[0], recs[i].place[1] + 256))
    wrong = dataclasses.replace(plan.layout, recomputes=recs[:i] + (moved,) + recs[i + 1:])
    assert gpu_readback.compare(fed.executable_bytes, wrong) is not None


def _thunk_flops(raw: bytes, capture) -> int:
    """FLOPs of the entry thunks an executable runs: each thunk's instruction
    (its profile annotation) counted by ``olla_jax.flops``, once per thunk."""
    from olla_jax import flops as flops_lib
    module = importlib.import_module("olla_jax.budget.candidates")._thunk_kinds(capture)[1]
    by_id = {i.id: i for c in module.computations for i in c.instructions}
    comps = {c.id: c for c in module.computations}
    by_name = {i.name: i for i in by_id.values()}
    payloads = tuple(getattr(module, "payloads", ()))
    names = [t.thunk_info.profile_annotation for t in gpu_executable.decode(raw).thunks]
    return sum(flops_lib.instruction_flops(by_name[n], by_id, comps, payloads)
               for n in names if n in by_name)


@pytest.mark.slow
@needs_plugin
def test_a_merged_launchs_flops_are_counted_once_as_the_built_program_runs_it(merged):
    base, plan, alone, fed, c, d = merged
    assert alone.extra_flops == plan.extra_flops == c.flops == d.flops
    # the FLOPs the plan reports are those its built program adds: one copy's
    added = _thunk_flops(fed.executable_bytes, base.capture) - \
        _thunk_flops(base.capture.executable, base.capture)
    assert added == plan.extra_flops
