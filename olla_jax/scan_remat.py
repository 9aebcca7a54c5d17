"""Recomputing a scan's residual stacks inside the backward scan (issue 20,
"whole-loop copies").

After autodiff, a step whose layers run in ``jax.lax.scan`` (``nn.scan``, an
RNN over time) has a forward scan that stacks its residuals along the scan
axis (``[L, B, H, S, S]`` attention probabilities, an RNN's gates per step)
and a backward scan that reads them back one slice per iteration.  XLA keeps
each whole stack from the forward loop to the backward one, and the planner's
recomputation cannot touch it (a value made inside a loop).

Here the step is traced to a jaxpr (top-level calls inlined) and, for chosen
stacks, evaluated again with the forward scan no longer emitting them and the
backward scan's body recomputing each iteration's slice from what is still
there: the forward scan's consts, its xs, and the stacks kept.  That is what
``jax.checkpoint`` on the scan body does, done on the traced step.  A stack is
a candidate when it is read only by one other scan as an xs of the same length
and its slice in the forward body can be computed, without effects, from the
consts, the xs, the carried value where the body stacks it unchanged (the layer
input) and the anchors: the stacks whose own computation reads a carried value
that is not stacked (``x - mean`` of a layer norm over the carry), always kept,
unless they hold most of the stacked bytes and over CARRY_STACK_RATIO times that
carried value's stack: then the rewrite stacks the carried value and recomputes
them from it.  A scan nested in the
body (an RNN layer over time in a scan over layers, ``lax.map``) is one equation of
the slice's computation: the backward body re-runs it whole, as ``jax.checkpoint``
on the outer body would; calls in scan bodies (a layer written as a ``jax.jit``
function) are inlined first.

Bit for bit: values the forward loop materialized (its outputs) are kept apart
by optimization barriers, where the backward body recomputes them and where the
forward body still makes a dropped one for its own readers; without them XLA
simplifies the changed chains (``x / sqrt(v)`` into ``x * rsqrt(v)``) and the
gradients differ in their last bits.  So are the kept slices the backward body's
recomputation reads: else XLA merges the broadcasts it makes of them with the
backward's own, and reductions that read those change their last bits (a
flax.linen LayerNorm's ``rsqrt(var) * scale``).  The rewritten program is still not
jax.jit's: ``scan_remat`` compiles it on CPU and compares its outputs with
jax.jit's executable bit for bit (olla_jax.apply.verify, in a child); a
rewrite that differs is not used.  bf16 steps differ for some stacks: XLA:CPU
computes bf16 operations in float32 and drops the round trips to bf16 between
them inside a fusion (``xla_allow_excess_precision``, on by default), so a bf16
value recomputed in another fusion of the backward body is rounded where the
forward's was not, or not where it was (with the option off in both programs,
every stack of such a step keeps the bits: tests/test_scan_remat.py).  Those
stacks are found by bisection over the differing set and left out.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Sequence

import jax
import numpy as np
from jax.extend import core as jex

from olla_jax import jax_compat, jaxpr_walk
from olla_jax.errors import OllaJaxError
from olla_jax.sizes import parse_size

# Stacks smaller than this are not worth the recomputation.
MIN_BYTES = 64 * 1024
# Candidate sets tried: the top 1, 2, 4, ... up to all of them (as offload.GROWTH).
GROWTH = 2
# Compiles spent finding the smallest prefix that meets the budget between the last two
# sizes tried (one where the stacks' bytes predict it, then bisection).
REFINE_PROBES = 4
# ... and only while the FLOPs they can save exceed this share of the step's FLOPs.
REFINE_MIN_SHARE = 0.01
# Where a set's bits differ: the stacks that change them are found by bisection over
# its prefixes (at most CULPRIT_PROBES compiles and comparisons) and the search runs
# again without them, at most CULPRIT_ROUNDS times.
CULPRIT_ROUNDS = 2
CULPRIT_PROBES = 5
# A carried value the forward body does not stack is stacked by the rewrite where the
# stacks only it lets recompute (the anchors) hold most of the body's stacked bytes and
# more than this many times its stack (elsewhere the anchors are a layer norm's few
# stacks, and those the rewrite drops first would then need the carried value stacked:
# a flax LM's first 8 stacks left 4 MiB more XLA temp).
CARRY_STACK_RATIO = 2
# Calls inlined before looking for scans (their bodies are where the scans sit when
# the loss or the step is itself jitted, or, for jax.checkpoint's remat equation
# ("remat2"; "checkpoint" in other jax versions), where a forward wrapped in
# jax.checkpoint has its recomputed forward scan and the backward scan after autodiff:
# inlined, its barriers go, which the bit-for-bit comparison judges).
INLINED = frozenset({"pjit", "jit", "closed_call", "core_call", "remat2", "checkpoint"})
# ... and in scan bodies (a layer written as a jax.jit function), jax.checkpoint's
# equation kept whole there (it recomputes in the body already).
BODY_INLINED = frozenset({"pjit", "jit", "closed_call", "core_call"})


class ScanRematError(OllaJaxError, ValueError):
    """The step's scan residuals cannot be recomputed (nothing to drop, or a bad input)."""


@dataclasses.dataclass(frozen=True)
class ResidualStack:
    """A forward scan's stacked output read only by a backward scan, one slice per iteration."""
    name: str            # "e<forward eqn>.ys<k>": unique in one (inlined) trace
    forward: int         # the forward scan's equation
    output: int          # its output position (a ys)
    backward: int        # the scan equation that reads it
    shape: tuple[int, ...]
    dtype: str
    nbytes: int
    flops: int           # extra FLOPs to recompute it, the others kept, all iterations

    @property
    def score(self) -> float:
        """Bytes freed per extra FLOP (higher first)."""
        return self.nbytes / max(self.flops, 1)


@dataclasses.dataclass(frozen=True)
class Traced:
    """A step's jaxpr, top-level calls inlined, and the pytree of its outputs."""
    closed: Any          # jax.extend.core.ClosedJaxpr
    out_shape: Any


# --- evaluation of jaxprs ----------------------------------------------------------

def _run(jaxpr, env: dict[Any, Any], eqns: Sequence[int] | None = None,
         hook: Callable[[int, Any, list[Any]], list[Any] | None] | None = None) -> None:
    """Evaluate ``jaxpr``'s equations (all, or the indices ``eqns``) into ``env``;
    ``hook(i, eqn, invals)`` may return an equation's outputs instead of binding it."""
    for i in (range(len(jaxpr.eqns)) if eqns is None else eqns):
        eqn = jaxpr.eqns[i]
        invals = [jaxpr_walk.read(env, v) for v in eqn.invars]
        outs = hook(i, eqn, invals) if hook is not None else None
        if outs is None:
            outs = jax_compat.bind_equation(eqn, invals)
        for v, x in zip(eqn.outvars, outs):
            if not isinstance(v, jex.DropVar):
                env[v] = x


_read = jaxpr_walk.read


def _needed(jaxpr, outvars: Sequence[Any]) -> list[int]:
    """Indices of the equations ``outvars`` depend on (effectful ones kept), in order."""
    live = {v for v in outvars if isinstance(v, jex.Var)}
    keep = []
    for i in range(len(jaxpr.eqns) - 1, -1, -1):
        eqn = jaxpr.eqns[i]
        if eqn.effects or any(v in live for v in eqn.outvars if not isinstance(v, jex.DropVar)):
            keep.append(i)
            live.update(v for v in eqn.invars if isinstance(v, jex.Var))
    return keep[::-1]


def _has_call(jaxpr, calls: frozenset[str] = INLINED) -> bool:
    """Whether ``jaxpr`` has a call to inline: one of ``calls`` at its top level, or
    one of BODY_INLINED in a scan body (at any depth)."""
    return any(e.primitive.name in calls
               or (e.primitive.name == "scan"
                   and _has_call(jax_compat.scan_params(e).body.jaxpr, BODY_INLINED))
               for e in jaxpr.eqns)


def _inline_eval(closed, args: Sequence[Any], calls: frozenset[str] = INLINED) -> list[Any]:
    """``closed`` on ``args`` with the ``calls`` equations evaluated inline, and the
    BODY_INLINED ones in scan bodies: a layer written as a ``jax.jit`` function and
    scanned keeps its residuals in one call equation of the body, whose outputs
    hide the values they are computed from."""
    jaxpr = closed.jaxpr
    env = dict(zip(jaxpr.constvars, closed.consts))
    env.update(zip(jaxpr.invars, args))

    def hook(i, eqn, invals):
        p = jax_compat.scan_params(eqn) if eqn.primitive.name == "scan" else None
        if p is not None and _has_call(p.body.jaxpr, BODY_INLINED):
            nc, nk = p.num_consts, p.num_carry

            def body(consts, carry, xs):
                outs = _inline_eval(p.body, [*consts, *carry, *xs], BODY_INLINED)
                return outs[:nk], outs[nk:]
            carry, ys = _scan(body, invals[:nc], invals[nc:nc + nk], invals[nc + nk:], p)
            return [*carry, *ys]
        inner = eqn.params.get("jaxpr", eqn.params.get("call_jaxpr"))
        if eqn.primitive.name not in calls or inner is None:
            return None
        if not hasattr(inner, "consts"):
            inner = jex.ClosedJaxpr(inner, ())
        return _inline_eval(inner, invals, calls)
    _run(jaxpr, env, hook=hook)
    return [_read(env, v) for v in jaxpr.outvars]


def trace(fn: Callable, args: Sequence[Any], static_argnums: Sequence[int] = ()) -> Traced:
    """``fn(*args)`` traced to a jaxpr with its calls inlined."""
    try:
        closed, out_shape = jax.make_jaxpr(fn, static_argnums=tuple(static_argnums),
                                           return_shape=True)(*args)
        if _has_call(closed.jaxpr):
            avals = [jax.ShapeDtypeStruct(v.aval.shape, v.aval.dtype) for v in closed.jaxpr.invars]
            closed = jax.make_jaxpr(lambda *xs: _inline_eval(closed, xs))(*avals)
        return Traced(closed, out_shape)
    except Exception as err:  # noqa: BLE001 - the user's step failed to trace
        raise ScanRematError(f"the step could not be traced to a jaxpr for scan "
                             f"rematerialization: {type(err).__name__}: {err}") from err


# --- which stacks can be recomputed ------------------------------------------------

def _nbytes(aval) -> int:
    return int(np.prod(aval.shape, dtype=np.int64)) * np.dtype(aval.dtype).itemsize


def eqn_flops(eqn) -> int:
    """FLOPs of one equation: 2 x output x contraction for a dot, one per output
    element for other arithmetic, callees counted (a nested scan's times its length)."""
    name = eqn.primitive.name
    subs = list(jaxpr_walk.sub_jaxprs(eqn))
    if subs:
        times = jax_compat.scan_params(eqn).length if name == "scan" else 1
        return times * sum(eqn_flops(e) for s in subs for e in s.eqns)
    out = sum(int(np.prod(v.aval.shape, dtype=np.int64)) for v in eqn.outvars
              if hasattr(v.aval, "shape"))
    if name == "dot_general":
        (lhs_contract, _), _ = eqn.params["dimension_numbers"]
        shape = eqn.invars[0].aval.shape
        return 2 * out * int(np.prod([shape[d] for d in lhs_contract], dtype=np.int64))
    if name in ("broadcast_in_dim", "reshape", "transpose", "squeeze", "expand_dims", "slice",
                "dynamic_slice", "concatenate", "pad", "copy", "convert_element_type",
                "select_n", "iota", "gather", "dynamic_update_slice"):
        return 0
    return out


@dataclasses.dataclass(frozen=True)
class _Forward:
    """A forward scan's body seen from the backward scan: what is there at iteration i.

    ``canon`` maps each body variable to the first one computed the same way (same
    primitive, parameters and inputs: the body often computes ``x - mean`` twice,
    once for a residual, once for the value's own use); ``avail`` maps canonical
    variables the backward body can have to where they come from: ("const", k),
    ("xs", k) or ("stack", output position) for a kept stack, the carried value
    where the body stacks it unchanged (the layer input) and the anchors: the
    stacks whose computation reads a carried value that is not stacked (kept,
    everything else is recomputed from them); or ("carry", k): the k-th carried
    value, not stacked by the body, stacked by the rewrite where the anchors
    would hold most of the stacks' bytes (a layer run through an inner scan
    keeps the inner scan's stacks, all read from the layer input, and not the
    layer input itself)."""
    eqn: Any
    canon: dict[Any, Any]
    defined: dict[Any, int]          # canonical variable -> body equation making it
    avail: dict[Any, tuple[str, int]]
    anchors: frozenset[int]          # output positions kept as anchors

    @property
    def body(self):
        return self.params.body.jaxpr

    @property
    def params(self) -> jax_compat.ScanParams:
        return jax_compat.scan_params(self.eqn)

    def cone(self, outs: Sequence[Any], stops: dict[Any, Any] | None = None,
             reached: set[Any] | None = None) -> list[int] | None:
        """Body equations that compute ``outs`` from ``stops`` (default ``avail``), in
        order; None where one of them needs a carried value that is not there (added
        to ``reached`` where given)."""
        stops = self.avail if stops is None else stops
        p = self.params
        carry = set(self.body.invars[p.num_consts:][:p.num_carry])
        need: set[int] = set()
        todo = [self.canon.get(v, v) for v in outs if isinstance(v, jex.Var)]
        seen = set()
        while todo:
            v = todo.pop()
            if v in seen or v in stops:
                continue
            seen.add(v)
            if v in carry and reached is not None:
                reached.add(v)
                return None
            if v in carry or v not in self.defined:
                return None            # a carried value (or an input) not at hand
            i = self.defined[v]
            if self.body.eqns[i].effects:
                return None
            need.add(i)
            todo += [self.canon.get(u, u) for u in self.body.eqns[i].invars
                     if isinstance(u, jex.Var)]
        return sorted(need)

    def with_kept(self, dropped_outs: set[int]) -> dict[Any, tuple[str, int]]:
        """``avail`` and the stacks not dropped: a dropped stack is recomputed from
        the kept ones where it can (attention probabilities from the kept q and k,
        not from the layer input)."""
        stops = dict(self.avail)
        for out in range(self.params.num_carry, len(self.body.outvars)):
            y = self.body.outvars[out]
            if (out not in dropped_outs and isinstance(y, jex.Var)
                    and not isinstance(self.eqn.outvars[out], jex.DropVar)):
                stops.setdefault(self.canon.get(y, y), ("stack", out))
        return stops


def _key(eqn, canon) -> tuple | None:
    """What makes two equations compute the same values (None: never merged)."""
    if eqn.effects or list(jaxpr_walk.sub_jaxprs(eqn)):
        return None
    ins = tuple(("v", id(canon.get(v, v))) if isinstance(v, jex.Var)
                else ("l", repr(v.val), str(v.aval)) for v in eqn.invars)
    try:
        params = repr(sorted(eqn.params.items()))
    except Exception:  # noqa: BLE001 - parameters that do not print: never merged
        return None
    return eqn.primitive.name, params, ins


def _forward(eqn, outvars) -> _Forward:
    """The analysis of the forward scan ``eqn``; ``outvars``: its top-level outputs."""
    p = jax_compat.scan_params(eqn)
    body = p.body.jaxpr
    nc, nk = p.num_consts, p.num_carry
    canon: dict[Any, Any] = {}
    defined: dict[Any, int] = {}
    made: dict[tuple, list[Any]] = {}
    for i, e in enumerate(body.eqns):
        outs = list(e.outvars)
        key = None if any(isinstance(v, jex.DropVar) for v in outs) else _key(e, canon)
        if key is not None and key in made:
            for v, w in zip(outs, made[key]):
                if not isinstance(v, jex.DropVar):
                    canon[v] = w
            continue
        if key is not None:
            made[key] = outs
        for v in outs:
            if not isinstance(v, jex.DropVar):
                defined[v] = i
    avail: dict[Any, tuple[str, int]] = {}
    for k, v in enumerate(body.invars[:nc]):
        avail[v] = ("const", k)
    for k, v in enumerate(body.invars[nc + nk:]):
        avail[v] = ("xs", k)
    ys = [(out, canon.get(y, y)) for out, y in enumerate(body.outvars) if out >= nk
          and isinstance(y, jex.Var) and not isinstance(outvars[out], jex.DropVar)]
    for out, y in ys:
        if y in body.invars[nc:nc + nk]:
            avail.setdefault(y, ("stack", out))      # the carried value, stacked
    anchors, reached = _anchors(eqn, canon, defined, avail, ys)
    carry = body.invars[nc:nc + nk]
    if anchors and reached:
        held = sum(_nbytes(outvars[out].aval) for out in anchors)
        stacked = sum(_nbytes(outvars[out].aval) for out, _ in ys)
        if (2 * held > stacked
                and held > CARRY_STACK_RATIO * p.length * sum(_nbytes(v.aval) for v in reached)):
            for v in reached:
                avail[v] = ("carry", carry.index(v))
            anchors, _ = _anchors(eqn, canon, defined, avail, ys)
    for out, y in ys:
        if out in anchors:
            avail.setdefault(y, ("stack", out))
    return _Forward(eqn, canon, defined, avail, frozenset(anchors))


def _anchors(eqn, canon, defined, avail, ys) -> tuple[set[int], set[Any]]:
    """The ys positions whose slice needs a carried value not in ``avail``, and
    those carried values."""
    shell = _Forward(eqn, canon, defined, avail, frozenset())
    anchors: set[int] = set()
    reached: set[Any] = set()
    for out, y in ys:
        if y in avail:
            continue
        others = {**avail, **{w: ("stack", o) for o, w in ys if w is not y}}
        if shell.cone([y], others, reached) is None:
            anchors.add(out)
    return anchors, reached


def residual_stacks(closed, *, min_bytes: int = MIN_BYTES) -> tuple[ResidualStack, ...]:
    """The stacks of ``closed``'s top-level scans that a backward scan can
    recompute, most bytes per extra FLOP first."""
    jaxpr = closed.jaxpr
    uses: dict[Any, list[tuple[int, int]]] = {}
    for i, eqn in enumerate(jaxpr.eqns):
        for k, v in enumerate(eqn.invars):
            if isinstance(v, jex.Var):
                uses.setdefault(v, []).append((i, k))
    outputs = {v for v in jaxpr.outvars if isinstance(v, jex.Var)}
    found = []
    for f, eqn in enumerate(jaxpr.eqns):
        if eqn.primitive.name == "scan":
            found += _stacks_of(jaxpr, f, uses, outputs, min_bytes)
    # one forward scan's stacks per backward scan (the rewrite recomputes from one body)
    first: dict[int, int] = {}
    for s in found:
        first.setdefault(s.backward, s.forward)
    found = [s for s in found if first[s.backward] == s.forward]
    return tuple(sorted(found, key=lambda s: (-s.score, s.forward, s.output)))


def _stacks_of(jaxpr, f: int, uses, outputs, min_bytes: int) -> list[ResidualStack]:
    eqn = jaxpr.eqns[f]
    p = jax_compat.scan_params(eqn)
    if eqn.effects or p.body.effects:
        return []
    fwd = _forward(eqn, eqn.outvars)
    body = fwd.body
    nk, length = p.num_carry, p.length
    found = []
    for out in range(nk, len(body.outvars)):
        y, top = body.outvars[out], eqn.outvars[out]
        if (isinstance(top, jex.DropVar) or not isinstance(y, jex.Var) or top in outputs
                or out in fwd.anchors or fwd.avail.get(fwd.canon.get(y, y)) == ("stack", out)):
            continue
        readers = uses.get(top, [])
        if len({i for i, _ in readers}) != 1:
            continue
        b = readers[0][0]
        beqn = jaxpr.eqns[b]
        if beqn.primitive.name != "scan" or beqn.effects:
            continue
        bp = jax_compat.scan_params(beqn)
        if bp.length != length or any(k < bp.num_consts + bp.num_carry for _, k in readers):
            continue
        cone = fwd.cone([y], fwd.with_kept({out}))     # its cost when dropped alone
        nbytes = _nbytes(top.aval)
        if cone is None or nbytes < min_bytes:
            continue
        found.append(ResidualStack(
            name=f"e{f}.ys{out - nk}", forward=f, output=out, backward=b,
            shape=tuple(int(d) for d in top.aval.shape), dtype=str(top.aval.dtype),
            nbytes=nbytes, flops=int(length) * sum(eqn_flops(body.eqns[i]) for i in cone)))
    return found


def extra_flops(closed, dropped: Sequence[ResidualStack]) -> int:
    """Extra FLOPs of recomputing ``dropped`` (shared work counted once per backward scan)."""
    total = 0
    groups: dict[tuple[int, int], list[ResidualStack]] = {}
    for s in dropped:
        groups.setdefault((s.forward, s.backward), []).append(s)
    for (f, _), group in groups.items():
        eqn = closed.jaxpr.eqns[f]
        fwd = _forward(eqn, eqn.outvars)
        stops = fwd.with_kept({s.output for s in group})
        cone = fwd.cone([fwd.body.outvars[s.output] for s in group], stops) or []
        total += fwd.params.length * sum(eqn_flops(fwd.body.eqns[i]) for i in cone)
    return total


# --- the rewrite -------------------------------------------------------------------

def _scan(body_fn, consts, init, xs, params: jax_compat.ScanParams):
    """A scan of ``body_fn(consts, carry, xs) -> (carry, ys)`` with ``params``'s
    length, direction and unrolling."""
    return jax.lax.scan(lambda c, x: body_fn(consts, c, x), list(init), list(xs),
                        length=params.length, reverse=params.reverse, unroll=params.unroll)


def _forward_without(eqn, invals, dropped_outs: set[int],
                     carries: Sequence[int] = ()) -> tuple[list[Any], dict[int, Any]]:
    """The forward scan with its outputs ``dropped_outs`` (ys positions) no longer
    stacked and its carried values ``carries`` (positions) stacked; returns all
    outputs, ``None`` at the dropped ones, and the carried values' stacks."""
    p = jax_compat.scan_params(eqn)
    closed = p.body
    body = closed.jaxpr
    nc, nk = p.num_consts, p.num_carry
    kept = [k for k in range(len(body.outvars)) if k not in dropped_outs]
    wanted = [body.outvars[k] for k in kept]
    order = _needed(body, wanted)
    # A dropped value is still made here when something kept reads it: behind a
    # barrier, as it was when it was an output (else XLA simplifies its readers, e.g.
    # x / sqrt(v) into x * rsqrt(v), and the forward's own results change).
    dropped = {body.outvars[k] for k in dropped_outs if isinstance(body.outvars[k], jex.Var)}

    def tied(i, eqn, invals):
        outs = jax_compat.bind_equation(eqn, invals)
        return _apart(outs) if any(v in dropped for v in eqn.outvars) else outs

    def fn(consts, carry, xs):
        env = dict(zip(body.constvars, closed.consts))
        env.update(zip(body.invars, [*consts, *carry, *xs]))
        _run(body, env, order, tied)
        outs = [_read(env, v) for v in wanted]
        return outs[:nk], outs[nk:] + [carry[k] for k in carries]
    carry, ys = _scan(fn, invals[:nc], invals[nc:nc + nk], invals[nc + nk:], p)
    outs: list[Any] = [None] * len(body.outvars)
    stacked = [*carry, *ys]
    for k, x in zip(kept, stacked):
        outs[k] = x
    return outs, dict(zip(carries, stacked[len(kept):]))


@dataclasses.dataclass(frozen=True)
class _Recomputation:
    """What a backward scan's body recomputes of a forward body, and from what."""
    replaced: dict[int, int]     # backward xs position -> forward body output position
    stops: dict[Any, tuple[str, int]]
    order: list[int]             # forward body equations run
    inputs: list[Any]            # forward body variables read, in ``stops``

    def carries(self) -> set[int]:
        """The carried values (positions) it reads, stacked by the rewrite."""
        return {self.stops[v][1] for v in self.inputs if self.stops[v][0] == "carry"}


def _recomputation(beqn, fwd: _Forward, dropped: Sequence[ResidualStack]) -> _Recomputation:
    bp, fbody = jax_compat.scan_params(beqn), fwd.body
    bnc, bnk = bp.num_consts, bp.num_carry
    top_of = {s.output: fwd.eqn.outvars[s.output] for s in dropped}
    # backward xs positions fed by a dropped stack -> the forward body's output position
    replaced = {}
    for k, v in enumerate(beqn.invars):
        for out, top in top_of.items():
            if v is top and k >= bnc + bnk:
                replaced[k - bnc - bnk] = out
    recompute = [fbody.outvars[out] for out in sorted(set(replaced.values()))]
    stops = fwd.with_kept(set(top_of))
    order = fwd.cone(recompute, stops)
    if order is None:
        raise ScanRematError("a dropped stack cannot be recomputed from what is kept")
    read = {fwd.canon.get(u, u) for i in order for u in fbody.eqns[i].invars
            if isinstance(u, jex.Var)} | {fwd.canon.get(v, v) for v in recompute}
    return _Recomputation(replaced, stops, order, [v for v in stops if v in read])


def _backward_with(beqn, binvals, fwd: _Forward, finvals, fouts, carry_stacks: dict[int, Any],
                   r: _Recomputation) -> list[Any]:
    """The backward scan with the dropped stacks ``r`` replaces (its xs) recomputed
    in its body from the forward scan's consts, xs, kept stacks (``fouts``) and the
    carried values it stacked for them (``carry_stacks``)."""
    bp, fp = jax_compat.scan_params(beqn), fwd.params
    bclosed, fclosed = bp.body, fp.body
    bbody, fbody = bclosed.jaxpr, fclosed.jaxpr
    bnc, bnk = bp.num_consts, bp.num_carry
    fnc, fnk = fp.num_consts, fp.num_carry
    replaced, stops, order = r.replaced, r.stops, r.order
    consts = [v for v in r.inputs if stops[v][0] == "const"]
    sliced = [v for v in r.inputs if stops[v][0] != "const"]
    b_xs = [x for k, x in enumerate(binvals[bnc + bnk:]) if k not in replaced]
    where = {"xs": lambda k: finvals[fnc + fnk + k], "stack": lambda k: fouts[k],
             "carry": lambda k: carry_stacks[k]}
    extra_xs = [where[stops[v][0]](stops[v][1]) for v in sliced]
    n_bxs = len(bbody.invars) - bnc - bnk
    materialized = {fwd.canon.get(v, v) for v in fbody.outvars if isinstance(v, jex.Var)}

    def tied(i, eqn, invals):
        outs = jax_compat.bind_equation(eqn, invals)
        return _apart(outs) if any(v in materialized for v in eqn.outvars) else outs

    def fn(consts_in, carry, xs):
        b_consts, f_consts = consts_in
        kept_xs, more = xs[:len(b_xs)], xs[len(b_xs):]
        fenv = dict(zip(fbody.constvars, fclosed.consts))
        fenv.update(zip(consts, f_consts))
        # the slices it reads behind a barrier too: else XLA merges them with the
        # backward's own and its reductions change (see _apart)
        fenv.update(zip(sliced, _apart(list(more)) if more else []))
        _run_canon(fbody, fenv, order, fwd.canon, tied)
        it = iter(kept_xs)
        full_xs = [fenv[fwd.canon.get(fbody.outvars[replaced[k]], fbody.outvars[replaced[k]])]
                   if k in replaced else next(it) for k in range(n_bxs)]
        env = dict(zip(bbody.constvars, bclosed.consts))
        env.update(zip(bbody.invars, [*b_consts, *carry, *full_xs]))
        _run(bbody, env)
        outs = [_read(env, v) for v in bbody.outvars]
        return outs[:bnk], outs[bnk:]
    carry, ys = _scan(fn, (binvals[:bnc], [finvals[stops[v][1]] for v in consts]),
                      binvals[bnc:bnc + bnk], [*b_xs, *extra_xs], bp)
    return [*carry, *ys]


def _apart(values: list[Any]) -> list[Any]:
    """A recomputed value the forward loop materializes (one of its outputs), kept
    apart from its readers by an optimization barrier.  Without it XLA simplifies
    the recomputed chain where the forward one kept a value for other readers
    (``x / sqrt(v)`` becomes ``x * rsqrt(v)`` once the ``sqrt`` is read once) and
    the gradients differ in their last bits.  Also the slices the backward body's
    recomputation reads: without it the recomputation's ``broadcast(slice)`` is
    merged with the backward's own (a flax LayerNorm's ``rsqrt(var) * scale``,
    recomputed, broadcasts the same two slices that the scale's and the variance's
    gradients reduce against); the shared broadcast is then materialized as a loop
    fusion, and the reductions that read it inline before (``__ynn_fusion`` on CPU)
    read a full operand instead and give other last bits (``sum(g * c, -1)`` with
    ``c`` broadcast from ``[1, 1, D]`` does, once that broadcast is materialized)."""
    return list(jax.lax.optimization_barrier(values))


def _run_canon(jaxpr, env: dict[Any, Any], eqns: Sequence[int], canon: dict[Any, Any],
               hook: Callable) -> None:
    """``eqns`` of ``jaxpr`` into ``env``, each input read as its canonical variable."""
    for i in eqns:
        eqn = jaxpr.eqns[i]
        invals = [v.val if isinstance(v, jex.Literal) else env[canon.get(v, v)]
                  for v in eqn.invars]
        for v, x in zip(eqn.outvars, hook(i, eqn, invals)):
            if not isinstance(v, jex.DropVar):
                env[v] = x


def evaluate(closed, flat_args: Sequence[Any], dropped: Sequence[ResidualStack]) -> list[Any]:
    """``closed`` on ``flat_args`` with ``dropped`` recomputed in their backward scans."""
    jaxpr = closed.jaxpr
    by_forward: dict[int, list[ResidualStack]] = {}
    by_backward: dict[int, list[ResidualStack]] = {}
    for s in dropped:
        by_forward.setdefault(s.forward, []).append(s)
        by_backward.setdefault(s.backward, []).append(s)
    env = dict(zip(jaxpr.constvars, closed.consts))
    env.update(zip(jaxpr.invars, flat_args))
    forward_io: dict[int, tuple[list[Any], list[Any], dict[int, Any]]] = {}
    analysed = {f: _forward(jaxpr.eqns[f], jaxpr.eqns[f].outvars) for f in by_forward}
    # what each backward scan recomputes, and the carried values each forward scan
    # stacks for it
    recomputations: dict[int, _Recomputation] = {}
    carries: dict[int, set[int]] = {f: set() for f in by_forward}
    for b, group in by_backward.items():
        forwards = {s.forward for s in group}
        if len(forwards) != 1:
            raise ScanRematError("stacks of two forward scans dropped for one backward "
                                 "scan: not supported; drop one scan's stacks at a time")
        f = next(iter(forwards))
        recomputations[b] = _recomputation(jaxpr.eqns[b], analysed[f], group)
        carries[f] |= recomputations[b].carries()

    def hook(i, eqn, invals):
        if i in by_forward:
            outs, stacked = _forward_without(eqn, invals, {s.output for s in by_forward[i]},
                                             sorted(carries[i]))
            forward_io[i] = (invals, outs, stacked)
            return outs
        if i in by_backward:
            f = by_backward[i][0].forward
            finvals, fouts, stacked = forward_io[f]
            return _backward_with(eqn, invals, analysed[f], finvals, fouts, stacked,
                                  recomputations[i])
        return None
    # the dropped stacks are read by nothing any more: evaluate only what is needed
    _run(jaxpr, env, _needed(jaxpr, jaxpr.outvars), hook)   # a dropped stack is None in env
    return [_read(env, v) for v in jaxpr.outvars]


def rewrite(fn: Callable, args: Sequence[Any], dropped: Sequence[ResidualStack], *,
            static_argnums: Sequence[int] = (), traced: Traced | None = None) -> Callable:
    """``fn`` (same arguments, same outputs) with ``dropped`` recomputed in the
    backward scans; ``dropped`` come from ``residual_stacks`` of ``traced``."""
    traced = traced or trace(fn, args, static_argnums)
    static = set(static_argnums)
    out_tree = jax.tree.structure(traced.out_shape)

    def rematerialized(*call_args):
        dynamic = [a for i, a in enumerate(call_args) if i not in static]
        return jax.tree.unflatten(out_tree, evaluate(traced.closed, jax.tree.leaves(dynamic),
                                                     dropped))

    rematerialized.__name__ = getattr(fn, "__name__", "step") + "_scan_remat"
    return rematerialized


def sizes(n: int) -> list[int]:
    """Candidate counts tried: 1, 2, 4, ... and all."""
    out, k = [], 1
    while k < n:
        out.append(k)
        k *= GROWTH
    return out + [n] if n else []


# --- the lever -------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class ScanRematResult:
    """The step with scan residual stacks recomputed, compiled on CPU and compared."""
    xla_temp: int | None          # XLA's temp for the step as given (None: no candidate,
                                  # nothing compiled)
    temp: int | None              # XLA's temp for the rewritten step (xla_temp where none)
    dropped: tuple[ResidualStack, ...]
    candidates: int               # stacks that could be dropped
    extra_flops: int              # of the recomputation, all iterations
    tried: tuple[tuple[int, int], ...]   # (stacks dropped, XLA temp) per compile
    budget: int | None
    met: bool | None              # None without a budget or without candidates
    identical: bool               # the chosen rewrite's outputs equal jax.jit's bit for bit
    differs: str                  # how a rewrite's outputs differed (then nothing is dropped)
    fn: Any = dataclasses.field(repr=False, compare=False)   # the rewritten step (or fn)
    refused: tuple[tuple[int, str], ...] = ()   # (stacks, how its outputs differed) of the
                                                # sets compared and not used for their bits
    # wall seconds: the trace, the candidates and XLA's compiles; the bit comparisons' children
    seconds: float = 0.0
    compare_seconds: float = 0.0
    backend: str = "cpu"          # whose XLA temp chose the set (bits are compared on CPU)
    tried_sets: tuple[tuple[str, ...], ...] = ()   # the stacks' names per compile (as tried)
    left_out: tuple[str, ...] = ()  # stacks left out: their recomputation changed the bits

    def notes(self) -> tuple[str, ...]:
        """What was done, for a plan's notes."""
        mib = 2 ** 20
        if self.differs:
            return (f"scan rematerialization not used: the rewritten step's outputs differ from "
                    f"jax.jit's ({self.differs})",)
        if not self.candidates:
            return ("scan rematerialization: no residual stack dropped: the step's top-level "
                    "scans keep none it can recompute (a stack of at least min_bytes that a "
                    "forward scan makes and only one backward scan reads, its slice computable "
                    "from the body's consts, xs and stacked carry). A scan body already under "
                    "jax.checkpoint / nnx.remat / nn.remat keeps no such stack; a scan nested "
                    "in another scan's body is re-run whole for the outer stacks it makes, "
                    "its own stacks inside the outer body are not dropped",)
        if not self.dropped:
            return ("scan rematerialization: no residual stack dropped "
                    f"({self.candidates} candidate(s))",)
        from olla_jax.capture.base import Backend
        on, elsewhere = "", ""
        if Backend.parse(self.backend).kind != "cpu":
            on = f" on {self.backend}"
            elsewhere = (f" (on CPU only: the {self.backend} executable is built, not run, "
                         "and its bits are not compared)")
        names = ", ".join(f"{s.name} {list(s.shape)}" for s in self.dropped[:6])
        more = f" and {len(self.dropped) - 6} more" if len(self.dropped) > 6 else ""
        refused = "".join(f"; dropping {k} stack(s) gave other bits ({why}): not used"
                          for k, why in self.refused)
        if self.left_out:
            refused += (f"; left out: {', '.join(self.left_out)} (recomputed, they changed "
                        "the bits)")
        return (f"scan rematerialization: {len(self.dropped)} residual stack(s) of the forward "
                f"scan ({sum(s.nbytes for s in self.dropped) / mib:,.2f} MiB: {names}{more}) no "
                f"longer kept, recomputed in the backward scan's body "
                f"(+{self.extra_flops:,} FLOPs); XLA's temp {self.xla_temp / mib:,.2f} -> "
                f"{self.temp / mib:,.2f} MiB{on}. The program differs from jax.jit's; its "
                f"outputs were compared with jax.jit's on CPU and are the same bit for bit"
                f"{elsewhere}; chosen in {len(self.tried)} compile(s) of rewrites "
                f"({', '.join(str(k) for k, _ in self.tried)} stack(s))" + refused,)


def _differs(cap, base, fn_args: Sequence[Any], static_argnums: Sequence[int]) -> str:
    """'' where ``cap``'s executable gives ``base``'s (jax.jit's) outputs bit for bit,
    on the call's inputs where they are concrete (else random ones), else how not."""
    from olla_jax.apply import verify
    reference = base.reference.executable
    if cap.executable is None or reference is None:
        return "no serialized executable to compare"
    dynamic = [a for i, a in enumerate(fn_args) if i not in set(static_argnums)]
    return verify.outputs_differ(cap.executable, reference, base.compiled, dynamic)


@dataclasses.dataclass
class _Probe:
    """One set of stacks dropped: its rewrite, its compile, and how its bits compare."""
    stacks: tuple[ResidualStack, ...]    # in the candidates' order
    cap: Any                             # record.capture of the rewrite, for the backend
    step: Callable
    flops: int
    differs: str | None = None           # None: not compared yet; '': the same bits


class _Choice:
    """The compiles and bit comparisons of one ``scan_remat`` call (each set at
    most once): prefixes of the candidates by doubling, the smallest prefix
    between the last two that meets the budget, and the stacks left out whose
    recomputation changes the bits."""

    def __init__(self, fn, args, traced: Traced, candidates, base, budget, kw: dict,
                 check: bool, target):
        self.fn, self.args, self.traced, self.base = fn, args, traced, base
        self.candidates, self.budget, self.kw, self.check, self.target = (
            candidates, budget, kw, check, target)
        self.index = {s.name: i for i, s in enumerate(candidates)}
        self.probes: dict[tuple[int, ...], _Probe] = {}       # in compile order
        self.refused: list[tuple[int, str]] = []              # in comparison order
        self.excluded: list[ResidualStack] = []
        self.compare_seconds = 0.0
        self._cpu_base: list[Any] = []

    def probe(self, stacks: Sequence[ResidualStack]) -> _Probe:
        """``stacks`` dropped, compiled for the backend (once per set)."""
        from olla_jax.capture import record
        key = tuple(sorted(self.index[s.name] for s in stacks))
        if key not in self.probes:
            stacks = tuple(self.candidates[i] for i in key)
            step = rewrite(self.fn, self.args, stacks,
                           static_argnums=self.kw["static_argnums"], traced=self.traced)
            try:
                cap = record.capture(step, *self.args, **self.kw)
            except Exception as err:  # noqa: BLE001 - a scan this rewrite does not handle
                raise ScanRematError(
                    f"the step with {len(stacks)} residual stack(s) recomputed did not "
                    f"compile ({type(err).__name__}: {str(err)[:300]}); plan the step without "
                    "scan_remat") from err
            self.probes[key] = _Probe(stacks, cap, step, extra_flops(self.traced.closed, stacks))
        return self.probes[key]

    def meets(self, p: _Probe) -> bool:
        return self.budget is not None and p.cap.memory.temp <= self.budget

    def temp(self, order: Sequence[ResidualStack], k: int) -> int:
        return self.probe(order[:k]).cap.memory.temp if k else self.base.memory.temp

    def search(self, order: Sequence[ResidualStack], refine: int) -> None:
        """Prefixes of ``order``: 1, 2, 4, ... until one meets the budget; then, at
        most ``refine`` more compiles, the smallest prefix between the last two
        that meets it (first the one the stacks' bytes predict, the temp taken
        as linear in them, then bisection): the last doubling can add most of
        the FLOPs (a flax LM: 8 stacks +0.2 %, 16 stacks +18 %).  A compile is
        spent only where the FLOPs it can save are over REFINE_MIN_SHARE of the
        step's (a jaxpr count, no compile)."""
        lo = 0
        for k in sizes(len(order)):
            if self.meets(self.probe(order[:k])):
                break
            lo = k
        else:
            return
        hi, cum = k, np.cumsum([0] + [s.nbytes for s in order])
        closed = self.traced.closed
        least = REFINE_MIN_SHARE * sum(eqn_flops(e) for e in closed.jaxpr.eqns)
        for n in range(refine):
            if (hi - lo <= 1 or extra_flops(closed, order[:hi])
                    - extra_flops(closed, order[:lo + 1]) <= least):
                return
            mid = (lo + hi) // 2
            if n == 0:
                t_lo, t_hi = self.temp(order, lo), self.temp(order, hi)
                want = cum[lo] + (cum[hi] - cum[lo]) * (t_lo - self.budget) / (t_lo - t_hi)
                mid = min(max(int(np.searchsorted(cum, want)), lo + 1), hi - 1)
            if self.meets(self.probe(order[:mid])):
                hi = mid
            else:
                lo = mid

    def differs(self, p: _Probe) -> str:
        """How ``p``'s outputs differ from jax.jit's ('' where not), on CPU whatever
        the target (its executable is not run: the same rewrite's CPU compile is)."""
        from olla_jax.capture import record
        if p.differs is None:
            at = time.monotonic()
            static = self.kw["static_argnums"]
            if self.target.kind == "cpu":
                p.differs = _differs(p.cap, self.base, self.args, static)
            else:
                cpu = dict(self.kw, backend="cpu")
                if not self._cpu_base:
                    self._cpu_base.append(record.capture(self.fn, *self.args, **cpu))
                p.differs = _differs(record.capture(p.step, *self.args, **cpu),
                                     self._cpu_base[0], self.args, static)
            self.compare_seconds += time.monotonic() - at
            if p.differs:
                self.refused.append((len(p.stacks), p.differs))
        return p.differs

    def culprits(self, p: _Probe, probes: int) -> list[ResidualStack]:
        """The stacks of ``p`` (whose bits differ) that change the bits: bisection
        over its prefixes (none dropped keeps them), at most ``probes`` compiles and
        comparisons; the range left where it stops."""
        lo, hi = 0, len(p.stacks)
        for _ in range(probes):
            if hi - lo <= 1:
                break
            mid = (lo + hi) // 2
            if self.differs(self.probe(p.stacks[:mid])):
                hi = mid
            else:
                lo = mid
        return list(p.stacks[lo:hi])

    def ranked(self) -> list[_Probe]:
        """The sets that lowered XLA's temp, none known to differ or holding a stack
        left out: those that meet the budget, fewest extra FLOPs first, then the
        others, least temp first."""
        left_out = {s.name for s in self.excluded}
        pool = [p for p in self.probes.values()
                if p.cap.memory.temp < self.base.memory.temp and not p.differs
                and not left_out & {s.name for s in p.stacks}]
        return sorted(pool, key=lambda p: (False, p.flops, p.cap.memory.temp) if self.meets(p)
                      else (True, p.cap.memory.temp, p.flops))

    def choose(self, refine: bool) -> _Probe | None:
        """The set used: the first of ``ranked`` whose bits are jax.jit's (without
        ``check``: the first).  With ``refine``: the prefix search refined, and where
        a set's bits differ, the stacks that change them found and the search run
        again without them (CULPRIT_ROUNDS times at most); without it the plain
        doubling, a set that differs giving way to the next one."""
        rounds = CULPRIT_ROUNDS if refine else 0
        while True:
            left_out = {s.name for s in self.excluded}
            self.search([s for s in self.candidates if s.name not in left_out],
                        REFINE_PROBES if refine else 0)
            for p in self.ranked():
                if not self.check or not self.differs(p):
                    return p
                if rounds:
                    rounds -= 1
                    self.excluded += self.culprits(p, CULPRIT_PROBES)
                    break
            else:
                return None


def scan_remat(fn: Callable, *args, budget: int | str | None = None,
               static_argnums: Sequence[int] = (), donate_argnums: Sequence[int] = (),
               compiler_options: dict[str, Any] | None = None, max_stacks: int | None = None,
               min_bytes: int = MIN_BYTES, check: bool = True,
               backend: str = "cpu", refine: bool = True) -> ScanRematResult:
    """``fn(*args)`` with its scans' residual stacks recomputed in the backward
    scans, compiled for ``backend`` ("cpu", or a compile-only target such as
    "gpu:h100"): the top 1, 2, 4, ... of ``residual_stacks`` (most bytes per
    extra FLOP first) until that backend's XLA temp is at most ``budget`` bytes
    (without a budget: all of them, at most ``max_stacks``), then (``refine``)
    the smallest prefix between the last two sizes that meets it.  ``check``:
    compare the chosen rewrite's outputs with jax.jit's bit for bit in a child
    process, on CPU whatever ``backend`` is (a compile-only target's executable
    is not run: the CPU compile of the same rewrite is compared); where they
    differ, the stacks that change the bits are found by bisection and left out
    (``refine``; else the next smaller set is tried), and where no set keeps the
    bits nothing is dropped (``differs`` says how).  Compiles: one per doubling,
    at most REFINE_PROBES more, and CULPRIT_ROUNDS x (CULPRIT_PROBES + a search)
    where bits differ.  A step without candidates is only traced, not compiled
    (``xla_temp`` None); ``refine=False``: the plain doubling (as before)."""
    from olla_jax.capture import record
    from olla_jax.capture.base import Backend
    start = time.monotonic()
    if budget is not None and not (type(budget) is int and budget == 0):
        budget = parse_size(budget, "budget")   # "160MiB" as well; 0: drop as much as helps
    target = Backend.parse(backend)
    if target.kind != "cpu" and not target.compile_only:
        raise ScanRematError(f"scan_remat compiles for 'cpu' or a compile-only GPU target such "
                             f"as 'gpu:h100', not {target.name!r}")
    kw = dict(backend=target.name, static_argnums=tuple(static_argnums),
              donate_argnums=tuple(donate_argnums), compiler_options=compiler_options)
    traced = trace(fn, args, static_argnums)
    candidates = residual_stacks(traced.closed, min_bytes=min_bytes)[:max_stacks]
    if not candidates:      # a trace, no compile: most steps have no scan
        return ScanRematResult(xla_temp=None, temp=None, dropped=(), candidates=0,
                               extra_flops=0, tried=(), budget=budget, met=None, identical=True,
                               differs="", fn=fn, seconds=time.monotonic() - start)
    base = record.capture(fn, *args, **kw)
    choice = _Choice(fn, args, traced, candidates, base, budget, kw, check, target)

    def result(p: _Probe | None, identical: bool, differs: str = "") -> ScanRematResult:
        temp = base.memory.temp if p is None else p.cap.memory.temp
        tried = tuple((len(q.stacks), q.cap.memory.temp) for q in choice.probes.values())
        return ScanRematResult(
            xla_temp=base.memory.temp, temp=temp, dropped=() if p is None else p.stacks,
            candidates=len(candidates), extra_flops=0 if p is None else p.flops, tried=tried,
            budget=budget, met=None if budget is None else temp <= budget, identical=identical,
            differs=differs, fn=fn if p is None else p.step, refused=tuple(choice.refused),
            backend=target.name, seconds=time.monotonic() - start - choice.compare_seconds,
            compare_seconds=choice.compare_seconds,
            tried_sets=tuple(tuple(s.name for s in q.stacks) for q in choice.probes.values()),
            left_out=tuple(s.name for s in choice.excluded))
    if budget is not None and base.memory.temp <= budget:
        return result(None, identical=True)
    chosen = choice.choose(refine)
    if chosen is not None:
        return result(chosen, identical=check)
    if not choice.refused:       # no set lowered XLA's temp
        return result(None, identical=True)
    return result(None, identical=False, differs=choice.refused[0][1])
