"""Which values to recompute on a fixed order: the least extra cost under a budget.

A pure model (plain numbers, no jax, no graph).  The time axis is the one the
caller places on; every value is an inclusive interval ``[start, end]`` of
bytes.  A recomputable value (a ``Choice``) may take at most one of its
``Option``s: the value is then absent over the option's ``gap`` (the first
copy dies after its last early reader, the second is born just before the
first late one) and the operands the second run reads stay live until it
(``extend``: interval index -> new end, an end is only ever raised).  An
operand may itself be recomputed (a chain): the copy then reads the operand's
first copy when it runs before the operand's gap, its second copy (kept live
until then) when it runs after; inside the gap there is none, so such pairs
of options exclude each other (``conflicts``).  An option may hold several
gaps (``more``): the value is then recomputed once per gap, each copy read
until the next gap, and costs that many recomputations; its operands stay
live until the last copy runs.

``solve`` is lexicographic: the least extra cost whose live-bytes peak is at
most the budget and, among those, the least peak; when no plan meets the
budget, the least peak and then the least cost at that peak.  With exact
solves this is monotone: a lower budget never gets a higher peak (a plan
feasible at the lower budget with no more cost would have been picked at the
higher one, and ties go to the lower peak).  Engines: CP-SAT (``cpsat``,
deterministic: one worker and a deterministic time limit, as long as
the wall-clock limit does not stop it first) and python-mip with
HiGHS (``mip``); both take a warm start (``hint``, e.g. the greedy's picks).
``caps`` bound the live bytes at single steps as well (a plan meets the budget
only when it holds them too): a caller feeds back where its placement of the
live bytes ran over.
"""

from __future__ import annotations

import bisect
import dataclasses
import time
from typing import Sequence

import numpy as np

from olla_jax.solve import cpsat_run


@dataclasses.dataclass(frozen=True)
class Option:
    gap: tuple[int, int]                     # inclusive [first, last] step the value is absent
                                             # (inside its life: the copy is born at last + 1)
    extend: tuple[tuple[int, int], ...] = () # (interval, new end) of operands kept for the copy
    more: tuple[tuple[int, int], ...] = ()   # later gaps, one more copy each (in order)

    @property
    def gaps(self) -> tuple[tuple[int, int], ...]:
        return (self.gap, *self.more)


def _cost(choice: "Choice", option: Option) -> int:
    """An option's extra cost: one recomputation per gap."""
    return choice.cost * len(option.gaps)


@dataclasses.dataclass(frozen=True)
class Choice:
    interval: int                            # the value's interval
    options: tuple[Option, ...]
    cost: int                                # extra cost of one recomputation (> 0)


@dataclasses.dataclass(frozen=True)
class RecomputeProblem:
    sizes: tuple[int, ...]
    starts: tuple[int, ...]
    ends: tuple[int, ...]                    # inclusive
    choices: tuple[Choice, ...]
    budget: int
    # (step, bytes): live bytes at that step at most this, besides the budget
    # (a caller's per-step correction, e.g. where placement fragments most)
    caps: tuple[tuple[int, int], ...] = ()
    # ((choice, option), (choice, option)) pairs a caller rules out besides
    # ``conflicts``' own (e.g. copies its rewrite cannot chain)
    exclusive: tuple[tuple[tuple[int, int], tuple[int, int]], ...] = ()

    def __post_init__(self):
        n = len(self.sizes)
        if len(self.starts) != n or len(self.ends) != n:
            raise ValueError("sizes, starts and ends need one entry per interval")
        for c in self.choices:
            if not 0 <= c.interval < n:
                raise ValueError(f"choice names interval {c.interval}, not one of {n}")
            if c.cost <= 0:
                raise ValueError("a recomputation's cost must be positive")
            for o in c.options:
                last = self.starts[c.interval]
                for a, b in o.gaps:
                    if not last < a <= b < self.ends[c.interval]:
                        raise ValueError(f"gap {(a, b)} is not inside interval {c.interval}'s "
                                         "life, after its start and its gaps before")
                    last = b + 1
                for i, e in o.extend:
                    if not 0 <= i < n or i == c.interval:
                        raise ValueError(f"option extends interval {i}: not an operand")
        for pair in self.exclusive:
            for k, j in pair:
                if not (0 <= k < len(self.choices) and 0 <= j < len(self.choices[k].options)):
                    raise ValueError(f"exclusive names option {(k, j)}, not one of the choices'")
        for t, _ in self.caps:
            if t < 0:
                raise ValueError(f"cap at step {t}: steps are >= 0")


@dataclasses.dataclass(frozen=True)
class RecomputeSolution:
    picks: tuple[int, ...]                   # per choice: option index, or -1
    peak: int
    cost: int
    met: bool                                # peak <= budget, and every cap held
    optimal: bool                            # proven lexicographically optimal
    engine: str
    seconds: float


def conflicts(problem: RecomputeProblem) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """Pairs of (choice, option) that cannot both be taken: the second run of
    the first reads an operand that the second has dropped at that moment
    (its copy runs inside the operand's gap).  Before the gap the copy reads
    the operand's first copy; after it, its second copy (a chain).  The
    problem's ``exclusive`` pairs too."""
    of_interval = {c.interval: k for k, c in enumerate(problem.choices)}
    out = {tuple(pair) for pair in problem.exclusive}
    for k, c in enumerate(problem.choices):
        for j, o in enumerate(c.options):
            runs = [e for _, e in o.extend] + [b + 1 for _, b in o.gaps]  # every copy's run
            for i, _ in o.extend:
                d = of_interval.get(i)
                if d is None:
                    continue
                for l, od in enumerate(problem.choices[d].options):
                    if any(a <= e <= b for a, b in od.gaps for e in runs):
                        out.add(((k, j), (d, l)))
    return sorted(out)


def intervals_after(problem: RecomputeProblem, picks: Sequence[int]) -> list[tuple[int, int, int]]:
    """(size, start, end) of every piece of memory under ``picks``: each
    recomputed value becomes two pieces, operands are extended."""
    ends = list(problem.ends)
    for c, k in zip(problem.choices, picks):
        if k >= 0:
            for i, e in c.options[k].extend:
                ends[i] = max(ends[i], e)
    out = []
    split = {c.interval: c.options[k].gaps for c, k in zip(problem.choices, picks) if k >= 0}
    for i, size in enumerate(problem.sizes):
        s, e = problem.starts[i], ends[i]
        for a, b in split.get(i, ()):
            out.append((size, s, a - 1))
            s = b + 1
        out.append((size, s, e))
    return out


def profile(problem: RecomputeProblem, picks: Sequence[int]) -> np.ndarray:
    """Live bytes per step under ``picks``."""
    pieces = intervals_after(problem, picks)
    horizon = max([e for _, _, e in pieces], default=-1) + 2
    diff = np.zeros(horizon + 1, dtype=np.int64)
    for size, s, e in pieces:
        diff[s] += size
        diff[e + 1] -= size
    return np.cumsum(diff)[:horizon]


def evaluate(problem: RecomputeProblem, picks: Sequence[int],
             conflicting: Sequence | None = None) -> tuple[int, int]:
    """(peak, cost) of ``picks``; ValueError when two picks conflict
    (``conflicting``: ``conflicts(problem)`` when known)."""
    chosen = {(k, p) for k, p in enumerate(picks) if p >= 0}
    for a, b in (conflicts(problem) if conflicting is None else conflicting):
        if a in chosen and b in chosen:
            raise ValueError(f"options {a} and {b} (choice, option) cannot both be taken: the "
                             "first's copy runs while the second has dropped its operand")
    prof = profile(problem, picks)
    cost = sum(_cost(c, c.options[p]) for c, p in zip(problem.choices, picks) if p >= 0)
    return (int(prof.max()) if len(prof) else 0), cost


def fits(problem: RecomputeProblem, picks: Sequence[int]) -> bool:
    """Whether ``picks`` meet the budget and every cap."""
    prof = profile(problem, picks)
    if len(prof) and prof.max() > problem.budget:
        return False
    return all(t >= len(prof) or prof[t] <= b for t, b in problem.caps)


def _rows(problem: RecomputeProblem):
    """Steps that need a memory row, with what is fixed there and which
    (choice, option) terms and operand extensions touch it."""
    n = len(problem.sizes)
    horizon = max(problem.ends, default=0) + 2
    for c in problem.choices:
        for o in c.options:
            for _, e in o.extend:
                horizon = max(horizon, e + 2)
    diff = np.zeros(horizon + 1, dtype=np.int64)
    for i in range(n):
        diff[problem.starts[i]] += problem.sizes[i]
        diff[problem.ends[i] + 1] -= problem.sizes[i]
    base = np.cumsum(diff)[:horizon]
    # A peak sits where something is born: an interval's start or a second copy's.
    steps = set(problem.starts)
    for c in problem.choices:
        for o in c.options:
            steps.update(b + 1 for _, b in o.gaps)
    steps = sorted(t for t in steps if t < horizon)
    removable = np.zeros(horizon, dtype=np.int64)
    addable = np.zeros(horizon, dtype=np.int64)
    for c in problem.choices:
        size = problem.sizes[c.interval]
        lo = min(a for o in c.options for a, _ in o.gaps)
        hi = max(b for o in c.options for _, b in o.gaps)
        removable[lo:hi + 1] += size
    ext_end = {}
    for c in problem.choices:
        for o in c.options:
            for i, e in o.extend:
                ext_end[i] = max(ext_end.get(i, -1), e)
    for i, e in ext_end.items():
        if e > problem.ends[i]:
            addable[problem.ends[i] + 1:e + 1] += problem.sizes[i]
    return base, steps, removable, addable


def solve(problem: RecomputeProblem, *, engine: str = "cpsat", time_limit_s: float = 10.0,
          hint: Sequence[int] | None = None) -> RecomputeSolution:
    """The lexicographic optimum (see module doc), or the best found in the
    time.  ``time_limit_s`` holds for the whole call: each engine run's
    model build is taken from its time, and a run whose build the time left
    would not cover (the last build's time) is not started."""
    if engine not in ("cpsat", "mip"):
        raise ValueError(f"engine must be 'cpsat' or 'mip', not {engine!r}")
    t0 = time.monotonic()
    end = t0 + time_limit_s
    none = tuple(-1 for _ in problem.choices)
    conflicting = conflicts(problem)
    if hint is not None:
        if len(hint) != len(problem.choices):
            raise ValueError("hint needs one entry per choice")
        try:
            evaluate(problem, hint, conflicting)
        except ValueError:
            hint = None
    base, steps, removable, addable = _rows(problem)
    lower = int(max((base[t] - removable[t] for t in steps), default=0))
    if problem.caps:
        # a cap below what every plan keeps at its step is raised to that
        least = lambda t: int(base[t] - removable[t]) if t < len(base) else 0  # noqa: E731
        problem = dataclasses.replace(problem, caps=tuple((t, max(b, least(t)))
                                                          for t, b in problem.caps))
    if not problem.choices:
        peak, _ = evaluate(problem, none, conflicting)
        return RecomputeSolution(none, peak, 0, fits(problem, none), True, engine, 0.0)
    engine_run = _solve_cpsat if engine == "cpsat" else _solve_mip
    built = [0.0]                   # the last model build's seconds

    def run(*args, share: float = 1.0, **kw):
        """One engine run with ``share`` of the time left (None when none is)."""
        left = end - time.monotonic()
        if left <= max(0.05, built[0]):
            return None
        got = engine_run(*args, conflicting=conflicting, time_limit_s=left * share,
                         built=built, **kw)
        return got
    # Stage 1: is the budget reachable at all?  (least peak, bounded below by ``lower``)
    start_peak, _ = evaluate(problem, none, conflicting)
    if fits(problem, none):
        return RecomputeSolution(none, start_peak, 0, True, True, engine, time.monotonic() - t0)
    best = hint if hint is not None else none
    best_peak, best_cost = evaluate(problem, best, conflicting)
    if lower <= problem.budget:
        got = run(problem, base, steps, addable, lower=lower, cap=problem.budget, objective="cost",
                  hint=best, share=0.5, caps=problem.caps)
        if got is not None:
            picks, optimal = got
            peak, cost = evaluate(problem, picks, conflicting)
            # then the least peak at that cost
            got2 = run(problem, base, steps, addable, lower=lower, cap=peak, objective="peak",
                       cost_cap=cost, hint=picks, caps=problem.caps)
            if got2 is not None:
                p2, c2 = evaluate(problem, got2[0], conflicting)
                if p2 <= peak and c2 <= cost and fits(problem, got2[0]):
                    picks, peak, cost, optimal = got2[0], p2, c2, optimal and got2[1]
            else:
                optimal = False
            return RecomputeSolution(tuple(picks), peak, cost, True, optimal, engine,
                                     time.monotonic() - t0)
        if fits(problem, best):
            return RecomputeSolution(tuple(best), best_peak, best_cost, True, False, engine,
                                     time.monotonic() - t0)
    # Budget not reachable (or not found in time): least peak, then least cost.
    got = run(problem, base, steps, addable, lower=lower, cap=best_peak, objective="peak",
              hint=best, share=0.5)
    optimal = False
    if got is not None:
        p, c = evaluate(problem, got[0], conflicting)
        if (p, c) < (best_peak, best_cost):
            best, best_peak, best_cost = got[0], p, c
        # a proven least peak is proven for the plan kept too when its peak
        # is that one (the warm start often is: the solver returns it as is)
        optimal = got[1] and best_peak == p
    got = run(problem, base, steps, addable, lower=lower, cap=best_peak, objective="cost",
              hint=best)
    if got is not None:
        p, c = evaluate(problem, got[0], conflicting)
        if p <= best_peak and c <= best_cost:
            best, best_peak, best_cost, optimal = got[0], p, c, optimal and got[1]
    else:
        optimal = False
    return RecomputeSolution(tuple(best), best_peak, best_cost, fits(problem, best),
                             optimal, engine, time.monotonic() - t0)


def least_peak_within(problem: RecomputeProblem, cost_cap: int, *, time_limit_s: float = 10.0,
                      engine: str = "cpsat") -> RecomputeSolution:
    """The least live-bytes peak whose extra cost is at most ``cost_cap``
    (``problem.budget`` and caps ignored): where a budget's cost frontier
    lies, e.g. against another planner's point.  ``met``: the peak is at most
    ``problem.budget``."""
    if engine not in ("cpsat", "mip"):
        raise ValueError(f"engine must be 'cpsat' or 'mip', not {engine!r}")
    t0 = time.monotonic()
    none = [-1] * len(problem.choices)
    peak0, _ = evaluate(problem, none)
    base, steps, removable, addable = _rows(problem)
    lower = int(max((base[t] - removable[t] for t in steps), default=0))
    got = None
    if problem.choices:
        run = _solve_cpsat if engine == "cpsat" else _solve_mip
        got = run(problem, base, steps, addable, cap=int(peak0), lower=lower, objective="peak",
                  hint=none, time_limit_s=time_limit_s, conflicting=conflicts(problem),
                  built=[0.0], cost_cap=int(cost_cap))
    picks, optimal = (tuple(got[0]), got[1]) if got is not None else (tuple(none), False)
    peak, cost = evaluate(problem, picks)
    return RecomputeSolution(picks, peak, cost, peak <= problem.budget, optimal, engine,
                             time.monotonic() - t0)


def _terms(problem: RecomputeProblem, steps, addable, prune: int, base):
    """Per row step: (step, fixed bytes, [(size, choice, option) removed]).
    Rows that cannot exceed ``prune`` whatever is picked are left out (``prune``:
    the cap when it is a constraint, a lower bound of every plan's peak when the
    peak is minimised)."""
    opts = [(a, b, problem.sizes[c.interval], k, j)
            for k, c in enumerate(problem.choices) for j, o in enumerate(c.options)
            for a, b in o.gaps]
    lo = np.array([o[0] for o in opts], dtype=np.int64)
    hi = np.array([o[1] for o in opts], dtype=np.int64)
    rows = []
    for t in steps:
        if base[t] + addable[t] <= prune:
            continue
        rows.append((t, int(base[t]), [opts[i][2:] for i in np.flatnonzero((lo <= t) & (t <= hi))]))
    return rows


def _kept_terms(problem: RecomputeProblem, levels, row_steps) -> dict[int, list[tuple[int, int, int]]]:
    """Per row step: [(size, interval, level)] of the operands an extension may
    keep live there (the first level whose end is at or after the step)."""
    out: dict[int, list[tuple[int, int, int]]] = {}
    ordered = sorted(row_steps)
    for i, ends in levels.items():
        lo = bisect.bisect_right(ordered, problem.ends[i])
        hi = bisect.bisect_right(ordered, ends[-1])
        for t in ordered[lo:hi]:
            out.setdefault(t, []).append((problem.sizes[i], i, bisect.bisect_left(ends, t)))
    return out


def _extensions(problem: RecomputeProblem):
    """interval -> [(choice, option, new end)] of the options that extend it."""
    out: dict[int, list[tuple[int, int, int]]] = {}
    for k, c in enumerate(problem.choices):
        for j, o in enumerate(c.options):
            for i, e in o.extend:
                if e > problem.ends[i]:
                    out.setdefault(i, []).append((k, j, e))
    return out


def _levels(problem: RecomputeProblem):
    """interval -> (its extension ends, sorted): one variable per end, "kept
    until at least this end", so a memory row reads one variable per
    extended interval (the first end at or after the row) and an option
    implies one, not every row it reaches."""
    return {i: sorted({e for _, _, e in opts}) for i, opts in _extensions(problem).items()}


def _cap_rows(problem: RecomputeProblem, caps, addable, base):
    """(row, bytes) of the caps that some plan could break."""
    least = {}
    for t, b in caps:
        if t < len(base):
            least[t] = min(b, least.get(t, b))
    rows = _terms(problem, sorted(least), addable, -1, base)
    return [(r, least[r[0]]) for r in rows if base[r[0]] + addable[r[0]] > least[r[0]]]


def _solve_cpsat(problem, base, steps, addable, *, cap, lower, objective, hint, time_limit_s,
                 conflicting, built, cost_cap=None, caps=()):
    """The CP-SAT run: ``time_limit_s`` from its start, the model's build
    included (its seconds are written to ``built[0]``); None when the build
    left no time or nothing was found."""
    t0 = time.monotonic()
    from ortools.sat.python import cp_model
    m = cp_model.CpModel()
    x = [[m.NewBoolVar(f"x{k}_{j}") for j in range(len(c.options))]
         for k, c in enumerate(problem.choices)]
    for k, row in enumerate(x):
        m.AddAtMostOne(row)
    for (a, i), (b, j) in conflicting:
        m.AddBoolOr([x[a][i].Not(), x[b][j].Not()])
    levels = _levels(problem)
    kept = {i: [m.NewBoolVar(f"y{i}_{e}") for e in ends] for i, ends in levels.items()}
    for i, ys in kept.items():
        for later, earlier in zip(ys[1:], ys):
            m.AddImplication(later, earlier)
    for i, opts in _extensions(problem).items():
        for k, j, e in opts:
            m.AddImplication(x[k][j], kept[i][levels[i].index(e)])
    peak = m.NewIntVar(0, int(max(base.max() + addable.max(), 0)), "peak")
    m.Add(peak <= cap)
    prune = cap if objective == "cost" else lower
    rows = _terms(problem, steps, addable, prune, base)
    capped = _cap_rows(problem, caps, addable, base)
    held = _kept_terms(problem, levels, [t for t, _, _ in rows] + [r[0] for r, _ in capped])

    def live(t, fixed, removed):
        terms = [x[k][j] for _, k, j in removed] + [kept[i][lv] for _, i, lv in held.get(t, ())]
        coefs = [-size for size, _, _ in removed] + [size for size, _, _ in held.get(t, ())]
        return cp_model.LinearExpr.WeightedSum(terms, coefs) + fixed
    for row in rows:
        m.Add(live(*row) <= peak)
    for row, b in capped:
        m.Add(live(*row) <= b)
    cost = cp_model.LinearExpr.WeightedSum(
        [v for row in x for v in row],
        [_cost(c, o) for c in problem.choices for o in c.options])
    if cost_cap is not None:
        m.Add(cost <= cost_cap)
    m.Minimize(cost if objective == "cost" else peak)
    for k, row in enumerate(x):
        for j, v in enumerate(row):
            m.AddHint(v, 1 if hint[k] == j else 0)
    built[0] = time.monotonic() - t0
    left = time_limit_s - built[0]
    if left <= 0.02:
        return None
    # deterministic when the machine keeps up; never past the limit when it does not
    solver, status = cpsat_run.solve(m, left, max_deterministic_time=float(left))
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return None
    picks = [next((j for j, v in enumerate(row) if solver.Value(v)), -1) for row in x]
    return picks, status == cp_model.OPTIMAL


def _solve_mip(problem, base, steps, addable, *, cap, lower, objective, hint, time_limit_s,
               conflicting, built, cost_cap=None, caps=()):
    """The HiGHS run, as ``_solve_cpsat``."""
    t0 = time.monotonic()
    import mip
    # HiGHS: CBC's library clashes with OR-tools' in one process (ilp_order runs it in a child)
    m = mip.Model(sense=mip.MINIMIZE, solver_name=mip.HIGHS)
    m.verbose = 0
    m.threads = 1
    x = [[m.add_var(var_type=mip.BINARY) for _ in c.options] for c in problem.choices]
    for row in x:
        m += mip.xsum(row) <= 1
    for (a, i), (b, j) in conflicting:
        m += x[a][i] + x[b][j] <= 1
    levels = _levels(problem)
    kept = {i: [m.add_var(lb=0, ub=1) for _ in ends] for i, ends in levels.items()}
    for i, ys in kept.items():
        for later, earlier in zip(ys[1:], ys):
            m += earlier >= later
    for i, opts in _extensions(problem).items():
        for k, j, e in opts:
            m += kept[i][levels[i].index(e)] >= x[k][j]
    peak = m.add_var(lb=0, ub=float(cap))
    prune = cap if objective == "cost" else lower
    rows = _terms(problem, steps, addable, prune, base)
    capped = _cap_rows(problem, caps, addable, base)
    held = _kept_terms(problem, levels, [t for t, _, _ in rows] + [r[0] for r, _ in capped])

    def live(t, fixed, removed):
        return (fixed - mip.xsum(size * x[k][j] for size, k, j in removed)
                + mip.xsum(size * kept[i][lv] for size, i, lv in held.get(t, ())))
    for row in rows:
        m += live(*row) <= peak
    for row, b in capped:
        m += live(*row) <= b
    cost = mip.xsum(_cost(c, o) * x[k][j] for k, c in enumerate(problem.choices)
                    for j, o in enumerate(c.options))
    if cost_cap is not None:
        m += cost <= cost_cap
    m.objective = mip.minimize(cost if objective == "cost" else peak)
    start = [(x[k][j], 1.0) for k, j in enumerate(hint) if j >= 0]
    if start:
        try:
            m.start = start
        except Exception:  # noqa: BLE001 - a warm start is an optimisation only
            pass
    built[0] = time.monotonic() - t0
    left = time_limit_s - built[0]
    if left <= 0.02:
        return None
    status = m.optimize(max_seconds=left)
    if status not in (mip.OptimizationStatus.OPTIMAL, mip.OptimizationStatus.FEASIBLE):
        return None
    picks = [next((j for j, v in enumerate(row) if v.x is not None and v.x > 0.5), -1)
             for row in x]
    return picks, status == mip.OptimizationStatus.OPTIMAL
