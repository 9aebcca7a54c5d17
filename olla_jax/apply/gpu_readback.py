"""Read a rewritten GPU executable back and compare it with the plan.

A compile-only GPU target cannot run what the rewrite wrote, so the bytes are
decoded again and held against the layout, thunk by thunk, without the
rewrite's code (only the decoder is shared): the entry thunks follow the
plan's order; each recomputation added exactly one copy of its producer's
thunk, just before the first thunk of ``before`` (in a while thunk's body
sequence for a copy inside a loop body), with the same kernel and
launch and every argument the same as the producer's except the value's
bytes, now at the plan's place; every late reader reads the value there; the
allocation sizes are the plan's.  The first difference is reported.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from olla_jax.apply import gpu_executable
from olla_jax.graph.model import callee_instructions


def _args(thunk: Any) -> list[tuple[tuple[int, int, int], bool]] | None:
    """((allocation, offset, size), written) per kernel argument; None if no kernel."""
    kind = thunk.WhichOneof("impl")
    if kind == "custom_kernel_thunk":
        body = thunk.custom_kernel_thunk
        slices = [a.slice for a in body.args]
    elif kind == "kernel_thunk":
        body = thunk.kernel_thunk
        slices = list(body.args)
    else:
        return None
    return [((s.buffer_allocation_index, s.offset, s.size), bool(w))
            for s, w in zip(slices, body.written)]


def _all_slices(msg: Any) -> list[tuple[int, int, int]]:
    """Every buffer slice inside ``msg`` (any thunk kind)."""
    out = []
    for field, value in msg.ListFields():
        if field.message_type is None:
            continue
        repeated = getattr(field, "is_repeated", None)   # protobuf >= 5.28
        if not isinstance(repeated, bool):
            repeated = field.label == field.LABEL_REPEATED
        items = value if repeated else (value,)
        for item in items:
            if field.message_type.full_name.endswith("BufferAllocationSliceProto"):
                out.append((item.buffer_allocation_index, item.offset, item.size))
            else:
                out.extend(_all_slices(item))
    return out


def _reads(thunk: Any) -> list[tuple[int, int, int]]:
    args = _args(thunk)
    if args is None:
        return _all_slices(thunk)
    return [s for s, written in args if not written]


def _arguments(thunk: Any) -> list[tuple[int, int, int]]:
    """Every slice a kernel thunk is given, read or written (else every slice)."""
    args = _args(thunk)
    return _all_slices(thunk) if args is None else [s for s, _ in args]


def _launch(thunk: Any) -> bytes:
    """The thunk without its arguments and id: kernel, launch dimensions..."""
    bare = type(thunk)()
    bare.CopyFrom(thunk)
    bare.thunk_info.thunk_id = 0
    kind = bare.WhichOneof("impl")
    body = getattr(bare, kind)
    body.ClearField("args")
    return bare.SerializeToString(deterministic=True)


def _overlaps(s: tuple[int, int, int], alloc: int, offset: int, size: int) -> bool:
    return s[0] == alloc and s[1] < offset + size and offset < s[1] + s[2]


def _dones(decoded) -> dict[str, str]:
    """Entry async start -> its done (the done whose operand it is)."""
    entry = next(c for c in decoded.hlo_module.computations
                 if c.id == decoded.hlo_module.entry_computation_id)
    names = {i.id: i.name for i in entry.instructions}
    return {names[o]: i.name for i in entry.instructions if i.opcode.endswith("-done")
            for o in i.operand_ids if o in names}


def _async_pairs_differ(thunks) -> str | None:
    """Each async done (a host offload's copy back or out, a collective's done)
    runs after its start, the only one with its execution id, and each start
    has its done: the done waits on an event the start records."""
    started: dict[int, str] = {}
    done: set[int] = set()
    for t in thunks:
        kind = t.WhichOneof("impl")
        name = t.thunk_info.profile_annotation
        if kind == "async_start_thunk":
            key = t.async_start_thunk.async_execution_id
            if key in started:
                return f"async start {name} reuses execution id {key} of {started[key]}"
            started[key] = name
        elif kind == "async_done_thunk":
            key = t.async_done_thunk.async_execution_id
            if key not in started or key in done:
                return (f"async done {name} (execution id {key}) does not follow "
                        "its start" if key not in started else
                        f"async done {name} waits on execution id {key} a second time")
            done.add(key)
    missing = sorted(set(started) - done)
    if missing:
        return f"async start {started[missing[0]]} has no done after it"
    return None


def _just_before(names, copy_at, k: int, position, name: str) -> bool:
    """Thunk ``k`` runs right before the first thunk at or after ``name`` in the order."""
    nxt = next((j for j in range(k + 1, len(names)) if j not in copy_at), None)
    prev = next((j for j in range(k - 1, -1, -1) if j not in copy_at), None)
    return (nxt is None or position.get(names[nxt], -1) >= position[name]) and \
        (prev is None or position.get(names[prev], -1) < position[name])


def _compare_regather(decoded, names, copies, copy_at, firsts, position, r, done,
                      layout) -> str | None:
    """A re-gathered all-gather: a second async start (same collective, same
    source, the destination at the plan's place) just before ``r.before``'s
    first thunk, its own async execution id, and a done of that id just before
    ``r.done_before``'s; the late readers with thunks read the plan's place."""
    if not copies.get(done):
        return f"the done of re-gathered {r.producer} runs once"
    k, d = copies[r.producer].pop(0), copies[done].pop(0)
    if not _just_before(names, copy_at, k, position, r.before):
        return f"the copy of {r.producer} does not run just before {r.before}"
    if not _just_before(names, copy_at, d, position, r.done_before) or d < k:
        return f"the copy of {done} does not run just before {r.done_before}"
    first, copy, done_copy = (decoded.thunks[firsts[r.producer]], decoded.thunks[k],
                              decoded.thunks[d])
    if first.WhichOneof("impl") != "async_start_thunk" or \
            copy.WhichOneof("impl") != "async_start_thunk" or \
            done_copy.WhichOneof("impl") != "async_done_thunk":
        return f"the copy of {r.producer} is not an async start and done"
    if copy.async_start_thunk.async_execution_id == first.async_start_thunk.async_execution_id \
            or done_copy.async_done_thunk.async_execution_id != \
            copy.async_start_thunk.async_execution_id:
        return f"the copy of {r.producer} does not have an async execution of its own"
    (a,), (b,) = first.async_start_thunk.thunks.thunks, copy.async_start_thunk.thunks.thunks
    if a.all_gather_thunk.collective_config.SerializeToString(deterministic=True) != \
            b.all_gather_thunk.collective_config.SerializeToString(deterministic=True):
        return f"the copy of {r.producer} is another collective"
    (ba,), (bb,) = a.all_gather_thunk.buffers, b.all_gather_thunk.buffers
    if ba.source_buffer.SerializeToString(deterministic=True) != \
            bb.source_buffer.SerializeToString(deterministic=True):
        return f"the copy of {r.producer} gathers from other bytes"
    dst = bb.destination_buffer.slice
    if (dst.buffer_allocation_index, dst.offset) != tuple(r.place) or dst.size != r.size:
        return (f"the copy of {r.producer} writes {dst.buffer_allocation_index} +{dst.offset}, "
                f"not the plan's place {r.place}")
    for user in r.late_users:
        thunks = [j for j, n in enumerate(names) if n == user and j not in copy_at]
        reads = [s for j in thunks for s in _reads(decoded.thunks[j])]
        if thunks and not any(s[0] == r.place[0] and r.place[1] <= s[1] < r.place[1] + r.size
                              for s in reads):
            return f"late reader {user} does not read the re-gathered copy at {r.place}"
    return None


def _chained_read(layout, j: int, position, read) -> tuple | None:
    """Where the ``j``-th copy of ``layout`` should read what its producer's
    first run read at ``read`` (allocation, offset, size) when that is a value
    the producer reads that was recomputed before the copy runs (a chain):
    its latest copy made before, at the same offset inside it; None otherwise.
    Copies run in order of the instruction they precede, then of the list."""
    graph, recs = layout.graph, layout.recomputes
    r = recs[j]
    node = graph.node_index[r.producer]
    at = (position.get(r.before, -1), j)
    latest: dict[int, tuple[tuple[int, int], int]] = {}
    for i, q in enumerate(recs):
        value = graph.values[q.value]
        if (position.get(q.before, -1), i) < at and node in value.touches and \
                value.def_node != node:
            latest[q.value] = max(latest.get(q.value, ((position.get(q.before, -1), i))),
                                  (position.get(q.before, -1), i))
    for v, (_, i) in latest.items():
        size = graph.values[v].size
        # what the first run read: the value's first copy, or a copy it is a late reader of
        alloc, offset = next((q.place for q in recs if q.value == v and
                              r.producer in q.late_users), layout.early_place(v))
        if read[0] == alloc and offset <= read[1] and read[1] + read[2] <= offset + size:
            place = recs[i].place
            return (place[0], place[1] + read[1] - offset, read[2])
    return None


def _bare(thunk: Any) -> bytes:
    """The thunk with every slice and its id cleared: the call and its config."""
    bare = type(thunk)()
    bare.CopyFrom(thunk)
    bare.thunk_info.thunk_id = 0
    _clear_slices(bare)
    return bare.SerializeToString(deterministic=True)


def _clear_slices(msg: Any) -> None:
    for field, value in msg.ListFields():
        if field.message_type is None:
            continue
        repeated = getattr(field, "is_repeated", None)
        if not isinstance(repeated, bool):
            repeated = field.label == field.LABEL_REPEATED
        for item in (value if repeated else (value,)):
            if field.message_type.full_name.endswith("BufferAllocationSliceProto"):
                item.buffer_allocation_index, item.offset = 0, 0
            else:
                _clear_slices(item)


def _compare_library(first: Any, copy: Any, layout, j: int, position, r) -> str | None:
    """A library call's copy: the same call and config; each slice where the
    first run's was, except the result's bytes (at the plan's place), its
    scratch (at the plan's scratch place) and recomputed operands (their
    copies, a chain); a slice with no bytes stays where it was."""
    if first.WhichOneof("impl") != copy.WhichOneof("impl") or _bare(first) != _bare(copy):
        return f"the copy of {r.producer} is not the same library call"
    early = layout.early_place(r.value)
    scratch = [((*layout.early_place(v), layout.graph.values[v].size), place)
               for v, place in getattr(r, "scratch", ())]
    for sa, sb in zip(_all_slices(first), _all_slices(copy)):
        if not sa[2]:
            expect = sa     # no bytes (an output the call does not make): the copy leaves it
        elif _overlaps(sa, early[0], early[1], r.size):
            expect = (r.place[0], r.place[1] + sa[1] - early[1], sa[2])
        else:
            expect = next(((p[0], p[1] + sa[1] - e[1], sa[2]) for e, p in scratch
                           if sa[2] and _overlaps(sa, *e)), None)
            if expect is None:
                expect = _chained_read(layout, j, position, sa) or sa
        if sb != expect:
            return f"the copy of {r.producer} has {sb} where the plan puts {expect}"
    return None


def _scratch_place(layout, r, sa) -> tuple | None:
    """Where the copy of ``r`` writes slice ``sa`` of its first run that
    lies in one of its scratch values (a workspace, or another result of a
    multi-result fusion): that value's plan place, or None."""
    for v, place in getattr(r, "scratch", ()):
        e = layout.early_place(v)
        size = layout.graph.values[v].size
        if sa[0] == e[0] and e[1] <= sa[1] and sa[1] + sa[2] <= e[1] + size:
            return (place[0], place[1] + sa[1] - e[1], sa[2])
    return None


def compare(raw: bytes, layout) -> str | None:
    """The first way ``raw`` differs from what ``layout`` asked, or None."""
    decoded = gpu_executable.decode(raw)
    order = list(layout.order_names)
    position = {name: k for k, name in enumerate(order)}
    comps = {c.id: c for c in decoded.hlo_module.computations}
    entry = comps[decoded.hlo_module.entry_computation_id]
    inner_owner: dict[str, str] = {}
    for instr in entry.instructions:
        for inner in callee_instructions(instr, comps):
            inner_owner.setdefault(inner, instr.name)
    names = []
    for t in decoded.thunks:
        name = t.thunk_info.profile_annotation
        names.append(name if name in position else inner_owner.get(name, name))

    # Copies inside loop bodies: in the body sequences, compared there.
    inner = [r for r in layout.recomputes if r.producer not in position]
    differs = _compare_body_copies(decoded, inner, layout)
    if differs is not None:
        return differs
    # Recomputed copies: the thunks of a producer beyond the first (and of a
    # re-gathered all-gather's done: its start and done both run twice).
    done_of = _dones(decoded)
    # copies of several results of one multi-result fusion before one
    # instruction are one launch (``feed_back.edit_of``): recompute index ->
    # the index of the first of them, whose thunk it shares
    launch, joins = {}, {}
    for j, r in enumerate(layout.recomputes):
        if getattr(r, "done_before", "") or r.producer not in position:
            continue    # (a re-gather, or a copy inside a loop body: compared above)
        first = launch.setdefault((r.producer, r.before), j)
        if first != j and layout.recomputes[first].value != r.value:
            joins[j] = first
    wanted = Counter(r.producer for j, r in enumerate(layout.recomputes)
                     if j not in joins and r.producer in position)
    wanted.update(done_of.get(r.producer, "?") for r in layout.recomputes
                  if getattr(r, "done_before", ""))
    firsts: dict[str, int] = {}
    copies: dict[str, list[int]] = defaultdict(list)
    for k, name in enumerate(names):
        if name in wanted:
            if name in firsts:
                copies[name].append(k)
            else:
                firsts[name] = k
    for producer, count in wanted.items():
        if len(copies[producer]) != count:
            return (f"{producer} should run {count + 1} times, its thunk appears "
                    f"{len(copies[producer]) + 1} times")
    copy_at = {k for ks in copies.values() for k in ks}
    steps = [position.get(name, -1) for k, name in enumerate(names) if k not in copy_at]
    if -1 in steps:
        return "a thunk names no entry instruction of the plan's order"
    if steps != sorted(steps):
        return "the entry thunks do not follow the plan's order"
    differs = _async_pairs_differ(decoded.thunks)
    if differs is not None:
        return differs

    thunk_of: dict[int, int] = {}
    for j, r in enumerate(layout.recomputes):
        if r.producer not in position:
            continue    # (a copy inside a loop body: compared above)
        if getattr(r, "done_before", ""):
            differs = _compare_regather(decoded, names, copies, copy_at, firsts, position,
                                        r, done_of.get(r.producer, "?"), layout)
            if differs is not None:
                return differs
            continue
        k = thunk_of[joins[j]] if j in joins else copies[r.producer].pop(0)
        thunk_of[j] = k
        group = [q for i, q in enumerate(layout.recomputes) if i != j and
                 (joins.get(i, i) == joins.get(j, j))]
        nxt = next((j for j in range(k + 1, len(names)) if j not in copy_at), None)
        if r.before in position and r.before not in names:   # a bitcast: no thunk of its own
            if not _just_before(names, copy_at, k, position, r.before):
                return f"the copy of {r.producer} does not run just before {r.before}"
        elif nxt is None or names[nxt] != r.before or \
                any(names[j] == r.before for j in range(k)):
            return f"the copy of {r.producer} does not run just before {r.before}'s first thunk"
        first, copy = decoded.thunks[firsts[r.producer]], decoded.thunks[k]
        if _args(first) is None:    # a library call (cuBLAS, cuDNN): its own slices
            differs = _compare_library(first, copy, layout, j, position, r)
            if differs is not None:
                return differs
            a = b = []
        else:
            differs = _kernel_differs(first, copy, r.producer)
            if differs is not None:
                return differs
            a, b = _args(first), _args(copy)

        def other_write(sa, sb, r=r, group=group):
            # another result of a multi-result fusion: at its scratch place,
            # or the place of its own copy when this launch makes that too
            expect = next((p for p in (_scratch_place(layout, q, sa) for q in (r, *group))
                           if p is not None), None)
            sibling = next((q for q in group if _overlaps(sa, *layout.early_place(q.value),
                                                          q.size)), None)
            if sibling is not None:
                e = layout.early_place(sibling.value)
                expect = (sibling.place[0], sibling.place[1] + sa[1] - e[1], sa[2])
            if sb != expect:
                return (f"the copy of {r.producer} writes {sb}, where the plan puts "
                        f"{expect or 'nothing'}")
            return None

        def read(sa, sb, r=r, j=j):
            # where the first run read a recomputed operand, the copy reads its copy
            chained = _chained_read(layout, j, position, sa)
            if sa != sb and chained is None:
                return f"the copy of {r.producer} reads {sb} where its first run read {sa}"
            if chained is not None and sb != chained:
                return (f"the copy of {r.producer} reads {sb}, not the copy of its "
                        f"recomputed operand at {chained}")
            return None

        differs = _arguments_differ(a, b, r, layout.early_place(r.value), other_write, read)
        if differs is not None:
            return differs
        differs = _late_readers_differ(
            layout, r, {user: [decoded.thunks[j] for j, n in enumerate(names)
                               if n == user and j not in copy_at] for user in r.late_users})
        if differs is not None:
            return differs
    sizes = {a.index: a.size for a in decoded.allocations}
    for index, size in layout.allocation_sizes.items():
        if sizes.get(index) != size:
            return f"allocation {index} has {sizes.get(index)} bytes, the plan asked {size}"
    return None


def _compare_body_copies(decoded, recomputes, layout) -> str | None:
    """Copies inside loop bodies (``recomputes``, whose producers are body
    instructions): in the body sequence of the one entry while thunk that
    runs the producer, one more kernel thunk of it per copy, each just
    before the first thunk of its ``before`` there, the same kernel and
    launch as the producer's run, writing the value at the plan's place and
    reading what that run reads (nothing else is written: no scratch in a
    body); every late reader's thunk in the body reads the plan's place."""
    if not recomputes:
        return None
    bodies = [t.while_thunk.body_thunk_sequence.thunks for t in decoded.thunks
              if t.WhichOneof("impl") == "while_thunk"]
    ids = {i.id: i.name for c in decoded.hlo_module.computations for i in c.instructions}
    position = {ids.get(i): k for seq in decoded.hlo_module.schedule.sequences.values()
                for k, i in enumerate(seq.instruction_ids)}
    for producer, count in Counter(r.producer for r in recomputes).items():
        holding = [b for b in bodies if any(t.thunk_info.profile_annotation == producer
                                            for t in b)]
        if len(holding) != 1:
            return f"{producer} runs in {len(holding)} while loop bodies, not one"
        runs = [k for k, t in enumerate(holding[0]) if t.thunk_info.profile_annotation == producer]
        if len(runs) != count + 1:
            return (f"{producer} should run {count + 1} times in its loop body, its thunk "
                    f"appears {len(runs)} times")
    for r in recomputes:
        thunks = next(b for b in bodies if any(t.thunk_info.profile_annotation == r.producer
                                               for t in b))
        names = [t.thunk_info.profile_annotation for t in thunks]
        runs = [k for k, n in enumerate(names) if n == r.producer]
        copies = runs[1:]
        # this copy: the one right before the first thunk of ``before``, or,
        # when that runs none (a bitcast), of the first instruction after it
        at = next((k for k in copies if _body_next(names, copies, k) is not None and
                   position.get(names[_body_next(names, copies, k)], -1) >=
                   position.get(r.before, len(position)) and
                   all(position.get(names[j], -1) < position.get(r.before, -1)
                       for j in range(k) if j not in copies)), None)
        if at is None:
            return f"the copy of {r.producer} does not run just before {r.before} in its loop body"
        first, copy = thunks[runs[0]], thunks[at]
        differs = _kernel_differs(first, copy, r.producer, " in its loop body")
        if differs is not None:
            return differs
        a, b = _args(first), _args(copy)
        differs = _arguments_differ(
            a, b, r, layout.early_place(r.value),
            lambda sa, sb, r=r: (f"the copy of {r.producer} in its loop body writes {sb} "
                                 "besides the value"),
            lambda sa, sb, r=r: (None if sa == sb else f"the copy of {r.producer} reads {sb} "
                                 f"where its first run read {sa}"))
        if differs is not None:
            return differs
        differs = _late_readers_differ(
            layout, r, {user: [thunks[k] for k, n in enumerate(names)
                               if n == user and k not in copies] for user in r.late_users})
        if differs is not None:
            return differs
    return None


def _kernel_differs(first: Any, copy: Any, producer: str, where: str = "") -> str | None:
    """Why ``copy`` is not another launch of ``first``'s kernel thunk, or None."""
    a, b = _args(first), _args(copy)
    if a is None or b is None or len(a) != len(b):
        return f"the copy of {producer}{where} is not the same kernel thunk"
    if _launch(first) != _launch(copy):
        return f"the copy of {producer} launches another kernel or another grid"
    return None


def _arguments_differ(a, b, r, early, other_write, read) -> str | None:
    """Why the copy's arguments ``b`` differ from its first run's ``a`` (both
    ``_args``), or None: the same arguments written, the value's own write at
    the plan's place; ``other_write(sa, sb)`` and ``read(sa, sb)`` judge the
    other written and the read arguments (str: why they differ)."""
    for (sa, wa), (sb, wb) in zip(a, b):
        if wa != wb:
            return f"the copy of {r.producer} writes other arguments"
        if wa and _overlaps(sa, early[0], early[1], r.size):
            differs = _value_write_differs(sa, sb, r, early)
        else:
            differs = other_write(sa, sb) if wa else read(sa, sb)
        if differs is not None:
            return differs
    return None


def _value_write_differs(sa, sb, r, early) -> str | None:
    """A copy's write ``sb`` of the value its first run wrote at ``sa`` (inside
    the value's first place ``early``) must land at the same offset inside
    the plan's place for the copy."""
    expect = (r.place[0], r.place[1] + sa[1] - early[1], sa[2])
    if sb != expect:
        return f"the copy of {r.producer} writes {sb}, not the plan's place {expect}"
    return None


def _late_readers_differ(layout, r, thunks_of: dict[str, list]) -> str | None:
    """Every late reader of ``r`` that runs (its thunks, copies left out, in
    ``thunks_of``) reads somewhere in the copy's place; an argument a
    reader also writes, in place over the copy, counts as read."""
    for user in r.late_users:
        reads = [s for t in thunks_of[user] for s in _arguments(t)]
        if thunks_of[user] and not any(
                s[0] == r.place[0] and r.place[1] <= s[1] < r.place[1] + r.size
                for s in reads):
            value = layout.graph.values[r.value]
            return (f"late reader {user} does not read the recomputed {value.key} at "
                    f"allocation {r.place[0]} +{r.place[1]}")
    return None


def _body_next(names, copies, k: int) -> int | None:
    """Index of the first thunk after ``k`` that is no copy, or None."""
    return next((j for j in range(k + 1, len(names)) if j not in copies), None)
