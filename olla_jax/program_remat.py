"""Recomputation in the program (issue 20): a long-idle value is dropped after its
early readers and computed again, from its producer equation, just before its
late reader; the step's jaxpr is rewritten and XLA compiles it (and fuses the
recomputation into the late reader's fusion where it can).

The kernel-thunk copies of ``olla_jax.budget`` copy kernels of XLA's executable:
on H100 a cheap elementwise value (bias, GELU, ReLU) often lives only in a
cuBLASLt/cuDNN epilogue, so copying it means copying the GEMM, and the copy
writes a buffer of its own.  Here the copy is made before XLA fuses.

Candidates are values XLA keeps in a buffer of its own (``offload.materialized_names``
of the step as given), with a long idle stretch in the jaxpr's order
(``offload.materialized_idle_values``), ordered by a greedy on the jaxpr's live
bytes: at each step the candidate idle across the peak with the most bytes
saved per estimated FLOP (``scan_remat.eqn_flops``, convolutions from shapes).
The recomputation is a chain: the producer, the producers of its inputs that are
not alive at the late reader anyway (alive: the step's inputs, or values XLA
keeps whose buffer something reads at or after it), up to ``MAX_CHAIN``
equations (an input beyond that is held: its bytes count against the saving),
and the fused values derived from the chain that are read late.
The chain's inputs go through ``lax.optimization_barrier`` together with a value
ready just before the late reader (``jaxpr_walk.latest``), so that XLA neither
CSEs the chain with the original nor hoists it early; the reader's outputs are
tied to that value as offloading ties them (else XLA may defer the reader).

The top 1, 2, 4, ... candidates are compiled for ``backend`` until XLA's temp
meets the budget, then the smallest prefix between the last two that meets it
(none meets: the smallest below the least-temp prefix that reaches its temp;
``prefix_search``);
the extra FLOPs are the compiled module's minus the step's (``olla_jax.flops``).
The chosen rewrite is compiled for CPU too, with XLA's CSE off (else XLA:CPU
merges the copies away), and its outputs compared bit for bit (in a child)
(``BitCheck``): against jax.jit's compile first; where that differs, a control (the
step unchanged with the same options against jax.jit's compile, once per step) says
whether CSE off alone changes the bits (it does on vit:small); then the rewrite is
compared with the step's own CSE-off compile (the same compiler and options: what
the recomputation changes), and the verdict says so, never "same" as jax.jit.
Values whose recomputation changes the bits are found by bisection and left out.
"""

from __future__ import annotations

import dataclasses
import re
import time
from typing import Any, Callable, Sequence

import jax
import numpy as np
from jax.extend import core as jex

from olla_jax import jax_compat, jaxpr_walk
from olla_jax.capture import record
from olla_jax.capture.base import Backend
from olla_jax.errors import OllaJaxError
from olla_jax.flops import compiled_flops
from olla_jax.offload import (MIN_BYTES, NO_LATENCY_HIDING, Traced, idle_values,
                              materialized_idle_values, materialized_names,
                              rewrite as offload_rewrite, trace)
from olla_jax.scan_remat import eqn_flops, sizes
from olla_jax.sizes import parse_size

# Equations recomputed for one value at most (its producer included); inputs of
# the chain's last equations beyond this are held alive to the late reader.
MAX_CHAIN = 16   # vit's tanh GELU from its kept pre-activation: 10
# A value idle over fewer equations than this is not a candidate.
MIN_GAP = 2
# Compiles spent narrowing the last doubling down to the smallest prefix that meets
# the budget (none meets: that reaches the least temp; ``prefix_search``), and rounds
# of leaving out values whose recomputation changed the bits.
REFINE_PROBES = 3
# XLA:CPU turns optimization barriers into control dependencies and its CSE then
# merges a recomputation with the original: the CPU compile that the bits are
# compared on disables this pass (a rewrite of 2 values in a 4-layer MLP: 7
# matmuls with it, 10 without).
CPU_KEEPS_COPIES = "cse"
CULPRIT_ROUNDS = 2


class ProgramRematError(OllaJaxError, ValueError):
    """Program recomputation cannot be set up for this step, budget or backend."""


@dataclasses.dataclass(frozen=True)
class Recomputation:
    """One value of the step's jaxpr dropped after its early readers and computed
    again just before its late reader."""
    name: str                   # jaxpr_walk.names: "e<equation>.<output>: <primitive>"
    shape: tuple[int, ...]
    dtype: str
    nbytes: int
    defined_at: int             # its producer equation
    idle_after: int             # the last early reader (or the producer)
    # (chain: the producer, producers of its inputs not alive at the late reader,
    # and the values XLA derives from it in its fusions that are read late)
    late_at: int                # the late reader: the chain runs just before it
    chain: tuple[int, ...]      # equations run again, in order (the producer last)
    held_bytes: int             # inputs of the chain kept alive to the late reader for it
    flops: int                  # the chain's FLOPs (jaxpr estimate)

    @property
    def saved(self) -> int:
        return self.nbytes - self.held_bytes

    @property
    def score(self) -> float:
        return self.saved / max(self.flops, 1)


@dataclasses.dataclass(frozen=True)
class ProgramRematResult:
    """The step with program recomputation, compiled for ``backend`` (a compile-only
    target is built, not run)."""
    backend: str
    xla_temp: int                   # XLA's temp for the step as given
    temp: int                       # XLA's temp for the rewritten step (xla_temp: none chosen)
    step_flops: int                 # the step's compiled FLOPs (olla_jax.flops)
    extra_flops: int                # the rewrite's compiled FLOPs minus step_flops
    estimated_flops: int            # the chosen chains' FLOPs by the jaxpr
    chosen: tuple[Recomputation, ...]
    candidates: int
    budget: int | None
    met: bool | None                # None without a budget
    # "same" (as jax.jit's), "same as the step compiled with CSE off; ..." (the
    # control differs: BitCheck), "differ: ...", "not compared[ (...)]"
    bits: str
    # (values, XLA's temp, extra FLOPs) per compile for backend, in compile order
    tried: tuple[tuple[int, int, int], ...]
    tried_sets: tuple[tuple[str, ...], ...]
    left_out: tuple[str, ...]       # values whose recomputation changed the bits
    seconds: float
    compare_seconds: float
    fn: Any = dataclasses.field(repr=False, compare=False)        # the rewritten step
    capture: Any = dataclasses.field(repr=False, compare=False)   # its capture for backend
    compiler_options: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def compared(self) -> bool:
        """Whether the chosen rewrite's outputs were compared (with jax.jit's, or
        with the step's own CSE-off compile where that differs: ``BitCheck``)."""
        return self.bits.startswith(("same", "differ"))

    def summary(self) -> str:
        mib = 2 ** 20
        head = (f"program recomputation on {self.backend}: XLA's temp "
                f"{self.temp / mib:,.2f} MiB against {self.xla_temp / mib:,.2f} as given, "
                f"{len(self.chosen)} of {self.candidates} value(s) recomputed, "
                f"+{self.extra_flops:,} FLOPs ({self.extra_flops / max(self.step_flops, 1):.3%}); "
                f"bits {self.bits}")
        if self.budget is not None:
            head += f"; budget {self.budget / mib:,.2f} MiB " + ("met" if self.met else "not met")
        return head


# --- candidates ------------------------------------------------------------------

def candidates(closed, materialized: frozenset[str] | None, *, min_bytes: int = MIN_BYTES,
               max_chain: int = MAX_CHAIN) -> tuple[Recomputation, ...]:
    """Long-idle values of ``closed``'s top-level equations with the chain that
    recomputes each before its late reader, best bytes saved per FLOP first.
    With ``materialized`` (``offload.materialized_names``): the values XLA keeps
    (``offload.materialized_idle_values``: their idle stretch ends at the first
    late reader of the value or of what XLA derives from it inside its fusions,
    a ReLU or its mask, which the chain derives again); None: any value
    (``offload.idle_values``)."""
    jaxpr = closed.jaxpr
    names = jaxpr_walk.names(jaxpr)
    var_of = {name: v for v, name in names.items()}
    kept = (lambda u: True) if materialized is None else (lambda u: names.get(u) in materialized)
    step_inputs = set(jaxpr.invars) | set(jaxpr.constvars)
    outputs = {u for u in jaxpr.outvars if isinstance(u, jex.Var)}
    defined: dict[Any, int] = {}
    reads: dict[Any, list[int]] = {}
    for i, eqn in enumerate(jaxpr.eqns):
        for u in eqn.invars:
            if isinstance(u, jex.Var):
                reads.setdefault(u, []).append(i)
        for u in eqn.outvars:
            if not isinstance(u, jex.DropVar):
                defined[u] = i
    last: dict[Any, int] = {}

    def last_read(u) -> int:
        """The last equation that reads ``u``'s buffer: a reader of ``u``, or of a
        value XLA derives from it inside its fusions (one it keeps no buffer for)."""
        if u not in last:
            seen, todo, at = {u}, [u], -1
            while todo:
                for j in reads.get(todo.pop(), ()):
                    at = max(at, j)
                    for w in jaxpr.eqns[j].outvars:
                        if not isinstance(w, jex.DropVar) and not kept(w) and w not in seen:
                            seen.add(w)
                            todo.append(w)
            last[u] = at
        return last[u]

    idle = (idle_values(closed, min_bytes=min_bytes, kinds=None) if materialized is None
            else materialized_idle_values(closed, materialized, min_bytes=min_bytes))
    found = []
    for iv in idle:
        at, stop = iv.defined_at, iv.back_before
        if stop - iv.park_after - 1 < MIN_GAP - 1 or jaxpr.eqns[at].effects:
            continue

        # a kept value read by the producer alone is the candidate's own buffer (a
        # GEMM's output its bias add is fused into: offload's epilogue walk)
        own = {u for u in jaxpr.eqns[at].invars
               if isinstance(u, jex.Var) and kept(u) and set(reads.get(u, ())) == {at}}

        def alive(u, stop=stop, own=own) -> bool:
            return u in step_inputs or (kept(u) and u not in own
                                        and (u in outputs or last_read(u) >= stop))
        chain, held, todo = {at}, set(), [at]
        while todo:
            for u in jaxpr.eqns[todo.pop()].invars:
                if not isinstance(u, jex.Var) or alive(u) or u in held:
                    continue
                p = defined[u]
                if p in chain:
                    continue
                if len(chain) < max_chain and not jaxpr.eqns[p].effects:
                    chain.add(p)
                    todo.append(p)
                else:
                    held.add(u)
        held_bytes = sum(jaxpr_walk.nbytes(u) for u in held)
        if held_bytes >= iv.nbytes or var_of[iv.name] in outputs:
            continue
        chain.update(iv.rederive)
        chain.update(_derived(jaxpr, chain, alive, kept, reads, stop))
        found.append((Recomputation(
            name=iv.name, shape=iv.shape, dtype=iv.dtype, nbytes=iv.nbytes, defined_at=at,
            idle_after=iv.park_after, late_at=stop, chain=tuple(sorted(chain)),
            held_bytes=held_bytes, flops=sum(_eqn_flops(jaxpr.eqns[j]) for j in chain)),
            [(jaxpr_walk.nbytes(u), last_read(u)) for u in held]))
    found.sort(key=lambda f: (-f[0].score, -f[0].saved, f[0].defined_at, f[0].name))
    # the live bytes of the values XLA keeps, in the jaxpr's order (outputs and the
    # step's inputs are not temp)
    live = np.zeros(len(jaxpr.eqns) + 1)
    for u, i in defined.items():
        if kept(u) and u not in outputs and last_read(u) >= i:
            live[i] += jaxpr_walk.nbytes(u)
            live[last_read(u) + 1] -= jaxpr_walk.nbytes(u)
    return _at_the_peak(np.cumsum(live)[:-1], found)


def _derived(jaxpr, chain: set[int], alive: Callable[[Any], bool], kept: Callable[[Any], bool],
             reads: dict[Any, list[int]], stop: int) -> set[int]:
    """Equations before ``stop`` outside ``chain`` that XLA fuses (it keeps none of
    their outputs), computable from the chain's outputs and values alive at
    ``stop``, whose outputs are read at or after ``stop`` (or feed such ones): a
    GELU's derivative reads 1 - tanh and 3x^2 that its forward chain does not
    make; left to the original, XLA keeps the tanh across the peak for them."""
    made = {u for j in chain for u in jaxpr.eqns[j].outvars}
    derivable: dict[int, Any] = {}
    for j in range(min(chain), stop):
        eqn = jaxpr.eqns[j]
        if j in chain or eqn.effects or any(True for _ in jaxpr_walk.sub_jaxprs(eqn)):
            continue
        ins = [u for u in eqn.invars if isinstance(u, jex.Var)]
        outs = [u for u in eqn.outvars if not isinstance(u, jex.DropVar)]
        if (outs and ins and not any(kept(u) for u in outs) and any(u in made for u in ins)
                and all(u in made or alive(u) for u in ins)):
            derivable[j] = eqn
            made.update(outs)
    needed = {j for j, eqn in derivable.items()
              if any(r >= stop for u in eqn.outvars for r in reads.get(u, ()))}
    todo = list(needed)
    producer = {u: j for j, eqn in derivable.items() for u in eqn.outvars}
    while todo:
        for u in jaxpr.eqns[todo.pop()].invars:
            j = producer.get(u) if isinstance(u, jex.Var) else None
            if j is not None and j not in needed:
                needed.add(j)
                todo.append(j)
    return needed


def _at_the_peak(live: np.ndarray, found: list) -> tuple[Recomputation, ...]:
    """``found`` (candidate, [(held bytes, last read)]) in the order a greedy picks
    them on the jaxpr's live-bytes profile ``live``: at each step the candidate
    idle across the peak with the most bytes saved per FLOP, the profile updated
    (its bytes gone over its idle stretch, held inputs' kept to the late reader);
    then those never idle across the peak, best bytes per FLOP first."""
    live, left, order = live.copy(), list(found), []
    while left:
        peak = int(np.argmax(live))
        over = [f for f in left if f[0].idle_after < peak < f[0].late_at]
        if not over:
            break
        c, held = over[0]        # ``left`` keeps the best-score-first order
        live[c.idle_after + 1:c.late_at] -= c.nbytes
        for nbytes, last in held:
            live[last + 1:c.late_at + 1] += nbytes
        order.append(c)
        left.remove((c, held))
    return tuple(order) + tuple(c for c, _ in left)


def _eqn_flops(eqn) -> int:
    """``scan_remat.eqn_flops``, a convolution as 2 x output x its kernel's elements
    per output feature (there: one per output element)."""
    if eqn.primitive.name != "conv_general_dilated":
        return eqn_flops(eqn)
    rhs = eqn.invars[1].aval.shape
    out_feature = eqn.params["dimension_numbers"].rhs_spec[0]
    per_output = int(np.prod(rhs, dtype=np.int64)) // max(int(rhs[out_feature]), 1)
    return 2 * int(np.prod(eqn.outvars[0].aval.shape, dtype=np.int64)) * per_output


# --- the rewrite -----------------------------------------------------------------

def _evaluate(closed, flat_args: Sequence[Any], chosen: Sequence[Recomputation],
              materialized: frozenset[str] | None) -> list[Any]:
    """``closed`` on ``flat_args``, each of ``chosen`` computed again just before
    its late reader (from its chain's inputs passed through a barrier with a value
    ready then), which with every later reader reads the new value."""
    jaxpr = closed.jaxpr
    names = jaxpr_walk.names(jaxpr)
    var_of = {name: v for v, name in names.items()}

    def kept(u) -> bool:
        return materialized is None or names.get(u) in materialized

    at_reader: dict[int, list[Recomputation]] = {}
    for c in chosen:
        at_reader.setdefault(c.late_at, []).append(c)
    depth = jaxpr_walk.depths(jaxpr)
    env = jaxpr_walk.seed(closed, flat_args)
    read = jaxpr_walk.read
    for i, eqn in enumerate(jaxpr.eqns):
        anchors: list[Any] = []
        for c in at_reader.get(i, []):
            v = var_of[c.name]
            made = {u for j in c.chain for u in jaxpr.eqns[j].outvars}
            inputs = list(dict.fromkeys(u for j in c.chain for u in jaxpr.eqns[j].invars
                                        if isinstance(u, jex.Var) and u not in made))
            ties = [u for u in jaxpr_walk.latest(jaxpr, i, v, depth, env, kept)
                    if u not in inputs and u not in made]
            tied = list(jax.lax.optimization_barrier(
                tuple(env[u] for u in [*inputs, *ties])))
            local = dict(zip(inputs, tied))
            for u, x in zip(ties, tied[len(inputs):]):
                env[u] = x
            for j in c.chain:
                e = jaxpr.eqns[j]
                for u, x in zip(e.outvars, jax_compat.bind_equation(
                        e, [read(local, u) for u in e.invars])):
                    local[u] = x
            for j in c.chain:      # every later reader reads the new values
                for u in jaxpr.eqns[j].outvars:
                    if not isinstance(u, jex.DropVar):
                        env[u] = local[u]
            anchors += ties
        outs = jax_compat.bind_equation(eqn, [read(env, u) for u in eqn.invars])
        for u, x in zip(eqn.outvars, outs):
            if not isinstance(u, jex.DropVar):
                env[u] = x
        made = [u for u in eqn.outvars if not isinstance(u, jex.DropVar) and kept(u)]
        if anchors and made:
            # the late reader runs where the jaxpr has it (as offload ties its readers)
            both = [*made, *dict.fromkeys(anchors)]
            for u, x in zip(both, jax.lax.optimization_barrier(tuple(env[u] for u in both))):
                env[u] = x
    return [read(env, v) for v in jaxpr.outvars]


def rewrite(fn: Callable, args: Sequence[Any], chosen: Sequence[Recomputation], *,
            static_argnums: Sequence[int] = (), traced: Traced | None = None,
            materialized: frozenset[str] | None = None) -> Callable:
    """``fn`` (same arguments, same outputs) with ``chosen`` (from ``candidates``
    of this step's jaxpr) recomputed before their late readers; with
    ``materialized``, barriers hold only values XLA keeps anyway."""
    traced = traced or trace(fn, args, static_argnums)
    closed, static = traced.closed, set(static_argnums)
    out_tree = jax.tree.structure(traced.out_shape)

    def recomputed(*call_args):
        dynamic = [a for i, a in enumerate(call_args) if i not in static]
        return jax.tree.unflatten(out_tree, _evaluate(closed, jax.tree.leaves(dynamic), chosen,
                                                      materialized))

    recomputed.__name__ = getattr(fn, "__name__", "step") + "_recomputed"
    return recomputed


# --- the lever -------------------------------------------------------------------

@dataclasses.dataclass
class _Probe:
    chosen: tuple[Recomputation, ...]
    cap: Any
    step: Callable
    flops: int                      # extra, compiled
    bits: str | None = None         # None: not compared; "" the same


def _flops(cap) -> int:
    try:
        return compiled_flops(cap.compiled)
    except Exception:  # noqa: BLE001 - a module olla_jax.flops cannot walk: 0 counted
        return 0


def program_remat(fn: Callable, *args, backend: str | Backend = "gpu:h100",
                  budget: int | str | None = None, static_argnums: Sequence[int] = (),
                  donate_argnums: Sequence[int] = (),
                  compiler_options: dict[str, Any] | None = None,
                  max_values: int | None = None, min_bytes: int = MIN_BYTES,
                  max_chain: int = MAX_CHAIN, check: bool = True,
                  latency_hiding: bool = True, pick: str = "xla",
                  memo: dict | None = None) -> ProgramRematResult:
    """``fn(*args)`` with its long-idle values recomputed in the program, compiled
    for ``backend``: the top 1, 2, 4, ... of ``candidates`` until XLA's temp is at
    most ``budget`` bytes, then bisected (``prefix_search``: the fewest values that
    meet it, or, where none does or without a budget, that reach the least temp
    the doubling found), the set kept the one with the fewest FLOPs that meets the
    budget, else the least temp; XLA's step (nothing recomputed) wins where no set
    lowers its temp.  ``check``: the chosen
    rewrite compiled for CPU with CSE off, its outputs compared bit for bit with
    jax.jit's (or, where the step's own CSE-off compile differs from jax.jit's,
    with that compile: ``BitCheck``).
    ``pick="xla"``: candidates are values XLA keeps in buffers (one more compile);
    ``"jaxpr"``: any value.  ``latency_hiding=False``: rewrites compiled with
    ``offload.NO_LATENCY_HIDING``.  ``memo``: a dict kept by the caller across calls
    on one step with the same arguments and options (several budgets): the step's
    compiles and every set compiled are reused from it."""
    start = time.monotonic()
    if pick not in ("xla", "jaxpr"):
        raise ProgramRematError(f"pick must be 'xla' or 'jaxpr', not {pick!r}")
    if budget is not None:
        try:
            budget = parse_size(budget, "budget")
        except ValueError as err:
            raise ProgramRematError(f"{err} (program_remat's budget is XLA's temp in bytes; "
                                    "leave it None for the least temp)") from err
    if max_values is not None and (type(max_values) is not int or max_values < 1):
        raise ProgramRematError(f"max_values must be a whole number >= 1 or None, "
                                f"not {max_values!r}")
    try:
        parsed = Backend.parse(backend)
    except Exception as err:  # noqa: BLE001 - the backend's own message says what it takes
        raise ProgramRematError(str(err)) from err
    if parsed.kind != "gpu":
        raise ProgramRematError(
            f"program recomputation is built for GPU targets ('gpu:h100' compile-only, or "
            f"'gpu'), not {parsed.name!r}: XLA:CPU removes the optimization barriers and its "
            "CSE merges the recomputation with the original, so the temp cannot drop there "
            "(the bits are still compared on CPU, with CSE off)")
    kw = dict(backend=parsed.name, static_argnums=tuple(static_argnums),
              donate_argnums=tuple(donate_argnums), compiler_options=compiler_options)
    options = {**(compiler_options or {}), **({} if latency_hiding else NO_LATENCY_HIDING)}
    kw_re = dict(kw, compiler_options=options)
    memo = {} if memo is None else memo
    key = (parsed.name, repr(sorted(options.items())), tuple(static_argnums),
           tuple(donate_argnums), min_bytes, max_chain, pick)
    if memo.setdefault("key", key) != key:
        raise ProgramRematError("memo holds the compiles of a call with other options: "
                                "pass a fresh dict")
    from olla_jax.capture import gpu
    if "base" not in memo:
        retried = gpu.untiled_retries()
        memo["base"] = record.capture(fn, *args, **kw)
        # the step's dots fit no default Triton tiles: nor do its rewrites' (the same
        # dots), compiled with the option the retry took at once
        memo["untiled"] = gpu.untiled_retries() > retried
    if memo["untiled"]:
        options = {**options, **gpu.NO_TRITON_GEMM}
        kw_re = dict(kw, compiler_options=options)
    if "base_flops" not in memo:
        memo["base_flops"] = _flops(memo["base"])
        memo["traced"] = trace(fn, args, static_argnums)
        memo["materialized"] = None
        if pick == "xla":
            scoped = record.capture(offload_rewrite(fn, args, (), static_argnums=static_argnums,
                                                    traced=memo["traced"], scoped=True),
                                    *args, **kw_re)
            memo["materialized"] = materialized_names(scoped.hlo_text, memo["traced"].closed)
    base, base_flops, traced, materialized = (memo["base"], memo["base_flops"], memo["traced"],
                                              memo["materialized"])
    pool = candidates(traced.closed, materialized, min_bytes=min_bytes,
                      max_chain=max_chain)[:max_values]
    probes: dict[tuple[str, ...], _Probe] = memo.setdefault("probes", {})
    refused: list[str] = []
    compare_seconds = [0.0]
    if "bits" not in memo:
        memo["bits"] = BitCheck.on_cpu(fn, args, kw)
    checker: BitCheck = memo["bits"]

    def probe(chosen: Sequence[Recomputation]) -> _Probe:
        key = tuple(c.name for c in chosen)
        if key not in probes:
            step = rewrite(fn, args, chosen, static_argnums=static_argnums, traced=traced,
                           materialized=materialized)
            try:
                cap = record.capture(step, *args, **kw_re)
            except Exception as err:  # noqa: BLE001 - say which set did not compile
                raise ProgramRematError(
                    f"the step with {len(chosen)} value(s) recomputed did not compile "
                    f"({type(err).__name__}: {str(err)[:300]})") from err
            probes[key] = _Probe(tuple(chosen), cap, step, _flops(cap) - base_flops)
        return probes[key]

    def meets(p: _Probe) -> bool:
        return budget is not None and p.cap.memory.temp <= budget

    def search(order: list[Recomputation]) -> None:
        prefix_search(len(order), lambda k: probe(order[:k]).cap.memory.temp, budget)

    def bits(p: _Probe) -> str:
        if p.bits is None:
            at = time.monotonic()
            p.bits = checker.differs(p.step)
            compare_seconds[0] += time.monotonic() - at
            if p.bits:
                refused.append(p.bits)
        return p.bits

    def ranked(left_out: set[str]) -> list[_Probe]:
        """Sets that lowered XLA's temp, not known to change the bits, none of
        ``left_out`` in them: those meeting the budget fewest FLOPs first, then
        the others least temp first."""
        ok = [p for p in probes.values() if p.cap.memory.temp < base.memory.temp
              and not p.bits and not left_out & {c.name for c in p.chosen}]
        return sorted(ok, key=lambda p: (False, p.flops, p.cap.memory.temp) if meets(p)
                      else (True, p.cap.memory.temp, p.flops))

    left_out: list[str] = []
    chosen: _Probe | None = None
    if not (budget is not None and base.memory.temp <= budget) and pool:
        for round_ in range(CULPRIT_ROUNDS + 1):
            search([c for c in pool if c.name not in left_out])
            best = next(iter(ranked(set(left_out))), None)
            if best is None or not check or not bits(best):
                chosen = best
                break
            if round_ < CULPRIT_ROUNDS:
                left_out += [c.name for c in _culprits(best, probe, bits)]
    p = chosen
    if p is not None:
        verdict = checker.verdict(p.step) if check else "not compared"
    elif refused:
        verdict = f"differ: {refused[0]} (nothing recomputed)"
    else:
        verdict = "not compared (nothing recomputed)"
    cap = base if p is None else p.cap
    return ProgramRematResult(
        backend=parsed.name, xla_temp=base.memory.temp, temp=cap.memory.temp,
        step_flops=base_flops, extra_flops=0 if p is None else p.flops,
        estimated_flops=0 if p is None else sum(c.flops for c in p.chosen),
        chosen=() if p is None else p.chosen, candidates=len(pool), budget=budget,
        met=None if budget is None else cap.memory.temp <= budget, bits=verdict,
        tried=tuple((len(q.chosen), q.cap.memory.temp, q.flops) for q in probes.values()),
        tried_sets=tuple(tuple(c.name for c in q.chosen) for q in probes.values()),
        left_out=tuple(left_out), seconds=time.monotonic() - start,
        compare_seconds=compare_seconds[0], fn=fn if p is None else p.step, capture=cap,
        compiler_options=options if p is not None else dict(compiler_options or {}))


def prefix_search(n: int, temp_of: Callable[[int], int], budget: int | None,
                  refine: int = REFINE_PROBES) -> tuple[int, dict[int, int]]:
    """The prefix sizes of ``n`` ordered candidates to compile (``temp_of(k)``:
    XLA's temp with the top ``k`` recomputed, asked once per size): 1, 2, 4, ...
    until one meets ``budget``, then ``refine`` bisection steps between the last
    size that missed and the first that met, towards the fewest values that
    meet it.  Where none meets (or no budget), the same steps between the size
    of least temp and the size tried below it, towards the fewest values that
    reach that temp (XLA's temp is not monotone in the values: on vit:small 12
    reach less than the 16 the doubling tries).  The size it ends at, and each
    size's temp."""
    tried: dict[int, int] = {}

    def temp(k: int) -> int:
        if k not in tried:
            tried[k] = temp_of(k)
        return tried[k]
    goal = None
    for k in sizes(n):
        reached = temp(k)   # compiled with or without a budget
        if budget is not None and reached <= budget:
            goal, hi = budget, k
            break
    if not tried:
        return 0, tried
    if goal is None:
        hi = min(tried, key=lambda k: (tried[k], k))
        goal = tried[hi]
    lo = max((k for k in tried if k < hi), default=0)
    for _ in range(refine):
        if hi - lo <= 1:
            break
        mid = (lo + hi) // 2
        if temp(mid) <= goal:
            hi = mid
        else:
            lo = mid
    return hi, tried


def _culprits(p: _Probe, probe: Callable, bits: Callable) -> list[Recomputation]:
    """Values of ``p`` (whose bits differ) that change them: bisection over its
    prefixes (the empty one keeps them); the range left where it stops."""
    lo, hi = 0, len(p.chosen)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if bits(probe(p.chosen[:mid])):
            hi = mid
        else:
            lo = mid
    return list(p.chosen[lo:hi])


def compare_bits(step: Callable, fn: Callable, *args, static_argnums: Sequence[int] = (),
                 donate_argnums: Sequence[int] = (),
                 compiler_options: dict[str, Any] | None = None) -> str:
    """'' where ``step`` (a rewrite of ``fn``) compiled for CPU with CSE off gives
    jax.jit's outputs of ``fn`` bit for bit, else how they differ (``step=fn``:
    what CSE off alone does to the bits: ``BitCheck``'s control)."""
    kw = dict(static_argnums=tuple(static_argnums), donate_argnums=tuple(donate_argnums),
              compiler_options=compiler_options)
    check = BitCheck.on_cpu(fn, args, kw)
    jit, own = check.jit_reference(), check.compile_cse_off(step)
    if jit is None or own is None:
        return NO_EXECUTABLE
    return check.compare(own, jit)


NO_EXECUTABLE = "no serialized executable to compare"
_DIFFERING = re.compile(r"output (\d+) \(([^)]*)\) differs in (\d+) of (\d+) bytes")


@dataclasses.dataclass
class BitCheck:
    """Rewrites of one step compared bit for bit with XLA's CSE off
    (``CPU_KEEPS_COPIES``).  A rewrite is compared with jax.jit's compile
    first; only where it differs is the control run (once per step: the step
    itself compiled with those options against jax.jit's compile).  Control
    equal: the rewrite changes the bits.  Control different: the rewrite is
    compared with the step's own CSE-off compile (same compiler, same options:
    what the recomputation itself changes), and its verdict (``verdict``) says
    that, not "same as jax.jit".  Each comparison runs both executables in a
    child, so the control is not paid for where jax.jit's outputs are met."""
    step: Callable
    compile_cse_off: Callable[[Callable], Any]    # a step -> its executable, CSE off
    jit_reference: Callable[[], Any]              # jax.jit's executable of ``step``
    compare: Callable[[Any, Any], str]            # '' where the outputs agree bit for bit
    control: str | None = None                    # None: not run yet; '' equal
    _own: Any = None                              # the step's CSE-off executable
    _same_as_jit: set = dataclasses.field(default_factory=set)

    @classmethod
    def on_cpu(cls, fn: Callable, args: Sequence[Any], kw: dict) -> "BitCheck":
        """The check on this machine's CPU, run in a child (``verify.outputs_differ``,
        on ``args`` where concrete, else on random inputs)."""
        from olla_jax.apply import verify
        cpu = dict(kw, backend="cpu")
        ref: list[Any] = []

        def jit_capture():
            if not ref:
                ref.append(record.capture(fn, *args, **cpu))
            return ref[0]

        def compile_cse_off(step):
            return record.capture(step, *args, **dict(cpu, compiler_options=cpu_options(
                kw.get("compiler_options")))).executable

        dynamic = [a for i, a in enumerate(args) if i not in set(kw.get("static_argnums", ()))]
        return cls(fn, compile_cse_off, lambda: jit_capture().reference.executable,
                   lambda a, b: verify.outputs_differ(a, b, jit_capture().compiled, dynamic))

    def _run_control(self, jit: Any) -> None:
        if self.control is None:
            own = self.compile_cse_off(self.step)
            self.control, self._own = (NO_EXECUTABLE, None) if own is None else (
                self.compare(own, jit), own)

    def differs(self, rewrite: Callable) -> str:
        """'' where ``rewrite``'s outputs are its reference's bit for bit, else how
        they differ (naming the step's own CSE-off compile where that is the
        reference)."""
        jit = self.jit_reference()
        got = None if jit is None else self.compile_cse_off(rewrite)
        if got is None:
            return NO_EXECUTABLE
        if not self.control:    # not run, or equal: jax.jit's compile is the reference
            why = self.compare(got, jit)
            if not why:
                self._same_as_jit.add(rewrite)
                return ""
            self._run_control(jit)
            if not self.control:
                return why
        if self._own is None:
            return NO_EXECUTABLE
        why = self.compare(got, self._own)
        return why and f"against the step compiled with CSE off: {why}"

    def verdict(self, rewrite: Callable) -> str:
        """The verdict of a rewrite ``differs`` accepted: "same" (as jax.jit's),
        else what it was the same as."""
        return "same" if rewrite in self._same_as_jit else self.same

    @property
    def same(self) -> str:
        """The verdict of a rewrite accepted against the step's own CSE-off
        compile (where the control differs), else "same"."""
        if not self.control:
            return "same"
        m = _DIFFERING.search(self.control)
        how = (f"in {m.group(3)} of {m.group(4)} bytes of its output {m.group(1)} "
               f"({m.group(2)}, the first that differs)" if m else f"({self.control})")
        return ("same as the step compiled with CSE off; the step's own CSE-off compile "
                f"differs from jax.jit's {how}")


def cpu_options(options: dict[str, Any] | None) -> dict[str, Any]:
    """``options`` with XLA's CSE pass off as well (``CPU_KEEPS_COPIES``)."""
    options = dict(options or {})
    passes = [p for p in str(options.get("xla_disable_hlo_passes", "")).split(",") if p]
    options["xla_disable_hlo_passes"] = ",".join(dict.fromkeys([*passes, CPU_KEEPS_COPIES]))
    return options
