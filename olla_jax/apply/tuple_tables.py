"""Which tuple-table flags of an XLA:GPU executable its thunks bear out.

XLA marks an allocation ``is_tuple`` when it was made for a tuple-shaped
value, whose bytes are the tuple's index table (a pointer per element).
XLA:CPU's runtime writes such tables.  XLA:GPU emits no thunk for a tuple or
a get-tuple-element (``ThunkEmitter::EmitHloInstruction``: their semantics
are encoded by buffers), its kernels take array arguments only, and its thunk
schema has no tuple thunk.  The flag is also arbitrary on a temp arena:
``BufferAssignment::CombineTempAllocations`` keeps the flags of the first temp
allocation it absorbs the others into, so one arena holding many tables is
flagged and another is not.

So for a GPU executable the flag is judged by the executable itself: a temp
allocation flagged ``is_tuple`` whose tuple tables no thunk's buffer slice
(of any thunk kind, at any depth) overlaps is one whose flag nothing honours.
An allocation that may live out, is a parameter, a constant or thread-local
is fixed for those reasons anyway and is never listed.
"""

from __future__ import annotations

import functools

from olla_jax.apply import gpu_executable
from olla_jax.apply.edits import all_slices


def _subshape(shape, index):
    for k in index:
        shape = shape.tuple_shapes[k]
    return shape


def tuple_table_extents(decoded) -> dict[int, list[tuple[int, int]]]:
    """Allocation index -> (offset, size) of each tuple-shaped value's bytes
    (an index table) that XLA's buffer assignment puts there."""
    instructions = {i.id: i for c in decoded.hlo_module.computations for i in c.instructions}
    logical = {b.id: b for b in decoded.buffer_assignment.logical_buffers}
    extents: dict[int, list[tuple[int, int]]] = {}
    for alloc in decoded.allocations:
        for assigned in alloc.assigned:
            buffer = logical.get(assigned.logical_buffer_id)
            instr = instructions.get(buffer.defined_at.instruction_id) if buffer else None
            if instr is None:
                continue
            shape = _subshape(instr.shape, tuple(buffer.defined_at.shape_index))
            kind = shape.DESCRIPTOR.fields_by_name["element_type"].enum_type
            if shape.element_type == kind.values_by_name["TUPLE"].number:
                extents.setdefault(alloc.index, []).append((assigned.offset, assigned.size))
    return extents


def thunk_slices(decoded) -> list[tuple[int, int, int]]:
    """(allocation, offset, size) of every buffer slice any thunk names, at
    any depth (a while loop's body, an async start's thunks...)."""
    return [s for thunk in decoded.thunks for s in all_slices(thunk)]


def unheld_tuple_flags(decoded) -> frozenset[int]:
    """Temp allocations flagged ``is_tuple`` whose tuple tables no thunk
    touches (the flag stands for nothing the runtime does); an allocation
    flagged with no tuple-shaped value found in it keeps its flag."""
    extents = tuple_table_extents(decoded)
    touched = set()
    for alloc, offset, size in thunk_slices(decoded):
        if any(offset < o + n and o < offset + max(size, 1) for o, n in extents.get(alloc, ())):
            touched.add(alloc)
    return frozenset(
        a.index for a in decoded.allocations
        if a.is_tuple and not (a.maybe_live_out or a.is_entry_computation_parameter
                               or a.is_constant or a.is_thread_local)
        and extents.get(a.index) and a.index not in touched)


def without_tuple_flag(alloc):
    """A copy of allocation proto ``alloc`` not flagged ``is_tuple``."""
    copy = type(alloc)()
    copy.CopyFrom(alloc)
    copy.is_tuple = False
    return copy


@functools.lru_cache(maxsize=4)
def unheld_tuple_flags_of(raw: bytes | None) -> frozenset[int]:
    """:func:`unheld_tuple_flags` of a serialized GPU executable (none: empty);
    kept for the last few executables (the checker asks once per candidate)."""
    return unheld_tuple_flags(gpu_executable.decode(raw)) if raw else frozenset()
