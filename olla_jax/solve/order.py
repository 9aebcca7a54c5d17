"""``solve_order``: the order side of the planner, one entry point over the engines.

Every engine starts from the best of the warm starts and the list schedules,
so the result is never worse than a warm start, is always a valid order, and
is what was best when the time ran out. Engines:

- ``list``: list schedulers only (seconds on 20k nodes);
- ``cpsat``: the CP-SAT position model over the whole graph;
- ``ilp-cbc`` / ``ilp-highs``: OLLA's lifetime ILP (python-mip);
- ``lns``: large-neighbourhood search (CP-SAT windows, long-range moves,
  restarts), after a sweep over pieces cut at narrow points on big graphs;
- ``auto``: list, then the whole-graph CP-SAT model on small graphs (it can
  prove optimality), then LNS for the rest of the time. Chosen by measurement:
  see benchmarks/results/order_engines.md.

``auto`` and ``lns`` also make sink and hoist moves (``solve.sink``: a node run
next to its first consumer or last producer) before and after the LNS, and
min-cut moves (``solve.cut_move``: a peak node run with the nodes before it
that its min-cut chose) before them.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable, Sequence

from olla_jax.solve.cpsat_order import solve_cpsat
from olla_jax.solve.dag import Dag, check_order
from olla_jax.solve.evaluate import Evaluator
from olla_jax.solve.ilp_order import default_steps, solve_ilp
from olla_jax.solve.list_schedule import MEMORY_RULES, list_schedules
from olla_jax.solve.problem import OrderProblem
from olla_jax.solve import sink
from olla_jax.solve.search import SearchConfig, improve, sweep_pieces

ENGINES = ("auto", "list", "cpsat", "ilp-cbc", "ilp-highs", "lns")
CPSAT_WHOLE_MAX_NODES = 600      # auto: whole-graph CP-SAT up to this size (453 proven in 14 s)
SWEEP_MIN_NODES = 2000           # lns: sweep pieces first from this size
ILP_MAX_WINDOW_VARS = 400_000    # ilp: skip (say so) beyond this many node-step pairs
SINK_SHARE = 0.3                 # auto/lns: share of the time left for sink moves before the search
LIST_SHARE = 0.3                 # the list schedules' share of the limit (the first rule always runs)
SINK_ALL_BELOW_S = 3.0           # auto/lns: with less time than this left, sink moves get all of it
CUT_SHARE = 0.8                  # auto/lns: of the time left after the list schedules, min-cut moves
CUT_MAX_NODES = 10_000           # min-cut moves up to this size (their set-up: nodes squared bits)


@dataclasses.dataclass(frozen=True)
class OrderResult:
    order: tuple[int, ...]
    cost: int
    engine: str                  # what produced the order (e.g. "list:growth", "cpsat", "lns")
    seconds: float
    proven_optimal: bool
    history: tuple[tuple[float, int], ...]   # (seconds, cost) at each improvement


class _Best:
    """The best order so far, with its history."""

    def __init__(self, ev: Evaluator, t0: float, progress: Callable[[str], None] | None):
        self.ev, self.t0, self.progress = ev, t0, progress
        self.order: tuple[int, ...] | None = None
        self.cost = 0
        self.source = ""
        self.history: list[tuple[float, int]] = []
        self.proven = False

    def say(self, msg: str) -> None:
        if self.progress is not None:
            self.progress(f"[{time.monotonic() - self.t0:7.2f}s] {msg}")

    def offer(self, order: Sequence[int], source: str, cost: int | None = None,
              note: str = "") -> bool:
        cost = self.ev.cost(order) if cost is None else cost
        if self.order is not None and cost >= self.cost:
            return False
        self.order, self.cost, self.source = tuple(int(v) for v in order), cost, source
        self.history.append((round(time.monotonic() - self.t0, 3), cost))
        self.say(f"{source}{f' ({note})' if note else ''}: {cost:,}")
        return True


def solve_order(problem: OrderProblem, *, warm_starts: Sequence[Sequence[int]] = (),
                time_limit_s: float = 30.0, engine: str = "auto", seed: int = 0,
                progress: Callable[[str], None] | None = None,
                lower_bound: int | None = None, cuts=None, polish: bool = False) -> OrderResult:
    """The best order found for ``problem`` within ``time_limit_s`` by ``engine``.

    ``lower_bound``: a proven bound on this problem's cost (e.g. the min-cut
    bound); the search stops as soon as an order reaches it (proven optimal).
    ``cuts``: a ``bounds.NodeCuts`` of ``problem`` for the min-cut moves (the
    cuts the bound already solved are reused).
    ``polish``: the warm starts include orders another search already
    moved (under a related objective): no list schedules (they never came
    near such an order and took 0.3 of the time: on densenet and unet, cpu
    small, a threshold objective's search of 0.35 s at a 10 s limit had
    none left for the moves), and min-cut moves from the best order only.
    (Sink moves first instead left unet's min-cut moves no time: 91.00 MiB
    placed, not 89.38.)"""
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; choose from {', '.join(ENGINES)}")
    t0 = time.monotonic()
    deadline = t0 + time_limit_s - min(1.0, 0.02 * time_limit_s)   # room to wrap up
    dag = Dag.of(problem)
    for k, ws in enumerate(warm_starts):
        try:
            check_order(problem, ws)
        except ValueError as e:
            raise ValueError(f"warm start {k}: {e}") from None
    ev = Evaluator(problem)
    best = _Best(ev, t0, progress)
    for k, ws in enumerate(warm_starts):
        best.offer(ws, f"warm start {k}")
    # Not all of a short limit: each rule costs about 0.1 s on 2k nodes, and
    # twenty of them left a 1.5 s search no time for the moves that follow.
    list_end = t0 + LIST_SHARE * (deadline - t0)
    memory_aware = None   # the least order of the rules that weigh memory (MEMORY_RULES)
    for reference in ([] if polish and best.order else
                      ([best.order] if best.order else []) + [None]):   # tie-breaks: warm start, topo
        found = list_schedules(problem, reference=reference, dag=dag, evaluator=ev,
                               deadline=list_end)
        listed = min(found, key=lambda r: r.cost)
        best.offer(listed.order, f"list:{listed.rule}", listed.cost)
        for r in found:
            if r.rule in MEMORY_RULES and (memory_aware is None or r.cost < memory_aware.cost):
                memory_aware = r
    if best.cost == 0 or (lower_bound is not None and best.cost <= lower_bound):
        best.proven = True
    elif engine in ("cpsat", "auto") and (engine == "cpsat" or problem.num_nodes <= CPSAT_WHOLE_MAX_NODES):
        share = 1.0 if engine == "cpsat" else 0.5
        _run_cpsat(problem, best, deadline, share, seed)
    elif engine in ("ilp-cbc", "ilp-highs"):
        _run_ilp(problem, dag, best, deadline, engine)
    if engine in ("auto", "lns") and not best.proven:
        # A short search: the neighbourhood search does little in a second or
        # two, while sink moves, the larger gain, want seconds on 2k nodes
        # (densenet, small: 95 -> 81 MiB in 7 s, loaded).
        # Min-cut moves first: DenseNet (small) 81 -> 51 MiB where a 20 s
        # search had stopped, ResNet-50 40 -> 17 (live bytes by this objective).
        # From the least memory-aware list schedule first, then from the
        # best order when that is another: where min-cut moves end depends
        # on where they start, not on how low the start is (densenet cpu
        # small: from XLA's order, 95 MiB, or the post-order walk's, the
        # same, they ended at 53.6; from rev-growth's, 114, at 50.7, whose
        # largest threshold then met the bound; on resnet50 growth's order
        # ended 17.2 against XLA's 18.1; unet, lm_adamw, gpt2: the same end).
        # The next start gets what the first leaves when it ends (no move in
        # the last GIVE_UP_AFTER nodes tried): halves of the time left the
        # first at 58.6 MiB at a 10 s limit.
        starts = [] if polish or memory_aware is None else [memory_aware.order]
        starts += [best.order] if best.order not in starts else []
        cut_end = time.monotonic() + CUT_SHARE * (deadline - time.monotonic())
        for start in starts:
            _run_cut(ev, best, cut_end, cuts, start=start)
        left = deadline - time.monotonic()
        _run_sink(ev, dag, best, time.monotonic() + (left if left < SINK_ALL_BELOW_S
                                                     else SINK_SHARE * left))
        _run_lns(ev, dag, best, deadline, seed, lower_bound)
        _run_sink(ev, dag, best, deadline)     # what the search moved may sink further
    assert best.order is not None
    return OrderResult(best.order, best.cost, best.source, time.monotonic() - t0,
                       best.proven, tuple(best.history))


def _run_sink(ev: Evaluator, dag: Dag, best: _Best, deadline: float) -> None:
    if best.proven or deadline - time.monotonic() <= 0.05:
        return
    best.offer(sink.improve(ev, dag, best.order, deadline=deadline), "sink")


def _run_cut(ev: Evaluator, best: _Best, deadline: float, cuts=None,
             start: Sequence[int] | None = None) -> None:
    """Min-cut moves from ``start`` (the best order when None)."""
    if best.proven or ev.n > CUT_MAX_NODES or deadline - time.monotonic() <= 0.05:
        return
    from olla_jax.solve import cut_move
    start = best.order if start is None else start
    best.offer(cut_move.improve(ev, start, deadline=deadline, cuts=cuts), "cut")


def _run_cpsat(problem: OrderProblem, best: _Best, deadline: float, share: float, seed: int) -> None:
    left = (deadline - time.monotonic()) * share
    if left <= 0.05:
        return
    best.say(f"cpsat: whole graph, {left:.1f}s")
    res = solve_cpsat(problem, hint=best.order, time_limit_s=left, seed=seed)
    if res.order is not None:
        best.offer(res.order, "cpsat")
        if res.optimal and res.exact:
            best.proven = True
    best.say(f"cpsat: bound {res.bound:,}, optimal={res.optimal}, exact model={res.exact}")


def _run_ilp(problem: OrderProblem, dag: Dag, best: _Best, deadline: float, engine: str) -> None:
    steps = default_steps(dag)
    pairs = sum(steps - dag.depth[v] - dag.height[v] for v in range(problem.num_nodes))
    if pairs > ILP_MAX_WINDOW_VARS:
        best.say(f"{engine}: skipped, {pairs:,} node-step variables")
        return
    left = deadline - time.monotonic()
    if left <= 1.0:
        return
    solver = "CBC" if engine == "ilp-cbc" else "HIGHS"
    best.say(f"{engine}: {steps} steps, {left:.1f}s")
    res = solve_ilp(problem, start=best.order, steps=steps, solver_name=solver,
                    time_limit_s=left * 0.9)
    if res.order is not None:
        best.offer(res.order, engine)
        if res.optimal and res.steps == problem.num_nodes:   # one node per step fits: exact
            best.proven = True
    best.say(f"{engine}: model peak {res.objective}, {res.num_vars:,} variables")


class _Reached(Exception):
    """The search reached the lower bound: nothing better exists."""


def _run_lns(ev: Evaluator, dag: Dag, best: _Best, deadline: float, seed: int,
             lower_bound: int | None = None) -> None:
    def took(order: Sequence[int], cost: int, how: str) -> None:
        best.offer(order, "lns", cost, note=how)
        if lower_bound is not None and best.cost <= lower_bound:
            best.proven = True
            raise _Reached

    order = list(best.order)
    config = SearchConfig()
    try:
        if ev.n >= SWEEP_MIN_NODES:
            sweep_end = time.monotonic() + (deadline - time.monotonic()) / 3
            order = sweep_pieces(ev, order, deadline=sweep_end, seed=seed, config=config,
                                 on_improve=took)
        improve(ev, dag, order, deadline=deadline, seed=seed, config=config, on_improve=took)
    except _Reached:
        best.say("reached the lower bound: optimal")
