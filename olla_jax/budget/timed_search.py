"""The whole search within a time limit (``search``) and the monotone curve (``ladder``)."""

from __future__ import annotations

import dataclasses
import time
from typing import Sequence

from absl import logging

from olla_jax.graph.model import ScheduleGraph
from olla_jax.budget.candidates import Candidate
from olla_jax.budget.recompute_plan import RecomputePlan, better, fit_orders, new_state, plan_of
from olla_jax.budget.greedy import choose
from olla_jax.budget.model import choose_model
from olla_jax.budget.refine import polish, split_copies


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
                                 or better(prev, got, targets[i])):
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


# Shares of ``search``'s time limit (ends, as fractions of it): sink moves,
# the greedy on each order, the model on each (``model_orders``),
# the exact placement of the best plan; the last tenth is left for what runs
# past its share (a best-fit after the model, a solver's stop).
_SINK_END = 0.1


_GREEDY_END = 0.35      # the greedy is the warm start: the model does better with the time


_MODEL_END = 0.7        # then ``polish`` (half of what is left) and the exact placement


# The model's share on the order the greedy did best on, when there are
# others: the rest is split among them (the greedy's rank is a poor guide to
# the model's: on mlp:small at H100's 96 MiB point its plans on our order and
# on XLA's were 512 bytes apart, and the model's least peak within XLA's
# FLOPs 128 MiB on ours, 96 on XLA's, both proven).
_FIRST_MODEL_SHARE = 0.5


_PLACE_END = 0.93


def search(graph: ScheduleGraph, order: Sequence[int], cands: Sequence[Candidate],
           target_temp: int, *, time_limit_s: float, engine: str = "cpsat",
           clock=time.monotonic, layout=None,
           also: Sequence[tuple[int, ...]] = ()) -> RecomputePlan | None:
    """The recomputation plan for ``target_temp`` (the best by ``better``),
    found within ``time_limit_s``.  Orders: ``order`` and ``order`` with sink
    moves (``solve.sink``: nodes run just after their producers or before
    their consumers), which shorten lives that recomputation on a fixed order
    cannot cut (a weight gradient's dot left at the end of the step keeps its
    activation until then).  The greedy runs on each; the model (``engine``
    "cpsat" / "mip") on each order the greedy found a plan on, warm-started
    from it, the one it did best on first with the larger share
    (``model_orders``); the best plan's placement is then searched exactly (``plan_of``'s
    ``exact_s``) with what is left.  ``clock``: seconds, for the shares.
    ``layout``: the plan recomputation starts from (its Layout on ``order``):
    the greedy on ``order`` and the exact placements keep its places where
    that is smaller than best-fit's (``budget.anchor``).  ``also``: other
    orders to search on (the order search's runner-ups, ``Plan.runner_up_orders``),
    after ``order``'s own and before XLA's."""
    from olla_jax.budget.anchor import anchor_of
    t0 = clock()

    def left(until: float) -> float:
        return t0 + until * time_limit_s - clock()
    if not cands or time_limit_s <= 0:
        return None
    problem0 = new_state(graph, order).problem()
    mark = clock()
    # the order's placement, shared by the searches, and best-fit's sort order
    # that placed it: the searches' plans are placed with that one alone
    base0, fit = fit_orders(problem0)
    fit, rest = fit[:1], fit[1:]
    # what placing a plan costs past a search's own limit: with best-fit's four
    # sort orders (the model's plans, the exact placement's start) up to two
    # runs of what ``fit_orders`` just did; the greedy's plans, with the one
    # order, two of its quarters (a 2,000-node step's fit takes seconds)
    one_fit = clock() - mark
    one_order = 2 * one_fit / (len(fit) + len(rest))
    if left(1.0) < one_fit:
        # no time for the greedy's one pick and its placement (two best-fits)
        logging.info("recomputation not searched: %.2f s of %.2f s left, a placement takes %.2f s",
                     max(0.0, left(1.0)), time_limit_s, one_fit)
        return None
    orders = search_orders(graph, order, (time.monotonic() + left(_SINK_END / 2),
                                          time.monotonic() + left(_SINK_END))
                           if left(_SINK_END) > 0.05 else None, also=also)
    xla = tuple(graph.xla_order)
    anchor = anchor_of(graph, orders[0], new_state(graph, orders[0]), layout)
    best, pool = None, []
    greedy_on: dict[tuple[int, ...], RecomputePlan] = {}   # order -> the greedy's plan
    # (XLA's order, when added, gets what the others leave of the greedy's time)
    shared = len(orders) - (orders[-1] == xla and len(orders) > 1)
    for i, o in enumerate(orders):
        share = (left(_GREEDY_END if engine != "greedy" else _PLACE_END) - one_order) \
            / max(1, shared - i)
        if share <= 0.05 and i > 0:
            break       # (on the order given the greedy makes one pick at least)
        fit_o = fit
        if o == xla and i > 0 and share > 3 * one_fit:
            # best-fit's sort order that places XLA's order best (its own
            # values' lives, not those of the order given)
            fit_o = fit_orders(new_state(graph, o).problem())[1][:1]
        found = choose(graph, o, cands, target_temp, time_limit_s=max(0.0, share),
                       base=base0 if i == 0 else None, orders=fit_o, clock=clock,
                       anchor=anchor if i == 0 else None)
        if found is not None:
            pool.append(found)
            greedy_on[o] = found
            logging.info("recomputation, greedy on order %d of %d: temp %d, %.1f s in", i + 1,
                         len(orders), found.temp_bytes, clock() - t0)
        if found is not None and (best is None or better(found, best, target_temp)):
            best = found
    ranked = model_orders(orders, greedy_on, target_temp)
    for j, o in enumerate(ranked if engine != "greedy" else ()):
        # (its plans are placed past its solves' limit: two best-fits, ``place_state``)
        avail = left(_MODEL_END) - one_fit
        if avail <= 0.2:
            break
        share = avail * (_FIRST_MODEL_SHARE if j == 0 and len(ranked) > 1 else
                         1 / (len(ranked) - j))
        got = choose_model(graph, o, cands, target_temp, engine=engine, warm=greedy_on.get(o),
                           time_limit_s=share, tried=pool,
                           base=base0 if o == orders[0] else None, fit_s=one_fit,
                           clock=clock)     # (its few plans placed with all four orders)
        if got is not None:
            logging.info("recomputation, model on order %d of %d: temp %d (%s), %.1f s in",
                         orders.index(o) + 1, len(orders), got.temp_bytes, got.how, clock() - t0)
        if got is not None and (best is None or better(got, best, target_temp)):
            best = got
    if engine != "greedy" and best is not None and best.temp_bytes > target_temp \
            and (left(_PLACE_END) - 2 * one_fit) / 2 > 0.2:
        # (the exact placement keeps the other half: it gains the most when
        # the live bytes fit and the arena does not)
        start = min(pool, key=lambda p: (p.arena_live, p.extra_cost_s), default=best)
        got = polish(graph, start.layout.order, cands, start, target_temp,
                     time_limit_s=(left(_PLACE_END) - 2 * one_fit) / 2,
                     base=base0 if start.layout.order == orders[0] else None, orders=fit,
                     clock=clock)
        if got is not start:
            pool.append(got)
            logging.info("recomputation, polished: arena live bytes %d -> %d, temp %d, %.1f s in",
                         start.arena_live, got.arena_live, got.temp_bytes, clock() - t0)
            if better(got, best, target_temp):
                best = got
    best = _split_in_search(graph, cands, pool, best, target_temp, engine,
                            (left(_PLACE_END) - 2 * one_fit) / 3, base0, orders[0], clock, t0, fit)
    if best is not None and best.temp_bytes > target_temp:
        # the plan whose arena's live bytes promise the most, placed exactly
        def promise(p: RecomputePlan):
            fits = p.arena_live <= target_temp
            return (not fits, p.extra_cost_s if fits else p.arena_live, p.temp_bytes)
        # (the cheapest that may fit is the hardest to fit: when its placement
        # does not, the next, with half of what is left each but the last;
        # best-fit's four sort orders first, ``2 * one_fit``, as the searches' one may lose)
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
                             exact_s=share, target_temp=target_temp,
                             base=base0 if pick.layout.order == orders[0] else None,
                             anchor=anchor if pick.layout.order == orders[0] else None)
            placed = dataclasses.replace(placed, how=pick.how + ", placed exactly")
            logging.info("recomputation placed exactly: temp %d (arena live bytes %d), %.1f s in",
                         placed.temp_bytes, pick.arena_live, clock() - t0)
            if better(placed, best, target_temp):
                best = placed
            if best.temp_bytes <= target_temp:
                break
    return best


def search_orders(graph: ScheduleGraph, order: Sequence[int],
                  deadlines: tuple[float, float] | None,
                  also: Sequence[tuple[int, ...]] = ()) -> list[tuple[int, ...]]:
    """The orders ``search`` plans on, each once: ``order``; with sink moves
    (``solve.sink``: nodes run just after their producers or before their
    consumers) until ``deadlines[0]``, then with pair hoists too until
    ``deadlines[1]`` (``time.monotonic()`` times; no sink moves when None);
    each of ``also``; XLA's own order last."""
    from olla_jax.solve import sink
    from olla_jax.solve.dag import Dag
    from olla_jax.solve.evaluate import Evaluator
    orders = [tuple(order)]
    if deadlines is not None:
        problem = graph.order_problem()
        ev, dag = Evaluator(problem), Dag.of(problem)
        moved = tuple(sink.improve(ev, dag, order, deadline=deadlines[0]))
        if moved != orders[0]:
            orders.append(moved)
        # and with pair hoists (a weight gradient's dot with the copy before
        # it): a third order, since on some steps they lower the order's peak
        # and leave recomputation less to drop
        paired = tuple(sink.improve(ev, dag, moved, deadline=deadlines[1], pairs=True))
        if paired not in orders:
            orders.append(paired)
    # the order search's runner-ups: the order chosen for the least arena
    # without recomputation may be far from the best with it (the flax MLP of
    # benchmarks/budget_runner_up.py: a cut order 1.7 KB below the list order
    # before recomputation, 0.77 MB above it after)
    for other in also:
        if tuple(other) not in orders and len(other) == len(orders[0]):
            orders.append(tuple(other))
    # and XLA's own order, last: the one its rematerialization works on, where
    # values it schedules early (a fusion with no operands, run at the start)
    # sit idle across the peak, and ours (planned without recomputation) may
    # keep their readers apart (a max-pool's zeros, two results of one fusion
    # copied in one launch: far better on XLA's order than on ours, measured)
    xla = tuple(graph.xla_order)
    if xla not in orders and len(xla) == len(orders[0]):
        orders.append(xla)
    return orders


def model_orders(orders: Sequence[tuple[int, ...]],
                 greedy_on: dict[tuple[int, ...], RecomputePlan],
                 target_temp: int) -> list[tuple[int, ...]]:
    """The orders the model runs on, in turn: every one of ``orders`` the
    greedy found a plan on, the best by ``better`` first (it gets the model's
    larger share), then the others by the same rank; the first of ``orders``
    when the greedy found none."""
    import functools
    found = [o for o in orders if o in greedy_on]
    if not found:
        return list(orders[:1])

    def rank(a, b) -> int:
        pa, pb = greedy_on[a], greedy_on[b]
        return -1 if better(pa, pb, target_temp) else (1 if better(pb, pa, target_temp) else 0)
    return sorted(found, key=functools.cmp_to_key(rank))


def _split_in_search(graph, cands, pool, best, target_temp, engine, share, base0, order0,
                     clock, t0, fit):
    """``search``'s step for ``split_copies``: the pooled plan whose arena's
    live bytes are least, its copies split for ``share`` seconds; the split
    plan joins ``pool`` and replaces ``best`` when better."""
    if engine == "greedy" or best is None or best.temp_bytes <= target_temp or share <= 0.2:
        return best
    start = min(pool, key=lambda p: (p.arena_live, p.extra_cost_s), default=best)
    got = split_copies(graph, start.layout.order, cands, start, target_temp,
                       time_limit_s=share, base=base0 if start.layout.order == order0 else None,
                       orders=fit, clock=clock)
    if got is start:
        return best
    pool.append(got)
    logging.info("recomputation, copies split: arena live bytes %d -> %d, temp %d, %.1f s in",
                 start.arena_live, got.arena_live, got.temp_bytes, clock() - t0)
    return got if better(got, best, target_temp) else best
