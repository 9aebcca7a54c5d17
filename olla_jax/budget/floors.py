"""What no recomputation plan can go below, and what holds a plan's peak."""

from __future__ import annotations

import dataclasses
import re
import time
from collections import defaultdict
from typing import Sequence

import numpy as np

from olla_jax.graph.model import ScheduleGraph
from olla_jax.sizes import size_text
from olla_jax.budget.candidates import Candidate, named_refusals, op_names, screen
from olla_jax.budget.recompute_plan import (
    copy_time, late_part_ok, new_state, operand_intact, step_index)


def working_set_bound(graph: ScheduleGraph, capture=None) -> tuple[int, str]:
    """(bytes, instruction): a lower bound of the temp of any plan that runs the
    same kernels, recomputed or not: at one step, the operands and results of
    an instruction (and what a while, call or conditional holds inside) that
    no idle output space can take (``graph.resident``, without values held
    across instructions, which recomputation may drop).  With ``capture``
    (CPU), values a loop body may recompute (``body.candidates``) count only
    at the steps that write or read them (``body.relaxed``)."""
    from olla_jax.graph import resident
    if capture is not None:
        from olla_jax.budget import body
        graph = body.relaxed(graph, body.candidates(graph, capture))
    found = resident.resident_bound(graph, across=False)
    return found.value, graph.nodes[found.node] if found.value else ""


def working_set_text(floor: int, where: str) -> str:
    """The working-set fact (``working_set_bound``) as the notes and errors say it."""
    return f"{where} alone needs {size_text(floor)} of temp for its operands and results"


# ``working_set_text`` inside a longer text, after "; " (a recomputation note
# that BudgetNotMet's message quotes, where it states the fact itself).
WORKING_SET_CLAUSE = re.compile(r"; \S+ alone needs [^;()]*? of temp for its operands and results")


def recompute_floor(graph: ScheduleGraph, cands: Sequence[Candidate], *,
                    time_limit_s: float = 10.0, capture=None) -> int:
    """A lower bound of the temp of any plan that recomputes only values of
    ``cands`` (each as often as it likes), under any order: the order lower
    bounds (``solve.bounds``, simple and min-cut over ``graph.bound_problems``)
    of the graph where each candidate's unit is live only at the steps of the
    nodes that write or read it (some copy of it is live there), not between.
    That is a relaxation of every such plan: every other value lives at least
    as long with recomputation (an operand is kept for a copy, never freed
    early), so a budget below this is out of reach without recomputing other
    values (a loop's results, say).  With ``capture`` (CPU), values a loop
    body may recompute count only where written or read (``body.relaxed``)."""
    from olla_jax.solve import bounds
    if capture is not None:
        from olla_jax.budget import body
        graph = body.relaxed(graph, body.candidates(graph, capture))
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


@dataclasses.dataclass(frozen=True)
class HeldAtPeak:
    """The arena's live bytes where they peak under a plan, by why they stay:
    what a missed budget would need recomputed, and whether it may be."""
    node: str                                   # the entry instruction at the peak
    arena_live: int                             # bytes live in the arena there
    by_reason: tuple[tuple[str, int], ...]      # (reason, bytes), most bytes first
    # The loops and calls whose results (or values sharing their bytes) are
    # held there, under LOOP_HELD: (instruction, its op_name, bytes), most first.
    loops: tuple[tuple[str, str, int], ...] = ()
    # How many steps of the order reach that peak (``node``'s is the one with
    # the least recomputable across it).
    peak_steps: int = 1
    # Doubled times (``State``'s axis) at which it peaks, PEAK_STEPS at most.
    peak_times: tuple[int, ...] = ()

    def describe(self, top: int = 4) -> str:
        parts = [f"{size_text(b)} {why}" for why, b in self.by_reason[:top]]
        where = (f"; reached at {self.peak_steps} steps, this one with the least "
                 "recomputable across it" if self.peak_steps > 1 else "")
        text = (f"arena live bytes peak at {self.node} ({size_text(self.arena_live)}{where}): "
                + "; ".join(parts))
        if self.loops:
            if any(PRNG_OP_NAME.search(op) for _, op, _ in self.loops):
                text += ("; jax.random's bits come from loops or calls on CPU (threefry2x32 "
                         "is lowered to a while loop, an rbg key's generator to a call), so they "
                         "stay (olla_jax.plan's default rng_lowering='unrolled' plans "
                         "threefry2x32 unrolled, as fusions)")
            text += "; loops held: " + ", ".join(
                f"{name} ({op_name or 'no op_name'}) {size_text(b)}"
                for name, op_name, b in self.loops[:top])
        return text


# Why a recomputable value stays at the peak (held_at_peak): a copy after
# it would free its bytes there, net of the operands it keeps alive across it
# (ACROSS), or it would keep as many bytes of its operands there (ACROSS_OPERANDS).
ACROSS = "recomputable across the peak"
ACROSS_OPERANDS = ("recomputable across the peak, but its copy would keep as many bytes of "
                   "its operands there")
# The most peak steps ``held_at_peak`` weighs, spread over them (each a pass
# over the live values).
PEAK_STEPS = 16


# Why a loop's or call's results stay (held_at_peak): a copy reruns one kernel,
# never a whole loop.
LOOP_HELD = ("made inside a loop or call, or sharing bytes with its results "
             "(recomputing it needs a copy of the whole loop, which is not made)")

# The op_names of jax.random's loops: on CPU jax lowers threefry2x32, its
# default PRNG, to a rolled while loop (rbg keys: a call), so dropout masks'
# random bits are loops' results (benchmarks/rng_loops.py).
PRNG_OP_NAME = re.compile(r"threefry|rng_bit_generator|"
                          r"jit\(_(uniform|bernoulli|normal|randint|shuffle|random_bits)\)")


def held_at_peak(graph: ScheduleGraph, capture, layout=None, *,
                 peak_time: int | None = None) -> HeldAtPeak:
    """What is live in the arena where ``layout`` (a plan's, recomputations
    included; XLA's own when None) has the most live bytes there, grouped by
    why: recomputable values (those whose gap between readers spans the peak
    apart from those with no such gap), copies, and each reason
    ``refusals`` gives for the rest.  Where the peak is reached at several
    steps, the one with the least recomputable across it; ``peak_time``: that
    doubled time instead (one of ``HeldAtPeak.peak_times``)."""
    order = layout.order if layout is not None else graph.xla_order
    places = dict(layout.places) if layout is not None else {}
    # (without feeders: a copy whose operand has a feeder's copy before it
    # reads that, and the operand is not kept for it, below)
    cands, refused = screen(graph, capture, feeders=False)
    by_value = {c.value: c for c in cands}
    why = named_refusals(graph, cands, refused)
    step = step_index(graph, order)
    spans = graph.unit_spans(order)
    state = new_state(graph, order)
    unit_of = graph.unit_of_value
    users = {c.value: sorted(c.users, key=lambda n: step[n]) for c in cands}
    copies = []                                 # (size, start, end, in the arena)
    recomputes = sorted((r for r in (layout.recomputes if layout is not None else ())
                         if r.before in graph.node_index),
                        key=lambda r: step[graph.node_index[r.before]])
    inner = _body_copies(graph, capture, order, state, layout)
    copies += inner
    inner_values = _body_values(graph, capture)
    for v in inner_values:
        why[v] = "made inside a loop body, recomputable there (budget.body)"
    copy_of = {}                                # index in recomputes -> index in copies
    for j, r in enumerate(recomputes):
        if not r.late_users:        # a feeder's copy: read by the next copy alone
            at = copy_time(graph, step, graph.node_index[r.before])
            copies.append((r.size, at, at, r.place[0] == graph.temp_allocation))
            continue
        c = by_value.get(r.value)
        if c is None:
            continue
        iv = state.intervals[state.interval_of_unit[unit_of[c.value]]]
        later = [q for q in recomputes[j + 1:] if q.value == r.value]
        # The last copy keeps the unit's end (values written over it in place
        # move with it); an earlier one dies after its own last reader.
        end = (iv[2] if not later else
               2 * max(step[graph.node_index[u]] for u in r.late_users) + 1)
        copy_of[j] = len(copies)
        copies.append((r.size, copy_time(graph, step, graph.node_index[r.before]), end,
                       r.place[0] == graph.temp_allocation))
    for value in {r.value for r in recomputes if r.value in by_value}:
        c = by_value[value]
        first = min(step[graph.node_index[r.before]] for r in recomputes if r.value == value)
        earlier = [u for u in users[value] if step[u] < first]
        iv = state.intervals[state.interval_of_unit[unit_of[value]]]
        iv[2] = 2 * step[earlier[-1] if earlier else c.producer] + 1
    for r in recomputes:
        c = by_value.get(r.value)
        fed = {q.value for q in layout.recomputes if not q.late_users and q.before == r.before}
        at = copy_time(graph, step, graph.node_index[r.before])
        for o in (c.operands if c is not None and r.late_users else ()):
            if o in fed:
                continue
            # A chain: a copy made after (or just before) its operand's copy
            # reads that copy (``recompute_plan.add_entry_picks``), which
            # lives until it; the operand's own place is not kept for it.
            made = [j for j in copy_of if recomputes[j].value == o and
                    copies[copy_of[j]][1] <= at]
            if made:
                k = copy_of[max(made, key=lambda j: copies[copy_of[j]][1])]
                size, born, end, arena = copies[k]
                copies[k] = (size, born, max(end, at), arena)
                continue
            i = state.interval_of_unit.get(unit_of[o])
            if i is not None:
                state.intervals[i][2] = max(state.intervals[i][2],
                                            copy_time(graph, step, graph.node_index[r.before]))

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

    def operands_kept(c, u, t: int) -> int:
        """Arena bytes of ``c``'s operands that a copy before reader ``u``
        would keep across ``t`` (their own lives end before it)."""
        kept = 0
        for o in c.operands:
            i = state.interval_of_unit.get(unit_of[o])
            if i is not None and in_arena(graph.units[unit_of[o]]) and \
                    state.intervals[i][2] < t <= copy_time(graph, step, u):
                kept += state.intervals[i][0]
        return kept

    def held_at(t: int) -> tuple[dict[str, int], dict[str, int]]:
        """(bytes by why they stay, loops' bytes by instruction) live in the arena at ``t``."""
        held: dict[str, int] = defaultdict(int)
        loops: dict[str, int] = defaultdict(int)
        for size, a, b, unit in live:
            if not (a <= t <= b and in_arena(unit)):
                continue
            member = next((v for v in unit.values if v in by_value), None)
            if member is None:
                # a loop's or call's share names the unit (it cannot be dropped without it)
                ordered = sorted(unit.values, key=lambda v: step[graph.values[v].def_node])
                # (a unit a loop body may recompute keeps that reason)
                loop = None if inner_values.intersection(unit.values) else next(
                    (graph.values[v].def_node for v in ordered
                     if graph.block_length(graph.values[v].def_node) != 1), None)
                if loop is not None:
                    held[LOOP_HELD] += size
                    loops[graph.nodes[loop]] += size
                    continue
                texts = [why.get(v, "an input or output") for v in ordered]
                held[next((x for x in texts if "loop" in x), texts[0])] += size
                continue
            c = by_value[member]
            times = [2 * step[c.producer] + 1] + [2 * step[u] + 1 for u in users[member]]
            gaps = [u for k, u in enumerate(users[member])
                    if times[k] < t < copy_time(graph, step, u) and late_part_ok(graph, step, c, u)
                    and all(operand_intact(graph, spans, step, state.interval_of_unit, o,
                                            copy_time(graph, step, u)) for o in c.operands)]
            held[ACROSS if any(operands_kept(c, u, t) < size for u in gaps) else
                 ACROSS_OPERANDS if gaps else
                 "recomputable, but written or read at the peak (no gap spans it)"] += size
        for size, a, b, arena in copies:
            if arena and a <= t <= b:
                held["copies of recomputed values"] += size
        return held, loops

    # The arena may reach its peak at several steps: a plan below it must
    # lower each, so the one named is where the least is recomputable across
    # it (the first peak alone claimed bytes recomputable that lowered none of
    # the others: a flax MLP's 4.06 MiB, benchmarks/budget_runner_up.py).
    at_peak = np.flatnonzero(profile == profile.max()) if len(profile) else np.zeros(1, np.int64)
    tops = at_peak[np.unique(np.linspace(0, len(at_peak) - 1,
                                         min(len(at_peak), PEAK_STEPS)).astype(int))]
    weighed = [peak_time] if peak_time is not None else tops
    t, (held, loops) = min(((int(t), held_at(int(t))) for t in weighed),
                           key=lambda x: (x[1][0].get(ACROSS, 0), x[0]))
    peaks = len({(int(x) - 1) // 2 for x in at_peak}) if len(profile) else 1
    node = graph.nodes[graph.flat_node[min(max(t - 1, 0) // 2, len(graph.flat_node) - 1)]]
    sources = op_names(capture, loops) if loops else {}
    return HeldAtPeak(node, int(profile[t]) if len(profile) else 0,
                      tuple(sorted(held.items(), key=lambda x: -x[1])),
                      tuple((n, sources.get(n, ""), b)
                            for n, b in sorted(loops.items(), key=lambda x: -x[1])),
                      peak_steps=peaks, peak_times=tuple(int(x) for x in tops))


def _body_values(graph: ScheduleGraph, capture) -> set[int]:
    """Values a loop body may recompute (``body.candidates``)."""
    from olla_jax.budget import body
    return {c.value for c in body.candidates(graph, capture)}


def _body_copies(graph: ScheduleGraph, capture, order, state, layout) -> list:
    """``layout``'s copies inside loop bodies as (size, start, end, in the
    arena) on ``state``'s axis, each first run cut after its reader before
    the copy and each operand kept until it (in ``state``)."""
    from olla_jax.budget import body
    inner = [r for r in (layout.recomputes if layout is not None else ())
             if r.before not in graph.node_index]
    if not inner:
        return []
    by_value = {c.value: c for c in body.candidates(graph, capture)}
    unit_of = graph.unit_of_value
    out = []
    for r in inner:
        c = by_value.get(r.value)
        i = state.interval_of_unit.get(unit_of[r.value])
        if c is None or i is None or r.before not in c.readers:
            continue
        early_end, clone_t = body.times(graph, order, c, c.readers.index(r.before))
        iv = state.intervals[i]
        out.append((r.size, clone_t, iv[2], r.place[0] == graph.temp_allocation))
        iv[2] = early_end
        for o in c.operands:
            j = state.interval_of_unit.get(unit_of[o])
            if j is not None and graph.units[unit_of[o]].movable:
                state.intervals[j][2] = max(state.intervals[j][2], clone_t)
    return out
