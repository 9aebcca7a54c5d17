"""Large-neighbourhood search over orders, and decomposition at narrow cuts.

Windows around the start order alone get stuck (the optimum can need
long-range moves), so each round picks one of:

- ``window``: re-solve a window of consecutive steps around a peak step with
  CP-SAT, the rest fixed (window width grows while rounds fail);
- ``wide``: a wide span around a peak step in which only the nodes creating or
  last-touching what is live at the peak (and a few random ones) move freely,
  the others keeping their relative order: long-range moves at small cost;
- ``moves``: move single nodes, or short runs of consecutive steps, that touch
  items live at the peak to their earliest/latest feasible step or to sampled
  steps in between, scored exactly with the incremental evaluator;
- ``restart``: a list schedule with perturbed priorities.

The goal is lexicographic: (peak, number of steps at the peak); ties are
accepted so the search walks across plateaus. Random choices come from
``seed``; CP-SAT runs are capped in deterministic time, so a run with
``max_rounds`` and no deadline pressure is reproducible.

``sweep_pieces`` is the ROAM-like decomposition: cut the order where few live
bytes cross a step boundary, into pieces of at most ``max_piece`` steps, and
re-solve the pieces holding the highest peaks independently (each piece is a
window; stitching is the identity since the rest stays fixed).
"""

from __future__ import annotations

import dataclasses
import random
import time
from typing import Callable, Sequence

import numpy as np

from olla_jax.solve.cpsat_order import solve_window
from olla_jax.solve.dag import Dag
from olla_jax.solve.evaluate import Evaluator, OrderState, moved
from olla_jax.solve.list_schedule import GREEDY_RULES, list_schedule


@dataclasses.dataclass(frozen=True)
class SearchConfig:
    window: int = 40                 # first width of a CP-SAT window (steps)
    max_window: int = 200
    window_work: float = 2.0         # CP-SAT deterministic time per window
    wide_span: int = 600             # steps each side of the peak in a "wide" round
    free_nodes: int = 24             # nodes free to move in a "wide" round
    move_candidates: int = 12        # nodes tried per "moves" round
    max_piece: int = 120             # piece length for sweep_pieces
    workers: int = 1                 # CP-SAT workers per window


Improved = Callable[[Sequence[int], int, str], None]


class _Search:
    def __init__(self, ev: Evaluator, dag: Dag, order: Sequence[int], *, seed: int,
                 config: SearchConfig, deadline: float, on_improve: Improved | None):
        self.ev, self.dag, self.cfg = ev, dag, config
        self.rng = random.Random(seed)
        self.deadline = deadline
        self.on_improve = on_improve
        self.st = ev.state(order)
        self.width = config.window
        n = ev.n
        self.preds = [np.array(p, np.int64) for p in dag.preds]
        self.succs = [np.array(s, np.int64) for s in dag.succs]
        self.n = n

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def offer(self, order: Sequence[int] | None, how: str) -> bool:
        """Take ``order`` if it scores no worse; True if strictly better."""
        if order is None:
            return False
        new = self.ev.state(order)
        old = self.st.score()
        if new.score() > old:
            return False
        self.st = new
        if new.score() < old and self.on_improve is not None and new.cost < old[0]:
            self.on_improve(new.order.tolist(), new.cost, how)
        return new.score() < old

    def peak_step(self) -> int:
        peaks = np.flatnonzero(self.st.profile == self.st.cost)
        return int(peaks[self.rng.randrange(len(peaks))])

    def live_at(self, step: int) -> np.ndarray:
        st = self.st
        return np.flatnonzero((st.start <= step) & (st.end >= step))

    def window_round(self) -> bool:
        n, w = self.n, min(self.width, self.n)
        p = self.peak_step()
        lo = min(max(0, p - self.rng.randrange(w)), n - w)
        new = solve_window(self.ev, self.st, lo, lo + w - 1, time_limit_s=max(0.05, self.left()),
                           deterministic_time=self.cfg.window_work, workers=self.cfg.workers,
                           seed=self.rng.randrange(1 << 30))
        better = self.offer(new, f"cpsat window {lo}..{lo + w - 1}")
        if not better:
            self.width = min(self.cfg.max_window, int(self.width * 1.25) + 1)
        return better

    def wide_round(self) -> bool:
        n, st = self.n, self.st
        p = self.peak_step()
        lo, hi = max(0, p - self.cfg.wide_span), min(n - 1, p + self.cfg.wide_span)
        related = set()
        for i in self.live_at(p):
            related.update(self.ev.problem.items[i].defs)
            related.update(self.ev.problem.items[i].touches)
        related.update(int(v) for v in st.order[max(lo, p - 2):min(hi, p + 2) + 1])
        related = [v for v in related if lo <= st.pos[v] <= hi]
        self.rng.shuffle(related)
        free = set(related[:self.cfg.free_nodes])
        span = [int(v) for v in st.order[lo:hi + 1]]
        for _ in range(self.cfg.free_nodes // 4):
            free.add(span[self.rng.randrange(len(span))])
        keep = [v for v in span if v not in free]
        new = solve_window(self.ev, st, lo, hi, keep_order=keep, time_limit_s=max(0.05, self.left()),
                           deterministic_time=self.cfg.window_work, workers=self.cfg.workers,
                           seed=self.rng.randrange(1 << 30))
        return self.offer(new, f"cpsat wide {lo}..{hi}, {len(free)} free")

    def moves_round(self) -> bool:
        st, n = self.st, self.n
        p = self.peak_step()
        related = set()
        for i in self.live_at(p):
            related.update(self.ev.problem.items[i].defs)
            related.update(self.ev.problem.items[i].touches)
        cands = sorted(related)
        self.rng.shuffle(cands)
        best = (st.score(), None)
        for v in cands[:self.cfg.move_candidates]:
            src = int(st.pos[v])
            length = self.rng.choice((1, 1, 2, 4))
            src = min(src, n - length)
            block = st.order[src:src + length]
            inside = set(block.tolist())
            pred_pos = [st.pos[u] for b in block for u in self.preds[b] if int(u) not in inside]
            succ_pos = [st.pos[w] for b in block for w in self.succs[b] if int(w) not in inside]
            first = int(max(pred_pos, default=-1)) + 1
            last = int(min(succ_pos, default=n)) - length
            dests = {first, last, *(self.rng.randint(first, last) for _ in range(4))} if first <= last else set()
            for dst in dests:
                if dst == src or not 0 <= dst <= n - length:
                    continue
                lo, seg = moved(st.order, src, dst, length)
                score = self.ev.window_score(st, lo, seg)
                if score < best[0] or (score == best[0] and best[1] is None and self.rng.random() < 0.1):
                    best = (score, (lo, seg))
        if best[1] is None:
            return False
        lo, seg = best[1]
        order = st.order.copy()
        order[lo:lo + len(seg)] = seg
        return self.offer(order, "node moves")

    def restart_round(self) -> bool:
        rule = self.rng.choice(GREEDY_RULES)
        order = list_schedule(self.ev.problem, rule, dag=self.dag, reference=self.st.order.tolist(),
                              noise=self.rng.choice((0.05, 0.2, 0.5)), seed=self.rng.randrange(1 << 30))
        return self.offer(order, f"list restart ({rule})")


def improve(ev: Evaluator, dag: Dag, order: Sequence[int], *, deadline: float, seed: int = 0,
            config: SearchConfig = SearchConfig(), max_rounds: int | None = None,
            on_improve: Improved | None = None) -> list[int]:
    """Large-neighbourhood search from ``order`` until ``deadline`` (time.monotonic())
    or ``max_rounds``; returns the best order (never worse than ``order``)."""
    if ev.n < 2:
        return list(order)
    s = _Search(ev, dag, order, seed=seed, config=config, deadline=deadline, on_improve=on_improve)
    kinds = {"window": s.window_round, "wide": s.wide_round, "moves": s.moves_round,
             "restart": s.restart_round}
    weights = {k: 1.0 for k in kinds}
    if ev.n > 5000:
        weights["restart"] = 0.2   # a full list schedule is costly there
    rounds = 0
    while s.left() > 0 and (max_rounds is None or rounds < max_rounds):
        kind = s.rng.choices(list(weights), list(weights.values()))[0]
        gained = kinds[kind]()
        weights[kind] = min(4.0, weights[kind] * 1.5) if gained else max(0.25, weights[kind] * 0.9)
        rounds += 1
    return s.st.order.tolist()


def narrow_cuts(ev: Evaluator, st: OrderState, max_piece: int) -> list[tuple[int, int]]:
    """Split steps 0..n-1 into pieces of at most ``max_piece`` steps, each cut
    placed where the fewest arena bytes are live across the boundary."""
    n = ev.n
    a = ev.arena
    diff = np.zeros(n + 1, np.int64)
    np.add.at(diff, st.start[a], ev.size[a])
    np.add.at(diff, st.end[a], -ev.size[a])
    crossing = np.cumsum(diff)[:n]   # bytes live both at t and t+1
    pieces, lo = [], 0
    while lo < n:
        if n - lo <= max_piece:
            pieces.append((lo, n - 1))
            break
        first = lo + max_piece // 2
        cut = first + int(np.argmin(crossing[first:lo + max_piece]))
        pieces.append((lo, cut))
        lo = cut + 1
    return pieces


def sweep_pieces(ev: Evaluator, order: Sequence[int], *, deadline: float, seed: int = 0,
                 config: SearchConfig = SearchConfig(), on_improve: Improved | None = None) -> list[int]:
    """Re-solve the pieces of ``order`` (see narrow_cuts) from the highest peak
    down, until every piece was tried or ``deadline``."""
    st = ev.state(order)
    rng = random.Random(seed)
    pieces = narrow_cuts(ev, st, config.max_piece)
    pieces.sort(key=lambda lh: -int(st.profile[lh[0]:lh[1] + 1].max()))
    for lo, hi in pieces:
        left = deadline - time.monotonic()
        if left <= 0 or int(st.profile[lo:hi + 1].max()) < st.cost // 2:
            break
        new = solve_window(ev, st, lo, hi, time_limit_s=left, deterministic_time=config.window_work,
                           workers=config.workers, seed=rng.randrange(1 << 30))
        if new is not None:
            cand = ev.state(new)
            if cand.score() < st.score():
                if on_improve is not None and cand.cost < st.cost:
                    on_improve(new, cand.cost, f"piece {lo}..{hi}")
                st = cand
    return st.order.tolist()
