"""Host offloading as a third lever (issue 20.4): park values idle over a long
stretch in host memory, on a compile-only GPU target.

What is reachable from jax 0.10.2 (``benchmarks/offload_reach.py``): a
``jax.device_put(x, jax.memory.Space.Host)`` inside jit lowers to XLA's
``MoveToHost`` annotation and XLA:GPU's host offloader turns it into a copy to
memory space ``S(5)``; but when nothing holds the move to host apart from the
move back, XLA's algebraic simplifier folds ``copy(copy(x))`` away and nothing
is offloaded.  Here each move is tied with ``jax.lax.optimization_barrier``:
the copy to host to the outputs of the instruction that starts the idle
stretch; the copy back to the deepest value ready just before the instruction
that ends it (the anchor), and the anchor to that instruction's outputs, so
that XLA neither starts the copy back early nor defers the reader (it defers
a weight gradient's matmul to the end of the backward pass).
XLA:CPU lowers no host transfer at all (jax drops the memory kinds there).
``olla_jax.plan`` takes the offloaded step (``OffloadResult.fn``): it orders
and places the device temp; XLA's second temp allocation, in host memory
(``S(5)``), stays where XLA put it (``graph.model``: memory spaces).

The lever: the step is traced to a jaxpr; each value computed in it whose uses
leave a long gap (in the jaxpr's own order, top-level equations) is a
candidate, ranked by bytes x gap.  By default (``pick="xla"``) only values XLA
keeps in a buffer of its own are candidates: the step is compiled once with
each equation under a named scope, and the optimized module's op_name
metadata maps its buffers back to jaxpr variables (``materialized_names``);
readers XLA fuses into their consumers (a ReLU, its mask) are computed again
from the copy back (``IdleValue.rederive``), and the barriers hold only kept
values.  The step is evaluated again with the moves inserted for the top
candidates, re-jitted and captured with ``olla_jax.capture`` with XLA's
latency-hiding scheduler off (``NO_LATENCY_HIDING``: with it a single copy
reordered the whole step and raised its temp); growing sets of candidates are
tried until the device temp meets ``budget`` (or all are in).
Compile-only: built, not run (no GPU here), so nothing says how long the copies
take or whether the results match bit for bit.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
from typing import Any, Callable, Sequence

import jax
import numpy as np
from jax.extend import core as jex

from olla_jax import flops as flops_lib
from olla_jax import jax_compat, jaxpr_walk
from olla_jax.capture import record
from olla_jax.capture.base import Backend
from olla_jax.errors import OllaJaxError
from olla_jax.sizes import parse_size

# Values smaller than this are not worth a transfer (and keep the candidate list short).
MIN_BYTES = 64 * 1024
# Candidates are values made by, or read at the end of their idle stretch by, one of
# these: XLA materializes a matmul's output and operands in memory, while it fuses an
# elementwise value into its readers (recomputing it there), so parking one of those
# forces into memory what was never there (on lm_adamw, the GELU's intermediates: the
# device temp grew, benchmarks/results/offload_reach.md).
MATMULS = frozenset({"dot_general", "conv_general_dilated"})
# Candidate sets tried: the top 1, 2, 4, ... up to all of them.
GROWTH = 2
# With XLA:GPU's default options one copy to host changed the order of the whole
# step (mlp:small: other layers' weight gradients deferred into the copy's window,
# the values they read live longer) and raised the device temp; with these options
# one value parked lowered it by about its size and the step without copies kept
# its temp (benchmarks/README.md, "Host offloading: why one parked value raised
# the device temp"; python -m benchmarks.offload_why).
NO_LATENCY_HIDING = {"xla_gpu_enable_latency_hiding_scheduler": False,
                     "xla_gpu_enable_analytical_sol_latency_estimator": False}


class OffloadError(OllaJaxError, ValueError):
    """Host offloading cannot be set up for this step or backend."""


@dataclasses.dataclass(frozen=True)
class IdleValue:
    """A value of the step's jaxpr idle between two top-level equations."""
    name: str          # "e<equation>.<output>: <primitive>", unique in one trace
    shape: tuple[int, ...]
    dtype: str
    nbytes: int
    defined_at: int    # equation that computes it
    park_after: int    # equation after which it is idle (its definition or a use)
    back_before: int   # equation that reads it next (the end of the idle stretch)
    # Equations re-run on the copy back, before ``back_before``: the values XLA
    # derives from this one inside its fusions (a ReLU, its mask), read again
    # after the stretch (``idle_values`` with ``materialized``).
    rederive: tuple[int, ...] = ()

    @property
    def gap(self) -> int:
        """Equations between the start and the end of the idle stretch."""
        return self.back_before - self.park_after - 1

    @property
    def score(self) -> int:
        return self.nbytes * self.gap


@dataclasses.dataclass(frozen=True)
class Transfers:
    """Host transfers in a compiled GPU module (its optimized HLO text)."""
    to_host: int        # copies into memory space S(5)
    to_device: int      # copies out of it
    to_host_bytes: int
    to_device_bytes: int
    host_shapes: int    # shapes in S(5) anywhere in the module


@dataclasses.dataclass(frozen=True)
class OffloadResult:
    """The step with host offloading, captured for ``backend`` (built, not run)."""
    backend: str
    xla_temp: int                 # XLA's device temp for the step as given
    temp: int                     # device temp with the chosen values offloaded
    host_temp: int                # XLA's host temp (memory_analysis) with them offloaded
    transfers: Transfers
    chosen: tuple[IdleValue, ...]
    tried: tuple[tuple[int, int], ...]   # (values offloaded, device temp) per capture
    budget: int | None
    met: bool | None              # None without a budget
    capture: Any = dataclasses.field(repr=False, compare=False)   # olla_jax Capture
    fn: Any = dataclasses.field(repr=False, compare=False)        # the rewritten step
    # XLA's options for the offloaded step's compiles (the caller's, and
    # NO_LATENCY_HIDING unless offload(latency_hiding=True)); a plan of ``fn``
    # compiles it with them
    compiler_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    # XLA's device temp for the step without copies under ``compiler_options``
    # (None where not compiled): what the options alone do to it
    options_temp: int | None = None
    # FLOPs of XLA's offloaded program less those of the step as given (olla_jax.flops;
    # None where not counted): the readers derived again from a copy back, and
    # whatever XLA's fusions of the rewritten program do differently (it can be
    # negative); ``extra_flops`` is the part above zero
    flops_delta: int | None = None

    @property
    def extra_flops(self) -> int:
        """Extra FLOPs of the offloaded step (0 where it has fewer or they were
        not counted), counted as those of XLA's rematerialized programs are."""
        return max(0, self.flops_delta or 0)

    def summary(self) -> str:
        mib = 2 ** 20
        t = self.transfers
        head = (f"host offloading on {self.backend} (compile-only: built, not run): device temp "
                f"{self.temp / mib:,.2f} MiB against XLA's {self.xla_temp / mib:,.2f} MiB, "
                f"{len(self.chosen)} value(s) parked, host temp {self.host_temp / mib:,.2f} MiB, "
                f"{t.to_host} cop(ies) to host ({t.to_host_bytes / mib:,.2f} MiB) and "
                f"{t.to_device} back ({t.to_device_bytes / mib:,.2f} MiB)")
        if self.flops_delta is not None:
            head += f", {self.flops_delta:+,} FLOPs against the step as given"
        if self.budget is not None:
            head += (f"; budget {self.budget / mib:,.2f} MiB "
                     + ("met" if self.met else "not met"))
        return head


# --- the jaxpr view: which values are idle longest -------------------------------

@dataclasses.dataclass(frozen=True)
class Traced:
    """A step's jaxpr and the pytree of its outputs (shapes)."""
    closed: Any       # jax.extend.core.ClosedJaxpr
    out_shape: Any


def trace(fn: Callable, args: Sequence[Any], static_argnums: Sequence[int] = ()) -> Traced:
    """``fn(*args)`` traced to a jaxpr (arguments may be ShapeDtypeStructs)."""
    try:
        closed, out_shape = jax.make_jaxpr(fn, static_argnums=tuple(static_argnums),
                                           return_shape=True)(*args)
        return Traced(closed, out_shape)
    except Exception as err:  # noqa: BLE001 - the user's step failed to trace
        raise OffloadError(f"the step could not be traced to a jaxpr for offloading: "
                           f"{type(err).__name__}: {err}") from err


def idle_values(closed, *, min_bytes: int = MIN_BYTES,
                kinds: frozenset[str] | None = MATMULS) -> tuple[IdleValue, ...]:
    """Values computed by ``closed``'s top-level equations, with their longest
    idle stretch, best candidates (bytes x gap) first; with ``kinds``, only
    values made by such a primitive or read by one where the stretch ends."""
    jaxpr = closed.jaxpr
    defined: dict[Any, int] = {}
    uses: dict[Any, list[int]] = {}
    for i, eqn in enumerate(jaxpr.eqns):
        for v in eqn.invars:
            if isinstance(v, jex.Var) and v in defined:
                uses.setdefault(v, []).append(i)
        for v in eqn.outvars:
            if not isinstance(v, jex.DropVar):
                defined[v] = i
    names = jaxpr_walk.names(jaxpr)
    found = []
    for v, at in defined.items():
        aval = v.aval
        if not hasattr(aval, "shape") or not hasattr(aval, "dtype"):
            continue
        nbytes = int(np.prod(aval.shape, dtype=np.int64)) * np.dtype(aval.dtype).itemsize
        reads = sorted(set(uses.get(v, [])))
        if nbytes < min_bytes or not reads:
            continue   # small, or only an output (the executable's output, not temp)
        points = [at, *reads]
        start, stop = max(zip(points, points[1:]), key=lambda p: p[1] - p[0])
        if stop - start < 2:
            continue
        if kinds is not None and not (jaxpr.eqns[at].primitive.name in kinds
                                      or jaxpr.eqns[stop].primitive.name in kinds):
            continue
        found.append(IdleValue(name=names[v], shape=tuple(int(d) for d in aval.shape),
                               dtype=str(aval.dtype), nbytes=nbytes, defined_at=at,
                               park_after=start, back_before=stop))
    return tuple(sorted(found, key=lambda c: (-c.score, c.defined_at, c.name)))


def materialized_idle_values(closed, materialized: frozenset[str], *,
                             min_bytes: int = MIN_BYTES) -> tuple[IdleValue, ...]:
    """Like ``idle_values``, but only values XLA keeps in a buffer of its own
    (``materialized``: names from ``materialized_names`` of the step as given).

    Parking a value XLA fuses away (a ReLU's output, recomputed inside each
    reader from the matmul's output) makes XLA materialize it to copy it, while
    the buffer XLA does keep stays live for the other readers (the ReLU's mask):
    the device temp grows.  Here the value XLA keeps is parked instead, and the
    values derived from it through fused, same-shaped equations whose other
    inputs are small or the step's own (``rederive``) are computed again from
    its copy back, as XLA's fusions did from the original."""
    jaxpr = closed.jaxpr
    names = jaxpr_walk.names(jaxpr)
    step_inputs = set(jaxpr.invars) | set(jaxpr.constvars)
    defined: dict[Any, int] = {}
    for i, eqn in enumerate(jaxpr.eqns):
        for v in eqn.outvars:
            if not isinstance(v, jex.DropVar):
                defined[v] = i
    found = []
    readers: dict[Any, set[int]] = {}
    for i, eqn in enumerate(jaxpr.eqns):
        for u in eqn.invars:
            if isinstance(u, jex.Var):
                readers.setdefault(u, set()).add(i)

    def epilogue(m) -> Any:
        """``m``'s sole reader's output where that reader is a same-shaped
        equation XLA fused into ``m``'s producer (a bias add into the matmul or
        convolution: the buffer XLA keeps holds it, under the producer's name)."""
        (j,) = readers.get(m, {-1}) if len(readers.get(m, ())) == 1 else (-1,)
        if j < 0 or m in outs_of_step:
            return None
        eqn = jaxpr.eqns[j]
        outs = [u for u in eqn.outvars if not isinstance(u, jex.DropVar)]
        ins = [u for u in eqn.invars if isinstance(u, jex.Var) and u is not m]
        if (len(outs) == 1 and names[outs[0]] not in materialized
                and getattr(outs[0].aval, "shape", None) == m.aval.shape
                and all(u in step_inputs or jaxpr_walk.nbytes(u) < min_bytes for u in ins)):
            return outs[0]
        return None

    outs_of_step = {u for u in jaxpr.outvars if isinstance(u, jex.Var)}
    for m, at in list(defined.items()):
        nbytes = jaxpr_walk.nbytes(m)
        if nbytes < min_bytes or names[m] not in materialized:
            continue
        while (after := epilogue(m)) is not None:
            m, at = after, defined[after]
        group, chain, consumers = {m}, [], set()
        # walk forward: an equation reading the group joins the chain when XLA
        # fused all its outputs (same shape as m) and its other inputs are cheap
        for j in range(at + 1, len(jaxpr.eqns)):
            eqn = jaxpr.eqns[j]
            ins = [u for u in eqn.invars if isinstance(u, jex.Var)]
            if not any(u in group for u in ins):
                continue
            outs = [u for u in eqn.outvars if not isinstance(u, jex.DropVar)]
            fused = bool(outs) and all(
                names[u] not in materialized and getattr(u.aval, "shape", None) == m.aval.shape
                for u in outs)
            cheap = all(u in group or u in step_inputs or jaxpr_walk.nbytes(u) < min_bytes for u in ins)
            if fused and cheap:
                chain.append(j)
                group.update(outs)
            else:
                consumers.add(j)
        if not consumers:
            continue   # only an output of the step (not temp)
        points = sorted({at, *chain, *consumers})
        start, stop = max(zip(points, points[1:]), key=lambda p: p[1] - p[0])
        if stop - start < 2:
            continue
        found.append(IdleValue(name=names[m], shape=tuple(int(d) for d in m.aval.shape),
                               dtype=str(m.aval.dtype), nbytes=nbytes, defined_at=at,
                               park_after=start, back_before=stop,
                               rederive=tuple(j for j in chain if j <= start)))
    return tuple(sorted(found, key=lambda c: (-c.score, c.defined_at, c.name)))


_OP_NAME = re.compile(r'op_name="[^"]*?' + r'olla_e(\d+)/')
_ENTRY_VALUE = re.compile(r"^\s*(?:ROOT\s+)?%[\w.\-]+\s*=\s*(\((?:[^()]|\(\d+\))*\)|\S+)\s+([\w\-]+)\(")
SCOPE = "olla_e{}"


def materialized_names(hlo_text: str, closed) -> frozenset[str]:
    """Names (``jaxpr_walk.names``) of the top-level values of ``closed`` that XLA keeps
    in a buffer: an instruction of the optimized module's entry computation
    whose op_name carries the equation's scope (``SCOPE``, from evaluating the
    jaxpr with ``scoped=True``) and whose result (or one of a tuple's) has the
    value's element count.  Fusions take their root's op_name, so a value XLA
    fuses into its readers has no instruction of its own."""
    jaxpr = closed.jaxpr
    entry = hlo_text[hlo_text.find("\nENTRY"):] if "\nENTRY" in hlo_text else hlo_text
    buffers: dict[tuple[int, int], int] = {}    # (equation, element count) -> buffers
    for line in entry.splitlines():
        m, v = _OP_NAME.search(line), _ENTRY_VALUE.match(line)
        if not (m and v) or v.group(2) in ("parameter", "get-tuple-element", "tuple"):
            continue
        for _, dims, _ in _ARRAY.findall(v.group(1)):
            key = (int(m.group(1)), int(np.prod([int(d) for d in dims.split(",") if d],
                                                dtype=np.int64)))
            buffers[key] = buffers.get(key, 0) + 1
    found = set()
    for i, eqn in enumerate(jaxpr.eqns):
        by_count: dict[int, list[int]] = {}
        for k, u in enumerate(eqn.outvars):
            shape = getattr(getattr(u, "aval", None), "shape", None)
            if not isinstance(u, jex.DropVar) and shape is not None:
                by_count.setdefault(int(np.prod(shape, dtype=np.int64)), []).append(k)
        for count, ks in by_count.items():
            # fewer buffers than same-sized outputs: which ones XLA keeps is not
            # known (a SiLU's three outputs, one kept): none is taken as kept
            if buffers.get((i, count), 0) >= len(ks):
                found.update(f"e{i}.{k}: {eqn.primitive.name}" for k in ks)
    return frozenset(found)


# --- the rewrite: evaluate the jaxpr with the moves in ----------------------------

def _barrier(values: list[Any]) -> list[Any]:
    return list(jax.lax.optimization_barrier(tuple(values))) if len(values) > 1 else values


def _tie_at(jaxpr, start: int, stop: int, kept: Callable[[Any], bool]) -> tuple[int, list[Any]]:
    """The first equation from ``start`` (before ``stop``) with outputs XLA keeps,
    and those outputs: what a copy to host is tied to (``start``'s own outputs
    when it has any kept)."""
    for i in range(start, stop):
        outs = [u for u in jaxpr.eqns[i].outvars if not isinstance(u, jex.DropVar) and kept(u)]
        if outs:
            return i, outs
    return start, [u for u in jaxpr.eqns[start].outvars if not isinstance(u, jex.DropVar)]


def _evaluate(closed, flat_args: Sequence[Any], parked: Sequence[IdleValue],
              tie: bool = True, move: bool = True, *,
              materialized: frozenset[str] | None = None, scoped: bool = False) -> list[Any]:
    """``closed`` on ``flat_args`` with each of ``parked`` copied to host after
    its ``park_after`` equation and back before its ``back_before`` one (its
    ``rederive`` equations run again on the copy back);
    ``tie=False`` leaves out the barriers (XLA then folds the moves away),
    ``move=False`` the copies (the barriers alone: a control).  With
    ``materialized`` (``materialized_names``), the barriers hold only values XLA
    keeps in buffers anyway.  ``scoped``: each equation under a named scope
    (``SCOPE``) that XLA's op_name metadata keeps (``materialized_names``)."""
    jaxpr = closed.jaxpr
    barrier = _barrier if tie else (lambda values: values)
    names = jaxpr_walk.names(jaxpr)

    def kept(u) -> bool:
        return materialized is None or names.get(u) in materialized

    by_name = {c.name: c for c in parked}
    park_at: dict[int, list[Any]] = {}
    back_at: dict[int, list[tuple[Any, IdleValue]]] = {}
    tie_to: dict[Any, list[Any]] = {}
    for v, name in names.items():
        c = by_name.get(name)
        if c is not None:
            at, tie_to[v] = ((c.park_after, []) if materialized is None
                             else _tie_at(jaxpr, c.park_after, c.back_before, kept))
            park_at.setdefault(at, []).append(v)
            back_at.setdefault(c.back_before, []).append((v, c))
    env = jaxpr_walk.seed(closed, flat_args)
    host: dict[Any, Any] = {}
    depth = jaxpr_walk.depths(jaxpr)

    def read(v):
        return jaxpr_walk.read(env, v)

    def bind(i: int) -> None:
        eqn = jaxpr.eqns[i]
        scope = jax.named_scope(SCOPE.format(i)) if scoped else contextlib.nullcontext()
        with scope:
            outs = jax_compat.bind_equation(eqn, [read(v) for v in eqn.invars])
        for v, x in zip(eqn.outvars, outs):
            if not isinstance(v, jex.DropVar):
                env[v] = x

    for i, eqn in enumerate(jaxpr.eqns):
        anchors: list[Any] = []
        for v, c in back_at.get(i, []):
            # (a fence, the copy back waiting for every kept value computed before
            # it, undid the latency-hiding scheduler's reordering on mlp:small, but
            # without that scheduler it only raised the peak: densenet:small)
            others = jaxpr_walk.latest(jaxpr, i, v, depth, env, kept)
            anchors += others
            tied = barrier([host.pop(v), *(env[u] for u in others)])
            for u, x in zip(others, tied[1:]):
                env[u] = x
            env[v] = jax.device_put(tied[0], jax.memory.Space.Device) if move else tied[0]
            for j in c.rederive:
                bind(j)
        bind(i)
        made = [u for u in eqn.outvars if not isinstance(u, jex.DropVar) and kept(u)]
        if tie and anchors and made:
            # The reader runs where the jaxpr has it: the anchor (on the critical
            # path) waits for its outputs.  Else XLA defers it (a weight gradient's
            # matmul, to the end of the backward pass) and the value copied back
            # stays on the device all that time.
            anchors = list(dict.fromkeys(anchors))
            tied = _barrier([*(env[u] for u in made), *(env[u] for u in anchors)])
            for u, x in zip([*made, *anchors], tied):
                env[u] = x
        for v in park_at.get(i, []):
            live = tie_to[v] or [u for u in eqn.outvars if not isinstance(u, jex.DropVar)] or [v]
            tied = barrier([jax.device_put(env[v], jax.memory.Space.Host) if move else env[v],
                            *(env[u] for u in live)])
            for u, x in zip(live, tied[1:]):
                env[u] = x
            host[v] = tied[0]
    return [read(v) for v in jaxpr.outvars]


def rewrite(fn: Callable, args: Sequence[Any], parked: Sequence[IdleValue], *,
            static_argnums: Sequence[int] = (), traced: Traced | None = None,
            tie: bool = True, move: bool = True,
            materialized: frozenset[str] | None = None, scoped: bool = False) -> Callable:
    """``fn`` (same arguments, same outputs) with ``parked`` moved to host memory
    over their idle stretches; ``parked`` come from ``idle_values`` (or
    ``materialized_idle_values``) of this step's jaxpr (the names are its
    variables); ``materialized`` and ``scoped`` as in ``_evaluate``."""
    traced = traced or trace(fn, args, static_argnums)
    closed = traced.closed
    static = set(static_argnums)
    out_tree = jax.tree.structure(traced.out_shape)

    def offloaded(*call_args):
        dynamic = [a for i, a in enumerate(call_args) if i not in static]
        outs = _evaluate(closed, jax.tree.leaves(dynamic), parked, tie, move,
                         materialized=materialized, scoped=scoped)
        return jax.tree.unflatten(out_tree, outs)

    offloaded.__name__ = getattr(fn, "__name__", "step") + "_offloaded"
    return offloaded


# --- what the compiled module moves ------------------------------------------------

_DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "bf16": 2, "f16": 2, "s16": 2, "u16": 2,
                "f32": 4, "s32": 4, "u32": 4, "f64": 8, "s64": 8, "u64": 8, "c64": 8,
                "c128": 16, "f8e4m3fn": 1, "f8e5m2": 1}
_ARRAY = re.compile(r"([a-z0-9]+)\[([0-9,]*)\]\{([^}]*)\}")
_COPY_START = re.compile(r"=\s*\((.*?)\)\s+copy-start\(")
_COPY = re.compile(r"=\s*(\S+\[[0-9,]*\]\{[^}]*\})\s+copy\(%([\w.\-]+)\)")
_DEFINES = re.compile(r"%([\w.\-]+)\s*=\s*(\S+\[[0-9,]*\]\{[^}]*\})\s")


def _array_bytes(dtype: str, dims: str) -> int:
    n = int(np.prod([int(d) for d in dims.split(",") if d], dtype=np.int64))
    return n * _DTYPE_BYTES.get(dtype, 4)


def transfers(hlo_text: str) -> Transfers:
    """Copies into and out of host memory space ``S(5)`` in an optimized module:
    ``copy-start`` (its result names destination then source) and plain ``copy``."""
    shapes = dict(_DEFINES.findall(hlo_text))
    counts = {"host": [0, 0], "device": [0, 0]}     # direction -> [copies, bytes]

    def count(dt: str, dims: str, dst: str, src: str) -> None:
        into_host = "S(5)" in dst
        if into_host != ("S(5)" in src):
            tally = counts["host" if into_host else "device"]
            tally[0] += 1
            tally[1] += _array_bytes(dt, dims)
    for line in hlo_text.splitlines():
        m = _COPY_START.search(line)
        if m:
            arrays = _ARRAY.findall(m.group(1))
            if len(arrays) >= 2:
                (dt, dims, dst), (_, _, src) = arrays[0], arrays[1]
                count(dt, dims, dst, src)
            continue
        m = _COPY.search(line)
        if m:
            dst_shape, operand = m.groups()
            (dt, dims, dst), = _ARRAY.findall(dst_shape)
            count(dt, dims, dst, shapes.get(operand, ""))
    return Transfers(to_host=counts["host"][0], to_device=counts["device"][0],
                     to_host_bytes=counts["host"][1], to_device_bytes=counts["device"][1],
                     host_shapes=len(re.findall(r"S\(5\)", hlo_text)))


def host_temp(compiled) -> int:
    """XLA's host temp bytes (0 where memory_analysis does not report it)."""
    stats = compiled.memory_analysis()
    return int(getattr(stats, "host_temp_size_in_bytes", 0) or 0) if stats is not None else 0


# --- the lever -------------------------------------------------------------------

def _flops_delta(base, cap) -> int | None:
    """FLOPs of ``cap``'s compiled step less ``base``'s (None where either
    cannot be counted)."""
    try:
        return flops_lib.compiled_flops(cap.compiled) - flops_lib.compiled_flops(base.compiled)
    except Exception:  # noqa: BLE001 - a report detail: left uncounted, said so
        return None


def _sizes(n: int) -> list[int]:
    sizes, k = [], 1
    while k < n:
        sizes.append(k)
        k *= GROWTH
    return sizes + [n] if n else []


def offload(fn: Callable, *args, backend: str | Backend = "gpu:h100", budget: int | None = None,
            static_argnums: Sequence[int] = (), donate_argnums: Sequence[int] = (),
            compiler_options: dict[str, Any] | None = None, max_values: int | None = None,
            min_bytes: int = MIN_BYTES,
            kinds: frozenset[str] | None = MATMULS, pick: str = "xla",
            latency_hiding: bool = False) -> OffloadResult:
    """``fn(*args)`` with its longest-idle values parked in host memory, captured
    for a compile-only GPU ``backend``: the top 1, 2, 4, ... candidates of
    ``idle_values`` until the device temp is at most ``budget`` bytes (without a
    budget: all of them, at most ``max_values``), keeping the least device temp,
    XLA's own step (nothing parked) included.  Built, not run.

    ``pick="xla"``: the candidates are the values XLA keeps in buffers of its
    own in the step as given (one more compile, with each equation's scope in
    the op_name metadata; ``materialized_idle_values``), and the barriers hold
    only such values; ``pick="jaxpr"``: any value of ``idle_values`` made or
    read by one of ``kinds`` (each parked value first raised the device temp:
    benchmarks/README.md, "Host offloading at XLA's remat points").
    ``latency_hiding=False``: the offloaded steps are compiled with
    ``NO_LATENCY_HIDING`` (``OffloadResult.compiler_options``)."""
    if pick not in ("xla", "jaxpr"):
        raise OffloadError(f"pick must be 'xla' or 'jaxpr', not {pick!r}")
    parsed = Backend.parse(backend)
    if not (parsed.kind == "gpu" and parsed.compile_only):
        raise OffloadError(f"host offloading is built for compile-only GPU targets such as "
                           f"'gpu:h100', not {parsed.name!r}: XLA:CPU lowers no host transfer "
                           "(see benchmarks/results/offload_reach.md)")
    if budget is not None and not (type(budget) is int and budget == 0):
        budget = parse_size(budget, "budget")   # "160MiB" as well; 0: park as much as helps
    kw = dict(backend=parsed, static_argnums=tuple(static_argnums),
              donate_argnums=tuple(donate_argnums), compiler_options=compiler_options)
    base = record.capture(fn, *args, **kw)
    off_options = {**(compiler_options or {}), **({} if latency_hiding else NO_LATENCY_HIDING)}
    kw_off = dict(kw, compiler_options=off_options)
    if budget is not None and base.memory.temp <= budget:
        return OffloadResult(backend=parsed.name, xla_temp=base.memory.temp,
                             temp=base.memory.temp, host_temp=host_temp(base.compiled),
                             transfers=transfers(base.hlo_text), chosen=(), tried=(),
                             budget=budget, met=True, capture=base, fn=fn,
                             compiler_options=dict(compiler_options or {}), flops_delta=0)
    traced = trace(fn, args, static_argnums)
    materialized, options_temp = None, None
    if pick == "xla":
        scoped = record.capture(rewrite(fn, args, (), static_argnums=static_argnums,
                                        traced=traced, scoped=True), *args, **kw_off)
        options_temp = scoped.memory.temp
        materialized = materialized_names(scoped.hlo_text, traced.closed)
        candidates = materialized_idle_values(traced.closed, materialized,
                                              min_bytes=min_bytes)[:max_values]
    else:
        candidates = idle_values(traced.closed, min_bytes=min_bytes, kinds=kinds)[:max_values]
    if not candidates:
        raise OffloadError(f"no value of the step is over {min_bytes} bytes and idle across "
                           "two or more equations: nothing to offload")
    # Never worse than XLA: offloading nothing is a candidate.
    best_k, best_cap, best_step = 0, base, fn
    tried = []
    for k in _sizes(len(candidates)):
        step = rewrite(fn, args, candidates[:k], static_argnums=static_argnums,
                       traced=traced, materialized=materialized)
        cap = record.capture(step, *args, **kw_off)
        tried.append((k, cap.memory.temp))
        if cap.memory.temp < best_cap.memory.temp:
            best_k, best_cap, best_step = k, cap, step
        if budget is not None and cap.memory.temp <= budget:
            break
    cap = best_cap
    return OffloadResult(
        backend=parsed.name, xla_temp=base.memory.temp, temp=cap.memory.temp,
        host_temp=host_temp(cap.compiled), transfers=transfers(cap.hlo_text),
        chosen=candidates[:best_k], tried=tuple(tried), budget=budget,
        met=None if budget is None else cap.memory.temp <= budget, capture=cap, fn=best_step,
        compiler_options=off_options if best_k else dict(compiler_options or {}),
        options_temp=options_temp, flops_delta=_flops_delta(base, cap) if best_k else 0)
