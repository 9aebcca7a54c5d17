"""Meeting a memory budget by recomputing values (trading compute for memory).

Order and placement come first (``olla_jax.plan``).  When their plan is still
over the budget, values held idle across the peak are recomputed: a copy of
their producer's kernel runs again just before the first later reader, so the
first copy dies early and the second is born late.  A value qualifies when
its producer is one pure kernel thunk (kernel, dot, convolution or ynn fusion) with one
plain result that shares bytes with nothing but values XLA writes over it in
place later (those are then written over the second copy: they move with it,
so the copy must run before the first of them is written), and every operand can stay
intact until the second run (an operand written over in place before then
disqualifies it; one that is itself recomputed is read from its copy when that
copy is made first, a chain, which only the model picks).  Operands are kept live until
the second run, which costs memory of its own and is counted.

Values are picked greedily at the live-bytes peak, most bytes saved per unit
of extra compute first (a roofline estimate from the instruction's FLOPs and
bytes), and the order is kept.  That plan is then the warm start (and the
fallback) of a model (``choose_model``, ``olla_jax.solve.recompute``: CP-SAT
or python-mip) that picks, on the same order, which values to drop and before
which reader to run their copy, for the least extra roofline cost that meets
the budget (else the least memory), chains included: a copy may read the copy
of an operand recomputed before it.  A value may be recomputed several times
(``split_copies``): each copy is read by its own readers, in order, and dies
after the last of them.  Every plan is placed again (best-fit),
goes through the independent checker, and on CPU the executable with the
copied thunks is verified bit for bit against XLA's before it is used.

``search`` runs it all within a time limit: the order given and the same with
sink moves, the greedy on each, the model on the better, then an exact
placement of the most promising plan (best-fit fragments around the copies).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections import defaultdict
from typing import Any, Sequence

import numpy as np
from absl import logging

from olla_jax import checked
from olla_jax import flops as flops_lib
from olla_jax.capture.base import Backend
from olla_jax import dumps
from olla_jax.graph import layout as layout_lib
from olla_jax.graph.model import ScheduleGraph
from olla_jax.result import warn
from olla_jax.solve import problem as sp

# Roofline constants for ranking only (relative cost of FLOPs and bytes).
_FLOPS_PER_S = 1e11
_BYTES_PER_S = 2e10


@dataclasses.dataclass(frozen=True)
class Candidate:
    """A value that may be recomputed, with what its producer needs."""
    value: int
    producer: int                   # node
    users: tuple[int, ...]          # reader nodes (plain, one thunk each)
    operands: tuple[int, ...]       # value ids the producer reads
    flops: int
    cost_s: float
    # Values XLA writes over this one's bytes later (in place): a copy is then
    # written where they will be, and they move with it (``_late_part_ok``).
    successors: tuple[int, ...] = ()


@dataclasses.dataclass(frozen=True)
class RecomputePlan:
    layout: Any                     # graph.layout.Layout with recomputes
    temp_bytes: int
    extra_flops: int
    picked: tuple[str, ...]         # producers run twice
    splits: tuple[tuple[int, int], ...] = ()   # (value, k): the copy runs before its k-th reader
    extra_cost_s: float = 0.0       # roofline estimate of the copies (the model's objective)
    how: str = "greedy"             # which search chose it
    # Live-bytes peak of what its placement puts in the arena: the least
    # arena an exact placement keeping the same values out of it can reach.
    arena_live: int = 0
    # (start, end, top byte) of each piece of memory in the arena, on the
    # doubled time axis of ``_State``: where the arena's top is reached.
    arena_blocks: tuple[tuple[int, int, int], ...] = ()
    # The (doubled) time at which those live bytes peak, -1 when none.
    arena_peak_at: int = -1


# --- what may be recomputed -------------------------------------------------

def candidates(graph: ScheduleGraph, capture) -> list[Candidate]:
    """Values of ``graph`` whose producer can run a second time (see module doc)."""
    return _screen(graph, capture)[0]


def refusals(graph: ScheduleGraph, capture) -> dict[int, str]:
    """Value id -> why it may not be recomputed, for each value of ``graph``
    that ``candidates`` leaves out (in words, for reports)."""
    return _named(graph, *_screen(graph, capture))


def _named(graph: ScheduleGraph, found: Sequence[Candidate], why: dict[int, str]) -> dict[int, str]:
    """``why`` (from ``_screen``) with a reason for every other value left out."""
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


def _screen(graph: ScheduleGraph, capture) -> tuple[list[Candidate], dict[int, str]]:
    """(``candidates``, value id -> reason for the values of entry
    instructions that do not qualify)."""
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
    for node, name in enumerate(graph.nodes):
        recs = defined.get(name, [])
        if graph.block_length(node) != 1:
            refuse(recs, "made by a loop or call (recomputing it reruns the loop)")
            continue
        if len(recs) != 1:
            refuse(recs, f"its producer has {len(recs)} results")
            continue
        if kinds.get(name, []) not in ([k] for k in cpu_rewrite.CLONABLE_KINDS):
            refuse(recs, f"its producer runs {'/'.join(kinds.get(name, [])) or 'no'} thunk, "
                         "not one kernel")
            continue
        rec = recs[0]
        value = by_key.get(rec.key)
        if value is None or value.live_in or value.live_out:
            continue
        unit = graph.units[unit_of[value.id]]
        if not unit.movable or value.allocation != graph.temp_allocation:
            refuse(recs, "fixed in memory")
            continue
        successors = tuple(o for o in unit.values if o != value.id)
        if successors and not _in_place_after(graph, unit, value, successors):
            loop = any(graph.block_length(graph.values[o].def_node) != 1 for o in successors)
            refuse(recs, "shares bytes with a loop's or call's results" if loop
                   else "shares bytes with values that cannot move with a copy")
            continue
        held = [p.instruction for p in rec.positions]
        if held[:1] != [name] or any(not (gpu and _entry_bitcast(graph, instructions, kinds, x))
                                     for x in held[1:]):
            refuse(recs, "held by other instructions too (a tuple or alias)")
            continue
        users = {u.instruction for u in rec.uses}
        if not users or any(u not in graph.node_index or kinds.get(u, ["none"]) == ["nested"]
                            or len(kinds.get(u, ())) > 1 or graph.block_length(graph.node_index[u]) != 1
                            for u in users):
            refuse(recs, "read inside a loop or call" if users else "never read")
            continue
        operands = tuple(by_key[k].id for k in reads.get(name, ()) if k in by_key)
        instr = instructions[name]
        flops = flops_lib.instruction_flops(instr, by_id, comps)
        moved = value.size + sum(graph.values[o].size for o in operands)
        cost = max(flops / _FLOPS_PER_S, moved / _BYTES_PER_S)
        out.append(Candidate(value.id, node, tuple(graph.node_index[u] for u in users),
                             operands, flops, cost, successors))
    return out, why


def _entry_bitcast(graph: ScheduleGraph, instructions, kinds, name: str) -> bool:
    """Whether ``name`` is an entry bitcast that runs no thunk: XLA:GPU holds a
    fusion's result at the bitcasts of it too (the same bytes, viewed), and
    their readers are the value's own, so a copy serves them as well."""
    return name in graph.node_index and instructions[name].opcode == "bitcast" and \
        not kinds.get(name) and graph.block_length(graph.node_index[name]) == 1


def _in_place_after(graph: ScheduleGraph, unit, value, successors) -> bool:
    """Whether the other values of ``value``'s unit can move with its copy:
    all of them on its very bytes, each defined by another plain entry
    instruction (one thunk), none an input or output.  Which of them come
    after the value (not before it) depends on the order (``_late_part_ok``)."""
    if unit.size != value.size or any(unit.member_offsets):
        return False
    for o in successors:
        other = graph.values[o]
        if other.live_in or other.live_out or other.def_node == value.def_node or \
                graph.block_length(other.def_node) != 1 or other.size > value.size:
            return False
    return True


def _late_part_ok(graph: ScheduleGraph, step: Sequence[int], c: Candidate, before: int) -> bool:
    """Whether ``c``'s copy may run just before node ``before``: every value
    written over its bytes in place is written at or after ``before`` (the
    copy then takes their bytes, the unit's late part)."""
    return all(step[graph.values[o].def_node] >= step[before] for o in c.successors)


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


# --- choosing values at the peak --------------------------------------------

@dataclasses.dataclass
class _State:
    """The placement problem on a doubled time axis (node step t -> 2t+1, so a
    second run just before a node's step sits at 2t), with the picks so far."""
    base: sp.PlacementProblem
    owners: tuple[int, ...]
    intervals: list[list[int]]                  # [size, start, end] per base interval
    interval_of_unit: dict[int, int]
    extra: list[tuple[int, int, int]] = dataclasses.field(default_factory=list)  # late copies
    picks: list[tuple[Candidate, int]] = dataclasses.field(default_factory=list)  # (cand, split)

    def problem(self) -> sp.PlacementProblem:
        ivs = [sp.Interval(s, a, b) for s, a, b in self.intervals]
        ivs += [sp.Interval(s, a, b) for s, a, b in self.extra]
        regions = tuple(sp.Region(r.capacity, tuple(
            sp.Occupant(o.offset, o.size, 2 * o.start + 1, 2 * o.end + 1) for o in r.occupants))
            for r in self.base.regions)
        return sp.PlacementProblem(intervals=tuple(ivs), regions=regions,
                                   alignment=self.base.alignment,
                                   same_offset=self.base.same_offset)

    def profile(self, horizon: int) -> np.ndarray:
        diff = np.zeros(horizon + 2, dtype=np.int64)
        for s, a, b in [*self.intervals, *self.extra]:
            diff[a] += s
            diff[b + 1] -= s
        return np.cumsum(diff)[:horizon]


def _step(graph: ScheduleGraph, order: Sequence[int]) -> list[int]:
    """Per node, its own flat step under ``order`` (the end of its block)."""
    start = graph.flat_layout(order)
    return [start[n] + graph.block_length(n) - 1 for n in range(len(graph.nodes))]


def choose(graph: ScheduleGraph, order: Sequence[int], cands: Sequence[Candidate],
           target_temp: int, *, time_limit_s: float = 30.0,
           base: sp.Placement | None = None) -> RecomputePlan | None:
    """Greedy picks at the live-bytes peak until best-fit's arena is at most
    ``target_temp``; the least-memory plan found when it never is (None when
    nothing could be picked).  ``base``: best-fit's placement of ``order``
    without recomputation (computed when None)."""
    from olla_jax.solve import place as place_lib
    t0 = time.monotonic()
    pp, owners = graph.placement_problem(order)
    if pp.same_offset:
        gapped = {owners[i] for group in pp.same_offset for i in group}
    else:
        gapped = set()
    intervals = [[iv.size, 2 * iv.start + 1, 2 * iv.end + 1] for iv in pp.intervals]
    interval_of_unit = {u: i for i, u in enumerate(owners) if u not in gapped}
    state = _State(pp, owners, intervals, interval_of_unit)
    if base is None:
        base = place_lib.best_fit(state.problem())
    step = _step(graph, order)
    horizon = 2 * len(graph.flat) + 2
    spans = graph.unit_spans(order)
    unit_of = graph.unit_of_value
    recomputed: set[int] = set()
    operand_of_clone: set[int] = set()

    def operand_ok(value_id: int, at: int) -> bool:
        if value_id in recomputed:
            return False
        return _operand_intact(graph, spans, step, interval_of_unit, value_id, at)

    def split_at(c: Candidate, peak: int):
        """The split of ``c``'s readers whose gap covers ``peak``: (k, early end, clone time)."""
        iv = state.intervals[interval_of_unit[unit_of[c.value]]]
        users = sorted(c.users, key=lambda n: step[n])
        times = [2 * step[c.producer] + 1] + [2 * step[u] + 1 for u in users]
        for k in range(len(users)):
            early_end, clone_t = times[k], 2 * step[users[k]]
            if early_end < peak < clone_t and iv[1] <= peak <= iv[2] and \
                    _late_part_ok(graph, step, c, users[k]):
                return k, early_end, clone_t
        return None

    best = None
    picks_since_place = 0
    first = True        # one pick at least, however short the time
    while first or time.monotonic() - t0 < time_limit_s:
        first = False
        prof = state.profile(horizon)
        peak = int(np.argmax(prof))
        choice = None
        for c in cands:
            if c.value in recomputed or c.value in operand_of_clone or \
                    unit_of[c.value] not in interval_of_unit:
                continue
            split = split_at(c, peak)
            if split is None:
                continue
            k, early_end, clone_t = split
            if not all(operand_ok(o, clone_t) for o in c.operands):
                continue
            cost_at_peak = 0
            for o in c.operands:
                unit = graph.units[unit_of[o]]
                if unit.movable:
                    s, a, b = state.intervals[interval_of_unit[unit.id]]
                    if b < peak <= clone_t:
                        cost_at_peak += s
            saved = graph.values[c.value].size - cost_at_peak
            if saved <= 0:
                continue
            score = saved / (c.cost_s + 1e-9)
            if choice is None or score > choice[0]:
                choice = (score, c, k, early_end, clone_t)
        if choice is None:
            break
        _, c, k, early_end, clone_t = choice
        iv = state.intervals[interval_of_unit[unit_of[c.value]]]
        late_end = iv[2]
        iv[2] = early_end
        state.extra.append((graph.values[c.value].size, clone_t, late_end))
        for o in c.operands:
            unit = graph.units[unit_of[o]]
            if unit.movable:
                ov = state.intervals[interval_of_unit[unit.id]]
                ov[2] = max(ov[2], clone_t)
            operand_of_clone.add(o)
        recomputed.add(c.value)
        state.picks.append((c, k))
        picks_since_place += 1
        if prof.max() - graph.values[c.value].size > target_temp and picks_since_place < 8:
            continue
        picks_since_place = 0     # plain best-fit per pick (cheap); _place at the end
        plan = _realize(graph, order, state, place_lib.best_fit(state.problem()))
        if best is None or plan.temp_bytes < best.temp_bytes:
            best = plan
        if plan.temp_bytes <= target_temp:
            return plan
    if state.picks and picks_since_place:
        plan = _realize(graph, order, state, _place(state, base))
        if best is None or plan.temp_bytes < best.temp_bytes:
            best = plan
    return best


def _operand_intact(graph: ScheduleGraph, spans, step, interval_of_unit, value_id: int,
                    at: int) -> bool:
    """Whether operand ``value_id`` can stay intact until a second run at doubled step ``at``."""
    unit = graph.units[graph.unit_of_value[value_id]]
    v = graph.values[value_id]
    if not unit.movable:
        alloc = graph.allocations[unit.allocation]
        if alloc.kind in ("parameter", "constant") and not alloc.live_out:
            return True
        return any(2 * s + 1 <= at <= 2 * e + 1 for s, e in spans[unit.id])
    if unit.id not in interval_of_unit:
        return False
    # no other member of the unit may write its bytes before the second run
    own = 2 * min(s for s, _ in spans[unit.id]) + 1
    for other in unit.values:
        if other != value_id and graph.values[other].def_node != v.def_node:
            o_start = 2 * step[graph.values[other].def_node] + 1
            if own < o_start <= at:
                return False
    return True


def _new_state(graph: ScheduleGraph, order: Sequence[int]) -> _State:
    pp, owners = graph.placement_problem(order)
    gapped = {owners[i] for group in pp.same_offset for i in group} if pp.same_offset else set()
    intervals = [[iv.size, 2 * iv.start + 1, 2 * iv.end + 1] for iv in pp.intervals]
    interval_of_unit = {u: i for i, u in enumerate(owners) if u not in gapped}
    return _State(pp, owners, intervals, interval_of_unit)


def choose_model(graph: ScheduleGraph, order: Sequence[int], cands: Sequence[Candidate],
                 target_temp: int, *, time_limit_s: float = 30.0, engine: str = "cpsat",
                 warm: RecomputePlan | None = None,
                 tried: list[RecomputePlan] | None = None,
                 base: sp.Placement | None = None, fit_s: float = 0.0) -> RecomputePlan | None:
    """Recomputations chosen by a model on the fixed ``order``
    (``olla_jax.solve.recompute``): the least extra roofline cost whose live
    bytes fit ``target_temp``, else the least peak; warm-started from ``warm``
    (the greedy's plan).  The live-bytes profile is not best-fit's arena
    (idle output space takes some values, fragmentation adds some), so the
    model's budget is corrected by what placement reached and solved again
    while time is left.  None when nothing is picked; every plan solved is
    appended to ``tried`` when given; ``base``: best-fit's placement of
    ``order`` without recomputation (computed when None); ``fit_s``: what
    one best-fit takes (a plan's placement, past a solve's limit, takes two:
    the first solve is given ``time_limit_s`` less one, the next less what
    placing the first took)."""
    from olla_jax.solve import place as place_lib
    from olla_jax.solve import recompute as model
    t0 = time.monotonic()
    state0 = _new_state(graph, order)
    step = _step(graph, order)
    spans = graph.unit_spans(order)
    unit_of = graph.unit_of_value
    choices, keys = [], []                      # keys: (candidate, [splits per option])
    for c in cands:
        unit = unit_of[c.value]
        if unit not in state0.interval_of_unit:
            continue
        iv_index = state0.interval_of_unit[unit]
        _, iv_start, iv_end = state0.intervals[iv_index]
        users = sorted(c.users, key=lambda n: step[n])
        times = [2 * step[c.producer] + 1] + [2 * step[u] + 1 for u in users]
        options, ks = [], []
        for k in range(len(users)):
            early_end, clone_t = times[k], 2 * step[users[k]]
            if not (iv_start <= early_end and early_end + 1 <= clone_t - 1 and clone_t <= iv_end):
                continue
            if not _late_part_ok(graph, step, c, users[k]):
                continue
            if not all(_operand_intact(graph, spans, step, state0.interval_of_unit, o, clone_t)
                       for o in c.operands):
                continue
            extend = []
            for o in c.operands:
                unit_o = graph.units[unit_of[o]]
                if unit_o.movable and unit_o.id in state0.interval_of_unit:
                    extend.append((state0.interval_of_unit[unit_o.id], clone_t))
            options.append(model.Option((early_end + 1, clone_t - 1), tuple(sorted(set(extend)))))
            ks.append(k)
        more, ks_more = _two_copy_options(options, ks)
        options, ks = options + more, [(k,) for k in ks] + ks_more
        if options:
            choices.append(model.Choice(iv_index, tuple(options), max(1, round(c.cost_s * 1e9))))
            keys.append((c, ks))
    if not choices:
        return None
    # Only what best-fit puts in the arena counts (idle output space takes the
    # rest): the live bytes of those are the model's proxy for the arena.
    placed = base if base is not None else place_lib.best_fit(state0.problem())
    sizes = tuple(iv[0] if region == sp.ARENA else 0
                  for iv, region in zip(state0.intervals, placed.region))
    starts = tuple(iv[1] for iv in state0.intervals)
    ends = tuple(iv[2] for iv in state0.intervals)
    hint = None
    if warm is not None and warm.splits:
        chosen = defaultdict(tuple)
        for v, k in sorted(warm.splits):
            chosen[v] += (k,)
        hint = [ks.index(chosen[c.value]) if chosen.get(c.value) in ks else -1 for c, ks in keys]
    none = [-1] * len(choices)
    problem0 = model.RecomputeProblem(sizes, starts, ends, tuple(choices), 0)
    peak0 = int(model.profile(problem0, none).max())
    base = placed.arena_size
    # live bytes the arena does not hold (idle output space takes them), or
    # fragmentation it adds (negative): the model's budget is offset by it
    model_budget = target_temp + peak0 - base
    best, placing, caps = None, fit_s, {}
    for _ in range(6):
        left = time_limit_s - (time.monotonic() - t0) - placing
        if left <= 0.2:
            break
        problem = dataclasses.replace(problem0, budget=max(0, model_budget), caps=tuple(caps.items()))
        sol = model.solve(problem, engine=engine, time_limit_s=left, hint=hint)
        if not any(k >= 0 for k in sol.picks):
            break
        mark = time.monotonic()
        plan = plan_of(graph, order, [(c, k) for (c, ks), pick in zip(keys, sol.picks)
                                      if pick >= 0 for k in ks[pick]], base=placed)
        placing = time.monotonic() - mark
        plan = dataclasses.replace(plan, how=f"model ({engine}"
                                   + (", optimal)" if sol.optimal else ")"))
        if tried is not None:
            tried.append(plan)
        logging.info("recomputation model: budget %d, %d step caps, live-bytes peak %d (met %s, "
                     "optimal %s) in %.1f s, placed %d, target %d", problem.budget,
                     len(problem.caps), sol.peak, sol.met, sol.optimal, sol.seconds,
                     plan.temp_bytes, target_temp)
        if best is None or _better(plan, best, target_temp):
            best = plan
        if plan.temp_bytes <= target_temp or not sol.met:
            break
        # placement lost this much over the live bytes the model reached: ask
        # for that much less than what it reached (not than what it was asked,
        # or a plan already below the new budget comes back unchanged), and,
        # at each step where the arena's top is over the target, that step's
        # excess less than the live bytes there (the top is often not at the
        # live-bytes peak: fragmentation)
        model_budget = min(model_budget, sol.peak) - (plan.temp_bytes - target_temp)
        caps = _over_target_caps(problem, sol.picks, plan, target_temp, caps)
        hint = list(sol.picks)
    return best


# Two-copy options per value: pairs among its this many longest gaps.
_TWO_COPY_GAPS = 6


def _two_copy_options(options, ks, longest: int | None = None):
    """Options that recompute a value twice (``model.Option.more``): pairs of
    its one-copy ``options`` (split before reader ``ks[j]``) among the
    ``longest`` gaps, the second copy's operands kept as long as both need;
    (options, their pairs of splits)."""
    from olla_jax.solve import recompute as model
    longest = _TWO_COPY_GAPS if longest is None else longest
    ranked = sorted(range(len(options)), key=lambda j: options[j].gap[0] - options[j].gap[1])
    top = sorted(ranked[:longest], key=lambda j: ks[j])
    out, pairs = [], []
    for x, i in enumerate(top):
        for j in top[x + 1:]:
            first, second = options[i], options[j]
            if second.gap[0] <= first.gap[1] + 1:
                continue
            ends = dict(first.extend)
            for o, e in second.extend:
                ends[o] = max(ends.get(o, e), e)
            out.append(model.Option(first.gap, tuple(sorted(ends.items())), more=(second.gap,)))
            pairs.append((ks[i], ks[j]))
    return out, pairs


def _over_target_caps(problem, picks, plan: RecomputePlan, target_temp: int,
                      caps: dict[int, int]) -> dict[int, int]:
    """``caps`` (step -> live bytes) lowered, at each step where ``plan``'s
    arena reaches above ``target_temp``, to the live bytes ``picks`` leave
    there less that excess."""
    from olla_jax.solve import recompute as model
    live = model.profile(problem, picks)
    excess = np.zeros(len(live) + 1, dtype=np.int64)
    for start, end, top in plan.arena_blocks:
        if top > target_temp and start < len(live):
            seg = excess[start:min(end, len(live) - 1) + 1]
            np.maximum(seg, top - target_temp, out=seg)
    out = dict(caps)
    for t in np.flatnonzero(excess[:len(live)]).tolist():
        out[t] = min(out.get(t, live[t]), int(live[t] - excess[t]))
    return out


def plan_of(graph: ScheduleGraph, order: Sequence[int],
            picks: Sequence[tuple[Candidate, int]], *,
            base: sp.Placement | None = None, exact_s: float = 0.0,
            target_temp: int | None = None) -> RecomputePlan:
    """The plan that recomputes each candidate of ``picks`` before its k-th
    reader (in ``order``), placed by best-fit (``_place``; ``base``: best-fit's
    placement without recomputation, computed when None).  Copies run by
    time, a chain's operand first; a copy made after its operand's copy reads
    that copy.  With ``exact_s``, an exact placement search (``place_exact``)
    then lowers the arena for that long at most, stopping at ``target_temp``:
    the copies' short lives fragment best-fit's arena."""
    from olla_jax.solve import place as place_lib
    step = _step(graph, order)
    unit_of = graph.unit_of_value
    state = _new_state(graph, order)
    if base is None:
        base = place_lib.best_fit(state.problem())
    picked = []                                 # (clone time, candidate, k)
    for c, k in picks:
        users = sorted(c.users, key=lambda n: step[n])
        picked.append((2 * step[users[k]], c, k))
    picked.sort(key=lambda p: (p[0], step[p[1].producer]))
    copy = _copy_lives(graph, state, step, picked)   # (value, k) -> [size, born, end]
    for clone_t, c, k in picked:
        for o in c.operands:
            unit_o = graph.units[unit_of[o]]
            made = [key for key in copy if key[0] == o and copy[key][1] <= clone_t]
            if made:    # a chain reads the operand's latest copy
                last = max(made, key=lambda key: copy[key][1])
                copy[last][2] = max(copy[last][2], clone_t)
            elif unit_o.movable:
                ov = state.intervals[state.interval_of_unit[unit_o.id]]
                ov[2] = max(ov[2], clone_t)
        state.picks.append((c, k))
    state.extra = [tuple(copy[(c.value, k)]) for c, k in state.picks]
    placement = _place(state, base)
    if exact_s > 0.05 and (target_temp is None or placement.arena_size > target_temp):
        placement = place_lib.place_exact(state.problem(), time_limit_s=exact_s, hint=placement,
                                          target=target_temp)
    return _realize(graph, order, state, placement)


def _copy_lives(graph: ScheduleGraph, state: _State, step, picked) -> dict:
    """(value, k) -> [size, born, end] of the copy run before the k-th reader
    (``picked``: (clone time, candidate, k) by time); the first copy's
    interval in ``state`` is cut to end after the reader before the first
    split.  A value split several times has one copy per split, each read up
    to the reader before the next split, the last one until the value's end."""
    unit_of = graph.unit_of_value
    ks_of = defaultdict(list)
    for _, c, k in picked:
        ks_of[c.value].append(k)
    out, end_of = {}, {}
    for clone_t, c, k in picked:
        users = sorted(c.users, key=lambda n: step[n])
        iv = state.intervals[state.interval_of_unit[unit_of[c.value]]]
        ks = sorted(ks_of[c.value])
        if len(set(ks)) != len(ks):
            raise ValueError(f"value {c.value} is split twice before reader {k}")
        if c.value not in end_of:
            end_of[c.value] = iv[2]
            iv[2] = 2 * step[c.producer] + 1 if ks[0] == 0 else 2 * step[users[ks[0] - 1]] + 1
        nxt = [j for j in ks if j > k]
        end = 2 * step[users[nxt[0] - 1]] + 1 if nxt else end_of[c.value]
        out[(c.value, k)] = [graph.values[c.value].size, clone_t, end]
    return out


def _place(state: _State, base: sp.Placement) -> sp.Placement:
    """Best-fit of ``state``'s problem, or, when smaller, best-fit with the
    values that ``base`` (the placement before recomputation) put in idle
    output space kept there (the model counts them out of the arena; a plain
    best-fit may fill that space with others and leave them in the arena)."""
    from olla_jax.solve import place as place_lib
    problem = state.problem()
    plain = place_lib.best_fit(problem)
    grouped = {i for group in problem.same_offset for i in group}
    taken: dict[int, list[tuple[int, int, int, int]]] = {   # region -> (offset, size, start, end)
        r: [(o.offset, o.size, o.start, o.end) for o in region.occupants]
        for r, region in enumerate(problem.regions)}
    fixed = {}
    for i in range(len(state.intervals)):
        r = base.region[i]
        if r == sp.ARENA or i in grouped:
            continue
        iv, off = problem.intervals[i], base.offset[i]
        if any(off < o + sz and o < off + iv.size and iv.start <= e and s <= iv.end
               for o, sz, s, e in taken[r]):
            continue        # an operand kept longer for a copy now meets another there
        fixed[i] = (r, off)
        taken[r].append((off, iv.size, iv.start, iv.end))
    if not fixed:
        return plain
    free = [i for i in range(len(problem.intervals)) if i not in fixed]
    index = {i: k for k, i in enumerate(free)}
    regions = tuple(sp.Region(region.capacity, tuple(sp.Occupant(*x) for x in taken[r]))
                    for r, region in enumerate(problem.regions))
    reduced = sp.PlacementProblem(
        intervals=tuple(problem.intervals[i] for i in free), regions=regions,
        alignment=problem.alignment,
        same_offset=tuple(tuple(index[i] for i in group) for group in problem.same_offset))
    got = place_lib.best_fit(reduced)
    region, offset = [sp.ARENA] * len(problem.intervals), [0] * len(problem.intervals)
    for i, (r, off) in fixed.items():
        region[i], offset[i] = r, off
    for k, i in enumerate(free):
        region[i], offset[i] = got.region[k], got.offset[k]
    kept = sp.Placement(tuple(region), tuple(offset), got.arena_size)
    if kept.arena_size >= plain.arena_size:
        return plain
    place_lib.validate_placement(problem, kept)
    return kept


def _better(a: RecomputePlan, b: RecomputePlan, target: int) -> bool:
    """``a`` over ``b``: meeting the target first, then less extra cost; else less temp."""
    if (a.temp_bytes <= target) != (b.temp_bytes <= target):
        return a.temp_bytes <= target
    if a.temp_bytes <= target:
        return (a.extra_cost_s, a.temp_bytes) < (b.extra_cost_s, b.temp_bytes)
    return (a.temp_bytes, a.extra_cost_s) < (b.temp_bytes, b.extra_cost_s)


def ladder(graph: ScheduleGraph, order: Sequence[int], cands: Sequence[Candidate],
           targets: Sequence[int], *, time_limit_s: float = 10.0,
           engine: str = "cpsat", base_temp: int | None = None) -> list[RecomputePlan | None]:
    """Plans for ``targets`` (temp bytes), each searched by ``search`` (greedy,
    model, ``polish``, exact placement) within ``time_limit_s``, from the
    highest target down, monotone by construction: a lower target never gets
    more temp than a higher one (when its own plan would, or when the higher
    one's also meets it for less extra cost, it gets the higher one's), so the
    lowest target (1: the least reachable) is at most every other point; a
    target its own search missed gets the cheapest plan a lower target found
    that meets it.
    ``base_temp``: the temp without recomputation (on ``order``); a target it
    meets is not searched, and a plan not below it counts as none.  None
    where nothing is recomputed."""
    order_of = sorted(range(len(targets)), key=lambda i: -targets[i])
    out: list[RecomputePlan | None] = [None] * len(targets)
    prev = None
    for i in order_of:
        if prev is None and base_temp is not None and base_temp <= targets[i]:
            continue
        got = search(graph, order, cands, targets[i], time_limit_s=time_limit_s, engine=engine)
        if got is not None and base_temp is not None and got.temp_bytes >= base_temp:
            got = None
        if prev is not None and (got is None or got.temp_bytes > prev.temp_bytes
                                 or _better(prev, got, targets[i])):
            got = prev
        out[i] = prev = got
    # A target its own search missed takes the cheapest plan found for a
    # lower one that meets it; then monotone again, from the highest down.
    for i in order_of:
        own = out[i].temp_bytes if out[i] is not None else base_temp
        if own is not None and own <= targets[i]:
            continue
        meets = [p for p in out if p is not None and p.temp_bytes <= targets[i]]
        if meets:
            out[i] = min(meets, key=lambda p: (p.extra_cost_s, p.temp_bytes))
    prev = None
    for i in order_of:
        if prev is not None and (out[i] is None or out[i].temp_bytes > prev.temp_bytes):
            out[i] = prev
        prev = out[i]
    return out


def _realize(graph: ScheduleGraph, order: Sequence[int], state: _State,
             placement: sp.Placement) -> RecomputePlan:
    n = len(state.intervals)
    base = sp.Placement(placement.region[:n], placement.offset[:n], placement.arena_size)
    layout = layout_lib.realize(graph, order, base, state.owners)
    step = _step(graph, order)
    recomputes = []
    ks_of = defaultdict(list)       # a value recomputed several times: its copies' splits
    for c, k in state.picks:
        ks_of[c.value].append(k)
    for (c, k), region, offset in zip(state.picks, placement.region[n:], placement.offset[n:]):
        users = sorted(c.users, key=lambda u: step[u])
        upto = min((j for j in ks_of[c.value] if j > k), default=len(users))
        alloc = graph.temp_allocation if region == sp.ARENA else graph.regions[region]
        recomputes.append(layout_lib.Recompute(
            value=c.value, producer=graph.nodes[c.producer], before=graph.nodes[users[k]],
            late_users=tuple(graph.nodes[u] for u in users[k:upto]), place=(alloc, offset),
            size=graph.values[c.value].size))
    problem = state.problem()
    events = defaultdict(int)
    blocks = []
    for iv, region, offset in zip(problem.intervals, placement.region, placement.offset):
        if region == sp.ARENA:
            events[iv.start] += iv.size
            events[iv.end + 1] -= iv.size
            blocks.append((iv.start, iv.end, offset + iv.size))
    times = sorted(events)
    running = np.cumsum([events[t] for t in times])
    arena_live = max(running, default=0)
    peak_at = times[int(np.argmax(running))] if len(running) else -1
    places = dict(layout.places)
    for (c, k), r in zip(state.picks, recomputes):
        if k != max(ks_of[c.value]):
            continue
        for o in c.successors:      # written in place over the (last) copy: its bytes
            places[o] = r.place
    layout = dataclasses.replace(layout, places=places, recomputes=tuple(recomputes))
    return RecomputePlan(layout=layout, temp_bytes=layout.temp_bytes,
                         extra_flops=sum(c.flops for c, _ in state.picks),
                         picked=tuple(graph.nodes[c.producer] for c, _ in state.picks),
                         splits=tuple((c.value, k) for c, k in state.picks),
                         extra_cost_s=sum(c.cost_s for c, _ in state.picks),
                         arena_live=int(arena_live), arena_blocks=tuple(blocks),
                         arena_peak_at=int(peak_at))


def polish(graph: ScheduleGraph, order: Sequence[int], cands: Sequence[Candidate],
           plan: RecomputePlan, target_temp: int, *, time_limit_s: float,
           base: sp.Placement | None = None, tries: int = 8) -> RecomputePlan:
    """``plan`` with recomputations added one at a time where its placed arena
    peaks, each judged by its placement (``plan_of``), not by live bytes: the
    model counts only what best-fit put in the arena before recomputation, so
    a value it counts as free (held in idle output space) may come back into
    the arena with the copies, and a pick it sees no gain in may lower the
    placed arena.  A pick is kept when it lowers the arena's live bytes (the
    least arena an exact placement can reach); at each round the ``tries``
    largest values (the cheapest first among equals) whose gap covers the
    peak are placed.
    Stops at ``target_temp``, when nothing helps, or at ``time_limit_s``;
    ``plan`` itself when nothing was added."""
    t0 = time.monotonic()
    step = _step(graph, order)
    spans = graph.unit_spans(order)
    state0 = _new_state(graph, order)
    unit_of = graph.unit_of_value
    by_value = {c.value: c for c in cands}
    users = {c.value: sorted(c.users, key=lambda n: step[n]) for c in cands}

    def times(c: Candidate, k: int) -> tuple[int, int]:
        """(end of the first copy, birth of the second) of ``c`` split before reader k."""
        early = 2 * step[c.producer] + 1 if k == 0 else 2 * step[users[c.value][k - 1]] + 1
        return early, 2 * step[users[c.value][k]]

    def allowed(picks: dict[int, int], c: Candidate, k: int) -> bool:
        early, clone = times(c, k)
        if not early + 1 <= clone - 1 or not _late_part_ok(graph, step, c, users[c.value][k]):
            return False
        if not all(_operand_intact(graph, spans, step, state0.interval_of_unit, o, clone)
                   for o in c.operands):
            return False
        # no copy may run while an operand of it is dropped (inside its gap),
        # this one's or another's that reads this value
        for o in c.operands:
            if o in picks:
                e, cl = times(by_value[o], picks[o])
                if e < clone < cl:
                    return False
        for v, kv in picks.items():
            if c.value in by_value[v].operands and early < times(by_value[v], kv)[1] < clone:
                return False
        return True

    best = plan
    picks = dict(plan.splits)
    while best.arena_live > target_temp and time.monotonic() - t0 < time_limit_s:
        t = best.arena_peak_at
        options = []
        for c in cands:
            if c.value in picks or unit_of[c.value] not in state0.interval_of_unit \
                    or graph.units[unit_of[c.value]].id in {unit_of[v] for v in picks}:
                continue
            for k in range(len(users[c.value])):
                early, clone = times(c, k)
                if early < t < clone and allowed(picks, c, k):
                    size = graph.values[c.value].size
                    options.append((-size, c.cost_s, c.value, k))
                    break           # the earliest reader after the peak: the shortest gap
        found = None
        for _, _, v, k in sorted(options)[:tries]:
            if time.monotonic() - t0 >= time_limit_s:
                break
            trial = {**picks, v: k}
            got = plan_of(graph, order, [(by_value[u], kk) for u, kk in trial.items()], base=base)
            if got.arena_live < best.arena_live and (
                    found is None or (got.arena_live, got.extra_cost_s) <
                    (found[0].arena_live, found[0].extra_cost_s)):
                found = (got, trial)
        logging.info("recomputation polish: arena peak at %d, %d options, best %s (was %d)", t,
                     len(options), found and found[0].arena_live, best.arena_live)
        if found is None:
            break
        best, picks = found
        best = dataclasses.replace(best, how=plan.how + ", polished")
    return best


def split_copies(graph: ScheduleGraph, order: Sequence[int], cands: Sequence[Candidate],
                 plan: RecomputePlan, target_temp: int, *, time_limit_s: float,
                 base: sp.Placement | None = None, tries: int = 8) -> RecomputePlan:
    """``plan`` with values it recomputes recomputed once more, where a copy
    (or the first run) is held idle across the placed arena's peak between
    two of its readers: a further copy then runs just before the later
    reader, and the copy before it dies after the earlier one (several
    copies of one value, each read by its own readers in order).  Each split
    is judged by its placement (``plan_of``), kept when it lowers the arena's
    live bytes, or when it keeps them but moves the peak (two idle peaks of
    one height need two splits; ``tries`` such moves at most); at each round
    the ``tries`` largest values (the cheapest first among equals) whose idle
    gap covers the peak are placed.  Stops at ``target_temp``, when nothing
    helps, or at ``time_limit_s``; the least arena found, ``plan`` itself
    when no split lowered it."""
    t0 = time.monotonic()
    step = _step(graph, order)
    spans = graph.unit_spans(order)
    state0 = _new_state(graph, order)
    by_value = {c.value: c for c in cands}
    if any(v not in by_value for v, _ in plan.splits):
        return plan
    users = {c.value: sorted(c.users, key=lambda n: step[n]) for c in cands}
    picked = {v for v, _ in plan.splits}   # operands recomputed: read from a copy

    def gap(v: int, k: int) -> tuple[int, int]:
        """(last read before reader k, birth of a copy before it), doubled time."""
        c = by_value[v]
        early = 2 * step[c.producer] + 1 if k == 0 else 2 * step[users[v][k - 1]] + 1
        return early, 2 * step[users[v][k]]

    def allowed(v: int, k: int, ks: set[int]) -> bool:
        c = by_value[v]
        early, clone = gap(v, k)
        if k in ks or early + 1 > clone - 1:
            return False
        if k > max(ks) and not _late_part_ok(graph, step, c, users[v][k]):
            return False    # values written over it in place must follow its last copy
        return all(o in picked or _operand_intact(graph, spans, step, state0.interval_of_unit,
                                                  o, clone) for o in c.operands)

    # ``now`` walks on: a split that only moves the peak elsewhere (another
    # peak of the same height, which the next split may cut) is taken too,
    # ``tries`` times at most; ``best`` is the least arena found
    best = now = plan
    splits, level = list(plan.splits), 0
    while now.arena_live > target_temp and time.monotonic() - t0 < time_limit_s:
        t = now.arena_peak_at
        ks_of = defaultdict(set)
        for v, k in splits:
            ks_of[v].add(k)
        options = []
        for v, ks in ks_of.items():
            for k in range(len(users[v])):
                early, clone = gap(v, k)
                if early < t < clone and allowed(v, k, ks):
                    options.append((-graph.values[v].size, by_value[v].cost_s, v, k))
        found = None
        for _, _, v, k in sorted(options)[:tries]:
            if time.monotonic() - t0 >= time_limit_s:
                break
            trial = splits + [(v, k)]
            got = plan_of(graph, order, [(by_value[u], kk) for u, kk in trial], base=base)
            if (got.arena_live < now.arena_live or got.arena_live == now.arena_live
                    and got.arena_peak_at != t and level < tries) and (
                    found is None or (got.arena_live, got.extra_cost_s) <
                    (found[0].arena_live, found[0].extra_cost_s)):
                found = (got, trial)
        logging.info("recomputation, copies split: arena peak at %d, %d options, best %s (was %d)",
                     t, len(options), found and found[0].arena_live, now.arena_live)
        if found is None:
            break
        level += found[0].arena_live == now.arena_live
        now, splits = found
        now = dataclasses.replace(now, how=plan.how + ", copies split")
        if (now.arena_live, now.temp_bytes) < (best.arena_live, best.temp_bytes):
            best = now
    return best


# --- the whole search, within a time limit ----------------------------------

# Shares of ``search``'s time limit (ends, as fractions of it): sink moves,
# the greedy on each order, the model on the order the greedy did best on,
# the exact placement of the best plan; the last tenth is left for what runs
# past its share (a best-fit after the model, a solver's stop).
_SINK_END = 0.1
_GREEDY_END = 0.35      # the greedy is the warm start: the model does better with the time
_MODEL_END = 0.7        # then ``polish`` (half of what is left) and the exact placement
_PLACE_END = 0.93


def search(graph: ScheduleGraph, order: Sequence[int], cands: Sequence[Candidate],
           target_temp: int, *, time_limit_s: float, engine: str = "cpsat",
           clock=time.monotonic) -> RecomputePlan | None:
    """The recomputation plan for ``target_temp`` (the best by ``_better``),
    found within ``time_limit_s``.  Orders: ``order`` and ``order`` with sink
    moves (``solve.sink``: nodes run just after their producers or before
    their consumers), which shorten lives that recomputation on a fixed order
    cannot cut (a weight gradient's dot left at the end of the step keeps its
    activation until then).  The greedy runs on each; the model (``engine``
    "cpsat" / "mip") on the order the greedy did best on, warm-started from
    it; the best plan's placement is then searched exactly (``plan_of``'s
    ``exact_s``) with what is left.  ``clock``: seconds, for the shares."""
    from olla_jax.solve import sink
    from olla_jax.solve.dag import Dag
    from olla_jax.solve.evaluate import Evaluator
    t0 = clock()

    def left(until: float) -> float:
        return t0 + until * time_limit_s - clock()
    if not cands:
        return None
    from olla_jax.solve import place as place_lib
    problem0 = _new_state(graph, order).problem()
    mark = clock()
    base0 = place_lib.best_fit(problem0)    # the order's placement, shared by the searches
    one_fit = clock() - mark     # what placing a plan costs past a search's own limit
    orders = [tuple(order)]
    if left(_SINK_END) > 0.05:
        problem = graph.order_problem()
        moved = tuple(sink.improve(Evaluator(problem), Dag.of(problem), order,
                                   deadline=time.monotonic() + left(_SINK_END)))
        if moved != orders[0]:
            orders.append(moved)
    best, best_order, pool = None, orders[0], []
    for i, o in enumerate(orders):
        share = (left(_GREEDY_END if engine != "greedy" else _PLACE_END) - one_fit) \
            / (len(orders) - i)
        if share <= 0.05 and i > 0:
            break       # (on the order given the greedy makes one pick at least)
        found = choose(graph, o, cands, target_temp, time_limit_s=max(0.0, share),
                       base=base0 if i == 0 else None)
        if found is not None:
            pool.append(found)
            logging.info("recomputation, greedy on order %d of %d: temp %d, %.1f s in", i + 1,
                         len(orders), found.temp_bytes, clock() - t0)
        if found is not None and (best is None or _better(found, best, target_temp)):
            best, best_order = found, o
    if engine != "greedy" and left(_MODEL_END) - one_fit > 0.2:
        # (its plans are placed past its solves' limit: two best-fits, ``_place``)
        got = choose_model(graph, best_order, cands, target_temp, engine=engine, warm=best,
                           time_limit_s=left(_MODEL_END) - one_fit, tried=pool,
                           base=base0 if best_order == orders[0] else None, fit_s=one_fit)
        if got is not None:
            logging.info("recomputation, model: temp %d (%s), %.1f s in", got.temp_bytes, got.how,
                         clock() - t0)
        if got is not None and (best is None or _better(got, best, target_temp)):
            best = got
    if engine != "greedy" and best is not None and best.temp_bytes > target_temp \
            and (left(_PLACE_END) - 2 * one_fit) / 2 > 0.2:
        # (the exact placement keeps the other half: it gains the most when
        # the live bytes fit and the arena does not)
        start = min(pool, key=lambda p: (p.arena_live, p.extra_cost_s), default=best)
        got = polish(graph, start.layout.order, cands, start, target_temp,
                     time_limit_s=(left(_PLACE_END) - 2 * one_fit) / 2,
                     base=base0 if start.layout.order == orders[0] else None)
        if got is not start:
            pool.append(got)
            logging.info("recomputation, polished: arena live bytes %d -> %d, temp %d, %.1f s in",
                         start.arena_live, got.arena_live, got.temp_bytes, clock() - t0)
            if _better(got, best, target_temp):
                best = got
    best = _split_in_search(graph, cands, pool, best, target_temp, engine,
                            (left(_PLACE_END) - 2 * one_fit) / 3, base0, orders[0], clock, t0)
    if best is not None and best.temp_bytes > target_temp:
        # the plan whose arena's live bytes promise the most, placed exactly
        def promise(p: RecomputePlan):
            fits = p.arena_live <= target_temp
            return (not fits, p.extra_cost_s if fits else p.arena_live, p.temp_bytes)
        # (the cheapest that may fit is the hardest to fit: when its placement
        # does not, the next, with half of what is left each but the last)
        ranked, seen = [], set()
        for p in sorted(pool, key=promise):
            if (p.layout.order, p.splits) not in seen:
                seen.add((p.layout.order, p.splits))
                ranked.append(p)
        ranked = ranked[:3]
        by_value = {c.value: c for c in cands}
        for i, pick in enumerate(ranked):
            if left(_PLACE_END) - 2 * one_fit <= 0.1:
                break
            share = (left(_PLACE_END) - 2 * one_fit) / (1 if i == len(ranked) - 1 else 2)
            placed = plan_of(graph, pick.layout.order, [(by_value[v], k) for v, k in pick.splits],
                             exact_s=share, target_temp=target_temp)
            placed = dataclasses.replace(placed, how=pick.how + ", placed exactly")
            logging.info("recomputation placed exactly: temp %d (arena live bytes %d), %.1f s in",
                         placed.temp_bytes, pick.arena_live, clock() - t0)
            if _better(placed, best, target_temp):
                best = placed
            if best.temp_bytes <= target_temp:
                break
    return best


def _split_in_search(graph, cands, pool, best, target_temp, engine, share, base0, order0,
                     clock, t0):
    """``search``'s step for ``split_copies``: the pooled plan whose arena's
    live bytes are least, its copies split for ``share`` seconds; the split
    plan joins ``pool`` and replaces ``best`` when better."""
    if engine == "greedy" or best is None or best.temp_bytes <= target_temp or share <= 0.2:
        return best
    start = min(pool, key=lambda p: (p.arena_live, p.extra_cost_s), default=best)
    got = split_copies(graph, start.layout.order, cands, start, target_temp,
                       time_limit_s=share, base=base0 if start.layout.order == order0 else None)
    if got is start:
        return best
    pool.append(got)
    logging.info("recomputation, copies split: arena live bytes %d -> %d, temp %d, %.1f s in",
                 start.arena_live, got.arena_live, got.temp_bytes, clock() - t0)
    return got if _better(got, best, target_temp) else best


# --- a bound that holds with recomputation ------------------------------------

def working_set_bound(graph: ScheduleGraph) -> tuple[int, str]:
    """(bytes, instruction): a lower bound of the temp of any plan that runs the
    same kernels, recomputed or not: at one step, the operands and results of
    an instruction (and what a while, call or conditional holds inside) that
    no idle output space can take (``graph.resident``, without values held
    across instructions, which recomputation may drop)."""
    from olla_jax.graph import resident
    found = resident.resident_bound(graph, across=False)
    return found.value, graph.nodes[found.node] if found.value else ""


def recompute_floor(graph: ScheduleGraph, cands: Sequence[Candidate], *,
                    time_limit_s: float = 10.0) -> int:
    """A lower bound of the temp of any plan that recomputes only values of
    ``cands`` (each as often as it likes), under any order: the order lower
    bounds (``solve.bounds``, simple and min-cut over ``graph.bound_problems``)
    of the graph where each candidate's unit is live only at the steps of the
    nodes that write or read it (some copy of it is live there), not between.
    That is a relaxation of every such plan: every other value lives at least
    as long with recomputation (an operand is kept for a copy, never freed
    early), so a budget below this is out of reach without recomputing other
    values (a loop's results, say)."""
    from olla_jax.solve import bounds
    drop = {graph.unit_of_value[c.value] for c in cands}
    relaxed = dataclasses.replace(graph, units=tuple(
        dataclasses.replace(u, size=0) if u.id in drop else u for u in graph.units))
    at_nodes = []                    # (size, nodes where some copy is live)
    for u in drop:
        unit = graph.units[u]
        nodes = set()
        for v in unit.values:
            nodes |= {graph.values[v].def_node, *graph.values[v].touches}
        at_nodes.append((unit.size, nodes))
    t0 = time.monotonic()
    best = 0
    # as ``graph.bound_problems``: one problem per threshold c, counting in the
    # arena only units larger than c (a smaller one may sit in an output region)
    for c in sorted({0, *graph.order_problem().region_sizes}):
        problem = relaxed.threshold_problem(c, for_bound=True)
        extra = list(problem.node_extra)
        for size, nodes in at_nodes:
            if size > c:
                for n in nodes:
                    extra[n] += size
        problem = dataclasses.replace(problem, node_extra=tuple(extra))
        best = max(best, bounds.simple_bound(problem).value)
        left = time_limit_s - (time.monotonic() - t0)
        if left > 0.1:
            best = max(best, bounds.min_cut_bound(problem, time_limit_s=left, floor=best).value)
    return int(best)


# --- what holds the peak ----------------------------------------------------

@dataclasses.dataclass(frozen=True)
class HeldAtPeak:
    """The arena's live bytes where they peak under a plan, by why they stay:
    what a missed budget would need recomputed, and whether it may be."""
    node: str                                   # the entry instruction at the peak
    arena_live: int                             # bytes live in the arena there
    by_reason: tuple[tuple[str, int], ...]      # (reason, bytes), most bytes first

    def describe(self, top: int = 4) -> str:
        parts = [f"{b / 2**20:,.2f} MiB {why}" for why, b in self.by_reason[:top]]
        return (f"arena live bytes peak at {self.node} ({self.arena_live / 2**20:,.2f} MiB): "
                + "; ".join(parts))


def held_at_peak(graph: ScheduleGraph, capture, layout=None) -> HeldAtPeak:
    """What is live in the arena where ``layout`` (a plan's, recomputations
    included; XLA's own when None) has the most live bytes there, grouped by
    why: recomputable values (those whose gap between readers spans the peak
    apart from those with no such gap), copies, and each reason
    ``refusals`` gives for the rest."""
    order = layout.order if layout is not None else graph.xla_order
    places = dict(layout.places) if layout is not None else {}
    cands, refused = _screen(graph, capture)
    by_value = {c.value: c for c in cands}
    why = _named(graph, cands, refused)
    step = _step(graph, order)
    spans = graph.unit_spans(order)
    state = _new_state(graph, order)
    unit_of = graph.unit_of_value
    users = {c.value: sorted(c.users, key=lambda n: step[n]) for c in cands}
    copies = []                                 # (size, start, end, in the arena)
    for r in (layout.recomputes if layout is not None else ()):
        c = by_value.get(r.value)
        if c is None or graph.node_index.get(r.before) not in users[c.value]:
            continue
        k = users[c.value].index(graph.node_index[r.before])
        iv = state.intervals[state.interval_of_unit[unit_of[c.value]]]
        copies.append((r.size, 2 * step[users[c.value][k]], iv[2],
                       r.place[0] == graph.temp_allocation))
        iv[2] = 2 * step[c.producer] + 1 if k == 0 else 2 * step[users[c.value][k - 1]] + 1
    for r in (layout.recomputes if layout is not None else ()):
        c = by_value.get(r.value)
        for o in (c.operands if c is not None else ()):
            i = state.interval_of_unit.get(unit_of[o])
            if i is not None:
                state.intervals[i][2] = max(state.intervals[i][2],
                                            2 * step[graph.node_index[r.before]])

    def in_arena(unit) -> bool:
        return all(places.get(v, (graph.values[v].allocation, 0))[0] == graph.temp_allocation
                   for v in unit.values)
    live = [(size, a, b, graph.units[state.owners[i]])
            for i, (size, a, b) in enumerate(state.intervals)]
    horizon = 2 * len(graph.flat) + 2
    diff = np.zeros(horizon + 2, dtype=np.int64)
    for size, a, b, unit in live:
        if in_arena(unit):
            diff[a] += size
            diff[b + 1] -= size
    for size, a, b, arena in copies:
        if arena:
            diff[a] += size
            diff[b + 1] -= size
    profile = np.cumsum(diff)[:horizon]
    t = int(np.argmax(profile))
    held: dict[str, int] = defaultdict(int)
    for size, a, b, unit in live:
        if not (a <= t <= b and in_arena(unit)):
            continue
        member = next((v for v in unit.values if v in by_value), None)
        if member is None:
            # a loop's or call's share names the unit (it cannot be dropped without it)
            texts = [why.get(v, "an input or output") for v in
                     sorted(unit.values, key=lambda v: step[graph.values[v].def_node])]
            held[next((x for x in texts if "loop" in x), texts[0])] += size
            continue
        c = by_value[member]
        times = [2 * step[c.producer] + 1] + [2 * step[u] + 1 for u in users[member]]
        gap = any(times[k] < t < times[k + 1] - 1 and _late_part_ok(graph, step, c, u)
                  and all(_operand_intact(graph, spans, step, state.interval_of_unit, o,
                                          times[k + 1] - 1) for o in c.operands)
                  for k, u in enumerate(users[member]))
        held["recomputable across the peak" if gap
             else "recomputable, but written or read at the peak (no gap spans it)"] += size
    for size, a, b, arena in copies:
        if arena and a <= t <= b:
            held["copies of recomputed values"] += size
    node = graph.nodes[graph.flat_node[min(max(t - 1, 0) // 2, len(graph.flat_node) - 1)]]
    return HeldAtPeak(node, int(profile[t]) if len(profile) else 0,
                      tuple(sorted(held.items(), key=lambda x: -x[1])))


# --- the budget entry point -------------------------------------------------

def _noted(plan, text: str, spent: dict[str, float]):
    """``plan`` with ``text`` in its notes (and warned), and the seconds
    ``spent`` on the search and on verification added to its own."""
    warn(f"olla_jax recomputation: {text}")
    return dataclasses.replace(plan, notes=plan.notes + (text,),
                               solve_seconds=plan.solve_seconds + spent["search"],
                               verify_seconds=plan.verify_seconds + spent["verify"])


def recompute_to_budget(result, budget: int, *, args: Sequence[Any] = (),
                        static_argnums: Sequence[int] = (), time_limit_s: float = 30.0,
                        verify_trials: int = 2, measure_time: bool = True,
                        engine: str = "cpsat"):
    """``result`` (a Plan over the budget) with values recomputed until the
    step's total fits ``budget``, checked, applied and verified; or the least
    memory reached, with the reason in its notes.

    ``engine``: "greedy" (picks at the peak, most bytes per cost first), or
    "cpsat" / "mip": the model of ``choose_model`` (least extra cost that meets
    the budget, else least memory), warm-started from the greedy, whose plan
    is kept when the model finds nothing better."""
    if engine not in ("greedy", "cpsat", "mip"):
        raise ValueError(f"engine must be 'greedy', 'cpsat' or 'mip', not {engine!r}")

    spent = {"search": 0.0, "verify": 0.0}      # seconds, once the search has run

    def note(plan, text: str):
        return _noted(plan, text, spent)

    graph, cap = result.graph, result.capture
    if graph is None or cap is None:
        return note(result, "no memory model of this step: recomputation not tried")
    backend = Backend.parse(result.backend)
    if not (backend.kind == "cpu" or backend.compile_only) or cap.executable is None:
        return note(result, f"recomputation is applied only on CPU executables and built for "
                            f"compile-only GPU targets (this step is for {result.backend})")
    if graph.temp_allocation < 0 or graph.allocations[graph.temp_allocation].is_tuple:
        return note(result, "XLA's temp allocation cannot be resized here: recomputation not tried")
    t0 = time.monotonic()
    fixed = result.argument_bytes + result.output_bytes - result.alias_bytes
    target = budget - fixed
    if target <= 0:
        return note(result, f"arguments and outputs alone take {fixed / 2**20:,.2f} MiB, more "
                            "than the budget")
    order = result.layout.order if result.layout is not None else graph.xla_order
    cands = candidates(graph, cap)
    logging.info("recomputation: %d candidate values", len(cands))
    found = search(graph, order, cands, target, engine=engine,
                   time_limit_s=time_limit_s - (time.monotonic() - t0))
    floor, where = working_set_bound(graph)
    # the planner's part, which ``time_limit_s`` bounds; the check, rewrite,
    # verification and timing after it go to ``verify_seconds`` (and the note)
    search_s = spent["search"] = time.monotonic() - t0
    if found is None or found.temp_bytes >= min(result.planned_temp_bytes,
                                                result.achieved_temp_bytes or math.inf):
        why = (f"; {where} alone needs {floor / 2**20:,.2f} MiB of temp for its operands and "
               "results" if floor else "")
        return note(result, f"recomputation found nothing that lowers the peak "
                            f"({len(cands)} values qualified{why})")
    return feed_back_plan(result, found, args=args, static_argnums=static_argnums,
                          verify_trials=verify_trials, measure_time=measure_time,
                          search_s=search_s, time_limit_s=time_limit_s, floor=floor)


def feed_back_plan(result, found: RecomputePlan, *, args: Sequence[Any] = (),
                   static_argnums: Sequence[int] = (), verify_trials: int = 2,
                   measure_time: bool = True, search_s: float = 0.0,
                   time_limit_s: float | None = None, floor: int | None = None):
    """``result`` (a Plan) with ``found``'s recomputation on ``result``'s
    capture: checked by the independent checker, the executable rewritten,
    verified bit-for-bit in a child and loaded (``recompute_to_budget``'s
    last part; ``ladder``'s plans go through it one by one); the reason in
    its notes when refused.  ``search_s``: the seconds the search took."""
    spent = {"search": search_s, "verify": 0.0}

    def note(plan, text: str):
        return _noted(plan, text, spent)

    graph, cap = result.graph, result.capture
    backend = Backend.parse(result.backend)
    if floor is None:
        floor, _ = working_set_bound(graph)
    layout = found.layout
    t_check = time.monotonic()
    rejected = checked.rejection(cap, layout, alignment=graph.alignment)
    if rejected is not None:
        return note(result, f"the independent checker rejected the recomputation plan: {rejected}")
    outcome = checked.apply(cap, layout, backend=result.backend, args=args,
                            static_argnums=static_argnums, trials=verify_trials,
                            what="the recomputation")
    verify_s = spent["verify"] = time.monotonic() - t_check
    if backend.compile_only and outcome.raw is not None and outcome.verification is None:
        return _built_unrun(result, found, floor, outcome, search_s, verify_s)  # GPU: not run
    if not outcome.ok:
        return note(result, f"recomputation not applied: {outcome.reason}")
    compiled = dataclasses.replace(result.compiled, executable=outcome.compiled)
    ratio = None
    if measure_time:
        t_time = time.monotonic()
        ratio = _time_ratio(result, compiled, args, static_argnums)
        verify_s += time.monotonic() - t_time
    total_flops = _step_flops(cap)
    share = f" ({100 * found.extra_flops / total_flops:.1f}% of the step's)" if total_flops else ""
    text = (f"recomputed {_copies_stated(found)} ({found.how}): {found.extra_flops:,} extra "
            f"FLOPs{share}"
            + (f", step time {ratio:.3f} x XLA's" if ratio is not None else "")
            + f"; searched in {search_s:.1f} s"
            + (f" (limit {time_limit_s:g} s)" if time_limit_s is not None else "")
            + ", checked, verified"
            + (" and timed" if ratio is not None else "") + f" in {verify_s:.1f} s")
    return dataclasses.replace(
        result, planned_temp_bytes=found.temp_bytes, achieved_temp_bytes=outcome.achieved_temp_bytes,
        lower_bound_bytes=min(floor, found.temp_bytes), verified=True, source="olla_jax",
        engine=result.engine + "+recompute", solve_seconds=result.solve_seconds + search_s,
        verify_seconds=result.verify_seconds + verify_s,
        notes=result.notes + (text,), compiled=compiled, layout=layout,
        recomputed=found.picked, extra_flops=found.extra_flops, step_time_ratio=ratio,
        executable_bytes=outcome.raw)   # the recomputing executable, the one ``compiled`` runs


def _copies_stated(found: RecomputePlan) -> str:
    """"N values", and how many copies when a value is recomputed several times."""
    values = len({v for v, _ in found.splits}) if found.splits else len(found.picked)
    copies = len(found.picked)
    return f"{values} values" + (f" ({copies} copies)" if copies != values else "")


def _built_unrun(result, found: RecomputePlan, floor: int, outcome, search_s: float,
                 verify_s: float):
    """A compile-only GPU target: the recomputing executable was built, read
    back and compared with the plan, but there is no GPU here to run it."""
    total_flops = _step_flops(result.capture)
    share = f" ({100 * found.extra_flops / total_flops:.1f}% of the step's)" if total_flops else ""
    text = (f"recomputed {_copies_stated(found)}: {found.extra_flops:,} extra FLOPs{share}; "
            f"not fed back: {outcome.reason}")
    return dataclasses.replace(
        result, planned_temp_bytes=found.temp_bytes, achieved_temp_bytes=None,
        lower_bound_bytes=min(floor, found.temp_bytes), verified=False, source="olla_jax",
        engine=result.engine + "+recompute", solve_seconds=result.solve_seconds + search_s,
        verify_seconds=result.verify_seconds + verify_s,
        notes=result.notes + (text,), layout=found.layout, recomputed=found.picked,
        extra_flops=found.extra_flops, executable_bytes=outcome.raw)


def xla_remat_to_budget(result, budget: int, fn, args: Sequence[Any], *,
                        static_argnums: Sequence[int] = (), donate_argnums: Sequence[int] = (),
                        compiler_options=None):
    """GPU: XLA's own rematerialization under a searched memory limit
    (``olla_jax.xla_remat``); ``result`` with XLA's best point when it fits
    better, the reason in its notes otherwise."""
    from olla_jax import xla_remat
    t0 = time.monotonic()
    try:
        points = xla_remat.search(fn, *args, backend=result.backend, budget_bytes=budget,
                                  static_argnums=static_argnums, donate_argnums=donate_argnums,
                                  compiler_options=compiler_options)
    except Exception as err:  # noqa: BLE001 - the answer is then order and placement alone
        text = f"XLA's rematerialization could not be searched ({type(err).__name__}: {err})"
        warn(f"olla_jax: {text}")
        return dataclasses.replace(result, notes=result.notes + (text,))
    base, chosen = points[0], xla_remat.best(points, budget)
    tried = ", ".join(f"{p.limit_bytes / 2**20:,.0f} MiB -> {p.total / 2**20:,.1f}"
                      for p in points[1:])
    if chosen.total >= result.runs_total_bytes:
        return dataclasses.replace(result, notes=result.notes + (
            f"XLA's rematerialization did not go below our plan (limits tried: {tried})",))
    extra = max(0, chosen.flops - base.flops)
    share = f" (+{100 * extra / base.flops:.1f}%)" if base.flops else ""
    text = (f"XLA's rematerialization with its memory limit forced to "
            f"{chosen.limit_bytes / 2**20:,.1f} MiB: temp {chosen.memory.temp / 2**20:,.2f} MiB, "
            f"{extra:,} extra FLOPs{share}; limits tried: {tried}")
    from olla_jax.capture.record import serialize_executable
    compiled = dataclasses.replace(result.compiled, executable=chosen.compiled)
    return dataclasses.replace(
        result, planned_temp_bytes=chosen.memory.temp, achieved_temp_bytes=chosen.memory.temp,
        argument_bytes=chosen.memory.argument, output_bytes=chosen.memory.output,
        alias_bytes=chosen.memory.alias, lower_bound_bytes=0, source="xla",
        engine="xla-remat", verified=False, compiled=compiled, layout=None,
        executable_bytes=serialize_executable(chosen.compiled),   # XLA's rematerializing one, not ours
        extra_flops=extra, solve_seconds=result.solve_seconds + time.monotonic() - t0,
        notes=result.notes + (text,))


def _step_flops(cap) -> int:
    try:
        return flops_lib.compiled_flops(cap.compiled)
    except Exception:  # noqa: BLE001 - a report detail
        return 0


def _time_ratio(result, compiled, args, static_argnums) -> float | None:
    from olla_jax.apply import timing
    import jax
    dynamic = [a for i, a in enumerate(args) if i not in set(static_argnums)]
    if not dynamic or any(isinstance(x, jax.ShapeDtypeStruct)
                          for x in jax.tree_util.tree_leaves(dynamic)):
        return None
    try:
        return timing.time_ratio(result.xla_compiled.executable, compiled.executable,
                                 tuple(dynamic), repeats=10).ratio
    except Exception:  # noqa: BLE001 - timing is a report detail
        logging.exception("timing the recomputed step failed")
        return None
