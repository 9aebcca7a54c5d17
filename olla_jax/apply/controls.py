"""Edits built without a planner, for tests, benchmarks and negative controls.

A *block* of an allocation is a maximal set of logical buffers whose byte
ranges overlap one another (XLA reuses bytes between buffers that are never
live together).  Every thunk slice lies inside one logical buffer, hence inside
one block, so moving whole blocks without making them overlap keeps every
non-overlap XLA proved, whatever the order of the instructions.
"""

from __future__ import annotations

import dataclasses

from olla_jax.apply import cpu_rewrite, executable
from olla_jax.apply.cpu_rewrite import ALIGNMENT, ExecutableEdit


@dataclasses.dataclass(frozen=True)
class Block:
    start: int
    end: int      # exclusive; the largest end of its buffers


def _round_up(value: int, multiple: int = ALIGNMENT) -> int:
    return -(-value // multiple) * multiple


def blocks(decoded: executable.DecodedExecutable, allocation: int) -> list[Block]:
    """The blocks of one allocation, by start."""
    alloc = decoded.buffer_assignment.buffer_allocations[allocation]
    spans = sorted((e.offset, e.offset + e.size) for e in alloc.assigned)
    out: list[list[int]] = []
    for lo, hi in spans:
        if out and lo < out[-1][1]:
            out[-1][1] = max(out[-1][1], hi)
        else:
            out.append([lo, hi])
    return [Block(lo, hi) for lo, hi in out]


def temp_allocation(decoded: executable.DecodedExecutable) -> int:
    """Index of the largest allocation that is neither a parameter, a constant,
    thread-local, a tuple table nor live out: XLA's temp arena."""
    candidates = [a for a in decoded.buffer_assignment.buffer_allocations
                  if not cpu_rewrite.fixed_kind(a) and not a.maybe_live_out]
    if not candidates:
        raise ValueError("the executable has no temp allocation")
    return max(candidates, key=lambda a: a.size).index


def _edit_from_blocks(decoded, allocation: int, moves: dict[Block, int], size: int) -> ExecutableEdit:
    """Move each block of ``allocation`` to a new start (same relative layout)."""
    spans = sorted(moves.items(), key=lambda kv: kv[0].start)

    def new_offset(offset: int, size_: int) -> int:
        for block, start in spans:
            if block.start <= offset and offset + size_ <= block.end:
                return start + offset - block.start
        raise cpu_rewrite.RewriteError(
            f"[{offset}, {offset + size_}) of allocation {allocation} lies in no block")

    buffer_sizes = {e.logical_buffer_id: e.size
                    for e in decoded.buffer_assignment.buffer_allocations[allocation].assigned}

    def relocate(name: str, alloc: int, offset: int, size_: int) -> tuple[int, int]:
        return (alloc, new_offset(offset, size_)) if alloc == allocation else (alloc, offset)

    def relocate_logical(buffer: int, alloc: int, offset: int) -> tuple[int, int]:
        if alloc != allocation:
            return alloc, offset
        return alloc, new_offset(offset, buffer_sizes[buffer])

    return ExecutableEdit(order=cpu_rewrite.entry_order(decoded), relocate=relocate,
                          relocate_logical=relocate_logical,
                          allocation_sizes={allocation: size})


def mirror_edit(decoded: executable.DecodedExecutable, allocation: int | None = None) -> ExecutableEdit:
    """Mirror an allocation's blocks: a block [a, b) goes to [T - b', T - b' + (b - a))
    with b' = b rounded up to 64 and T the allocation size rounded up to 64."""
    allocation = temp_allocation(decoded) if allocation is None else allocation
    size = _round_up(decoded.buffer_assignment.buffer_allocations[allocation].size)
    moves = {b: size - _round_up(b.end) for b in blocks(decoded, allocation)}
    return _edit_from_blocks(decoded, allocation, moves, size)


def shift_edit(decoded: executable.DecodedExecutable, allocation: int | None = None,
               delta: int = ALIGNMENT) -> ExecutableEdit:
    """Shift everything in an allocation by ``delta`` bytes, growing it as much."""
    allocation = temp_allocation(decoded) if allocation is None else allocation
    size = decoded.buffer_assignment.buffer_allocations[allocation].size + delta
    moves = {b: b.start + delta for b in blocks(decoded, allocation)}
    return _edit_from_blocks(decoded, allocation, moves, size)


def overlap_edit(decoded: executable.DecodedExecutable, allocation: int | None = None) -> ExecutableEdit:
    """A deliberately WRONG edit: the last block of an allocation is moved onto
    the first one, so buffers XLA kept apart share bytes (a negative control)."""
    allocation = temp_allocation(decoded) if allocation is None else allocation
    found = blocks(decoded, allocation)
    if len(found) < 2:
        raise ValueError(f"allocation {allocation} has a single block; nothing to overlap")
    moves = {b: b.start for b in found}
    moves[found[-1]] = found[0].start
    size = decoded.buffer_assignment.buffer_allocations[allocation].size
    return _edit_from_blocks(decoded, allocation, moves, size)


# Thunk kinds whose slices we can tell apart into reads and writes, and the
# field names of their read-only slices.
_READ_FIELDS = {"arguments_buffers", "arguments_shapes", "lhs_buffer_shape", "rhs_buffer_shape",
                "src_buffer_shape", "input_buffer_shape", "kernel_buffer_shape"}
_KNOWN_KINDS = {"kernel", "dot", "ynn-fusion", "xnn-fusion", "copy", "convolution", "fft"}


def swappable_pairs(decoded: executable.DecodedExecutable) -> list[tuple[str, str]]:
    """Adjacent entry instructions (a, b) that may run as (b, a): b does not
    use a, both have thunks of simple kinds, and no bytes one writes are
    touched by the other."""
    order = cpu_rewrite.entry_order(decoded)
    entry = decoded.entry_computation()
    by_name = {i.name: i for i in entry.instructions}
    touched: dict[str, list[tuple[int, int, int, bool]]] = {}
    simple: dict[str, bool] = {}
    for use in cpu_rewrite.slice_uses(decoded):
        if use.depth:
            continue
        write = use.field.split(".")[1] not in _READ_FIELDS
        touched.setdefault(use.instruction, []).append(
            (use.allocation, use.offset, use.offset + use.size, write))
        simple[use.instruction] = simple.get(use.instruction, True) and use.thunk_kind in _KNOWN_KINDS

    def conflict(x, y) -> bool:
        return any(ax == ay and lx < hy and ly < hx and (wx or wy)
                   for ax, lx, hx, wx in x for ay, ly, hy, wy in y)

    pairs = []
    for a, b in zip(order, order[1:]):
        if not (simple.get(a) and simple.get(b)):
            continue
        deps = set(by_name[b].operand_ids) | set(by_name[b].control_predecessor_ids)
        if by_name[a].id in deps or conflict(touched[a], touched[b]):
            continue
        pairs.append((a, b))
    return pairs


def swap_edit(decoded: executable.DecodedExecutable, a: str, b: str) -> ExecutableEdit:
    """XLA's placement with instructions a and b (adjacent) run in swapped order."""
    order = list(cpu_rewrite.entry_order(decoded))
    k = order.index(a)
    if order[k + 1] != b:
        raise ValueError(f"{a} and {b} are not adjacent")
    order[k], order[k + 1] = b, a
    return dataclasses.replace(cpu_rewrite.identity_edit(decoded), order=tuple(order))
