"""XLA:GPU's tuple-table flags, judged by the executable's own thunks.

A step whose temp arena holds tuple tables (a scan's loop state, argmax's
multi-result reductions) compiled for the H100 without a GPU.  XLA flags a
combined temp arena ``is_tuple`` or not depending on which temp allocation it
combined the others into first (lm_adamw offloaded to host is flagged, this
step is not), so the flag is set here by hand, as XLA sets it there.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import pytest

from olla_jax import check, checked, dumps
from olla_jax.apply import gpu_executable, gpu_rewrite, tuple_tables
from olla_jax.apply.edits import SLICE, ExecutableEdit, RewriteError, nested_of_type
from olla_jax.capture.record import capture
from tests.marks import needs_plugin


def _scan(x):
    def body(carry, _):
        a, n = carry
        return (a * 1.01 + jnp.argmax(a), n + 1), None
    return jax.lax.scan(body, (x, 0), None, length=4)[0]


@pytest.fixture(scope="module")
def cap():
    return capture(_scan, jax.ShapeDtypeStruct((256, 256), jnp.float32), backend="gpu:h100")


def _arena(decoded) -> int:
    """The temp allocation that holds tuple tables."""
    extents = tuple_tables.tuple_table_extents(decoded)
    (index,) = [a.index for a in decoded.allocations if a.index in extents and not (
        a.maybe_live_out or a.is_entry_computation_parameter or a.is_constant
        or a.is_thread_local)]
    return index


def _flagged(cap, index: int):
    """``cap`` with allocation ``index`` flagged ``is_tuple`` in its buffer
    assignment and in its executable, as XLA flags lm_adamw's arena."""
    proto = dumps.parse_hlo_proto(cap.hlo_proto)
    decoded = gpu_executable.decode(cap.executable)
    for allocs in (proto.buffer_assignment.buffer_allocations, decoded.allocations,
                   decoded.buffer_assignment.buffer_allocations):
        allocs[index].is_tuple = True
    return dataclasses.replace(cap, hlo_proto=proto.SerializeToString(),
                               executable=gpu_executable.encode(decoded))


@needs_plugin
def test_a_flag_no_thunk_bears_out_is_unheld_and_one_a_thunk_touches_is_held(cap):
    decoded = gpu_executable.decode(cap.executable)
    arena = _arena(decoded)
    assert tuple_tables.unheld_tuple_flags(decoded) == frozenset()     # not flagged here
    decoded.allocations[arena].is_tuple = True
    assert tuple_tables.unheld_tuple_flags(decoded) == {arena}
    # a thunk naming bytes of a table (as XLA:CPU's tuple thunks do): the flag holds
    offset, _ = tuple_tables.tuple_table_extents(decoded)[arena][0]
    arg = next(s for t in decoded.thunks for s in nested_of_type(t, SLICE))
    arg.buffer_allocation_index, arg.offset = arena, offset
    assert tuple_tables.unheld_tuple_flags(decoded) == frozenset()


@needs_plugin
def test_the_checker_lets_a_plan_grow_an_arena_whose_tuple_flag_is_unheld(cap):
    """Before: a GPU plan that resized a temp arena XLA flagged as a tuple
    table was refused (lm_adamw offloaded kept XLA's plan)."""
    arena = _arena(gpu_executable.decode(cap.executable))
    flagged = _flagged(cap, arena)
    entry = {i.name for i in _entry_instructions(cap)}
    order = tuple(n for n in dumps.parse_live_ranges(cap.live_range_text).sequence if n in entry)
    size = next(a.size for a in dumps.parse_hlo_proto(cap.hlo_proto)
                .buffer_assignment.buffer_allocations if a.index == arena)
    plan = check.CandidatePlan(order, {}, {arena: size + 256})
    with pytest.raises(check.PlanRejected, match="tuple table"):
        check.check_plan(flagged.hlo_proto, flagged.values_text, flagged.live_range_text, plan)
    assert checked.unheld_tuple_flags(flagged) == {arena}
    check.check_plan(flagged.hlo_proto, flagged.values_text, flagged.live_range_text, plan,
                     unheld_tuple_flags=checked.unheld_tuple_flags(flagged))


def _entry_instructions(cap):
    module = dumps.parse_hlo_proto(cap.hlo_proto).hlo_module
    return next(c for c in module.computations if c.id == module.entry_computation_id).instructions


@needs_plugin
def test_the_rewrite_resizes_an_arena_only_while_its_tuple_flag_is_unheld(cap):
    """Before: the rewrite refused any new size for a flagged arena."""
    arena = _arena(gpu_executable.decode(cap.executable))
    flagged = _flagged(cap, arena)
    decoded = gpu_executable.decode(flagged.executable)
    size = decoded.allocations[arena].size
    edit = ExecutableEdit(order=gpu_rewrite.entry_order(decoded),
                          relocate=lambda name, a, o, s: (a, o),
                          relocate_logical=lambda b, a, o: (a, o),
                          allocation_sizes={arena: size + 256 - size % 256})
    out = gpu_executable.decode(gpu_rewrite.rewrite(flagged.executable, edit))
    assert out.allocations[arena].size == size + 256 - size % 256 and out.allocations[arena].is_tuple
    # once a thunk names a table's bytes, the flag holds and the size is fixed
    offset, _ = tuple_tables.tuple_table_extents(decoded)[arena][0]
    arg = next(s for t in decoded.thunks for s in nested_of_type(t, SLICE))
    arg.buffer_allocation_index, arg.offset = arena, offset
    with pytest.raises(RewriteError, match="tuple table"):
        gpu_rewrite.rewrite(gpu_executable.encode(decoded), edit)


def test_an_unreadable_gpu_executable_leaves_every_flag_honoured():
    class Cap:
        backend, executable = "gpu:h100", b"not an executable"
    assert checked.unheld_tuple_flags(Cap()) == frozenset()


@dataclasses.dataclass(frozen=True)
class _Result:
    """What ``recompute_to_budget`` reads before its search."""
    graph: object
    capture: object
    backend: str = "gpu:h100"
    argument_bytes: int = 1 << 20
    output_bytes: int = 0
    alias_bytes: int = 0
    notes: tuple = ()
    solve_seconds: float = 0.0
    verify_seconds: float = 0.0


@needs_plugin
def test_recomputation_resizes_a_temp_arena_only_while_its_tuple_flag_is_unheld(cap):
    """Before: recomputation to a budget refused any temp allocation flagged
    ``is_tuple`` (lm_adamw offloaded kept 50.09 MiB, over the budget), though
    the checker and the rewrite let it grow while no thunk bears the flag out."""
    import warnings

    from olla_jax.budget import feed_back
    from olla_jax.graph import model
    arena = _arena(gpu_executable.decode(cap.executable))
    flagged = _flagged(cap, arena)
    graph = model.build(flagged.hlo_proto, flagged.values_text, flagged.live_range_text)
    assert graph.temp_allocation == arena and graph.allocations[arena].is_tuple
    assert feed_back.temp_resizable(graph, flagged)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # a budget below the arguments: the first refusal after the temp's
        got = feed_back.recompute_to_budget(_Result(graph, flagged), 1024, time_limit_s=1.0)
    assert "cannot be resized" not in got.notes[-1] and "arguments and outputs" in got.notes[-1]
    # once a thunk names a table's bytes, the flag holds: not tried
    decoded = gpu_executable.decode(flagged.executable)
    offset, _ = tuple_tables.tuple_table_extents(decoded)[arena][0]
    arg = next(s for t in decoded.thunks for s in nested_of_type(t, SLICE))
    arg.buffer_allocation_index, arg.offset = arena, offset
    held = dataclasses.replace(flagged, executable=gpu_executable.encode(decoded))
    assert not feed_back.temp_resizable(graph, held)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = feed_back.recompute_to_budget(_Result(graph, held), 1024, time_limit_s=1.0)
    assert "cannot be resized" in got.notes[-1]
