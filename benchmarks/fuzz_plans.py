"""Adversarial plan fuzzing: does the independent checker alone stop every
plan that would change a result?

    python -m benchmarks.fuzz_plans --mutations=10000 --out=benchmarks/results/fuzz_plans

A small real training step (an MLP whose first layer is scaled by a constant
table, with an argmax output: a constant allocation, a tuple table,
thread-local allocations, parameters, outputs and a temp arena) gives two
base plans, checked and run first: the solver's plan of the step, and XLA's
own plan of the step with its parameters donated (XLA puts temps in the
donated bytes; the solver's plan of that variant is refused by the checker
today, a memory-model matter).  Half the mutations start from each.  Each
mutation takes its base plan and breaks it on purpose, 1 to 3 edits drawn
from :data:`KINDS` (a value moved onto another live value, onto the constant,
into the tuple table, a thread-local or a parameter allocation, a fixed value
moved, two instructions swapped, an allocation resized, an offset misaligned,
a recomputation claimed or damaged, and "probe_offsets": a value tried at up
to 12 offsets of an allocation of any kind until the checker accepts one, so
that the accepted plans sit on the checker's boundary), and hands it to
``check.check_plan``.

Every plan the checker ACCEPTS is applied for real: the CPU executable
rewrite runs with its own guards switched off (what it refuses on its own:
fixed allocations, sizes, live-out values, alignment), so that the checker is
the only safety net measured, and the result runs against XLA's executable in
a worker process, on 2 input sets, each twice in a row (a write to a
constant shows on the second call).  A crash, a hang or any differing bit is
*accepted and wrong*; the target is 0.  Whether the guarded rewrite would
also have refused an accepted plan is counted on the side.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import hashlib
import json
import os
import pickle
import random
import select
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

KINDS = ("probe_offsets", "onto_live_value", "onto_constant", "into_tuple_table", "into_thread_local",
         "into_parameter", "into_output", "random_place", "misalign", "move_fixed",
         "split_group", "swap_order", "move_instruction", "resize_temp", "resize_fixed",
         "recompute", "damage_recompute")

COMMAND = "python -m benchmarks.fuzz_plans"


# ---------------------------------------------------------------------------
# the step


def _table():
    import numpy as np
    return np.linspace(-1, 1, 32 * 64, dtype=np.float32).reshape(32, 64)


def fuzz_step(p, x, y):
    """An MLP step whose first weight is scaled by a constant (XLA keeps it as
    an 8 KiB constant allocation, read early) and that also returns an argmax
    (a variadic reduce: a tuple table and thread-local allocations)."""
    import jax
    import jax.numpy as jnp

    table = _table()

    def loss(p):
        h = jnp.tanh(x @ (p["w1"] * table) + p["b1"])
        return jnp.mean((h @ p["w2"] - y) ** 2)

    value, grad = jax.value_and_grad(loss)(p)
    return jax.tree.map(lambda a, b: a - 0.01 * b, p, grad), value, jnp.argmax(x, axis=1)


def fuzz_args(seed: int = 0):
    import jax
    import jax.numpy as jnp
    k = jax.random.split(jax.random.PRNGKey(seed), 4)
    return ({"w1": jax.random.normal(k[0], (32, 64)), "b1": jnp.zeros(64),
             "w2": jax.random.normal(k[1], (64, 8))},
            jax.random.normal(k[2], (16, 32)), jax.random.normal(k[3], (16, 8)))


@dataclasses.dataclass
class Base:
    """The step's capture, the solver's plan, and what the mutator reads."""
    capture: Any
    layout: Any
    records: dict            # value id -> dumps.ValueRecord
    allocations: dict        # allocation index -> BufferAllocationProto

    @property
    def graph(self):
        return self.layout.graph


def base_plan(time_limit_s: float = 1.0) -> Base:
    """Plan :func:`fuzz_step` (not fed back: the fuzz applies plans itself)."""
    import warnings

    import olla_jax
    from olla_jax import dumps
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plan = olla_jax.plan(fuzz_step, *fuzz_args(), time_limit_s=time_limit_s, feed_back=False)
    if plan.layout is None:
        raise RuntimeError(f"the fuzz step was not planned: {plan.notes}")
    cap = plan.capture
    proto = dumps.parse_hlo_proto(cap.hlo_proto)
    return Base(cap, plan.layout, dumps.parse_values(cap.values_text),
                {a.index: a for a in proto.buffer_assignment.buffer_allocations})


def donated_base() -> Base:
    """XLA's own plan of :func:`fuzz_step` with its parameters donated (XLA
    then puts temps in the donated bytes and makes other in-place pairs)."""
    from olla_jax.capture import capture
    from olla_jax import dumps
    from olla_jax.graph import model
    from olla_jax.graph import layout as layout_lib
    cap = capture(fuzz_step, *fuzz_args(), donate_argnums=(0,))
    graph = model.build(cap.hlo_proto, cap.values_text, cap.live_range_text)
    proto = dumps.parse_hlo_proto(cap.hlo_proto)
    return Base(cap, layout_lib.xla_layout(graph), dumps.parse_values(cap.values_text),
                {a.index: a for a in proto.buffer_assignment.buffer_allocations})


# ---------------------------------------------------------------------------
# the mutator


@dataclasses.dataclass
class Mutant:
    order: list              # node indices
    places: dict             # value id -> (allocation, offset)
    sizes: dict              # allocation -> size
    recomputes: list         # layout.Recompute
    kinds: list              # what was done, in order


def _place(base: Base, m: Mutant, v: int) -> tuple[int, int]:
    val = base.graph.values[v]
    return m.places.get(v, (val.allocation, val.offset))


def _size(base: Base, m: Mutant, a: int) -> int:
    return m.sizes.get(a, base.allocations[a].size)


def _aligned(rng: random.Random, limit: int, align: int = 64) -> int:
    return align * rng.randint(0, max(0, limit // align))


def _movable(base: Base) -> list[int]:
    return [v for u in base.graph.units if u.movable for v in u.values]


def _put_unit(base: Base, m: Mutant, unit, alloc: int, offset: int) -> None:
    """Move every value of ``unit`` (its members keep their relative offsets)."""
    for v, rel in zip(unit.values, unit.member_offsets):
        m.places[v] = (alloc, offset + rel)


def _move_into(base: Base, m: Mutant, rng: random.Random, allocs: Sequence[int]) -> bool:
    """Move a movable unit into one of ``allocs`` at an aligned offset,
    sometimes growing the allocation to make it fit."""
    allocs = list(allocs)
    if not allocs:
        return False
    unit = rng.choice([u for u in base.graph.units if u.movable])
    a = rng.choice(allocs)
    cap = _size(base, m, a)
    if unit.size > cap or rng.random() < 0.3:
        offset = _aligned(rng, cap) if rng.random() < 0.5 else 0
        m.sizes[a] = max(cap, offset + unit.size)
    else:
        offset = _aligned(rng, cap - unit.size)
    _put_unit(base, m, unit, a, offset)
    return True


def _probe(base: Base, m: Mutant, rng: random.Random, by_kind, accepts) -> bool:
    """Look for a place the checker accepts: a movable unit, an allocation of
    a random kind (constant, tuple table, thread-local, parameter, output or
    the temp arena), up to 12 aligned offsets that fit without resizing;
    the first accepted one is kept (else the last tried)."""
    kinds = [k for k in ("constant", "tuple", "thread_local", "parameter", "output")
             if by_kind[k]] + ["temp"]
    kind = rng.choice(kinds)
    allocs = [base.graph.temp_allocation] if kind == "temp" else by_kind[kind]
    a = rng.choice(allocs)
    cap = _size(base, m, a)
    units = [u for u in base.graph.units if u.movable and 0 < u.size <= cap]
    if not units:
        return False
    unit = rng.choice(units)
    before = dict(m.places)
    for _ in range(12):
        m.places = dict(before)
        _put_unit(base, m, unit, a, _aligned(rng, cap - unit.size))
        if accepts is not None and accepts(m):
            break
    return True


def _instruction_order_mutation(base: Base, m: Mutant, rng: random.Random, swap: bool) -> bool:
    n = len(m.order)
    i = rng.randrange(n)
    j = min(n - 1, max(0, i + rng.choice((-3, -2, -1, 1, 2, 3)))) if rng.random() < 0.7 \
        else rng.randrange(n)
    if i == j:
        return False
    if swap:
        m.order[i], m.order[j] = m.order[j], m.order[i]
    else:
        m.order.insert(j, m.order.pop(i))
    return True


def _users(base: Base, v: int) -> list[str]:
    """Entry instructions that read value ``v``."""
    nodes = base.graph.node_index
    return sorted({u.instruction for u in base.records[v].uses if u.instruction in nodes})


def _recompute(base: Base, m: Mutant, rng: random.Random, plausible: bool) -> bool:
    """Claim a recomputation of a temp value: a plausible one (every reader
    after ``before`` declared late, the copy at the end of a grown temp
    allocation) or one damaged on purpose."""
    from olla_jax.graph import layout as layout_lib
    g = base.graph
    names = [g.nodes[n] for n in m.order]
    step = {name: k for k, name in enumerate(names)}
    candidates = [v for v in _movable(base)
                  if g.values[v].allocation == g.temp_allocation
                  and base.records[v].defining_instruction in step
                  and v not in {r.value for r in m.recomputes}]
    if not candidates:
        return False
    v = rng.choice(candidates)
    producer = base.records[v].defining_instruction
    users = _users(base, v)
    after = [n for n in names[step[producer] + 1:]]
    if not after:
        return False
    if users and rng.random() < 0.8:
        before = rng.choice([u for u in users if step.get(u, -1) > step[producer]] or after)
    else:
        before = rng.choice(after)
    late = tuple(u for u in users if step.get(u, -1) >= step[before])
    size = g.values[v].size
    temp = g.temp_allocation
    end = _size(base, m, temp)
    end += -end % g.alignment
    place = (temp, end)
    if plausible:
        m.sizes[temp] = end + size
    claim = layout_lib.Recompute(v, producer, before, late, place, size)
    if not plausible:
        claim = _damage(base, m, rng, claim, names)
    m.recomputes.append(claim)
    return True


def _damage(base: Base, m: Mutant, rng: random.Random, claim, names):
    g = base.graph
    how = rng.randrange(6)
    if how == 0 and claim.late_users:
        return dataclasses.replace(claim, late_users=claim.late_users[1:])
    if how == 1:
        return dataclasses.replace(claim, before=claim.producer)
    if how == 2:
        return dataclasses.replace(claim, before=rng.choice(names))
    if how == 3:
        other = rng.choice(list(g.values))
        return dataclasses.replace(claim, place=_place(base, m, other))
    if how == 4:
        a = rng.choice(list(base.allocations))
        return dataclasses.replace(claim, place=(a, _aligned(rng, _size(base, m, a))))
    return dataclasses.replace(claim, producer=rng.choice(names))


def mutate(base: Base, rng: random.Random, kind: str | None = None,
           accepts: Callable[[Mutant], bool] | None = None) -> Mutant:
    """The base plan with 1-3 adversarial edits (``kind`` forces the first);
    ``accepts`` (the checker) steers the "probe_offsets" edit."""
    lay = base.layout
    g = lay.graph
    m = Mutant(list(lay.order), dict(lay.places), dict(lay.allocation_sizes),
               list(lay.recomputes), [])
    allocs = base.allocations
    by_kind = collections.defaultdict(list)
    for a in allocs.values():
        if a.is_constant:
            by_kind["constant"].append(a.index)
        elif a.is_tuple:
            by_kind["tuple"].append(a.index)
        elif a.is_thread_local:
            by_kind["thread_local"].append(a.index)
        elif a.is_entry_computation_parameter:
            by_kind["parameter"].append(a.index)
        elif a.maybe_live_out:
            by_kind["output"].append(a.index)
    edits = 1 + (rng.random() < 0.3) + (rng.random() < 0.1)
    for k in range(edits):
        todo = kind if k == 0 and kind else rng.choice(KINDS)
        done = True
        if todo == "probe_offsets":
            done = _probe(base, m, rng, by_kind, accepts)
        elif todo == "onto_live_value":
            v = rng.choice(_movable(base))
            m.places[v] = _place(base, m, rng.choice(list(g.values)))
        elif todo == "onto_constant":
            done = _move_into(base, m, rng, by_kind["constant"])
        elif todo == "into_tuple_table":
            done = _move_into(base, m, rng, by_kind["tuple"])
        elif todo == "into_thread_local":
            done = _move_into(base, m, rng, by_kind["thread_local"])
        elif todo == "into_parameter":
            done = _move_into(base, m, rng, by_kind["parameter"])
        elif todo == "into_output":
            done = _move_into(base, m, rng, by_kind["output"])
        elif todo == "random_place":
            v = rng.choice(list(g.values))
            a = rng.choice(list(allocs))
            m.places[v] = (a, rng.randrange(0, _size(base, m, a) + 64))
        elif todo == "misalign":
            v = rng.choice(_movable(base))
            a, o = _place(base, m, v)
            m.places[v] = (a, o + rng.choice((1, 4, 8, 16, 32, -32)))
        elif todo == "move_fixed":
            fixed = [v for u in g.units if not u.movable for v in u.values]
            fixed += [r for r in base.records if r not in g.values
                      and any(r == x.logical_buffer_id for a in allocs.values() for x in a.assigned)]
            v = rng.choice(fixed)
            a = rng.choice([g.temp_allocation] + list(allocs))
            m.places[v] = (a, _aligned(rng, _size(base, m, a)))
        elif todo == "split_group":
            groups = [u for u in g.units if u.movable and len(u.values) > 1]
            if groups:
                v = rng.choice(rng.choice(groups).values)
                a, o = _place(base, m, v)
                m.places[v] = (a, o + 64 * rng.choice((-2, -1, 1, 2)))
            else:
                done = False
        elif todo == "swap_order":
            done = _instruction_order_mutation(base, m, rng, swap=True)
        elif todo == "move_instruction":
            done = _instruction_order_mutation(base, m, rng, swap=False)
        elif todo == "resize_temp":
            t = g.temp_allocation
            cur = _size(base, m, t)
            m.sizes[t] = max(0, cur + rng.choice((-1, 1)) * 64 * rng.randint(1, 8))
        elif todo == "resize_fixed":
            a = rng.choice([x for xs in by_kind.values() for x in xs])
            m.sizes[a] = max(0, _size(base, m, a) + rng.choice((-1, 1)) * 64 * rng.randint(1, 4))
        elif todo == "recompute":
            done = _recompute(base, m, rng, plausible=True)
        elif todo == "damage_recompute":
            done = _recompute(base, m, rng, plausible=False)
        if done:
            m.kinds.append(todo)
    return m


def candidate(base: Base, m: Mutant):
    from olla_jax import check
    names = tuple(base.graph.nodes[n] for n in m.order)
    return check.CandidatePlan(names, dict(m.places), dict(m.sizes), recomputes=tuple(
        check.RecomputeClaim(r.value, r.producer, r.before, r.late_users, r.place)
        for r in m.recomputes))


def layout_of(base: Base, m: Mutant):
    return dataclasses.replace(base.layout, order=tuple(m.order), places=dict(m.places),
                               allocation_sizes=dict(m.sizes), recomputes=tuple(m.recomputes))


# ---------------------------------------------------------------------------
# applying an accepted plan: the rewrite without its own guards


class _GuardsOff:
    """Switch off the executable rewrite's own refusals (fixed allocations and
    their sizes, live-out values, alignment, bounds): only what it needs to
    produce bytes at all stays."""

    def __enter__(self):
        from olla_jax.apply import cpu_rewrite, edits
        self._saved = [(edits, "fixed_kind", edits.fixed_kind),
                       (edits, "check_move", edits.check_move),
                       (cpu_rewrite, "check_move", cpu_rewrite.check_move),
                       (edits, "possibly_live_out", edits.possibly_live_out)]

        def check_move(what, old_alloc, old_offset, alloc, offset, size, allocations, sizes,
                       alignment):
            if alloc not in sizes:
                raise edits.RewriteError(f"{what} moved to allocation {alloc}, which does not exist")

        edits.fixed_kind = lambda alloc: ""
        edits.check_move = cpu_rewrite.check_move = check_move
        edits.possibly_live_out = lambda decoded: set()
        return self

    def __exit__(self, *exc):
        for module, name, value in self._saved:
            setattr(module, name, value)


def rewrite(base: Base, m: Mutant, guards: bool) -> bytes:
    """The rewritten executable (raises RewriteError/LayoutError when it cannot be built)."""
    from olla_jax.apply import cpu_rewrite, feed_back
    edit = feed_back.edit_of(layout_of(base, m))
    if guards:
        return cpu_rewrite.rewrite(base.capture.executable, edit)
    with _GuardsOff():
        return cpu_rewrite.rewrite(base.capture.executable, edit)


class Runner:
    """A worker process that keeps XLA's executable loaded and runs candidates
    against it: each of ``input_sets`` random input sets twice in a row.
    A crash or a hang of the worker is reported and the worker restarted."""

    def __init__(self, reference: bytes, input_sets: int = 2, timeout_s: float = 120.0):
        self.reference, self.input_sets, self.timeout_s = reference, input_sets, timeout_s
        self.proc = None

    def _start(self):
        env = dict(os.environ, JAX_PLATFORMS="cpu")
        root = str(Path(__file__).resolve().parents[1])
        env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
        self.proc = subprocess.Popen([sys.executable, "-m", "benchmarks.fuzz_plans", "--worker"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, env=env, cwd=root)
        self._send({"reference": self.reference, "input_sets": self.input_sets})

    def _send(self, obj) -> None:
        data = pickle.dumps(obj)
        self.proc.stdin.write(struct.pack("<Q", len(data)) + data)
        self.proc.stdin.flush()

    def run(self, candidate_bytes: bytes) -> str:
        """'' when bit-identical to XLA's on every call, else what went wrong."""
        if self.proc is None or self.proc.poll() is not None:
            self._start()
        try:
            self._send({"candidate": candidate_bytes})
        except (BrokenPipeError, OSError):
            self.close()
            return "the worker died before the candidate was sent"
        ready, _, _ = select.select([self.proc.stdout], [], [], self.timeout_s)
        if not ready:
            self.close()
            return f"hung (no answer in {self.timeout_s:.0f} s)"
        line = self.proc.stdout.readline()
        if not line:
            try:
                code = self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                code = "none: closed its output"
            self.close()
            return f"the worker crashed (exit {code})"
        return json.loads(line)["diff"]

    def close(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            self.proc = None


def _worker() -> int:
    """Loop: read a candidate, run it and the reference in step, reply with a JSON line."""
    import jax
    import numpy as np
    from jax._src.lib import xla_client as xc

    from olla_jax.apply import child, verify

    def recv():
        head = sys.stdin.buffer.read(8)
        if len(head) < 8:
            return None
        (n,) = struct.unpack("<Q", head)
        return pickle.loads(sys.stdin.buffer.read(n))

    def same(a, b) -> str:
        if len(a) != len(b):
            return f"{len(a)} outputs against {len(b)}"
        for k, (x, y) in enumerate(zip(a, b)):
            if x.dtype != y.dtype or x.shape != y.shape or x.tobytes() != y.tobytes():
                return f"output {k} differs"
        return ""

    setup = recv()
    device = jax.devices("cpu")[0]
    devices = xc.DeviceList((device,))
    client = device.client
    reference = client.deserialize_executable(setup["reference"], devices, None)
    specs = verify.parameter_specs(setup["reference"])
    inputs = [child.random_inputs(specs, seed) for seed in range(setup["input_sets"])]

    def run(executable, args):
        args = [jax.device_put(np.array(x, copy=True), device) for x in args]
        return [np.asarray(o) for o in executable.execute(args)]

    while True:
        request = recv()
        if request is None:
            return 0
        diff = ""
        try:
            cand = client.deserialize_executable(request["candidate"], devices, None)
            for k, args in enumerate(inputs):
                for call in (1, 2):
                    diff = same(run(reference, args), run(cand, args))
                    if diff:
                        diff = f"input set {k}, call {call}: {diff}"
                        break
                if diff:
                    break
        except Exception as err:  # noqa: BLE001 - reported as wrong
            diff = f"{type(err).__name__}: {err}"
        sys.stdout.write(json.dumps({"diff": diff}) + "\n")
        sys.stdout.flush()


# ---------------------------------------------------------------------------
# the campaign


@dataclasses.dataclass
class Figures:
    mutations: int = 0
    rejected: int = 0
    accepted: int = 0
    accepted_applied: int = 0            # rewritten (guards off) and run
    accepted_unbuildable: int = 0        # the rewrite could not map it even without guards
    accepted_guarded_refusal: int = 0    # the guarded rewrite refuses it too
    accepted_and_wrong: int = 0
    distinct_applied: int = 0            # distinct rewritten executables run
    kinds: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    rejected_by_kind: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    reasons: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    wrong: list = dataclasses.field(default_factory=list)
    seconds: float = 0.0


def _reason_class(message: str) -> str:
    """A rejection message without its names and numbers (for counting)."""
    import re
    text = re.sub(r"\{[^}]*\}", "", message)
    text = re.sub(r"[\w.\-]+\.\d+|\d+", "#", text)
    return text[:110]


def check_base(base: Base, runner: Runner) -> None:
    """A base plan must pass the checker and run right, or the fuzz measures nothing."""
    from olla_jax import check
    plain = Mutant(list(base.layout.order), dict(base.layout.places),
                   dict(base.layout.allocation_sizes), list(base.layout.recomputes), [])
    cap = base.capture
    check.check_plan(cap.hlo_proto, cap.values_text, cap.live_range_text, candidate(base, plain),
                     alignment=base.graph.alignment)
    diff = runner.run(rewrite(base, plain, guards=True))
    if diff:
        raise RuntimeError(f"a base plan does not run right: {diff}")


def campaign(bases: Sequence[Base], mutations: int, seed: int = 0,
             progress: Callable[[str], None] | None = None) -> Figures:
    """Mutate, check, and apply and run every accepted mutant; mutation ``k``
    starts from ``bases[k % len(bases)]``, and each base sees every kind in turn."""
    from olla_jax import check
    rng = random.Random(seed)
    figures = Figures()
    runners = [Runner(b.capture.executable) for b in bases]
    seen: dict[str, str] = {}
    start = time.monotonic()
    try:
        for base, runner in zip(bases, runners):
            check_base(base, runner)
        for k in range(mutations):
            base, runner = bases[k % len(bases)], runners[k % len(bases)]
            cap = base.capture
            def accepts(m, base=base, cap=cap):
                try:
                    check.check_plan(cap.hlo_proto, cap.values_text, cap.live_range_text,
                                     candidate(base, m), alignment=base.graph.alignment)
                    return True
                except check.PlanRejected:
                    return False

            m = mutate(base, rng, KINDS[(k // len(bases)) % len(KINDS)], accepts)
            figures.mutations += 1
            figures.kinds.update(set(m.kinds))
            try:
                check.check_plan(cap.hlo_proto, cap.values_text, cap.live_range_text,
                                 candidate(base, m), alignment=base.graph.alignment)
            except check.PlanRejected as err:
                figures.rejected += 1
                figures.rejected_by_kind.update(set(m.kinds))
                figures.reasons[_reason_class(str(err))] += 1
                continue
            figures.accepted += 1
            try:
                raw = rewrite(base, m, guards=False)
            except Exception as err:  # noqa: BLE001 - counted with its reason
                figures.accepted_unbuildable += 1
                figures.reasons["(accepted) rewrite cannot map: " + _reason_class(str(err))] += 1
                continue
            try:
                rewrite(base, m, guards=True)
            except Exception as err:  # noqa: BLE001 - counted with its reason
                figures.accepted_guarded_refusal += 1
                figures.reasons["(accepted) the guarded rewrite refuses: "
                                + _reason_class(str(err))] += 1
            key = hashlib.sha256(raw).hexdigest()
            if key not in seen:
                seen[key] = runner.run(raw)
            figures.accepted_applied += 1
            if seen[key]:
                figures.accepted_and_wrong += 1
                figures.wrong.append({"mutation": k, "base": k % len(bases), "kinds": m.kinds,
                                      "diff": seen[key]})
            if progress and (k + 1) % 500 == 0:
                progress(f"{k + 1} mutations, {figures.accepted} accepted, "
                         f"{figures.accepted_and_wrong} wrong")
    finally:
        for runner in runners:
            runner.close()
    figures.seconds = time.monotonic() - start
    figures.distinct_applied = len(seen)
    return figures


def summary(figures: Figures, command: str) -> str:
    lines = [f"command: {command}",
             f"mutations: {figures.mutations}",
             f"rejected by the checker: {figures.rejected}",
             f"accepted by the checker: {figures.accepted}",
             f"  applied (rewrite with its guards off) and run: {figures.accepted_applied} "
             f"({figures.distinct_applied} distinct executables)",
             f"  the rewrite could not map them even without guards: {figures.accepted_unbuildable}",
             f"  the guarded rewrite would refuse them too: {figures.accepted_guarded_refusal}",
             f"ACCEPTED AND WRONG: {figures.accepted_and_wrong}",
             f"seconds: {figures.seconds:.1f}",
             "mutation kinds (mutants containing the kind / rejected):"]
    for kind in KINDS:
        lines.append(f"  {kind:18s} {figures.kinds[kind]:6d} / {figures.rejected_by_kind[kind]:6d}")
    lines.append("most common rejection reasons:")
    rejections = [(r, n) for r, n in figures.reasons.most_common() if not r.startswith("(accepted)")]
    for reason, n in rejections[:25]:
        lines.append(f"  {n:6d}  {reason}")
    lines.append("accepted plans the rewrite refuses (not run, or run with its guards off):")
    for reason, n in figures.reasons.most_common():
        if reason.startswith("(accepted)"):
            lines.append(f"  {n:6d}  {reason[len('(accepted) '):]}")
    for w in figures.wrong[:20]:
        lines.append(f"WRONG: {w}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mutations", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--time-limit", type=float, default=1.0, help="solver time for the base plan")
    parser.add_argument("--out", default="", help="write FOLDER/summary.txt and FOLDER/figures.json")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return _worker()
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    command = (f"{COMMAND} --mutations={args.mutations} --seed={args.seed}"
               + (f" --out={args.out}" if args.out else ""))
    bases = [base_plan(args.time_limit), donated_base()]
    figures = campaign(bases, args.mutations, args.seed, progress=lambda s: print(s, flush=True))
    text = summary(figures, command)
    print(text)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "summary.txt").write_text(text + "\n")
        data = {f.name: getattr(figures, f.name) for f in dataclasses.fields(figures)}
        data = {k: dict(v) if isinstance(v, collections.Counter) else v for k, v in data.items()}
        data["command"] = command
        (out / "figures.json").write_text(json.dumps(data, indent=1, default=str) + "\n")
    return 1 if figures.accepted_and_wrong else 0


if __name__ == "__main__":
    sys.exit(main())
