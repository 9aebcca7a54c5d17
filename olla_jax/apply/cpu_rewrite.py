"""Apply an order and a placement to a serialized XLA:CPU executable.

What the loader of jaxlib 0.10.2 does with the parts we touch
(``CpuAotCompilationResult::LoadExecutable``):

* ``BufferAssignment::FromProto`` rebuilds the assignment from the proto as is:
  allocation sizes and ``assigned`` (logical buffer, offset, size) entries.
  It CHECKs (aborting the process) that each entry fits its allocation and
  that ``maybe_live_out`` agrees with dataflow, but never checks overlaps.
* The thunks run in proto order, each with its own buffer slices (allocation,
  offset, size); the runtime derives its concurrency from that order and the
  slices' read/write conflicts.  Thunk slices, not the assignment's offsets,
  decide where data lives: both must be changed together.
* The HLO schedule is only checked to be a topological order.

How a thunk names its instruction: ``ThunkProto.info.op_name`` is the HLO
instruction's name (``ThunkEmitter``'s ``ThunkInfo``), with `` (unit)``
appended when the instruction has a ``compilation_unit`` frontend attribute.
Seen on kernel, ynn-fusion, dot, copy, sort (a copy thunk then the sort thunk,
both named after the sort), topk (the custom-call), while, conditional and
their nested thunks.  Nested thunk sequences (while cond/body, conditional
branches, call) name instructions of the called computations.

Buffer slices are found generically: every ``BufferAllocationSliceProto``
inside a thunk (kernel arguments/results, dot/copy/conv/fft operands, sort
inputs, topk buffers, while ``cond_buffer``, conditional
``branch_index_buffer``, rng state, custom-call/collective/infeed/outfeed
buffers...), recursing through every nested ``ThunkSequenceProto``.  Since the
schema comes from the installed jaxlib, new thunk kinds are covered as well.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterator, Mapping

from olla_jax.apply import executable
from olla_jax.apply.edits import (  # noqa: F401 - fixed_kind, possibly_live_out re-exported
    Clone, ExecutableEdit, RewriteError, body_running, body_slot, check_covered, check_move, check_order,
    clone_slot, edited_sizes, entry_order, first_run_thunk, fixed_kind, nested_of_type, possibly_live_out,
    producer_thunk, relocate_buffers, reorder_thunks, slices, thunk_groups)

ALIGNMENT = 64  # XLA:CPU's minimum buffer alignment; kernels are compiled for it
_SEQUENCE = "xla.cpu.ThunkSequenceProto"


# Thunk kinds a copy of which was seen to recompute bit for bit (kernels are
# pure functions of their argument slices; see the note on recomputation).
CLONABLE_KINDS = frozenset({"kernel", "dot", "ynn-fusion", "convolution"})


@dataclasses.dataclass(frozen=True)
class SliceUse:
    """One buffer slice held by a thunk."""

    instruction: str      # HLO instruction the thunk belongs to
    thunk_kind: str       # e.g. "kernel", "dot", "while"
    field: str            # path of the slice inside the thunk, e.g. "kernel_thunk.results_buffers.slice"
    allocation: int
    offset: int
    size: int
    depth: int            # 0 for entry thunks, 1 inside a while body...


def identity_edit(decoded: executable.DecodedExecutable) -> ExecutableEdit:
    """The edit that changes nothing (XLA's order and placement)."""
    return ExecutableEdit(order=entry_order(decoded),
                          relocate=lambda name, alloc, offset, size: (alloc, offset),
                          relocate_logical=lambda buffer, alloc, offset: (alloc, offset),
                          allocation_sizes={})


def thunk_instruction(thunk: Any, instructions: Mapping[str, Any]) -> str:
    """Name of the HLO instruction a ThunkProto was emitted for."""
    op_name = thunk.info.op_name
    if op_name in instructions:
        return op_name
    if op_name.endswith(")") and " (" in op_name:
        base, unit = op_name[:-1].rsplit(" (", 1)
        instr = instructions.get(base)
        if instr is not None and instr.frontend_attributes.map.get("compilation_unit") == unit:
            return base
    raise RewriteError(f"thunk {thunk.kind!r} with op_name {op_name!r} names no HLO "
                       "instruction of the module")


def slice_uses(decoded: executable.DecodedExecutable) -> list[SliceUse]:
    """Every buffer slice of every thunk, nested sequences included."""
    instructions = _instructions(decoded)
    out = []
    for thunk, name, depth in _walk_thunks(decoded.thunk_sequence, instructions, 0):
        for path, msg in _slices(thunk):
            out.append(SliceUse(name, thunk.kind, path, msg.buffer_allocation_index,
                                msg.offset, msg.size, depth))
    return out


def rewrite(raw: bytes, edit: ExecutableEdit) -> bytes:
    """Serialized executable ``raw`` with ``edit`` applied (see module doc).

    Raises RewriteError, before anything is loaded, when the edit cannot be
    mapped or would break a rule the loader or the kernels rely on.
    """
    decoded = executable.decode(raw)
    apply_edit(decoded, edit)
    return executable.encode(decoded)


def apply_edit(decoded: executable.DecodedExecutable, edit: ExecutableEdit) -> None:
    """Edit ``decoded``'s protos in place (a fresh decode: see DecodedExecutable).

    On RewriteError the protos may be half edited: throw them away.
    """
    instructions = _instructions(decoded)
    allocations = list(decoded.buffer_assignment.buffer_allocations)
    sizes = edited_sizes(allocations, edit.allocation_sizes)

    _reorder(decoded, instructions, tuple(edit.order))
    thunk_extents = _relocate_thunks(decoded, instructions, edit.relocate, allocations, sizes)
    buffer_extents = relocate_buffers(decoded, edit.relocate_logical, allocations, sizes,
                                      ALIGNMENT)
    # A recomputed copy has no logical buffer of its own (see _insert_clone):
    # its readers' slices are covered by the copy's place.
    buffer_extents += [(c.late[0], c.late[1], c.early[2]) for c in edit.clones]
    check_covered(thunk_extents, buffer_extents)
    # one thunk per producer, counted before any copy of it is inserted (a
    # value recomputed several times has several copies of one producer)
    names = [thunk_instruction(t, instructions) for t in decoded.thunk_sequence.thunks]
    entry = set(names)
    inner = [c for c in edit.clones if c.producer not in entry]
    bodies = {id(c): _body_sequence(decoded, instructions, c) for c in inner}
    for clone in edit.clones:
        if id(clone) not in bodies:
            producer_thunk(names, clone)
        else:
            producer_thunk([thunk_instruction(t, instructions)
                            for t in bodies[id(clone)].thunks], clone)
    for clone in edit.clones:
        # (looked up again: inserting an entry copy rebuilds the entry thunks)
        body = _body_sequence(decoded, instructions, clone) if id(clone) in bodies else None
        _insert_clone(decoded, instructions, clone, allocations, sizes, body)
    for alloc in decoded.buffer_assignment.buffer_allocations:
        alloc.size = sizes[alloc.index]


# --- order -----------------------------------------------------------------

def _reorder(decoded, instructions: Mapping[str, Any], order: tuple[str, ...]) -> None:
    module = decoded.hlo_module
    entry = decoded.entry_computation()
    position = check_order(module, entry, instructions, order)
    sequence = decoded.thunk_sequence
    groups = thunk_groups([thunk_instruction(t, instructions) for t in sequence.thunks],
                          [t.kind for t in sequence.thunks], position)
    old_index = reorder_thunks(sequence.thunks, groups, order)
    new_index = {old: new for new, old in enumerate(old_index)}
    for users in sequence.thunk_resources:
        users.thunk_indices[:] = [new_index[k] for k in users.thunk_indices]
    id_of = {i.name: i.id for i in entry.instructions}
    module.schedule.sequences[module.entry_computation_id].instruction_ids[:] = [
        id_of[name] for name in order]


# --- recomputation ---------------------------------------------------------

def _body_sequence(decoded, instructions, clone: Clone):
    """The body thunk sequence of the entry while loop that runs
    ``clone.producer`` (``edits.body_running``)."""
    return body_running(clone, (t.while_thunk.body_sequence for t in decoded.thunk_sequence.thunks
                                if t.kind == "while"),
                        lambda t: thunk_instruction(t, instructions))


def _insert_clone(decoded, instructions, clone: Clone, allocations, sizes,
                  sequence=None) -> None:
    """Copy ``clone.producer``'s thunk (already relocated) before ``clone.before``,
    in ``sequence`` (a while loop's body sequence; the entry's when None).

    The copy is not covered by a logical buffer of the assignment: adding an
    entry for a logical buffer that already has one aborts the loader, and
    the runtime reads only thunk slices."""
    in_body = sequence is not None
    sequence = decoded.thunk_sequence if sequence is None else sequence
    names = [thunk_instruction(t, instructions) for t in sequence.thunks]
    made = first_run_thunk(names, clone)
    source = sequence.thunks[made]
    if source.kind not in CLONABLE_KINDS or any(True for _ in _nested_sequences(source)):
        raise RewriteError(f"cannot recompute {clone.producer}: its {source.kind!r} thunk is not "
                           f"one of {sorted(CLONABLE_KINDS)}")
    if any(made in users.thunk_indices for users in sequence.thunk_resources):
        raise RewriteError(f"cannot recompute {clone.producer}: its thunk holds a resource")
    at = (body_slot(decoded.hlo_module, names, clone, made) if in_body else
          clone_slot(names, clone, made))
    e_alloc, e_offset, size = clone.early
    l_alloc, l_offset = clone.late
    copy = type(source)()
    copy.CopyFrom(source)
    moved = 0
    for path, msg in _slices(copy):
        a, o = msg.buffer_allocation_index, msg.offset
        if a == e_alloc and e_offset <= o and o + msg.size <= e_offset + size:
            if "result" not in path and "out" not in path:
                raise RewriteError(f"cannot recompute {clone.producer}: its operand {path} reads "
                                   "its own result's bytes (an in-place kernel)")
            what = f"recomputed {source.kind} thunk of {clone.producer} ({path})"
            check_move(what, a, o, l_alloc, l_offset + (o - e_offset), msg.size, allocations, sizes,
                       ALIGNMENT, copy=True)
            msg.buffer_allocation_index = l_alloc
            msg.offset = l_offset + (o - e_offset)
            moved += 1
            continue
        for (oa, oo, osize), (na, no) in clone.operands:   # a chain: read the operand's copy
            if a == oa and oo <= o and o + msg.size <= oo + osize:
                if "result" in path or "out" in path:
                    raise RewriteError(f"cannot recompute {clone.producer}: it writes its "
                                       f"recomputed operand's bytes ({path})")
                what = f"recomputed {source.kind} thunk of {clone.producer} ({path}, chained)"
                check_move(what, a, o, na, no + (o - oo), msg.size, allocations, sizes, ALIGNMENT,
                           copy=True)
                msg.buffer_allocation_index = na
                msg.offset = no + (o - oo)
                break
    if not moved:
        raise RewriteError(f"cannot recompute {clone.producer}: no result slice of its thunk lies "
                           f"at allocation {e_alloc} +{e_offset}")
    kept = []
    for thunk in sequence.thunks:
        same = type(thunk)()
        same.CopyFrom(thunk)
        kept.append(same)
    del sequence.thunks[:]
    sequence.thunks.extend(kept[:at] + [copy] + kept[at:])
    for users in sequence.thunk_resources:
        users.thunk_indices[:] = [k + 1 if k >= at else k for k in users.thunk_indices]


# --- thunk slices ----------------------------------------------------------

def _relocate_thunks(decoded, instructions, relocate, allocations, sizes):
    """Apply ``relocate`` to every thunk slice; return the new extents."""
    extents = []
    for thunk, name, _ in _walk_thunks(decoded.thunk_sequence, instructions, 0):
        for path, msg in _slices(thunk):
            old = (msg.buffer_allocation_index, msg.offset, msg.size)
            try:
                alloc, offset = relocate(name, *old)
                alloc, offset = int(alloc), int(offset)
            except Exception as err:  # noqa: BLE001 - report which slice failed
                raise RewriteError(f"relocate failed for {name} {path} {old}: {err!r}") from err
            what = f"{thunk.kind} thunk of {name} ({path}, was allocation {old[0]} +{old[1]})"
            check_move(what, old[0], old[1], alloc, offset, msg.size, allocations, sizes, ALIGNMENT)
            msg.buffer_allocation_index = alloc
            msg.offset = offset
            extents.append((what, alloc, offset, msg.size))
    return extents


def _walk_thunks(sequence, instructions, depth) -> Iterator[tuple[Any, str, int]]:
    for thunk in sequence.thunks:
        name = thunk_instruction(thunk, instructions)
        yield thunk, name, depth
        for nested in _nested_sequences(thunk):
            yield from _walk_thunks(nested, instructions, depth + 1)


def _nested_sequences(msg) -> Iterator[Any]:
    return nested_of_type(msg, _SEQUENCE)


def _slices(msg) -> Iterator[tuple[str, Any]]:
    """(field path, slice) for the slices of one thunk, not of nested sequences."""
    return slices(msg, _SEQUENCE)


# --- buffer assignment -----------------------------------------------------

# --- checks ----------------------------------------------------------------

def _instructions(decoded) -> dict[str, Any]:
    return {i.name: i for c in decoded.hlo_module.computations for i in c.instructions}
