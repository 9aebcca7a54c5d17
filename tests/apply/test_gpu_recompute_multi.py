"""Several recomputations of one value in a GPU executable (compile-only H100
description: built and decoded again, never run here): one kernel copy per
copy of the plan, each writing its own place, read back as the plan says."""

from __future__ import annotations

import itertools
import warnings

import pytest

jax = pytest.importorskip("jax")

from olla_jax import budget, check  # noqa: E402
from olla_jax.budget import recompute_plan  # noqa: E402
from olla_jax.apply import feed_back, gpu_executable, gpu_readback, gpu_rewrite  # noqa: E402
from tests.marks import needs_plugin  # noqa: E402
from olla_jax.plan import candidate_plan  # noqa: E402

from test_recompute_multi import _args, held_thrice  # noqa: E402  (tests/apply is on the path)


@pytest.mark.slow     # a compile-only GPU build: ~20 s
@needs_plugin
def test_two_copies_of_one_kernel_are_built_and_read_back():
    from olla_jax.capture.record import capture
    from olla_jax.graph import model
    S = jax.ShapeDtypeStruct
    args = tuple(S(x.shape, x.dtype) for x in _args())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cap = capture(held_thrice, *args, backend="gpu:h100")
    graph = model.build(cap.hlo_proto, cap.values_text, cap.live_range_text)
    order = graph.xla_order
    step = recompute_plan.step_index(graph, order)
    cands = [c for c in budget.candidates(graph, cap) if len(c.users) >= 2]
    assert cands, "a value with two readers can be recomputed on GPU"

    def two_splits(c):
        """Two splits of ``c`` whose copies each have a reader of their own (a slot
        reads nothing), or None."""
        users = sorted(c.users, key=lambda n: step[n])
        ks = [k for k in range(len(users)) if k > 0 or step[c.producer] + 1 < step[users[0]]]
        return next((p for p in itertools.combinations(ks, 2)
                     if recompute_plan.copies_read(c, users, p)), None)

    a, pair = next((c, two_splits(c)) for c in sorted(cands, key=lambda c: -len(c.users))
                   if two_splits(c) is not None)
    plan = budget.plan_of(graph, order, [(a, k) for k in pair])
    assert len(plan.layout.recomputes) == 2
    check.check_plan(cap.hlo_proto, cap.values_text, cap.live_range_text,
                     candidate_plan(plan.layout), alignment=graph.alignment)
    raw = gpu_rewrite.rewrite(cap.executable, feed_back.edit_of(plan.layout))
    assert gpu_readback.compare(raw, plan.layout) is None
    names = [t.thunk_info.profile_annotation for t in gpu_executable.decode(raw).thunks]
    before = [t.thunk_info.profile_annotation for t in gpu_executable.decode(cap.executable).thunks]
    producer = graph.nodes[a.producer]
    assert names.count(producer) == before.count(producer) + 2
