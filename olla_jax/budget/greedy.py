"""The greedy: values idle across the live-bytes peak, most bytes saved per unit of cost first."""

from __future__ import annotations

import time
from typing import Sequence

import numpy as np

from olla_jax.graph.model import ScheduleGraph
from olla_jax.solve import problem as sp
from olla_jax.budget.candidates import Candidate
from olla_jax.budget.recompute_plan import (
    copy_time, RecomputePlan, State, best_fit, late_part_ok, operand_intact, place_state, read_times,
    realize, step_index)


def choose(graph: ScheduleGraph, order: Sequence[int], cands: Sequence[Candidate],
           target_temp: int, *, time_limit_s: float = 30.0,
           base: sp.Placement | None = None,
           orders: Sequence[str] | None = None, clock=time.monotonic,
           anchor=None) -> RecomputePlan | None:
    """Greedy picks at the live-bytes peak until best-fit's arena is at most
    ``target_temp``; the least-memory plan found when it never is (None when
    nothing could be picked).  ``base``: best-fit's placement of ``order``
    without recomputation (computed when None); ``orders``: best-fit's sort
    orders (all when None); ``clock``: seconds, for the limit; ``anchor``: the
    plan's own placement of ``order`` (``anchor.Anchor``), kept where it is
    smaller than best-fit's (``anchor.smaller``)."""
    from olla_jax.budget.anchor import smaller
    t0 = clock()
    pp, owners = graph.placement_problem(order)
    if pp.same_offset:
        gapped = {owners[i] for group in pp.same_offset for i in group}
    else:
        gapped = set()
    intervals = [[iv.size, 2 * iv.start + 1, 2 * iv.end + 1] for iv in pp.intervals]
    interval_of_unit = {u: i for i, u in enumerate(owners) if u not in gapped}
    state = State(pp, owners, intervals, interval_of_unit)
    if base is None:
        base = best_fit(state.problem(), orders)
    step = step_index(graph, order)
    horizon = 2 * len(graph.flat) + 2
    spans = graph.unit_spans(order)
    unit_of = graph.unit_of_value
    recomputed: set[int] = set()
    operand_of_clone: set[int] = set()

    def operand_ok(value_id: int, at: int) -> bool:
        if value_id in recomputed:
            return False
        return operand_intact(graph, spans, step, interval_of_unit, value_id, at)

    def split_at(c: Candidate, peak: int):
        """The last split of ``c``'s readers whose gap covers ``peak``: (k,
        early end, clone time); one whose copy joins the launch of a picked
        sibling's copy (another result of its fusion, ``State.merged_with``)
        first: it then writes no scratch, and takes the sibling's none."""
        iv = state.intervals[interval_of_unit[unit_of[c.value]]]
        users = sorted(c.users, key=lambda n: step[n])
        times = read_times(c, users, step)     # (the run before a split lives until times[k])
        siblings = {state.copy_times[j] for j, (d, _) in enumerate(state.picks)
                    if d.producer == c.producer and d.value in c.scratch}
        found = []
        for k in reversed(range(len(users))):   # the latest: its copy lives the least
            early_end, clone_t = times[k], copy_time(graph, step, users[k])
            if early_end < peak < clone_t and iv[1] <= peak <= iv[2] and \
                    late_part_ok(graph, step, c, users[k]):
                found.append((k, early_end, clone_t))
        return next((f for f in found if f[2] in siblings), found[0] if found else None)

    best = None
    picks_since_place = 0
    first = True        # one pick at least, however short the time
    while first or clock() - t0 < time_limit_s:
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
        state.add_scratch(graph, c, clone_t)
        picks_since_place += 1
        if prof.max() - graph.values[c.value].size > target_temp and picks_since_place < 8:
            continue
        picks_since_place = 0     # plain best-fit per pick (cheap); place_state at the end
        plan = realize(graph, order, state,
                       smaller(best_fit(state.problem(), orders), state, anchor))
        if best is None or plan.temp_bytes < best.temp_bytes:
            best = plan
        if plan.temp_bytes <= target_temp:
            return plan
    if state.picks and picks_since_place:
        plan = realize(graph, order, state,
                       smaller(place_state(state, base, orders), state, anchor))
        if best is None or plan.temp_bytes < best.temp_bytes:
            best = plan
    return best
