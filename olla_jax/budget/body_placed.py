"""Copies inside while-loop bodies chosen by the placed arena.

``body.choose`` picks copies while the live bytes (arena and idle output
space together) peak above the target.  On XLA:GPU each output is an
allocation of its own, and the plan parks body values in those idle for
the loop: the live bytes there stay far above a temp budget whatever the
body copies, and what the arena holds at its peak is what did not fit in
them.  There a copy is worth what it frees for the placement: a value idle
across the arena's peak, wherever it sits, makes room for the values the
arena holds then (grad_accum on H100: its 8 MiB logits, idle in an output
allocation between two of their readers, leave room there for the 8 MiB
body values that topped the arena).
"""

from __future__ import annotations

import time
from typing import Sequence

import numpy as np

from olla_jax.budget import body
from olla_jax.budget.recompute_plan import fit_orders, new_state, plan_of
from olla_jax.graph.model import ScheduleGraph


def needs_room(graph: ScheduleGraph, layout, cands: Sequence[body.BodyCandidate],
               target_temp: int) -> bool:
    """Whether ``layout``'s arena (its places, on its order) peaks inside a
    loop body above ``target_temp`` by more than the body candidates it
    holds there, idle across that peak, could free: copies of those lower
    it directly (``body.choose``); beyond them, copies must make room
    elsewhere (``choose_placed``), e.g. in an idle output allocation that
    can then take what tops the arena.  No placement is run."""
    order = layout.order
    state = new_state(graph, order)
    horizon = 2 * len(graph.flat) + 2
    diff = np.zeros(horizon + 2, dtype=np.int64)
    in_arena = []
    for i, (size, start, end) in enumerate(state.intervals):
        unit = graph.units[state.owners[i]]
        if all(layout.places.get(v, (graph.values[v].allocation, 0))[0] == graph.temp_allocation
               for v in unit.values):
            diff[start] += size
            diff[end + 1] -= size
            in_arena.append((unit.values, start, end))
    live = np.cumsum(diff)[:horizon]
    peak = int(np.argmax(live))
    if live[peak] <= target_temp or graph.block_length(graph.flat_node[(peak - 1) // 2]) == 1:
        return False
    by_value = {c.value: c for c in cands}
    freed = 0
    for values, start, end in in_arena:
        c = by_value.get(values[0]) if len(values) == 1 else None
        if c is not None and start <= peak <= end and any(
                early < peak < copy for early, copy in (body.times(graph, order, c, k)
                                                       for k in c.splits)):
            freed += graph.values[c.value].size
    return live[peak] - freed > target_temp


def choose_placed(graph: ScheduleGraph, order: Sequence[int], picks,
                  cands: Sequence[body.BodyCandidate], target_temp: int, *, deadline: float,
                  clock=time.monotonic):
    """Copies inside loop bodies chosen by the placed arena (a
    ``recompute_plan.RecomputePlan``, or None when none lowers it): while
    the arena is above ``target_temp``, at the step where its live bytes
    peak, of the candidates idle across it (a split around it), the
    cheapest whose bytes cover the excess (freed, wherever they sit, they
    make room for the peak's values), else the most bytes per cost; kept
    when the placement (best-fit by ``orders``) gets smaller, passed over
    otherwise.  ``picks``: the entry copies, kept; each round places once
    (best-fit with the sort order that places ``order`` best), until
    ``deadline`` (on ``clock``)."""
    if clock() >= deadline:
        return None
    base, orders = fit_orders(new_state(graph, order).problem())
    orders = orders[:1]
    got = plan_of(graph, order, picks, base=base, orders=orders)
    chosen, passed = [], set()
    while got.temp_bytes > target_temp and clock() < deadline:
        done = {c.value for c, _ in chosen} | {o for c, _ in chosen for o in c.operands}
        options = []
        for c in cands:
            if c.value in done or any(o in done for o in c.operands):
                continue
            for k in reversed(c.splits):
                early_end, clone_t = body.times(graph, order, c, k)
                if early_end < got.arena_peak_at < clone_t and (c.value, k) not in passed:
                    options.append((c, k))
                    break
        if not options:
            break
        excess = got.temp_bytes - target_temp
        covering = [o for o in options if graph.values[o[0].value].size >= excess]
        pick = (min(covering, key=lambda o: o[0].cost_s) if covering else
                max(options, key=lambda o: graph.values[o[0].value].size / (o[0].cost_s + 1e-9)))
        tried = plan_of(graph, order, picks, body_picks=[*chosen, pick], base=base,
                        orders=orders)
        if tried.temp_bytes < got.temp_bytes:
            chosen.append(pick)
            got = tried
        else:
            passed.add((pick[0].value, pick[1]))
    return got if chosen else None
