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
from olla_jax.apply.edits import (Clone, ExecutableEdit, RewriteError, check_covered,  # noqa: F401
                                   check_move, fixed_kind, nested_of_type, possibly_live_out,
                                   relocate_buffers, slices)

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


def entry_order(decoded: executable.DecodedExecutable) -> tuple[str, ...]:
    """XLA's entry schedule, by instruction name."""
    module = decoded.hlo_module
    names = {i.id: i.name for c in module.computations for i in c.instructions}
    seq = module.schedule.sequences[module.entry_computation_id].instruction_ids
    return tuple(names[i] for i in seq)


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
    for i, alloc in enumerate(allocations):
        if alloc.index != i:
            raise RewriteError(f"allocations are not sorted by index (position {i} has {alloc.index})")
    sizes = {a.index: a.size for a in allocations}
    for index, size in edit.allocation_sizes.items():
        if index not in sizes:
            raise RewriteError(f"allocation_sizes names allocation {index}, which does not exist")
        if int(size) != sizes[index] and fixed_kind(allocations[index]):
            raise RewriteError(f"allocation {index} is {fixed_kind(allocations[index])}: "
                               "its size cannot change")
        if int(size) < 0:
            raise RewriteError(f"allocation {index} given negative size {size}")
        sizes[index] = int(size)

    _reorder(decoded, instructions, tuple(edit.order))
    thunk_extents = _relocate_thunks(decoded, instructions, edit.relocate, allocations, sizes)
    buffer_extents = relocate_buffers(decoded, edit.relocate_logical, allocations, sizes,
                                      ALIGNMENT)
    # A recomputed copy has no logical buffer of its own (see _insert_clone):
    # its readers' slices are covered by the copy's place.
    buffer_extents += [(c.late[0], c.late[1], c.early[2]) for c in edit.clones]
    check_covered(thunk_extents, buffer_extents)
    for clone in edit.clones:
        _insert_clone(decoded, instructions, clone, allocations, sizes)
    for alloc in decoded.buffer_assignment.buffer_allocations:
        alloc.size = sizes[alloc.index]


# --- order -----------------------------------------------------------------

def _reorder(decoded, instructions: Mapping[str, Any], order: tuple[str, ...]) -> None:
    module = decoded.hlo_module
    entry = decoded.entry_computation()
    by_id = {i.id: i for i in entry.instructions}
    schedule = module.schedule.sequences[module.entry_computation_id]
    xla_order = [by_id[i].name for i in schedule.instruction_ids]
    position = {name: k for k, name in enumerate(xla_order)}

    if len(order) != len(xla_order) or set(order) != set(xla_order):
        extra = sorted(set(order) - set(xla_order))[:5]
        lacking = sorted(set(xla_order) - set(order))[:5]
        raise RewriteError(
            f"order is not a permutation of the entry sequence ({len(order)} names for "
            f"{len(xla_order)}; unknown: {extra}, missing: {lacking}, "
            f"duplicates: {len(order) - len(set(order))})")
    seen: set[int] = set()
    id_of = {i.name: i.id for i in entry.instructions}
    for name in order:
        instr = instructions[name]
        for dep in list(instr.operand_ids) + list(instr.control_predecessor_ids):
            if dep in by_id and dep not in seen:
                raise RewriteError(f"order puts {name} before its operand or control "
                                   f"predecessor {by_id[dep].name}")
        seen.add(instr.id)

    sequence = decoded.thunk_sequence
    groups: dict[str, list[int]] = {}
    last = -1
    for k, thunk in enumerate(sequence.thunks):
        name = thunk_instruction(thunk, instructions)
        if name not in position:
            raise RewriteError(f"entry thunk {k} ({thunk.kind}) belongs to {name!r}, "
                               "which is not in the entry computation")
        if groups.get(name) and groups[name][-1] != k - 1:
            raise RewriteError(f"the thunks of {name} are not contiguous")
        if position[name] < last:
            raise RewriteError(f"entry thunks do not follow XLA's schedule at thunk {k} ({name})")
        last = position[name]
        groups.setdefault(name, []).append(k)

    old_index = [k for name in order for k in groups.get(name, ())]
    new_index = {old: new for new, old in enumerate(old_index)}
    thunks = []
    for k in old_index:
        copy = type(sequence.thunks[k])()
        copy.CopyFrom(sequence.thunks[k])
        thunks.append(copy)
    del sequence.thunks[:]
    sequence.thunks.extend(thunks)
    for users in sequence.thunk_resources:
        users.thunk_indices[:] = [new_index[k] for k in users.thunk_indices]
    schedule.instruction_ids[:] = [id_of[name] for name in order]


# --- recomputation ---------------------------------------------------------

def _insert_clone(decoded, instructions, clone: Clone, allocations, sizes) -> None:
    """Copy ``clone.producer``'s thunk (already relocated) before ``clone.before``.

    The copy is not covered by a logical buffer of the assignment: adding an
    entry for a logical buffer that already has one aborts the loader, and
    the runtime reads only thunk slices."""
    sequence = decoded.thunk_sequence
    names = [thunk_instruction(t, instructions) for t in sequence.thunks]
    made = [k for k, name in enumerate(names) if name == clone.producer]
    if len(made) != 1:
        raise RewriteError(f"cannot recompute {clone.producer}: it has {len(made)} entry thunks, "
                           "not one")
    source = sequence.thunks[made[0]]
    if source.kind not in CLONABLE_KINDS or any(True for _ in _nested_sequences(source)):
        raise RewriteError(f"cannot recompute {clone.producer}: its {source.kind!r} thunk is not "
                           f"one of {sorted(CLONABLE_KINDS)}")
    if any(made[0] in users.thunk_indices for users in sequence.thunk_resources):
        raise RewriteError(f"cannot recompute {clone.producer}: its thunk holds a resource")
    at = next((k for k, name in enumerate(names) if name == clone.before), None)
    if at is None or at <= made[0]:
        raise RewriteError(f"cannot recompute {clone.producer} before {clone.before}: no thunk of "
                           f"{clone.before} after the producer's")
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
                       ALIGNMENT)
            msg.buffer_allocation_index = l_alloc
            msg.offset = l_offset + (o - e_offset)
            moved += 1
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
