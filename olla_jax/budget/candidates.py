"""What may be recomputed: the candidates, and why each other value may not be."""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from typing import Collection, Sequence

from olla_jax import flops as flops_lib
from olla_jax.capture.base import Backend
from olla_jax import dumps
from olla_jax.graph.model import ScheduleGraph, callee_instructions


FLOPS_PER_S = 1e11


BYTES_PER_S = 2e10


# What a copy costs the search (``recompute_cost``): "time", a roofline
# estimate (the slower of its FLOPs at FLOPS_PER_S and its bytes at
# BYTES_PER_S), or "flops", its FLOPs with the bytes it moves breaking ties
# (BYTES_TIE of their time).  The roofline ranks a data-bound kernel by its
# bytes, so a GEMM or convolution copy looks about as cheap per byte saved as
# an elementwise or transpose copy; "flops" is for steps judged by extra
# FLOPs (XLA's rematerialization is, on compile-only GPU targets).
RECOMPUTE_COSTS = ("time", "flops")
BYTES_TIE = 1e-3


def check_cost(recompute_cost) -> str:
    """``recompute_cost`` if it is one of RECOMPUTE_COSTS, else a clear error."""
    if recompute_cost not in RECOMPUTE_COSTS:
        raise ValueError(f"recompute_cost must be one of {', '.join(map(repr, RECOMPUTE_COSTS))}, "
                         f"not {recompute_cost!r}")
    return recompute_cost


def default_cost(recompute_cost: str | None, backend) -> str:
    """``recompute_cost``, or when None the default for ``backend``: "flops"
    on GPU targets (the CPU roofline's rates rank a GEMM copy about as cheap
    per byte as an elementwise one there, and on the H100 suite "flops" met
    XLA's remat points with fewer or as many extra FLOPs at every point
    measured, ``benchmarks/results/vitremat_*.md``), "time" on CPU."""
    if recompute_cost is not None:
        return check_cost(recompute_cost)
    return "flops" if Backend.parse(backend).kind == "gpu" else "time"


def copy_cost(flops: int, moved: int, recompute_cost: str = "time") -> float:
    """What the search minimises for one copy of FLOPs ``flops`` that moves
    ``moved`` bytes, in seconds of FLOPS_PER_S / BYTES_PER_S (see RECOMPUTE_COSTS)."""
    if check_cost(recompute_cost) == "flops":
        return flops / FLOPS_PER_S + BYTES_TIE * moved / BYTES_PER_S
    return max(flops / FLOPS_PER_S, moved / BYTES_PER_S)


@dataclasses.dataclass(frozen=True)
class Candidate:
    """A value that may be recomputed, with what its producer needs."""
    value: int
    producer: int                   # node
    users: tuple[int, ...]          # nodes a copy may run before: readers and ``slots``
    operands: tuple[int, ...]       # value ids the producer reads
    flops: int
    cost_s: float                   # the search's objective (``copy_cost``)
    # Values XLA writes over this one's bytes later (in place): a copy is then
    # written where they will be, and they move with it (``late_part_ok``).
    successors: tuple[int, ...] = ()
    # Nodes of ``users`` that do not read the value: late readers of values
    # recomputed from it (``with_slots``), where a copy of it serves their copy.
    slots: tuple[int, ...] = ()
    # A library call's scratch (cuBLAS or cuDNN workspace) values: its copy
    # writes one of each size too, placed free for the copy's step alone.
    scratch: tuple[int, ...] = ()
    # Operands recomputed just before this copy, for it alone (``with_feeders``):
    # each a copy of its own producer, read by this copy and dead after it.
    feeders: tuple[int, ...] = ()
    # GPU: entry nodes that hold the value and run nothing (``_entry_bitcast``):
    # XLA's liveness keeps the first run live at each (``read_times``): a
    # bitcast when it runs before the first copy (after, it names the copy),
    # a get-tuple-element (``tuple_views``) wherever it runs.
    views: tuple[int, ...] = ()
    tuple_views: tuple[int, ...] = ()

    @property
    def readers(self) -> tuple[int, ...]:
        return tuple(u for u in self.users if u not in self.slots)


def candidates(graph: ScheduleGraph, capture, recompute_cost: str = "time", *,
               feeders: bool = True) -> list[Candidate]:
    """Values of ``graph`` whose producer can run a second time (see module
    doc), each costed by ``recompute_cost`` (``copy_cost``); on CPU, with
    ``feeders`` (``with_feeders``; False: each copy reads its operands' first runs)."""
    return screen(graph, capture, recompute_cost, feeders=feeders)[0]


def refusals(graph: ScheduleGraph, capture) -> dict[int, str]:
    """Value id -> why it may not be recomputed, for each value of ``graph``
    that ``candidates`` leaves out (in words, for reports)."""
    return named_refusals(graph, *screen(graph, capture))


def named_refusals(graph: ScheduleGraph, found: Sequence[Candidate], why: dict[int, str]) -> dict[int, str]:
    """``why`` (from ``screen``) with a reason for every other value left out."""
    why = dict(why)
    picked = {c.value for c in found}
    moved = {o for c in found for o in c.successors}
    for v in graph.values.values():
        if v.id in picked or v.id in why:
            continue
        if v.id in moved:
            why[v.id] = "written in place over a recomputable value (moves with its copy)"
        elif graph.block_length(v.def_node) != 1:
            why[v.id] = "made inside a loop or call (recomputing it reruns the loop)"
        else:
            why[v.id] = "not its producer's own result (written in place over another value)"
    return why


# What a GPU target's candidates may take besides their own (``screen``'s
# ``gpu_extra``; a diagnosis, ``benchmarks/remat_kinds.py``: neither closed a
# missed XLA point there, so neither is on by default): "feeders" (as on CPU,
# ``with_feeders``) and "parked" (values XLA parked in an output allocation's
# idle bytes, which our placement may put in the arena), and "shared_feeders"
# (feeders whose operand has readers of its own too: the copy reads a copy
# of it made for it alone, and the operand stays a candidate of its own; on
# mlp:small at H100's 96 MiB point the model reached 96 MiB at 0.64 x XLA's
# FLOPs with it, 0.86 x without, a layer's input copied for the next
# layer's copy as XLA's rematerialization copies it).  For the model's
# figures only: no test builds their copies through the GPU rewrite.
GPU_EXTRA = ("feeders", "parked", "shared_feeders")


def screen(graph: ScheduleGraph, capture, recompute_cost: str = "time", *,
           feeders: bool = True, gpu_extra: Sequence[str] = ()) -> tuple[list[Candidate], dict[int, str]]:
    """(``candidates``, value id -> reason for the values of entry
    instructions that do not qualify); on a GPU target, with the kinds of
    ``gpu_extra`` (GPU_EXTRA) too."""
    check_cost(recompute_cost)
    if any(x not in GPU_EXTRA for x in gpu_extra):
        raise ValueError(f"gpu_extra takes {', '.join(map(repr, GPU_EXTRA))}, not {list(gpu_extra)!r}")
    from olla_jax.apply import cpu_rewrite
    kinds, module = _thunk_kinds(capture)
    instructions = {i.name: i for c in module.computations for i in c.instructions}
    by_id = {i.id: i for c in module.computations for i in c.instructions}
    comps = {c.id: c for c in module.computations}
    records = dumps.parse_values(capture.values_text)
    by_key = {v.key: v for v in graph.values.values()}
    defined = defaultdict(list)
    for rec in records.values():
        defined[rec.defining_instruction].append(rec)
    reads = defaultdict(list)
    for rec in records.values():
        for use in rec.uses:
            reads[use.instruction].append(rec.key)
    unit_of = graph.unit_of_value
    gpu = Backend.parse(capture.backend).kind == "gpu"
    out, why = [], {}

    def refuse(recs, text: str) -> None:
        for r in recs:
            if r.key in by_key:
                why[by_key[r.key].id] = text
    for node, name, recs, scratch in _pieces(graph, defined, reads, kinds, by_key, instructions,
                                             gpu, refuse):
        if graph.block_length(node) != 1:
            refuse(recs, "made by a loop or call (recomputing it reruns the loop)")
            continue
        if len(recs) != 1:
            refuse(recs, f"its producer has {len(recs)} results")
            continue
        if kinds.get(name, []) not in ([k] for k in (*cpu_rewrite.CLONABLE_KINDS,
                                                     *(("library",) if gpu else ()))):
            refuse(recs, f"its producer runs {thunk_kinds_text(kinds.get(name, []))}, "
                         "not one kernel")
            continue
        rec = recs[0]
        value = by_key.get(rec.key)
        if value is None or value.live_in or value.live_out:
            continue
        unit = graph.units[unit_of[value.id]]
        if not placed_by_plan(graph, unit, value):
            refuse(recs, "fixed in memory")
            continue
        successors = tuple(o for o in unit.values if o != value.id)
        if successors and not _in_place_after(graph, unit, value, successors):
            loop = any(graph.block_length(graph.values[o].def_node) != 1 for o in successors)
            refuse(recs, "shares bytes with a loop's or call's results" if loop
                   else "shares bytes with values that cannot move with a copy")
            continue
        held = [p.instruction for p in rec.positions]
        users = {u.instruction for u in rec.uses}

        def plain(u: str) -> bool:
            return u in graph.node_index and kinds.get(u, ["none"]) != ["nested"] and \
                len(kinds.get(u, ())) <= 1 and graph.block_length(graph.node_index[u]) == 1
        loops = None if gpu or successors else \
            loop_reads(graph, instructions, comps, rec, plain)
        if loops is not None:
            users = {u for u in users if plain(u)} | set(loops)
        elif held[:1] != [name] or any(not (gpu and _entry_bitcast(graph, instructions, kinds, x))
                                       for x in held[1:]):
            refuse(recs, "held by other instructions too (a tuple or alias)")
            continue
        elif not users or not all(plain(u) for u in users):
            refuse(recs, "read inside a loop or call" if users else "never read")
            continue
        operands = tuple(by_key[k].id for k in reads.get(name, ()) if k in by_key)
        instr = instructions[name]
        flops = flops_lib.instruction_flops(instr, by_id, comps, tuple(getattr(module, "payloads", ())))
        moved = value.size + sum(graph.values[o].size for o in operands)
        if kinds.get(name) == ["kernel"]:   # a multi-result fusion's other results: written too
            moved += sum(graph.values[o].size for o in scratch)
        cost = copy_cost(flops, moved, recompute_cost)
        # (the held[1:] of a value read by a loop on CPU are the loop's domain, no views)
        views = [graph.node_index[x] for x in held[1:] if loops is None and gpu and
                 _entry_bitcast(graph, instructions, kinds, x)]
        gtes = tuple(n for n in views if instructions[graph.nodes[n]].opcode == "get-tuple-element")
        out.append(Candidate(value.id, node, tuple(graph.node_index[u] for u in users),
                             operands, flops, cost, successors, scratch=scratch,
                             views=tuple(n for n in views if n not in gtes), tuple_views=gtes))
    # Slots on GPU targets only, where they were built and measured (mlp_mixer, full-size
    # GPT-2 on H100): on CPU the readers' indices of a value are what its copies split on.
    # Values parked in an output allocation serve as feeders, and are
    # candidates of their own only when fed: all of them would add many small
    # values (gpt2: 192 -> 909) for little (an output's idle bytes cost the arena nothing).
    parked = {c.value for c in out if graph.values[c.value].allocation != graph.temp_allocation}
    if gpu:
        if "feeders" in gpu_extra or "shared_feeders" in gpu_extra:
            out = with_feeders(graph, out, recompute_cost, shared="shared_feeders" in gpu_extra)
        if "parked" not in gpu_extra:
            out = [c for c in out if c.value not in parked or c.feeders]
        left = parked - {c.value for c in out}
        return with_sibling_slots(with_slots(out)), {**why, **{v: _PARKED for v in left}}
    fed = with_feeders(graph, out, recompute_cost) if feeders else out
    kept = [c for c in fed if c.value not in parked or c.feeders]
    left = parked - {c.value for c in kept}
    return kept, {**why, **{v: _PARKED for v in left}}


def check_producers(producers: Collection[str] | None) -> None:
    """``producers`` is None or a collection of instruction names: a single
    name given as a string would be read as its letters."""
    if isinstance(producers, str):
        raise ValueError(f"producers takes a collection of instruction names, not the "
                         f"string {producers!r}")


def of_producers(graph: ScheduleGraph, cands: Sequence[Candidate],
                 producers: Collection[str]) -> list[Candidate]:
    """Those of ``cands`` whose producer instruction is named in ``producers``
    (the instructions XLA's rematerialization cloned, ``olla_jax.xla_seed``: a
    search over these alone finds XLA's cheap copies, which a search over every
    candidate may not reach in its time)."""
    check_producers(producers)
    names = set(producers)
    return [c for c in cands if graph.nodes[c.producer] in names]


_PARKED = "parked in an output allocation (recomputed only as a copy's feeder)"


def placed_by_plan(graph: ScheduleGraph, unit, value) -> bool:
    """Whether the plan places ``value``'s unit: a movable one in the temp
    allocation, or one XLA parked in an output allocation's idle bytes (the
    planner moves those too, ``graph.model``): its first run's place is the
    plan's either way, and its copy goes where the placement puts it."""
    return unit.movable and (value.allocation == graph.temp_allocation or
                             graph.allocations[value.allocation].kind == "output")


# How far down a chain of candidates the readers of a dependent become slots.
SLOT_DEPTH = 2


def with_slots(cands: Sequence[Candidate], depth: int = SLOT_DEPTH) -> list[Candidate]:
    """``cands`` with ``slots``: a value read by another candidate may also be
    recomputed just before that one's readers (``depth`` links down the chain),
    where the dependent's copy then reads its copy (a chain).  Without them a
    copy runs only before the value's own readers, so a value whose readers
    all come before a dependent's late readers (a hidden layer's
    pre-activation, read by its activation and then, late, by the
    activation's gradient) stays live for the dependent's copy however late
    that runs."""
    by_value = {c.value: c for c in cands}
    readers_of = {c.value: set(c.users) for c in cands}
    dependents = defaultdict(set)
    for c in cands:
        for o in c.operands:
            if o in by_value and o != c.value:
                dependents[o].add(c.value)
    out = []
    for c in cands:
        extra, frontier, seen = set(), {c.value}, {c.value}
        for _ in range(depth):
            frontier = {d for v in frontier for d in dependents[v]} - seen
            seen |= frontier
            for d in frontier:
                extra |= readers_of[d]
        extra -= readers_of[c.value]
        extra.discard(c.producer)
        out.append(dataclasses.replace(c, users=c.users + tuple(sorted(extra)),
                                       slots=tuple(sorted(extra))) if extra else c)
    return out


def with_sibling_slots(cands: Sequence[Candidate]) -> list[Candidate]:
    """``cands`` where a result of a multi-result fusion (GPU, ``_pieces``)
    may also be recomputed just before the readers of the fusion's other
    results that are candidates too (slots): copies of several results run
    before one instruction are one launch of the fusion, which writes each
    at its copy's place (``recompute_plan.State.merged_with``) instead of
    the others at a scratch place.  Without them the copies of two results
    read at different steps (a max-pool's zeros and its select-and-scatter's)
    run apart and each writes the other at a scratch place of its size."""
    by_value = {c.value: c for c in cands}
    out = []
    for c in cands:
        siblings = [by_value[v] for v in c.scratch
                    if v in by_value and by_value[v].producer == c.producer]
        extra = sorted({u for d in siblings for u in d.readers} - set(c.users) - {c.producer})
        out.append(dataclasses.replace(c, users=c.users + tuple(extra),
                                       slots=tuple(sorted({*c.slots, *extra})))
                   if extra else c)
    return out


def with_feeders(graph: ScheduleGraph, cands: Sequence[Candidate],
                 recompute_cost: str = "time", *, shared: bool = False) -> list[Candidate]:
    """``cands`` where a copy reads, instead of an operand kept live for it,
    that operand's own copy made just before (a *feeder*): an operand that is
    a candidate read by this copy's producer alone, with no value written over
    it in place, whose own operands are inputs that stay intact for the whole
    step (parameters that are not donated, constants).  The feeder's copy
    then lives only while the copy runs, where the operand would otherwise
    be kept from its first run to the copy (e.g. a layer's input gathered from
    an embedding table, read by a forward loop and, much later, the backward
    loop).  The copy's cost and FLOPs include the feeder's.  With ``shared``
    the operand may have other readers too (it stays a candidate of its own)."""
    by_value = {c.value: c for c in cands}

    def intact_input(v: int) -> bool:
        value = graph.values[v]
        alloc = graph.allocations[value.allocation]
        return not graph.units[graph.unit_of_value[v]].movable and \
            alloc.kind in ("parameter", "constant") and not alloc.live_out
    out = []
    for c in cands:
        feeders = [by_value[o] for o in c.operands
                   if o in by_value and o != c.value and not by_value[o].feeders and
                   not by_value[o].successors and not by_value[o].scratch and
                   (shared or by_value[o].users == (c.producer,)) and
                   all(intact_input(x) for x in by_value[o].operands)]
        if not feeders:
            out.append(c)
            continue
        fed = {f.value for f in feeders}
        operands = tuple(dict.fromkeys(
            [o for o in c.operands if o not in fed] + [x for f in feeders for x in f.operands]))
        flops = c.flops + sum(f.flops for f in feeders)
        moved = graph.values[c.value].size + sum(graph.values[o].size for o in operands) + \
            sum(2 * graph.values[f.value].size for f in feeders)
        out.append(dataclasses.replace(c, operands=operands, flops=flops,
                                       cost_s=copy_cost(flops, moved, recompute_cost),
                                       feeders=tuple(sorted(fed))))
    return out


def loop_reads(graph: ScheduleGraph, instructions, comps, rec, plain) -> list[str] | None:
    """The entry while loops that read ``rec`` through their carried tuple,
    when every other place that holds or reads it is one of them: the
    producer itself, the entry tuple that is a loop's operand (read by that
    loop alone; it runs no thunk on CPU), the loop and its body and condition
    (the value is one XLA value there, so the body passes it through
    unchanged: it reads it and never writes it), or a ``plain`` entry reader.
    None otherwise (a loop that writes the element, or a loop result read
    after the loop, holds a value of its own).  A copy made just before such a
    loop is what its body then reads (the rewrite re-points the body's slices)."""
    name = rec.defining_instruction
    loops = sorted(u.instruction for u in rec.uses
                   if u.instruction in graph.node_index and
                   instructions[u.instruction].opcode == "while")
    if not loops or not rec.positions or rec.positions[0].instruction != name:
        return None
    readers = defaultdict(set)      # entry instruction -> entry instructions reading it
    for n in graph.nodes:
        for o in instructions[n].operand_ids:
            readers[o].add(n)
    domain = set(loops)
    for w in loops:
        instr = instructions[w]
        domain |= callee_instructions(instr, comps)
        carried = [x for x in instructions.values() if x.id == instr.operand_ids[0]]
        if carried and carried[0].opcode == "tuple" and readers[carried[0].id] == {w}:
            domain.add(carried[0].name)
    if any(p.instruction not in domain for p in rec.positions[1:]):
        return None
    if any(u.instruction not in domain and not plain(u.instruction) for u in rec.uses):
        return None
    return loops


def _pieces(graph: ScheduleGraph, defined, reads, kinds, by_key, instructions, gpu: bool, refuse):
    """(node, name, records a copy of it recomputes, scratch value ids) per
    entry node; a GPU multi-result fusion (one kernel) gives one piece per
    result (``_fusion_results``), the others its copy's scratch."""
    for node, name in enumerate(graph.nodes):
        recs = defined.get(name, [])
        if gpu and kinds.get(name) == ["library"]:
            yield (node, name, *_library_results(recs, by_key))
        elif gpu and kinds.get(name) == ["kernel"] and len(recs) > 1 and \
                instructions[name].opcode == "fusion":
            operands = [by_key[k].id for k in reads.get(name, ()) if k in by_key]
            pieces, why = _fusion_results(graph, recs, by_key, operands)
            if why:
                refuse(recs, why)
            for rec, scratch in pieces:
                yield node, name, [rec], scratch
        else:
            yield node, name, recs, ()


def _fusion_results(graph: ScheduleGraph, recs, by_key, operands) -> tuple[list, str]:
    """A multi-result fusion's records as ([(result, the other results' value
    ids)] per result read by others, or [] and why none qualifies).  Its
    kernel writes every result: a copy writes the others at a scratch place
    of their own (free for the copy's step alone), so each must be a tracked
    value none of the fusion's ``operands`` shares bytes with (an in-place
    result would have the copy read what its first run wrote).  Its tuple
    table (shape index ()), read by get-tuple-elements only, is not written."""
    results = [r for r in recs if r.positions and r.positions[0].index != ()]
    if any(r.key not in by_key for r in results):
        return [], "a result of its fusion is not tracked"
    ids = [by_key[r.key].id for r in results]
    units = {graph.unit_of_value[v] for v in ids}
    if any(graph.unit_of_value[o] in units for o in operands if o not in ids):
        return [], "a result of its fusion shares bytes with an operand (in place)"
    out = [(r, tuple(v for v in ids if v != by_key[r.key].id and graph.values[v].size > 0))
           for r in results if r.uses]
    return out, ""


def _library_results(recs, by_key) -> tuple[list, tuple[int, ...]]:
    """A library call's records split: (those a copy must write again: its
    results, read by others; value ids of its scratch with bytes: read by
    nobody).  Its tuple table (shape index ()), read by its
    get-tuple-elements only, is neither: the call does not write it."""
    results, scratch = [], []
    for r in recs:
        index = r.positions[0].index if r.positions else ()
        if index == ():
            continue
        if r.uses:
            results.append(r)
        elif r.key in by_key and by_key[r.key].size > 0:
            scratch.append(by_key[r.key].id)
    return results, tuple(scratch)


def _entry_bitcast(graph: ScheduleGraph, instructions, kinds, name: str) -> bool:
    """Whether ``name`` is an entry bitcast (or a get-tuple-element of a
    library call's result tuple) that runs no thunk: XLA:GPU holds a fusion's
    result at the bitcasts of it too (the same bytes, viewed), and their
    readers are the value's own, so a copy serves them as well."""
    return name in graph.node_index and \
        instructions[name].opcode in ("bitcast", "get-tuple-element") and \
        not kinds.get(name) and graph.block_length(graph.node_index[name]) == 1


def _in_place_after(graph: ScheduleGraph, unit, value, successors) -> bool:
    """Whether the other values of ``value``'s unit can move with its copy:
    all of them on its very bytes, each defined by another plain entry
    instruction (one thunk), none an input or output.  Which of them come
    after the value (not before it) depends on the order (``late_part_ok``)."""
    if unit.size != value.size or any(unit.member_offsets):
        return False
    for o in successors:
        other = graph.values[o]
        if other.live_in or other.live_out or other.def_node == value.def_node or \
                graph.block_length(other.def_node) != 1 or other.size > value.size:
            return False
    return True


def _thunk_kinds(capture):
    """(entry instruction -> kinds of its thunks, HLO module) of ``capture``'s
    executable; "nested" for a thunk holding others.  On GPU a kernel thunk
    that ``gpu_rewrite.clone_refusal`` lets be copied reads "kernel" (one of
    cpu_rewrite.CLONABLE_KINDS), any other keeps its own kind."""
    from olla_jax.apply import cpu_rewrite, executable
    if Backend.parse(capture.backend).kind == "gpu":
        from olla_jax.apply import gpu_executable, gpu_rewrite
        return gpu_rewrite.entry_thunk_kinds(gpu_executable.decode(capture.executable))
    decoded = executable.decode(capture.executable)
    instructions = {i.name: i for c in decoded.hlo_module.computations for i in c.instructions}
    kinds = defaultdict(list)
    for thunk in decoded.thunk_sequence.thunks:
        name = cpu_rewrite.thunk_instruction(thunk, instructions)
        nested = any(True for _ in cpu_rewrite._nested_sequences(thunk))
        kinds[name].append("nested" if nested else thunk.kind)
    return kinds, decoded.hlo_module


def thunk_kinds_text(kinds: Sequence[str]) -> str:
    """The thunk kinds an instruction runs, for a reason: ``'a device_to_device_copy
    thunk'``, ``'no thunk'`` (the read-back's kinds end in ``_thunk`` or not)."""
    names = "/".join(k.removesuffix("_thunk") for k in kinds)
    return f"a {names} thunk" if names else "no thunk"


def op_names(capture, names) -> dict[str, str]:
    """Entry instruction name -> its op_name (the jax source path, e.g.
    ``jit(step)/jit(_bernoulli)/jit(_uniform)/while``) for ``names`` in
    ``capture``'s executable: for reports naming a loop."""
    module = _thunk_kinds(capture)[1]
    wanted = set(names)
    return {i.name: i.metadata.op_name for c in module.computations for i in c.instructions
            if i.name in wanted}
