"""Single-node moves that run each node just before its first consumer
(``sink``) or just after its last producer (``hoist``).

Schedulers that run a node as soon as it is ready leave values live for a
long time when their consumers come much later: on ResNet-50 the reversed
convolution kernels of the backward pass are computed from the parameters at
the start of the step and held until their backward convolution.  Moving such
a node next to its consumer shortens those lives.  A move is kept when it
lowers ``(peak, sum of the step profile)``: the sum lets moves that do not
touch the peak yet free bytes elsewhere accumulate until the peak falls, which
the peak alone (a plateau of equal steps) cannot see.
"""

from __future__ import annotations

import time
from typing import Sequence

import numpy as np

from olla_jax.solve.dag import Dag
from olla_jax.solve.evaluate import Evaluator, csr


def _score(ev: Evaluator, st, lo: int, segment: np.ndarray) -> tuple[int, int]:
    """(peak, profile sum) of the order with ``segment`` at steps lo.."""
    hi = lo + len(segment) - 1
    inner = ev.window_profile(st, lo, segment)
    outside = ev.outside_peak(st, lo, hi)
    total = int(st.profile.sum()) - int(st.profile[lo:hi + 1].sum()) + int(inner.sum())
    return max(outside, int(inner.max(initial=0))), total


class _Index:
    """Flat (CSR-like) node -> items, successors and predecessors, for
    vectorised candidate scans."""

    def __init__(self, ev: Evaluator, dag: Dag):
        def flat(rows):
            ptr, values = csr(rows)
            return np.repeat(np.arange(len(rows), dtype=np.int64), np.diff(ptr)), values
        self.item_node, self.item = flat(ev.node_items)
        self.succ_node, self.succ = flat(dag.succs)
        self.pred_node, self.pred = flat(dag.preds)


def _moves(ev: Evaluator, ix: _Index, st, pairs: bool = False) -> list[tuple[int, int, str]]:
    """Candidate moves as (potential, node, kind), most promising first.

    A node's net bytes are those it starts (its results) less those whose last
    reader it is.  Running it later (sink) frees its net bytes over the steps
    skipped, running it earlier (hoist) frees minus them: only moves that free
    something (or delay an output's write, which leaves its space idle longer)
    are worth evaluating; with ``pairs``, hoists from just after a producer
    too (``_pair_hoist``)."""
    n = ev.n
    a = st.pos[ix.item_node]
    item = ix.item
    arena = ev.arena[item]
    starts = st.start[item] == a
    ends = (st.end[item] == a) & ~ev.live_out[item]
    size = ev.size[item]
    net = (np.bincount(ix.item_node, weights=size * (arena & starts), minlength=n)
           - np.bincount(ix.item_node, weights=size * (arena & ends), minlength=n))
    writes_output = np.bincount(ix.item_node, weights=starts & ~arena, minlength=n) > 0
    first_succ = np.full(n, np.iinfo(np.int64).max, np.int64)
    np.minimum.at(first_succ, ix.succ_node, st.pos[ix.succ])
    last_pred = np.full(n, -1, np.int64)
    np.maximum.at(last_pred, ix.pred_node, st.pos[ix.pred])
    pos = st.pos
    sink_gap = np.where(first_succ < np.iinfo(np.int64).max, first_succ - pos, 0)
    hoist_gap = pos - last_pred
    out = []
    for node in np.flatnonzero(((net > 0) | writes_output) & (sink_gap > 1)).tolist():
        out.append((max(int(net[node]), 1) * int(sink_gap[node]), node, "sink"))
    for node in np.flatnonzero((net < 0) & (hoist_gap > (0 if pairs else 1))).tolist():
        out.append((-int(net[node]) * int(hoist_gap[node]), node, "hoist"))
    out.sort(reverse=True)
    return out


def improve(ev: Evaluator, dag: Dag, order: Sequence[int], *, deadline: float,
            max_rounds: int | None = None, pairs: bool = False) -> tuple[int, ...]:
    """``order`` after sink and hoist moves that lower (peak, profile sum),
    most promising first, until a round changes nothing, ``max_rounds`` (None:
    no limit) run out or ``deadline`` (time.monotonic()) passes.  A move one
    round rejects can pay after another's: on densenet (cpu, small), from the
    plain search's order under its largest threshold, each of six rounds
    took one such move, 0.3 MiB off the peak each (the cap was once 4).
    ``pairs``: a node that would free bytes run earlier but sits just after a
    producer whose one consumer it is (a weight gradient's dot after the copy
    that lays out its other operand) is hoisted with that producer
    (``_pair_hoist``): alone, neither move pays."""
    st = ev.state(order)
    best = (st.cost, int(st.profile.sum()))
    ix = _Index(ev, dag)
    rounds = 0
    while max_rounds is None or rounds < max_rounds:
        rounds += 1
        changed = False
        for _, node, kind in _moves(ev, ix, st, pairs):
            if time.monotonic() > deadline:
                return tuple(int(v) for v in st.order)
            a = int(st.pos[node])
            if kind == "sink":
                b = min(int(st.pos[v]) for v in dag.succs[node])
                if b - a <= 1:
                    continue
                lo, segment = a, np.concatenate([st.order[a + 1:b], [node]])
            else:
                p = max((int(st.pos[u]) for u in dag.preds[node]), default=-1)
                if a - p <= 1:
                    if not pairs:
                        continue
                    moved = _pair_hoist(dag, st, node)
                    if moved is None:
                        continue
                    lo, segment = moved
                else:
                    lo, segment = p + 1, np.concatenate([[node], st.order[p + 1:a]])
            score = _score(ev, st, lo, segment)
            if score < best:
                new = st.order.copy()
                new[lo:lo + len(segment)] = segment
                st, best, changed = ev.state(new), score, True
        if not changed:
            break
    return tuple(int(v) for v in st.order)


def _pair_hoist(dag: Dag, st, node: int) -> tuple[int, np.ndarray] | None:
    """(lo, segment): ``node`` and the producer just before it, whose one
    consumer it is, run just after the last of their other producers; None
    when there is no such producer or nowhere earlier to go."""
    a = int(st.pos[node])
    if a == 0:
        return None
    p_node = int(st.order[a - 1])
    if p_node not in dag.preds[node] or list(dag.succs[p_node]) != [node]:
        return None
    q = max([int(st.pos[u]) for u in dag.preds[p_node]]
            + [int(st.pos[u]) for u in dag.preds[node] if u != p_node], default=-1)
    if a - 1 - q <= 1:
        return None
    return q + 1, np.concatenate([[p_node, node], st.order[q + 1:a - 1]])
