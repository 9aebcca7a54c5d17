"""Bytes that must be in the temp arena at one step, whatever the order.

Lower bounds on the arena that the order search does not need, for steps
where the min-cut relaxation says little (a step that is one ``while`` from
``lax.scan``; a model with hundreds of outputs whose idle space the
relaxation counts as free for everything).

At a step of XLA's flattened schedule some units are live in every order:
an instruction's operands and results; inside a while, call or conditional
block, what the block holds at that step on its own inner schedule (XLA's,
which the planner keeps); and (``across``) what an ancestor defined and a
descendant still reads.  Each must sit in the arena or in an output region
with enough free bytes then; a unit fits a region only whole, so what the
regions can take is a max-flow with nested eligibility (``_parkable``), and
the rest needs the arena (``resident_bound``).

``last_writer_bound`` adds one argument across nodes: of a set W of nodes
that write outputs, one runs last in any order, and there every other
output of W is already written, so its region is busy.  The peak is then at
least the least, over w in W, of what w needs with those regions busy.

Liveness within a node's block follows ``ScheduleGraph.value_interval``: a
value touched by the node is live from its start there (the block's first
step when an ancestor defined it) to its end there (the block's last step
when its last touch in XLA's order is another node), never more than any
order has.
"""

from __future__ import annotations

import dataclasses
import time
from collections import defaultdict
from typing import Sequence

import numpy as np

from olla_jax.graph.model import ScheduleGraph, merged_spans
from olla_jax.solve.problem import topological_order


@dataclasses.dataclass(frozen=True)
class Resident:
    """A proven lower bound of the temp arena: ``value`` bytes at flat step
    ``step`` of XLA's schedule, in the block of entry node ``node`` (-1 when
    the value is 0).  ``evaluated`` counts the steps whose parking was solved;
    ``complete`` is False when a deadline stopped the search (still a bound)."""
    value: int
    node: int = -1
    step: int = -1
    evaluated: int = 0
    complete: bool = True


def _closure(num_nodes: int, edges: Sequence[tuple[int, int]]) -> tuple[list[int], list[int]]:
    """Strict ancestors and descendants per node, as Python int bitsets."""
    preds: list[list[int]] = [[] for _ in range(num_nodes)]
    succs: list[list[int]] = [[] for _ in range(num_nodes)]
    for u, v in edges:
        preds[v].append(u)
        succs[u].append(v)
    order = topological_order(num_nodes, edges)
    anc = [0] * num_nodes
    for v in order:
        for u in preds[v]:
            anc[v] |= anc[u] | (1 << u)
    desc = [0] * num_nodes
    for u in reversed(order):
        for v in succs[u]:
            desc[u] |= desc[v] | (1 << v)
    return anc, desc


def _parkable(sizes: np.ndarray, capacities: np.ndarray) -> int:
    """The most bytes of units of ``sizes`` that regions of ``capacities``
    free bytes can hold, a unit only in a region at least its size, units
    split at will (so never less than any real packing).  Eligibility is
    nested, so the minimum cut takes the k largest regions whole and every
    unit no larger than the next one."""
    caps = np.sort(capacities[capacities > 0])[::-1]
    if not len(caps) or not len(sizes):
        return 0
    sizes = np.sort(sizes)
    prefix = np.concatenate([[0], np.cumsum(sizes)])
    whole = np.concatenate([[0], np.cumsum(caps)])            # k largest regions, k = 0..R
    nxt = np.concatenate([caps, [0]])                         # the (k+1)-th region's size
    fits = prefix[np.searchsorted(sizes, nxt, side="right")]
    return int(min(prefix[-1], (whole + fits).min()))


class _Surely:
    """What is live in every order at each step, per node's block."""

    def __init__(self, graph: ScheduleGraph, across: bool):
        self.graph = graph
        self.across = across
        n_nodes = len(graph.nodes)
        self.region_index = {a: r for r, a in enumerate(graph.regions)}
        self.region_size = np.array([graph.allocations[a].size for a in graph.regions],
                                    dtype=np.int64)
        kept = [u for u in graph.units if u.movable or u.allocation in self.region_index]
        self.anc, self.desc = _closure(n_nodes, graph.edges)
        everything = (1 << n_nodes) - 1
        # Per unit, the nodes whose whole block it spans in every order: one of
        # its values started before (live in, or defined by an ancestor) and is
        # still needed after (live out, or touched by a descendant).  Movable
        # units only with ``across``.
        self.forced: list[tuple[int, int]] = []
        for unit in kept:
            if unit.movable and not across:
                continue
            bits = 0
            for v in (graph.values[i] for i in unit.values):
                before = everything if v.live_in else self.desc[v.def_node]
                after = everything if v.live_out else 0
                for t in v.touches:
                    after |= self.anc[t]
                bits |= before & after
            if bits:
                self.forced.append((unit.id, bits))
        self.forced_bits = dict(self.forced)
        width = (n_nodes + 7) // 8 or 1
        self.forced_ids = np.array([uid for uid, _ in self.forced], dtype=np.int64)
        self.forced_packed = np.frombuffer(b"".join(
            bits.to_bytes(width, "little") for _, bits in self.forced), dtype=np.uint8
        ).reshape(len(self.forced), width)
        # Per unit (by id): movable, size, region (-1 outside any), first and end byte.
        self.movable = np.array([u.movable for u in graph.units], dtype=bool)
        self.size = np.array([u.size for u in graph.units], dtype=np.int64)
        self.region = np.array([self.region_index.get(u.allocation, -1) for u in graph.units],
                               dtype=np.int64)
        self.offset = np.array([u.offset for u in graph.units], dtype=np.int64)
        # Per node, per unit it touches, the unit's live spans in the node's block.
        self.touching: dict[int, dict[int, list[tuple[int, int]]]] = defaultdict(
            lambda: defaultdict(list))
        last = len(graph.flat_node) - 1
        for unit in kept:
            for v in (graph.values[i] for i in unit.values):
                s, e = v.xla_range
                for n in v.touches:
                    bs, length = graph.block_start[n], graph.block_length(n)
                    if v.live_in or (self.anc[n] >> v.def_node) & 1:
                        a = 0
                    elif v.def_node == n:
                        a = s - bs
                    else:
                        continue  # its definer may run after n: not surely live here
                    if a >= length:
                        continue
                    a = max(a, 0)
                    here = graph.flat_node[min(e, last)] == n and not v.live_out
                    b = e - bs if here else length - 1
                    self.touching[n][unit.id].append((a, max(a, b)))
        self._forced_at: dict[int, np.ndarray] = {}
        self._totals: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def forced_at(self, n: int) -> np.ndarray:
        """The units that span node ``n``'s whole block in every order."""
        if n not in self._forced_at:
            column = (self.forced_packed[:, n >> 3] >> (n & 7)) & 1
            self._forced_at[n] = self.forced_ids[column.astype(bool)]
        return self._forced_at[n]

    def totals(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per flat step, the movable bytes surely live there before parking (an
        upper bound of the step's value), with the step's node and offset."""
        if self._totals is None:
            self._totals = self._compute_totals()
        return self._totals

    def _compute_totals(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        graph, units = self.graph, self.graph.units
        n_nodes = len(graph.nodes)
        whole = np.zeros(n_nodes, dtype=np.int64)
        rows = np.flatnonzero(self.movable[self.forced_ids]) if len(self.forced_ids) else []
        for lo in range(0, len(rows), 256):   # chunks keep the unpacked bits small
            chunk = rows[lo:lo + 256]
            bits = np.unpackbits(self.forced_packed[chunk], axis=1, count=n_nodes,
                                 bitorder="little")
            whole += self.size[self.forced_ids[chunk]] @ bits.astype(np.int64)
        totals: list[np.ndarray | int] = []
        for n in range(n_nodes):
            length = graph.block_length(n)
            mine = [(uid, spans) for uid, spans in self.touching[n].items()
                    if units[uid].movable and not (self.forced_bits.get(uid, 0) >> n) & 1]
            if length == 1:
                totals.append(int(whole[n]) + sum(units[uid].size for uid, _ in mine))
                continue
            diff = np.zeros(length + 1, dtype=np.int64)
            for uid, spans in mine:     # the rest is already in the whole-block total
                for a, b in merged_spans(spans):
                    diff[a] += units[uid].size
                    diff[b + 1] -= units[uid].size
            totals.extend((int(whole[n]) + np.cumsum(diff[:-1])).tolist())
        owner = np.array(graph.flat_node, dtype=np.int64)
        offset = np.arange(len(owner), dtype=np.int64) - np.array(graph.block_start)[owner]
        return np.array(totals, dtype=np.int64), owner, offset

    def at_step(self, n: int, k: int, busy: np.ndarray | Sequence[int] = ()) -> int:
        """Arena bytes surely needed at step ``k`` of node ``n``'s block, with
        the fixed units ``busy`` also occupying their regions."""
        here = [uid for uid, spans in self.touching[n].items()
                if any(a <= k <= b for a, b in spans)]
        live = np.unique(np.concatenate([np.array(here, dtype=np.int64), self.forced_at(n),
                                         np.asarray(busy, dtype=np.int64)]))
        movable = self.movable[live]
        sizes = self.size[live[movable]]
        fixed = live[~movable]
        free = self.region_size.copy()
        if len(fixed):
            # Bytes of each region covered by its live fixed units (their union):
            # shifted so regions never overlap, sorted, each counts past the
            # furthest end before it.
            shift = np.int64(1) << np.int64(41)
            start = self.region[fixed] * shift + self.offset[fixed]
            order = np.argsort(start, kind="stable")
            start = start[order]
            end = start + self.size[fixed][order]
            reach = np.maximum.accumulate(np.concatenate([[np.iinfo(np.int64).min], end[:-1]]))
            covered = np.maximum(0, end - np.maximum(start, reach))
            free -= np.bincount(self.region[fixed][order], weights=covered,
                                minlength=len(free)).astype(np.int64)
        return max(0, int(sizes.sum()) - _parkable(sizes, free))

    def at_node(self, n: int, busy: Sequence[int] = ()) -> tuple[int, int]:
        """(bytes, step offset): the most ``at_step`` over node ``n``'s block."""
        best = (0, 0)
        for k in range(self.graph.block_length(n)):
            value = self.at_step(n, k, busy)
            if value > best[0]:
                best = (value, k)
        return best


def resident_bound(graph: ScheduleGraph, *, across: bool = True,
                   deadline: float | None = None) -> Resident:
    """The most bytes any order must keep in the temp arena at one step.

    ``across=False`` counts only what a node's own block holds (operands,
    results, its callees' values), which stays a bound when values are
    recomputed (a recomputed value dies early and is born again, so "defined
    by an ancestor, read by a descendant" no longer means live in between).
    ``deadline`` (``time.monotonic()``): steps left unexamined only make the
    bound weaker.
    """
    if graph.temp_allocation < 0:
        return Resident(0)
    surely = _Surely(graph, across)
    return _best_step(surely, deadline)


def _best_step(surely: _Surely, deadline: float | None) -> Resident:
    graph = surely.graph
    totals, owner, offset = surely.totals()
    best, evaluated = Resident(0), 0
    for i in np.argsort(-totals, kind="stable").tolist():
        if int(totals[i]) <= best.value:
            break  # nor can any later step: its total is no larger
        if deadline is not None and evaluated and time.monotonic() > deadline:
            return dataclasses.replace(best, evaluated=evaluated, complete=False)
        n, k = int(owner[i]), int(offset[i])
        value = surely.at_step(n, k)
        evaluated += 1
        if value > best.value:
            best = Resident(value, n, graph.block_start[n] + k)
    return dataclasses.replace(best, evaluated=evaluated)


def _writers(graph: ScheduleGraph, region_index: dict[int, int]) -> dict[int, list[int]]:
    """Per node, the fixed region units it writes a live-out value of."""
    out: dict[int, set[int]] = defaultdict(set)
    for unit in graph.units:
        if unit.movable or unit.allocation not in region_index:
            continue
        for v in (graph.values[i] for i in unit.values):
            if v.live_out and not v.live_in:
                out[v.def_node].add(unit.id)
    return {n: sorted(u) for n, u in out.items()}


def last_writer_bound(graph: ScheduleGraph, *, across: bool = True,
                      deadline: float | None = None) -> Resident:
    """The peak is at least min over w in W of what w needs once the outputs
    of W's other nodes are written (see the module doc), for any set W of
    output writers.  ``across`` as for ``resident_bound``."""
    if graph.temp_allocation < 0:
        return Resident(0)
    return _last_writer(_Surely(graph, across), deadline)


def floor_bound(graph: ScheduleGraph, *, deadline: float | None = None) -> Resident:
    """The larger of ``resident_bound`` and ``last_writer_bound``, built once:
    the steps get a third of the time left, the writers the rest, starting
    from the steps' value (a writer that cannot beat it need not be solved)."""
    if graph.temp_allocation < 0:
        return Resident(0)
    surely = _Surely(graph, across=True)
    third = None if deadline is None else time.monotonic() + (deadline - time.monotonic()) / 3
    steps = _best_step(surely, third)
    last = _last_writer(surely, deadline, start=steps.value)
    best = last if last.value > steps.value else steps
    return dataclasses.replace(best, evaluated=steps.evaluated + last.evaluated,
                               complete=steps.complete and last.complete)


def _last_writer(surely: _Surely, deadline: float | None, start: int = 0) -> Resident:
    """The best set W by peeling: W starts as every output writer; each round
    the writers that need no more than the best minimum so far leave it.
    Values only fall as W shrinks, so the first writer of the best set to
    leave does so at a minimum at least that set's: the peeling finds it
    (as for a graph's degeneracy).  Stopped by ``deadline``, still a bound.
    ``start``: a bound known already; the value returned is 0 unless it beats it."""
    graph = surely.graph
    writes = _writers(graph, surely.region_index)
    totals, owner, _ = surely.totals()
    upper = np.zeros(len(graph.nodes), dtype=np.int64)
    np.maximum.at(upper, owner, totals)
    # A writer that cannot need more than ``start`` would leave at once.
    writers = sorted(w for w in writes if upper[w] > start)
    best, evaluated = Resident(0), 0
    while writers:
        floor = max(best.value, start)
        count: dict[int, int] = defaultdict(int)   # unit -> its writers in W
        for w in writers:
            for uid in writes[w]:
                count[uid] += 1
        written = np.array(sorted(count), dtype=np.int64)
        values = []
        for w in writers:
            if deadline is not None and evaluated and time.monotonic() > deadline:
                return dataclasses.replace(best, evaluated=evaluated, complete=False)
            alone = [uid for uid in writes[w] if count[uid] == 1]   # written by w only
            others = np.setdiff1d(written, alone, assume_unique=True) if alone else written
            value, k = surely.at_node(w, others)
            evaluated += graph.block_length(w)
            values.append((value, k, w))
        low, k, w = min(values)
        if low > floor:
            best = Resident(low, w, graph.block_start[w] + k)
        writers = [w for value, _, w in values if value > max(floor, low)]
    return dataclasses.replace(best, evaluated=evaluated)
