"""Generators and oracles for fuzzing olla_jax, shared by the tests and the
long run: random JAX programs through ``olla_jax.plan``, random graphs through
the order solver and the bounds, random placement problems through ``place``.

The tests (``tests/test_fuzz_*.py``, ``test_concurrency.py``,
``test_reliability.py``) import this module as ``_fuzz``; the long run is
``python benchmarks/fuzz.py`` (its command line imports this module, tests never
import benchmarks; ``tests/test_architecture.py`` checks that).

Everything is generated from ``random.Random`` objects, so one seed gives one
run; the tests pass hypothesis' ``st.randoms()`` to the same generators, which
lets hypothesis shrink what it finds.

What counts as a failure found (printed, with the seed that reproduces it):

* programs: an exception other than olla_jax's documented error types; a
  plan that is not verified and has no note; outputs of ``plan.compiled``
  that are not bit-identical to ``jax.jit(fn)``'s; a verified plan whose
  achieved temp is above XLA's;
* graphs: an order that is not topological, a reported cost that is not
  ``order_cost`` of the order, a result above a warm start, a bound above the
  cost of an order found (or above the brute-force optimum on tiny graphs);
* placements: any violation the independent checker here finds (overlap in
  time and bytes, misalignment, out of bounds, occupants hit, groups split).

Fallbacks are not failures, but the reasons are counted: "the independent
checker rejected the plan", "the solver failed", "the rewrite refused" and
"did not match XLA's" each point at a bug upstream of the safety net that
caught it, and are listed as *suspicious*.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import random
import time
import traceback
import warnings
from typing import Any, Callable, Sequence

from olla_jax.solve.problem import (ARENA, Interval, Item, Occupant, OrderProblem, Placement,
                                    PlacementProblem, Region, check_topological, order_cost,
                                    step_profile)

# ---------------------------------------------------------------------------
# random order problems (DAGs with items)


def _size(rng: random.Random) -> int:
    kind = rng.random()
    if kind < 0.1:
        return 0
    if kind < 0.4:
        return rng.randint(1, 100)
    if kind < 0.8:
        return 64 * rng.randint(1, 64)
    return rng.randint(1, 1 << 20)


def random_order_problem(rng: random.Random, *, max_nodes: int = 12, max_items: int | None = None,
                         max_regions: int = 2) -> OrderProblem:
    """A random DAG whose node labels are a random permutation of a topological
    rank (so edges go both ways between labels), with random items: sizes from
    0 to 1 MiB, 0-2 defs, a few touches, pinned to a region or in the arena,
    live-in / live-out flags; random per-node extra bytes and region sizes."""
    n = rng.randint(1, max_nodes)
    label = list(range(n))
    rng.shuffle(label)                       # label[rank] = node id
    density = rng.choice((0.0, 0.15, 0.3, 0.6))
    edges = set()
    for i in range(n):
        for j in range(i + 1, n):
            if rng.random() < density:
                edges.add((label[i], label[j]))
    if n > 1 and rng.random() < 0.3:          # sometimes a spine through every node
        edges.update((label[i], label[i + 1]) for i in range(n - 1))
    regions = tuple(rng.choice((1, 64, 4096, 1 << 16)) * rng.randint(1, 4)
                    for _ in range(rng.randint(0, max_regions)))
    items = []
    for _ in range(rng.randint(0, max_items if max_items is not None else 2 * n + 2)):
        defs = tuple(rng.sample(range(n), rng.choice((0, 1, 1, 1, 2)) if n >= 2 else rng.randint(0, 1)))
        touches = defs + tuple(rng.randrange(n) for _ in range(rng.randint(0, 3)))
        region = ARENA if not regions or rng.random() < 0.7 else rng.randrange(len(regions))
        items.append(Item(size=_size(rng), defs=defs, touches=touches, region=region,
                          live_in=rng.random() < 0.15, live_out=rng.random() < 0.2))
    extra = tuple(0 if rng.random() < 0.7 else _size(rng) for _ in range(n))
    return OrderProblem(n, tuple(sorted(edges)), tuple(items), extra, regions)


def random_topological_order(problem: OrderProblem, rng: random.Random) -> list[int]:
    """A uniformly chosen ready node at each step (a valid warm start)."""
    preds = [set() for _ in range(problem.num_nodes)]
    for u, v in problem.edges:
        preds[v].add(u)
    done: set[int] = set()
    order = []
    while len(order) < problem.num_nodes:
        ready = [v for v in range(problem.num_nodes) if v not in done and preds[v] <= done]
        v = rng.choice(ready)
        order.append(v)
        done.add(v)
    return order


def all_topological_orders(problem: OrderProblem):
    """Every topological order (for brute force on tiny graphs)."""
    n = problem.num_nodes
    preds = [0] * n
    for u, v in problem.edges:
        preds[v] |= 1 << u

    def extend(prefix: list[int], done: int):
        if len(prefix) == n:
            yield tuple(prefix)
            return
        for v in range(n):
            if not done >> v & 1 and preds[v] & ~done == 0:
                prefix.append(v)
                yield from extend(prefix, done | 1 << v)
                prefix.pop()

    yield from extend([], 0)


def brute_force_optimum(problem: OrderProblem) -> tuple[int, tuple[int, ...]]:
    best = None
    for order in all_topological_orders(problem):
        cost = order_cost(problem, order)
        if best is None or cost < best[0]:
            best = (cost, order)
    assert best is not None
    return best


def check_order_result(problem: OrderProblem, result, warm_starts: Sequence[Sequence[int]]) -> list[str]:
    """What is wrong with a ``solve_order`` result (empty: nothing)."""
    problems = []
    try:
        check_topological(problem, result.order)
    except ValueError as err:
        return [f"order is not topological: {err}"]
    cost = order_cost(problem, result.order)
    if cost != result.cost:
        problems.append(f"reported cost {result.cost} but order_cost is {cost}")
    for k, ws in enumerate(warm_starts):
        ws_cost = order_cost(problem, ws)
        if cost > ws_cost:
            problems.append(f"cost {cost} is above warm start {k}'s {ws_cost}")
    costs = [c for _, c in result.history]
    if any(b > a for a, b in zip(costs, costs[1:])):
        problems.append(f"history is not decreasing: {costs}")
    return problems


# ---------------------------------------------------------------------------
# random placement problems and an independent placement checker


def random_placement_problem(rng: random.Random, *, max_intervals: int = 14,
                             max_regions: int = 2) -> PlacementProblem:
    alignment = rng.choice((1, 8, 64, 64, 64, 256))
    horizon = rng.randint(1, 20)
    intervals = []
    for _ in range(rng.randint(0, max_intervals)):
        s = rng.randrange(horizon)
        e = rng.randint(s, min(horizon - 1, s + rng.choice((0, 1, 3, horizon))))
        intervals.append(Interval(size=_size(rng) if rng.random() < 0.5 else rng.randint(0, 5000),
                                  start=s, end=e))
    regions = []
    for _ in range(rng.randint(0, max_regions)):
        capacity = rng.choice((0, 64, 1000, 4096, 1 << 16, 1 << 20))
        occupants = []
        for _ in range(rng.randint(0, 3)):
            s = rng.randrange(horizon)
            e = rng.randint(s, horizon - 1)
            off = rng.randrange(max(1, capacity))
            occupants.append(Occupant(offset=off, size=rng.randint(0, max(0, capacity - off)),
                                      start=s, end=e))
        regions.append(Region(capacity, tuple(occupants)))
    groups = []
    free = list(range(len(intervals)))
    rng.shuffle(free)
    while len(free) >= 2 and rng.random() < 0.3:
        k = rng.randint(2, min(3, len(free)))
        groups.append(tuple(free[:k]))
        free = free[k:]
    return PlacementProblem(tuple(intervals), tuple(regions), alignment, tuple(groups))


def placement_violations(problem: PlacementProblem, placement: Placement) -> list[str]:
    """Every rule a placement breaks, found by brute force over pairs: no
    shared code with ``olla_jax.solve.place_check``."""
    out = []
    ivs = problem.intervals
    n = len(ivs)
    if len(placement.region) != n or len(placement.offset) != n:
        return [f"{len(placement.region)} regions / {len(placement.offset)} offsets for {n} intervals"]
    group_of = {}
    for g, members in enumerate(problem.same_offset):
        for i in members:
            group_of[i] = g
        places = {(placement.region[i], placement.offset[i]) for i in members}
        if len(places) > 1:
            out.append(f"same_offset group {g} {members} is split over {sorted(places)}")
    for i, iv in enumerate(ivs):
        r, off = placement.region[i], placement.offset[i]
        if r != ARENA and not 0 <= r < len(problem.regions):
            out.append(f"interval {i} in unknown region {r}")
            continue
        if off < 0 or off % problem.alignment:
            out.append(f"interval {i} at offset {off} (alignment {problem.alignment})")
        if iv.size == 0:
            continue
        limit = placement.arena_size if r == ARENA else problem.regions[r].capacity
        if off + iv.size > limit:
            out.append(f"interval {i} [{off}, {off + iv.size}) exceeds {limit} in region {r}")
        if r != ARENA:
            for k, occ in enumerate(problem.regions[r].occupants):
                if (occ.size and occ.start <= iv.end and iv.start <= occ.end
                        and occ.offset < off + iv.size and off < occ.offset + occ.size):
                    out.append(f"interval {i} hits occupant {k} of region {r}")
    for i, j in itertools.combinations(range(n), 2):
        a, b = ivs[i], ivs[j]
        if a.size == 0 or b.size == 0 or placement.region[i] != placement.region[j]:
            continue
        if i in group_of and group_of.get(j) == group_of[i]:
            continue
        if a.start <= b.end and b.start <= a.end:
            oi, oj = placement.offset[i], placement.offset[j]
            if oi < oj + b.size and oj < oi + a.size:
                out.append(f"intervals {i} and {j} overlap in region {placement.region[i]}: "
                           f"[{oi}, {oi + a.size}) and [{oj}, {oj + b.size}) at times "
                           f"[{a.start}, {a.end}] / [{b.start}, {b.end}]")
    return out


def stacked_size(problem: PlacementProblem) -> int:
    """The arena of the trivial placement (everything stacked, aligned):
    no sensible placer needs more."""
    a = problem.alignment
    sizes = {}
    grouped = set()
    for g, members in enumerate(problem.same_offset):
        grouped.update(members)
        sizes[("g", g)] = max((problem.intervals[i].size for i in members), default=0)
    for i, iv in enumerate(problem.intervals):
        if i not in grouped:
            sizes[("i", i)] = iv.size
    return sum(-(-s // a) * a for s in sizes.values())


# ---------------------------------------------------------------------------
# random JAX programs


OPS = ("unary", "binary", "broadcast", "matmul", "reduce", "reshape", "transpose", "cond", "scan",
       "fori", "while", "scatter_add", "scatter_set", "gather", "dus", "dynamic_slice", "concat",
       "where", "sort", "argmax")


@dataclasses.dataclass(frozen=True)
class ProgramSpec:
    """A program of the grammar: arguments x (rows, cols) float32, w (cols,
    cols) float32 and ix (idx_len,) int32, then ``ops`` each appending one
    value to a pool that starts as [x, w]; ``picks`` choose operands and
    variants at trace time (modulo what is there)."""
    seed: int
    rows: int
    cols: int
    idx_len: int
    ops: tuple[tuple[str, tuple[int, ...]], ...]
    outputs: tuple[int, ...]
    donate: bool

    def describe(self) -> str:
        ops = " ".join(name for name, _ in self.ops)
        return (f"seed {self.seed}: x f32[{self.rows},{self.cols}] w f32[{self.cols},{self.cols}] "
                f"ix s32[{self.idx_len}]{' donated x' if self.donate else ''}: {ops}")


def random_program(rng: random.Random, *, seed: int = 0, max_ops: int = 8,
                   must_use: Sequence[str] = ()) -> ProgramSpec:
    n_ops = rng.randint(1, max_ops)
    names = list(must_use) + [rng.choice(OPS) for _ in range(max(0, n_ops - len(must_use)))]
    rng.shuffle(names)
    ops = tuple((name, tuple(rng.randrange(1 << 16) for _ in range(4))) for name in names)
    outputs = tuple(rng.randrange(1 << 16) for _ in range(rng.randint(0, 2)))
    return ProgramSpec(seed=seed, rows=rng.choice((2, 4, 8, 16, 32)), cols=rng.choice((3, 8, 16, 64)),
                       idx_len=rng.choice((1, 3, 8)), ops=ops, outputs=outputs,
                       donate=rng.random() < 0.3)


_MAX_ELEMENTS = 1 << 14


def _apply(name: str, picks: tuple[int, ...], pool: list, ix):
    import jax.numpy as jnp
    from jax import lax

    a = pool[picks[0] % len(pool)]
    b = pool[picks[1] % len(pool)]
    variant = picks[2]
    m, n = a.shape

    def compatible(x, y):
        try:
            jnp.broadcast_shapes(x.shape, y.shape)
            return True
        except ValueError:
            return False

    if name == "unary":
        fns = (jnp.sin, jnp.tanh, lambda v: jnp.exp(jnp.clip(v, -4, 4)), jnp.abs, jnp.negative,
               lambda v: v * 1.5 + 0.25, lambda v: jnp.maximum(v, 0), lambda v: jnp.log1p(jnp.abs(v)))
        return fns[variant % len(fns)](a)
    if name == "binary":
        fns = (jnp.add, jnp.multiply, jnp.subtract, jnp.maximum)
        other = b if compatible(a, b) else b.mean()
        return fns[variant % len(fns)](a, other)
    if name == "broadcast":
        if variant % 2:
            return a + 0.1 * a.sum(axis=0, keepdims=True)
        return a * a.mean(axis=1, keepdims=True)
    if name == "matmul":
        p, q = b.shape
        if n == p:
            return a @ b
        if n == q:
            return a @ b.T
        if m == p:
            return a.T @ b
        return a @ a.T if variant % 2 else a.T @ a
    if name == "reduce":
        fns = (jnp.sum, jnp.max, jnp.mean, jnp.min)
        return fns[variant % len(fns)](a, axis=picks[3] % 2, keepdims=True)
    if name == "reshape":
        shapes = [(n, m)] + [(m * n // d, d) for d in (2, 4, 8) if (m * n) % d == 0]
        return a.reshape(shapes[variant % len(shapes)])
    if name == "transpose":
        return a.T
    if name == "cond":
        pred = b.sum() > 0
        return lax.cond(pred, lambda v: jnp.sin(v) * 2, lambda v: jnp.cos(v) + 1, a)
    if name == "scan":
        def body(carry, row):
            carry = jnp.tanh(carry * 0.5 + row)
            return carry, carry * 2
        last, ys = lax.scan(body, a[0], a, reverse=bool(variant % 2))
        return ys + last[None, :]
    if name == "fori":
        return lax.fori_loop(0, 1 + variant % 4, lambda i, v: v * 0.5 + jnp.sin(v + i), a)
    if name == "while":
        # a data-dependent trip count (at least one, at most four iterations)
        def cond(c):
            k, v = c
            return (k < 4) & ((k == 0) | (v.sum() > -1e30))
        return lax.while_loop(cond, lambda c: (c[0] + 1, jnp.tanh(c[1]) + 0.5),
                              (jnp.int32(variant % 2), a))[1]
    idx = ix % m
    upd = (b if b.shape == (idx.shape[0], n) else jnp.zeros((idx.shape[0], n), a.dtype) + b.mean())
    if name == "scatter_add":
        return a.at[idx].add(upd)
    if name == "scatter_set":
        return a.at[idx].set(upd * 2)
    if name == "gather":
        return a[idx]
    if name in ("dus", "dynamic_slice"):
        h = max(1, m // 2)
        start = ix[variant % ix.shape[0]] % (m - h + 1)
        if name == "dus":
            return lax.dynamic_update_slice(a, jnp.cos(a[:h]) * 3, (start, jnp.int32(0)))
        return lax.dynamic_slice(a, (start, jnp.int32(0)), (h, n))
    if name == "concat":
        if b.shape[1] == n:
            out = jnp.concatenate([a, b], axis=0)
        elif b.shape[0] == m:
            out = jnp.concatenate([a, b], axis=1)
        else:
            out = jnp.concatenate([a, a * 2], axis=variant % 2)
        return out if out.size <= _MAX_ELEMENTS else out[: max(1, _MAX_ELEMENTS // out.shape[1])]
    if name == "where":
        other = b if compatible(a, b) else a * 0.1
        return jnp.where(a > 0, a, other)
    if name == "sort":
        return jnp.sort(a, axis=variant % 2)
    if name == "argmax":
        return jnp.argmax(a, axis=variant % 2, keepdims=True).astype(a.dtype)
    raise ValueError(f"unknown op {name}")


def build_function(spec: ProgramSpec) -> Callable:
    def fn(x, w, ix):
        pool = [x, w]
        for name, picks in spec.ops:
            value = _apply(name, picks, pool, ix)
            if value.size > _MAX_ELEMENTS:
                value = value[: max(1, _MAX_ELEMENTS // value.shape[1])]
            pool.append(value)
        return (pool[-1],) + tuple(pool[p % len(pool)] for p in spec.outputs)
    fn.__name__ = f"fuzz_program_{spec.seed}"
    return fn


def program_args(spec: ProgramSpec) -> tuple:
    import numpy as np
    import jax.numpy as jnp

    rng = np.random.default_rng(spec.seed)
    x = rng.standard_normal((spec.rows, spec.cols)).astype(np.float32)
    w = (rng.standard_normal((spec.cols, spec.cols)) / math.sqrt(spec.cols)).astype(np.float32)
    ix = rng.integers(-3, 64, size=spec.idx_len).astype(np.int32)
    return jnp.asarray(x), jnp.asarray(w), jnp.asarray(ix)


def fresh(args):
    import jax
    import jax.numpy as jnp
    return jax.tree.map(lambda v: jnp.array(v, copy=True), args)


def bit_identical(a, b) -> str:
    """'' when both pytrees of arrays are bit-identical, else what differs."""
    import jax
    import numpy as np

    if jax.tree.structure(a) != jax.tree.structure(b):
        return f"output structures differ: {jax.tree.structure(a)} against {jax.tree.structure(b)}"
    for k, (x, y) in enumerate(zip(jax.tree.leaves(a), jax.tree.leaves(b))):
        x, y = np.asarray(x), np.asarray(y)
        if x.dtype != y.dtype or x.shape != y.shape:
            return f"output {k}: {x.dtype}{list(x.shape)} against {y.dtype}{list(y.shape)}"
        if not np.array_equal(x.reshape(-1).view(np.uint8), y.reshape(-1).view(np.uint8)):
            return f"output {k} ({x.dtype}{list(x.shape)}) differs"
    return ""


# Documented error types a call to olla_jax.plan may raise.
def documented_errors() -> tuple[type, ...]:
    import olla_jax
    from olla_jax.apply import executable

    return (olla_jax.CaptureError, olla_jax.PlanFileError, executable.LayoutError)


_REASONS = (
    ("no order and placement below XLA's best", "no improvement over XLA", False),
    ("the memory model does not cover", "memory model does not cover the program", False),
    ("the solver failed", "solver failed (exception)", True),
    ("the independent checker rejected", "checker rejected the solver's plan", True),
    ("the executable rewrite refused", "rewrite refused the plan", True),
    ("did not match XLA's", "rewritten executable did not match XLA's", True),
    ("loading the verified executable failed", "loading failed", True),
    ("could not be serialized", "executable not serializable", False),
    ("not fed back", "not fed back", False),
)


def fallback_reason(notes: Sequence[str]) -> tuple[str, bool]:
    """(category, suspicious) of a plan's notes."""
    text = " | ".join(notes)
    for needle, label, suspicious in _REASONS:
        if needle in text:
            return label, suspicious
    return (f"other: {text[:80]}" if text else "NO NOTE"), True


@dataclasses.dataclass
class ProgramOutcome:
    spec: ProgramSpec
    status: str                 # "verified", "fell back", "error", "FAILED"
    reason: str = ""
    suspicious: bool = False
    failures: list[str] = dataclasses.field(default_factory=list)
    seconds: float = 0.0
    notes: tuple[str, ...] = ()
    checker_rejects_xla: str = ""   # the independent checker refuses XLA's own plan (a false positive)


def run_program(spec: ProgramSpec, *, time_limit_s: float = 2.0) -> ProgramOutcome:
    """Plan one program and check the promises of ``olla_jax.plan``."""
    import jax
    import olla_jax

    t0 = time.monotonic()
    fn = build_function(spec)
    args = program_args(spec)
    donate = (0,) if spec.donate else ()
    out = ProgramOutcome(spec, "FAILED")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", olla_jax.PlanWarning)
            warnings.filterwarnings("ignore", "Some donated buffers were not usable")
            plan = olla_jax.plan(fn, *args, time_limit_s=time_limit_s, donate_argnums=donate)
    except documented_errors() as err:
        out.status, out.reason = "error", f"{type(err).__name__}: {str(err)[:200]}"
        out.seconds = time.monotonic() - t0
        return out
    except Exception as err:  # noqa: BLE001 - that is the finding
        out.failures.append(f"undocumented {type(err).__name__} escaped plan(): {err}\n"
                            + traceback.format_exc(limit=6))
        out.seconds = time.monotonic() - t0
        return out
    out.notes = tuple(plan.notes)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Some donated buffers were not usable")
        expected = jax.jit(fn, donate_argnums=donate)(*fresh(args))
    try:
        got = plan.compiled(*fresh(args))
        diff = bit_identical(got, expected)
        if diff:
            out.failures.append(f"plan.compiled (verified={plan.verified}, source={plan.source}) "
                                f"differs from jax.jit: {diff}")
    except Exception as err:  # noqa: BLE001
        out.failures.append(f"calling plan.compiled raised {type(err).__name__}: {err}")
    out.checker_rejects_xla = xla_plan_rejection(plan)
    if plan.verified:
        out.status = "verified"
        if plan.achieved_temp_bytes is None or plan.achieved_temp_bytes > plan.xla_best_temp_bytes:
            out.failures.append(f"verified plan's achieved temp {plan.achieved_temp_bytes} is above "
                                f"XLA's best {plan.xla_best_temp_bytes}")
    else:
        out.status = "fell back"
        if not plan.notes:
            out.failures.append("not verified and no note says why")
        out.reason, out.suspicious = fallback_reason(plan.notes)
    if out.failures:
        out.status = "FAILED"
    out.seconds = time.monotonic() - t0
    return out


def xla_plan_rejection(plan) -> str:
    """Why the independent checker rejects XLA's own order and placement for
    the planned module ('' when it accepts it, as it always should)."""
    from olla_jax import check
    from olla_jax.graph import layout as layout_lib

    cap, graph = plan.capture, plan.graph
    if cap is None or graph is None:
        return ""
    own = layout_lib.xla_layout(graph)
    try:
        check.check_plan(cap.hlo_proto, cap.values_text, cap.live_range_text,
                         check.CandidatePlan(own.order_names, own.places, own.allocation_sizes),
                         alignment=graph.alignment)
    except check.PlanRejected as err:
        return str(err)
    return ""


# ---------------------------------------------------------------------------
# graph and placement fuzzing (one case each)


def run_graph(rng: random.Random, *, time_limit_s: float = 0.2, engine: str = "list",
              brute_force_nodes: int = 7) -> list[str]:
    """One random order problem: solve_order, min_cut_bound, brute force when tiny."""
    from olla_jax.solve import bounds
    from olla_jax.solve.order import solve_order

    problem = random_order_problem(rng, max_nodes=rng.choice((brute_force_nodes, 12, 30)))
    starts = [random_topological_order(problem, rng) for _ in range(rng.randint(0, 2))]
    failures = []
    result = solve_order(problem, warm_starts=starts, time_limit_s=time_limit_s, engine=engine,
                         seed=rng.randrange(100))
    failures += [f"{engine}: {p}" for p in check_order_result(problem, result, starts)]
    bound = bounds.min_cut_bound(problem, time_limit_s=5.0, orders=[result.order, *starts])
    costs = [order_cost(problem, o) for o in [result.order, *starts]]
    if bound.value > min(costs):
        failures.append(f"min-cut bound {bound.value} above an order's cost {min(costs)}")
    if problem.num_nodes <= brute_force_nodes:
        opt, _ = brute_force_optimum(problem)
        if bound.value > opt:
            failures.append(f"min-cut bound {bound.value} above the optimum {opt}")
        if result.proven_optimal and result.cost != opt:
            failures.append(f"{engine} claims optimal {result.cost}, brute force finds {opt}")
    if failures:
        failures.insert(0, repr(problem))
    return failures


def run_placement(rng: random.Random, *, time_limit_s: float = 0.2) -> list[str]:
    from olla_jax.solve import place

    problem = random_placement_problem(rng)
    failures = []
    greedy = place.place(problem, engine="greedy")
    failures += [f"greedy: {v}" for v in placement_violations(problem, greedy)]
    best = place.place(problem, time_limit_s=time_limit_s)
    failures += [f"auto: {v}" for v in placement_violations(problem, best)]
    if best.arena_size > greedy.arena_size:
        failures.append(f"auto arena {best.arena_size} above greedy's {greedy.arena_size}")
    if greedy.arena_size > stacked_size(problem):
        failures.append(f"greedy arena {greedy.arena_size} above stacking everything "
                        f"({stacked_size(problem)})")
    if failures:
        failures.insert(0, repr(problem))
    return failures
