"""The model's choice (``olla_jax.solve.recompute``) of values and copies on a fixed order."""

from __future__ import annotations

import dataclasses
import time
from collections import defaultdict
from typing import Sequence

import numpy as np
from absl import logging

from olla_jax.graph.model import ScheduleGraph
from olla_jax.solve import problem as sp
from olla_jax.budget.candidates import Candidate
from olla_jax.budget.recompute_plan import (
    copy_time, RecomputePlan, best_fit, better, copies_read, late_part_ok, new_state, operand_intact,
    plan_of, read_times, step_index)


def choose_model(graph: ScheduleGraph, order: Sequence[int], cands: Sequence[Candidate],
                 target_temp: int, *, time_limit_s: float = 30.0, engine: str = "cpsat",
                 warm: RecomputePlan | None = None,
                 tried: list[RecomputePlan] | None = None,
                 base: sp.Placement | None = None, fit_s: float = 0.0,
                 orders: Sequence[str] | None = None, clock=time.monotonic) -> RecomputePlan | None:
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
    placing the first took); ``orders``: best-fit's sort orders (all when None); ``clock``: seconds."""
    from olla_jax.solve import recompute as model
    t0 = clock()
    built = model_problem(graph, order, cands, base=base, orders=orders)
    if built is None:
        return None
    problem0, keys, placed = built
    hint = None
    if warm is not None and warm.splits:
        chosen = defaultdict(tuple)
        for v, k in sorted(warm.splits):
            chosen[v] += (k,)
        hint = [ks.index(chosen[c.value]) if chosen.get(c.value) in ks else -1 for c, ks in keys]
    none = [-1] * len(problem0.choices)
    peak0 = int(model.profile(problem0, none).max())
    base = placed.arena_size
    # live bytes the arena does not hold (idle output space takes them), or
    # fragmentation it adds (negative): the model's budget is offset by it
    model_budget = target_temp + peak0 - base
    best, placing, caps, relaxed = None, fit_s, {}, False
    for _ in range(6):
        left = time_limit_s - (clock() - t0) - placing
        if left <= 0.2:
            break
        problem = dataclasses.replace(problem0, budget=max(0, model_budget), caps=tuple(caps.items()))
        sol = model.solve(problem, engine=engine, time_limit_s=left, hint=hint)
        if not any(k >= 0 for k in sol.picks):
            break
        mark = clock()
        plan = plan_of(graph, order, [(c, k) for (c, ks), pick in zip(keys, sol.picks)
                                      if pick >= 0 for k in ks[pick]], base=placed,
                       orders=orders)
        placing = clock() - mark
        plan = dataclasses.replace(plan, how=f"model ({engine}"
                                   + (", optimal)" if sol.optimal else ")"))
        if tried is not None:
            tried.append(plan)
        logging.info("recomputation model: budget %d, %d step caps, live-bytes peak %d (met %s, "
                     "optimal %s) in %.1f s, placed %d, target %d", problem.budget,
                     len(problem.caps), sol.peak, sol.met, sol.optimal, sol.seconds,
                     plan.temp_bytes, target_temp)
        if best is None or better(plan, best, target_temp):
            best = plan
        if plan.temp_bytes <= target_temp or not sol.met:
            if not sol.met and caps and not relaxed:
                # no plan meets the step caps: what the model returned instead
                # is its least memory, whatever its cost (copies of convolutions
                # where caps asked a little less); once, the lowered budget alone
                relaxed, caps = True, {}
                continue
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


def model_problem(graph: ScheduleGraph, order: Sequence[int], cands: Sequence[Candidate], *,
                  base: sp.Placement | None = None, orders: Sequence[str] | None = None):
    """The model's problem on ``order`` (``olla_jax.solve.recompute``, budget
    0: the caller sets it): one ``Choice`` per candidate with a copy that may
    run there, its options one or two splits of its readers; the interval
    sizes are the live bytes best-fit puts in the arena (``base``, computed
    with ``orders`` when None).  (problem, keys: per choice its candidate and
    the splits of each option, that placement), or None when no candidate has
    an option."""
    from olla_jax.solve import recompute as model
    state0 = new_state(graph, order)
    step = step_index(graph, order)
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
        times = read_times(c, users, step)     # (the run before a split lives until times[k])
        options, ks = [], []
        for k in range(len(users)):
            early_end, clone_t = times[k], copy_time(graph, step, users[k])
            if not (iv_start <= early_end and early_end + 1 <= clone_t - 1 and clone_t <= iv_end):
                continue
            if not late_part_ok(graph, step, c, users[k]):
                continue
            if not all(operand_intact(graph, spans, step, state0.interval_of_unit, o, clone_t)
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
        if c.slots:     # (a copy before a slot must have readers before the next)
            kept = [j for j, pair in enumerate(ks_more) if copies_read(c, users, pair)]
            more, ks_more = [more[j] for j in kept], [ks_more[j] for j in kept]
        options, ks = options + more, [(k,) for k in ks] + ks_more
        if options:
            choices.append(model.Choice(iv_index, tuple(options), max(1, round(c.cost_s * 1e9))))
            keys.append((c, ks))
    if not choices:
        return None
    # Only what best-fit puts in the arena counts (idle output space takes the
    # rest): the live bytes of those are the model's proxy for the arena.
    placed = base if base is not None else best_fit(state0.problem(), orders)
    sizes = tuple(iv[0] if region == sp.ARENA else 0
                  for iv, region in zip(state0.intervals, placed.region))
    starts = tuple(iv[1] for iv in state0.intervals)
    ends = tuple(iv[2] for iv in state0.intervals)
    return model.RecomputeProblem(sizes, starts, ends, tuple(choices), 0), keys, placed


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
