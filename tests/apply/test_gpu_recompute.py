"""Recomputation in the GPU executable: a kernel thunk copied, read back, checked.

Compile-only for the shipped H100 description (jax's CUDA plugin, no GPU):
the rewritten executable is built and decoded again, never run here.  The
step holds ``a = x @ w1`` idle across an 8 MiB temporary, so running its
GEMM kernel a second time lowers the peak.
"""

from __future__ import annotations

import dataclasses
import types
import warnings

import pytest

jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402

from olla_jax.apply import gpu_executable, gpu_readback, gpu_rewrite  # noqa: E402
from olla_jax.apply.edits import Clone, ExecutableEdit, RewriteError  # noqa: E402
from olla_jax.capture import gpu  # noqa: E402
from tests.marks import needs_plugin  # noqa: E402

S = jax.ShapeDtypeStruct


def held_step(x, w1, w2):
    a = x @ w1                              # read early, and again at the end
    c = jnp.tanh((x * a.sum()) @ w2)        # the peak: 8 MiB while a waits
    d = c[:, :256] * c[:, 256:512]
    return (a * d).astype(jnp.bfloat16)


HELD_ARGS = (S((2048, 256), jnp.float32), S((256, 256), jnp.float32),
             S((256, 1024), jnp.float32))


@pytest.fixture(scope="module")
def recomputed():
    import olla_jax
    from olla_jax import budget
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        base = olla_jax.plan(held_step, *HELD_ARGS, backend="gpu:h100", time_limit_s=2)
        target = base.runs_total_bytes - base.runs_temp_bytes + int(0.9 * base.runs_temp_bytes)
        # (5 s: the first search in a process also decodes the executable's
        # protos for the first time, which took more than 2 s on a loaded machine)
        plan = budget.recompute_to_budget(base, target, time_limit_s=5, measure_time=False)
    return base, plan


def _names(decoded):
    return [t.thunk_info.profile_annotation for t in decoded.thunks]


@needs_plugin
def test_recomputed_kernel_copy_reads_back_with_the_plans_slices(recomputed):
    base, plan = recomputed
    assert plan.recomputed and plan.extra_flops > 0, plan.notes
    assert plan.planned_temp_bytes < base.runs_temp_bytes
    assert plan.executable_bytes is not None and not plan.verified
    assert any("not run" in n for n in plan.notes)
    (r,) = plan.layout.recomputes
    before = gpu_executable.decode(base.capture.executable)
    after = gpu_executable.decode(plan.executable_bytes)
    names = _names(after)
    assert len(names) == len(before.thunks) + 1
    first, copy = [k for k, n in enumerate(names) if n == r.producer]
    assert names[copy + 1] == r.before and r.before not in names[:copy]
    a = gpu_rewrite.kernel_arguments(after.thunks[first])
    b = gpu_rewrite.kernel_arguments(after.thunks[copy])
    early = plan.layout.early_place(r.value)
    for (sa, wa), (sb, wb) in zip(a, b):
        assert wa == wb
        if wa:   # the copy writes the value at the plan's place
            assert (sa.buffer_allocation_index, sa.offset) == early
            assert (sb.buffer_allocation_index, sb.offset) == r.place
        else:    # and reads what the first run read
            assert (sa.buffer_allocation_index, sa.offset, sa.size) == \
                (sb.buffer_allocation_index, sb.offset, sb.size)
    assert after.thunks[copy].thunk_info.thunk_id not in \
        {t.thunk_info.thunk_id for k, t in enumerate(after.thunks) if k != copy}
    late = next(t for t in after.thunks if t.thunk_info.profile_annotation == r.late_users[0])
    assert any((s.buffer_allocation_index, s.offset) == r.place
               for s, written in gpu_rewrite.kernel_arguments(late) if not written)
    temp = plan.graph.temp_allocation
    assert after.allocations[temp].size == plan.planned_temp_bytes
    assert gpu_readback.compare(plan.executable_bytes, plan.layout) is None


@needs_plugin
def test_readback_finds_a_copy_that_is_not_where_the_plan_says(recomputed):
    _, plan = recomputed
    (r,) = plan.layout.recomputes
    moved = dataclasses.replace(r, place=(r.place[0], r.place[1] + 256))
    wrong = dataclasses.replace(plan.layout, recomputes=(moved,))
    assert "not the plan's place" in gpu_readback.compare(plan.executable_bytes, wrong)
    later = dataclasses.replace(r, before=r.late_users[0] + "_elsewhere")
    wrong = dataclasses.replace(plan.layout, recomputes=(later,))
    assert "just before" in gpu_readback.compare(plan.executable_bytes, wrong)


@needs_plugin
def test_readback_counts_a_late_reader_that_writes_over_the_copy_in_place(recomputed):
    _, plan = recomputed
    (r,) = plan.layout.recomputes

    def with_late_argument(change):
        decoded = gpu_executable.decode(plan.executable_bytes)
        late = next(t for t in decoded.thunks
                    if t.thunk_info.profile_annotation == r.late_users[0])
        body = getattr(late, late.WhichOneof("impl"))
        for k, (s, _) in enumerate(gpu_rewrite.kernel_arguments(late)):
            if (s.buffer_allocation_index, s.offset) == r.place:
                change(body, k, s)
        return gpu_executable.encode(decoded)
    # XLA flags an argument a kernel reads and writes in place as written
    written = with_late_argument(lambda body, k, s: body.written.__setitem__(k, True))
    assert gpu_readback.compare(written, plan.layout) is None
    elsewhere = with_late_argument(lambda body, k, s: setattr(s, "offset", r.place[1] + r.size))
    assert "does not read the recomputed" in gpu_readback.compare(elsewhere, plan.layout)


def inplace_step(x, w1, w2):
    a = jnp.tanh(x @ w1)
    c = jnp.tanh((x * a.sum()) @ w2)
    return (a * (c * c).sum(1)[:, None]).sum(0)   # XLA writes this product over a


@needs_plugin
def test_checker_refuses_a_copy_whose_operand_is_overwritten_before_it_runs(recomputed):
    import olla_jax
    from olla_jax import check, checked
    from olla_jax import dumps
    from olla_jax.graph import layout as layout_lib
    base, plan = recomputed
    assert checked.rejection(base.capture, plan.layout, alignment=256) is None
    # A copy written over a value still live there is refused.
    (r,) = plan.layout.recomputes
    graph = plan.graph
    live = max(graph.values.values(), key=lambda v: v.size)
    assert live.xla_range[0] < graph.flat.index(r.before) <= live.xla_range[1] + 1
    onto = check.RecomputeClaim(r.value, r.producer, r.before, r.late_users,
                                plan.layout.early_place(live.id))
    wrong = dataclasses.replace(checked.candidate_plan(plan.layout), recomputes=(onto,))
    cap = base.capture
    with pytest.raises(check.PlanRejected, match="recomputed.*overlap|overlap.*recomputed"):
        check.check_plan(cap.hlo_proto, cap.values_text, cap.live_range_text, wrong, alignment=256)

    # A copy reading bytes that XLA writes over (in place) before it runs.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        other = olla_jax.plan(inplace_step, *HELD_ARGS, backend="gpu:h100", time_limit_s=1,
                              feed_back=False)
    g, cap = other.graph, other.capture
    records = dumps.parse_values(cap.values_text)
    step = {name: k for k, name in enumerate(g.nodes)}
    found = None
    for unit in g.units:
        members = sorted((g.values[v] for v in unit.values), key=lambda v: v.def_node)
        if len(members) < 2:
            continue
        operand, over = members[0], members[1]
        readers = [u.instruction for u in records[operand.id].uses
                   if u.instruction in step and step[u.instruction] < over.def_node]
        producers = [n for n in readers if sum(1 for rec in records.values()
                                               if rec.defining_instruction == n) == 1]
        if producers and over.def_node + 1 < len(g.nodes):
            found = (producers[0], g.nodes[over.def_node + 1], over)
            break
    assert found is not None, "XLA no longer writes the product over its operand"
    producer, before, over = found
    value = next(rec.id for rec in records.values() if rec.defining_instruction == producer)
    claim = check.RecomputeClaim(value, producer, before, (before,), (g.temp_allocation, 0))
    bad = dataclasses.replace(checked.candidate_plan(layout_lib.xla_layout(g)), recomputes=(claim,))
    with pytest.raises(check.PlanRejected, match="written over"):
        check.check_plan(cap.hlo_proto, cap.values_text, cap.live_range_text, bad, alignment=256)


def _conv_step(x, k):
    y = jax.lax.conv_general_dilated(x, k, (1, 1), "SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return jnp.tanh(y) * 2.0


@needs_plugin
def test_uncopyable_thunks_are_refused_with_a_reason():
    from olla_jax.capture.record import serialize_executable
    compiled = gpu.compile_for_target(_conv_step, (S((2, 8, 8, 4), jnp.float32),
                                                   S((3, 3, 4, 8), jnp.float32)), target="h100")
    raw = serialize_executable(compiled)
    decoded = gpu_executable.decode(raw)
    names = _names(decoded)
    kinds = [gpu_rewrite.thunk_kind(t) for t in decoded.thunks]
    conv = kinds.index("convolution_thunk")
    later = next(k for k in range(conv + 1, len(names)) if kinds[k] != "convolution_thunk")
    result = next(s for p, s in gpu_rewrite._slices(decoded.thunks[conv]) if "result" in p)
    clone = Clone(names[conv], names[later],
                  (result.buffer_allocation_index, result.offset, result.size),
                  (result.buffer_allocation_index, result.offset))
    edit = ExecutableEdit(order=gpu_rewrite.entry_order(decoded),
                          relocate=lambda name, a, o, s: (a, o),
                          relocate_logical=lambda b, a, o: (a, o), clones=(clone,))
    # A cuDNN convolution (a library call, pure) is copied: compile-only, it
    # has no workspace (no autotuning), so nothing else needs a place.
    copied = gpu_executable.decode(gpu_rewrite.rewrite(raw, edit))
    assert _names(copied).count(names[conv]) == 2

    # A kernel launch whose instruction has side effects is refused by name.
    kernel = next(t for t in decoded.thunks if gpu_rewrite.thunk_kind(t) in
                  gpu_rewrite.CLONABLE_KINDS)
    pure = types.SimpleNamespace(name="f", opcode="fusion", called_computation_ids=[7])
    rng = types.SimpleNamespace(name="r", opcode="rng", called_computation_ids=[])
    comps = {7: types.SimpleNamespace(instructions=[rng])}
    assert "side effects" in gpu_rewrite.clone_refusal(kernel, pure, comps)
    assert gpu_rewrite.clone_refusal(kernel, pure, {7: types.SimpleNamespace(instructions=[])}) \
        is None
    assert "cuDNN" in gpu_rewrite.clone_refusal(decoded.thunks[conv], pure, {})

    # A clone whose value lies in one of the kernel's read arguments is refused:
    # the copy would read the bytes it is to recompute (an in-place kernel).
    source = next(t for t in decoded.thunks if gpu_rewrite.thunk_kind(t) in
                  gpu_rewrite.CLONABLE_KINDS and len(gpu_rewrite.kernel_arguments(t)) >= 2)
    k = list(decoded.thunks).index(source)
    read = next(s for s, w in gpu_rewrite.kernel_arguments(source) if not w)
    inplace = Clone(names[k], names[-1], (read.buffer_allocation_index, read.offset, read.size),
                    (read.buffer_allocation_index, read.offset))
    assert k < len(names) - 1
    with pytest.raises(RewriteError, match="in-place|besides"):
        gpu_rewrite.rewrite(raw, dataclasses.replace(edit, clones=(inplace,)))


def test_side_by_side_keeps_the_fewest_flops_within_the_budget():
    from olla_jax.gpu_budget import Side, choose

    def plan(total, flops):
        return types.SimpleNamespace(runs_total_bytes=total, extra_flops=flops)
    ours, xla = Side("ours", plan(90, 50)), Side("xla", plan(80, 70))
    assert choose([ours, xla], 100) is ours
    assert choose([ours, xla], 85) is xla
    assert choose([ours, xla], 10) is xla   # neither fits: the least memory


@pytest.mark.slow
@needs_plugin
def test_gpu_budget_tries_ours_beside_xla_rematerialization():
    import olla_jax
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        base = olla_jax.plan(held_step, *HELD_ARGS, backend="gpu:h100", time_limit_s=2)
        budget = base.runs_total_bytes - base.runs_temp_bytes + int(0.9 * base.runs_temp_bytes)
        plan = olla_jax.plan(held_step, *HELD_ARGS, backend="gpu:h100", time_limit_s=2,
                             memory_budget=budget)
    side = [n for n in plan.notes if "side by side" in n]
    assert len(side) == 1 and "our recomputation" in side[0] and "XLA's rematerialization" in side[0]
    assert plan.runs_total_bytes <= budget
    if plan.engine.endswith("+recompute"):
        assert plan.executable_bytes is not None and plan.layout.recomputes
