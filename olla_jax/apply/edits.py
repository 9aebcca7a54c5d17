"""What the CPU and GPU executable rewrites share.

An :class:`ExecutableEdit` says where every buffer slice goes and in which
order the instructions run; the buffer assignment proto (``xla.BufferAssignmentProto``,
the same message on both backends) is edited here, and the checks that keep
an edit loadable (nothing in a parameter or constant moves, though a donated
parameter's idle bytes may take other values, alignment kept,
every slice inside an allocation and covered by a logical buffer, live-out
values left where XLA put them) are common to both.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterator, Mapping, Sequence

from olla_jax.errors import OllaJaxError


class RewriteError(OllaJaxError, ValueError):
    """The edit cannot be applied safely; nothing was produced."""


@dataclasses.dataclass(frozen=True)
class ExecutableEdit:
    """An order and a placement for one executable.

    ``relocate`` maps each thunk buffer slice (name of the HLO instruction whose
    thunk holds it, allocation index, offset, size) to (allocation, offset);
    nested thunks pass their own instruction's name.  ``relocate_logical``
    does the same for the BufferAssignmentProto entries (logical buffer id,
    allocation, offset).  ``allocation_sizes`` lists only the sizes that change.
    """

    order: tuple[str, ...]
    relocate: Callable[[str, int, int, int], tuple[int, int]]
    relocate_logical: Callable[[int, int, int], tuple[int, int]]
    allocation_sizes: Mapping[int, int] = dataclasses.field(default_factory=dict)
    clones: tuple["Clone", ...] = ()


@dataclasses.dataclass(frozen=True)
class Clone:
    """Run ``producer``'s (single, entry-level) thunk again just before the
    first thunk of ``before``, writing to ``late`` what it writes to ``early``
    (its result's new place, after relocation).  Readers of the copy are
    pointed at ``late`` by ``relocate``."""
    producer: str
    before: str
    early: tuple[int, int, int]     # (allocation, offset, size) of the first copy
    late: tuple[int, int]           # (allocation, offset) of the second
    # A chain: operands recomputed before this copy, read from their second
    # copy: ((allocation, offset, size) of the operand's first copy, its second).
    operands: tuple[tuple[tuple[int, int, int], tuple[int, int]], ...] = ()
    # A collective run again (re-gathering, graph.regather): the producer is an
    # all-gather's start; its done thunk is copied too, just before ``done_before``.
    done_before: str = ""
    # A library call's copy: ((allocation, offset, size) of its scratch in the
    # first run, (allocation, offset) of the copy's scratch) per scratch slice.
    scratch: tuple[tuple[tuple[int, int, int], tuple[int, int]], ...] = ()
    # GPU, a multi-result fusion whose copies of several results run before
    # one instruction: one launch writes them all; (allocation, offset, size)
    # of the places of the others (their slices in ``scratch`` too), which
    # their late readers read.
    merged: tuple[tuple[int, int, int], ...] = ()


SLICE = "xla.buffer_assignment.BufferAllocationSliceProto"


def edited_sizes(allocations, requested: Mapping[int, int],
                 alignment: int = 1) -> dict[int, int]:
    """Every allocation's size once ``requested`` (index -> new size) is applied;
    ``allocations`` must be listed by index.  Fixed allocations keep their size;
    a changed size is non-negative and a multiple of ``alignment``."""
    for i, alloc in enumerate(allocations):
        if alloc.index != i:
            raise RewriteError(f"allocations are not sorted by index (position {i} has {alloc.index})")
    sizes = {a.index: a.size for a in allocations}
    for index, size in requested.items():
        if index not in sizes:
            raise RewriteError(f"allocation_sizes names allocation {index}, which does not exist")
        size = int(size)
        if size != sizes[index] and fixed_kind(allocations[index]):
            raise RewriteError(f"allocation {index} is {fixed_kind(allocations[index])}: "
                               "its size cannot change")
        if size < 0:
            raise RewriteError(f"allocation {index} given negative size {size}")
        if size != sizes[index] and size % alignment:
            raise RewriteError(f"allocation {index} given size {size}: not a multiple of {alignment}")
        sizes[index] = size
    return sizes


def entry_order(decoded) -> tuple[str, ...]:
    """XLA's entry schedule of a decoded executable (CPU or GPU), by instruction name."""
    module = decoded.hlo_module
    names = {i.id: i.name for c in module.computations for i in c.instructions}
    return tuple(names[i] for i in module.schedule.sequences[module.entry_computation_id].instruction_ids)


def producer_thunk(names: Sequence[str], clone: Clone) -> int:
    """The index of ``clone.producer``'s one entry thunk; ``names``: the
    instruction each entry thunk belongs to.  RewriteError when it has none or several."""
    made = [k for k, name in enumerate(names) if name == clone.producer]
    if len(made) != 1:
        raise RewriteError(f"cannot recompute {clone.producer}: it has {len(made)} entry thunks, "
                           "not one")
    return made[0]


def first_run_thunk(names: Sequence[str], clone: Clone) -> int:
    """The index of ``clone.producer``'s own run while copies are inserted: its
    first thunk (copies of it, inserted later in the sequence, share its
    name).  The caller checks with ``producer_thunk``, before inserting any
    copy, that the producer runs exactly one thunk."""
    if clone.producer in names:
        return list(names).index(clone.producer)
    return producer_thunk(names, clone)   # none: refused with its message


def clone_slot(names: Sequence[str], clone: Clone, producer: int) -> int:
    """Where the copy goes: the first thunk of ``clone.before``, which must come
    after the producer's thunk (index ``producer``)."""
    at = next((k for k, name in enumerate(names) if name == clone.before), None)
    if at is None or at <= producer:
        raise RewriteError(f"cannot recompute {clone.producer} before {clone.before}: no thunk of "
                           f"{clone.before} after the producer's")
    return at


def body_running(clone: Clone, bodies, instruction_of):
    """The one of ``bodies`` (the body thunk sequences of the entry while
    loops) whose thunks run ``clone.producer``, by ``instruction_of(thunk)``:
    a copy there runs every iteration (``body_slot`` finds ``clone.before``
    in it); RewriteError when no one body runs it."""
    found = [body for body in bodies
             if any(instruction_of(t) == clone.producer for t in body.thunks)]
    if len(found) != 1:
        raise RewriteError(f"cannot recompute {clone.producer} before {clone.before}: neither an "
                           "entry instruction nor in one while loop's body")
    return found[0]


def body_slot(module, names: Sequence[str], clone: Clone, producer: int) -> int:
    """Where a copy inside a loop body goes in its body's thunks (``names``:
    the instruction of each): before the first thunk of ``clone.before``,
    or, when that runs none (a bitcast: a view of the value), before the
    first thunk of an instruction after it in the schedule of the body that
    holds the producer; after the producer's thunk (index ``producer``)."""
    if clone.before in names:
        return clone_slot(names, clone, producer)
    ids = {i.id: i.name for c in module.computations for i in c.instructions}
    for sequence in module.schedule.sequences.values():
        order = [ids.get(i) for i in sequence.instruction_ids]
        if clone.producer in order:
            position = {name: k for k, name in enumerate(order)}
            if clone.before in position:
                at = next((k for k, name in enumerate(names)
                           if position.get(name, -1) > position[clone.before]), None)
                if at is not None and at > producer:
                    return at
            break
    raise RewriteError(f"cannot recompute {clone.producer} before {clone.before}: no thunk of its "
                       "loop body after the producer's follows it")


def check_order(module, entry, instructions: Mapping[str, Any],
                order: Sequence[str]) -> dict[str, int]:
    """``order`` must be a topological permutation of the entry schedule; returns
    each entry instruction's position in XLA's schedule."""
    by_id = {i.id: i for i in entry.instructions}
    sequence = module.schedule.sequences[module.entry_computation_id]
    xla_order = [by_id[i].name for i in sequence.instruction_ids]
    if len(order) != len(xla_order) or set(order) != set(xla_order):
        extra = sorted(set(order) - set(xla_order))[:5]
        lacking = sorted(set(xla_order) - set(order))[:5]
        raise RewriteError(
            f"order is not a permutation of the entry sequence ({len(order)} names for "
            f"{len(xla_order)}; unknown: {extra}, missing: {lacking}, "
            f"duplicates: {len(order) - len(set(order))})")
    seen: set[int] = set()
    for name in order:
        instr = instructions[name]
        for dep in list(instr.operand_ids) + list(instr.control_predecessor_ids):
            if dep in by_id and dep not in seen:
                raise RewriteError(f"order puts {name} before its operand or control "
                                   f"predecessor {by_id[dep].name}")
        seen.add(instr.id)
    return {name: k for k, name in enumerate(xla_order)}


def thunk_groups(owners: Sequence[str], kinds: Sequence[str],
                 position: Mapping[str, int]) -> dict[str, list[int]]:
    """Entry thunk indices by the entry instruction each runs for (``owners[k]``);
    each instruction's thunks must be contiguous and in XLA's schedule order."""
    groups: dict[str, list[int]] = {}
    last = -1
    for k, (name, kind) in enumerate(zip(owners, kinds)):
        if name not in position:
            raise RewriteError(f"entry thunk {k} ({kind}) belongs to {name!r}, "
                               "which is not in the entry computation")
        if groups.get(name) and groups[name][-1] != k - 1:
            raise RewriteError(f"the thunks of {name} are not contiguous")
        if position[name] < last:
            raise RewriteError(f"entry thunks do not follow XLA's schedule at thunk {k} ({name})")
        last = position[name]
        groups.setdefault(name, []).append(k)
    return groups


def reorder_thunks(thunks, groups: Mapping[str, list[int]], order: Sequence[str]) -> list[int]:
    """Put the repeated ThunkProto field ``thunks`` in ``order`` (by group);
    returns the old index of each new position."""
    old_index = [k for name in order for k in groups.get(name, ())]
    copies = []
    for k in old_index:
        copy = type(thunks[k])()
        copy.CopyFrom(thunks[k])
        copies.append(copy)
    del thunks[:]
    thunks.extend(copies)
    return old_index


def nested_of_type(msg, full_name: str) -> Iterator[Any]:
    """Messages of type ``full_name`` anywhere inside ``msg``, not looking inside them
    (the thunk sequences of a CPU thunk, the thunks nested in a GPU thunk)."""
    for field, value in msg.ListFields():
        if field.message_type is None:
            continue
        for item in (value if repeated(field) else (value,)):
            if field.message_type.full_name == full_name:
                yield item
            else:
                yield from nested_of_type(item, full_name)


def slices(msg, skip: str, path: str = "") -> Iterator[tuple[str, Any]]:
    """(field path, slice) of every buffer slice inside ``msg``, except inside
    messages of type ``skip`` (the nested thunks, which hold their own)."""
    for field, value in msg.ListFields():
        if field.message_type is None:
            continue
        kind = field.message_type.full_name
        if kind == skip:
            continue
        for item in (value if repeated(field) else (value,)):
            if kind == SLICE:
                yield path + field.name, item
            else:
                yield from slices(item, skip, path + field.name + ".")


def all_slices(msg) -> list[tuple[int, int, int]]:
    """(allocation, offset, size) of every buffer slice inside ``msg``, the
    thunks nested in it included (a while loop's body, an async start's)."""
    return [(s.buffer_allocation_index, s.offset, s.size) for _, s in slices(msg, skip="")]


def repeated(field) -> bool:
    repeated = getattr(field, "is_repeated", None)  # protobuf >= 5.28; label() is deprecated
    return repeated if isinstance(repeated, bool) else field.label == field.LABEL_REPEATED


# --- buffer assignment -----------------------------------------------------

def relocate_buffers(decoded, relocate_logical, allocations, sizes, alignment: int):
    assignment = decoded.buffer_assignment
    live_out = possibly_live_out(decoded)
    defined_at = {b.id: (b.defined_at.instruction_id, tuple(b.defined_at.shape_index))
                  for b in assignment.logical_buffers}
    moved: dict[int, list[Any]] = {a.index: [] for a in allocations}
    extents = []
    for alloc in assignment.buffer_allocations:
        for entry in alloc.assigned:
            old = (alloc.index, entry.offset)
            try:
                new_alloc, new_offset = relocate_logical(entry.logical_buffer_id, *old)
                new_alloc, new_offset = int(new_alloc), int(new_offset)
            except Exception as err:  # noqa: BLE001
                raise RewriteError(f"relocate_logical failed for logical buffer "
                                   f"{entry.logical_buffer_id} {old}: {err!r}") from err
            what = f"logical buffer {entry.logical_buffer_id} (was allocation {old[0]} +{old[1]})"
            if (new_alloc, new_offset) != old and defined_at.get(entry.logical_buffer_id) in live_out:
                raise RewriteError(f"{what} may live out of the computation: it must stay "
                                   "where XLA put it")
            check_move(what, old[0], old[1], new_alloc, new_offset, entry.size, allocations, sizes,
                       alignment)
            copy = type(entry)()
            copy.CopyFrom(entry)
            copy.offset = new_offset
            moved[new_alloc].append(copy)
            extents.append((new_alloc, new_offset, entry.size))
    for alloc in assignment.buffer_allocations:
        del alloc.assigned[:]
        alloc.assigned.extend(moved[alloc.index])
    # Peak buffers are informative only; drop those that left their allocation.
    for peak in assignment.peak_buffers:
        kept = {e.logical_buffer_id for e in moved.get(peak.index, ())}
        peak.logical_buffer_ids[:] = [b for b in peak.logical_buffer_ids if b in kept]
    return extents


def possibly_live_out(decoded) -> set[tuple[int, tuple[int, ...]]]:
    """(instruction id, shape index) of the values that may flow out of the
    entry computation.

    An over-approximation of XLA's ``ValueLivesOut`` (dataflow without SSA
    phis): moving a live-out value out of its allocation trips a CHECK at load
    time, so values found here must stay where XLA put them.
    """
    module = decoded.hlo_module
    by_id = {i.id: i for c in module.computations for i in c.instructions}
    roots = {c.id: c.root_id for c in module.computations}
    found: set[tuple[int, tuple[int, ...]]] = set()
    entry_root = by_id[roots[module.entry_computation_id]]
    stack = [(entry_root.id, index) for index in _shape_indices(entry_root.shape)]
    while stack:
        iid, index = stack.pop()
        if (iid, index) in found or iid not in by_id:
            continue
        found.add((iid, index))
        instr = by_id[iid]
        op = instr.opcode
        if op == "tuple" and index:
            stack.append((instr.operand_ids[index[0]], index[1:]))
        elif op == "get-tuple-element":
            stack.append((instr.operand_ids[0], (instr.tuple_index,) + index))
        elif op in ("bitcast", "optimization-barrier", "add-dependency", "domain"):
            stack.append((instr.operand_ids[0], index))
        elif op == "while":
            stack.append((instr.operand_ids[0], index))
            stack.extend((roots[c], index) for c in instr.called_computation_ids if c in roots)
        elif op in ("conditional", "call"):
            stack.extend((roots[c], index) for c in instr.called_computation_ids if c in roots)
    return found


def _shape_indices(shape, prefix: tuple[int, ...] = ()) -> Iterator[tuple[int, ...]]:
    yield prefix
    for k, sub in enumerate(shape.tuple_shapes):
        yield from _shape_indices(sub, prefix + (k,))


# --- checks ----------------------------------------------------------------

def fixed_kind(alloc) -> str:
    """Why an allocation's layout is not ours to change ("" if it is)."""
    if alloc.is_entry_computation_parameter:
        return f"parameter {alloc.parameter_number}"
    if alloc.is_constant:
        return "a constant"
    if alloc.is_thread_local:
        return "thread-local"
    if alloc.is_tuple:
        return "a tuple table"
    return ""


def donated(alloc) -> bool:
    """A donated parameter's allocation (aliased with an output: XLA's
    input_output_alias).  XLA does not treat it as read-only: between the
    input's last read and the output's write it parks its own temporaries
    there, and the runtime hands the executable a buffer it may write (the
    donated one, or a copy when the caller's cannot be donated).  So values
    may move into its idle bytes; nothing XLA put there moves out."""
    return alloc.is_entry_computation_parameter and alloc.maybe_live_out and not alloc.is_tuple


def check_move(what, old_alloc, old_offset, alloc, offset, size, allocations, sizes,
               alignment: int, *, copy: bool = False) -> None:
    """A slice moved from (old_alloc, old_offset) to (alloc, offset) of ``size``
    bytes.  ``copy``: the slice is a recomputed copy's (or reads one): what is
    at the old place stays there, so only the new place must take it."""
    if alloc not in sizes:
        raise RewriteError(f"{what} moved to allocation {alloc}, which does not exist")
    if (alloc, offset) != (old_alloc, old_offset):
        for index in {alloc} if copy else {old_alloc, alloc}:
            fixed = fixed_kind(allocations[index])
            if fixed and not (index == alloc != old_alloc and donated(allocations[index])):
                raise RewriteError(f"{what}: allocation {index} is {fixed}; nothing in it may move")
        if allocations[alloc].color != allocations[old_alloc].color:
            raise RewriteError(f"{what} moved across memory colors "
                               f"({allocations[old_alloc].color} -> {allocations[alloc].color})")
        if (offset - old_offset) % alignment:
            raise RewriteError(f"{what} moved to +{offset}: that breaks its "
                               f"{alignment}-byte alignment")
    if offset < 0 or offset + size > sizes[alloc]:
        raise RewriteError(f"{what}: [{offset}, {offset + size}) lies outside allocation "
                           f"{alloc} of {sizes[alloc]} bytes")


def check_covered(thunk_extents, buffer_extents) -> None:
    """Each thunk slice must sit inside a logical buffer of its allocation."""
    by_alloc: dict[int, list[tuple[int, int]]] = {}
    for alloc, offset, size in buffer_extents:
        by_alloc.setdefault(alloc, []).append((offset, offset + size))
    for what, alloc, offset, size in thunk_extents:
        if not any(lo <= offset and offset + size <= hi for lo, hi in by_alloc.get(alloc, ())):
            raise RewriteError(f"{what} now at allocation {alloc} [{offset}, {offset + size}) "
                               "lies in no logical buffer: relocate and relocate_logical disagree")
