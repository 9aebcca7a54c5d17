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
256-aligned; kernels may vectorise on that).

Recomputation (``edit.clones``), as on CPU: the producer's entry thunk is
copied (same kernel, launch dimensions and operand slices) just before the
first thunk of ``before``; the copy's written arguments that hold the value
move to the second copy's place, and the late readers' slices were already
pointed there by ``relocate``.  Only kernel launches of instructions with no
side effects are copied (:func:`clone_refusal`): a kernel thunk's
``written`` flags say which arguments it writes, so a copy that would read its
own result (an in-place kernel) is refused.  A multi-result fusion's copy
writes its other results too: each goes, like a library call's workspace, to
the place ``Clone.scratch`` gives it (free while the copy runs; nothing reads
it), and without such a place the copy is refused.  cuBLAS, cuBLASLt and cuDNN convolution calls are copied
too (``LIBRARY_KINDS``): their result moves like a kernel's, and their
workspace, which only the first run's slice held, moves to the place the plan
gave the copy's scratch (``Clone.scratch``; none is needed when it has no
bytes).  cuDNN graphs, collectives, copies, other custom calls and control
flow are refused with their reason.  A copy whose operand is itself recomputed before it (a chain)
reads that operand's copy (``Clone.operands``), as on CPU.  A copy of a kernel
inside a while loop's body (its producer an instruction of the body) goes into
that while thunk's body sequence (``body_sequence``, ``body_slot``): every
iteration runs it; library calls are not copied there.  The copy gets a
thunk id of its own; the HLO module and its schedule stay as they are.  Not
yet run on a GPU.
"""

from __future__ import annotations

from typing import Any, Iterator, Mapping

from olla_jax.apply import gpu_executable, tuple_tables
from olla_jax.apply.edits import (  # noqa: F401 - entry_order re-exported
    ExecutableEdit, RewriteError, body_running, body_slot, check_covered, check_move, check_order, clone_slot,
    edited_sizes,
    entry_order, first_run_thunk, nested_of_type, producer_thunk, relocate_buffers,
    reorder_thunks, slices, thunk_groups)
from olla_jax.graph.model import callee_instructions

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
    instructions = {i.name: i for c in decoded.hlo_module.computations for i in c.instructions}
    runtime = list(decoded.allocations)
    allocations = list(decoded.buffer_assignment.buffer_allocations)
    if len(runtime) != len(allocations) or any(
            a.SerializeToString(deterministic=True) != b.SerializeToString(deterministic=True)
            for a, b in zip(runtime, allocations)):
        raise RewriteError("the runtime allocations differ from the buffer assignment's: "
                           "this executable's layout is not the one this rewrite knows")
    # a tuple-table flag no thunk bears out does not fix the allocation (tuple_tables)
    unheld = tuple_tables.unheld_tuple_flags(decoded)
    allocations = [tuple_tables.without_tuple_flag(a) if a.index in unheld else a
                   for a in allocations]
    sizes = edited_sizes(allocations, edit.allocation_sizes, ALIGNMENT)

    owner = _entry_owners(decoded)
    _reorder(decoded, instructions, owner, tuple(edit.order))
    thunk_extents = _relocate_thunks(decoded, instructions, owner, edit.relocate, allocations,
                                     sizes)
    buffer_extents = relocate_buffers(decoded, edit.relocate_logical, allocations, sizes, ALIGNMENT)
    # A recomputed copy has no logical buffer of its own (as on CPU): its
    # readers' slices are covered by the copy's place.
    buffer_extents += [(c.late[0], c.late[1], c.early[2]) for c in edit.clones]
    buffer_extents += [m for c in edit.clones for m in c.merged]
    check_covered(thunk_extents, buffer_extents)
    # one thunk per producer, counted before any copy of it is inserted (a
    # value recomputed several times has several copies of one producer)
    names = [owner.get(thunk_instruction(t, instructions), "") for t in decoded.thunks]
    entry = {i.name for i in decoded.entry_computation().instructions}
    bodies = {id(c): body_sequence(decoded, instructions, c) for c in edit.clones
              if c.producer not in entry}   # a copy inside a loop body: every iteration
    for clone in edit.clones:
        producer_thunk(names if id(clone) not in bodies else
                       [thunk_instruction(t, instructions) for t in bodies[id(clone)].thunks],
                       clone)
    next_id = [_unused_thunk_id(decoded)]   # (walking every nested thunk once, not per copy)
    for clone in edit.clones:
        if clone.done_before:
            _insert_collective_copy(decoded, instructions, owner, clone, allocations, sizes,
                                    tuple(edit.order), next_id=next_id)
        else:
            # (looked up again: inserting an entry copy rebuilt the entry thunks)
            body = body_sequence(decoded, instructions, clone) if id(clone) in bodies else None
            _insert_clone(decoded, instructions, owner, clone, allocations, sizes,
                          tuple(edit.order), next_id=next_id, sequence=body)
    for alloc in decoded.buffer_assignment.buffer_allocations:
        alloc.size = sizes[alloc.index]
    for alloc, edited in zip(decoded.allocations, decoded.buffer_assignment.buffer_allocations):
        alloc.CopyFrom(edited)


def thunk_instruction(thunk: Any, instructions: Mapping[str, Any]) -> str:
    name = thunk.thunk_info.profile_annotation
    if not name and thunk_kind(thunk) == "sequential_thunk":
        # XLA:GPU groups some thunks of one instruction unnamed (in a loop body, a
        # triangular solve's copy and solve): the group runs for that instruction.
        inner = {thunk_instruction(t, instructions) for t in _nested(thunk)}
        if len(inner) == 1:
            return inner.pop()
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


# --- recomputation ---------------------------------------------------------

# Kernel launches: a pure function of their argument slices when the HLO
# instruction they run has no side effects.
CLONABLE_KINDS = frozenset({"kernel_thunk", "custom_kernel_thunk"})

# Library calls (cuBLAS, cuDNN): a pure function of their operands too, with a
# scratch (workspace) they write and nobody reads.  Per thunk kind: the fields
# holding what it writes, and its scratch; a copy writes its result at the
# plan's place and its scratch where ``Clone.scratch`` puts it.
LIBRARY_KINDS = {
    "gemm_thunk": (("output_buffer",), ("workspace",)),
    "cublas_lt_matmul_thunk": (("d", "aux", "d_amax"), ("workspace",)),
    "convolution_thunk": (("result_buffers",), ("scratch_buffer",)),
}
# The custom-calls XLA:GPU runs them for (the HLO instruction of the thunk).
LIBRARY_TARGETS = frozenset({
    "__cublas$gemm", "__cublas$lt$matmul", "__cublas$lt$matmul$f8",
    "__cudnn$convForward", "__cudnn$convBackwardInput", "__cudnn$convBackwardFilter",
    "__cudnn$convBiasActivationForward"})

_KIND_REASONS = {
    "gemm_thunk": "a cuBLAS GEMM that accumulates into its output (beta != 0)",
    "cublas_lt_matmul_thunk": "a cuBLASLt matmul of an instruction that is no plain library call",
    "convolution_thunk": "a cuDNN convolution of an instruction that is no plain library call",
    "cudnn_thunk": "a cuDNN graph, whose workspace was placed for its first run only",
    "copy_thunk": "a copy (nothing to gain over keeping its source)",
    "device_to_device_copy_thunk": "a copy (nothing to gain over keeping its source)",
    "while_thunk": "control flow (nested thunks)",
    "conditional_thunk": "control flow (nested thunks)",
    "sequential_thunk": "a sequence of nested thunks",
}

# Instructions whose second run would not repeat the first: random numbers
# from device state, host and device communication, calls into foreign code.
_SIDE_EFFECTS = ("rng", "rng-get-and-update-state", "custom-call", "infeed", "outfeed",
                 "send", "send-done", "recv", "recv-done", "all-reduce", "all-gather",
                 "all-to-all", "reduce-scatter", "collective-permute", "collective-broadcast",
                 "ragged-all-to-all", "partition-id", "replica-id")


def clone_refusal(thunk: Any, instruction: Any, computations: Mapping[int, Any]) -> str | None:
    """Why ``thunk`` (an entry thunk running HLO ``instruction``) may not run
    a second time as a recomputation, or None when a copy recomputes it."""
    kind = thunk_kind(thunk)
    if kind in LIBRARY_KINDS and instruction.opcode == "custom-call" and \
            instruction.custom_call_target in LIBRARY_TARGETS and \
            not (kind == "gemm_thunk" and thunk.gemm_thunk.gemm_config.beta != 0):
        return None
    if kind not in CLONABLE_KINDS:
        why = _KIND_REASONS.get(kind) or (
            "a collective" if any(w in kind for w in ("all_", "collective", "reduce_scatter",
                                                       "nccl", "send", "recv"))
            else "not a kernel launch")
        return f"its {kind} is {why}; only {', '.join(sorted(CLONABLE_KINDS))} are copied"
    if any(True for _ in _nested(thunk)):
        return f"its {kind} holds nested thunks"
    stack, seen = [instruction], set()
    while stack:
        instr = stack.pop()
        if instr.opcode in _SIDE_EFFECTS:
            return f"{instruction.name} runs {instr.opcode} ({instr.name}), which has side effects"
        for cid in instr.called_computation_ids:
            if cid not in seen and cid in computations:
                seen.add(cid)
                stack.extend(computations[cid].instructions)
    return None


def entry_thunk_kinds(decoded) -> tuple[dict[str, list[str]], Any]:
    """(entry instruction -> kinds of the entry thunks it runs, HLO module).
    A thunk :func:`clone_refusal` accepts reads "kernel" ("library" for a
    cuBLAS or cuDNN call, which has a scratch to place), one holding nested
    thunks "nested", any other its own kind (``custom_kernel_thunk`` of an
    instruction with side effects...)."""
    module = decoded.hlo_module
    instructions = {i.name: i for c in module.computations for i in c.instructions}
    comps = {c.id: c for c in module.computations}
    owner = _entry_owners(decoded)
    kinds: dict[str, list[str]] = {}
    for thunk in decoded.thunks:
        name = thunk_instruction(thunk, instructions)
        kinds.setdefault(owner.get(name, name), []).append(
            _copy_kind(thunk, instructions[name], comps))
    return kinds, module


def _copy_kind(thunk, instruction, comps) -> str:
    """What a copy of ``thunk`` would be: "nested" (it runs thunks of its own),
    "kernel" or "library" (a copy may be built), else the thunk's own kind."""
    if any(True for _ in _nested(thunk)):
        return "nested"
    if clone_refusal(thunk, instruction, comps) is None:
        return "library" if thunk_kind(thunk) in LIBRARY_KINDS else "kernel"
    return thunk_kind(thunk)


def body_thunk_kinds(decoded) -> dict[str, list[str]]:
    """Body instruction -> kinds of its thunks in the body sequences of the
    entry while thunks, named as by :func:`entry_thunk_kinds` ("kernel",
    "library", "nested" or the thunk's own kind)."""
    module = decoded.hlo_module
    instructions = {i.name: i for c in module.computations for i in c.instructions}
    comps = {c.id: c for c in module.computations}
    kinds: dict[str, list[str]] = {}
    for loop in decoded.thunks:
        if thunk_kind(loop) != "while_thunk":
            continue
        for thunk in loop.while_thunk.body_thunk_sequence.thunks:
            name = thunk_instruction(thunk, instructions)
            kinds.setdefault(name, []).append(_copy_kind(thunk, instructions[name], comps))
    return kinds


def body_sequence(decoded, instructions, clone):
    """The body thunk sequence of the one entry while thunk whose body runs
    ``clone.producer`` (``edits.body_running``)."""
    return body_running(clone, (t.while_thunk.body_thunk_sequence for t in decoded.thunks
                                if thunk_kind(t) == "while_thunk"),
                        lambda t: thunk_instruction(t, instructions))


def kernel_arguments(thunk: Any) -> list[tuple[Any, bool]]:
    """(slice, written) per argument of a kernel thunk, in launch order."""
    kind = thunk_kind(thunk)
    body = getattr(thunk, kind)
    if kind == "custom_kernel_thunk":
        args = [a.slice for a in body.args]
    elif kind == "kernel_thunk":
        args = list(body.args)
    else:
        raise RewriteError(f"{kind} is not a kernel thunk")
    written = list(body.written)
    if len(written) != len(args):
        raise RewriteError(f"{kind} of {thunk.thunk_info.profile_annotation} has {len(args)} "
                           f"arguments but {len(written)} written flags")
    return list(zip(args, written))


def clone_arguments(thunk: Any) -> list[tuple[Any, str]]:
    """(slice, role) per buffer slice of a thunk a copy may be made of: role
    "written" (its result), "read", "scratch" (a library call's workspace) or
    "unread" (cuBLASLt's C matrix when beta is 0: given, never read; XLA
    passes the result's own slice)."""
    kind = thunk_kind(thunk)
    if kind not in LIBRARY_KINDS:
        return [(msg, "written" if written else "read") for msg, written in kernel_arguments(thunk)]
    writes, scratch = LIBRARY_KINDS[kind]
    body = getattr(thunk, kind)
    beta = body.gemm_config.beta if kind != "convolution_thunk" else 0
    out = []
    for path, msg in _slices(thunk):
        field = path.split(".")[1] if "." in path else path
        role = "written" if field in writes else "scratch" if field in scratch else \
            "unread" if kind == "cublas_lt_matmul_thunk" and field == "c" and beta == 0 else "read"
        out.append((msg, role))
    return out


def _insert_clone(decoded, instructions, owner, clone, allocations, sizes, order=(),
                  next_id: list[int] | None = None, sequence=None) -> None:
    """Copy ``clone.producer``'s (relocated) entry thunk before ``clone.before``'s
    first, or, when ``clone.before`` runs none (a bitcast of the value), before
    the first thunk after it in ``order``.  ``next_id``: [the first thunk id
    no thunk has], advanced past the id the copy takes (None: looked up).
    ``sequence``: a while loop's body sequence (``body_sequence``) holding
    both, where the copy goes instead (a kernel only: no scratch there)."""
    thunks = decoded.thunks if sequence is None else sequence.thunks
    names = ([owner.get(thunk_instruction(t, instructions), "") for t in thunks]
             if sequence is None else [thunk_instruction(t, instructions) for t in thunks])
    made = first_run_thunk(names, clone)
    source = thunks[made]
    comps = {c.id: c for c in decoded.hlo_module.computations}
    why = clone_refusal(source, instructions[thunk_instruction(source, instructions)], comps)
    if why is None and sequence is not None and thunk_kind(source) not in CLONABLE_KINDS:
        why = f"its {thunk_kind(source)} needs a scratch place, which no copy in a loop body gets"
    if why is not None:
        raise RewriteError(f"cannot recompute {clone.producer}: {why}")
    if sequence is not None:
        at = body_slot(decoded.hlo_module, names, clone, made)
    elif clone.before not in names and order:
        at = slot_at_or_after(names, order, clone.before)
        if at is None or at <= made:
            raise RewriteError(f"cannot recompute {clone.producer} before {clone.before}: no "
                               "thunk after it follows the producer's")
    else:
        at = clone_slot(names, clone, made)
    e_alloc, e_offset, size = clone.early
    l_alloc, l_offset = clone.late
    copy = type(source)()
    copy.CopyFrom(source)
    kind = thunk_kind(copy)
    moves, moved = [], 0
    scratch_done = set()
    for k, (msg, role) in enumerate(clone_arguments(copy)):
        a, o, n = msg.buffer_allocation_index, msg.offset, msg.size
        what = f"recomputed {kind} of {clone.producer} (argument {k})"
        old = (a, o, n)
        if role == "written" and kind in CLONABLE_KINDS and clone.scratch and \
                not (a == e_alloc and e_offset <= o and o + n <= e_offset + size):
            role = "scratch"    # another result of a multi-result fusion: to its scratch place
        if role == "scratch":
            if n == 0:      # no workspace (an algorithm that needs none): nothing written
                continue
            found = next(((j, (la, lo + (o - so))) for j, ((sa, so, ssize), (la, lo))
                          in enumerate(clone.scratch)
                          if a == sa and so <= o and o + n <= so + ssize), None)
            if found is None:
                raise RewriteError(f"cannot recompute {clone.producer}: its scratch (allocation "
                                   f"{a} +{o}, {n} B) has no place of the copy's own")
            scratch_done.add(found[0])
            check_move(what + ", scratch", a, o, *found[1], n, allocations, sizes, ALIGNMENT,
                       copy=True)
            msg.buffer_allocation_index, msg.offset = found[1]
            moves.append((what + ", scratch", old, found[1]))
            continue
        if n == 0:          # an output the call does not produce (cuBLASLt's aux...)
            continue
        written = role == "written"
        inside = a == e_alloc and e_offset <= o and o + n <= e_offset + size
        touches = a == e_alloc and o < e_offset + size and e_offset < o + n
        if role == "unread" and (inside or not touches):
            written = inside    # moves with the result it names, or stays
        if touches and not written:
            raise RewriteError(f"cannot recompute {clone.producer}: its argument {k} reads its own "
                               "result's bytes (an in-place kernel)")
        if written and not inside:
            raise RewriteError(f"cannot recompute {clone.producer}: it writes argument {k} "
                               f"(allocation {a} +{o}) besides the recomputed value at "
                               f"allocation {e_alloc} +{e_offset} (a multi-output fusion?)")
        chained = next(((na, no + (o - oo)) for (oa, oo, osize), (na, no) in clone.operands
                        if a == oa and oo <= o and o + n <= oo + osize), None)
        if inside:
            new = (l_alloc, l_offset + (o - e_offset))
            check_move(what, a, o, *new, n, allocations, sizes, ALIGNMENT, copy=True)
            msg.buffer_allocation_index, msg.offset = new
            moved += 1
            moves.append((what, old, new))
        elif chained is not None:    # a chain: read the operand's copy made before this one
            if written:
                raise RewriteError(f"cannot recompute {clone.producer}: it writes its recomputed "
                                   f"operand's bytes (argument {k})")
            check_move(what + ", chained", a, o, *chained, n, allocations, sizes, ALIGNMENT,
                       copy=True)
            msg.buffer_allocation_index, msg.offset = chained
            moves.append((what + ", chained", old, chained))
        else:
            moves.append((what, old, (a, o)))
    if not moved:
        raise RewriteError(f"cannot recompute {clone.producer}: no written argument of its thunk "
                           f"lies at allocation {e_alloc} +{e_offset}")
    if len(scratch_done) != len(clone.scratch):
        raise RewriteError(f"cannot recompute {clone.producer}: a scratch place was given for "
                           "bytes its thunk does not write")
    _check_aliasing(moves)
    copy.thunk_info.thunk_id = _take_ids(decoded, next_id, 1)
    _splice(decoded, [(at, copy)], thunks)


def slot_at_or_after(names, order: tuple[str, ...], name: str) -> int | None:
    """Index of the first entry thunk of ``name`` or, when it runs none (a
    bitcast...), of the first instruction after it in ``order`` that runs one;
    ``names``: the entry instruction of each thunk (thunks already in ``order``)."""
    position = {n: k for k, n in enumerate(order)}
    at = position.get(name)
    if at is None:
        return None
    return next((k for k, n in enumerate(names) if position.get(n, -1) >= at), len(names))


def _insert_collective_copy(decoded, instructions, owner, clone, allocations, sizes,
                            order, next_id: list[int] | None = None) -> None:
    """Run ``clone.producer``'s all-gather again (re-gathering): its entry
    ``async_start_thunk`` (one ``all_gather_thunk`` inside) is copied just
    before ``clone.before``'s first thunk and its ``async_done_thunk`` just
    before ``clone.done_before``'s, with fresh thunk ids and a fresh async
    execution id (the pair's own, as XLA numbers them: the start's thunk id);
    the destination slice moves from the first copy's bytes to ``clone.late``
    (the same bytes when the plan keeps them), the source (the shard) stays.
    A synchronous all-gather (a bare ``all_gather_thunk``: XLA found nothing to
    overlap it with) is refused: its copy would expose its whole link time."""
    names = [owner.get(thunk_instruction(t, instructions), "") for t in decoded.thunks]
    made = producer_thunk(names, clone)
    start = decoded.thunks[made]
    kind = thunk_kind(start)
    if kind == "all_gather_thunk":
        raise RewriteError(f"cannot re-gather {clone.producer}: XLA made it synchronous (no "
                           "async start/done thunks), so its copy could not overlap compute")
    inner = list(start.async_start_thunk.thunks.thunks) if kind == "async_start_thunk" else []
    if len(inner) != 1 or thunk_kind(inner[0]) != "all_gather_thunk":
        raise RewriteError(f"cannot re-gather {clone.producer}: its {kind} is not an async "
                           "start holding one all_gather_thunk")
    async_id = start.async_start_thunk.async_execution_id
    dones = [k for k, t in enumerate(decoded.thunks) if thunk_kind(t) == "async_done_thunk"
             and t.async_done_thunk.async_execution_id == async_id]
    if len(dones) != 1 or dones[0] < made:
        raise RewriteError(f"cannot re-gather {clone.producer}: {len(dones)} done thunks of its "
                           f"async execution {async_id} follow its start")
    done = decoded.thunks[dones[0]]
    at_start = slot_at_or_after(names, order, clone.before)
    at_done = slot_at_or_after(names, order, clone.done_before)
    if at_start is None or at_start <= dones[0]:
        raise RewriteError(f"cannot re-gather {clone.producer} before {clone.before}: its first "
                           "run is not done by then")
    if at_done is None or at_done < at_start:
        raise RewriteError(f"cannot re-gather {clone.producer}: its copy's done goes before "
                           f"{clone.done_before}, which has no thunk after the copy's start")
    e_alloc, e_offset, size = clone.early
    l_alloc, l_offset = clone.late
    copy = type(start)()
    copy.CopyFrom(start)
    buffers = list(copy.async_start_thunk.thunks.thunks[0].all_gather_thunk.buffers)
    moves, moved = [], 0
    for k, buf in enumerate(buffers):
        src, dst = buf.source_buffer.slice, buf.destination_buffer.slice
        what = f"re-gathered all_gather_thunk of {clone.producer} (buffer {k})"
        if src.buffer_allocation_index == e_alloc and src.offset < e_offset + size and \
                e_offset < src.offset + src.size:
            raise RewriteError(f"cannot re-gather {clone.producer}: its source is inside the "
                               "gathered bytes")
        a, o, n = dst.buffer_allocation_index, dst.offset, dst.size
        if a == e_alloc and e_offset <= o and o + n <= e_offset + size:
            new = (l_alloc, l_offset + (o - e_offset))
            check_move(what, a, o, *new, n, allocations, sizes, ALIGNMENT)
            dst.buffer_allocation_index, dst.offset = new
            moved += 1
            moves.append((what, (a, o, n), new))
        moves.append((what + " source", (src.buffer_allocation_index, src.offset, src.size),
                      (src.buffer_allocation_index, src.offset)))
    if moved != 1 or len(buffers) != 1:
        raise RewriteError(f"cannot re-gather {clone.producer}: it gathers {len(buffers)} arrays, "
                           f"{moved} of them at allocation {e_alloc} +{e_offset}; one is re-gathered")
    _check_aliasing(moves)
    fresh = max(_take_ids(decoded, next_id, 0),
                1 + max((t.async_start_thunk.async_execution_id for t in decoded.thunks
                         if thunk_kind(t) == "async_start_thunk"), default=0))
    if next_id is not None:
        next_id[0] = fresh + 3
    copy.async_start_thunk.thunks.thunks[0].thunk_info.thunk_id = fresh
    copy.thunk_info.thunk_id = fresh + 1
    copy.async_start_thunk.async_execution_id = fresh + 1
    done_copy = type(done)()
    done_copy.CopyFrom(done)
    done_copy.thunk_info.thunk_id = fresh + 2
    done_copy.async_done_thunk.async_execution_id = fresh + 1
    _splice(decoded, [(at_start, copy), (at_done, done_copy)])


def _all_thunks(thunks) -> Iterator[Any]:
    for thunk in thunks:
        yield thunk
        yield from _all_thunks(list(_nested(thunk)))


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
        for inner in callee_instructions(instr, comps):
            owners.setdefault(inner, set()).add(instr.name)
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


def _unused_thunk_id(decoded) -> int:
    """One past the largest thunk id anywhere in the sequence (nested included)."""
    return 1 + max((t.thunk_info.thunk_id for t in _all_thunks(decoded.thunks)), default=0)


def _take_ids(decoded, next_id: list[int] | None, n: int) -> int:
    """The first of ``n`` thunk ids no thunk has: from ``next_id`` (advanced
    past them) when given, else looked up in ``decoded``."""
    if next_id is None:
        return _unused_thunk_id(decoded)
    fresh = next_id[0]
    next_id[0] += n
    return fresh


def _splice(decoded, inserts: list[tuple[int, Any]], thunks=None) -> None:
    """Put each ``(index, thunk)`` of ``inserts`` before the thunk now at
    ``index`` of ``thunks`` (``decoded.thunks`` when None; a body sequence's
    otherwise), in the order given where indices tie.  The repeated field is
    rebuilt from copies: protobuf has no insert."""
    thunks = decoded.thunks if thunks is None else thunks
    kept = []
    for thunk in thunks:
        same = type(thunk)()
        same.CopyFrom(thunk)
        kept.append(same)
    spliced = []
    pending = sorted(inserts, key=lambda item: item[0])
    k = 0
    for i, thunk in enumerate(kept):
        while k < len(pending) and pending[k][0] == i:
            spliced.append(pending[k][1])
            k += 1
        spliced.append(thunk)
    spliced.extend(t for _, t in pending[k:])
    del thunks[:]
    thunks.extend(spliced)
