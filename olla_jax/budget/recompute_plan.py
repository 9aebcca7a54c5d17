"""A recomputation plan on a fixed order: its state, its layout and its placement."""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from typing import Any, Sequence

import numpy as np

from olla_jax.graph import layout as layout_lib
from olla_jax.graph.model import ScheduleGraph
from olla_jax.solve import problem as sp
from olla_jax.budget.anchor import lowest_gap
from olla_jax.budget.candidates import Candidate


@dataclasses.dataclass(frozen=True)
class RecomputePlan:
    layout: Any                     # graph.layout.Layout with recomputes
    temp_bytes: int
    extra_flops: int
    picked: tuple[str, ...]         # producers run twice
    splits: tuple[tuple[int, int], ...] = ()   # (value, k): the copy runs before its k-th reader
    extra_cost_s: float = 0.0       # roofline estimate of the copies (the model's objective)
    how: str = "greedy"             # which search chose it
    # Live-bytes peak of what its placement puts in the arena: the least
    # arena an exact placement keeping the same values out of it can reach.
    arena_live: int = 0
    # (start, end, top byte) of each piece of memory in the arena, on the
    # doubled time axis of ``State``: where the arena's top is reached.
    arena_blocks: tuple[tuple[int, int, int], ...] = ()
    # The (doubled) time at which those live bytes peak, -1 when none.
    arena_peak_at: int = -1
    # Copies inside loop bodies: (budget.body.BodyCandidate, split) each, in pick order.
    body: tuple = ()


def late_part_ok(graph: ScheduleGraph, step: Sequence[int], c: Candidate, before: int) -> bool:
    """Whether ``c``'s copy may run just before node ``before``: every value
    written over its bytes in place is written at or after ``before`` (the
    copy then takes their bytes, the unit's late part), and, before a slot
    (not a reader), a reader of the value comes after it."""
    if before in c.slots and not any(step[r] > step[before] for r in c.readers):
        return False
    return all(step[graph.values[o].def_node] >= step[before] for o in c.successors)


def copy_time(graph: ScheduleGraph, step: Sequence[int], node: int) -> int:
    """Doubled time of a copy run just before ``node``: before its whole block
    (a while loop's body reads the copy from its first iteration on), which
    for a plain instruction is just before its own step (``2 * step``)."""
    return 2 * (step[node] - graph.block_length(node) + 1)


def read_times(c: Candidate, users: Sequence[int], step: Sequence[int]) -> list[int]:
    """Per split k of ``users`` (``c.users`` in order; 0 to len), the doubled
    time until which the run before it must live: its producer's, or the last
    of ``c``'s own readers before ``users[k]``.  Slots do not count: a slot
    reads nothing of ``c`` unless a dependent's copy runs there, and that copy
    keeps what it reads alive itself (``plan_of``).  A view of ``c`` (a GPU
    bitcast, ``c.views``) before the split counts as a reader, and each
    get-tuple-element holding it (``c.tuple_views``) keeps the first run
    live wherever it runs: the independent checker holds a value live at its
    positions (a get-tuple-element moved late by the order was missed here,
    and the first run's bytes were given to others while it was still held)."""
    held = max((2 * step[n] + 1 for n in c.tuple_views), default=-1)
    out, last = [], max(2 * step[c.producer] + 1, held)
    views = sorted(step[n] for n in c.views)
    for u in users:
        seen = [s for s in views if s < step[u]]
        out.append(max(last, 2 * seen[-1] + 1) if seen else last)
        if u not in c.slots:
            last = max(last, 2 * step[u] + 1)
    seen = views[-1:]
    out.append(max(last, 2 * seen[-1] + 1) if seen else last)
    return out


def copies_read(c: Candidate, users: Sequence[int], ks) -> bool:
    """Whether each copy of ``c`` split before readers ``ks`` of ``users``
    (``c.users`` in order) has a reader of its own: a copy before a slot
    serves the readers up to the next split, and there must be one."""
    ks = sorted(set(ks))
    for k, nxt in zip(ks, [*ks[1:], len(users)]):
        if not any(u not in c.slots for u in users[k:nxt]):
            return False
    return True


@dataclasses.dataclass
class State:
    """The placement problem on a doubled time axis (node step t -> 2t+1, so a
    second run just before a node's step sits at 2t), with the picks so far."""
    base: sp.PlacementProblem
    owners: tuple[int, ...]
    intervals: list[list[int]]                  # [size, start, end] per base interval
    interval_of_unit: dict[int, int]
    extra: list[tuple[int, int, int]] = dataclasses.field(default_factory=list)  # late copies
    picks: list[tuple[Candidate, int]] = dataclasses.field(default_factory=list)  # (cand, split)
    # A library call's copy writes its scratch too: (pick index, scratch value,
    # [size, copy time, copy time]) each, placed after ``extra``.
    scratch: list[tuple[int, int, list[int]]] = dataclasses.field(default_factory=list)
    # Copies inside while bodies (``budget.body``): (BodyCandidate, split,
    # [size, copy time, end]) each, placed after ``scratch``.
    body: list[tuple[Any, int, list[int]]] = dataclasses.field(default_factory=list)

    # Per pick, the doubled time its copy runs (set by ``add_scratch``).
    copy_times: list[int] = dataclasses.field(default_factory=list)

    def add_scratch(self, graph: ScheduleGraph, c: Candidate, clone_t: int) -> None:
        """The scratch of ``c``'s copy (the last pick), live at its time alone.
        Copies of results of one multi-result fusion run at one time are one
        launch (``merged_with``): it writes each of them at its own copy's
        place, so none of them is the others' scratch."""
        i = len(self.picks) - 1
        self.copy_times.append(clone_t)
        joined = self.merged_with(i)
        self.scratch = [s for s in self.scratch if not (s[0] in joined and s[1] == c.value)]
        # (a result none of them recomputes is written once, at the first's scratch)
        copied = {self.picks[j][0].value for j in joined} | \
            {v for j, v, _ in self.scratch if j in joined}
        for v in (*c.scratch, *c.feeders):     # (a feeder's copy: read by this one alone)
            if v in c.scratch and v in copied:
                continue
            self.scratch.append((i, v, [graph.values[v].size, clone_t, clone_t]))

    def merged_with(self, i: int) -> set[int]:
        """The other picks whose copy is one launch with pick ``i``'s: copies
        of other results of its producer (a multi-result fusion's pieces,
        ``candidates._pieces``) run at the same time."""
        c = self.picks[i][0]
        if not c.scratch:
            return set()
        return {j for j, (d, _) in enumerate(self.picks[:len(self.copy_times)])
                if j != i and d.producer == c.producer and d.value in c.scratch and
                self.copy_times[j] == self.copy_times[i]}

    def launches_flops(self) -> int:
        """Extra FLOPs of the picks' copies, a merged launch counted once."""
        total, seen = 0, set()
        for i, (c, _) in enumerate(self.picks):
            if i < len(self.copy_times) and self.merged_with(i) & seen:
                continue
            seen.add(i)
            total += c.flops
        return total

    def problem(self) -> sp.PlacementProblem:
        ivs = [sp.Interval(s, a, b) for s, a, b in self.intervals]
        ivs += [sp.Interval(s, a, b) for s, a, b in self.extra]
        ivs += [sp.Interval(s, a, b) for _, _, (s, a, b) in self.scratch]
        ivs += [sp.Interval(s, a, b) for _, _, (s, a, b) in self.body]
        regions = tuple(sp.Region(r.capacity, tuple(
            sp.Occupant(o.offset, o.size, 2 * o.start + 1, 2 * o.end + 1) for o in r.occupants))
            for r in self.base.regions)
        return sp.PlacementProblem(intervals=tuple(ivs), regions=regions,
                                   alignment=self.base.alignment,
                                   same_offset=self.base.same_offset)

    def profile(self, horizon: int) -> np.ndarray:
        diff = np.zeros(horizon + 2, dtype=np.int64)
        for s, a, b in [*self.intervals, *self.extra, *(iv for _, _, iv in self.scratch),
                        *(iv for _, _, iv in self.body)]:
            diff[a] += s
            diff[b + 1] -= s
        return np.cumsum(diff)[:horizon]


def step_index(graph: ScheduleGraph, order: Sequence[int]) -> list[int]:
    """Per node, its own flat step under ``order`` (the end of its block)."""
    start = graph.flat_layout(order)
    return [start[n] + graph.block_length(n) - 1 for n in range(len(graph.nodes))]


def operand_intact(graph: ScheduleGraph, spans, step, interval_of_unit, value_id: int,
                    at: int) -> bool:
    """Whether operand ``value_id`` can stay intact until a second run at doubled step ``at``."""
    unit = graph.units[graph.unit_of_value[value_id]]
    v = graph.values[value_id]
    if not unit.movable:
        # (a donated argument, or a value in an output allocation: the value
        # XLA writes over it in place, a donated parameter's update or a
        # multi-output fusion's output such as a running mean's, is a member
        # of its unit, written at its own step)
        for other in unit.values:
            o = graph.values[other]
            if other != value_id and o.def_node != v.def_node and \
                    2 * step[v.def_node] + 1 < 2 * step[o.def_node] + 1 <= at:
                return False
        alloc = graph.allocations[unit.allocation]
        if alloc.kind in ("parameter", "constant") and not alloc.live_out:
            return True
        return any(2 * s + 1 <= at <= 2 * e + 1 for s, e in spans[unit.id])
    if unit.id not in interval_of_unit:
        return False
    # no other member of the unit may write its bytes before the second run
    own = 2 * min(s for s, _ in spans[unit.id]) + 1
    for other in unit.values:
        if other != value_id and graph.values[other].def_node != v.def_node:
            o_start = 2 * step[graph.values[other].def_node] + 1
            if own < o_start <= at:
                return False
    return True


def new_state(graph: ScheduleGraph, order: Sequence[int]) -> State:
    pp, owners = graph.placement_problem(order)
    gapped = {owners[i] for group in pp.same_offset for i in group} if pp.same_offset else set()
    intervals = [[iv.size, 2 * iv.start + 1, 2 * iv.end + 1] for iv in pp.intervals]
    interval_of_unit = {u: i for i, u in enumerate(owners) if u not in gapped}
    return State(pp, owners, intervals, interval_of_unit)


def plan_of(graph: ScheduleGraph, order: Sequence[int],
            picks: Sequence[tuple[Candidate, int]], *,
            base: sp.Placement | None = None, exact_s: float = 0.0,
            target_temp: int | None = None, orders: Sequence[str] | None = None,
            anchor=None, body_picks: Sequence = (), body_cands: Sequence = ()) -> RecomputePlan:
    """The plan that recomputes each candidate of ``picks`` before its k-th
    reader (in ``order``), placed by best-fit (``place_state``; ``base``: best-fit's
    placement without recomputation, computed when None).  Copies run by
    time, a chain's operand first; a copy made after its operand's copy reads
    that copy.  With ``exact_s``, an exact placement search (``place_exact``)
    then lowers the arena for that long at most, stopping at ``target_temp``:
    the copies' short lives fragment best-fit's arena.  ``orders``: best-fit's
    sort orders (``fit_orders``; all when None); ``anchor``: the plan's own
    placement of ``order``, kept where smaller (``anchor.smaller``).
    ``body_picks``: copies inside loop bodies, (``budget.body.BodyCandidate``,
    split) each; then, with ``body_cands`` and ``target_temp``, the body
    greedy's (``body.choose``)."""
    from olla_jax.solve import place as place_lib
    from olla_jax.budget.anchor import smaller
    state = new_state(graph, order)
    if base is None:
        base = best_fit(state.problem(), orders)
    add_entry_picks(graph, order, state, picks)
    if body_picks or body_cands:
        from olla_jax.budget import body
        for c, k in body_picks:
            if not body.add(graph, order, state, c, k):
                raise ValueError(f"value {c.value}: its copy in a loop body cannot be placed")
        if body_cands and target_temp is not None:
            body.choose(graph, order, state, body_cands, target_temp)
    placement = smaller(place_state(state, base, orders), state, anchor)
    if exact_s > 0.05 and (target_temp is None or placement.arena_size > target_temp):
        placement = place_lib.place_exact(state.problem(), time_limit_s=exact_s, hint=placement,
                                          target=target_temp)
    return realize(graph, order, state, placement)


def add_entry_picks(graph: ScheduleGraph, order: Sequence[int], state: State,
                    picks: Sequence[tuple[Candidate, int]]) -> None:
    """Record ``picks`` (entry copies, each before its k-th reader in
    ``order``) in ``state`` (``plan_of``'s first part)."""
    step = step_index(graph, order)
    unit_of = graph.unit_of_value
    picked = []                                 # (clone time, candidate, k)
    for c, k in picks:
        users = sorted(c.users, key=lambda n: step[n])
        picked.append((copy_time(graph, step, users[k]), c, k))
    picked.sort(key=lambda p: (p[0], step[p[1].producer]))
    copy = _copy_lives(graph, state, step, picked)   # (value, k) -> [size, born, end]
    for clone_t, c, k in picked:
        for o in c.operands:
            unit_o = graph.units[unit_of[o]]
            made = [key for key in copy if key[0] == o and copy[key][1] <= clone_t]
            if made:    # a chain reads the operand's latest copy
                last = max(made, key=lambda key: copy[key][1])
                copy[last][2] = max(copy[last][2], clone_t)
            elif unit_o.movable:
                ov = state.intervals[state.interval_of_unit[unit_o.id]]
                ov[2] = max(ov[2], clone_t)
        state.picks.append((c, k))
        state.add_scratch(graph, c, clone_t)
    state.extra = [tuple(copy[(c.value, k)]) for c, k in state.picks]


def _copy_lives(graph: ScheduleGraph, state: State, step, picked) -> dict:
    """(value, k) -> [size, born, end] of the copy run before the k-th reader
    (``picked``: (clone time, candidate, k) by time); the first copy's
    interval in ``state`` is cut to end after the reader before the first
    split.  A value split several times has one copy per split, each read up
    to the reader before the next split, the last one until the value's end.
    ValueError for a copy that no reader reads (one before a slot that no
    reader of the value follows would end before it is made)."""
    unit_of = graph.unit_of_value
    ks_of = defaultdict(list)
    for _, c, k in picked:
        ks_of[c.value].append(k)
    out, end_of = {}, {}
    for clone_t, c, k in picked:
        users = sorted(c.users, key=lambda n: step[n])
        iv = state.intervals[state.interval_of_unit[unit_of[c.value]]]
        ks = sorted(ks_of[c.value])
        if len(set(ks)) != len(ks):
            raise ValueError(f"value {c.value} is split twice before reader {k}")
        if not copies_read(c, users, ks):   # (the searches never pick one: late_part_ok)
            before = [graph.nodes[users[j]] for j in ks]
            raise ValueError(f"value {c.value}: a copy of it before {before} (slots included) "
                             "has no reader of its own before the next copy or the end")
        reads = read_times(c, users, step)
        if c.value not in end_of:
            end_of[c.value] = iv[2]
            iv[2] = reads[ks[0]]
        nxt = [j for j in ks if j > k]
        end = max(clone_t, reads[nxt[0]]) if nxt else end_of[c.value]
        out[(c.value, k)] = [graph.values[c.value].size, clone_t, end]
    return out


def best_fit(problem: sp.PlacementProblem, orders: Sequence[str] | None = None) -> sp.Placement:
    """Best-fit's placement of ``problem`` over ``orders`` (all its sort orders when None)."""
    from olla_jax.solve import place as place_lib
    return place_lib.best_fit(problem, orders=tuple(orders or place_lib.SORT_ORDERS))


def fit_orders(problem: sp.PlacementProblem) -> tuple[sp.Placement, tuple[str, ...]]:
    """(best-fit's placement of ``problem``, its sort orders with the one that
    placed it first): a search places many problems
    that differ from ``problem`` only by a few copies, and the order that
    wins on it (one of four) places them in a quarter of the time."""
    from olla_jax.solve import place as place_lib
    from olla_jax.solve.place_greedy import best_fit_model
    from olla_jax.solve.place_model import build_model
    model = build_model(problem)
    found = []
    for o in place_lib.SORT_ORDERS:
        found.append((best_fit_model(model, orders=(o,)), o))
    best, first = min(found, key=lambda f: f[0].arena_size)
    return best, (first, *(o for o in place_lib.SORT_ORDERS if o != first))


def place_state(state: State, base: sp.Placement,
                orders: Sequence[str] | None = None) -> sp.Placement:
    """Best-fit of ``state``'s problem, or, when smaller, best-fit with the
    values that ``base`` (the placement before recomputation) put in idle
    output space kept there (the model counts them out of the arena; a plain
    best-fit may fill that space with others and leave them in the arena)."""
    from olla_jax.solve import place as place_lib
    problem = state.problem()
    plain = best_fit(problem, orders)
    grouped = {i for group in problem.same_offset for i in group}
    taken: dict[int, list[tuple[int, int, int, int]]] = {   # region -> (offset, size, start, end)
        r: [(o.offset, o.size, o.start, o.end) for o in region.occupants]
        for r, region in enumerate(problem.regions)}
    fixed = {}
    for i in range(len(state.intervals)):
        r = base.region[i]
        if r == sp.ARENA or i in grouped:
            continue
        iv, off = problem.intervals[i], base.offset[i]
        if any(off < o + sz and o < off + iv.size and iv.start <= e and s <= iv.end
               for o, sz, s, e in taken[r]):
            continue        # an operand kept longer for a copy now meets another there
        fixed[i] = (r, off)
        taken[r].append((off, iv.size, iv.start, iv.end))
    if not fixed:
        return plain
    free = [i for i in range(len(problem.intervals)) if i not in fixed]
    index = {i: k for k, i in enumerate(free)}
    regions = tuple(sp.Region(region.capacity, tuple(sp.Occupant(*x) for x in taken[r]))
                    for r, region in enumerate(problem.regions))
    reduced = sp.PlacementProblem(
        intervals=tuple(problem.intervals[i] for i in free), regions=regions,
        alignment=problem.alignment,
        same_offset=tuple(tuple(index[i] for i in group) for group in problem.same_offset))
    got = best_fit(reduced, orders)
    region, offset = [sp.ARENA] * len(problem.intervals), [0] * len(problem.intervals)
    for i, (r, off) in fixed.items():
        region[i], offset[i] = r, off
    for k, i in enumerate(free):
        region[i], offset[i] = got.region[k], got.offset[k]
    kept = sp.Placement(tuple(region), tuple(offset), got.arena_size)
    if kept.arena_size >= plain.arena_size:
        return plain
    place_lib.validate_placement(problem, kept)
    return kept


def better(a: RecomputePlan, b: RecomputePlan, target: int) -> bool:
    """``a`` over ``b``: meeting the target first, then less extra cost; else less temp."""
    if (a.temp_bytes <= target) != (b.temp_bytes <= target):
        return a.temp_bytes <= target
    if a.temp_bytes <= target:
        return (a.extra_cost_s, a.temp_bytes) < (b.extra_cost_s, b.temp_bytes)
    return (a.temp_bytes, a.extra_cost_s) < (b.temp_bytes, b.extra_cost_s)


def copies_outside_parameters(graph: ScheduleGraph, state: State,
                              placement: sp.Placement) -> sp.Placement:
    """``placement`` with every copy (and copy's scratch) that it put in a
    donated parameter's idle bytes moved to the arena, into the lowest gap free
    over its life (on top when none): the independent checker refuses a copy
    there (a donated parameter's region holds moved values only), and the
    placement engines know one kind of region."""
    problem = state.problem()
    n = len(state.intervals)
    moving = [i for i in range(n, len(problem.intervals))
              if placement.region[i] != sp.ARENA
              and graph.allocations[graph.regions[placement.region[i]]].kind == "parameter"]
    if not moving:
        return placement
    region, offset = list(placement.region), list(placement.offset)
    align, arena = problem.alignment, placement.arena_size
    for i in moving:
        iv = problem.intervals[i]
        taken = ((offset[j], offset[j] + other.size) for j, other in enumerate(problem.intervals)
                 if region[j] == sp.ARENA and j != i
                 and other.start <= iv.end and iv.start <= other.end)
        at = lowest_gap(taken, iv.size, align)
        region[i], offset[i] = sp.ARENA, at
        arena = max(arena, at + iv.size)
    return sp.Placement(tuple(region), tuple(offset), arena)


def _feeder_copies(graph: ScheduleGraph, c: Candidate, before: str, placed) -> list:
    """The copies of ``c``'s feeders (``candidates.with_feeders``) run just
    before ``c``'s own copy (listed first: copies before one instruction run
    in list order), each read by that copy alone (a chain, no late reader);
    ``placed``: (value, place) of ``c``'s copy's scratch and feeders."""
    out = []
    for v, place in placed:
        if v in c.feeders:
            out.append(layout_lib.Recompute(
                value=v, producer=graph.nodes[graph.values[v].def_node], before=before,
                late_users=(), place=place, size=graph.values[v].size))
    return out


def realize(graph: ScheduleGraph, order: Sequence[int], state: State,
            placement: sp.Placement) -> RecomputePlan:
    placement = copies_outside_parameters(graph, state, placement)
    n = len(state.intervals)
    base = sp.Placement(placement.region[:n], placement.offset[:n], placement.arena_size)
    layout = layout_lib.realize(graph, order, base, state.owners)
    step = step_index(graph, order)
    recomputes = []
    scratch_of = defaultdict(list)  # pick index -> (scratch value, its copy's place)
    at = n + len(state.picks)
    for (i, v, _), region, offset in zip(state.scratch, placement.region[at:],
                                         placement.offset[at:]):
        alloc = graph.temp_allocation if region == sp.ARENA else graph.regions[region]
        scratch_of[i].append((v, (alloc, offset)))
    ks_of = defaultdict(list)       # a value recomputed several times: its copies' splits
    for c, k in state.picks:
        ks_of[c.value].append(k)
    for i, ((c, k), region, offset) in enumerate(zip(state.picks, placement.region[n:],
                                                     placement.offset[n:])):
        users = sorted(c.users, key=lambda u: step[u])
        upto = min((j for j in ks_of[c.value] if j > k), default=len(users))
        alloc = graph.temp_allocation if region == sp.ARENA else graph.regions[region]
        recomputes.extend(_feeder_copies(graph, c, graph.nodes[users[k]], scratch_of[i]))
        recomputes.append(layout_lib.Recompute(
            value=c.value, producer=graph.nodes[c.producer], before=graph.nodes[users[k]],
            late_users=tuple(graph.nodes[u] for u in users[k:upto] if u not in c.slots),
            place=(alloc, offset),
            size=graph.values[c.value].size,
            scratch=tuple((v, at) for v, at in scratch_of[i] if v not in c.feeders)))
    at += len(state.scratch)
    for (c, k, _), region, offset in zip(state.body, placement.region[at:], placement.offset[at:]):
        alloc = graph.temp_allocation if region == sp.ARENA else graph.regions[region]
        recomputes.append(layout_lib.Recompute(
            value=c.value, producer=c.producer, before=c.readers[k], late_users=c.readers[k:],
            place=(alloc, offset), size=graph.values[c.value].size))
    problem = state.problem()
    events = defaultdict(int)
    blocks = []
    for iv, region, offset in zip(problem.intervals, placement.region, placement.offset):
        if region == sp.ARENA:
            events[iv.start] += iv.size
            events[iv.end + 1] -= iv.size
            blocks.append((iv.start, iv.end, offset + iv.size))
    times = sorted(events)
    running = np.cumsum([events[t] for t in times])
    arena_live = max(running, default=0)
    peak_at = times[int(np.argmax(running))] if len(running) else -1
    places = dict(layout.places)
    own = [r for r in recomputes[:len(recomputes) - len(state.body)]
           if r.late_users]   # (a feeder's copy has none; a body copy moves nothing with it)
    for (c, k), r in zip(state.picks, own):
        if k != max(ks_of[c.value]):
            continue
        for o in c.successors:      # written in place over the (last) copy: its bytes
            places[o] = r.place
    layout = dataclasses.replace(layout, places=places, recomputes=tuple(recomputes))
    return RecomputePlan(layout=layout, temp_bytes=layout.temp_bytes,
                         extra_flops=state.launches_flops() +
                         sum(c.flops for c, _, _ in state.body),
                         picked=tuple(graph.nodes[c.producer] for c, _ in state.picks) +
                         tuple(c.producer for c, _, _ in state.body),
                         splits=tuple((c.value, k) for c, k in state.picks),
                         extra_cost_s=sum(c.cost_s for c, _ in state.picks) +
                         sum(c.cost_s for c, _, _ in state.body),
                         arena_live=int(arena_live), arena_blocks=tuple(blocks),
                         arena_peak_at=int(peak_at),
                         body=tuple((c, k) for c, k, _ in state.body))
