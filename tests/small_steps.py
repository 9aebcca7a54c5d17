"""Small training steps shared by tests: one the whole pipeline improves and
verifies (``mlp_step``, and its memory model: ``mlp_graph``), one for sharded
plans on two devices (``dp_step``), one whose peak is inside a gradient
accumulation loop (``accumulate_step``)."""

import collections
import dataclasses
import functools
import random
import warnings

import jax
import jax.numpy as jnp


def mlp_step(p, x, y):
    def loss(p):
        h = jnp.tanh(x @ p["w1"] + p["b1"])
        return jnp.mean((h @ p["w2"] + p["b2"] - y) ** 2)

    g = jax.grad(loss)(p)
    return jax.tree.map(lambda a, b: a - 0.01 * b, p, g), loss(p)


def mlp_args(seed: int):
    k = jax.random.split(jax.random.PRNGKey(seed), 4)
    p = {"w1": jax.random.normal(k[0], (32, 64)), "b1": jnp.zeros(64),
         "w2": jax.random.normal(k[1], (64, 8)), "b2": jnp.zeros(8)}
    return p, jax.random.normal(k[2], (16, 32)), jax.random.normal(k[3], (16, 8))


def mlp_graph():
    """``mlp_step``'s schedule graph, captured with XLA's memory scheduler."""
    from olla_jax.capture.record import capture
    from olla_jax.graph import model
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cap = capture(mlp_step, *mlp_args(0), scheduler="memory")
    return model.build(cap.hlo_proto, cap.values_text, cap.live_range_text)


def dp_step(params, x, y):
    """Four tanh layers and an SGD update: sharded over two devices, its
    gradients and gathered weights give XLA async collectives to schedule."""
    def loss(p):
        h = x
        for w in p:
            h = jnp.tanh(h @ w)
        return jnp.mean((h - y) ** 2)
    grads = jax.grad(loss)(params)
    return [w - 0.1 * g for w, g in zip(params, grads)]


def dp_args():
    return ([jnp.zeros((256, 256)) for _ in range(4)], jnp.zeros((512, 256)), jnp.zeros((512, 256)))


@functools.lru_cache(maxsize=1)
def regather_capture():
    """dp_step compiled for 2 compile-only H100s, weights split (FSDP), XLA's
    collective combining off: one all-gather per weight, read in the forward
    and the backward pass (what re-gathering repeats)."""
    from jax.sharding import PartitionSpec as P
    from olla_jax.capture import capture
    from olla_jax.graph import collectives
    return capture(dp_step, *dp_args(), backend="gpu:h100",
                   compiler_options={k: 0 for k in collectives.COMBINE_THRESHOLD_OPTIONS},
                   spmd=dict(num_devices=2, in_shardings=([P("x")] * 4, P("x"), P("x"))))


@dataclasses.dataclass(frozen=True)
class RegatherStep:
    """regather_capture's capture, its memory graph, parsed module and overlap
    step model (H100 cost model, 2 devices)."""
    capture: object
    graph: object
    module: object
    step: object


@functools.lru_cache(maxsize=1)
def regather_step() -> RegatherStep:
    from olla_jax import dumps
    from olla_jax.capture import gpu
    from olla_jax.graph import collectives, model, overlap
    cap = regather_capture()
    graph = model.build(cap.hlo_proto, cap.values_text, cap.live_range_text, alignment=256)
    module = dumps.parse_hlo_proto(cap.hlo_proto).hlo_module
    cost = overlap.device_cost(gpu._target_path("h100").read_text())
    step = overlap.step_model(module, graph, collectives.async_pairs(module), cost, 2)
    return RegatherStep(cap, graph, module, step)


@dataclasses.dataclass(frozen=True)
class FakePlan:
    """What ``plan()``'s budget ladders read of a ``_plan`` result, for tests
    that stand in for the planner (no compile)."""
    runs_total_bytes: int
    settings: dict
    notes: tuple = ()
    xla_total_bytes: int = 2000
    runs_temp_bytes: int = 0
    graph: None = None
    solve_seconds: float = 0.0
    capture_seconds: float = 0.0   # what plan() sums over its stages
    verify_seconds: float = 0.0
    argument_bytes: int = 0        # what a missed budget's advice reads (plan.budget_advice)
    output_bytes: int = 0
    alias_bytes: int = 0


def recompute_brute_force(problem):
    """Every plan of a ``solve.recompute.RecomputeProblem``: the best (key, picks)
    by the module's lexicographic rule (budget met first, then least cost)."""
    best = None
    for picks, peak, cost in evaluations(problem):
        key = (0, cost, peak) if peak <= problem.budget else (1, peak, cost)
        if best is None or key < best[0]:
            best = (key, picks)
    return best


def _batch_mlp_step(p, x, y):
    def loss(p):
        return jnp.mean((jnp.tanh(x @ p["w1"]) @ p["w2"] - y) ** 2)
    value, grads = jax.value_and_grad(loss)(p)
    return jax.tree.map(lambda a, g: a - 0.1 * g, p, grads), value


def make_batch_mlp(batch: int):
    """A tiny MLP step whose activations grow with the batch (shapes only: nothing
    runs), as ``olla_jax.largest_batch``'s ``make_step``."""
    f32 = jnp.float32
    params = {"w1": jax.ShapeDtypeStruct((64, 256), f32), "w2": jax.ShapeDtypeStruct((256, 16), f32)}
    return _batch_mlp_step, (params, jax.ShapeDtypeStruct((batch, 64), f32),
                             jax.ShapeDtypeStruct((batch, 16), f32))


def random_order(graph, seed: int) -> tuple[int, ...]:
    """A topological order of a ScheduleGraph's edges, drawn at random (any
    order a solver may pick)."""
    rng = random.Random(seed)
    succ, indeg = collections.defaultdict(list), [0] * len(graph.nodes)
    for u, v in graph.edges:
        succ[u].append(v)
        indeg[v] += 1
    ready, order = [n for n in range(len(graph.nodes)) if not indeg[n]], []
    while ready:
        node = ready.pop(rng.randrange(len(ready)))
        order.append(node)
        for v in succ[node]:
            indeg[v] -= 1
            if not indeg[v]:
                ready.append(v)
    assert len(order) == len(graph.nodes)
    return tuple(order)


def stacked_best_fit(spent: list[float], seconds_per_order: float = 1.0):
    """A stand-in for ``place_greedy.best_fit_model`` that stacks every block in
    the arena and adds ``seconds_per_order`` fake seconds per sort order to
    ``spent[0]`` (a slow best-fit, for the strategy's deadline tests)."""
    from olla_jax.solve import place_greedy
    from olla_jax.solve import problem as sp

    def stacked(model_, orders=place_greedy.SORT_ORDERS, **kw):
        spent[0] += seconds_per_order * len(orders)
        offsets, top = [], 0
        for b in model_.blocks:
            offsets.append(top)
            top += -(-b.size // model_.alignment) * model_.alignment
        return model_.to_placement([sp.ARENA] * len(model_.blocks), offsets)
    return stacked


def with_copy_scratch(layout, producer: str, scratch: tuple):
    """The checker's claims of ``layout`` with the copy of ``producer``
    claiming ``scratch`` ((value, place) pairs) instead of its own."""
    from olla_jax import checked
    claims = checked.candidate_plan(layout)
    return dataclasses.replace(claims, recomputes=tuple(
        dataclasses.replace(c, scratch=scratch) if c.producer == producer else c
        for c in claims.recomputes))


def assert_scratch_refused(capture, layout, producer: str, scratch: tuple, match: str):
    """The independent checker refuses ``layout`` with the copy of ``producer``
    claiming ``scratch`` (``with_copy_scratch``), saying ``match``."""
    import pytest
    from olla_jax import check
    with pytest.raises(check.PlanRejected, match=match):
        check.check_plan(capture.hlo_proto, capture.values_text, capture.live_range_text,
                         with_copy_scratch(layout, producer, scratch), alignment=256)


def scratch_moved_and_bare(layout, r):
    """Two wrong layouts for the read-back and the rewrite: ``layout`` with
    copy ``r``'s one scratch place moved 256 bytes up, and with none."""
    ((value, place),) = r.scratch
    moved = dataclasses.replace(r, scratch=((value, (place[0], place[1] + 256)),))
    return (dataclasses.replace(layout, recomputes=tuple(
                moved if q is r else q for q in layout.recomputes)),
            dataclasses.replace(layout, recomputes=tuple(
                dataclasses.replace(q, scratch=()) if q is r else q for q in layout.recomputes)))


def recomputed_on_h100(fn, args, compiler_options=None, fraction: float = 0.9):
    """(base plan, budget plan) of ``fn`` on the compile-only H100 target: the
    budget keeps arguments and outputs and ``fraction`` of the base's temp."""
    import olla_jax
    from olla_jax import budget
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        base = olla_jax.plan(fn, *args, backend="gpu:h100", time_limit_s=1,
                             compiler_options=compiler_options)
        target = (base.runs_total_bytes - base.runs_temp_bytes
                  + int(fraction * base.runs_temp_bytes))
        plan = budget.recompute_to_budget(base, target, time_limit_s=5, measure_time=False)
    return base, plan


def accumulate_loss(w, x, y):
    h = x
    for wi in w:
        h = jnp.tanh(h @ wi)
    return jnp.mean((h - y) ** 2)


def accumulate_step(w, xs, ys):
    """Gradients summed over micro-batches by a scan, then one SGD update."""
    def micro(acc, xy):
        value, grads = jax.value_and_grad(accumulate_loss)(w, *xy)
        return jax.tree.map(jnp.add, acc, (value, grads)), None
    zero = (jnp.zeros(()), jax.tree.map(jnp.zeros_like, w))
    (total, grads), _ = jax.lax.scan(micro, zero, (xs, ys))
    return [wi - 0.1 * gi for wi, gi in zip(w, grads)], total


def accumulate_args(micro: int):
    w = [jax.random.normal(jax.random.PRNGKey(i), (256, 256)) * 0.05 for i in range(4)]
    key = jax.random.PRNGKey(9)
    return w, jax.random.normal(key, (micro, 1024, 256)), jax.random.normal(key, (micro, 1024, 256))


def planned_accumulate(micro: int):
    """``accumulate_step`` at ``micro`` micro-batches, planned (3 s, not fed back)."""
    import olla_jax
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", olla_jax.PlanWarning)
        return olla_jax.plan(accumulate_step, *accumulate_args(micro), time_limit_s=3,
                             feed_back=False)


def entry_and_body_copy(graph, cap, order):
    """A recompute plan on ``order`` with one entry copy (of a value read
    after the loop, before that reader) and one copy inside the loop body."""
    from olla_jax.budget import body, candidates, recompute_plan
    step = recompute_plan.step_index(graph, order)
    loop = next(n for n in range(len(graph.nodes)) if graph.block_length(n) > 1)
    entry = [c for c in candidates(graph, cap) if any(step[u] > step[loop] for u in c.users)]
    assert entry, "no entry value read after the loop"
    c = entry[0]
    users = sorted(c.users, key=lambda n: step[n])
    k = next(j for j, u in enumerate(users) if step[u] > step[loop])
    inner = body.candidates(graph, cap)[0]
    rp = recompute_plan.plan_of(graph, order, [(c, k)], body_picks=[(inner, inner.splits[-1])])
    assert {r.producer in graph.node_index for r in rp.layout.recomputes} == {True, False}
    return rp


def evaluations(problem):
    """(picks, peak, cost) of every plan of a ``solve.recompute.RecomputeProblem``
    that ``evaluate`` accepts."""
    import itertools

    from olla_jax.solve import recompute as rc
    for picks in itertools.product(*[range(-1, len(c.options)) for c in problem.choices]):
        try:
            peak, cost = rc.evaluate(problem, picks)
        except ValueError:
            continue
        yield picks, peak, cost


# A step for host offloading (tests/test_offload.py, tests/test_offload_plan.py)
OFFLOAD_ARGS = (jax.ShapeDtypeStruct((256, 512), jnp.float32),
                jax.ShapeDtypeStruct((512, 512), jnp.float32))


def park_across(x, w):
    """``h`` idle across six matmuls, read at the end by an elementwise multiply."""
    h = jnp.tanh(x @ w)
    y = h
    for _ in range(6):
        y = jnp.tanh(y @ w)
    return (y * h).sum()


def _dropout_loss(params, x, key):
    for i, w in enumerate(params):
        x = jnp.tanh(x @ w)
        keep = jax.random.bernoulli(jax.random.fold_in(key, i), 0.9, x.shape)
        x = jnp.where(keep, x / 0.9, 0.0)
    return jnp.mean(x ** 2)


def dropout_step(params, x, key):
    """An MLP step with dropout (jax.random's threefry2x32: a rolled loop on CPU)."""
    return [w - 1e-3 * g for w, g in zip(params, jax.grad(_dropout_loss)(params, x, key))]


def plan_with_build_claiming(monkeypatch, limit: float, build_s: float, *, frozen: bool = False,
                             **options):
    """plan() of the small MLP (figures only) with its graph build claiming
    ``build_s`` on the planner's fake clock (``frozen``: a clock that moves only
    by those seconds; else the real clock plus them): (the plan, whether the
    build ran, the seconds given to each solve_graph, each of which then runs
    on its own 0.5 s; none where XLA's plan was kept before any)."""
    import importlib
    import time

    import olla_jax
    from olla_jax import strategy
    from olla_jax.graph import model
    plan_mod = importlib.import_module("olla_jax.plan")
    spent = [0.0]

    def clock() -> float:
        return (1000.0 if frozen else time.monotonic()) + spent[0]
    monkeypatch.setattr(plan_mod, "Deadline", lambda s: strategy.Deadline(s, clock=clock))
    real_build, real_solve = model.build, strategy.solve_graph
    built, given = [], []

    def build(*a, **kw):
        built.append(True)
        graph = real_build(*a, **{**kw, "deadline": None})
        spent[0] += build_s
        return graph

    def solve_graph(graph, **kw):
        given.append(kw["deadline"].left())
        return real_solve(graph, **{**kw, "deadline": strategy.Deadline(0.5)})
    monkeypatch.setattr(model, "build", build)
    monkeypatch.setattr(plan_mod, "solve_graph", solve_graph)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        planned = olla_jax.plan(mlp_step, *mlp_args(0), time_limit_s=limit, feed_back=False,
                                **options)
    return planned, bool(built), given
