"""The independent checker: is a plan safe to run?

It shares no code with the model or the solvers.  From XLA's own dumps it
re-derives, its own way, the flattened schedule a new entry order implies,
every value's live interval on it, and which values XLA compiled to share
bytes (in-place pairs and control-flow aliases).  Then it checks the plan:
a topological order, no two values live at once on overlapping bytes unless
XLA compiled them to share (and those take turns: nothing reads one once the
next is written over it), shared values kept together, fixed values where
XLA put them, alignment, and every value inside its allocation.

What the executable owns is never a destination, whatever its occupants'
lifetimes: a constant allocation (its bytes are initialised once, when the
executable loads, so a write corrupts every later call), a tuple table (the
runtime writes its index table; on XLA:GPU only where a thunk of the
executable touches one, as the caller finds and says), a thread-local
allocation (no real buffer: kernels keep those values on their own stacks)
and an entry parameter that is not donated (the caller's bytes).  Only
allocations that are neither these nor possibly live out may change size.  Every byte of a destination is checked
against every occupant for its whole life: constants are live for the whole
program, and a logical buffer the values dump does not describe is too.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from typing import Collection, Mapping, Sequence

from olla_jax import dumps
from olla_jax.errors import OllaJaxError


class PlanRejected(OllaJaxError, ValueError):
    """The plan is unsafe; the message names the first violation found."""


@dataclasses.dataclass(frozen=True)
class RecomputeClaim:
    """The plan runs ``producer`` a second time just before ``before``, writing
    value ``value`` again at ``place``; ``late_users`` read that copy.  A value
    may have several claims (copies): each copy's readers are its own, later
    than its run, and the copies' groups follow one another in the order
    (every reader after the first copy reads exactly one copy)."""
    value: int
    producer: str
    before: str
    late_users: tuple[str, ...]
    place: tuple[int, int]
    # A collective run again (re-gathering): ``producer`` is an all-gather's
    # start, copied to run just before ``before``; its done, copied too, runs
    # just before ``done_before`` (at or before the first late reader).
    done_before: str = ""
    # A library call (cuBLAS, cuDNN custom-call) run again: its scratch values
    # (written by the call, read by nothing), each with the (allocation,
    # offset) the copy's scratch takes; it must be free at the copy's step.
    scratch: tuple[tuple[int, tuple[int, int]], ...] = ()


@dataclasses.dataclass(frozen=True)
class CandidatePlan:
    order: tuple[str, ...]                          # entry instructions by name
    places: Mapping[int, tuple[int, int]]           # value id -> (allocation, offset)
    allocation_sizes: Mapping[int, int]             # allocation index -> size
    recomputes: tuple[RecomputeClaim, ...] = ()


@dataclasses.dataclass(frozen=True)
class CheckReport:
    values_checked: int
    pairs_checked: int
    peak_bytes: Mapping[int, int]                   # allocation -> live-bytes peak under the plan


def check_plan(hlo_proto: bytes, values_text: str, live_range_text: str, plan: CandidatePlan,
               alignment: int = 64, unheld_tuple_flags: Collection[int] = ()) -> CheckReport:
    """Raise PlanRejected unless ``plan`` is safe; return what was checked.

    ``unheld_tuple_flags``: allocations XLA flags as tuple tables whose tables
    the executable's code never touches (XLA:GPU; found from the executable,
    ``olla_jax.apply.tuple_tables``): judged as plain temp allocations.  Every
    other flag is honoured (XLA:CPU's runtime writes its tuple tables)."""
    proto = dumps.parse_hlo_proto(hlo_proto)
    records = dumps.parse_values(values_text)
    xla = dumps.parse_live_ranges(live_range_text)
    module = proto.hlo_module
    comps = {c.id: c for c in module.computations}
    entry = comps[module.entry_computation_id]
    instr_by_id = {i.id: i for c in module.computations for i in c.instructions}
    instr_by_name = {i.name: i for c in module.computations for i in c.instructions}
    comp_by_instr = {i.name: c.id for c in module.computations for i in c.instructions}

    # 1. The order: a permutation of the entry instructions, operands first.
    entry_names = [i.name for i in entry.instructions]
    if sorted(plan.order) != sorted(entry_names):
        raise PlanRejected("the order is not a permutation of the entry computation's instructions")
    step_of = {name: k for k, name in enumerate(plan.order)}
    for instr in entry.instructions:
        for pred in list(instr.operand_ids) + list(instr.control_predecessor_ids):
            p = instr_by_id[pred].name
            if step_of[p] >= step_of[instr.name]:
                raise PlanRejected(f"{instr.name} is scheduled before its predecessor {p}")

    # 2. The new flattened schedule: each entry instruction preceded by the
    # nested instructions XLA ran for it, in XLA's own inner order.
    entry_set = set(entry_names)
    inner_before: dict[str, list[str]] = defaultdict(list)
    pending: list[str] = []
    for name in xla.sequence:
        if name in entry_set:
            inner_before[name] = pending
            pending = []
        else:
            pending.append(name)
    if pending:
        raise PlanRejected("XLA's flattened schedule ends inside a nested computation")
    claims_before = defaultdict(list)
    for claim in plan.recomputes:
        if claim.producer not in entry_set:     # a copy inside a while loop's body
            _check_body_claim(claim, records, instr_by_name, instr_by_id, comp_by_instr, comps,
                              entry)
            claims_before[claim.before].append(claim)
            continue
        for name in (claim.producer, claim.before, *claim.late_users,
                     *((claim.done_before,) if claim.done_before else ())):
            if name not in entry_set:
                raise PlanRejected(f"recomputation of {claim.producer} names {name}, which is not "
                                   "an entry instruction")
        if (inner_before[claim.before] and not (instr_by_name[claim.before].opcode == "while" and
                                                (claim.before in claim.late_users or
                                                 _feeds_loop_copy(claim, plan.recomputes)))) or \
                (claim.done_before and inner_before[claim.done_before]):
            raise PlanRejected(f"recomputation before {claim.before}: it runs a nested computation")
        if claim.value not in records or records[claim.value].defining_instruction != claim.producer:
            raise PlanRejected(f"recomputation of {claim.producer}: value {claim.value} is not "
                               "what it defines")
        claims_before[claim.before].append(claim)
    copies_of: dict[int, list[int]] = defaultdict(list)    # value -> its claims' indices
    for j, claim in enumerate(plan.recomputes):
        copies_of[claim.value].append(j)
    for v, js in copies_of.items():
        if len(js) > 1 and any(plan.recomputes[j].done_before for j in js):
            raise PlanRejected(f"value {v} is re-gathered (a collective run again) more than once")
    claim_index = {id(c): j for j, c in enumerate(plan.recomputes)}
    claim_step: dict[int, int] = {}     # claim index -> step of its copy's run
    flat: dict[str, int] = {}
    t = 0
    launch_of: dict[int, int] = {}      # claim index -> first claim of its launch
    for name in plan.order:
        for claim in claims_before[name]:
            j = claim_index[id(claim)]
            # copies of other results of one multi-result fusion before one
            # instruction are one launch: one step, writing each result
            first = next((claim_index[id(c)] for c in claims_before[name] if c is not claim and
                          claim_index[id(c)] in claim_step and c.producer == claim.producer and
                          c.value != claim.value and not c.done_before and
                          _multi_result_fusion(instr_by_name[claim.producer])), None)
            if first is not None and not claim.done_before:
                claim_step[j], launch_of[j] = claim_step[first], launch_of[first]
                continue
            claim_step[j], launch_of[j] = t, j
            t += 1
        for inner in inner_before[name]:
            for claim in claims_before[inner]:      # a copy in a loop body: every iteration
                claim_step[claim_index[id(claim)]] = t
                t += 1
            flat[inner] = t
            t += 1
        flat[name] = t
        t += 1
    horizon = t
    root = instr_by_id[entry.root_id].name
    for js in copies_of.values():
        js.sort(key=lambda j: claim_step[j])
    # a value's first copy: readers from there on read a copy, not the first run's
    clone_step = {v: claim_step[js[0]] for v, js in copies_of.items()}

    # Where each control-flow instruction's block starts: the first step of the
    # computations it calls (flattened just before it), at any nesting depth.
    comp_steps: dict[int, list[int]] = defaultdict(list)
    for name, step in flat.items():
        comp_steps[comp_by_instr[name]].append(step)

    def block_start(instr) -> int | None:
        steps = [s for cid in _callees(instr, comps) for s in comp_steps.get(cid, [])]
        return min(steps) if steps else None

    reads_at = {}
    for instr in instr_by_name.values():
        if instr.name in flat and instr.opcode in ("while", "conditional", "call"):
            start = block_start(instr)
            if start is not None:
                reads_at[instr.name] = start

    # 3. Live intervals, derived from definitions, positions and uses.
    placements = {}
    allocations = [_without_tuple_flag(a) if a.index in unheld_tuple_flags else a
                   for a in proto.buffer_assignment.buffer_allocations]
    allocs_by_index = {x.index: x for x in allocations}
    for a in allocations:
        for assigned in a.assigned:
            placements[assigned.logical_buffer_id] = (a.index, assigned.offset, assigned.size, a)
    _check_sizes(plan, allocs_by_index)
    for v in plan.places:
        if v not in placements:
            raise PlanRejected(f"the plan places value {v}, which XLA's buffer assignment does not "
                               "hold")
    intervals: dict[int, tuple[int, int]] = {}
    reader_copy: dict[int, dict[str, int]] = defaultdict(dict)   # value -> reader -> claim
    # A while loop among a copy's late readers reads it in its body and
    # condition (at every depth); the tuple that is its operand runs nothing.
    late_domain: dict[int, set[str]] = defaultdict(set)          # value -> where the copies are
    for claim in plan.recomputes:
        for u in claim.late_users:
            if instr_by_name[u].opcode == "while":
                late_domain[claim.value] |= _loop_domain(instr_by_name[u], instr_by_id, entry, comps)
    for v, js in copies_of.items():
        last_reader = -1
        for j in js:
            claim = plan.recomputes[j]
            steps = sorted(flat[u] for u in claim.late_users) if claim.late_users else []
            if steps and steps[0] <= last_reader:
                raise PlanRejected(f"the copies of value {v} (before {claim.before} and an earlier "
                                   "one) have reader groups that overlap or are out of order")
            last_reader = steps[-1] if steps else last_reader
            for u in claim.late_users:
                if u in reader_copy[v]:
                    raise PlanRejected(f"{u} is declared a late reader of two copies of value {v}")
                reader_copy[v][u] = j
                if instr_by_name[u].opcode == "while":
                    for inner in _loop_domain(instr_by_name[u], instr_by_id, entry, comps):
                        reader_copy[v].setdefault(inner, j)
    for rec in records.values():
        if rec.id not in placements or placements[rec.id][3].is_thread_local:
            continue
        d = rec.defining_instruction
        if d not in flat and placements[rec.id][3].is_constant:
            continue  # a constant of a computation that is never flattened: pinned, never moves
        if d not in flat:
            raise PlanRejected(f"value {rec.key} is defined by {d}, which is not scheduled")
        is_param = instr_by_name[d].opcode == "parameter" and comp_by_instr[d] == entry.id
        start = 0 if is_param else flat[d]
        end = start
        for name in [p.instruction for p in rec.positions]:
            if name not in flat:
                raise PlanRejected(f"value {rec.key} is held by {name}, which is not scheduled")
            if rec.id in clone_step and flat[name] > clone_step[rec.id] and \
                    instr_by_name[name].opcode == "bitcast":
                continue  # a re-gathered value's late bitcast names its copy (no thunk)
            if name in late_domain.get(rec.id, ()):
                continue  # a late loop's (its copy's, which lives until the loop's end)
            end = max(end, flat[name])
        for name in [u.instruction for u in rec.uses]:
            if name not in flat:
                raise PlanRejected(f"value {rec.key} is used by {name}, which is not scheduled")
            if rec.id in clone_step:
                late = flat[name] > clone_step[rec.id]
                if late != (name in reader_copy[rec.id]):
                    raise PlanRejected(f"value {rec.key} is recomputed at step {clone_step[rec.id]}, "
                                       f"but its reader {name} (step {flat[name]}) is "
                                       f"{'not ' if late else ''}declared a late reader")
                if late:
                    j = reader_copy[rec.id][name]
                    if flat[name] <= claim_step[j]:
                        raise PlanRejected(f"{name} (step {flat[name]}) reads the copy of value "
                                           f"{rec.key} made before {plan.recomputes[j].before} "
                                           f"(step {claim_step[j]}), which it precedes")
                    continue
            # A control-flow instruction reads its operands as its block starts
            # (they pass on to its callees' parameters); others at their step.
            end = max(end, reads_at.get(name, flat[name]))
        donated = is_param and placements[rec.id][3].maybe_live_out
        if (is_param and not donated) or any(p.instruction == root for p in rec.positions) or \
                xla.ranges.get(rec.key, (0, 0))[1] >= len(xla.sequence):
            end = horizon - 1  # inputs stay the caller's; outputs go back to it
        if placements[rec.id][3].is_constant:
            start, end = 0, horizon - 1  # initialised once, at load: live in every call
        intervals[rec.id] = (start, end)

    # 3a. An asynchronous copy (a host offload's copy to or from host memory)
    # reads its operand on another stream until its copy-done: whatever the
    # dumps say of the operand's uses, its bytes stay intact until then.
    _hold_copy_operands(entry, instr_by_id, records, intervals, flat)

    # 4. Which values XLA compiled to share bytes: in-place pairs and control flow.
    parent = {v: v for v in intervals}

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def xla_place(v):
        a, o, s, _ = placements[v]
        return a, o

    def join(a, b):
        if a in parent and b in parent and xla_place(a) == xla_place(b):
            parent[find(a)] = find(b)

    holders = defaultdict(list)   # (instruction, shape index) -> values there
    for rec in records.values():
        for p in rec.positions:
            holders[(p.instruction, p.index)].append(rec.id)
    defined_by = defaultdict(list)
    for rec in records.values():
        defined_by[rec.defining_instruction].append(rec.id)
    for rec in records.values():
        for use in rec.uses:  # the user writes its result over this operand
            for out in defined_by.get(use.instruction, ()):
                join(rec.id, out)
    by_instr = defaultdict(set)
    for (name, index) in holders:
        by_instr[name].add(index)

    def tie(names):
        for index in set().union(*(by_instr[n] for n in names)):
            vals = [v for n in names for v in holders.get((n, index), ())]
            for v in vals[1:]:
                join(vals[0], v)

    def comp_root(cid):
        return instr_by_id[comps[cid].root_id].name

    def comp_params(cid):
        ps = [i for i in comps[cid].instructions if i.opcode == "parameter"]
        return [p.name for p in sorted(ps, key=lambda p: p.parameter_number)]

    for instr in instr_by_name.values():
        ops = [instr_by_id[o].name for o in instr.operand_ids]
        called = list(instr.called_computation_ids)
        if instr.opcode == "while":
            body, cond = called
            tie([ops[0], comp_params(body)[0], comp_root(body), comp_params(cond)[0], instr.name])
        elif instr.opcode == "conditional":
            tie([instr.name] + [comp_root(c) for c in called])
            for b, c in enumerate(called):
                if comp_params(c) and b + 1 < len(ops):
                    tie([ops[b + 1], comp_params(c)[0]])
        elif instr.opcode == "call":
            tie([instr.name, comp_root(called[0])])
            for o, p in zip(ops, comp_params(called[0])):
                tie([o, p])

    # 4a. Values XLA compiled to share bytes take turns: once a later one is
    # written (by the instruction that may read the earlier one last), nothing
    # reads the earlier one.  Values of nested computations keep XLA's inner
    # order; entry values are what a new order can move past one another.
    members = defaultdict(list)
    for v in intervals:
        if records[v].defining_instruction in entry_set and placements[v][2] > 0:
            members[find(v)].append(v)
    for group in members.values():
        group.sort(key=lambda x: intervals[x])
        for i, a in enumerate(group):
            for b in group[i + 1:]:
                if intervals[a][0] < intervals[b][0] < intervals[a][1]:
                    raise PlanRejected(
                        f"value {records[a].key} is still read at step {intervals[a][1]} after "
                        f"{records[b].key}, which XLA compiled to write over its bytes, is "
                        f"written at step {intervals[b][0]}")

    # 4b. Recomputation: a pure kernel's second run needs its own result apart
    # from its operands (no in-place pair), one plain position, and operands
    # whose bytes are intact when it runs (live until then, not written over).
    # Values written over the recomputed one in place must come after the
    # second run: they then share bytes with the second copy, not the first.
    # A recomputed value may share bytes with values XLA writes over it later
    # (in place): those are then written over its second copy, so they form a
    # group with the copy, apart from the first copy's.
    extra_places = {}
    copy_key = {}       # claim index -> key of its copy's interval
    moved_with = {}     # value written over a recomputed value's bytes -> its last copy's key
    chain_read = set()  # claim indices whose copy a later copy reads
    recomputed_groups = [find(v) for v in copies_of if v in intervals]
    if len(set(recomputed_groups)) != len(recomputed_groups):
        raise PlanRejected("two recomputed values share bytes (in place or aliased)")
    # In the order the copies run: a copy reads the latest copy of an operand
    # made before it (a chain), or else the operand's first copy.
    for j in sorted(claim_step, key=lambda j: claim_step[j]):
        claim = plan.recomputes[j]
        v = claim.value
        rec = records[v]
        step = claim_step[j]
        if v not in intervals:
            raise PlanRejected(f"value {rec.key} is not tracked: it cannot be recomputed")
        for x in intervals:
            if x == v or find(x) != find(v):
                continue
            if records[x].defining_instruction not in entry_set or \
                    intervals[x][0] <= step:
                raise PlanRejected(f"value {rec.key} shares bytes with {records[x].key}, which is "
                                   "not written over it after its second copy: it cannot be "
                                   "recomputed")
        if claim.done_before:
            _check_regather(claim, rec, records, instr_by_name, instr_by_id, comps, flat, step)
        elif [p.instruction for p in rec.positions   # a bitcast of it runs nothing: a view
              if not (instr_by_name[p.instruction].opcode == "bitcast" and   # (a body's: in it)
                      comp_by_instr.get(p.instruction) == comp_by_instr[claim.producer]) and
              p.instruction not in _loops_reading(rec, instr_by_name, instr_by_id, entry, comps) and
              not _tuple_view(instr_by_name[p.instruction], instr_by_name[claim.producer],
                              instr_by_id, comp_by_instr, entry.id) and
              not _fusion_view(instr_by_name[p.instruction], instr_by_name[claim.producer],
                               instr_by_id, comp_by_instr, entry.id)] != [claim.producer] or \
                any(r.id != v and not _library_side(r, instr_by_name[claim.producer],
                                                    instr_by_name, instr_by_id, comp_by_instr,
                                                    entry.id) and
                    not _fusion_side(r, claim, instr_by_name, instr_by_id, comp_by_instr, entry.id)
                    for r in records.values() if r.defining_instruction == claim.producer):
            raise PlanRejected(f"value {rec.key} is not the one plain result of {claim.producer}")
        if placements[v][3].is_entry_computation_parameter or placements[v][3].is_constant or \
                intervals[v][1] == horizon - 1:
            raise PlanRejected(f"value {rec.key} is an input, constant or output")
        if any(name in reads_at and instr_by_name[name].opcode != "while"
               for name in claim.late_users):
            raise PlanRejected(f"a late reader of {rec.key} runs a nested computation")
        if flat[claim.producer] >= step:
            raise PlanRejected(f"{claim.producer} is recomputed before its first run")
        for op in records.values():
            if not any(u.instruction == claim.producer for u in op.uses):
                continue
            if op.id not in intervals:
                if placements.get(op.id, (0, 0, 0, None))[3] is not None and \
                        placements[op.id][3].is_constant:
                    continue
                raise PlanRejected(f"operand {op.key} of recomputed {claim.producer} is not tracked")
            made = [i for i in copies_of.get(op.id, ()) if claim_step[i] < step]
            if made:
                # a chain: the operand's latest copy, which must stay live until this run
                chain_read.add(made[-1])
                s0, e0 = intervals[copy_key[made[-1]]]
                intervals[copy_key[made[-1]]] = (s0, max(e0, step))
                continue
            s0, e0 = intervals[op.id]
            intervals[op.id] = (s0, max(e0, step))
            for other in intervals:
                if other != op.id and find(other) == find(op.id) and s0 < intervals[other][0] <= step:
                    raise PlanRejected(f"operand {op.key} of recomputed {claim.producer} is written "
                                       f"over (by {records[other].key}) before the second run")
        launch = [c for i, c in enumerate(plan.recomputes)
                  if i != j and launch_of.get(i, i) == launch_of.get(j, j)]
        _scratch_claims(claim, records, placements, horizon, intervals, parent, extra_places,
                        step, instr_by_name, launch)
        # (a copy no instruction reads is a chain's operand: the copies that
        # read it extend its life, and ``_chain_read`` makes sure one does)
        late_end = max((flat[name] for name in claim.late_users), default=step)
        key = -1 - len(extra_places)
        copy_key[j] = key
        intervals[key] = (step, late_end)
        parent[key] = key
        n_copies = len(copies_of[v])
        extra_places[key] = (claim, placements[v][2], rec.key + (
            " (recomputed)" if n_copies == 1 else
            f" (recomputed, copy {copies_of[v].index(j) + 1} of {n_copies})"))
        for x in list(intervals):
            if x >= 0 and x != v and find(x) == find(v):
                moved_with[x] = key
    _chain_read(plan.recomputes, chain_read, records)
    # The copy and the values written over it in place take turns, chains' reads included.
    for x, key in moved_with.items():
        if intervals[key][0] < intervals[x][0] < intervals[key][1]:
            raise PlanRejected(f"{extra_places[key][2]} is still read at step {intervals[key][1]} "
                               f"after {records[x].key}, which XLA compiled to write over its "
                               f"bytes, is written at step {intervals[x][0]}")

    def group_of(x):
        return moved_with.get(x, find(x))

    def label_of(v):
        return extra_places[v][2] if v in extra_places else records[v].key

    # 5. Places: fixed values stay, shared values stay together, all inside.
    new_place = {}
    for v, (a, o, size, alloc) in placements.items():
        label = records[v].key if v in records else f"logical buffer {v}"
        na, no = plan.places.get(v, (a, o))
        if v not in intervals:
            if (na, no) != (a, o):
                raise PlanRejected(f"value {label} is in {_fixed_kind(alloc) or 'an untracked'} "
                                   f"allocation and must stay at allocation {a} offset {o}")
            if not alloc.is_thread_local and v not in records:
                # Nothing says when it is live: it holds its bytes for the whole program.
                key = -1 - len(extra_places)
                intervals[key], parent[key] = (0, horizon - 1), key
                extra_places[key] = (None, size, label)
                new_place[key] = (a, o, size)
            continue
        pinned = alloc.is_entry_computation_parameter or alloc.is_constant or \
            alloc.is_thread_local or alloc.is_tuple or intervals[v][1] == horizon - 1 and (
                any(p.instruction == root for p in records[v].positions)
                or xla.ranges.get(records[v].key, (0, 0))[1] >= len(xla.sequence))
        if pinned and (na, no) != (a, o):
            what = _fixed_kind(alloc) or "an output"
            raise PlanRejected(f"value {label} is in {what} allocation and must stay at allocation "
                               f"{a} offset {o}")
        if (na, no) != (a, o):
            _check_destination(label, alloc, allocs_by_index.get(na), na)
        if (na, no) != (a, o) and no % alignment:
            raise PlanRejected(f"value {label} moved to offset {no}, not a multiple of {alignment}")
        if na not in allocs_by_index:
            raise PlanRejected(f"value {label} is moved to allocation {na}, which does not exist")
        cap = plan.allocation_sizes.get(na, allocs_by_index[na].size)
        if no < 0 or no + size > cap:
            raise PlanRejected(f"value {label} ({size} B at {no}) does not fit allocation "
                               f"{na} of {cap} B")
        new_place[v] = (na, no, size)
    for key, (claim, size, label) in extra_places.items():
        if claim is None:
            continue
        na, no = claim.place
        alloc = allocs_by_index.get(na)
        if alloc is None:
            raise PlanRejected(f"{label} is placed in allocation {na}, which does not exist")
        _check_destination(label, allocs_by_index[placements[claim.value][0]], alloc, na)
        if alloc.is_entry_computation_parameter:
            raise PlanRejected(f"{label} is placed in allocation {na}, which cannot hold it: "
                               f"it is {_fixed_kind(alloc)} allocation")
        cap = plan.allocation_sizes.get(na, alloc.size)
        if no % alignment or no < 0 or no + size > cap:
            raise PlanRejected(f"{label} ({size} B at {no}) is misaligned or outside allocation "
                               f"{na} of {cap} B")
        new_place[key] = (na, no, size)
    groups = defaultdict(set)
    for v in new_place:
        groups[group_of(v)].add(new_place[v][:2])
    for root_v, places in groups.items():
        if len(places) > 1:
            raise PlanRejected(f"value {label_of(root_v)} and the values XLA compiled to share its "
                               f"bytes were split across {sorted(places)}")
    _check_one_kernel_calls(instr_by_name, comps, records, placements, new_place)

    # 6. No two values live at once on overlapping bytes, unless shared.
    pairs = 0
    peaks = {}
    by_alloc = defaultdict(list)
    for v, (a, o, size) in new_place.items():
        by_alloc[a].append((intervals[v][0], intervals[v][1], o, size, v))
    for a, items in by_alloc.items():
        items.sort()
        active: list[tuple[int, int, int, int, int]] = []
        events = []
        for s, e, o, size, v in items:
            active = [x for x in active if x[1] >= s]
            for s2, e2, o2, size2, v2 in active:
                pairs += 1
                if o < o2 + size2 and o2 < o + size and group_of(v) != group_of(v2):
                    raise PlanRejected(
                        f"values {label_of(v2)} and {label_of(v)} overlap in allocation {a} "
                        f"(bytes {o2}+{size2} and {o}+{size}) while both are live")
            active.append((s, e, o, size, v))
            events.append((s, size))
            events.append((e + 1, -size))
        live = peak = 0
        for _, delta in sorted(events):
            live += delta
            peak = max(peak, live)
        peaks[a] = peak
    return CheckReport(values_checked=len(new_place), pairs_checked=pairs, peak_bytes=peaks)


def _check_body_claim(claim, records, instr_by_name, instr_by_id, comp_by_instr, comps,
                      entry) -> None:
    """A copy inside a loop body: its producer, the instruction it runs
    before and its late readers are instructions of the body of one entry
    while loop (not its condition: the body runs once per iteration, in XLA's
    inner order, which the flattened schedule lists once), none calls a
    computation, and it is a plain copy (no collective, no scratch).  The
    rest (one plain result, operands intact until the copy, no reader of the
    first run after it) is checked as for entry copies, on that schedule:
    every iteration runs it the same way."""
    body = comp_by_instr.get(claim.producer)
    loops = [i for i in entry.instructions if i.opcode == "while" and
             i.called_computation_ids and i.called_computation_ids[0] == body]
    if len(loops) != 1 or sum(body in i.called_computation_ids
                              for c in comps.values() for i in c.instructions) != 1:
        raise PlanRejected(f"recomputation of {claim.producer}: it is neither an entry instruction "
                           "nor in the body of one entry while loop")
    for name in (claim.before, *claim.late_users):
        if comp_by_instr.get(name) != body:
            raise PlanRejected(f"recomputation of {claim.producer} names {name}, which is not in "
                               f"the body of {loops[0].name} with it")
    for name in (claim.producer, claim.before, *claim.late_users):
        if instr_by_name[name].called_computation_ids and \
                instr_by_name[name].opcode in ("while", "conditional", "call"):
            raise PlanRejected(f"recomputation of {claim.producer} in a loop body: {name} runs a "
                               "nested computation")
    if claim.done_before or claim.scratch:
        raise PlanRejected(f"recomputation of {claim.producer} in a loop body: only a plain "
                           "kernel's copy may run there")
    if claim.value not in records or records[claim.value].defining_instruction != claim.producer:
        raise PlanRejected(f"recomputation of {claim.producer}: value {claim.value} is not what "
                           "it defines")
    if claim.before not in claim.late_users:
        raise PlanRejected(f"recomputation of {claim.producer} in a loop body before "
                           f"{claim.before}, which does not read it")


def _feeds_loop_copy(claim, claims) -> bool:
    """Whether ``claim``, with no late reader of its own, runs before a while
    loop whose own copy (a claim before the same loop, which the loop reads)
    comes after it and may read it (a chain's operand, made just before)."""
    return not claim.late_users and any(
        other.before == claim.before and claim.before in other.late_users for other in claims)


def _chain_read(claims, chain_read: set[int], records) -> None:
    """Every copy that no instruction reads (no late reader) is read by a
    later copy, a chain (``chain_read``: indices of claims read so)."""
    for j, claim in enumerate(claims):
        if not claim.late_users and j not in chain_read:
            raise PlanRejected(f"recomputed value {records[claim.value].key} has no late reader "
                               f"(before {claim.before}) and no later copy reads its copy")


def _loop_domain(loop, instr_by_id, entry, comps) -> set[str]:
    """Where entry while ``loop`` holds its carried values: itself, the
    instructions of its body and condition (any depth), and the entry tuple
    that is its operand when nothing else reads that tuple (a tuple runs no
    thunk on XLA:CPU: the loop's thunks address each element's bytes)."""
    out = {loop.name} | {i.name for cid in _callees(loop, comps) for i in comps[cid].instructions}
    carried = instr_by_id[loop.operand_ids[0]]
    if carried.opcode == "tuple" and \
            [i.name for i in entry.instructions if carried.id in i.operand_ids] == [loop.name]:
        out.add(carried.name)
    return out


def _loops_reading(rec, instr_by_name, instr_by_id, entry, comps) -> set[str]:
    """The places of ``rec`` inside the domains (``_loop_domain``) of the entry
    while loops that read it.  Being one value there, the loop passes it on
    unchanged: nothing in the loop writes it (a write would be a value of its
    own, at its bytes, which the recomputation check refuses)."""
    out = set()
    for u in rec.uses:
        instr = instr_by_name[u.instruction]
        if instr.opcode == "while" and any(i.id == instr.id for i in entry.instructions):
            out |= _loop_domain(instr, instr_by_id, entry, comps)
    return out


def _callees(instr, comps) -> set[int]:
    """The computations ``instr`` calls, at any nesting depth."""
    todo, seen = list(instr.called_computation_ids), set()
    while todo:
        cid = todo.pop()
        if cid not in seen:
            seen.add(cid)
            todo += [c for i in comps[cid].instructions for c in i.called_computation_ids]
    return seen


def _check_one_kernel_calls(instr_by_name, comps, records, placements, new_place) -> None:
    """A call XLA:CPU emits as one kernel (frontend attribute
    ``xla_cpu_small_call``) reaches every value inside it through the slice
    XLA gave that value, from one thunk that spans the whole call: values
    inside one call that share bytes must move by the same amount, even when
    they are live one after another."""
    call_of = {}     # instruction inside such a call -> the call
    for call in instr_by_name.values():
        if call.opcode != "call" or call.frontend_attributes.map.get("xla_cpu_small_call") != "true":
            continue
        for cid in _callees(call, comps):
            for instr in comps[cid].instructions:
                call_of.setdefault(instr.name, call.name)
    spans = defaultdict(list)    # (call, XLA's allocation) -> (offset, end, move, key)
    for v, rec in records.items():
        call = call_of.get(rec.defining_instruction)
        if call is not None and v in new_place:
            a, o, size, _ = placements[v]
            na, no, _ = new_place[v]
            spans[(call, a)].append((o, o + size, (na, no - o), rec.key))
    for (call, _), items in spans.items():
        items.sort()
        end, move, first = 0, None, ""
        for lo, hi, shift, key in items:
            if lo >= end:
                move, first = shift, key
            elif shift != move:
                raise PlanRejected(
                    f"values {first} and {key} share bytes inside {call}, which XLA:CPU "
                    "runs as one kernel, and were moved apart")
            end = max(end, hi)


# Library calls XLA:GPU makes custom-calls of: pure functions of their
# operands, whose result tuple holds the result and a scratch (workspace).
LIBRARY_CALLS = frozenset({
    "__cublas$gemm", "__cublas$lt$matmul", "__cublas$lt$matmul$f8",
    "__cudnn$convForward", "__cudnn$convBackwardInput", "__cudnn$convBackwardFilter",
    "__cudnn$convBiasActivationForward"})


def _tuple_view(instr, producer, instr_by_id, comp_by_instr, entry_id) -> bool:
    """Whether ``instr`` is an entry get-tuple-element of library call
    ``producer``'s result: it runs nothing, it names the same bytes."""
    return producer.opcode == "custom-call" and producer.custom_call_target in LIBRARY_CALLS and \
        instr.opcode == "get-tuple-element" and comp_by_instr.get(instr.name) == entry_id and \
        [instr_by_id[o].name for o in instr.operand_ids] == [producer.name]


def _library_side(rec, producer, instr_by_name, instr_by_id, comp_by_instr, entry_id) -> bool:
    """Whether ``rec`` (defined by ``producer``, not the recomputed value) is
    a library call's tuple table (read by its get-tuple-elements only, which
    run nothing: the call does not write it) or its scratch (read by nothing;
    what a copy does with it is ``_scratch_claims``' to check)."""
    if producer.opcode != "custom-call" or producer.custom_call_target not in LIBRARY_CALLS:
        return False
    if [p.instruction for p in rec.positions] != [producer.name]:
        return False
    if rec.positions[0].index == ():
        return all(_tuple_view(instr_by_name[u.instruction], producer, instr_by_id,
                               comp_by_instr, entry_id) for u in rec.uses)
    return not rec.uses


def _scratch_claims(claim, records, placements, horizon, intervals, parent, extra_places, step,
                    instr_by_name, launch=()) -> None:
    """The scratch a library call's copy writes: each scratch value of the
    producer with bytes gets the claimed place for the copy's step alone (the
    overlap check then refuses it over any value live there), and only such
    values may be claimed.  ``launch``: the other claims whose copy is the
    same launch (other results of a multi-result fusion, ``_result_claims``)."""
    producer = instr_by_name[claim.producer]
    claimed = dict(claim.scratch)
    if len(claimed) != len(claim.scratch):
        raise PlanRejected(f"the copy of {claim.producer} claims one scratch value twice")
    if _multi_result_fusion(producer):
        _result_claims(claim, records, placements, intervals, parent, extra_places, step, launch)
        return
    if launch:
        raise PlanRejected(f"{claim.producer} is copied twice before {claim.before}")
    for sid, place in claim.scratch:
        rec = records.get(sid)
        if rec is None or rec.defining_instruction != claim.producer or rec.uses or \
                sid not in placements or not rec.positions or rec.positions[0].index == () or \
                producer.opcode != "custom-call" or \
                producer.custom_call_target not in LIBRARY_CALLS or \
                intervals.get(sid, (0, horizon - 1))[1] == horizon - 1:
            raise PlanRejected(f"value {sid}, claimed as scratch of the copy of {claim.producer}, "
                               "is no scratch of that library call")
    for rec in records.values():
        if rec.defining_instruction != claim.producer or rec.id == claim.value or rec.uses or \
                not rec.positions or rec.positions[0].index == () or rec.id not in placements:
            continue
        size = placements[rec.id][2]
        if size == 0:
            continue
        if rec.id not in claimed:
            raise PlanRejected(f"the copy of {claim.producer} writes its scratch {rec.key} "
                               f"({size} B) with no place claimed for it")
        key = -1 - len(extra_places)
        intervals[key] = (step, step)
        parent[key] = key
        # (placed like a copy: the place is checked in step 5, overlaps in step 6)
        extra_places[key] = (dataclasses.replace(claim, value=rec.id, place=claimed[rec.id]),
                             size, f"scratch {rec.key} of the copy of {claim.producer}")


def _multi_result_fusion(producer) -> bool:
    """Whether ``producer`` is a fusion with several results (a tuple): XLA:GPU
    runs it as one kernel that writes each result (not the tuple's table)."""
    return producer.opcode == "fusion" and len(producer.shape.tuple_shapes) > 0


def _fusion_view(instr, producer, instr_by_id, comp_by_instr, entry_id) -> bool:
    """Whether ``instr`` is an entry get-tuple-element of multi-result fusion
    ``producer``: it runs nothing, it names the bytes of one of its results."""
    return _multi_result_fusion(producer) and instr.opcode == "get-tuple-element" and \
        comp_by_instr.get(instr.name) == entry_id and \
        [instr_by_id[o].name for o in instr.operand_ids] == [producer.name]


def _fusion_side(rec, claim, instr_by_name, instr_by_id, comp_by_instr, entry_id) -> bool:
    """Whether ``rec`` (defined by ``claim.producer``, not the recomputed
    value) is, for a multi-result fusion, its tuple table (read by its
    get-tuple-elements only, written by nobody) or another result (which the
    copy writes too: where, and that a place is claimed, ``_result_claims``
    checks)."""
    producer = instr_by_name[claim.producer]
    if not _multi_result_fusion(producer) or not rec.positions or \
            rec.positions[0].instruction != producer.name:
        return False
    if rec.positions[0].index == ():
        return [p.instruction for p in rec.positions] == [producer.name] and \
            all(_fusion_view(instr_by_name[u.instruction], producer, instr_by_id, comp_by_instr,
                             entry_id) for u in rec.uses)
    return True


def _result_claims(claim, records, placements, intervals, parent, extra_places, step,
                   launch=()) -> None:
    """A multi-result fusion's copy writes every result: each one besides the
    recomputed value that has bytes must have a claimed place, held for the
    copy's step alone (the overlap check then refuses it over any value live
    there: an operand kept for the copy, the copy's own result...), and only
    such results may be claimed.  Copies of several results before one
    instruction (``launch``, the others' claims) are one launch: a result
    another of them recomputes is written at that claim's place (checked as
    its copy), and each other result is claimed as scratch by one of them."""
    results = {r.id: r for r in records.values() if r.defining_instruction == claim.producer
               and r.positions and r.positions[0].instruction == claim.producer
               and r.positions[0].index != ()}
    if claim.value not in results:
        raise PlanRejected(f"value {claim.value}, recomputed by a copy of {claim.producer}, is "
                           "none of that fusion's results (its tuple table is not written)")
    claimed = dict(claim.scratch)
    recomputed = {c.value for c in launch}
    elsewhere = {sid for c in launch for sid, _ in c.scratch}
    for sid in claimed:
        if sid not in results or sid == claim.value or sid not in placements or \
                sid in recomputed:
            raise PlanRejected(f"value {sid}, claimed as scratch of the copy of {claim.producer}, "
                               "is no other result of that fusion")
        if sid in elsewhere:
            raise PlanRejected(f"value {sid} is claimed as scratch twice by one launch of "
                               f"{claim.producer}")
    for rid, rec in sorted(results.items()):
        if rid == claim.value or rid in recomputed:
            continue
        if rid not in placements:
            raise PlanRejected(f"the copy of {claim.producer} writes its result {rec.key}, "
                               "which has no place of XLA's to size it by")
        if placements[rid][2] == 0 or (rid in elsewhere and rid not in claimed):
            continue
        if rid not in claimed:
            raise PlanRejected(f"the copy of {claim.producer} writes its result {rec.key} "
                               f"({placements[rid][2]} B) with no place claimed for it")
        key = -1 - len(extra_places)
        intervals[key] = (step, step)
        parent[key] = key
        extra_places[key] = (dataclasses.replace(claim, value=rid, place=claimed[rid]),
                             placements[rid][2],
                             f"result {rec.key} written by the copy of {claim.producer}")


def _check_regather(claim, rec, records, instr_by_name, instr_by_id, comps, flat, step) -> None:
    """A re-gathered value: the one gathered array of an all-gather start (its
    other values are the start's tuple index table, shape index {}), held by
    the start, its done and bitcasts only; the first run is done before the copy starts
    (one in flight at a time), and the copy's done precedes every late reader."""
    start = instr_by_name[claim.producer]
    kind = start.opcode
    if kind == "async-start":
        roots = [instr_by_id.get(comps[c].root_id) for c in start.called_computation_ids
                 if c in comps]
        kind = roots[0].opcode if roots and roots[0] is not None else kind
    if kind not in ("all-gather-start", "all-gather"):
        raise PlanRejected(f"{claim.producer} is run again as a collective, but it is a "
                           f"{start.opcode}, not an all-gather's start")
    dones = [i.name for i in instr_by_name.values()
             if i.opcode.endswith("-done") and start.id in i.operand_ids]
    if len(dones) != 1:
        raise PlanRejected(f"{claim.producer} has {len(dones)} dones, not one")
    done = dones[0]
    held = {p.instruction for p in rec.positions
            if instr_by_name[p.instruction].opcode != "bitcast"}   # bitcasts run no thunk
    if not held <= {claim.producer, done} or claim.producer not in held:
        raise PlanRejected(f"value {rec.key} is held by {sorted(held - {claim.producer, done})} "
                           f"besides {claim.producer} and its done: it cannot be re-gathered")
    for other in records.values():
        if other.defining_instruction == claim.producer and other.id != rec.id and any(
                p.index for p in other.positions if p.instruction == claim.producer):
            raise PlanRejected(f"{claim.producer} writes {other.key} besides {rec.key} (a "
                               "combined all-gather): its copy would write it too")
    if flat[done] >= step:
        raise PlanRejected(f"{claim.producer} runs again before its first run is done")
    if flat[claim.done_before] < step:
        raise PlanRejected(f"the copy of {claim.producer} is done before {claim.done_before}, "
                           "which runs before the copy starts")
    early = [u for u in claim.late_users if flat[u] < flat[claim.done_before]]
    if early:
        raise PlanRejected(f"late reader {early[0]} of {rec.key} runs before the copy of "
                           f"{claim.producer} is done (before {claim.done_before})")


def _hold_copy_operands(entry, instr_by_id, records, intervals, flat) -> None:
    """Extend the interval of the value each ``copy-start`` of the entry reads
    (the one at its operand's top-level position) to its ``copy-done``, the
    step the runtime waits for the copy."""
    done_of = {}
    for instr in entry.instructions:
        if instr.opcode == "copy-done":
            for o in instr.operand_ids:
                done_of[instr_by_id[o].name] = instr.name
    if not done_of:
        return
    operands = {instr_by_id[i.operand_ids[0]].name: i.name for i in entry.instructions
                if i.opcode == "copy-start" and i.operand_ids}
    for rec in records.values():
        if rec.id not in intervals:
            continue
        for p in rec.positions:
            done = done_of.get(operands.get(p.instruction, ""))
            if not p.index and done in flat:
                s0, e0 = intervals[rec.id]
                intervals[rec.id] = (s0, max(e0, flat[done]))


def _without_tuple_flag(alloc):
    """A copy of allocation ``alloc`` not flagged as a tuple table."""
    copy = type(alloc)()
    copy.CopyFrom(alloc)
    copy.is_tuple = False
    return copy


def _fixed_kind(alloc) -> str:
    """What makes an allocation the executable's own ("" if nothing does)."""
    if alloc.is_constant:
        return "a constant"
    if alloc.is_tuple:
        return "a tuple table"
    if alloc.is_thread_local:
        return "a thread-local"
    if alloc.is_entry_computation_parameter:
        return f"entry parameter {alloc.parameter_number}'s"
    return ""


def _check_destination(label: str, source, dest, index: int) -> None:
    """A moved value (or a recomputed copy) may go to a temp or output
    allocation, or into a donated parameter's (its lifetimes are checked
    after); never onto bytes the executable owns."""
    if dest is None:
        raise PlanRejected(f"{label} is moved to allocation {index}, which does not exist")
    if dest.is_constant:
        raise PlanRejected(f"{label} is moved onto constant allocation {index}: constants are "
                           "initialised once, when the executable loads, and a write there "
                           "corrupts every later call")
    if dest.is_tuple:
        raise PlanRejected(f"{label} is moved into allocation {index}, a tuple table (the runtime "
                           "writes its index table there)")
    if dest.is_thread_local:
        raise PlanRejected(f"{label} is moved into thread-local allocation {index}, which has no "
                           "buffer of its own")
    if dest.is_entry_computation_parameter and not dest.maybe_live_out:
        raise PlanRejected(f"{label} is moved into allocation {index}, entry parameter "
                           f"{dest.parameter_number}'s, which is not donated: its bytes are the "
                           "caller's")
    if source is not None and dest.color != source.color:
        raise PlanRejected(f"{label} is moved across memory colors ({source.color} -> "
                           f"{dest.color})")


def _check_sizes(plan: CandidatePlan, allocs_by_index) -> None:
    """Only a temp allocation (not fixed, not possibly live out) may change size."""
    for index, size in plan.allocation_sizes.items():
        alloc = allocs_by_index.get(index)
        if alloc is None:
            raise PlanRejected(f"the plan sizes allocation {index}, which does not exist")
        if int(size) < 0:
            raise PlanRejected(f"the plan gives allocation {index} a negative size ({size})")
        if int(size) == alloc.size:
            continue
        what = _fixed_kind(alloc) or ("a possibly live-out" if alloc.maybe_live_out else "")
        if what:
            raise PlanRejected(f"allocation {index} is {what} allocation: its size "
                               f"({alloc.size} B) cannot change (the plan asks for {size} B)")
