"""A node's step cost with whole units parked in regions, minimised by CP-SAT.

The min-cut (``bounds``) counts an idle region's whole capacity as free at a
node, for any unit live then.  A real placement puts each unit whole at one
offset for its whole life, so at one step the units in a region are disjoint
(they sum to at most its capacity) and a unit may sit there only if the
region stays idle until the unit's last read.  On unet (H100) six idle
1.125 MiB outputs and three of 2.25 MiB meet live blocks of 1, 1.125, 2 and
2.25 MiB: whole, they fill 12.25 of the 13.5 MiB the fluid count takes.

For one node ``n`` this minimises, over the sets ``S`` run before it (closed
under ancestors, holding ``n``'s ancestors, none of its descendants), the
arena's live bytes plus ``n``'s extra less (a) the capacity of the idle
*fluid* regions and (b) the bytes of the units assigned to idle *whole*
regions, each unit to one region at most, each region at most its capacity,
and no unit to a region in ``barred`` while that pair's node has not run.
Liveness is ``bounds``' (``live_in``/defs in ``S`` or ``n``; ``live_out``/a
touch not in ``S``), which never says more is live than an order does.

Why it is at most the arena of any placement of any order at ``n``'s step
(``n`` one step of the real schedule, see ``ScheduleGraph.park_problem``):
take the order's ``S``; the units live then each sit in the arena or whole
in a region idle then (a busy region's pinned unit covers its bytes), the
ones in one region disjoint: that is an assignment of the model, and a unit
in a region while ``barred``'s node has not run would overlap the region's
pinned unit that node writes (the caller's promise).  Units the model counts
live that are not (a loop-carried unit idle here) only lower it with the
extra that subtracts them.  So ``max_n`` of these minima is a lower bound.
"""

from __future__ import annotations

from typing import Collection, Sequence

from olla_jax.solve.cpsat_lits import Lits, RanBefore, neg
from olla_jax.solve import cpsat_run
from olla_jax.solve.dag import reachable
from olla_jax.solve.problem import ARENA, OrderProblem, ParkProblem


def node_minimum(park: ParkProblem, n: int, *, time_limit_s: float, floor: int = 0,
                 anc: set[int] | None = None, desc: set[int] | None = None,
                 hints: Sequence[Collection[int]] = ()) -> tuple[int, bool]:
    """(a proven lower bound on the least parked step cost at node ``n``, whether
    it is the exact minimum).  ``floor``: a value known to hold already
    (returned when CP-SAT proves nothing more).  ``hints``: sets of nodes run
    before ``n`` (an order's prefix); the cheapest, with its units packed
    best-fit, is CP-SAT's starting solution (without one its bound stayed at
    the min-cut until its own search found a good set: on H100 resnet18's
    strongest node 10 s of 12, 4 s in all with the orders' hint)."""
    from ortools.sat.python import cp_model
    built = _model(park, n, floor=floor, anc=anc, desc=desc, hints=hints)
    if isinstance(built, int):
        return built, True
    m = built[0]
    solver, status = cpsat_run.solve(m, time_limit_s)
    if status == cp_model.OPTIMAL:
        return max(floor, int(round(solver.objective_value))), True
    if status == cp_model.INFEASIBLE:     # every S costs less than the floor: cannot be
        return floor, False
    if status == cp_model.FEASIBLE:
        return max(floor, int(solver.best_objective_bound)), False
    return floor, False


def _model(park: ParkProblem, n: int, *, floor: int, anc: set[int] | None,
           desc: set[int] | None, hints: Sequence[Collection[int]]):
    """``node_minimum``'s CP-SAT model and its hint's cost (None without
    hints), or the minimum itself where nothing is left to choose."""
    from ortools.sat.python import cp_model
    p = park.problem
    if anc is None or desc is None:
        anc, desc = _reach(p, n)
    m = cp_model.CpModel()
    ran = RanBefore(m, n, anc, desc)
    x = ran.variables             # free node -> "runs before n"
    rules: list = []              # (variable, its value from the earlier ones' values)

    lits = Lits(m, rules)
    any_of, both = lits.any_of, lits.both

    live = []
    for it in p.items:
        started = True if it.live_in or not it.defs else any_of(
            [True if d == n else ran(d) for d in it.defs])
        unfinished = True if it.live_out else any_of(
            [True if t == n else neg(ran(t)) for t in it.touches])
        live.append(both(started, unfinished))
    for u, v in p.edges:       # closure: v before n needs u before n
        a, b = ran(u), ran(v)
        if b is True and a is False:
            raise ValueError(f"node {n}: ancestor sets are inconsistent")
        if isinstance(a, bool) or isinstance(b, bool):
            continue
        m.add_implication(b, a)
    whole = set(park.whole)
    pinned: dict[int, list] = {}
    for it, lv in zip(p.items, live):
        if it.region != ARENA:
            pinned.setdefault(it.region, []).append(lv)
    idle = {}
    for r in range(len(p.region_sizes)):
        busy = any_of(pinned.get(r, []))
        idle[r] = neg(busy)
    const = int(p.node_extra[n])
    terms, coefs = [], []
    for r, i in idle.items():
        if r not in whole and p.region_sizes[r]:
            if i is True:
                const -= p.region_sizes[r]
            elif i is not False:
                terms.append(i)
                coefs.append(-p.region_sizes[r])
    barred = {}
    for i, r, w in park.barred:
        barred.setdefault((i, r), []).append(w)
    load: dict[int, tuple[list, list]] = {}
    choices: list = []            # (z, unit, its size, region, the literals z needs)
    for i, (it, lv) in enumerate(zip(p.items, live)):
        if it.region != ARENA or it.size <= 0 or lv is False:
            continue
        if lv is True:
            const += it.size
        else:
            terms.append(lv)
            coefs.append(it.size)
        places = []
        for r in park.whole:
            cap = park.capacity[r]
            if it.size > cap or idle[r] is False:
                continue
            gate = [ran(w) for w in barred.get((i, r), ())]
            if any(g is False for g in gate):
                continue
            z = m.new_bool_var("")
            for lit in (lv, idle[r], *gate):
                if lit is not True:
                    m.add_implication(z, lit)
            places.append(z)
            choices.append((z, i, it.size, r, (lv, idle[r], *gate)))
            load.setdefault(r, ([], []))
            load[r][0].append(z)
            load[r][1].append(it.size)
            terms.append(z)
            coefs.append(-it.size)
        if len(places) > 1:
            m.add_at_most_one(places)
    for r, (zs, sizes) in load.items():
        if sum(sizes) > park.capacity[r]:
            m.add(sum(s * z for s, z in zip(sizes, zs)) <= park.capacity[r])
    if not terms:
        return max(floor, const)
    objective = const + sum(c * t for c, t in zip(coefs, terms))
    m.add(objective >= floor)      # nothing below the floor needs proving
    m.minimize(objective)
    hinted = _add_hint(m, x, rules, choices, park.capacity, hints, (const, coefs, terms))
    return m, hinted


def _add_hint(m, x: dict, rules: list, choices: list, capacity: dict[int, int],
              hints: Sequence[Collection[int]], objective: tuple) -> int | None:
    """The cheapest of ``hints`` (each a set of nodes run before the node) as
    ``m``'s complete solution hint: ``x`` from the set, the derived literals
    by their ``rules``, the parking by ``_pack``; its cost (None: no hints).
    ``objective``: (constant, coefficients, literals)."""
    best = None
    for ran in hints:
        val = _Values()
        for v, var in x.items():
            val[var] = v in ran
        for var, rule in rules:
            val[var] = rule(val)
        _pack(val, choices, capacity)
        const, coefs, terms = objective
        cost = const + sum(c * val[t] for c, t in zip(coefs, terms))
        if best is None or cost < best[0]:
            best = (cost, val)
    if best is None:
        return None
    hint = m.proto.solution_hint     # at once: add_hint per variable took 0.6 s on remat
    hint.vars.extend(var.index for var in best[1])
    hint.values.extend(int(value) for value in best[1].values())
    return best[0]


class _Values(dict):
    """Literal -> value; constants and negations read through."""

    def __getitem__(self, lit):
        if isinstance(lit, bool):
            return lit
        index = lit.index
        if index < 0:                      # a negated literal
            return not dict.__getitem__(self, lit.Not())
        return dict.__getitem__(self, lit)


def _pack(val: _Values, choices: list, capacity: dict[int, int]) -> None:
    """Sets each z of ``choices`` (a unit's place in a whole region) in ``val``:
    the largest units first, each to the fullest region it still fits whose
    literals hold (best-fit decreasing: a hint, not an optimum)."""
    free = dict(capacity)
    units: dict[int, list] = {}
    live: dict[int, bool] = {}       # per unit (its first literal, shared by its choices)
    for z, unit, size, r, needs in choices:
        val[z] = False
        if unit not in live:
            live[unit] = val[needs[0]]
        if live[unit] and all(val[lit] for lit in needs[1:]):
            units.setdefault(unit, []).append((z, size, r))
    for options in sorted(units.values(), key=lambda o: -o[0][1]):
        fits = [(free[r], z, r, size) for z, size, r in options if free[r] >= size]
        if fits:
            _, z, r, size = min(fits, key=lambda f: f[0])
            free[r] -= size
            val[z] = True


def _reach(problem: OrderProblem, n: int) -> tuple[set[int], set[int]]:
    """``n``'s strict ancestors and descendants."""
    preds: list[list[int]] = [[] for _ in range(problem.num_nodes)]
    succs: list[list[int]] = [[] for _ in range(problem.num_nodes)]
    for u, v in problem.edges:
        preds[v].append(u)
        succs[u].append(v)
    return reachable(preds, preds[n]), reachable(succs, succs[n])
