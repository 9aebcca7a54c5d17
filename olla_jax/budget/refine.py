"""Improving a plan on its order: ``polish`` and several copies of one value (``split_copies``)."""

from __future__ import annotations

import dataclasses
import time
from collections import defaultdict
from typing import Sequence

from absl import logging

from olla_jax.graph.model import ScheduleGraph
from olla_jax.solve import problem as sp
from olla_jax.budget.candidates import Candidate
from olla_jax.budget.recompute_plan import (
    copy_time, RecomputePlan, copies_read, late_part_ok, new_state, operand_intact, plan_of, step_index)


def polish(graph: ScheduleGraph, order: Sequence[int], cands: Sequence[Candidate],
           plan: RecomputePlan, target_temp: int, *, time_limit_s: float,
           base: sp.Placement | None = None, tries: int = 8,
           orders: Sequence[str] | None = None, clock=time.monotonic) -> RecomputePlan:
    """``plan`` with recomputations added one at a time where its placed arena
    peaks, each judged by its placement (``plan_of``), not by live bytes: the
    model counts only what best-fit put in the arena before recomputation, so
    a value it counts as free (held in idle output space) may come back into
    the arena with the copies, and a pick it sees no gain in may lower the
    placed arena.  While the arena's live bytes are over the target, a pick
    is kept when it lowers them (the least arena an exact placement can
    reach); once they fit and best-fit's arena does not (fragmentation), when
    it lowers the placed arena, the values looked at being those live where
    pieces are born above the target (``_attack_times``).  At each round the
    ``tries`` largest values (the cheapest first among equals) whose gap
    covers such a time are placed, those the plan keeps in the arena first.
    Stops at ``target_temp``, when nothing helps, or at ``time_limit_s``;
    ``plan`` itself when nothing was added.  ``orders``: best-fit's sort
    orders (all when None); ``clock``: seconds, for the limit."""
    t0 = clock()
    step = step_index(graph, order)
    spans = graph.unit_spans(order)
    state0 = new_state(graph, order)
    unit_of = graph.unit_of_value
    by_value = {c.value: c for c in cands}
    users = {c.value: sorted(c.users, key=lambda n: step[n]) for c in cands}

    def times(c: Candidate, k: int) -> tuple[int, int]:
        """(end of the first copy, birth of the second) of ``c`` split before reader k."""
        early = 2 * step[c.producer] + 1 if k == 0 else 2 * step[users[c.value][k - 1]] + 1
        return early, copy_time(graph, step, users[c.value][k])

    def allowed(picks: dict[int, int], c: Candidate, k: int) -> bool:
        early, clone = times(c, k)
        if not early + 1 <= clone - 1 or not late_part_ok(graph, step, c, users[c.value][k]):
            return False
        if not all(operand_intact(graph, spans, step, state0.interval_of_unit, o, clone)
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

    def score(p: RecomputePlan) -> tuple:
        # live bytes first while they are over the target; once they fit,
        # the placed arena (what fragmentation leaves over the target)
        return ((p.arena_live, p.temp_bytes) if p.arena_live > target_temp
                else (target_temp, p.temp_bytes))

    best = plan
    picks = dict(plan.splits)
    while best.temp_bytes > target_temp and clock() - t0 < time_limit_s:
        peaks = _attack_times(best, target_temp)
        options, seen = [], set()
        places = best.layout.places
        for c in cands:
            if c.value in picks or unit_of[c.value] not in state0.interval_of_unit \
                    or graph.units[unit_of[c.value]].id in {unit_of[v] for v in picks}:
                continue
            for t in peaks:
                for k in range(len(users[c.value])):
                    early, clone = times(c, k)
                    if early < t < clone and allowed(picks, c, k):
                        if (c.value, k) not in seen:
                            seen.add((c.value, k))
                            val = graph.values[c.value]
                            # (one best-fit put outside the arena does not lower it)
                            outside = places.get(c.value, (val.allocation,))[0] \
                                != graph.temp_allocation
                            options.append((outside, -val.size, c.cost_s, c.value, k))
                        break       # the earliest reader after the peak: the shortest gap
        found = None
        for *_, v, k in sorted(options)[:tries]:
            if clock() - t0 >= time_limit_s:
                break
            trial = {**picks, v: k}
            got = plan_of(graph, order, [(by_value[u], kk) for u, kk in trial.items()], base=base,
                          orders=orders)
            if score(got) < score(best) and (
                    found is None or (score(got), got.extra_cost_s) <
                    (score(found[0]), found[0].extra_cost_s)):
                found = (got, trial)
        logging.info("recomputation polish: arena peaks at %s, %d options, best %s (was %d, %d)",
                     peaks, len(options), found and score(found[0]), best.arena_live,
                     best.temp_bytes)
        if found is None:
            break
        best, picks = found
        best = dataclasses.replace(best, how=plan.how + ", polished")
    return best


def _attack_times(plan: RecomputePlan, target_temp: int) -> list[int]:
    """Where ``polish`` looks for values to drop: the arena's live-bytes peak
    while the live bytes are over ``target_temp``; once they fit (the
    placement fragments), the births of the arena pieces whose top is over
    the target, highest top first (at most two), and that peak."""
    if plan.arena_live > target_temp:
        return [plan.arena_peak_at]
    over = sorted({(-top, start) for start, _, top in plan.arena_blocks if top > target_temp})
    out = []
    for _, start in over:
        if start not in out:
            out.append(start)
        if len(out) == 2:
            break
    return [*out, plan.arena_peak_at] if plan.arena_peak_at not in out else out


def split_copies(graph: ScheduleGraph, order: Sequence[int], cands: Sequence[Candidate],
                 plan: RecomputePlan, target_temp: int, *, time_limit_s: float,
                 base: sp.Placement | None = None, tries: int = 8,
                 orders: Sequence[str] | None = None, clock=time.monotonic) -> RecomputePlan:
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
    when no split lowered it.  ``orders``: best-fit's sort orders (all when None);
    ``clock``: seconds, for the limit."""
    t0 = clock()
    step = step_index(graph, order)
    spans = graph.unit_spans(order)
    state0 = new_state(graph, order)
    by_value = {c.value: c for c in cands}
    if any(v not in by_value for v, _ in plan.splits):
        return plan
    users = {c.value: sorted(c.users, key=lambda n: step[n]) for c in cands}
    picked = {v for v, _ in plan.splits}   # operands recomputed: read from a copy

    def gap(v: int, k: int) -> tuple[int, int]:
        """(last read before reader k, birth of a copy before it), doubled time."""
        c = by_value[v]
        early = 2 * step[c.producer] + 1 if k == 0 else 2 * step[users[v][k - 1]] + 1
        return early, copy_time(graph, step, users[v][k])

    def allowed(v: int, k: int, ks: set[int]) -> bool:
        c = by_value[v]
        early, clone = gap(v, k)
        if k in ks or early + 1 > clone - 1:
            return False
        if k > max(ks) and not late_part_ok(graph, step, c, users[v][k]):
            return False    # values written over it in place must follow its last copy
        if not copies_read(c, users[v], ks | {k}):
            return False    # a copy before a slot needs a reader of its own
        return all(o in picked or operand_intact(graph, spans, step, state0.interval_of_unit,
                                                  o, clone) for o in c.operands)

    # ``now`` walks on: a split that only moves the peak elsewhere (another
    # peak of the same height, which the next split may cut) is taken too,
    # ``tries`` times at most; ``best`` is the least arena found
    best = now = plan
    splits, level = list(plan.splits), 0
    while now.arena_live > target_temp and clock() - t0 < time_limit_s:
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
            if clock() - t0 >= time_limit_s:
                break
            trial = splits + [(v, k)]
            got = plan_of(graph, order, [(by_value[u], kk) for u, kk in trial], base=base,
                          orders=orders)
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
