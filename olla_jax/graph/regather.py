"""Re-gathering: drop a gathered parameter after its last early read and
all-gather it again, from the same shard, before its first late one.

An FSDP step with per-block remat gathers each block's parameters once (XLA
shares the all-gather between the forward pass, the backward pass's
recomputation and the backward pass itself), so every gathered array stays
live from the forward pass to the backward pass.  A scanned step gathers them
again in each backward iteration.  Re-gathering does the same on an unrolled
order: a second start/done pair of the same all-gather (same shard, same
destination bytes: the copy is placed where the first one was, so its readers
keep their slices) runs in the backward pass, and in between the bytes are
free for other values.  The shard is a parameter, live anyway; the price is
link time, which must stay hidden under ``olla_jax.graph.overlap``'s model.

``plan`` picks, on a fixed order, which all-gathers to repeat and where, by a
greedy on the live-bytes peak: at the peak step, the largest gathered array
whose idle gap covers it is re-gathered with its second start placed ``slack``
x its link time of compute before its first late reader (the least slack that
keeps the order's total exposed communication within the allowance, the
copies included); it stops when no candidate covers the peak.  The second
done sits just before the first late reader.  Memory is per flat step of the
order (the copies take no step of their own: the second copy is counted live
from the step of the node its start precedes).

Not here: the checker's acceptance of the copies and the executable rewrite
that runs them (see ``Regather`` for what a rewrite must insert).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from olla_jax.graph import layout as layout_lib, overlap
from olla_jax.graph.model import ScheduleGraph
from olla_jax.solve import problem as sp

_TABLE_BYTES = 64                          # at most this: a tuple's index table
SLACKS = (1.0, 1.25, 1.5, 2.0, 3.0, 5.0)   # second start: this x link time of compute early


@dataclasses.dataclass(frozen=True)
class Regather:
    """A second run of all-gather ``collective`` (index in the step model's
    collectives): its start just before node ``start_before``, its done just
    before node ``done_before`` (the first late reader); ``late_users`` read
    the second copy, which sits at the first copy's place."""
    collective: int
    unit: int
    start_before: int
    done_before: int
    late_users: tuple[int, ...]
    gap: tuple[int, int]            # inclusive flat steps the unit is not held
    slack: float


@dataclasses.dataclass(frozen=True)
class RegatherPlan:
    order: tuple[int, ...]          # the order (unchanged; copies are not nodes)
    regathers: tuple[Regather, ...]
    spans: tuple[tuple[tuple[int, int], ...], ...]   # per unit, its live spans
    exposure: overlap.Exposure      # of the order with the copies
    peak_before: int                # live-bytes peak of the movable units, without copies
    peak: int                       # and with them
    link_s: float                   # link time the copies add

    def placement_problem(self, graph: ScheduleGraph) -> tuple[sp.PlacementProblem, tuple[int, ...]]:
        """The placement problem of the order with the copies (a re-gathered
        unit: two spans at one offset), and per interval its unit id."""
        return graph.placement_problem(self.order, spans=[list(s) for s in self.spans])


def with_copies(graph: ScheduleGraph, rp: RegatherPlan, placed: layout_lib.Layout,
                step: overlap.StepModel) -> layout_lib.Layout:
    """``placed`` (the realized placement of ``rp.placement_problem``) with each
    re-gather stated as a ``layout.Recompute`` of the gathered value, its second
    copy at the first copy's place (``done_before``: where its done runs)."""
    copies = []
    for r in rp.regathers:
        c = step.collectives[r.collective]
        value = max((v for v in graph.units[r.unit].values
                     if graph.values[v].def_node == c.start),
                    key=lambda v: graph.values[v].size)
        copies.append(layout_lib.Recompute(
            value=value, producer=graph.nodes[c.start], before=graph.nodes[r.start_before],
            late_users=tuple(graph.nodes[u] for u in r.late_users),
            place=placed.early_place(value), size=graph.values[value].size,
            done_before=graph.nodes[r.done_before]))
    return dataclasses.replace(placed, recomputes=placed.recomputes + tuple(copies))


@dataclasses.dataclass(frozen=True)
class _Candidate:
    collective: int
    unit: int
    size: int
    early_end: int                  # last flat step of the last early reader
    first_late: int                 # position in the order of the first late reader
    late_users: tuple[int, ...]
    operands: tuple[int, ...]       # units the all-gather reads (its shard): kept until the copy


def candidates(graph: ScheduleGraph, order: Sequence[int], step: overlap.StepModel,
               spans: Sequence[Sequence[tuple[int, int]]],
               exclude: frozenset[int] = frozenset()) -> list[_Candidate]:
    """All-gathers whose gathered unit is movable, held by nothing but the
    pair (no in-place writer), and idle between two of its readers; split at
    the widest idle stretch (in flat steps)."""
    pos = {n: k for k, n in enumerate(order)}
    layout = graph.flat_layout(order)
    by_def: dict[int, list[int]] = {}
    touching: dict[int, set[int]] = {}
    for v in graph.values.values():
        by_def.setdefault(v.def_node, []).append(v.id)
        for t in v.touches:
            touching.setdefault(t, set()).add(v.id)
    out = []
    for k, c in enumerate(step.collectives):
        if c.kind != "all-gather" or c.seconds <= 0 or c.start in exclude:
            continue
        vals = by_def.get(c.start, []) + by_def.get(c.done, [])
        # one gathered array (not a combined all-gather: its copy would write
        # every array it gathers); the rest are tuple index tables
        data = {graph.unit_of_value[v] for v in vals if graph.values[v].size > _TABLE_BYTES}
        if len(data) != 1:
            continue
        uid, = data
        unit = graph.units[uid]
        if not unit.movable or len(spans[uid]) != 1 or any(
                graph.values[v].def_node not in (c.start, c.done) or graph.values[v].live_out
                or graph.values[v].live_in for v in unit.values):
            continue
        readers = sorted({t for v in unit.values for t in graph.values[v].touches} -
                         {c.start, c.done}, key=pos.__getitem__)
        if len(readers) < 2 or pos[readers[0]] < pos[c.done]:
            continue
        best, split = 0, None
        for a, b in zip(readers, readers[1:]):
            idle = layout[b] - (layout[a] + graph.block_length(a))
            if idle > best:
                best, split = idle, (a, b)
        if split is None:
            continue
        a, b = split
        out.append(_Candidate(collective=k, unit=uid, size=unit.size,
                              early_end=layout[a] + graph.block_length(a) - 1,
                              first_late=pos[b],
                              late_users=tuple(r for r in readers if pos[r] >= pos[b]),
                              operands=tuple(sorted({
                                  graph.unit_of_value[v] for v in touching.get(c.start, ())
                                  if graph.values[v].def_node not in (c.start, c.done)}))))
    return out


def _extended(order: Sequence[int], step: overlap.StepModel, picks: Sequence[Regather],
              num_nodes: int) -> tuple[list[int], list[float], list[overlap.Collective]]:
    """The order with each copy's start and done as extra nodes (ids from
    ``num_nodes`` on, no compute), and the collectives with the copies."""
    before: dict[int, list[int]] = {}
    colls = list(step.collectives)
    for j, r in enumerate(picks):
        s, d = num_nodes + 2 * j, num_nodes + 2 * j + 1
        before.setdefault(r.start_before, []).append(s)
        before.setdefault(r.done_before, []).append(d)
        colls.append(dataclasses.replace(step.collectives[r.collective], start=s, done=d))
    out = []
    for n in order:
        extra = before.get(n, [])
        # a copy's start before its own done when both precede one node
        out.extend(sorted(extra, key=lambda x: (x - num_nodes) % 2))
        out.append(n)
    seconds = list(step.node_seconds) + [0.0] * (2 * len(picks))
    return out, seconds, colls


def exposure_with(order: Sequence[int], step: overlap.StepModel, picks: Sequence[Regather],
                  num_nodes: int) -> overlap.Exposure:
    ext, seconds, colls = _extended(order, step, picks, num_nodes)
    return overlap.exposure(ext, seconds, colls)


def _ends(spans) -> int:
    return spans[-1][1]


def _kept_operands(graph, spans, operands, until: int) -> list[tuple[int, int]]:
    """(unit, its last step now) of each operand unit that must be kept live
    longer, until the copy's start at step ``until`` (the checker asks the same)."""
    return [(u, _ends(spans[u])) for u in operands if _ends(spans[u]) < until]


def _take(graph, spans, live, r: Regather, operands) -> None:
    """Split ``r``'s unit around its gap and keep its operands until the copy."""
    for u, old_end in _kept_operands(graph, spans, operands, r.gap[1] + 1):
        spans[u][-1] = (spans[u][-1][0], r.gap[1] + 1)
        if graph.units[u].movable:
            live[old_end + 1:r.gap[1] + 2] += graph.units[u].size
    (s, e), = spans[r.unit]
    spans[r.unit] = [(s, r.gap[0] - 1), (r.gap[1] + 1, e)]
    live[r.gap[0]:r.gap[1] + 1] -= graph.units[r.unit].size


def _profile(graph: ScheduleGraph, spans) -> np.ndarray:
    horizon = len(graph.flat)
    delta = np.zeros(horizon + 1, dtype=np.int64)
    for u in graph.units:
        if u.movable:
            for a, b in spans[u.id]:
                delta[a] += u.size
                delta[b + 1] -= u.size
    return np.cumsum(delta[:-1])


def given(graph: ScheduleGraph, order: Sequence[int], step: overlap.StepModel,
          picks: Sequence[Regather]) -> RegatherPlan:
    """The plan of the re-gathers ``picks`` (each a candidate's, as ``plan``
    makes them) on ``order``, whatever they do to the peak or the exposure."""
    order = tuple(order)
    spans = [list(s) for s in graph.unit_spans(order)]
    live = _profile(graph, spans)
    peak_before = int(live.max()) if len(live) else 0
    by_collective = {c.collective: c for c in candidates(graph, order, step, spans)}
    for r in picks:
        c = by_collective.get(r.collective)
        if c is None or c.unit != r.unit or not c.early_end < r.gap[0] <= r.gap[1] or \
                r.gap[1] + 1 > graph.flat_layout(order)[r.done_before]:
            raise ValueError(f"re-gather of collective {r.collective} is not one of a candidate's")
        _take(graph, spans, live, r, c.operands)
    return RegatherPlan(order=order, regathers=tuple(picks),
                        spans=tuple(tuple(s) for s in spans),
                        exposure=exposure_with(order, step, picks, len(graph.nodes)),
                        peak_before=peak_before, peak=int(live.max()) if len(live) else 0,
                        link_s=sum(step.collectives[r.collective].seconds for r in picks))


def plan(graph: ScheduleGraph, order: Sequence[int], step: overlap.StepModel,
         allowance_s: float, slacks: Sequence[float] = SLACKS,
         max_regathers: int | None = None, exclude: Sequence[str] = ()) -> RegatherPlan:
    """Re-gathers on ``order`` that lower its live-bytes peak with at most
    ``allowance_s`` of exposed communication (module doc).  ``exclude``: starts
    (by name) not to repeat, e.g. ``collectives.sync_starts``: a synchronous
    all-gather's copy could not overlap anything."""
    order = tuple(order)
    n = len(graph.nodes)
    spans = [list(s) for s in graph.unit_spans(order)]
    layout = graph.flat_layout(order)
    horizon = len(graph.flat)
    live = _profile(graph, spans)
    peak_before = int(live.max()) if horizon else 0
    cands = candidates(graph, order, step, spans,
                       frozenset(graph.node_index[x] for x in exclude if x in graph.node_index))
    picks: list[Regather] = []
    refused: set[int] = set()
    base = exposure_with(order, step, (), n)
    limit = max(allowance_s, base.exposed_s)   # never worse than the order itself
    while cands and (max_regathers is None or len(picks) < max_regathers):
        at = int(live.argmax())
        chosen = None
        for c in sorted((c for c in cands if c.collective not in refused and
                         c.early_end < at < layout[order[c.first_late]]),
                        key=lambda c: -c.size):
            need_s = step.collectives[c.collective].seconds
            for slack in slacks:
                k, acc = c.first_late, 0.0
                while k > 0 and acc < slack * need_s:
                    k -= 1
                    acc += step.node_seconds[order[k]]
                start_at = layout[order[k]]
                if start_at <= c.early_end + 1 or start_at <= at:
                    break   # no gap left, or the peak is no longer inside it
                r = Regather(collective=c.collective, unit=c.unit, start_before=order[k],
                             done_before=order[c.first_late], late_users=c.late_users,
                             gap=(c.early_end + 1, start_at - 1), slack=slack)
                kept = _kept_operands(graph, spans, c.operands, start_at)
                if live[at] - c.size + sum(graph.units[u].size for u, _ in kept
                                           if _ends(spans[u]) < at <= start_at) >= live[at]:
                    break   # the shard kept for the copy costs as much at the peak
                if exposure_with(order, step, picks + [r], n).exposed_s <= limit + overlap.EPS:
                    chosen = r
                    break
            if chosen is not None:
                break
            refused.add(c.collective)
        if chosen is None:
            break
        picks.append(chosen)
        operands = next(c.operands for c in cands if c.collective == chosen.collective)
        _take(graph, spans, live, chosen, operands)
        cands = [c for c in cands if c.collective != chosen.collective]
    final = exposure_with(order, step, picks, n)
    return RegatherPlan(order=order, regathers=tuple(picks),
                        spans=tuple(tuple(s) for s in spans), exposure=final,
                        peak_before=peak_before, peak=int(live.max()) if horizon else 0,
                        link_s=sum(step.collectives[r.collective].seconds for r in picks))
