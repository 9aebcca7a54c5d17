"""Copies inside while-loop bodies chosen by the recomputation model.

``body.choose`` picks body copies greedily at the body's live-bytes peak.
Here the same candidates (``body.candidates``) go to the entry's model
(``olla_jax.solve.recompute``) on the fixed order, after the entry copies:
one ``Choice`` per body value, one ``Option`` per split of its readers (the
first run dies after the reader before it, the copy is born just before
the split, its operands are kept live until then), at the least extra cost
whose live bytes fit the budget.  A body runs once per iteration, and so
does a copy in it: a copy costs its roofline estimate times the loop's trip
count (1 where XLA does not know it).  The rewrites copy one kernel per body
value and a body copy reads no other copy, so two body values where one is
the other's operand exclude each other (``RecomputeProblem.exclusive``).

The model bounds all live bytes (output space included), not the arena:
where the plan parks body values in idle output space, the arena's peak is
what did not fit there.  So the model's budget is searched against the
placement (``choose_model``).  The greedy's plan is the warm start and is
kept unless the model's is better (``better``, on the trip-weighted cost).
"""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Sequence

from absl import logging

from olla_jax.budget import body
from olla_jax.budget.recompute_plan import (
    RecomputePlan, add_entry_picks, fit_orders, new_state, plan_of)
from olla_jax.graph.model import ScheduleGraph


def trip_counts(capture, graph: ScheduleGraph) -> dict[int, int]:
    """Entry while node -> its trip count where XLA knows it (the while's
    ``known_trip_count``); absent loops count 1."""
    from olla_jax import dumps
    if capture is None or capture.hlo_proto is None:
        return {}
    module = dumps.parse_hlo_proto(capture.hlo_proto).hlo_module
    out = {}
    for comp in module.computations:
        for instr in comp.instructions:
            if instr.opcode != "while" or instr.name not in graph.node_index:
                continue
            try:
                n = int(json.loads(instr.backend_config or b"{}")["known_trip_count"]["n"])
            except (ValueError, KeyError, TypeError):
                continue
            if n > 0:
                out[graph.node_index[instr.name]] = n
    return out


def body_cost(plan: RecomputePlan, trips: dict[int, int]) -> float:
    """``plan``'s extra roofline cost, its body copies counted once per iteration."""
    inner = sum(c.cost_s for c, _ in plan.body)
    return plan.extra_cost_s - inner + sum(c.cost_s * trips.get(c.loop, 1) for c, _ in plan.body)


def better(a: RecomputePlan, b: RecomputePlan, target: int, trips: dict[int, int]) -> bool:
    """``a`` over ``b``: meeting ``target`` first, then less trip-weighted
    cost (then less temp); else less temp (then less cost)."""
    if (a.temp_bytes <= target) != (b.temp_bytes <= target):
        return a.temp_bytes <= target
    ka, kb = (body_cost(a, trips), a.temp_bytes), (body_cost(b, trips), b.temp_bytes)
    return ka < kb if a.temp_bytes <= target else ka[::-1] < kb[::-1]


def problem_of(graph: ScheduleGraph, order: Sequence[int], picks, cands, trips):
    """The model's problem (budget 0: the caller sets it) for body copies on
    ``order`` after the entry ``picks``: (problem, keys: per choice its
    candidate and the split of each option), or None when no candidate has
    an option.  Sizes are the values' own, wherever placed: a body value
    dropped from idle output space makes room there for one the arena held."""
    from olla_jax.solve import recompute as model
    state = new_state(graph, order)
    add_entry_picks(graph, order, state, picks)
    ivs = [*state.intervals, *state.extra, *(iv for _, _, iv in state.scratch)]
    unit_of = graph.unit_of_value
    choices, keys = [], []
    for c in cands:
        unit = unit_of[c.value]
        if unit not in state.interval_of_unit:
            continue
        index = state.interval_of_unit[unit]
        _, start, end = ivs[index]
        extend_of = [state.interval_of_unit[unit_of[o]] for o in c.operands
                     if graph.units[unit_of[o]].movable and unit_of[o] in state.interval_of_unit]
        if index in extend_of:
            continue
        options, ks = [], []
        for k in c.splits:
            early_end, clone_t = body.times(graph, order, c, k)
            if not start <= early_end < early_end + 1 <= clone_t - 1 < clone_t <= end:
                continue
            options.append(model.Option((early_end + 1, clone_t - 1),
                                        tuple(sorted((i, clone_t) for i in set(extend_of)))))
            ks.append(k)
        if options:
            cost = max(1, round(c.cost_s * trips.get(c.loop, 1) * 1e9))
            choices.append(model.Choice(index, tuple(options), cost))
            keys.append((c, ks))
    if not choices:
        return None
    # a body copy reads no other copy: a value and a copy reading it exclude each other
    exclusive = []
    of_value = {c.value: n for n, (c, _) in enumerate(keys)}
    for n, (c, ks) in enumerate(keys):
        for o in set(c.operands):
            m = of_value.get(o)
            if m is not None and m != n:
                exclusive += [((n, j), (m, i)) for j in range(len(ks))
                              for i in range(len(keys[m][1]))]
    problem = model.RecomputeProblem(tuple(iv[0] for iv in ivs), tuple(iv[1] for iv in ivs),
                                     tuple(iv[2] for iv in ivs), tuple(choices), 0,
                                     exclusive=tuple(exclusive))
    return problem, keys


def choose_model(graph: ScheduleGraph, order: Sequence[int], picks, cands, target_temp: int, *,
                 trips: dict[int, int], warm: RecomputePlan | None, deadline: float,
                 engine: str = "cpsat", fitted=None,
                 clock=time.monotonic) -> RecomputePlan | None:
    """Body copies chosen by the model (see module doc) after the entry
    ``picks``, warm-started from ``warm`` (the greedy's plan on the same
    picks); the best plan it placed (``better``), or None when it placed
    none, until ``deadline`` (on ``clock``).  ``fitted``: (best-fit's
    placement of ``order`` without copies, the sort orders each probe
    places with), computed (``fit_orders``: the best one) when None.

    The model bounds the live bytes, all of them: where the plan parks body
    values in idle output space, what the arena holds at its peak is what
    did not fit there, so the arena follows the live bytes without being
    them.  The model's budget is searched instead: first the live-bytes
    peak of ``warm``'s copies (no more cost than the greedy's), then by
    bisection the highest budget (least cost) whose placement meets
    ``target_temp`` (between the least peak the model reaches, when the
    first misses, and the peak without copies)."""
    from olla_jax.solve import recompute as model
    if deadline - clock() <= 0.2:
        return None
    built = problem_of(graph, order, picks, cands, trips)
    if built is None:
        return None
    problem0, keys = built
    hint = None
    if warm is not None and warm.body:
        chosen = {c.value: k for c, k in warm.body}
        hint = [ks.index(chosen[c.value]) if chosen.get(c.value) in ks else -1 for c, ks in keys]
    none = [-1] * len(problem0.choices)
    peak0 = int(model.profile(problem0, none).max())
    start = peak0
    if hint is not None:
        try:
            start = model.evaluate(problem0, hint)[0]
        except ValueError:
            hint = None
    step = max(1, min(problem0.sizes[c.interval] for c in problem0.choices))
    # each probe places once, with the sort order that places ``order`` best
    if fitted is None:
        mark = clock()
        base, orders = fit_orders(new_state(graph, order).problem())
        fitted = (base, orders[:1])
        placing = (clock() - mark) / 2      # (four placements: one, and the plan's rest)
    else:
        placing = 0.0
    base, orders = fitted
    best = None

    def probe(budget: int):
        """(live-bytes peak reached, plan placed) at ``budget``, or None."""
        nonlocal best, placing
        left = deadline - clock() - placing
        if left <= 0.2:
            return None
        sol = model.solve(dataclasses.replace(problem0, budget=max(0, budget)), engine=engine,
                          time_limit_s=left, hint=hint)
        if not any(p >= 0 for p in sol.picks):
            return None
        mark = clock()
        plan = plan_of(graph, order, picks, base=base, orders=orders, body_picks=[
            (c, ks[p]) for (c, ks), p in zip(keys, sol.picks) if p >= 0])
        placing = clock() - mark
        logging.info("loop-body model: budget %d, live-bytes peak %d (met %s, optimal %s) in "
                     "%.1f s, %d copies placed at %d, target %d", budget, sol.peak, sol.met,
                     sol.optimal, sol.seconds, len(plan.body), plan.temp_bytes, target_temp)
        if best is None or better(plan, best, target_temp, trips):
            best = plan
        return sol.peak, plan

    got = probe(start)
    if got is None:
        return best
    if got[1].temp_bytes <= target_temp:
        met, unmet = got[0], peak0
    else:
        unmet = got[0]
        got = probe(0)                  # the least peak
        if got is None or got[1].temp_bytes > target_temp:
            return best
        met = got[0]
    while unmet - met > step:
        got = probe((met + unmet) // 2)
        if got is None:
            break
        if got[1].temp_bytes <= target_temp:
            met = (met + unmet) // 2    # (any budget from the peak reached to it: that plan)
        else:
            unmet = (met + unmet) // 2
    return best


def named(plan: RecomputePlan | None, engine: str) -> RecomputePlan | None:
    """``plan`` (the model's) named as the loop-body model's."""
    if plan is None:
        return None
    return dataclasses.replace(plan, how="loop-body model" + (
        f" ({engine})" if engine != "cpsat" else ""))
