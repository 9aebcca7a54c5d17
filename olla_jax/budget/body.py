"""Recomputation inside a while loop's body (CPU, and GPU executables).

A scan's or fori_loop's body keeps XLA's inner order (``graph.model``), so a
value made in the body and read twice in the same iteration (a micro-batch's
input slice read by the forward pass and again by the weight gradient) is
held across the body's peak.  A copy of its producer's kernel thunk can run
again inside the body, just before a later reader of the same iteration:
the body's thunk sequence gets the copy, every iteration runs it, and the
first run's bytes are free in between.  A value qualifies (``candidates``)
when its producer is one clonable kernel thunk of the body with one plain
result nothing else shares bytes with, read only by plain body instructions,
and a split (a later reader to run the copy before) leaves every operand
intact: no value XLA writes over an operand's bytes (a loop counter bumped in
place, say) is written between the producer's run and the copy, on XLA's
inner order, which every iteration follows.  Operands are kept live until
the copy (counted, like an entry copy's).  The same on a GPU executable,
whose while thunks hold a body thunk sequence too: a kernel launch
(``gpu_rewrite.clone_refusal``) qualifies, a library call (which needs a
scratch place of its own) does not.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from typing import Sequence

import numpy as np

from olla_jax import dumps
from olla_jax import flops as flops_lib
from olla_jax.budget.candidates import copy_cost, placed_by_plan
from olla_jax.graph.model import ScheduleGraph


@dataclasses.dataclass(frozen=True)
class BodyCandidate:
    """A body value that may be recomputed later in the same iteration."""
    value: int
    loop: int                       # entry node of the while loop
    producer: str                   # body instruction (one kernel thunk)
    readers: tuple[str, ...]        # body instructions reading it, in XLA's inner order
    steps: tuple[int, ...]          # XLA flat steps of the producer, then of each reader
    operands: tuple[int, ...]       # value ids the producer reads
    splits: tuple[int, ...]         # k: a copy before readers[k] finds its operands intact
    flops: int
    cost_s: float


def candidates(graph: ScheduleGraph, capture, recompute_cost: str = "time") -> list[BodyCandidate]:
    """The values of ``graph``'s while bodies that may be recomputed in the
    body (see module doc)."""
    if capture is None or capture.executable is None or \
            all(graph.block_length(n) == 1 for n in range(len(graph.nodes))):
        return []
    module = dumps.parse_hlo_proto(capture.hlo_proto).hlo_module
    comps = {c.id: c for c in module.computations}
    instructions = {i.name: i for c in module.computations for i in c.instructions}
    by_id = {i.id: i for c in module.computations for i in c.instructions}
    kinds = body_thunk_kinds(capture, instructions)
    records = dumps.parse_values(capture.values_text)
    by_key = {v.key: v for v in graph.values.values()}
    flat_step = {name: k for k, name in enumerate(graph.flat)}
    defined, reads = defaultdict(list), defaultdict(list)
    for rec in records.values():
        defined[rec.defining_instruction].append(rec)
        for use in rec.uses:
            reads[use.instruction].append(rec.key)
    payloads = tuple(getattr(module, "payloads", ()))
    out = []
    for node, name in enumerate(graph.nodes):
        loop = instructions[name]
        if loop.opcode != "while" or len(loop.called_computation_ids) != 2:
            continue
        body = comps[loop.called_computation_ids[0]]
        names = {i.name for i in body.instructions}
        views = {i.name for i in body.instructions if i.opcode == "bitcast" and i.name not in kinds}
        for instr in body.instructions:
            c = _candidate(graph, node, instr, names, views, kinds, defined, reads, by_key,
                           flat_step)
            if c is None:
                continue
            flops = flops_lib.instruction_flops(instr, by_id, comps, payloads)
            moved = graph.values[c.value].size + sum(graph.values[o].size for o in c.operands)
            out.append(dataclasses.replace(c, flops=flops,
                                           cost_s=copy_cost(flops, moved, recompute_cost)))
    return out


def _candidate(graph, node, instr, body_names, views, kinds, defined, reads, by_key,
               flat_step):
    """``instr``'s BodyCandidate (flops and cost left 0), or None.  ``views``:
    the body's bitcasts that run no thunk (XLA:GPU holds a value at a bitcast
    of it, which a GEMM fusion reads): positions of the value besides its
    producer, and readers of it (what reads them reads the value's bytes, the
    copy's where they come after it; a copy before one runs before the next
    thunk of the body)."""
    name = instr.name
    if kinds.get(name) != ["kernel"]:
        return None
    recs = defined.get(name, [])
    if len(recs) != 1 or recs[0].key not in by_key:
        return None
    rec, value = recs[0], by_key[recs[0].key]
    unit = graph.units[graph.unit_of_value[value.id]]
    if value.live_in or value.live_out or unit.values != (value.id,) or \
            not placed_by_plan(graph, unit, value) or \
            [p.instruction for p in rec.positions if p.instruction not in views] != [name]:
        return None
    readers = sorted({u.instruction for u in rec.uses}, key=lambda u: flat_step.get(u, -1))
    if len(readers) < 2 or any(u not in body_names or u not in views and (
            len(kinds.get(u, ())) != 1 or kinds[u] == ["nested"]) for u in readers):
        return None
    operands = tuple(dict.fromkeys(by_key[k].id for k in reads.get(name, ()) if k in by_key))
    if len(operands) != len(set(reads.get(name, ()))):
        return None     # an operand the graph does not track (a thread-local value)
    steps = (flat_step[name], *(flat_step[u] for u in readers))
    splits = tuple(k for k in range(1, len(readers))
                   if steps[k + 1] > steps[k] + 1 and
                   all(_intact(graph, o, steps[0], steps[k + 1]) for o in operands))
    if not splits:
        return None
    return BodyCandidate(value.id, node, name, tuple(readers), steps, operands, splits, 0, 0.0)


def _intact(graph: ScheduleGraph, operand: int, made: int, copy: int) -> bool:
    """Whether ``operand``'s bytes hold it from XLA flat step ``made`` (the
    producer's run) until ``copy`` (just before that step): no other value of
    its unit is written in between, and a fixed one is live (or an input that
    stays) then."""
    unit = graph.units[graph.unit_of_value[operand]]
    for other in unit.values:
        if other != operand and made < graph.values[other].xla_range[0] <= copy:
            return False
    if unit.movable:
        return True
    v, alloc = graph.values[operand], graph.allocations[unit.allocation]
    if alloc.kind in ("parameter", "constant") and not alloc.live_out:
        return True
    return v.xla_range[0] <= made and copy <= v.xla_range[1]


def body_thunk_kinds(capture, instructions) -> dict[str, list[str]]:
    """Body instruction -> kinds of its thunks in a while thunk's body
    sequence, over every entry while: "kernel" for one the backend's rewrite
    may copy there, "nested" for one holding sequences, else its own kind."""
    from olla_jax.capture.base import Backend
    if Backend.parse(capture.backend).kind == "gpu":
        from olla_jax.apply import gpu_executable, gpu_rewrite
        return gpu_rewrite.body_thunk_kinds(gpu_executable.decode(capture.executable))
    from olla_jax.apply import cpu_rewrite, executable
    decoded = executable.decode(capture.executable)
    kinds = defaultdict(list)
    for thunk in decoded.thunk_sequence.thunks:
        if thunk.kind != "while":
            continue
        body = thunk.while_thunk.body_sequence
        for inner in body.thunks:
            name = cpu_rewrite.thunk_instruction(inner, instructions)
            nested = any(True for _ in cpu_rewrite._nested_sequences(inner))
            kinds[name].append("nested" if nested else
                               "kernel" if inner.kind in cpu_rewrite.CLONABLE_KINDS else inner.kind)
    return kinds


# ---- on an order: the copies' times and the plan's state --------------------

def times(graph: ScheduleGraph, order: Sequence[int], c: BodyCandidate, k: int
          ) -> tuple[int, int]:
    """(doubled time the first run lives until, doubled time of the copy) of
    ``c`` split before ``readers[k]`` under ``order`` (the State's axis: flat
    step t -> 2t + 1, a copy just before it at 2t)."""
    shift = _flat_layout(graph, order)[c.loop] - graph.block_start[c.loop]
    return 2 * (c.steps[k] + shift) + 1, 2 * (c.steps[k + 1] + shift)


_LAST_LAYOUT: list = [None, (), None]     # graph, order, its flat layout


def _flat_layout(graph: ScheduleGraph, order: Sequence[int]):
    """``graph.flat_layout(order)``, the last one kept: the greedies ask for
    it per candidate and split, on one order."""
    order = tuple(order)
    if _LAST_LAYOUT[0] is not graph or _LAST_LAYOUT[1] != order:
        _LAST_LAYOUT[:] = [graph, order, graph.flat_layout(order)]
    return _LAST_LAYOUT[2]


def add(graph: ScheduleGraph, order: Sequence[int], state, c: BodyCandidate, k: int) -> bool:
    """Record ``c``'s copy before ``readers[k]`` in ``state`` (a
    ``recompute_plan.State``): its first run cut after the reader before,
    the copy live from just before ``readers[k]`` to the value's end, the
    operands kept live until the copy.  False (nothing changed) when a unit
    involved has several spans (its intervals keep one offset)."""
    unit_of = graph.unit_of_value
    units = [unit_of[c.value], *(unit_of[o] for o in c.operands
                                 if graph.units[unit_of[o]].movable)]
    if any(u not in state.interval_of_unit for u in units):
        return False
    early_end, clone_t = times(graph, order, c, k)
    iv = state.intervals[state.interval_of_unit[units[0]]]
    state.body.append((c, k, [iv[0], clone_t, iv[2]]))
    iv[2] = early_end
    for u in units[1:]:
        ov = state.intervals[state.interval_of_unit[u]]
        ov[2] = max(ov[2], clone_t)
    return True


def choose(graph: ScheduleGraph, order: Sequence[int], state, cands: Sequence[BodyCandidate],
           target_temp: int) -> int:
    """Greedy copies inside loop bodies, added to ``state`` while the live
    bytes peak inside a body above ``target_temp``: at the peak, the value
    idle across it that saves the most bytes (its size less operands kept
    live there for it) per unit of cost, until the live bytes (in the arena
    or in idle output space: a placement may need fewer copies) are at most
    ``target_temp``.  Returns how many were added."""
    horizon = 2 * len(graph.flat) + 2
    unit_of = graph.unit_of_value
    done, added = set(), 0
    while True:
        prof = state.profile(horizon)
        peak = int(np.argmax(prof))
        if prof[peak] <= target_temp:
            return added
        best = None
        for c in cands:
            if c.value in done or unit_of[c.value] not in state.interval_of_unit or \
                    any(o in done for o in c.operands):
                continue
            iv = state.intervals[state.interval_of_unit[unit_of[c.value]]]
            for k in reversed(c.splits):
                early_end, clone_t = times(graph, order, c, k)
                if not (early_end < peak < clone_t and iv[1] <= peak <= iv[2]):
                    continue
                kept = 0
                for o in c.operands:
                    u = unit_of[o]
                    if graph.units[u].movable and u in state.interval_of_unit:
                        s, a, b = state.intervals[state.interval_of_unit[u]]
                        kept += s if b < peak else 0
                saved = graph.values[c.value].size - kept
                if saved > 0 and (best is None or saved / (c.cost_s + 1e-9) > best[0]):
                    best = (saved / (c.cost_s + 1e-9), c, k)
                break
        if best is None or not add(graph, order, state, best[1], best[2]):
            return added
        done.add(best[1].value)
        done.update(best[1].operands)
        added += 1


def relaxed(graph: ScheduleGraph, cands: Sequence[BodyCandidate]) -> ScheduleGraph:
    """``graph`` where each candidate's value is live only at the steps that
    write or read it (its producer's, then one unit of its size per reader),
    not in between: some copy of it is live there in any plan that
    recomputes it in the body, so bounds taken on this graph
    (``floors.working_set_bound``, ``floors.recompute_floor``) hold for
    those plans too (its operands kept live for a copy only add bytes)."""
    if not cands:
        return graph
    values, units = dict(graph.values), list(graph.units)
    next_id = max(values) + 1
    for c in cands:
        v = values[c.value]
        unit = units[graph.unit_of_value[c.value]]
        values[c.value] = dataclasses.replace(v, xla_range=(c.steps[0], c.steps[0]))
        for s in c.steps[1:]:
            values[next_id] = dataclasses.replace(v, id=next_id, key=f"{v.key}@{s}",
                                                  xla_range=(s, s))
            units.append(dataclasses.replace(unit, id=len(units), values=(next_id,)))
            next_id += 1
    return dataclasses.replace(graph, values=values, units=tuple(units))
