"""Walking and evaluating a step's closed jaxpr: the helpers the jaxpr rewrites
(``offload``, ``scan_remat``, ``program_remat``) share.  Equation outputs are
named ``e<equation>.<output>: <primitive>``, stable for one trace."""

from __future__ import annotations

from typing import Any, Callable, Iterator, Sequence

import numpy as np
from jax.extend import core as jex

# ``latest``: how many equations before the reader it looks back over.
LOOKBACK = 4


def names(jaxpr) -> dict[Any, str]:
    """Each top-level equation's outputs by a name stable for one trace."""
    return {v: f"e{i}.{k}: {eqn.primitive.name}"
            for i, eqn in enumerate(jaxpr.eqns) for k, v in enumerate(eqn.outvars)
            if not isinstance(v, jex.DropVar)}


def nbytes(v) -> int:
    """Bytes of a jaxpr variable's array (0 for a token or other non-array)."""
    aval = getattr(v, "aval", None)
    if not hasattr(aval, "shape") or not hasattr(aval, "dtype"):
        return 0
    return int(np.prod(aval.shape, dtype=np.int64)) * np.dtype(aval.dtype).itemsize


def sub_jaxprs(eqn) -> Iterator[Any]:
    """The jaxprs an equation calls (a scan's body, a cond's branches, a pjit's callee)."""
    for p in eqn.params.values():
        for q in (p if isinstance(p, (tuple, list)) else (p,)):
            if isinstance(q, jex.ClosedJaxpr):
                yield q.jaxpr
            elif isinstance(q, jex.Jaxpr):
                yield q


def depths(jaxpr) -> dict[Any, int]:
    """Each variable's longest path from the step's inputs, in equations."""
    depth: dict[Any, int] = {}
    for eqn in jaxpr.eqns:
        d = 1 + max((depth.get(u, 0) for u in eqn.invars if isinstance(u, jex.Var)), default=0)
        for v in eqn.outvars:
            depth[v] = d
    return depth


def latest(jaxpr, at: int, v, depth: dict[Any, int], env: dict[Any, Any],
           kept: Callable[[Any], bool]) -> list[Any]:
    """The value a copy (or recomputation) of ``v`` placed before equation ``at``
    is tied to: the deepest among that equation's other inputs and the outputs
    of the ``LOOKBACK`` equations before it.  Without it XLA's scheduler moves
    the copy early, and the value is back over most of its idle stretch; the
    reader's own inputs are not enough (a transpose has none, and a weight's
    transpose is ready from the start).  Only values ``kept`` (in a buffer of
    XLA's own): a barrier on a value XLA fuses would make it materialize it."""
    pool = [*jaxpr.eqns[at].invars]
    for eqn in jaxpr.eqns[max(0, at - LOOKBACK):at]:
        pool += eqn.outvars
    pool = [u for u in pool if isinstance(u, jex.Var) and not isinstance(u, jex.DropVar)
            and u is not v and u in env and hasattr(u.aval, "shape") and kept(u)]
    return [max(pool, key=lambda u: depth.get(u, 0))] if pool else []


def seed(closed, flat_args: Sequence[Any]) -> dict[Any, Any]:
    """The environment of an evaluation of ``closed`` on ``flat_args``: its
    constants and inputs bound to their variables."""
    env: dict[Any, Any] = {}
    for v, x in zip(closed.jaxpr.constvars, closed.consts):
        env[v] = x
    for v, x in zip(closed.jaxpr.invars, flat_args):
        env[v] = x
    return env


def read(env: dict[Any, Any], v) -> Any:
    """``v``'s value in ``env`` (a literal's own)."""
    return v.val if isinstance(v, jex.Literal) else env[v]
