"""Apply an order and a placement to a serialized XLA:GPU executable.

What the loader of the split (thunk) executable uses (``GpuExecutable::FromProto``
via ``GpuCompiler::LoadAotCompilationResult``, jaxlib 0.10.2):

* ``thunks`` run in proto order, on one stream for a single-device program;
  each names its HLO instruction in ``thunk_info.profile_annotation`` and
  holds its own buffer slices (allocation, offset, size): kernel arguments,
  convolution operands and scratch, copies, nested thunks of while and
  conditional...  Slices are found generically, as on CPU.
* ``buffer_allocations`` (the runtime's allocations) give the sizes the
  runtime allocates; ``buffer_assignment`` is the same list inside XLA's
  BufferAssignmentProto (kept for memory statistics).  Both are edited alike.
* The HLO module's entry schedule is verified to be a topological order, so
  it follows the new order.

What kernels assume: XLA compiled each kernel knowing which of its arguments
are the same slice (deduplicated into one argument) and which are distinct
(marked no-alias when written).  So within one thunk, slices that were
identical stay identical and slices that were disjoint stay disjoint; this is
checked.  Offsets move by multiples of 256 bytes (XLA:GPU's allocations are
256-aligned; kernels may vectorise on that).  Recomputation is not supported
here.
"""

from __future__ import annotations

from typing import Any, Iterator, Mapping

from olla_jax.apply import gpu_executable
from olla_jax.apply.edits import (  # noqa: F401 - entry_order re-exported
    ExecutableEdit, RewriteError, check_covered, check_move, check_order, edited_sizes,
    entry_order, nested_of_type, relocate_buffers, reorder_thunks, slices, thunk_groups)

ALIGNMENT = 256
_THUNK = "xla.gpu.ThunkProto"
_ALLOCATION = "xla.BufferAllocationProto"  # an allocation table of a thunk's own


def rewrite(raw: bytes, edit: ExecutableEdit) -> bytes:
    """Serialized GPU executable ``raw`` with ``edit`` applied.

    Raises RewriteError (or GpuLayoutError for bytes it cannot read) before
    anything is produced when the edit cannot be mapped or would break a rule
    the loader or the kernels rely on.
    """
    decoded = gpu_executable.decode(raw)
    apply_edit(decoded, edit)
    return gpu_executable.encode(decoded)


def apply_edit(decoded: gpu_executable.DecodedGpuExecutable, edit: ExecutableEdit) -> None:
    """Edit ``decoded``'s protos in place; on RewriteError throw them away."""
    if edit.clones:
        raise RewriteError("recomputation is not supported in GPU executables")
    instructions = {i.name: i for c in decoded.hlo_module.computations for i in c.instructions}
    runtime = list(decoded.allocations)
    allocations = list(decoded.buffer_assignment.buffer_allocations)
    if len(runtime) != len(allocations) or any(
            a.SerializeToString(deterministic=True) != b.SerializeToString(deterministic=True)
            for a, b in zip(runtime, allocations)):
        raise RewriteError("the runtime allocations differ from the buffer assignment's: "
                           "this executable's layout is not the one this rewrite knows")
    sizes = edited_sizes(allocations, edit.allocation_sizes, ALIGNMENT)

    owner = _entry_owners(decoded)
    _reorder(decoded, instructions, owner, tuple(edit.order))
    thunk_extents = _relocate_thunks(decoded, instructions, owner, edit.relocate, allocations,
                                     sizes)
    buffer_extents = relocate_buffers(decoded, edit.relocate_logical, allocations, sizes, ALIGNMENT)
    check_covered(thunk_extents, buffer_extents)
    for alloc in decoded.buffer_assignment.buffer_allocations:
        alloc.size = sizes[alloc.index]
    for alloc, edited in zip(decoded.allocations, decoded.buffer_assignment.buffer_allocations):
        alloc.CopyFrom(edited)


def thunk_instruction(thunk: Any, instructions: Mapping[str, Any]) -> str:
    name = thunk.thunk_info.profile_annotation
    if name not in instructions:
        raise RewriteError(f"thunk {thunk_kind(thunk)!r} names {name!r}, which is no HLO "
                           "instruction of the module")
    return name


def thunk_kind(thunk: Any) -> str:
    return thunk.WhichOneof("impl") or "unknown"


# --- order -----------------------------------------------------------------

def _reorder(decoded, instructions: Mapping[str, Any], owner: Mapping[str, str],
             order: tuple[str, ...]) -> None:
    module = decoded.hlo_module
    entry = decoded.entry_computation()
    position = check_order(module, entry, instructions, order)
    owners = [owner.get(thunk_instruction(t, instructions), "") for t in decoded.thunks]
    groups = thunk_groups(owners, [thunk_kind(t) for t in decoded.thunks], position)
    reorder_thunks(decoded.thunks, groups, order)
    id_of = {i.name: i.id for i in entry.instructions}
    module.schedule.sequences[module.entry_computation_id].instruction_ids[:] = [
        id_of[name] for name in order]


# --- thunk slices ----------------------------------------------------------

def _relocate_thunks(decoded, instructions, owner, relocate, allocations, sizes):
    module = decoded.hlo_module
    ids = {i.id: i.name for c in module.computations for i in c.instructions}
    scheduled = {ids[i] for seq in module.schedule.sequences.values() for i in seq.instruction_ids}
    extents = []
    for thunk, name in _walk(decoded.thunks, instructions, scheduled, owner):
        kind = thunk_kind(thunk)
        moves = []
        for path, msg in _slices(thunk):
            old = (msg.buffer_allocation_index, msg.offset, msg.size)
            try:
                alloc, offset = (int(x) for x in relocate(name, *old))
            except Exception as err:  # noqa: BLE001 - report which slice failed
                raise RewriteError(f"relocate failed for {name} {path} {old}: {err!r}") from err
            what = f"{kind} thunk of {name} ({path}, was allocation {old[0]} +{old[1]})"
            check_move(what, old[0], old[1], alloc, offset, msg.size, allocations, sizes, ALIGNMENT)
            moves.append((what, old, (alloc, offset)))
            msg.buffer_allocation_index = alloc
            msg.offset = offset
            extents.append((what, alloc, offset, msg.size))
        _check_aliasing(moves)
    return extents


def _check_aliasing(moves) -> None:
    """Slices of one thunk keep how they overlapped: kernels were compiled for it."""
    for i, (what_a, (a0, o0, s0), (a1, n1)) in enumerate(moves):
        for what_b, (b0, p0, t0), (b1, m1) in moves[i + 1:]:
            if not s0 or not t0:
                continue
            before = a0 == b0 and o0 < p0 + t0 and p0 < o0 + s0
            after = a1 == b1 and n1 < m1 + t0 and m1 < n1 + s0
            if before != after or (before and (a1 != b1 or n1 - o0 != m1 - p0)):
                raise RewriteError(f"{what_a} and {what_b} " + (
                    "overlapped and move apart" if before else "now overlap") +
                    ": the kernel was compiled for how its arguments alias")


def _entry_owners(decoded) -> dict[str, str]:
    """Instruction name -> the entry instruction it runs for: itself in the
    entry computation, else the one entry instruction whose called
    computations (transitively) hold it, e.g. the reduce-scatter inside an
    async-start.  Instructions of computations several entry instructions
    call (reducers...) are left out."""
    module = decoded.hlo_module
    comps = {c.id: c for c in module.computations}
    entry = comps[module.entry_computation_id]
    owners: dict[str, set[str]] = {}
    for instr in entry.instructions:
        owners.setdefault(instr.name, set()).add(instr.name)
        stack, seen = list(instr.called_computation_ids), set()
        while stack:
            cid = stack.pop()
            if cid in seen or cid not in comps:
                continue
            seen.add(cid)
            for inner in comps[cid].instructions:
                owners.setdefault(inner.name, set()).add(instr.name)
                stack.extend(inner.called_computation_ids)
    return {name: next(iter(found)) for name, found in owners.items() if len(found) == 1}


def _walk(thunks, instructions, scheduled, owner, parent=None) -> Iterator[tuple[Any, str]]:
    """(thunk, scheduled instruction it runs for), nested thunks included.  An
    entry-level thunk runs for its entry instruction (the async-start around a
    collective...); a nested thunk for its own instruction where that is
    scheduled (a while body's), else for its enclosing thunk's (e.g. a copy
    emitted for a dynamic slice inside a fusion)."""
    for thunk in thunks:
        name = thunk_instruction(thunk, instructions)
        if parent is None:
            if name not in owner:
                raise RewriteError(f"entry thunk {thunk_kind(thunk)!r} names {name!r}, which "
                                   "runs for no single entry instruction")
            name = owner[name]
        elif name not in scheduled:
            name = parent
        yield thunk, name
        if not _own_allocations(thunk):
            yield from _walk(list(_nested(thunk)), instructions, scheduled, owner, name)


def _own_allocations(thunk) -> bool:
    """Whether the thunks nested in ``thunk`` address an allocation table of its
    own, not the executable's: a dynamic-slice thunk (and the fusion form of it)
    runs its embedded thunks on "fake" allocations, one per argument, each the
    size of the slice it takes, and points them at run time at its own argument
    slices, which are relocated as its slices.  Their indices only coincide with
    the executable's, so relocating them would move (or refuse) the wrong bytes."""
    impl = thunk.WhichOneof("impl")
    return impl is not None and any(
        f.message_type is not None and f.message_type.full_name == _ALLOCATION
        for f in getattr(thunk, impl).DESCRIPTOR.fields)


def _nested(thunk) -> Iterator[Any]:
    """Thunks nested in ``thunk`` (while bodies, conditional branches...), one level."""
    return nested_of_type(thunk, _THUNK)


def _slices(thunk) -> Iterator[tuple[str, Any]]:
    """(field path, slice) of one thunk, not of the thunks nested in it."""
    return slices(thunk, _THUNK)
