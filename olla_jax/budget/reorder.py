"""The order searched again around the copies a plan has chosen.

Recomputation picks copies on a fixed order (``budget.model``); the order was
searched without them.  Here the copies become ordinary parts of the order
problem: a copy run just before reader ``r`` makes a new item (the second run)
born at ``r`` and touched by the late readers, which must then run after
``r`` (edges); the first run dies after the last reader before ``r``; the
producer's operands are touched at ``r`` (kept live until the copy).  The
order search (sink moves, then the large-neighbourhood search) lowers that
problem's peak, and the copies follow their readers to the new order
(``moved_picks``): a copy that the new order makes invalid (an operand
written over before it, a late reader before it) is dropped.  The caller
places the result again and may pick copies again on the new order.
"""

from __future__ import annotations

import dataclasses
import time
from collections import defaultdict
from typing import Sequence

from olla_jax.graph.model import ScheduleGraph
from olla_jax.solve import problem as sp
from olla_jax.budget.candidates import Candidate


def arena_items(graph: ScheduleGraph, problem: sp.OrderProblem) -> dict[int, int]:
    """Per movable unit of ``graph``, the index of its item in ``problem``
    (``graph.order_problem()``), matched by what the item is made of."""
    free = defaultdict(list)
    for i, item in enumerate(problem.items):
        if item.region == sp.ARENA:
            free[(item.size, item.defs, item.touches)].append(i)
    out = {}
    for unit in graph.units:
        if not unit.movable:
            continue
        vals = [graph.values[v] for v in unit.values]
        key = (unit.size, tuple(sorted({v.def_node for v in vals})),
               tuple(sorted(set().union(*(v.touches for v in vals)))))
        if free.get(key):
            out[unit.id] = free[key].pop(0)
    return out


def copies_problem(graph: ScheduleGraph, order: Sequence[int],
                   picks: Sequence[tuple[Candidate, int]],
                   parked: frozenset[int] | None = None) -> sp.OrderProblem:
    """``graph``'s order problem with ``picks`` (candidate, k: its copy runs
    before its k-th user in ``order``) as parts of it (module doc).  Values
    whose unit is not an arena item of its own (in an output allocation, live
    in or out) are left as they are: the order search then sees them
    unrecomputed, which is never below what they hold.  ``parked``: the
    movable units a placement keeps in idle output space; given, the problem
    counts the arena's live bytes as the recomputation model does
    (``model.model_problem``): those units count nothing (their copies do),
    and no region's idle capacity is subtracted."""
    problem = graph.order_problem()
    pos = [0] * problem.num_nodes
    for i, n in enumerate(order):
        pos[n] = i
    index = arena_items(graph, problem)
    items, edges = list(problem.items), set(problem.edges)
    extra = list(problem.node_extra)
    ks_of = defaultdict(list)
    cand_of = {}
    for c, k in picks:
        ks_of[c.value].append(k)
        cand_of[c.value] = c
    copy_items = defaultdict(list)          # value -> [(def pos, item index)]
    for value, ks in ks_of.items():
        c = cand_of[value]
        i = index.get(graph.unit_of_value[value])
        if i is None or items[i].live_in or items[i].live_out:
            continue
        users = sorted(c.users, key=lambda n: pos[n])
        splits = sorted({users[k] for k in ks}, key=lambda n: pos[n])
        item = items[i]
        items[i] = dataclasses.replace(
            item, touches=tuple(t for t in item.touches if pos[t] < pos[splits[0]]) or item.defs)
        for j, r in enumerate(splits):
            upto = pos[splits[j + 1]] if j + 1 < len(splits) else len(order)
            late = tuple(t for t in item.touches if pos[r] < pos[t] < upto)
            edges.update((r, t) for t in late)
            copy_items[value].append((pos[r], len(items)))
            items.append(sp.Item(size=item.size, defs=(r,), touches=(r, *late)))
            extra[r] += sum(graph.values[s].size for s in c.scratch)
    for value, ks in ks_of.items():
        c = cand_of[value]
        if value not in copy_items:
            continue
        for at, _ in copy_items[value]:
            r = order[at]
            for o in c.operands:
                made = [(p, j) for p, j in copy_items.get(o, ()) if p <= at]
                j = max(made)[1] if made else index.get(graph.unit_of_value[o])
                if j is not None and r not in items[j].touches:
                    items[j] = dataclasses.replace(
                        items[j], touches=tuple(sorted((*items[j].touches, r))))
    sizes = problem.region_sizes
    if parked is not None:
        for unit, i in index.items():
            if unit in parked:
                items[i] = dataclasses.replace(items[i], size=0)
        sizes = (0,) * len(sizes)
    return dataclasses.replace(problem, edges=tuple(sorted(edges)), items=tuple(items),
                               node_extra=tuple(extra), region_sizes=sizes)


def parked_units(graph: ScheduleGraph, order: Sequence[int],
                 orders: Sequence[str] | None = None) -> frozenset[int]:
    """The movable units best-fit (sort ``orders``, all when None) puts in
    idle output space on ``order`` without recomputation."""
    from olla_jax.budget.recompute_plan import best_fit, new_state
    state = new_state(graph, order)
    placed = best_fit(state.problem(), orders)
    return frozenset(u for u, r in zip(state.owners, placed.region)
                     if r != sp.ARENA and graph.units[u].movable)


def reorder(graph: ScheduleGraph, order: Sequence[int], picks: Sequence[tuple[Candidate, int]],
            *, deadline: float, parked: frozenset[int] | None = None) -> tuple[int, ...]:
    """``order`` searched again with ``picks`` in its problem (module doc)
    until ``deadline`` (``time.monotonic()``): sink moves with pair hoists for
    up to half the time, then the large-neighbourhood search; ``order`` when
    no move lowers that problem's (peak, sum of the profile)."""
    from olla_jax.solve import search as lns
    from olla_jax.solve import sink
    from olla_jax.solve.dag import Dag
    from olla_jax.solve.evaluate import Evaluator
    problem = copies_problem(graph, order, picks, parked)
    ev, dag = Evaluator(problem), Dag.of(problem)
    start = time.monotonic()
    moved = sink.improve(ev, dag, order, deadline=start + (deadline - start) / 2, pairs=True)
    if time.monotonic() < deadline - 0.1:
        moved = tuple(lns.improve(ev, dag, moved, deadline=deadline))
    before = ev.state(list(order))
    after = ev.state(list(moved))
    if (after.cost, int(after.profile.sum())) >= (before.cost, int(before.profile.sum())):
        return tuple(order)
    return tuple(int(n) for n in moved)


def moved_picks(graph: ScheduleGraph, old: Sequence[int], new: Sequence[int],
                picks: Sequence[tuple[Candidate, int]],
                cands: Sequence[Candidate]) -> list[tuple[Candidate, int]]:
    """``picks`` (candidate, k on ``old``) on ``new``: each copy stays before
    the same reader, its k counted again; those the model's problem on
    ``new`` has no option for (``model.model_problem``: an operand written
    over before the copy, a late reader that no longer follows) are dropped,
    and a value split twice keeps its pair only where that pair is an option."""
    from olla_jax.budget.model import model_problem
    from olla_jax.budget.recompute_plan import step_index
    step_old, step_new = step_index(graph, old), step_index(graph, new)
    built = model_problem(graph, new, cands)
    if built is None:
        return []
    _, keys, _ = built
    options = {c.value: set(ks) for c, ks in keys}
    by_value = defaultdict(list)
    for c, k in picks:
        users = sorted(c.users, key=lambda n: step_old[n])
        by_value[c.value].append((c, users[k]))
    out = []
    for value, got in by_value.items():
        c = got[0][0]
        users = sorted(c.users, key=lambda n: step_new[n])
        ks = tuple(sorted(users.index(r) for _, r in got))
        if ks in options.get(value, ()):
            out += [(c, k) for k in ks]
        else:   # each copy alone, where it is an option, the first such
            alone = [k for k in ks if (k,) in options.get(value, ())]
            out += [(c, k) for k in alone[:1]]
    return out
