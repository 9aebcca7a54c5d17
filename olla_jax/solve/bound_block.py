"""A loop's steps with whole units parked in the regions, minimised by CP-SAT.

At a block node (a while loop, a call: a block of inner steps that moves as a
whole) the min-cut (``bounds``) counts the body's peak of inner bytes and
every idle region's whole capacity free for them.  Over our plan space, any
entry order with each body in XLA's order (the planner never reorders a loop
body), more holds at each of the block's steps ``t``:

- a unit living inside the block only is live on its spans there, whatever
  the entry order (``BlockPark.inner``);
- a unit sits whole in the arena or in one region, at one offset for its
  whole life, so the units in one region live at ``t`` sum to at most its
  capacity, and a unit's region is the same at every step it is live;
- a unit live across the block (started before it, needed after it) sitting
  in a region that a node ``w`` writes, with that write live out, must have
  its last read before ``w`` runs (else it overlaps the written output at
  ``w``'s step, as ``bound_park``'s barred pairs): with the units' readers
  and the writers given positions in one order, units parked in each other's
  outputs cannot all be read first (the writer that runs last has no later
  output for its reads);
- a unit inside the block cannot sit in a region that an output written in
  the block holds from a step before its end (``BlockPark.busy_from``).

For the set ``S`` of nodes run before the block node ``n`` (closed under
ancestors, as in ``bounds``) this minimises the most, over the chosen steps
``t``, of: the arena units live across the block, the inner units live at
``t``, less the units parked, less the idle fluid regions' capacity, less
the units idle in a gap of the body.  Units only partly live in the block
(written by it, or last read by it) are left out, and regions held by them
count idle: both only lower the figure.  Any plan of our space gives a
solution no higher than its arena at the chosen steps: its ``S``, its order's
positions, its placement's regions; so the minimum is a lower bound on every
such plan's arena (not on plans that reorder a body).
"""

from __future__ import annotations

from typing import Sequence

from olla_jax.solve.cpsat_lits import Lits, RanBefore, neg
from olla_jax.solve import cpsat_run
from olla_jax.solve.dag import reachable
from olla_jax.solve.problem import ARENA, BlockPark


def busiest_steps(block: BlockPark, count: int) -> list[int]:
    """The ``count`` block steps with the most inner bytes live (ties: the first)."""
    events: dict[int, int] = {}
    for size, spans in block.inner:
        for s, e in spans:
            events[s] = events.get(s, 0) + size
            events[e + 1] = events.get(e + 1, 0) - size
    live, per_step = 0, []
    for step in sorted(events):
        live += events[step]
        if step < block.length:
            per_step.append((live, step))
    return [t for _, t in sorted(per_step, key=lambda p: (-p[0], p[1]))[:count]]


def block_minimum(block: BlockPark, steps: Sequence[int], *, time_limit_s: float,
                  floor: int = 0, depth: int = 3) -> tuple[int, bool]:
    """(a proven lower bound on the least cost of ``block``'s node at ``steps``
    (block steps), whether it is the exact minimum of the model).  ``floor``:
    a value known to hold (returned when CP-SAT proves nothing more).

    The positions' constraints are big-M ones, which CP-SAT's relaxation
    barely sees (grad_accum, H100, 4 KiB threshold: 7.97 MiB proven in 60 s,
    8.25 found), so the model is split by the writer that runs last (every
    order has one; of writers alike, the last in node order:
    ``_alike_writers``), and a case CP-SAT does not settle in its share, by
    the one before it, up to ``depth`` writers: in each case, the last one's
    reads park in no writer's region, the one before it only in the last
    one's, and so on (grad_accum: four cases, 8.25 each, 0.2 s each).  The
    cases cover every order: the least of their proven values holds."""
    import time
    built = _model(block, sorted(set(steps)), floor)
    if isinstance(built, int):
        return built, True
    end = time.monotonic() + max(0.01, time_limit_s)
    if not built[2]:          # no writer to split on
        value, exact = _solve_case(built, [], end, floor)
        return (floor, exact) if value is None else (value, exact)

    def search(tail: list[int], until: float) -> tuple[int, bool]:
        nexts = _next_last(built[2], built[3], tail)
        if not nexts:
            return floor, True    # no order has this tail
        low, exact = None, True
        for k, w in enumerate(nexts):
            share = (until - time.monotonic()) / (len(nexts) - k)
            value, done = _solve_case(built, [*tail, w], time.monotonic() + share, floor)
            if value is None:
                continue          # no solution has this tail: no order either
            if not done and len(tail) + 1 < depth and share > 0:
                deeper, done = search([*tail, w], time.monotonic() + share)
                value = max(value, deeper)
            low = value if low is None else min(low, value)
            exact = exact and done
            if low <= floor:
                break             # nothing above the floor: the rest cannot help
        return (floor, exact) if low is None else (max(floor, low), exact)

    return search([], end)


def _solve_case(built, tail: list[int], until: float, floor: int) -> tuple[int | None, bool]:
    """(proven value, exact) of ``built``'s model with ``tail`` (last first)
    the writers run last, CP-SAT solving until ``until`` (``time.monotonic``);
    the value is None where CP-SAT proves the case has no solution."""
    import time
    from ortools.sat.python import cp_model
    m, pos, _, writer_desc = built
    case = m.clone() if tail else m
    for k, w in enumerate(tail):
        for x in writer_desc:
            if x not in tail[:k + 1]:
                case.add(pos[x] + 1 <= pos[w])
    # Measured on grad_accum (H100) at one case: 1.0 s with probing, 0.7 without.
    solver, status = cpsat_run.solve(case, until - time.monotonic(), cp_model_probing_level=0)
    if status == cp_model.OPTIMAL:
        return max(floor, int(round(solver.objective_value))), True
    if status == cp_model.FEASIBLE:
        return max(floor, int(solver.best_objective_bound)), False
    if status == cp_model.INFEASIBLE:
        return None, True
    return floor, False


def _next_last(classes: list[list[int]], writer_desc: dict[int, set[int]],
               tail: list[int]) -> list[int]:
    """The writers that can run last of those not in ``tail``: of each class
    (writers alike, in node order) the last not in it, with no writer after
    it (its descendants) outside ``tail``."""
    out = []
    taken = set(tail)
    for members in classes:
        left = [w for w in members if w not in taken]
        if left and writer_desc[left[-1]] <= taken:
            out.append(left[-1])
    return out


def _model(block: BlockPark, steps: list[int], floor: int):
    """``block_minimum``'s model, or its value where nothing is left to choose."""
    from ortools.sat.python import cp_model
    park = block.park
    p = park.problem
    n = block.node
    if not steps:
        return floor
    preds: list[list[int]] = [[] for _ in range(p.num_nodes)]
    succs: list[list[int]] = [[] for _ in range(p.num_nodes)]
    for u, v in p.edges:
        preds[v].append(u)
        succs[u].append(v)
    anc = reachable(preds, preds[n])
    desc = reachable(succs, succs[n])
    m = cp_model.CpModel()
    lits = Lits(m)
    ran = RanBefore(m, n, anc, desc)

    # Live across the block: started before it (not by it) and needed after it.
    through = []
    for it in p.items:
        started = True if it.live_in or not it.defs else lits.any_of(
            [ran(d) for d in it.defs if d != n])
        unfinished = True if it.live_out else lits.any_of(
            [neg(ran(t)) for t in it.touches if t != n])
        through.append(lits.both(started, unfinished))
    for u, v in p.edges:
        a, b = ran(u), ran(v)
        if not isinstance(a, bool) and not isinstance(b, bool):
            m.add_implication(b, a)
    busy: dict[int, list] = {}
    writers: dict[int, set[int]] = {}   # region -> nodes writing a live-out unit there
    for it, lv in zip(p.items, through):
        if it.region == ARENA:
            continue
        busy.setdefault(it.region, []).append(lv)
        if it.live_out and not it.live_in and len(it.defs) == 1:
            writers.setdefault(it.region, set()).add(it.defs[0])
    idle = {r: neg(lits.any_of(busy.get(r, []))) for r in range(len(p.region_sizes))}

    # Positions in one order for the writers and the parked units' readers:
    # the block node at 0, the nodes run before it below.
    span = p.num_nodes + 1
    pos: dict[int, object] = {}

    def place(v: int):
        if v == n:
            return 0
        if v in anc:
            return -1          # before n and every node after it: enough here
        if v not in pos:
            var = m.new_int_var(-span, span, "")
            if v in desc:
                m.add(var >= 1)
            else:
                lit = ran(v)
                m.add(var <= -1).only_enforce_if(lit)
                m.add(var >= 1).only_enforce_if(lit.Not())
            pos[v] = var
        return pos[v]

    cost = {t: [-block.gap, [], []] for t in steps}     # step -> [constant, coefs, variables]
    tops: dict[int, int] = {}                           # count variable's index -> its most

    def add(t, coef, lit):
        if lit is True:
            cost[t][0] += coef
        elif lit is not False:
            cost[t][1].append(coef)
            cost[t][2].append(lit)

    def top(var) -> int:
        return tops.get(var.index, 1) if var.index >= 0 else 1

    whole = set(park.whole)
    for r, size in enumerate(p.region_sizes):
        if r in whole or not size:
            continue
        for t in steps:
            if block.busy_from.get(r, block.length) > t:
                add(t, -size, idle[r])
    # Whole regions idle throughout, of one capacity, written by the same
    # nodes from the same step go as one bundle holding that many times the
    # capacity, no unit larger than one (a relaxation: fewer choices to make).
    bundles: dict[tuple, list[int]] = {}
    for r in park.whole:
        key = (frozenset(writers.get(r, ())), park.capacity[r], block.busy_from.get(r)) \
            if idle[r] is True else (r,)
        bundles.setdefault(key, []).append(r)
    bundled = [(rs[0], len(rs), park.capacity[rs[0]] * len(rs)) for rs in bundles.values()]
    load: dict[tuple[int, int], list] = {}          # (bundle, step) -> [(size, variable)]
    after: list[tuple[object, int, int]] = []       # (literal, v, w): v runs before w
    for it, lv in zip(p.items, through):
        if it.region != ARENA or it.size <= 0 or lv is False:
            continue
        for t in steps:
            add(t, it.size, lv)
        readers = _last_readers(it.touches, anc, succs)
        places = []
        for b, (r, _, _) in enumerate(bundled):
            ws = writers.get(r, set())
            if it.size > park.capacity[r] or idle[r] is False or r in block.busy_from \
                    or any(w in readers for w in ws):   # read by its writer: both live there
                continue
            z = m.new_bool_var("")
            for lit in (lv, idle[r]):
                if lit is not True:
                    m.add_implication(z, lit)
            after += [(z, v, w) for w in ws for v in readers]
            places.append(z)
            for t in steps:
                load.setdefault((b, t), []).append((it.size, z))
                add(t, -it.size, z)
        if len(places) > 1:
            m.add_at_most_one(places)
    # Inner units alike (size, steps live among ``steps``, last step) go as a
    # count per region: the same choices as one literal each, without symmetry.
    # Its last step matters only against the regions' ``busy_from``: it goes
    # as the least of those after it.
    cuts = sorted(set(block.busy_from.values()))
    groups: dict[tuple, int] = {}
    for size, spans in block.inner:
        live_at = tuple(t for t in steps if any(s <= t <= e for s, e in spans))
        if live_at:
            last = max(e for _, e in spans)
            key = (size, live_at, next((c - 1 for c in cuts if c > last), block.length - 1))
            groups[key] = groups.get(key, 0) + 1
    for (size, live_at, last), count in groups.items():
        for t in live_at:
            cost[t][0] += size * count
        placed = []
        for b, (r, many, _) in enumerate(bundled):
            most = min(count, many * (park.capacity[r] // size))
            if not most or idle[r] is False or block.busy_from.get(r, block.length) <= last:
                continue
            k = m.new_int_var(0, most, "")
            tops[k.index] = most
            used = m.new_bool_var("")
            m.add(k == 0).only_enforce_if(used.Not())
            if idle[r] is not True:
                m.add_implication(used, idle[r])
            after += [(used, n, w) for w in writers.get(r, set()) if w != n]
            placed.append(k)
            for t in live_at:
                load.setdefault((b, t), []).append((size, k))
                add(t, -size, k)
        if placed:
            m.add(sum(placed) <= count)
    for (b, _), parked in load.items():
        room = bundled[b][2]
        if sum(s * top(v) for s, v in parked) > room:
            m.add(sum(s * v for s, v in parked) <= room)
    for z, v, w in after:
        a, b = place(v), place(w)
        if isinstance(a, int) and isinstance(b, int):
            if a >= b:
                m.add_bool_or([z.Not()])
        else:
            m.add(a + 1 <= b).only_enforce_if(z)
    nodes = set(pos)        # the order among the positioned nodes follows the edges
    for u in pos:
        for v in reachable(succs, succs[u]) & nodes:
            m.add(pos[u] + 1 <= pos[v])
    alike = _alike_writers(p, park, block, writers, through, idle, anc, desc, preds, succs, nodes)
    for group in alike:
        for u, v in zip(group, group[1:]):
            m.add(pos[u] + 1 <= pos[v])
    positioned = {w for ws in writers.values() for w in ws if w in pos}
    grouped = {w for group in alike for w in group}
    classes = alike + [[w] for w in sorted(positioned - grouped)]
    writer_desc = {w: reachable(succs, succs[w]) & positioned for w in positioned}
    low = min(k - sum(abs(c) * top(v) for c, v in zip(coefs, vs))
              for k, coefs, vs in cost.values())
    high = max(k + sum(max(0, c) * top(v) for c, v in zip(coefs, vs))
               for k, coefs, vs in cost.values())
    if high <= floor:
        return floor
    peak = m.new_int_var(min(low, floor), high, "")
    for t in steps:
        k, coefs, vs = cost[t]
        m.add(peak >= k + sum(c * v for c, v in zip(coefs, vs)))
    m.add(peak >= floor)
    m.minimize(peak)
    return m, pos, classes, writer_desc


def _alike_writers(p, park, block, writers, through, idle, anc, desc, preds, succs,
                   nodes) -> list[list[int]]:
    """Groups of writers that the model cannot tell apart, each in node order:
    after ``n``, on no path to or from another positioned node, writing whole
    regions idle throughout the block that no other node writes, reading
    arena units live across the block that no other node after ``n`` reads;
    alike in their regions' capacities and their units' sizes.  Swapping two
    (with their regions and units) maps the model's solutions onto its own,
    so their positions may go in one order (symmetry breaking: the minimum
    stays)."""
    regions_of: dict[int, list[int]] = {}
    for r, ws in writers.items():
        for w in ws:
            regions_of.setdefault(w, []).append(r)
    reads: dict[int, list[int]] = {}
    for i, it in enumerate(p.items):
        if it.region == ARENA and it.size > 0:
            for v in it.touches:
                reads.setdefault(v, []).append(i)
    whole = set(park.whole)
    groups: dict[tuple, list[int]] = {}
    for w, regions in regions_of.items():
        if w not in desc or w not in nodes:
            continue
        if any(r not in whole or writers[r] != {w} or idle[r] is not True
               or r in block.busy_from for r in regions):
            continue
        units = reads.get(w, [])
        if any(through[i] is not True or
               set(_last_readers(p.items[i].touches, anc, succs)) - {block.node} != {w}
               for i in units):
            continue
        if (reachable(succs, succs[w]) | reachable(preds, preds[w])) & (nodes - {w}):
            continue
        key = (tuple(sorted(park.capacity[r] for r in regions)),
               tuple(sorted(p.items[i].size for i in units)))
        groups.setdefault(key, []).append(w)
    return [sorted(ws) for ws in groups.values() if len(ws) > 1]


def _last_readers(touches, anc: set[int], succs) -> list[int]:
    """The nodes of ``touches`` outside ``anc`` with none of the others after
    them: the unit is read last by one of them (the rest run before it)."""
    left = [v for v in touches if v not in anc]
    if len(left) < 2:
        return left
    others = set(left)
    return [v for v in left if not reachable(succs, succs[v]) & others]
