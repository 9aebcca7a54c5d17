"""rewrite(): what it changes and what it refuses (no executable is loaded)."""

from __future__ import annotations

import dataclasses

import pytest

from olla_jax.apply import controls, cpu_rewrite, executable
from olla_jax.apply.cpu_rewrite import ExecutableEdit, RewriteError


@pytest.mark.parametrize("name", ["mlp", "scan", "dus", "donate", "zoo"])
def test_identity_edit_gives_same_bytes(programs, name):
    raw = programs[name].raw
    assert cpu_rewrite.rewrite(raw, cpu_rewrite.identity_edit(executable.decode(raw))) == raw


@pytest.mark.parametrize("name", ["mlp", "scan", "dus", "donate", "zoo"])
def test_every_thunk_names_an_instruction(programs, name):
    decoded = executable.decode(programs[name].raw)
    uses = cpu_rewrite.slice_uses(decoded)
    names = {i.name for c in decoded.hlo_module.computations for i in c.instructions}
    assert uses and all(u.instruction in names for u in uses)
    entry = {i.name for i in decoded.entry_computation().instructions}
    assert all(u.instruction in entry for u in uses if u.depth == 0)
    if name in ("scan", "zoo"):  # nested thunks name the called computations' instructions
        assert any(u.depth == 1 and u.instruction not in entry for u in uses)
    if name == "zoo":
        kinds = {u.thunk_kind for u in uses}
        assert {"sort", "copy", "topk", "custom-call", "while", "conditional"} <= kinds, kinds


def test_mirror_moves_every_temp_slice(programs):
    raw = programs["mlp"].raw
    decoded = executable.decode(raw)
    temp = controls.temp_allocation(decoded)
    edit = controls.mirror_edit(decoded)
    out = executable.decode(cpu_rewrite.rewrite(raw, edit))
    before = [u for u in cpu_rewrite.slice_uses(decoded)]
    after = [u for u in cpu_rewrite.slice_uses(out)]
    assert len(before) == len(after)
    size = edit.allocation_sizes[temp]
    moved = 0
    for b, a in zip(before, after):
        assert (a.instruction, a.field, a.allocation, a.size) == (b.instruction, b.field, b.allocation, b.size)
        if b.allocation == temp:
            assert a.offset % 64 == b.offset % 64 and a.offset + a.size <= size
            moved += a.offset != b.offset
        else:
            assert a.offset == b.offset
    assert moved > 0
    assert out.buffer_assignment.buffer_allocations[temp].size == size
    assigned = {e.logical_buffer_id: e.offset for e in out.buffer_assignment.buffer_allocations[temp].assigned}
    original = {e.logical_buffer_id: e.offset for e in decoded.buffer_assignment.buffer_allocations[temp].assigned}
    assert assigned.keys() == original.keys() and assigned != original


def test_reorder_changes_thunks_and_schedule(programs):
    raw = programs["mlp"].raw
    decoded = executable.decode(raw)
    a, b = controls.swappable_pairs(decoded)[0]
    out = executable.decode(cpu_rewrite.rewrite(raw, controls.swap_edit(decoded, a, b)))
    order = cpu_rewrite.entry_order(out)
    assert order.index(b) + 1 == order.index(a)
    names = [t.info.op_name for t in out.thunk_sequence.thunks]
    assert names.index(b) < names.index(a)
    old_names = [t.info.op_name for t in decoded.thunk_sequence.thunks]
    assert sorted(names) == sorted(old_names) and names != old_names


def _edit(decoded, **changes) -> ExecutableEdit:
    return dataclasses.replace(cpu_rewrite.identity_edit(decoded), **changes)


def test_refuses_too_small_allocation(programs):
    raw = programs["mlp"].raw
    decoded = executable.decode(raw)
    temp = controls.temp_allocation(decoded)
    small = decoded.buffer_assignment.buffer_allocations[temp].size - 64
    with pytest.raises(RewriteError, match="outside allocation"):
        cpu_rewrite.rewrite(raw, _edit(decoded, allocation_sizes={temp: small}))


def test_refuses_misalignment(programs):
    raw = programs["mlp"].raw
    decoded = executable.decode(raw)
    temp = controls.temp_allocation(decoded)
    shifted = controls.shift_edit(decoded, delta=64)
    bad = dataclasses.replace(
        shifted,
        relocate=lambda n, a, o, s: (a, o + 32) if a == temp else (a, o),
        relocate_logical=lambda b, a, o: (a, o + 32) if a == temp else (a, o))
    with pytest.raises(RewriteError, match="alignment"):
        cpu_rewrite.rewrite(raw, bad)


def test_refuses_disagreeing_relocations(programs):
    raw = programs["mlp"].raw
    decoded = executable.decode(raw)
    edit = controls.shift_edit(decoded)
    with pytest.raises(RewriteError, match="disagree"):  # thunks moved, assignment not
        cpu_rewrite.rewrite(raw, dataclasses.replace(
            edit, relocate_logical=lambda b, a, o: (a, o)))


def test_refuses_bad_orders(programs):
    raw = programs["mlp"].raw
    decoded = executable.decode(raw)
    order = list(cpu_rewrite.entry_order(decoded))
    with pytest.raises(RewriteError, match="permutation"):
        cpu_rewrite.rewrite(raw, _edit(decoded, order=tuple(order[:-1])))
    with pytest.raises(RewriteError, match="before its operand"):
        cpu_rewrite.rewrite(raw, _edit(decoded, order=tuple(reversed(order))))


def test_refuses_unmapped_thunk(programs):
    decoded = executable.decode(programs["mlp"].raw)
    decoded.thunk_sequence.thunks[0].info.op_name = "no-such-instruction"
    raw = executable.encode(decoded)
    with pytest.raises(RewriteError, match="no-such-instruction"):
        cpu_rewrite.rewrite(raw, cpu_rewrite.identity_edit(executable.decode(raw)))


def test_refuses_moving_fixed_or_live_out_buffers(programs):
    raw = programs["mlp"].raw
    decoded = executable.decode(raw)
    allocs = decoded.buffer_assignment.buffer_allocations
    param = next(a.index for a in allocs if a.is_entry_computation_parameter)
    with pytest.raises(RewriteError, match="parameter"):
        cpu_rewrite.rewrite(raw, _edit(decoded, relocate=lambda n, a, o, s: (a, o + 64) if a == param else (a, o)))
    # A value that flows out (an updated weight) must stay in its output allocation.
    buffer_at = {(b.defined_at.instruction_id, tuple(b.defined_at.shape_index)): b.id
                 for b in decoded.buffer_assignment.logical_buffers}
    live_out = {buffer_at[key] for key in cpu_rewrite.possibly_live_out(decoded) if key in buffer_at}
    output = next(a for a in allocs if a.maybe_live_out and not a.is_tuple)
    buffer = next(e.logical_buffer_id for e in output.assigned if e.logical_buffer_id in live_out)
    temp = controls.temp_allocation(decoded)
    with pytest.raises(RewriteError, match="live out"):
        cpu_rewrite.rewrite(raw, _edit(
            decoded, relocate_logical=lambda b, a, o: (temp, 0) if b == buffer else (a, o)))


def test_thunk_resources_follow_their_thunks(programs):
    """Resource users (tokens, communicators) are thunk indices: they must be
    renumbered when thunks move.  None of our programs has any, so add one."""
    decoded = executable.decode(programs["mlp"].raw)
    a, b = controls.swappable_pairs(decoded)[0]
    names = [t.info.op_name for t in decoded.thunk_sequence.thunks]
    users = decoded.thunk_sequence.thunk_resources.add()
    users.resource.kind = 1
    users.thunk_indices[:] = [names.index(a), names.index(b)]
    raw = executable.encode(decoded)
    out = executable.decode(cpu_rewrite.rewrite(raw, controls.swap_edit(executable.decode(raw), a, b)))
    new_names = [t.info.op_name for t in out.thunk_sequence.thunks]
    (resource,) = out.thunk_sequence.thunk_resources
    assert [new_names[k] for k in resource.thunk_indices] == [a, b]


def test_compilation_unit_suffix_is_understood(programs):
    """ThunkEmitter appends " (unit)" to op_name for instructions carrying a
    compilation_unit frontend attribute."""
    decoded = executable.decode(programs["mlp"].raw)
    thunk = decoded.thunk_sequence.thunks[0]
    name = thunk.info.op_name
    instr = next(i for i in decoded.entry_computation().instructions if i.name == name)
    instructions = {name: instr}
    thunk.info.op_name = f"{name} (part_1)"
    with pytest.raises(RewriteError):
        cpu_rewrite.thunk_instruction(thunk, instructions)
    instr.frontend_attributes.map["compilation_unit"] = "part_1"
    assert cpu_rewrite.thunk_instruction(thunk, instructions) == name


def test_rng_state_thunk_names_its_instruction():
    import jax
    from jax import lax

    compiled = jax.jit(lambda x: x + lax.rng_uniform(0.0, 1.0, (4,))).lower(jax.numpy.ones(4)).compile()
    decoded = executable.decode(executable.serialize_compiled(compiled))
    uses = cpu_rewrite.slice_uses(decoded)
    rng = [u for u in uses if u.thunk_kind == "rng-get-and-update-state"]
    assert rng and rng[0].instruction in {i.name for i in decoded.entry_computation().instructions}


def test_a_copy_may_leave_a_donated_parameter_a_moved_value_may_not():
    """A recomputed copy's result (or a chained read) placed away from where
    its first run sits in a donated parameter's bytes moves nothing: the first
    run stays.  Moving the value itself out of there is still refused."""
    from types import SimpleNamespace

    from olla_jax.apply.edits import RewriteError, check_move

    def alloc(index, **kind):
        base = dict(index=index, is_entry_computation_parameter=False, is_constant=False,
                    is_thread_local=False, is_tuple=False, maybe_live_out=False, color=0,
                    parameter_number=0)
        return SimpleNamespace(**{**base, **kind})
    allocations = [alloc(0), alloc(1, is_entry_computation_parameter=True, maybe_live_out=True),
                   alloc(2, is_constant=True)]
    sizes = {0: 4096, 1: 4096, 2: 4096}
    check_move("copy", 1, 64, 0, 128, 64, allocations, sizes, 64, copy=True)
    with pytest.raises(RewriteError, match="parameter"):
        check_move("value", 1, 64, 0, 128, 64, allocations, sizes, 64)
    with pytest.raises(RewriteError, match="constant"):   # the destination still counts
        check_move("copy", 0, 64, 2, 128, 64, allocations, sizes, 64, copy=True)
